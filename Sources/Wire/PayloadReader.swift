import NIOCore

/// Reads the fields of one payload, checking each length and count against the bytes left
/// before reading or allocating, and naming the field in the error when it does not fit.
struct PayloadReader {
    private(set) var remaining: ByteBuffer
    let type: MessageType?

    init(_ payload: ByteBuffer, type: MessageType?) {
        remaining = payload
        self.type = type
    }

    func malformed(_ reason: String) -> WireError {
        WireError.malformedPayload(type, reason)
    }

    private func shortfall(_ field: String, needs: Int) -> WireError {
        malformed("\(field) needs \(needs) bytes, \(remaining.readableBytes) remain")
    }

    mutating func readInteger<T: FixedWidthInteger>(_: T.Type, _ field: @autoclosure () -> String) throws -> T {
        guard let value = remaining.readInteger(endianness: .big, as: T.self) else {
            throw shortfall(field(), needs: MemoryLayout<T>.size)
        }
        return value
    }

    /// An IEEE-754 binary64 stored as its big-endian bit pattern.
    mutating func readDouble(_ field: @autoclosure () -> String) throws -> Double {
        Double(bitPattern: try readInteger(UInt64.self, field()))
    }

    mutating func readBool(_ field: String) throws -> Bool {
        switch try readInteger(UInt8.self, field) {
        case 0: return false
        case 1: return true
        case let other: throw malformed("\(field) must be 0 or 1, is \(other)")
        }
    }

    /// A `UInt8` field that must be the raw value of `E`.
    mutating func readEnum<E: RawRepresentable>(_: E.Type, _ field: String) throws -> E where E.RawValue == UInt8 {
        let raw = try readInteger(UInt8.self, field)
        guard let value = E(rawValue: raw) else { throw malformed("unknown \(field) \(raw)") }
        return value
    }

    mutating func readSlice(length: Int, _ field: @autoclosure () -> String) throws -> ByteBuffer {
        guard length >= 0, let slice = remaining.readSlice(length: length) else {
            throw shortfall(field(), needs: length)
        }
        return slice
    }

    mutating func readBytes(count: Int, _ field: @autoclosure () -> String) throws -> [UInt8] {
        guard count >= 0, let bytes = remaining.readBytes(length: count) else {
            throw shortfall(field(), needs: count)
        }
        return bytes
    }

    /// A `UInt32` element count whose elements (of `elementSize` bytes each) must fit in what
    /// remains and whose value must be at most `limit`.
    mutating func readCount(_ field: String, elementSize: Int, limit: Int) throws -> Int {
        let count = Int(try readInteger(UInt32.self, "\(field) count"))
        guard count <= limit else { throw malformed("\(field) count \(count) is over the limit of \(limit)") }
        guard count * elementSize <= remaining.readableBytes else {
            throw shortfall("\(field) (\(count) elements)", needs: count * elementSize)
        }
        return count
    }

    /// A string: `UInt16` big-endian byte count, then that many bytes of UTF-8.
    mutating func readString(_ field: String, maxBytes: Int = WireLimits.maxStringBytes, lossy: Bool = false) throws -> String {
        let length = Int(try readInteger(UInt16.self, "\(field) length"))
        guard length <= maxBytes else { throw malformed("\(field) of \(length) bytes is over the limit of \(maxBytes)") }
        let bytes = try readBytes(count: length, field)
        if lossy { return String(decoding: bytes, as: UTF8.self) }
        guard let string = String(validating: bytes, as: UTF8.self) else { throw malformed("\(field) is not valid UTF-8") }
        return string
    }

    /// Throws unless every byte was read.
    func finish() throws {
        guard remaining.readableBytes == 0 else {
            throw malformed("\(remaining.readableBytes) unexpected bytes after the last field")
        }
    }
}

/// Fixed limits of fields inside messages (the frame-level ones are in ``FrameLimits``).
enum WireLimits {
    /// Names, kernel names, error texts, goodbye reasons.
    static let maxStringBytes = 1024
    /// Layers in a model signature.
    static let maxLayers = 64
    /// Neurons in one layer.
    static let maxLayerSize = 1 << 24
    /// Extensions in a hello or helloAck, and bytes in one extension's value.
    static let maxExtensions = 16
    static let maxExtensionBytes = 4096
}

extension ByteBuffer {
    /// Writes a string as `UInt16` big-endian length plus UTF-8, refusing one over `maxBytes`.
    mutating func writeWireString(_ string: String, _ field: String, maxBytes: Int = WireLimits.maxStringBytes) throws {
        let utf8 = Array(string.utf8)
        guard utf8.count <= maxBytes else {
            throw WireError.encoding("\(field) of \(utf8.count) bytes is over the limit of \(maxBytes)")
        }
        writeInteger(UInt16(utf8.count), endianness: .big)
        writeBytes(utf8)
    }

    /// Writes a string truncated (at a character boundary) to `maxBytes` of UTF-8.
    mutating func writeTruncatedWireString(_ string: String, maxBytes: Int = WireLimits.maxStringBytes) {
        var utf8 = Array(string.utf8)
        if utf8.count > maxBytes {
            var end = maxBytes
            while end > 0 && (utf8[end] & 0xC0) == 0x80 { end -= 1 }
            utf8.removeSubrange(end...)
        }
        writeInteger(UInt16(utf8.count), endianness: .big)
        writeBytes(utf8)
    }

    mutating func writeDouble(_ value: Double) {
        writeInteger(value.bitPattern, endianness: .big)
    }
}
