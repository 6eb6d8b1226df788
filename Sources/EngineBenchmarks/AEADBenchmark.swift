import Crypto
import Foundation
import NIOCore
import NIOEmbedded
import Training
import Wire

/// Speed of the frame protection on a 1 MB payload (about one gradient or parameter frame):
/// the wire's `FrameCipher` (AES-256-GCM through BoringSSL's `EVP_AEAD`, one pass over the bytes) and the two AEADs of
/// swift-crypto on their own, to choose between them.
enum AEADBenchmark {
    static func run(repetitions: Int) {
        let size = 1 << 20
        var rng = SeededGenerator(seed: 3)
        let bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let key = SymmetricKey(size: .bits256)
        let header = [UInt8](repeating: 7, count: 12)
        let mb = Double(size) / 1e6

        let gcmNonce = AES.GCM.Nonce()
        var gcmBox = try! AES.GCM.seal(bytes, using: key, nonce: gcmNonce, authenticating: header)
        let gcmSeal = median(repetitions) { gcmBox = try! AES.GCM.seal(bytes, using: key, nonce: gcmNonce, authenticating: header) }
        let gcmOpen = median(repetitions) { keep(try! AES.GCM.open(gcmBox, using: key, authenticating: header).count) }

        let chachaNonce = ChaChaPoly.Nonce()
        var chachaBox = try! ChaChaPoly.seal(bytes, using: key, nonce: chachaNonce, authenticating: header)
        let chachaSeal = median(repetitions) { chachaBox = try! ChaChaPoly.seal(bytes, using: key, nonce: chachaNonce, authenticating: header) }
        let chachaOpen = median(repetitions) { keep(try! ChaChaPoly.open(chachaBox, using: key, authenticating: header).count) }

        let allocator = ByteBufferAllocator()
        let frame = WireFrame(type: .gradient, payload: allocator.buffer(bytes: bytes))
        var sealer = FrameCipher(key: key)
        var opener = FrameCipher(key: key)
        var sealed = frame
        let frameSeal = median(repetitions) { sealed = try! sealer.seal(frame, allocator: allocator) }
        // Opening needs the matching sequence number: a fresh pair, sealing and opening in lockstep.
        var pairedSealer = FrameCipher(key: key)
        let pair = median(repetitions) {
            let s = try! pairedSealer.seal(frame, allocator: allocator)
            keep(try! opener.open(s, allocator: allocator).payload.readableBytes)
        }
        keep(sealed.payload.readableBytes)
        print(String(format: "aead: 1 MiB, AES-256-GCM (swift-crypto): seal %.0f MB/s, open %.0f MB/s", mb / gcmSeal, mb / gcmOpen))
        print(String(format: "aead: 1 MiB, ChaCha20-Poly1305 (swift-crypto): seal %.0f MB/s, open %.0f MB/s", mb / chachaSeal, mb / chachaOpen))
        print(String(format: "aead: 1 MiB, FrameCipher (AES-256-GCM, BoringSSL EVP_AEAD, one pass): seal %.0f MB/s (%.3f ms), seal+open %.3f ms",
                     mb / frameSeal, frameSeal * 1e3, pair * 1e3))
    }

    /// The wire traffic of one training step at batch 5000 with two workers (2 parameter
    /// messages, 4 tasks of 1250 indices, 4 gradients, all of the 784-300-100-10 model),
    /// through a coordinator and a worker pipeline joined by `EmbeddedChannel`s, with and without
    /// a secret. Everything runs on this thread, so the difference is the protection's CPU time
    /// per step for both ends together (the codec's zstd work is in both).
    static func pipelineStep(repetitions: Int) throws {
        let signature = ModelSignature(layerSizes: [784, 300, 100, 10])
        var rng = SeededGenerator(seed: 5)
        let parameters = (0..<signature.parameterCount).map { _ in Float.random(in: -0.5...0.5, using: &rng) }
        let gradient = (0..<signature.parameterCount).map { i in i % 6 == 0 ? 0 : Float.random(in: -1e-3...1e-3, using: &rng) }
        let hello = Hello(sessionID: 1, signature: signature, coordinatorName: "bench")
        let secret = try SharedSecret(bytes: Array(repeating: 0x41, count: 32))
        // Both pairs are set up first; then each repetition times a plain step and a sealed step
        // back to back, so that a change in the machine's load hits both alike.
        var steps: [(name: String, run: () -> Void)] = []
        for (name, security) in [("plain", WireSecurity.none), ("sealed", .sharedSecret(secret))] {
            let coordinator = EmbeddedChannel(), worker = EmbeddedChannel()
            try WirePipeline.configure(coordinator, role: .coordinator, security: security)
            try WirePipeline.configure(worker, role: .worker, security: security)
            try coordinator.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            try worker.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            func pump() throws {
                var moved = true
                while moved {
                    moved = false
                    while let b = try coordinator.readOutbound(as: ByteBuffer.self) { try worker.writeInbound(b); moved = true }
                    while let b = try worker.readOutbound(as: ByteBuffer.self) { try coordinator.writeInbound(b); moved = true }
                }
            }
            coordinator.writeAndFlush(WireMessage.hello(hello), promise: nil)
            try pump()
            _ = try worker.readInbound(as: WireMessage.self)
            worker.writeAndFlush(WireMessage.helloAck(HelloAck(answering: hello, workerName: "w", blasKernel: "-", threadCount: 1)), promise: nil)
            try pump()
            _ = try coordinator.readInbound(as: WireMessage.self)
            var step: UInt64 = 0
            steps.append((name, {
                step += 1
                for _ in 0..<2 { coordinator.write(WireMessage.parameters(ParameterUpdate(step: step, values: parameters)), promise: nil) }
                for shard in 0..<4 {
                    let task = ShardTask(step: step, shardID: UInt32(shard), kind: .train, dataset: .train,
                                         samples: .indices((0..<1250).map { UInt32(shard * 1250 + $0) }))
                    coordinator.write(WireMessage.task(task), promise: nil)
                }
                coordinator.flush()
                try! pump()
                while let _ = try! worker.readInbound(as: WireMessage.self) {}
                for shard in 0..<4 {
                    worker.write(WireMessage.gradient(GradientResult(step: step, shardID: UInt32(shard), sampleCount: 1250,
                                                                     lossSum: 1, correctCount: 1, gradientSum: gradient)), promise: nil)
                }
                worker.flush()
                try! pump()
                var count = 0
                while let _ = try! coordinator.readInbound(as: WireMessage.self) { count += 1 }
                precondition(count == 4, "\(name): \(count) gradients arrived")
            }))
        }
        var times: [[Double]] = [[], []]
        for _ in 0..<(repetitions + 1) {
            for (i, step) in steps.enumerated() {
                let start = DispatchTime.now().uptimeNanoseconds
                step.run()
                times[i].append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
            }
        }
        let differences = zip(times[1], times[0]).dropFirst().map { $0 - $1 }.sorted()
        for (i, step) in steps.enumerated() {
            let sorted = times[i].dropFirst().sorted()
            print(String(format: "aead: one step's traffic (2 parameters, 4 tasks, 4 gradients) through both pipelines, %@: min %.2f ms, median %.2f ms",
                         step.name, sorted.first! * 1e3, sorted[sorted.count / 2] * 1e3))
        }
        print(String(format: "aead: the protection adds %.2f ms of CPU per step, both ends together (median of %d paired differences; min-to-min %.2f ms)",
                     differences[differences.count / 2] * 1e3, differences.count,
                     (times[1].dropFirst().min()! - times[0].dropFirst().min()!) * 1e3))
    }

    private static func keep(_ value: Int) {
        if value == -1 { print("") }
    }
}
