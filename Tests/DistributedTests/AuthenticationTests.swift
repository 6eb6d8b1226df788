import Foundation
import NIOCore
import NIOPosix
import TestSupport
import Testing
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// A secret file of mode 600 with `byte` repeated 32 times.
private func secretFile(_ directory: URL, _ name: String, byte: UInt8) throws -> String {
    let path = directory.appendingPathComponent(name).path
    try Data(Array(repeating: byte, count: 32)).write(to: URL(fileURLWithPath: path))
    chmod(path, 0o600)
    return path
}

/// Real worker processes on loopback, real coordinators, and a hostile in-process client:
/// docs/SECURITY.md's guarantees, end to end.
@Suite("Authentication between real processes", .serialized, .oneProcessTestAtATime)
struct ProcessAuthenticationTests {
    @Test("a coordinator with the wrong secret is refused (both sides say so), and the worker then serves the right one")
    func wrongSecret() async throws {
        let (_, workerPath) = try Products.require()
        let directory = try temporaryDirectory("wrong-secret")
        let right = try secretFile(directory, "right", byte: 0x41)
        let wrong = try secretFile(directory, "wrong", byte: 0x42)
        let worker = try BackgroundWorker(executable: workerPath, environment: ["BACKPROP_SECRET_FILE": right])
        defer { worker.stop() }
        let refused = try await TinyRun.coordinator(["--workers", "127.0.0.1:\(worker.port)", "--secret-file", wrong], timeout: 60)
        #expect(refused.status != 0 && !refused.timedOut, "\(refused)")
        #expect(refused.output.contains("authentication failed") && refused.output.contains("different secrets"), "\(refused)")
        #expect(!refused.output.contains("test error"), "the refused coordinator trained: \(refused)")
        try await Task.sleep(for: .milliseconds(300))
        #expect(worker.stderr.contains("authentication"), "the worker did not log the refusal:\n\(worker.stderr)")
        #expect(worker.process.isRunning)

        let accepted = try await TinyRun.coordinator(["--workers", "127.0.0.1:\(worker.port)", "--secret-file", right, "--max-steps", "1"])
        #expect(accepted.status == 0 && accepted.stdout.contains("test error "), "\(accepted)\n--- worker ---\n\(worker.stderr)")
    }

    @Test("a coordinator without the secret is told to give it one; the worker logs the same")
    func noSecretOnCoordinator() async throws {
        let (_, workerPath) = try Products.require()
        let directory = try temporaryDirectory("no-secret-coordinator")
        let secret = try secretFile(directory, "secret", byte: 0x41)
        let worker = try BackgroundWorker(executable: workerPath, environment: ["BACKPROP_SECRET_FILE": secret])
        defer { worker.stop() }
        let refused = try await TinyRun.coordinator(["--workers", "127.0.0.1:\(worker.port)"], timeout: 60,
                                                    environment: ["BACKPROP_SECRET_FILE": ""])
        #expect(refused.status != 0, "\(refused)")
        #expect(refused.output.contains("give the coordinator the same secret"), "\(refused)")
        try await Task.sleep(for: .milliseconds(300))
        #expect(worker.stderr.contains("give the coordinator the same secret"), "\(worker.stderr)")
        #expect(worker.process.isRunning)
    }

    @Test("a worker without a secret refuses an authenticating coordinator, and both say the worker lacks it")
    func noSecretOnWorker() async throws {
        let (_, workerPath) = try Products.require()
        let directory = try temporaryDirectory("no-secret-worker")
        let secret = try secretFile(directory, "secret", byte: 0x41)
        let worker = try BackgroundWorker(executable: workerPath, environment: ["BACKPROP_SECRET_FILE": ""])
        defer { worker.stop() }
        let refused = try await TinyRun.coordinator(["--workers", "127.0.0.1:\(worker.port)", "--secret-file", secret], timeout: 60)
        #expect(refused.status != 0, "\(refused)")
        #expect(refused.output.contains("this worker has none"), "\(refused)")
        try await Task.sleep(for: .milliseconds(300))
        #expect(worker.stderr.contains("give this worker the same secret"), "\(worker.stderr)")
    }

    @Test("half a header, then silence: dropped at the frame deadline (1 s) with a timeout error; the worker then serves")
    func halfHeader() async throws {
        let (_, workerPath) = try Products.require()
        let directory = try temporaryDirectory("half-header")
        let secret = try secretFile(directory, "secret", byte: 0x41)
        let worker = try BackgroundWorker(executable: workerPath, environment: ["BACKPROP_SECRET_FILE": secret],
                                          arguments: ["--frame-timeout", "1"])
        defer { worker.stop() }
        let half: [UInt8] = [0x42, 0x50, 0x57, 0x52, WireProtocol.version, MessageType.authChallenge.rawValue]
        let result = try RawConnection.sendAndAwaitClose(port: worker.port, bytes: half, timeout: 10)
        let text = String(decoding: result.received.map { (32...126).contains($0) ? $0 : UInt8(ascii: ".") }, as: UTF8.self)
        print("[DistributedTests] half header: closed=\(result.closed) after \(result.seconds)s, answer: \(text)")
        #expect(result.closed, "\(result.detail)")
        #expect(result.seconds >= 0.9 && result.seconds < 4, "dropped after \(result.seconds) s; the deadline is 1 s")
        #expect(text.contains("timeout") && text.contains("deadline"), "\(text)")
        #expect(worker.process.isRunning)
        let outcome = try await TinyRun.coordinator(["--workers", "127.0.0.1:\(worker.port)", "--secret-file", secret, "--max-steps", "1"])
        #expect(outcome.status == 0, "\(outcome)\n--- worker ---\n\(worker.stderr)")
    }

    @Test("a worker will not listen beyond loopback without a secret, unless given --insecure or a secret")
    func nonLoopbackNeedsSecret() async throws {
        let (_, workerPath) = try Products.require()
        let refused = try await runProcess(workerPath, ["--listen", "0.0.0.0:0"], timeout: 20,
                                           environment: ["BACKPROP_SECRET_FILE": ""])
        #expect(refused.status != 0 && !refused.timedOut, "\(refused)")
        #expect(refused.output.contains("refusing to listen on 0.0.0.0:0 without a secret")
                && refused.output.contains("--secret-file") && refused.output.contains("--insecure"), "\(refused)")

        let insecure = try BackgroundWorker(executable: workerPath, environment: ["BACKPROP_SECRET_FILE": ""],
                                            listen: "0.0.0.0:0", arguments: ["--insecure"])
        #expect(insecure.process.isRunning)
        insecure.stop()

        let directory = try temporaryDirectory("non-loopback")
        let secret = try secretFile(directory, "secret", byte: 0x41)
        let secured = try BackgroundWorker(executable: workerPath, listen: "0.0.0.0:0", arguments: ["--secret-file", secret])
        #expect(secured.process.isRunning)
        secured.stop()

        // A world-readable secret is refused with what to do.
        chmod(secret, 0o644)
        let loose = try await runProcess(workerPath, ["--listen", "127.0.0.1:0", "--secret-file", secret], timeout: 20)
        #expect(loose.status != 0 && loose.output.contains("chmod 600"), "\(loose)")
    }

    @Test("training with a secret gives the same model bits as without")
    func sameModelWithSecret() async throws {
        let directory = try temporaryDirectory("same-model")
        let secret = try secretFile(directory, "secret", byte: 0x41)
        let plain = try await TinyRun.coordinator(["--local", "2", "--max-steps", "3"], environment: ["BACKPROP_SECRET_FILE": ""])
        let secured = try await TinyRun.coordinator(["--local", "2", "--max-steps", "3", "--secret-file", secret])
        #expect(plain.status == 0, "\(plain)")
        #expect(secured.status == 0, "\(secured)")
        func digest(_ outcome: ProcessOutcome) -> String? {
            guard let range = outcome.stdout.range(of: "model sha256 ") else { return nil }
            return String(outcome.stdout[range.upperBound...].prefix(64))
        }
        let a = try #require(digest(plain), "\(plain)")
        #expect(a.count == 64)
        #expect(digest(secured) == a, "\(secured)")
    }
}

/// Changes one outbound frame of a real authenticated client (after the frame codec, so the
/// sealed bytes): replays it, flips a bit in it, or swaps it with the next one.
final class FrameTamperer: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Mode { case replay, flipBit, swapWithNext }
    let target: Int
    let mode: Mode
    private var index = 0
    private var held: ByteBuffer?

    init(target: Int, mode: Mode) {
        self.target = target
        self.mode = mode
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var frame = unwrapOutboundIn(data)
        defer { index += 1 }
        guard index == target || (index == target + 1 && held != nil) else { return context.write(data, promise: promise) }
        switch mode {
        case .replay:
            context.write(wrapOutboundOut(frame), promise: nil)
            context.write(wrapOutboundOut(frame), promise: promise)
        case .flipBit:
            let offset = frame.readerIndex + FrameHeader.byteCount + 2
            frame.setInteger(frame.getInteger(at: offset, as: UInt8.self)! ^ 0x10, at: offset)
            context.write(wrapOutboundOut(frame), promise: promise)
        case .swapWithNext:
            if let first = held {
                context.write(wrapOutboundOut(frame), promise: promise)
                context.write(wrapOutboundOut(first), promise: nil)
                held = nil
            } else {
                held = frame
                promise?.succeed()
            }
        }
    }
}

@Suite("Tampered frames against a real worker", .serialized, .oneProcessTestAtATime)
struct TamperedFrameTests {
    /// Authenticates to the worker as a coordinator, completes hello/helloAck, sends two pings
    /// with frame `3` or `3` and `4` tampered (0 challenge, 1 confirm, 2 hello, 3 and 4 the pings),
    /// and returns what the worker answered.
    private func session(port: Int, secret: SharedSecret, mode: FrameTamperer.Mode) async throws -> [WireMessage] {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(FrameTamperer(target: 3, mode: mode))
                    try WirePipeline.configure(channel, role: .coordinator, security: .sharedSecret(secret))
                    return try NIOAsyncChannel<WireMessage, WireMessage>(wrappingChannelSynchronously: channel)
                }
            }
        let raw = channel.channel
        let watchdog = raw.eventLoop.scheduleTask(in: .seconds(20)) { raw.close(promise: nil) }
        defer { watchdog.cancel() }
        var received: [WireMessage] = []
        do {
            try await channel.executeThenClose { inbound, outbound in
                let hello = Hello(sessionID: 7, signature: ModelSignature(layerSizes: [784, 20, 10]), coordinatorName: "tamperer")
                do {
                    try await outbound.write(.hello(hello))
                } catch {
                    print("[DistributedTests] \(mode): the hello could not be written (the connection closed during authentication?): \(error)")
                    throw error
                }
                var messages = inbound.makeAsyncIterator()
                let ack = try await messages.next()
                guard case .helloAck? = ack else {
                    Issue.record("no helloAck: \(String(describing: ack))")
                    return
                }
                try? await outbound.write(.ping(1))
                if mode == .replay {
                    // Ping 1 and its replay leave together; the worker answers ping 1, refuses
                    // the replay and closes. Ping 2 waits for that answer: written before it, it
                    // could reach the closed socket, and the reset would make this client close
                    // with the refusal still unread (two CI runs saw `[]` that way).
                    while let message = try await messages.next() {
                        received.append(message)
                        if case .error = message { break }
                    }
                }
                // Ping 2 may find the connection closed; what the worker said is read all the same.
                try? await outbound.write(.ping(2))
                while let message = try await messages.next() { received.append(message) }
            }
        } catch {
            print("[DistributedTests] tampering client's session ended after \(received.count) message(s): \(error)")
        }
        return received
    }

    @Test("replayed, modified and reordered frames are refused by a real worker, which then serves a good session",
          arguments: [FrameTamperer.Mode.replay, .flipBit, .swapWithNext])
    func tampered(mode: FrameTamperer.Mode) async throws {
        let (_, workerPath) = try Products.require()
        let directory = try temporaryDirectory("tampered")
        let path = try secretFile(directory, "secret", byte: 0x41)
        let worker = try BackgroundWorker(executable: workerPath, environment: ["BACKPROP_SECRET_FILE": path])
        defer { worker.stop() }
        let answers = try await session(port: worker.port, secret: try SharedSecret.load(path: path), mode: mode)
        print("[DistributedTests] \(mode): the worker answered \(answers)")
        if answers.isEmpty {
            // Nothing came back at all (a CI run saw this once): what the worker said of it.
            try await Task.sleep(for: .milliseconds(200))
            print("[DistributedTests] \(mode): the worker's log:\n\(worker.stderr)")
        }
        let refusal = answers.compactMap { message -> ErrorReport? in
            if case .error(let report) = message { return report }
            return nil
        }.first
        #expect(refusal?.code == .authenticationFailed && refusal?.message.contains("integrity") == true, "\(answers)")
        switch mode {
        case .replay:
            // The first ping was accepted (frame 1); its replay, frame 2, was refused. (The
            // worker's pong(1) may or may not leave before the connection closes.)
            #expect(refusal?.message.contains("ping frame 2 ") == true, "\(answers)")
            #expect(!answers.contains(.pong(2)), "\(answers)")
        case .flipBit, .swapWithNext:
            #expect(refusal?.message.contains("ping frame 1 ") == true, "\(answers)")
            #expect(!answers.contains(.pong(1)) && !answers.contains(.pong(2)), "\(answers)")
            try await Task.sleep(for: .milliseconds(200))
            #expect(worker.stderr.contains("integrity"), "the worker did not log the refusal:\n\(worker.stderr)")
        }
        #expect(worker.process.isRunning)
        let outcome = try await TinyRun.coordinator(["--workers", "127.0.0.1:\(worker.port)", "--secret-file", path, "--max-steps", "1"])
        #expect(outcome.status == 0, "\(outcome)\n--- worker ---\n\(worker.stderr)")
    }
}
