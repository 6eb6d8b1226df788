import CChecksum

/// The transform behind ``FloatEncoding/splitZstd``: a float array becomes a zero mask, the
/// high byte of every non-zero float, and the three low bytes of every non-zero float.
///
/// Why: in a gradient, about a fifth of the entries are exact zeros (weights of pixels that are
/// black in every image of a shard), the high byte (sign and seven exponent bits) varies little,
/// and the three low bytes (the low exponent bit and the mantissa) are close to random. zstd
/// spends most of its time on those random bytes and saves almost nothing there; this split
/// gives zstd only the mask and the high bytes (a quarter of the input) and copies the low bytes
/// as they are. Removing the zeros from the low bytes saves more than zstd found in them.
///
/// A float "is zero" when its bit pattern is 0 (+0.0); -0.0 and everything else travel as
/// non-zero, so the transform is exact on every bit pattern (NaN payloads, infinities,
/// denormals).
///
/// The mask has `(count + 7) / 8` bytes; float `i` is bit `i % 8` (least significant first) of
/// byte `i / 8`; the unused high bits of the last byte are 0.
enum SplitFloats {
    /// Splits `count` floats (read as little-endian bit patterns from `source`) into `mask`
    /// (`(count + 7) / 8` bytes, every byte written), `high` (`count` bytes of room) and `low`
    /// (`3 * count + 1` bytes of room: each non-zero float stores 4 bytes, of which the next
    /// one keeps 3). Returns the number of non-zero floats, `n`: `high[0..<n]` and
    /// `low[0..<3n]` hold their bytes in order. The regions must not overlap.
    static func split(
        _ source: UnsafeRawPointer, count: Int, mask: UnsafeMutablePointer<UInt8>,
        high: UnsafeMutablePointer<UInt8>, low: UnsafeMutableRawPointer
    ) -> Int {
        var nonZero = 0
        var index = 0
        while index < count {
            let end = min(index + 8, count)
            var bits: UInt8 = 0
            var bit: UInt8 = 1
            while index < end {
                let word = UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * index, as: UInt32.self))
                // Branch-free: always store, advance only past non-zero floats.
                high[nonZero] = UInt8(truncatingIfNeeded: word >> 24)
                low.storeBytes(of: word.littleEndian, toByteOffset: 3 * nonZero, as: UInt32.self)
                let isZero = word == 0
                bits |= isZero ? bit : 0
                nonZero &+= isZero ? 0 : 1
                bit = bit &<< 1
                index += 1
            }
            mask[(index - 1) >> 3] = bits
        }
        return nonZero
    }

    /// The number of non-zero floats a mask of `count` floats describes, or nil when a bit
    /// beyond `count` is set.
    static func nonZeroCount(mask: UnsafeRawBufferPointer, count: Int) -> Int? {
        precondition(mask.count == (count + 7) / 8)
        if count % 8 != 0, let last = mask.last, last >> UInt8(count % 8) != 0 { return nil }
        var zeros = 0
        var offset = 0
        while offset + 8 <= mask.count {
            zeros += mask.loadUnaligned(fromByteOffset: offset, as: UInt64.self).nonzeroBitCount
            offset += 8
        }
        while offset < mask.count {
            zeros += mask[offset].nonzeroBitCount
            offset += 1
        }
        return count - zeros
    }

    /// Joins what ``split(_:count:mask:high:low:)`` produced back into `count` floats at
    /// `destination`. The caller has checked that the mask describes exactly as many non-zero
    /// floats as `high` and `low` hold (``nonZeroCount(mask:count:)``), so every read is in
    /// bounds.
    static func join(
        mask: UnsafeRawBufferPointer, high: UnsafeRawBufferPointer, low: UnsafeRawBufferPointer,
        count: Int, into destination: UnsafeMutableRawPointer
    ) {
        var next = 0
        var index = 0
        while index < count {
            let end = min(index + 8, count)
            let bits = mask[index >> 3]
            if bits == 0xFF {
                (destination + 4 * index).initializeMemory(as: UInt32.self, repeating: 0, count: 8)
                index = end
                continue
            }
            var bit: UInt8 = 1
            while index < end {
                var word: UInt32 = 0
                if bits & bit == 0 {
                    let offset = 3 * next
                    if offset + 4 <= low.count {
                        word = UInt32(littleEndian: low.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) & 0xFF_FFFF
                    } else {
                        word = UInt32(low[offset]) | UInt32(low[offset + 1]) << 8 | UInt32(low[offset + 2]) << 16
                    }
                    word |= UInt32(high[next]) << 24
                    next += 1
                }
                destination.storeBytes(of: word.littleEndian, toByteOffset: 4 * index, as: UInt32.self)
                bit = bit &<< 1
                index += 1
            }
        }
    }

    /// CRC-32C (Castagnoli) of `bytes`: the processor's CRC-32C instruction where there is
    /// one (SSE 4.2, the AArch64 CRC extension), 2-3.5 times as fast here as zlib's CRC-32,
    /// which protocol version 4 used.
    static func crc32c(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress else { return 0 }
        return cks_crc32c(0, base, bytes.count)
    }
}
