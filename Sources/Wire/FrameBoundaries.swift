import NIOCore

/// Follows frame boundaries in the bytes a connection receives, from the length fields alone
/// (bytes 8-11 of each header), checking nothing else: that is the ``FrameDecoder``'s job.
/// ``FrameDeadlineHandler`` uses it to time each frame, ``FrameReadSizer`` to size each read.
struct FrameBoundaries {
    /// Bytes of the current frame's header seen (0: between frames).
    private(set) var headerBytes = 0
    /// The current frame's payload length (once its header is complete).
    private(set) var length: UInt32 = 0
    /// Payload bytes of the current frame still to come.
    private(set) var payloadRemaining = 0
    /// Bytes of the current frame seen, header included.
    private(set) var frameReceived = 0

    /// Between two frames (none started).
    var betweenFrames: Bool { headerBytes == 0 }

    /// Bytes that complete the part now arriving: the rest of the header, or of the payload.
    var bytesToNextBoundary: Int {
        headerBytes < FrameHeader.byteCount ? FrameHeader.byteCount - headerBytes : payloadRemaining
    }

    /// Takes in `bytes` (what one read returned); returns whether a frame began in them.
    mutating func consume(_ bytes: ByteBufferView) -> Bool {
        var index = bytes.startIndex
        var started = false
        while index < bytes.endIndex {
            if headerBytes < FrameHeader.byteCount {
                if headerBytes == 0 {
                    started = true
                    frameReceived = 0
                    length = 0
                }
                if headerBytes >= 8 { length = length << 8 | UInt32(bytes[index]) }
                headerBytes += 1
                frameReceived += 1
                index += 1
                if headerBytes == FrameHeader.byteCount {
                    payloadRemaining = Int(length)
                    if payloadRemaining == 0 { headerBytes = 0 }
                }
            } else {
                let take = min(payloadRemaining, bytes.endIndex - index)
                index += take
                frameReceived += take
                payloadRemaining -= take
                if payloadRemaining == 0 { headerBytes = 0 }
            }
        }
        return started
    }
}
