#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOEmbedded
import Testing
import Wire

/// A deterministic generator (SplitMix64) so that failures reproduce.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A normal variate (Box-Muller).
    mutating func normal(standardDeviation: Double) -> Double {
        let u1 = Double.random(in: Double.ulpOfOne..<1, using: &self)
        let u2 = Double.random(in: 0..<1, using: &self)
        return standardDeviation * (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}

/// Gradient-like floats: N(0, sigma) with a fraction of exact zeros.
func gradientLikeValues(count: Int, sigma: Double = 1e-3, zeroFraction: Double = 0.17, seed: UInt64 = 42) -> [Float] {
    var rng = SeededGenerator(seed: seed)
    return (0..<count).map { _ in
        Double.random(in: 0..<1, using: &rng) < zeroFraction ? 0 : Float(rng.normal(standardDeviation: sigma))
    }
}

/// Collects what reaches the end of a pipeline: messages and errors.
final class PipelineRecorder: ChannelInboundHandler {
    typealias InboundIn = WireMessage
    var messages: [WireMessage] = []
    var errors: [Error] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        messages.append(unwrapInboundIn(data))
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        errors.append(error)
    }

    var wireErrors: [WireError] { errors.compactMap { $0 as? WireError } }
}

/// A connected `EmbeddedChannel` with the protocol's handlers and a recorder at the end.
func makeChannel(role: SessionRole, limits: FrameLimits = .default, deadlines: WireDeadlines = .default) throws -> (EmbeddedChannel, PipelineRecorder) {
    let channel = EmbeddedChannel()
    let recorder = PipelineRecorder()
    try WirePipeline.configure(channel, role: role, limits: limits, deadlines: deadlines)
    try channel.pipeline.syncOperations.addHandler(recorder)
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 7070)).wait()
    return (channel, recorder)
}

/// Moves everything `source` wrote to the inbound side of `destination`.
func pump(from source: EmbeddedChannel, to destination: EmbeddedChannel) throws {
    while let bytes = try source.readOutbound(as: ByteBuffer.self) {
        try destination.writeInbound(bytes)
    }
}

/// All bytes `channel` wrote, concatenated.
func writtenBytes(_ channel: EmbeddedChannel) throws -> ByteBuffer {
    var all = ByteBuffer()
    while var bytes = try channel.readOutbound(as: ByteBuffer.self) { all.writeBuffer(&bytes) }
    return all
}

/// Splits bytes into frames and decodes them as messages (no session rules).
func decodeMessages(_ bytes: ByteBuffer, limits: FrameLimits = .default) throws -> [WireMessage] {
    var buffer = bytes
    var decoder = FrameDecoder(limits: limits)
    let codec = PayloadCodec()
    var messages: [WireMessage] = []
    while let frame = try decoder.decode(buffer: &buffer) {
        messages.append(try WireMessage.decode(type: frame.type, payload: frame.payload, codec: codec, limits: limits))
    }
    return messages
}

/// A complete frame (header and payload) for `message`, encoded without session checks.
func frameBytes(_ message: WireMessage, version: UInt8 = WireProtocol.version, codec: PayloadCodec = PayloadCodec()) throws -> ByteBuffer {
    var payload = ByteBuffer()
    try message.encode(into: &payload, codec: codec)
    var out = ByteBuffer()
    try FrameEncoder().encode(data: WireFrame(version: version, type: message.type, payload: payload), out: &out)
    return out
}

/// A frame with an arbitrary header.
func rawFrame(type: UInt8, version: UInt8 = WireProtocol.version, flags: UInt16 = 0, length: UInt32? = nil, payload: [UInt8] = []) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.writeMultipleIntegers(WireProtocol.magic, version, type, flags, length ?? UInt32(payload.count), endianness: .big)
    buffer.writeBytes(payload)
    return buffer
}

enum Samples {
    static let signature = ModelSignature.mnist
    static let hello = Hello(sessionID: 0xDEAD_BEEF_0102_0304, signature: signature, coordinatorName: "coordinator@test pid 1")
    static let ack = HelloAck(answering: hello, workerName: "worker@test:7070", blasKernel: "SkylakeX", threadCount: 1)

    static func dataset(kind: DatasetKind = .train, samples: Int = 50) -> DatasetTransfer {
        var rng = SeededGenerator(seed: 7)
        let images = (0..<(samples * 784)).map { index in index % 3 == 0 ? UInt8.random(in: 0...255, using: &rng) : 0 }
        let labels = (0..<samples).map { UInt8($0 % 10) }
        return DatasetTransfer(kind: kind, featureCount: 784, classCount: 10, images: images, labels: labels)
    }

    /// A model small enough to feed byte by byte.
    static let smallSignature = ModelSignature(layerSizes: [8, 4, 2])
    static let smallHello = Hello(sessionID: 99, signature: smallSignature, coordinatorName: "c")
    static let smallAck = HelloAck(answering: smallHello, workerName: "w", blasKernel: "Haswell", threadCount: 2)

    /// One message of each type, with parameters and gradients of `signature`.
    static func everyMessage(signature: ModelSignature = signature, datasetSamples: Int = 50) -> [WireMessage] {
        let transfer = dataset(samples: datasetSamples)
        let parameters = gradientLikeValues(count: signature.parameterCount, sigma: 0.05, zeroFraction: 0, seed: 1)
        let gradient = gradientLikeValues(count: signature.parameterCount, seed: 2)
        return [
            .hello(Hello(
                sessionID: 1, signature: signature, coordinatorName: "c", extensions: [WireExtension(tag: 7, value: [1, 2, 3])])),
            .helloAck(ack),
            .datasetOffer(transfer.descriptor),
            .datasetStatus(DatasetStatus(kind: .test, digest: transfer.descriptor.digest, state: .missing)),
            .dataset(transfer),
            .parameters(ParameterUpdate(step: 12, values: parameters)),
            .task(ShardTask(step: 12, shardID: 3, kind: .train, dataset: .train, samples: .indices([5, 1, 49, 0, 4_000_000_000]))),
            .task(ShardTask(step: 12, shardID: 4, kind: .evaluate, dataset: .test, samples: .range(start: 9000, count: 1000))),
            .gradient(GradientResult(step: 12, shardID: 3, sampleCount: 500, lossSum: 123.456, correctCount: 450, gradientSum: gradient)),
            // A sum of shards 4-7, added by the worker (protocol version 6).
            .gradient(GradientResult(step: 12, shardID: 4, shardCount: 4, sampleCount: 2000, lossSum: 480.5, correctCount: 1810,
                                     gradientSum: gradient)),
            .evaluation(EvaluationResult(step: 12, shardID: 4, sampleCount: 1000, lossSum: 0.25, correctCount: 980)),
            .ping(0x0102_0304_0506_0708),
            .pong(42),
            .goodbye(reason: "training finished, 12 steps"),
            .error(ErrorReport(code: .workerFailure, message: "index 70000 beyond the train set (60000 samples) — é")),
        ]
    }
}

/// Test-argument descriptions: the message type and size only, not every float of a payload
/// (Swift Testing prints each argument of a parameterised test).
extension WireMessage: CustomTestStringConvertible {
    public var testDescription: String {
        switch self {
        case .parameters(let p): return "parameters(step \(p.step), \(p.values.count) floats)"
        case .gradient(let g): return "gradient(step \(g.step), shards \(g.shardID) + \(g.shardCount), \(g.gradientSum.count) floats)"
        case .dataset(let d): return "dataset(\(d.descriptor.kind), \(d.images.count) image bytes)"
        default:
            let text = String(describing: self)
            return text.count > 200 ? String(text.prefix(200)) + "…" : text
        }
    }
}
