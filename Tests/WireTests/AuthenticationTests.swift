#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NIOCore
import NIOEmbedded
import TestSupport
import Testing
import Wire

/// A connected `EmbeddedChannel` with the protocol's handlers (with `secret`, or none) and a
/// recorder at the end.
private func makeSecureChannel(role: SessionRole, secret: SharedSecret?, deadlines: WireDeadlines = .default)
    throws -> (EmbeddedChannel, PipelineRecorder)
{
    let channel = EmbeddedChannel()
    let recorder = PipelineRecorder()
    try WirePipeline.configure(channel, role: role, security: secret.map(WireSecurity.sharedSecret) ?? .none,
                               deadlines: deadlines)
    try channel.pipeline.syncOperations.addHandler(recorder)
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 7070)).wait()
    return (channel, recorder)
}

/// Moves bytes both ways until neither side writes anything more; returns what crossed, per
/// direction, frame by frame (one buffer per frame).
@discardableResult
private func exchange(_ coordinator: EmbeddedChannel, _ worker: EmbeddedChannel) throws
    -> (toWorker: [ByteBuffer], toCoordinator: [ByteBuffer])
{
    var toWorker: [ByteBuffer] = [], toCoordinator: [ByteBuffer] = []
    var moved = true
    while moved {
        moved = false
        while let bytes = try coordinator.readOutbound(as: ByteBuffer.self) {
            toWorker.append(bytes)
            moved = true
            if worker.isActive { try worker.writeInbound(bytes) }
        }
        while let bytes = try worker.readOutbound(as: ByteBuffer.self) {
            toCoordinator.append(bytes)
            moved = true
            if coordinator.isActive { try coordinator.writeInbound(bytes) }
        }
    }
    return (wholeFrames(toWorker), wholeFrames(toCoordinator))
}

/// The frames in buffers written one after another (a large frame's header and payload are
/// written as two buffers), one buffer per frame.
private func wholeFrames(_ buffers: [ByteBuffer]) -> [ByteBuffer] {
    var all = ByteBuffer()
    for var bytes in buffers { all.writeBuffer(&bytes) }
    var frames: [ByteBuffer] = []
    while all.readableBytes >= FrameHeader.byteCount,
          let length = all.getInteger(at: all.readerIndex + 8, as: UInt32.self),
          let frame = all.readSlice(length: min(all.readableBytes, FrameHeader.byteCount + Int(length))) {
        frames.append(frame)
    }
    return frames
}

/// Writes without waiting for the write to complete: before authentication the security
/// handler holds messages back, and `writeOutbound` would wait for ever.
private func send(_ channel: EmbeddedChannel, _ message: WireMessage) {
    channel.writeAndFlush(message, promise: nil)
}

private let secretA = try! SharedSecret(bytes: Array("correct horse battery staple 42".utf8))
private let secretB = try! SharedSecret(bytes: Array("correct horse battery staple 43".utf8))

/// The first error report among `messages`.
private func report(_ messages: [WireMessage]) -> ErrorReport? {
    for case .error(let report) in messages { return report }
    return nil
}

@Suite("Authentication and sealed frames")
struct AuthenticationTests {
    /// A coordinator and a worker with the same secret, after authentication and hello/helloAck.
    private func authenticatedPair() throws -> (EmbeddedChannel, PipelineRecorder, EmbeddedChannel, PipelineRecorder) {
        let (coordinator, coordinatorLog) = try makeSecureChannel(role: .coordinator, secret: secretA)
        let (worker, workerLog) = try makeSecureChannel(role: .worker, secret: secretA)
        send(coordinator, .hello(Samples.hello))
        try exchange(coordinator, worker)
        #expect(workerLog.messages == [.hello(Samples.hello)], "\(workerLog.errors)")
        try worker.writeOutbound(WireMessage.helloAck(Samples.ack))
        try exchange(coordinator, worker)
        #expect(coordinatorLog.messages == [.helloAck(Samples.ack)], "\(coordinatorLog.errors)")
        return (coordinator, coordinatorLog, worker, workerLog)
    }

    @Test("the same secret: challenge, response, confirm, then every frame sealed, and the messages arrive intact")
    func sameSecret() throws {
        let (coordinator, coordinatorLog) = try makeSecureChannel(role: .coordinator, secret: secretA)
        let (worker, workerLog) = try makeSecureChannel(role: .worker, secret: secretA)
        // The hello is held back until the handshake is done.
        send(coordinator, .hello(Samples.hello))
        let first = try exchange(coordinator, worker)
        let types = first.toWorker.map { $0.getInteger(at: 5, as: UInt8.self) }
        #expect(types == [MessageType.authChallenge.rawValue, MessageType.authConfirm.rawValue, MessageType.hello.rawValue])
        #expect(first.toCoordinator.map { $0.getInteger(at: 5, as: UInt8.self) } == [MessageType.authResponse.rawValue])
        // The hello travels sealed: flag set, and the coordinator's name is not readable on the wire.
        let helloFrame = first.toWorker[2]
        #expect(helloFrame.getInteger(at: 6, as: UInt16.self) == FrameFlags.sealed.rawValue)
        let name = Array(Samples.hello.coordinatorName.utf8)
        #expect(!Array(helloFrame.readableBytesView).containsSubsequence(name), "the hello's text is readable on the wire")
        #expect(workerLog.messages == [.hello(Samples.hello)])

        let messages = Samples.everyMessage().filter { $0.type.sender == .worker && $0.type != .helloAck && $0.type != .error }
        try worker.writeOutbound(WireMessage.helloAck(Samples.ack))
        for message in messages { try worker.writeOutbound(message) }
        let second = try exchange(coordinator, worker)
        #expect(second.toCoordinator.allSatisfy { $0.getInteger(at: 6, as: UInt16.self) == FrameFlags.sealed.rawValue })
        #expect(coordinatorLog.messages == [.helloAck(Samples.ack)] + messages)
        #expect(coordinatorLog.errors.isEmpty && workerLog.errors.isEmpty)
        #expect(coordinator.isActive && worker.isActive)
    }

    @Test("different secrets: both sides report authenticationFailed, the worker sees no hello, both close")
    func wrongSecret() throws {
        let (coordinator, coordinatorLog) = try makeSecureChannel(role: .coordinator, secret: secretA)
        let (worker, workerLog) = try makeSecureChannel(role: .worker, secret: secretB)
        send(coordinator, .hello(Samples.hello))
        try exchange(coordinator, worker)
        #expect(coordinatorLog.wireErrors.map(\.code) == [.authenticationFailed])
        #expect(coordinatorLog.wireErrors.first?.description.contains("different secrets") == true, "\(coordinatorLog.errors)")
        // The worker got the coordinator's refusal, and nothing else.
        #expect(workerLog.messages.count == 1)
        #expect(report(workerLog.messages)?.code == .authenticationFailed, "\(workerLog.messages)")
        #expect(!coordinator.isActive && !worker.isActive)
    }

    @Test("a worker with a secret refuses a coordinator without one, naming the coordinator as the side to fix")
    func secretOnWorkerOnly() throws {
        let (coordinator, coordinatorLog) = try makeSecureChannel(role: .coordinator, secret: nil)
        let (worker, workerLog) = try makeSecureChannel(role: .worker, secret: secretA)
        send(coordinator, .hello(Samples.hello))
        try exchange(coordinator, worker)
        #expect(workerLog.messages.isEmpty, "the worker passed on \(workerLog.messages)")
        let error = try #require(workerLog.wireErrors.first)
        #expect(error.code == .authenticationFailed)
        #expect(error.description.contains("give the coordinator the same secret"), "\(error)")
        let seen = try #require(report(coordinatorLog.messages), "the coordinator got no error report: \(coordinatorLog.messages)")
        #expect(seen.code == .authenticationFailed && seen.message.contains("--secret-file"), "\(seen)")
        #expect(!worker.isActive && !coordinator.isActive)
    }

    @Test("a worker without a secret refuses an authenticating coordinator, naming the worker as the side to fix")
    func secretOnCoordinatorOnly() throws {
        let (coordinator, coordinatorLog) = try makeSecureChannel(role: .coordinator, secret: secretA)
        let (worker, workerLog) = try makeSecureChannel(role: .worker, secret: nil)
        send(coordinator, .hello(Samples.hello))
        let crossed = try exchange(coordinator, worker)
        #expect(crossed.toWorker.count == 1, "more than the challenge reached the worker")
        #expect(workerLog.messages.isEmpty)
        let error = try #require(workerLog.wireErrors.first)
        #expect(error.description.contains("give this worker the same secret"), "\(error)")
        let seen = try #require(report(coordinatorLog.messages), "\(coordinatorLog.messages)")
        #expect(seen.code == .authenticationFailed && seen.message.contains("this worker has none"), "\(seen)")
        #expect(!worker.isActive && !coordinator.isActive)
    }

    /// Writes `messages` on the coordinator and returns the sealed frames, one buffer each.
    private func sealedFrames(_ coordinator: EmbeddedChannel, _ messages: [WireMessage]) throws -> [ByteBuffer] {
        for message in messages { try coordinator.writeOutbound(message) }
        var frames: [ByteBuffer] = []
        while let bytes = try coordinator.readOutbound(as: ByteBuffer.self) { frames.append(bytes) }
        #expect(frames.count == messages.count)
        return frames
    }

    /// Checks that the worker refused the last frame with `authenticationFailed`, told the
    /// coordinator (sealed), and closed.
    private func expectRefused(_ coordinator: EmbeddedChannel, _ coordinatorLog: PipelineRecorder,
                               _ worker: EmbeddedChannel, _ workerLog: PipelineRecorder,
                               sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(workerLog.wireErrors.map(\.code) == [.authenticationFailed], "\(workerLog.errors)", sourceLocation: sourceLocation)
        #expect(!worker.isActive, "the worker kept the connection open", sourceLocation: sourceLocation)
        try exchange(coordinator, worker)
        let seen = report(coordinatorLog.messages)
        #expect(seen?.code == .authenticationFailed, "\(coordinatorLog.messages)", sourceLocation: sourceLocation)
        #expect(coordinatorLog.errors.isEmpty, "the worker's sealed error report did not open: \(coordinatorLog.errors)",
                sourceLocation: sourceLocation)
    }

    @Test("a replayed frame is refused")
    func replay() throws {
        let (coordinator, coordinatorLog, worker, workerLog) = try authenticatedPair()
        let frames = try sealedFrames(coordinator, [.ping(1)])
        try worker.writeInbound(frames[0])
        #expect(workerLog.messages.last == .ping(1))
        try worker.writeInbound(frames[0])
        #expect(workerLog.messages.filter { $0 == .ping(1) }.count == 1, "the replayed ping was accepted")
        try expectRefused(coordinator, coordinatorLog, worker, workerLog)
    }

    @Test("a frame with a bit flipped is refused, wherever the bit is", arguments: [12, 13, 19, 20, 35])
    func modified(offset: Int) throws {
        let (coordinator, coordinatorLog, worker, workerLog) = try authenticatedPair()
        var frame = try sealedFrames(coordinator, [.ping(7)])[0]
        #expect(frame.readableBytes == 12 + 8 + 16)  // header, nonce, tag
        let byte = frame.getInteger(at: offset, as: UInt8.self)!
        frame.setInteger(byte ^ 0x04, at: offset)
        try worker.writeInbound(frame)
        #expect(!workerLog.messages.contains(.ping(7)))
        try expectRefused(coordinator, coordinatorLog, worker, workerLog)
    }

    @Test("a frame whose header was changed (ping relabelled pong) is refused: the header is authenticated")
    func modifiedHeader() throws {
        let (coordinator, coordinatorLog, worker, workerLog) = try authenticatedPair()
        var frame = try sealedFrames(coordinator, [.ping(7)])[0]
        frame.setInteger(MessageType.pong.rawValue, at: 5)
        try worker.writeInbound(frame)
        #expect(!workerLog.messages.contains(.pong(7)) && !workerLog.messages.contains(.ping(7)))
        try expectRefused(coordinator, coordinatorLog, worker, workerLog)
    }

    @Test("reordered frames are refused")
    func reorder() throws {
        let (coordinator, coordinatorLog, worker, workerLog) = try authenticatedPair()
        let frames = try sealedFrames(coordinator, [.ping(1), .ping(2)])
        try worker.writeInbound(frames[1])
        #expect(!workerLog.messages.contains(.ping(2)))
        try expectRefused(coordinator, coordinatorLog, worker, workerLog)
    }

    @Test("a dropped frame makes the next one fail")
    func dropped() throws {
        let (coordinator, coordinatorLog, worker, workerLog) = try authenticatedPair()
        let frames = try sealedFrames(coordinator, [.ping(1), .ping(2), .ping(3)])
        try worker.writeInbound(frames[0])
        try worker.writeInbound(frames[2])
        #expect(workerLog.messages.suffix(1) == [.ping(1)])
        try expectRefused(coordinator, coordinatorLog, worker, workerLog)
    }

    @Test("an unsealed frame after authentication is refused")
    func unsealedAfterAuthentication() throws {
        let (coordinator, coordinatorLog, worker, workerLog) = try authenticatedPair()
        try worker.writeInbound(try frameBytes(.ping(5)))
        #expect(!workerLog.messages.contains(.ping(5)))
        #expect(workerLog.wireErrors.first?.description.contains("unsealed") == true)
        try expectRefused(coordinator, coordinatorLog, worker, workerLog)
    }

    @Test("a peer that does not finish the authentication handshake is dropped at the deadline")
    func handshakeDeadline() throws {
        let deadlines = WireDeadlines(frame: .seconds(30), authentication: .seconds(2))
        let (worker, workerLog) = try makeSecureChannel(role: .worker, secret: secretA, deadlines: deadlines)
        worker.embeddedEventLoop.advanceTime(by: .milliseconds(1900))
        #expect(worker.isActive)
        worker.embeddedEventLoop.advanceTime(by: .milliseconds(200))
        #expect(workerLog.wireErrors.map(\.code) == [.timeout])
        let sent = try decodeMessages(writtenBytes(worker))
        guard case .error(let report)? = sent.first else {
            Issue.record("the worker sent \(sent), not an error")
            return
        }
        #expect(report.code == .timeout && report.message.contains("authentication"), "\(report)")
        #expect(!worker.isActive)
    }
}

@Suite("Whole-frame deadline")
struct FrameDeadlineTests {
    @Test("half a header, then silence: the peer gets a timeout error and is dropped at the deadline")
    func halfHeader() throws {
        let (worker, workerLog) = try makeChannel(role: .worker, deadlines: WireDeadlines(frame: .seconds(1)))
        var half = try frameBytes(.hello(Samples.hello))
        half.moveWriterIndex(to: half.readerIndex + 6)
        try worker.writeInbound(half)
        worker.embeddedEventLoop.advanceTime(by: .milliseconds(900))
        #expect(worker.isActive)
        #expect(workerLog.errors.isEmpty)
        worker.embeddedEventLoop.advanceTime(by: .milliseconds(200))
        #expect(workerLog.wireErrors.map(\.code) == [.timeout])
        let sent = try decodeMessages(writtenBytes(worker))
        guard case .error(let report)? = sent.first else {
            Issue.record("the worker sent \(sent), not an error")
            return
        }
        #expect(report.code == .timeout && report.message.contains("6 bytes of a 12-byte header"), "\(report)")
        #expect(!worker.isActive)
    }

    @Test("a payload that stops arriving is dropped at the deadline, counted from the frame's first byte")
    func stalledPayload() throws {
        let (worker, workerLog) = try makeChannel(role: .worker, deadlines: WireDeadlines(frame: .seconds(1)))
        var frame = try frameBytes(.hello(Samples.hello))
        let firstPart = frame.readSlice(length: 20)!
        try worker.writeInbound(firstPart)
        worker.embeddedEventLoop.advanceTime(by: .milliseconds(600))
        try worker.writeInbound(frame.readSlice(length: 1)!)   // progress does not reset the deadline
        worker.embeddedEventLoop.advanceTime(by: .milliseconds(500))
        #expect(workerLog.wireErrors.map(\.code) == [.timeout])
        #expect(!worker.isActive)
    }

    @Test("frames that complete within the deadline, and idle time between frames, are fine")
    func completeFramesAndIdleTime() throws {
        let (worker, workerLog) = try makeChannel(role: .worker, deadlines: WireDeadlines(frame: .seconds(1)))
        var frame = try frameBytes(.hello(Samples.smallHello))
        try worker.writeInbound(frame.readSlice(length: 5)!)
        worker.embeddedEventLoop.advanceTime(by: .milliseconds(800))
        try worker.writeInbound(frame)
        try worker.writeOutbound(WireMessage.helloAck(Samples.smallAck))
        worker.embeddedEventLoop.advanceTime(by: .seconds(10))
        // Two frames in one read, the second cut: the deadline restarts at the second's start.
        var two = try frameBytes(.ping(1))
        var next = try frameBytes(.ping(2))
        two.writeBuffer(&next)
        let cut = two.readSlice(length: 20 + 4)!
        try worker.writeInbound(cut)
        worker.embeddedEventLoop.advanceTime(by: .milliseconds(800))
        try worker.writeInbound(two)
        worker.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(workerLog.errors.isEmpty, "\(workerLog.errors)")
        #expect(workerLog.messages == [.hello(Samples.smallHello), .ping(1), .ping(2)])
        #expect(worker.isActive)
    }
}

@Suite("Shared secret files")
struct SharedSecretTests {
    private func file(_ contents: [UInt8], mode: mode_t = 0o600) throws -> String {
        let path = try temporaryDirectory("secret").appendingPathComponent("secret").path
        try Data(contents).write(to: URL(fileURLWithPath: path))
        chmod(path, mode)
        return path
    }

    @Test("a good file loads; a final newline does not change the secret")
    func goodFile() throws {
        let bytes = Array("0123456789abcdef0123456789abcdef".utf8)
        let plain = try SharedSecret.load(path: try file(bytes))
        let withNewline = try SharedSecret.load(path: try file(bytes + [10], mode: 0o400))
        // Same secret: a session between them authenticates.
        let (coordinator, coordinatorLog) = try makeSecureChannel(role: .coordinator, secret: plain)
        let (worker, workerLog) = try makeSecureChannel(role: .worker, secret: withNewline)
        send(coordinator, .hello(Samples.hello))
        try exchange(coordinator, worker)
        #expect(workerLog.messages == [.hello(Samples.hello)], "\(workerLog.errors) \(coordinatorLog.errors)")
    }

    @Test("a short secret, a group- or world-readable file, a missing file are refused with what to do")
    func badFiles() throws {
        func refusal(_ body: () throws -> SharedSecret) -> String {
            do {
                _ = try body()
                return "(accepted)"
            } catch {
                return "\(error)"
            }
        }
        let short = refusal { try SharedSecret.load(path: try file(Array("short\n".utf8))) }
        #expect(short.contains("at least 16"), "\(short)")
        let worldReadable = refusal { try SharedSecret.load(path: try file(Array(repeating: 65, count: 32), mode: 0o644)) }
        #expect(worldReadable.contains("chmod 600"), "\(worldReadable)")
        let groupWritable = refusal { try SharedSecret.load(path: try file(Array(repeating: 65, count: 32), mode: 0o660)) }
        #expect(groupWritable.contains("chmod 600"), "\(groupWritable)")
        // Readable by a group (a Kubernetes Secret volume with an fsGroup): accepted.
        #expect(throws: Never.self) { try SharedSecret.load(path: try file(Array(repeating: 65, count: 32), mode: 0o640)) }
        let missing = refusal { try SharedSecret.load(path: "/nonexistent/secret") }
        #expect(missing.contains("No such file"), "\(missing)")
    }

    @Test("the option wins over BACKPROP_SECRET_FILE, which wins over the systemd credential; none gives nil")
    func resolutionOrder() throws {
        let a = try file(Array(repeating: 65, count: 20))
        let b = try file(Array(repeating: 66, count: 20))
        let directory = try temporaryDirectory("credentials")
        let credential = directory.appendingPathComponent("backprop-secret").path
        try Data(Array(repeating: 67, count: 20)).write(to: URL(fileURLWithPath: credential))
        chmod(credential, 0o400)
        let env = ["BACKPROP_SECRET_FILE": b, "CREDENTIALS_DIRECTORY": directory.path]
        #expect(try SharedSecret.resolve(option: a, environment: env)?.path == a)
        #expect(try SharedSecret.resolve(option: nil, environment: env)?.path == b)
        #expect(try SharedSecret.resolve(option: nil, environment: ["CREDENTIALS_DIRECTORY": directory.path])?.path == credential)
        #expect(try SharedSecret.resolve(option: nil, environment: ["CREDENTIALS_DIRECTORY": "/nonexistent"]) == nil)
        #expect(try SharedSecret.resolve(option: nil, environment: [:]) == nil)
    }

    @Test("loopback hosts", arguments: [
        ("127.0.0.1", true), ("127.1.2.3", true), ("localhost", true), ("::1", true), ("[::1]", true),
        ("0.0.0.0", false), ("10.0.0.1", false), ("::", false), ("example.com", false), ("128.0.0.1", false),
    ])
    func loopback(host: String, expected: Bool) {
        #expect(isLoopbackHost(host) == expected)
    }
}

extension Array where Element == UInt8 {
    func containsSubsequence(_ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= count else { return needle.isEmpty }
        for start in 0...(count - needle.count) where self[start..<(start + needle.count)].elementsEqual(needle) {
            return true
        }
        return false
    }
}
