import Foundation
import NIOCore
import Testing
import Wire

/// The seed corpus of the libFuzzer harnesses in FuzzTesting/ (docs/FUZZING.md), made by the real
/// encoder: one valid frame of every message type, a whole session as one stream, and float
/// payloads in every encoding.
///
/// The committed files are checked here (each decodes to the message it was made from); run with
/// `WIRE_FUZZ_WRITE_SEEDS=1` to write them anew after a change of the protocol:
///
/// ```
/// WIRE_FUZZ_WRITE_SEEDS=1 swift test --filter FuzzSeedCorpus
/// ```
@Suite("Fuzz seed corpus")
struct FuzzSeedCorpusTests {
    /// FuzzTesting/Corpus, from this file's place in the repository.
    static let corpus = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("FuzzTesting/Corpus")

    /// The options byte of a message seed (FuzzTesting's `MessageInput`): bit 0, decode with the
    /// model signature; the harness's signature is `Samples.smallSignature`.
    static let withSignature: UInt8 = 1

    struct Seed {
        var name: String
        var message: WireMessage
        var frame: [UInt8]
    }

    /// Every message of `Samples.everyMessage` for the small model, plus parameters and gradients
    /// that compress, in each float encoding (the sample gradients are incompressible and go raw).
    static func seeds() throws -> [Seed] {
        let signature = Samples.smallSignature
        var messages: [(String, WireMessage, PayloadCodec)] = []
        var seen: [MessageType: Int] = [:]
        for message in Samples.everyMessage(signature: signature, datasetSamples: 3) {
            let index = seen[message.type, default: 0]
            seen[message.type] = index + 1
            messages.append(("\(message.type)\(index == 0 ? "" : "-\(index + 1)")", message, PayloadCodec()))
        }
        let compressible = (0..<signature.parameterCount).map { Float($0 % 4) * 0.25 }
        for encoding in FloatEncoding.allCases {
            let codec = PayloadCodec(.init(floatEncoding: encoding))
            messages.append(("parameters-\(encoding)", .parameters(ParameterUpdate(step: 3, values: compressible)), codec))
            messages.append(("gradient-\(encoding)", .gradient(GradientResult(
                step: 3, shardID: 1, sampleCount: 10, lossSum: 2.5, correctCount: 7, gradientSum: compressible)), codec))
        }
        return try messages.map { name, message, codec in
            Seed(name: name, message: message, frame: Array(try frameBytes(message, codec: codec).readableBytesView))
        }
    }

    /// What the message harness reads: type byte, options byte, payload.
    static func messageInput(_ seed: Seed) -> [UInt8] {
        [seed.message.type.rawValue, withSignature] + seed.frame.dropFirst(FrameHeader.byteCount)
    }

    /// A session's frames in its order, as one stream for the frame harness.
    static func session(_ seeds: [Seed]) -> [UInt8] {
        let order = ["hello", "helloAck", "datasetOffer", "datasetStatus", "dataset", "parameters", "task", "gradient",
                     "task-2", "evaluation", "ping", "pong", "goodbye"]
        return order.flatMap { name in seeds.first { $0.name == name }!.frame }
    }

    /// What the pipeline harness reads: role byte (0 worker, 1 coordinator), piece size, then
    /// what the peer sends: a coordinator's session to a worker, a worker's answers to the
    /// harness's hello (the first sample message), whole and in small pieces.
    static func pipelineSeeds(_ seeds: [Seed]) throws -> [(String, [UInt8])] {
        func frames(_ names: [String]) -> [UInt8] { names.flatMap { name in seeds.first { $0.name == name }!.frame } }
        guard case .hello(let hello) = seeds.first(where: { $0.name == "hello" })!.message else { return [] }
        let ack = HelloAck(answering: hello, workerName: "w", blasKernel: "k", threadCount: 1)
        let toWorker = frames(["hello", "datasetOffer", "dataset", "parameters-shuffledZstd", "task", "task-2", "ping", "goodbye"])
        let toCoordinator = Array(try frameBytes(.helloAck(ack)).readableBytesView)
            + frames(["datasetStatus", "gradient-zstd", "evaluation", "pong", "goodbye"])
        return [
            ("worker", [0, 0] + toWorker), ("worker-pieces", [0, 7] + toWorker),
            ("coordinator", [1, 0] + toCoordinator), ("coordinator-pieces", [1, 5] + toCoordinator),
        ]
    }

    /// What the handshake harness reads (role byte, piece size, what the peer sends): a
    /// coordinator's challenge then a confirm (and a sealed frame) to a worker, a worker's
    /// response to the harness's challenge, an error frame; whole and in small pieces. No seed
    /// can hold a valid proof (the other side's nonce is fresh), so these reach the parsing of
    /// each authentication frame and the refusals.
    static func handshakeSeeds(_ seeds: [Seed]) -> [(String, [UInt8])] {
        func frame(_ type: MessageType, _ payload: [UInt8], flags: FrameFlags = []) -> [UInt8] {
            var buffer = ByteBuffer()
            FrameHeader(type: type, flags: flags, payloadLength: UInt32(payload.count)).write(to: &buffer)
            buffer.writeBytes(payload)
            return Array(buffer.readableBytesView)
        }
        let challenge = frame(.authChallenge, [WireProtocol.version] + [0, 0, 0, 0, 0, 0, 0, 7] + Array(repeating: 0x5A, count: 32))
        let confirm = frame(.authConfirm, Array(repeating: 0xC3, count: 32))
        let sealed = frame(.ping, Array(repeating: 0x11, count: 24), flags: .sealed)
        let response = frame(.authResponse, Array(repeating: 0x5A, count: 32) + Array(repeating: 0xA5, count: 32))
        let error = seeds.first { $0.name == "error" }!.frame
        return [
            ("worker", [0, 0] + challenge + confirm + sealed), ("worker-pieces", [0, 9] + challenge + confirm + sealed),
            ("worker-error", [0, 0] + error), ("worker-hello", [0, 0] + seeds.first { $0.name == "hello" }!.frame),
            ("coordinator", [1, 0] + response), ("coordinator-pieces", [1, 5] + response + sealed),
            ("coordinator-error", [1, 0] + error),
        ]
    }

    @Test("the committed seeds are valid frames and messages of every type")
    func committedSeeds() throws {
        let seeds = try Self.seeds()
        // The authentication frames are not messages: the security layer reads them before the
        // message layer sees anything (AuthenticationTests covers them).
        let authentication: Set<MessageType> = [.authChallenge, .authResponse, .authConfirm]
        #expect(Set(seeds.map(\.message.type)) == Set(MessageType.allCases).subtracting(authentication))
        let frames = Self.corpus.appendingPathComponent("FrameDecoder")
        let inputs = Self.corpus.appendingPathComponent("MessageDecoder")
        let pipeline = Self.corpus.appendingPathComponent("Pipeline")
        let handshake = Self.corpus.appendingPathComponent("Handshake")
        if ProcessInfo.processInfo.environment["WIRE_FUZZ_WRITE_SEEDS"] != nil {
            for directory in [frames, inputs, pipeline, handshake] {
                try? FileManager.default.removeItem(at: directory)
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            }
            for seed in seeds {
                try Data(seed.frame).write(to: frames.appendingPathComponent(seed.name))
                try Data(Self.messageInput(seed)).write(to: inputs.appendingPathComponent(seed.name))
            }
            try Data(Self.session(seeds)).write(to: frames.appendingPathComponent("session"))
            try FileManager.default.createDirectory(at: pipeline, withIntermediateDirectories: true)
            for (name, bytes) in try Self.pipelineSeeds(seeds) {
                try Data(bytes).write(to: pipeline.appendingPathComponent(name))
            }
            for (name, bytes) in Self.handshakeSeeds(seeds) {
                try Data(bytes).write(to: handshake.appendingPathComponent(name))
            }
        }

        let codec = PayloadCodec()
        for seed in seeds {
            let frame = try Data(contentsOf: frames.appendingPathComponent(seed.name))
            #expect(try decodeMessages(ByteBuffer(bytes: frame)) == [seed.message], "frame seed \(seed.name)")

            let input = [UInt8](try Data(contentsOf: inputs.appendingPathComponent(seed.name)))
            let type = try #require(MessageType(rawValue: input[0]))
            let signature = input[1] & Self.withSignature != 0 ? Samples.smallSignature : nil
            let decoded = try WireMessage.decode(
                type: type, payload: ByteBuffer(bytes: input.dropFirst(2)), codec: codec, signature: signature)
            #expect(decoded == seed.message, "message seed \(seed.name)")
        }
        let session = try Data(contentsOf: frames.appendingPathComponent("session"))
        #expect(try decodeMessages(ByteBuffer(bytes: session)).count == 13)
        for (name, bytes) in try Self.pipelineSeeds(seeds) {
            #expect(try Data(contentsOf: pipeline.appendingPathComponent(name)) == Data(bytes), "pipeline seed \(name)")
        }
        for (name, bytes) in Self.handshakeSeeds(seeds) {
            #expect(try Data(contentsOf: handshake.appendingPathComponent(name)) == Data(bytes), "handshake seed \(name)")
            // After the two input bytes, whole frames only.
            var buffer = ByteBuffer(bytes: bytes.dropFirst(2))
            var decoder = FrameDecoder()
            var count = 0
            while try decoder.decode(buffer: &buffer) != nil { count += 1 }
            #expect(count >= 1 && buffer.readableBytes == 0, "handshake seed \(name): whole frames")
        }
    }
}
