import Foundation
import NIOCore
import NIOPosix
import Testing
import Wire

/// `FrameReadSizer` on a real loopback connection: what the reads hand up the pipeline.
@Suite("Frame read sizing")
struct FrameReadSizerTests {
    /// Records the size of every buffer read from the socket and passes it on.
    final class ReadRecorder: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias InboundOut = ByteBuffer
        private(set) var reads: [Int] = []

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            reads.append(unwrapInboundIn(data).readableBytes)
            context.fireChannelRead(data)
        }
    }

    /// Collects decoded frames; completes with the reads' sizes and the frames' payloads once
    /// `expected` frames have come.
    final class FrameCollector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = WireFrame
        let recorder: ReadRecorder
        let expected: Int
        let done: EventLoopPromise<(reads: [Int], payloads: [[UInt8]])>
        private var payloads: [[UInt8]] = []

        init(recorder: ReadRecorder, expected: Int, done: EventLoopPromise<(reads: [Int], payloads: [[UInt8]])>) {
            self.recorder = recorder
            self.expected = expected
            self.done = done
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            payloads.append(Array(unwrapInboundIn(data).payload.readableBytesView))
            if payloads.count == expected { done.succeed((recorder.reads, payloads)) }
        }
    }

    struct NoFrames: Error, CustomStringConvertible {
        var description: String { "the frames did not arrive within 10 s" }
    }

    /// A frame's bytes, header and payload.
    private func frameBytes(_ type: MessageType, payload: [UInt8]) throws -> [UInt8] {
        var out = ByteBuffer()
        try FrameEncoder().encode(data: WireFrame(type: type, payload: ByteBuffer(bytes: payload)), out: &out)
        return Array(out.readableBytesView)
    }

    @Test("a frame sent in pieces is read as its header alone, then reads that end where its payload ends")
    func readsFollowFrames() async throws {
        let big = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let small = [UInt8](repeating: 7, count: 100)
        let bytes = try frameBytes(.gradient, payload: big) + frameBytes(.ping, payload: small)
        let group = MultiThreadedEventLoopGroup.singleton
        let done = group.next().makePromise(of: (reads: [Int], payloads: [[UInt8]]).self)
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let recorder = ReadRecorder()
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(FrameReadSizer())
                    try pipeline.addHandler(recorder)
                    try pipeline.addHandler(ByteToMessageHandler(FrameDecoder()))
                    try pipeline.addHandler(FrameCollector(recorder: recorder, expected: 2, done: done))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let client = try await ClientBootstrap(group: group)
            .connect(host: "127.0.0.1", port: server.localAddress!.port!).get()
        // The header with a little of the payload, the rest of it in two writes with pauses
        // between them (each arrives alone), and a small frame right behind the big one's end.
        let cuts = [0, 12 + 200_000, 12 + 600_000, 12 + big.count - 5_000, bytes.count]
        for (start, end) in zip(cuts, cuts.dropFirst()) {
            try await client.writeAndFlush(ByteBuffer(bytes: bytes[start..<end]))
            try await Task.sleep(for: .milliseconds(30))
        }
        let watchdog = group.next().scheduleTask(in: .seconds(10)) { done.fail(NoFrames()) }
        let (reads, payloads) = try await done.futureResult.get()
        watchdog.cancel()
        try await client.close()
        try await server.close()

        #expect(payloads == [big, small])
        // Header, payload pieces ending exactly at the payload's end, header, payload.
        #expect(reads.first == 12, "reads \(reads)")
        var total = 0
        let frameEnd = reads.firstIndex { total += $0; return total >= 12 + big.count }
        #expect(total == 12 + big.count, "a read crossed the end of the first frame: \(reads)")
        if let frameEnd {
            #expect(reads[1...frameEnd].allSatisfy { $0 <= FrameReadSizer.maximumRead }, "reads \(reads)")
            #expect(Array(reads[(frameEnd + 1)...]) == [12, small.count], "reads \(reads)")
        }
    }

    @Test("the decoder leaves a payload's first piece where it is when the rest fits behind it")
    func noCompactionWhenTheRestFits() throws {
        var decoder = FrameDecoder()
        var header = ByteBuffer()
        FrameHeader(type: .gradient, payloadLength: 100_000).write(to: &header)
        #expect(try decoder.decode(buffer: &header) == nil)
        // A piece of 30,000 payload bytes read after a gap of 4096 bytes, in a buffer with room
        // for the other 70,000 (as FrameReadSizer's buffers are): no move.
        var piece = ByteBuffer()
        piece.reserveCapacity(4096 + 100_000)
        piece.moveWriterIndex(forwardBy: 4096)
        piece.moveReaderIndex(forwardBy: 4096)
        piece.writeBytes([UInt8](repeating: 1, count: 30_000))
        #expect(try decoder.decode(buffer: &piece) == nil)
        #expect(!decoder.shouldReclaimBytes(buffer: piece))
        // Without the room, NIO's rule applies: 4096 bytes to gain, so move.
        var tight = ByteBuffer()
        tight.reserveCapacity(4096 + 30_000)
        tight.moveWriterIndex(forwardBy: 4096)
        tight.moveReaderIndex(forwardBy: 4096)
        tight.writeBytes([UInt8](repeating: 1, count: min(30_000, tight.writableBytes)))
        #expect(tight.writableBytes < 70_000)
        #expect(decoder.shouldReclaimBytes(buffer: tight))
    }
}
