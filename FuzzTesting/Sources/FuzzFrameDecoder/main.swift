import FuzzCommon
import NIOCore
import Wire

// libFuzzer harness: arbitrary bytes, as a peer could send them, into FrameDecoder.
//
// Properties checked on every input, besides "no crash, no leak, no overflow" (ASan):
// - every error thrown is a WireError;
// - the bytes fed in one piece and fed one byte at a time (compacting the buffer as
//   ByteToMessageHandler does) give the same frames and the same error code;
// - every frame is within its limit, of version 1 (or an error frame), without flags;
// - re-encoding the frames with FrameEncoder gives back exactly the bytes they were cut from.

private struct DecodedFrame: Equatable {
    var version: UInt8
    var type: MessageType
    var flags: UInt16
    var payload: [UInt8]
}

private struct Outcome: Equatable {
    var frames: [DecodedFrame] = []
    var errorCode: ErrorCode?
}

/// Feeds `bytes` to a new decoder in pieces of `chunk` bytes (all at once when `nil`), then
/// signals end of input, the way `ByteToMessageHandler` drives a decoder.
private func decode(_ bytes: UnsafeRawBufferPointer, chunk: Int?, limits: FrameLimits) -> Outcome {
    var decoder = FrameDecoder(limits: limits)
    var buffer = ByteBuffer()
    var outcome = Outcome()
    func record(_ frame: WireFrame) {
        outcome.frames.append(DecodedFrame(
            version: frame.version, type: frame.type, flags: frame.flags.rawValue, payload: Array(frame.payload.readableBytesView)))
    }
    do {
        let step = max(1, chunk ?? bytes.count)
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + step)
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
            offset = end
            while let frame = try decoder.decode(buffer: &buffer) { record(frame) }
            buffer.discardReadBytes()
        }
        while let frame = try decoder.decodeLast(buffer: &buffer, seenEOF: true) { record(frame) }
    } catch let error as WireError {
        outcome.errorCode = error.code
    } catch {
        fuzzRequire(false, "FrameDecoder threw a non-WireError: \(error)")
    }
    return outcome
}

private func check(_ bytes: UnsafeRawBufferPointer, limits: FrameLimits) {
    let whole = decode(bytes, chunk: nil, limits: limits)
    let trickled = decode(bytes, chunk: 1, limits: limits)
    fuzzRequire(whole == trickled, "one piece: \(whole.frames.count) frames, error \(String(describing: whole.errorCode)); "
        + "byte by byte: \(trickled.frames.count) frames, error \(String(describing: trickled.errorCode))")

    var reencoded = ByteBuffer()
    for frame in whole.frames {
        fuzzRequire(frame.payload.count <= limits.maxPayload(for: frame.type, flags: FrameFlags(rawValue: frame.flags)),
                    "a \(frame.type) frame of \(frame.payload.count) bytes passed the limit")
        fuzzRequire(frame.version == WireProtocol.version || frame.type == .error, "a \(frame.type) frame of version \(frame.version)")
        fuzzRequire(FrameFlags.known.isSuperset(of: FrameFlags(rawValue: frame.flags)), "a frame with unknown flags \(frame.flags)")
        do {
            try FrameEncoder(limits: limits).encode(
                data: WireFrame(version: frame.version, type: frame.type, flags: FrameFlags(rawValue: frame.flags), payload: ByteBuffer(bytes: frame.payload)),
                out: &reencoded)
        } catch {
            fuzzRequire(false, "FrameEncoder refused a frame FrameDecoder accepted: \(error)")
        }
    }
    fuzzRequire(reencoded.readableBytes <= bytes.count, "frames longer than the input")
    fuzzRequire(reencoded.readableBytesView.elementsEqual(bytes.prefix(reencoded.readableBytes)),
                "re-encoded frames differ from the bytes they were decoded from")
    // Whatever was not cut into frames must have been refused or be an unfinished frame.
    if reencoded.readableBytes < bytes.count {
        fuzzRequire(whole.errorCode != nil, "\(bytes.count - reencoded.readableBytes) bytes left over without an error")
    }
}

/// Tight limits, so that short inputs reach frameTooLarge on bulk and control frames.
private let tightLimits = FrameLimits(maxPayloadBytes: 256, maxControlPayloadBytes: 32)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrameDecoder(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    check(bytes, limits: .default)
    check(bytes, limits: tightLimits)
    return 0
}
