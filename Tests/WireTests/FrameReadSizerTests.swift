import Foundation
import NIOCore
import NIOPosix
import Testing
import Wire

/// `FrameReadSizer` on a real loopback connection: what the reads hand up the pipeline.
@Suite("Frame read sizing")
struct FrameReadSizerTests {
    /// Records the size of every buffer read from the socket, and completes once `expected`
    /// bytes have come.
    final class ReadRecorder: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        private(set) var reads: [Int] = []
        private var received = 0
        let expected: Int
        let done: EventLoopPromise<[Int]>

        init(expected: Int, done: EventLoopPromise<[Int]>) {
            self.expected = expected
            self.done = done
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let n = unwrapInboundIn(data).readableBytes
            reads.append(n)
            received += n
            if received >= expected { done.succeed(reads) }
        }
    }

    struct NoReads: Error, CustomStringConvertible {
        var description: String { "the frames did not arrive within 10 s" }
    }

    /// A frame's bytes, header and payload.
    private func frameBytes(_ type: MessageType, payloadLength: Int) throws -> [UInt8] {
        var payload = ByteBuffer()
        payload.writeBytes((0..<payloadLength).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        var out = ByteBuffer()
        try FrameEncoder().encode(data: WireFrame(type: type, payload: payload), out: &out)
        return Array(out.readableBytesView)
    }

    @Test("a frame sent in pieces is read as its header, then its whole payload in one buffer")
    func headerThenWholePayload() async throws {
        let warmUp = 4 << 20, big = 1 << 20, small = 100
        let first = try frameBytes(.dataset, payloadLength: warmUp)
        let bytes = try first + frameBytes(.gradient, payloadLength: big) + frameBytes(.ping, payloadLength: small)
        let group = MultiThreadedEventLoopGroup.singleton
        let done = group.next().makePromise(of: [Int].self)
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(FrameReadSizer())
                    try channel.pipeline.syncOperations.addHandler(ReadRecorder(expected: bytes.count, done: done))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let client = try await ClientBootstrap(group: group)
            .connect(host: "127.0.0.1", port: server.localAddress!.port!).get()
        // A large frame at once: the kernel's receive window grows to a working size, as it
        // does with the data sets at the start of a session. Then a 1 MB frame: its header
        // with a little of the payload, the rest in two more writes with pauses between them
        // (each arrives alone); then a small frame.
        let cuts = [0, first.count, first.count + 12 + 200_000, first.count + 12 + 600_000, first.count + 12 + big, bytes.count]
        for (start, end) in zip(cuts, cuts.dropFirst()) {
            try await client.writeAndFlush(ByteBuffer(bytes: bytes[start..<end]))
            try await Task.sleep(for: .milliseconds(40))
        }
        let watchdog = group.next().scheduleTask(in: .seconds(10)) { done.fail(NoReads()) }
        let reads = try await done.futureResult.get()
        watchdog.cancel()
        try await client.close()
        try await server.close()
        // The large frame: a header read, then reads of at most 2 MB that end where it ends.
        let warmUpReads = Array(reads.dropLast(4))
        #expect(warmUpReads.first == 12 && warmUpReads.dropFirst().allSatisfy { $0 <= FrameReadSizer.maximumRead })
        #expect(warmUpReads.reduce(0, +) == first.count, "reads \(reads.prefix(30)) cross the first frame's end")
        #expect(Array(reads.suffix(4)) == [12, big, 12, small],
                "reads \(reads.prefix(30)): the 1 MB payload should come whole, after its header")
    }
}
