/// The byte-shuffle filter for 4-byte floats, as HDF5 and Blosc apply it before compression.
///
/// `shuffle` writes byte k of every float (k = 0 least significant, in the value's
/// little-endian encoding) into plane k: `out[k * n + i] = byte k of value i`. Plane 3 then holds
/// the sign and high exponent bits of every value, which vary little across a gradient, and
/// zstd finds the repetition it could not see with the bytes interleaved. `unshuffle` is the
/// inverse. Both are defined on the values' bits, so the planes are the same on any host.
///
/// The loops work on blocks of 16 floats with SIMD vectors (one 64-byte load, four 16-byte
/// stores, or the reverse) and finish the tail one float at a time.
enum ByteShuffle {
    private static let block = 16

    /// Splits `count` floats read from `source` into four byte planes at `destination`
    /// (`4 * count` bytes). The two regions must not overlap.
    static func shuffle(_ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutableRawPointer) {
        let plane0 = destination
        let plane1 = destination + count
        let plane2 = destination + 2 * count
        let plane3 = destination + 3 * count
        var index = 0
        while index + block <= count {
            let words = source.loadUnaligned(fromByteOffset: 4 * index, as: SIMD16<UInt32>.self)
            plane0.storeBytes(of: SIMD16<UInt8>(truncatingIfNeeded: words), toByteOffset: index, as: SIMD16<UInt8>.self)
            plane1.storeBytes(of: SIMD16<UInt8>(truncatingIfNeeded: words &>> 8), toByteOffset: index, as: SIMD16<UInt8>.self)
            plane2.storeBytes(of: SIMD16<UInt8>(truncatingIfNeeded: words &>> 16), toByteOffset: index, as: SIMD16<UInt8>.self)
            plane3.storeBytes(of: SIMD16<UInt8>(truncatingIfNeeded: words &>> 24), toByteOffset: index, as: SIMD16<UInt8>.self)
            index += block
        }
        while index < count {
            let word = source.loadUnaligned(fromByteOffset: 4 * index, as: UInt32.self)
            plane0.storeBytes(of: UInt8(truncatingIfNeeded: word), toByteOffset: index, as: UInt8.self)
            plane1.storeBytes(of: UInt8(truncatingIfNeeded: word >> 8), toByteOffset: index, as: UInt8.self)
            plane2.storeBytes(of: UInt8(truncatingIfNeeded: word >> 16), toByteOffset: index, as: UInt8.self)
            plane3.storeBytes(of: UInt8(truncatingIfNeeded: word >> 24), toByteOffset: index, as: UInt8.self)
            index += 1
        }
    }

    /// Joins four byte planes read from `source` (`4 * count` bytes) back into `count` floats at
    /// `destination`. The two regions must not overlap.
    static func unshuffle(_ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutableRawPointer) {
        let plane0 = source
        let plane1 = source + count
        let plane2 = source + 2 * count
        let plane3 = source + 3 * count
        var index = 0
        while index + block <= count {
            let b0 = SIMD16<UInt32>(truncatingIfNeeded: plane0.loadUnaligned(fromByteOffset: index, as: SIMD16<UInt8>.self))
            let b1 = SIMD16<UInt32>(truncatingIfNeeded: plane1.loadUnaligned(fromByteOffset: index, as: SIMD16<UInt8>.self))
            let b2 = SIMD16<UInt32>(truncatingIfNeeded: plane2.loadUnaligned(fromByteOffset: index, as: SIMD16<UInt8>.self))
            let b3 = SIMD16<UInt32>(truncatingIfNeeded: plane3.loadUnaligned(fromByteOffset: index, as: SIMD16<UInt8>.self))
            let words = b0 | (b1 &<< 8) | (b2 &<< 16) | (b3 &<< 24)
            destination.storeBytes(of: words, toByteOffset: 4 * index, as: SIMD16<UInt32>.self)
            index += block
        }
        while index < count {
            let word = UInt32(plane0.load(fromByteOffset: index, as: UInt8.self))
                | UInt32(plane1.load(fromByteOffset: index, as: UInt8.self)) << 8
                | UInt32(plane2.load(fromByteOffset: index, as: UInt8.self)) << 16
                | UInt32(plane3.load(fromByteOffset: index, as: UInt8.self)) << 24
            destination.storeBytes(of: word, toByteOffset: 4 * index, as: UInt32.self)
            index += 1
        }
    }
}
