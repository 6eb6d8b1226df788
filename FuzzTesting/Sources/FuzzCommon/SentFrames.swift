import NIOCore
import NIOEmbedded
import Wire

/// The frames that the pipeline on `channel` has written since the last call (the pipeline
/// harnesses read them back); stops the fuzzer if they are not whole frames its own decoder takes.
public func sentFrames(_ channel: EmbeddedChannel) -> [WireFrame] {
    var all = ByteBuffer()
    while var bytes = try? channel.readOutbound(as: ByteBuffer.self) { all.writeBuffer(&bytes) }
    var decoder = FrameDecoder()
    var frames: [WireFrame] = []
    do {
        while let frame = try decoder.decode(buffer: &all) { frames.append(frame) }
    } catch {
        fuzzRequire(false, "this side wrote bytes its own decoder refuses: \(error)")
    }
    fuzzRequire(all.readableBytes == 0, "this side wrote a partial frame")
    return frames
}
