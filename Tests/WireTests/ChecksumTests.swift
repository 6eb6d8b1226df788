import CChecksum
import Testing
@testable import Wire

/// CRC-32C, the checksum of split float payloads: known answers, the processor's instruction
/// against the byte table, and checksums that continue over pieces.
@Suite("CRC-32C")
struct ChecksumTests {
    /// The checksum of `bytes` by `crc` (cks_crc32c or cks_crc32c_portable).
    func checksum(_ bytes: [UInt8], _ crc: (UInt32, UnsafeRawPointer?, Int) -> UInt32) -> UInt32 {
        bytes.withUnsafeBytes { crc(0, $0.baseAddress, $0.count) }
    }

    @Test("known answers (the check value and RFC 3720's test vectors), by instruction and by table")
    func knownAnswers() {
        let cases: [([UInt8], UInt32)] = [
            ([], 0),
            (Array("123456789".utf8), 0xE306_9283),
            ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
            ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
            ((0..<32).map { UInt8($0) }, 0x46DD_794E),
        ]
        for (bytes, expected) in cases {
            #expect(checksum(bytes, cks_crc32c) == expected, "\(bytes.count) bytes")
            #expect(checksum(bytes, cks_crc32c_portable) == expected, "\(bytes.count) bytes, byte table")
        }
        print("CRC-32C on this machine: \(cks_crc32c_is_hardware() != 0 ? "the processor's instruction" : "the byte table")")
    }

    @Test("the instruction and the byte table agree on every length and alignment; pieces continue")
    func instructionAgreesWithTable() {
        var generator = SystemRandomNumberGenerator()
        let data = (0..<1100).map { _ in UInt8.random(in: 0...255, using: &generator) }
        data.withUnsafeBytes { raw in
            for offset in 0..<8 {
                for length in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000] {
                    let p = raw.baseAddress! + offset
                    let fast = cks_crc32c(0, p, length)
                    #expect(fast == cks_crc32c_portable(0, p, length), "offset \(offset), length \(length)")
                    let split = length / 3
                    #expect(cks_crc32c(cks_crc32c(0, p, split), p + split, length - split) == fast,
                            "offset \(offset), length \(length) in two pieces")
                }
            }
        }
    }

    @Test("a split payload's checksum is the CRC-32C of the floats' little-endian bytes")
    func payloadChecksum() {
        let values: [Float] = [0, 1, -2.5, .infinity, 0, .leastNonzeroMagnitude, -0.0]
        var bytes = [UInt8]()
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
        #expect(values.withUnsafeBytes { SplitFloats.crc32c($0) } == checksum(bytes, cks_crc32c_portable))
    }
}
