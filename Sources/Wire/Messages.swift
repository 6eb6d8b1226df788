import NIOCore
import Synchronization
/// Every message of the coordinator-worker protocol; the unit the session code sends and
/// receives. Start here, then read docs/PROTOCOL.md for the order of messages in a session.
///
/// A message is written with ``encode(into:codec:signature:)`` and read with
/// ``decode(type:payload:codec:limits:signature:)``; framing (header, length) is separate
/// (``FrameDecoder``, ``FrameEncoder``), and ``WireMessageHandler`` joins the two in a channel
/// pipeline. Payloads are plain values (`[Float]`, `[UInt32]`, bytes): `Wire` knows nothing of
/// the Engine.
public enum WireMessage: Hashable, Sendable {
    /// Coordinator → worker, first message: protocol version, model, session.
    case hello(Hello)
    /// Worker → coordinator, answer to `hello`.
    case helloAck(HelloAck)
    /// Coordinator → worker: "I am about to use this data set; do you hold it?"
    case datasetOffer(DatasetDescriptor)
    /// Worker → coordinator: the answer to `datasetOffer`, and the receipt of `dataset`.
    case datasetStatus(DatasetStatus)
    /// Coordinator → worker: a whole data set, compressed.
    case dataset(DatasetTransfer)
    /// Coordinator → worker: the parameters the following tasks of this step use.
    case parameters(ParameterUpdate)
    /// Coordinator → worker: compute one shard.
    case task(ShardTask)
    /// Worker → coordinator: a training shard's gradient sum, loss sum and correct count.
    case gradient(GradientResult)
    /// Worker → coordinator: an evaluation shard's loss sum and correct count.
    case evaluation(EvaluationResult)
    /// Either side: "are you there?" with a nonce, answered by `pong` with the same nonce.
    case ping(UInt64)
    /// Either side: the answer to `ping`.
    case pong(UInt64)
    /// Either side: the sender will send nothing more and closes the connection.
    case goodbye(reason: String)
    /// Either side: the sender refuses the connection and closes it. Frozen layout.
    case error(ErrorReport)

    /// The frame type that carries this message.
    public var type: MessageType {
        switch self {
        case .hello: return .hello
        case .helloAck: return .helloAck
        case .datasetOffer: return .datasetOffer
        case .datasetStatus: return .datasetStatus
        case .dataset: return .dataset
        case .parameters: return .parameters
        case .task: return .task
        case .gradient: return .gradient
        case .evaluation: return .evaluation
        case .ping: return .ping
        case .pong: return .pong
        case .goodbye: return .goodbye
        case .error: return .error
        }
    }
}

/// An optional tagged field of ``Hello`` and ``HelloAck``, for later additions (authentication
/// nonces, capabilities) that do not need a new protocol version. A receiver ignores tags it
/// does not know. At most 16 per message, 4096 bytes each.
public struct WireExtension: Hashable, Sendable {
    public var tag: UInt16
    public var value: [UInt8]

    public init(tag: UInt16, value: [UInt8]) {
        self.tag = tag
        self.value = value
    }
}

extension WireExtension {
    /// Tag of the hello's offer of a shared payload region (``SharedPayloadRegion``): the
    /// number of gradient slots `u8`, the region's 16-byte token, then its path (UTF-8, the
    /// rest of the value). In a helloAck, the same tag with the value `[1]` accepts it.
    public static let sharedMemoryTag: UInt16 = 2

    /// The hello's offer of `region`.
    public static func sharedMemoryOffer(_ region: SharedPayloadRegion) -> WireExtension {
        WireExtension(tag: sharedMemoryTag, value: [UInt8(region.gradientSlots)] + region.token + Array(region.path.utf8))
    }

    /// A helloAck's acceptance of the hello's shared payload region.
    public static let sharedMemoryAccepted = WireExtension(tag: sharedMemoryTag, value: [1])

    /// A helloAck's refusal of the hello's shared payload region, and why (for the
    /// coordinator's log; at most 1000 bytes of it are sent).
    public static func sharedMemoryDeclined(_ reason: String) -> WireExtension {
        WireExtension(tag: sharedMemoryTag, value: [0] + Array(reason.utf8.prefix(1000)))
    }

    /// Tag of the hello's training shard size: the samples of each training task of the
    /// session, `u32` big-endian. A worker uses it to warm up on shards of that size before the
    /// first step.
    public static let shardSizeTag: UInt16 = 1

    /// The extension announcing the session's training shard size.
    public static func shardSize(_ samples: Int) -> WireExtension {
        let n = UInt32(clamping: samples)
        return WireExtension(tag: shardSizeTag, value: [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: n >> $0) })
    }
}

/// The coordinator's opening message.
public struct Hello: Hashable, Sendable {
    /// Must equal the frame header's version and the worker's ``WireProtocol/version``.
    public var protocolVersion: UInt8
    /// Chosen at random by the coordinator for each connection; echoed in ``HelloAck``.
    public var sessionID: UInt64
    /// The network of this session.
    public var signature: ModelSignature
    /// For the worker's logs (host name and process of the coordinator).
    public var coordinatorName: String
    public var extensions: [WireExtension]

    /// The training shard size the coordinator announced (``WireExtension/shardSize(_:)``), if
    /// any: the first well-formed one, at least 1.
    public var shardSize: Int? {
        for e in extensions where e.tag == WireExtension.shardSizeTag && e.value.count == 4 {
            let n = e.value.reduce(0) { $0 << 8 | Int($1) }
            if n >= 1 { return n }
        }
        return nil
    }

    /// The shared payload region the coordinator offers (path, token, gradient slots), if any.
    public var sharedMemoryOffer: (path: String, token: [UInt8], gradientSlots: Int)? {
        for e in extensions where e.tag == WireExtension.sharedMemoryTag && e.value.count > 17 {
            guard let path = String(validating: e.value[17...], as: UTF8.self) else { continue }
            return (path, Array(e.value[1..<17]), Int(e.value[0]))
        }
        return nil
    }

    public init(
        protocolVersion: UInt8 = WireProtocol.version, sessionID: UInt64, signature: ModelSignature,
        coordinatorName: String, extensions: [WireExtension] = []
    ) {
        self.protocolVersion = protocolVersion
        self.sessionID = sessionID
        self.signature = signature
        self.coordinatorName = coordinatorName
        self.extensions = extensions
    }
}

/// The worker's acceptance of a ``Hello``. Its version, session and signature must equal the
/// hello's, or the coordinator refuses the worker.
public struct HelloAck: Hashable, Sendable {
    /// What the worker said of the hello's shared payload region: nil when it said nothing (no
    /// offer, or a worker with `--shared-memory off`), else whether it accepted, and why not.
    public var sharedMemoryAnswer: (accepted: Bool, reason: String)? {
        for e in extensions where e.tag == WireExtension.sharedMemoryTag && !e.value.isEmpty {
            return (e.value[0] == 1, String(decoding: e.value.dropFirst(), as: UTF8.self))
        }
        return nil
    }

    public var protocolVersion: UInt8
    public var sessionID: UInt64
    public var signature: ModelSignature
    /// The worker's name for logs, such as "hostB:7070 pid 4242".
    public var workerName: String
    /// The BLAS kernel in use (`openblas_get_corename()`), e.g. "SkylakeX".
    public var blasKernel: String
    /// BLAS threads the worker computes with (0...65535).
    public var threadCount: Int
    public var extensions: [WireExtension]

    public init(
        protocolVersion: UInt8 = WireProtocol.version, sessionID: UInt64, signature: ModelSignature,
        workerName: String, blasKernel: String, threadCount: Int, extensions: [WireExtension] = []
    ) {
        self.protocolVersion = protocolVersion
        self.sessionID = sessionID
        self.signature = signature
        self.workerName = workerName
        self.blasKernel = blasKernel
        self.threadCount = threadCount
        self.extensions = extensions
    }

    /// The acknowledgement a worker sends for `hello`.
    public init(answering hello: Hello, workerName: String, blasKernel: String, threadCount: Int, extensions: [WireExtension] = []) {
        self.init(
            protocolVersion: hello.protocolVersion, sessionID: hello.sessionID, signature: hello.signature,
            workerName: workerName, blasKernel: blasKernel, threadCount: threadCount, extensions: extensions)
    }
}

/// The parameters of one step, which every following task of that step uses. Exactly
/// ``ModelSignature/parameterCount`` values.
public struct ParameterUpdate: Hashable, Sendable {
    public let step: UInt64
    /// The parameters, as received (read in place from the frame when it carried raw floats):
    /// a worker builds its network from them with one copy, not two.
    public let parameterValues: WireFloats
    /// The encoded float payload, shared by every copy of this update: a coordinator sending
    /// the same parameters to N workers compresses them once, not N times.
    let encoded = EncodedPayloadCache()

    /// The parameters as an array (a copy of the received bytes).
    public var values: [Float] { parameterValues.array }

    public init(step: UInt64, values: [Float]) {
        self.init(step: step, parameterValues: WireFloats(values))
    }

    public init(step: UInt64, parameterValues: WireFloats) {
        self.step = step
        self.parameterValues = parameterValues
    }

    public static func == (lhs: ParameterUpdate, rhs: ParameterUpdate) -> Bool {
        lhs.step == rhs.step && lhs.parameterValues == rhs.parameterValues
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(step)
        hasher.combine(parameterValues)
    }
}

/// A float payload encoded once, with the codec configuration that encoded it.
final class EncodedPayloadCache: Sendable {
    private let state = Mutex<(PayloadCodec.Configuration, ByteBuffer)?>(nil)

    /// The cached bytes for `configuration`, encoding them with `encode` the first time.
    func bytes(for configuration: PayloadCodec.Configuration, encode: () throws -> ByteBuffer) rethrows -> ByteBuffer {
        try state.withLock { cached in
            if let (c, bytes) = cached, c == configuration { return bytes }
            let bytes = try encode()
            cached = (configuration, bytes)
            return bytes
        }
    }
}

/// What a task computes.
public enum TaskKind: UInt8, Hashable, Sendable {
    /// Gradient sum, loss sum and correct count: answered by ``GradientResult``.
    case train = 1
    /// Loss sum and correct count only: answered by ``EvaluationResult``.
    case evaluate = 2
}

/// The samples of a task, as indices into one data set.
public enum SampleSelection: Hashable, Sendable {
    /// These samples, in this order (a shard of a shuffled batch).
    case indices([UInt32])
    /// `count` consecutive samples from `start` (an evaluation shard).
    case range(start: Int, count: Int)

    /// The number of samples.
    public var count: Int {
        switch self {
        case .indices(let indices): return indices.count
        case .range(_, let count): return count
        }
    }

    /// The largest index used plus one: the data set must hold at least this many samples.
    public var requiredSampleCount: Int {
        switch self {
        case .indices(let indices): return indices.max().map { Int($0) + 1 } ?? 0
        case .range(let start, let count):
            let end = start.addingReportingOverflow(count)
            return end.overflow ? Int.max : end.partialValue
        }
    }
}

/// One shard of work: compute on `samples` of `dataset` with the parameters of `step`.
public struct ShardTask: Hashable, Sendable {
    public var step: UInt64
    /// The shard's place in the step; results are reduced along the shard tree over these.
    public var shardID: UInt32
    public var kind: TaskKind
    public var dataset: DatasetKind
    public var samples: SampleSelection

    public init(step: UInt64, shardID: UInt32, kind: TaskKind, dataset: DatasetKind, samples: SampleSelection) {
        self.step = step
        self.shardID = shardID
        self.kind = kind
        self.dataset = dataset
        self.samples = samples
    }
}

/// A training shard's answer: sums over its samples, not averages.
public struct GradientResult: Hashable, Sendable {
    public var step: UInt64
    /// The first shard of the sum.
    public var shardID: UInt32
    /// Shards in the sum: `shardID ..< shardID + shardCount`, a node of the batch's shard tree
    /// (`ShardTree`), added by the worker in the tree's order (1: the shard alone).
    public var shardCount: UInt32 = 1
    public var sampleCount: Int
    /// Sum of the per-sample losses.
    public var lossSum: Double
    /// Samples whose predicted class was the label (at most `sampleCount`).
    public var correctCount: Int
    /// Sum of the per-sample gradients, ``ModelSignature/parameterCount`` values, as received
    /// (read in place from the frame when it carried raw floats).
    public var gradientValues: WireFloats

    /// The gradient sum as an array (a copy of the received bytes: read `gradientValues` in
    /// place where the values are only read).
    public var gradientSum: [Float] {
        get { gradientValues.array }
        set { gradientValues = WireFloats(newValue) }
    }

    public init(step: UInt64, shardID: UInt32, shardCount: UInt32 = 1, sampleCount: Int, lossSum: Double, correctCount: Int,
                gradientSum: [Float]) {
        self.init(step: step, shardID: shardID, shardCount: shardCount, sampleCount: sampleCount, lossSum: lossSum,
                  correctCount: correctCount, gradientValues: WireFloats(gradientSum))
    }

    public init(step: UInt64, shardID: UInt32, shardCount: UInt32 = 1, sampleCount: Int, lossSum: Double, correctCount: Int,
                gradientValues: WireFloats) {
        self.step = step
        self.shardID = shardID
        self.shardCount = shardCount
        self.sampleCount = sampleCount
        self.lossSum = lossSum
        self.correctCount = correctCount
        self.gradientValues = gradientValues
    }

    /// Whether the loss and every gradient value are finite. The protocol carries NaN and
    /// infinity faithfully; the coordinator must not apply a result for which this is false.
    public var isFinite: Bool {
        lossSum.isFinite && gradientValues.withUnsafeBufferPointer(Self.allFinite)
    }

    /// Whether no entry is an infinity or a NaN (all exponent bits set), 8 lanes at a time
    /// without a branch per entry: this runs on every shard of every step.
    static func allFinite(_ values: UnsafeBufferPointer<Float>) -> Bool {
        let exponent: UInt32 = 0x7f80_0000
        var i = 0
        if values.count >= 8 {
            let raw = UnsafeRawPointer(values.baseAddress!)
            let mask = SIMD8<UInt32>(repeating: exponent)
            var seen = SIMDMask<SIMD8<Int32>>(repeating: false)
            while i + 8 <= values.count {
                let bits = raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<UInt32>.self) & mask
                seen = seen .| (bits .== mask)
                i += 8
            }
            if any(seen) { return false }
        }
        while i < values.count {
            if !values[i].isFinite { return false }
            i += 1
        }
        return true
    }
}

/// The float values of a received message: an array, or the raw little-endian bytes of the
/// frame they arrived in. A coordinator checks and adds a megabyte gradient straight from the
/// frame, with no copy into an array first.
public struct WireFloats: Sendable {
    private enum Storage: Sendable {
        case array([Float])
        /// IEEE-754 floats, little-endian: the buffer's readable bytes (a multiple of 4).
        case littleEndian(ByteBuffer)
        /// A slot of a shared payload region, held until these values are dropped.
        case shared(SharedSlotLease)
        /// `count` values that `write` produces on demand (see ``init(count:writingInto:)``).
        case deferred(count: Int, write: @Sendable (UnsafeMutableBufferPointer<Float>) -> Void)
    }
    private var storage: Storage

    public init(_ values: [Float]) {
        storage = .array(values)
    }

    /// The floats in `bytes`' readable bytes, whose count must be a multiple of 4 (the decoder
    /// has checked it against the declared count).
    init(littleEndianBytes bytes: ByteBuffer) {
        precondition(bytes.readableBytes % 4 == 0, "\(bytes.readableBytes) bytes are not a whole number of floats")
        storage = .littleEndian(bytes)
    }

    /// The floats of a shared payload region's slot, read in place.
    init(shared lease: SharedSlotLease) {
        storage = .shared(lease)
    }

    /// `count` values that `write` puts into the buffer it is given (exactly `count` long),
    /// each time they are needed: a worker's gradient, flattened from the network's tensors
    /// straight into a shared payload region's slot, with no array in between.
    public init(count: Int, writingInto write: @escaping @Sendable (UnsafeMutableBufferPointer<Float>) -> Void) {
        storage = .deferred(count: count, write: write)
    }

    /// Writes the values into `destination`, which holds exactly ``count`` floats.
    func write(into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(destination.count == count, "\(count) values written into room for \(destination.count)")
        if case .deferred(_, let write) = storage { return write(destination) }
        withUnsafeBufferPointer { values in
            if let source = values.baseAddress, let target = destination.baseAddress { target.update(from: source, count: values.count) }
        }
    }

    /// Whether the values are read in place from a shared payload region's slot.
    public var isShared: Bool {
        if case .shared = storage { return true }
        return false
    }

    /// Number of values.
    public var count: Int {
        switch storage {
        case .array(let values): values.count
        case .littleEndian(let bytes): bytes.readableBytes / 4
        case .shared(let lease): lease.values.count
        case .deferred(let count, _): count
        }
    }

    /// Calls `body` with the values: in place when they are bytes aligned for `Float` on a
    /// little-endian machine (as the frames of this protocol are), else from a copy.
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        switch storage {
        case .array(let values):
            return try values.withUnsafeBufferPointer(body)
        case .shared(let lease):
            return try withExtendedLifetime(lease) { try body(lease.values) }
        case .deferred:
            return try array.withUnsafeBufferPointer(body)
        case .littleEndian(let bytes):
            #if _endian(little)
            let inPlace: R? = try bytes.withUnsafeReadableBytes { raw in
                guard let base = raw.baseAddress else { return try body(UnsafeBufferPointer(start: nil, count: 0)) }
                guard Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0 else { return nil }
                return try raw.withMemoryRebound(to: Float.self, body)
            }
            if let inPlace { return inPlace }
            #endif
            return try array.withUnsafeBufferPointer(body)
        }
    }

    /// The values as an array (a copy when they are held as bytes).
    public var array: [Float] {
        switch storage {
        case .array(let values):
            return values
        case .littleEndian(var bytes):
            return PayloadCodec.readLittleEndian(count: bytes.readableBytes / 4, from: &bytes)
        case .shared(let lease):
            return withExtendedLifetime(lease) { Array(lease.values) }
        case .deferred(let count, let write):
            return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                write(buffer)
                initialized = count
            }
        }
    }
}

extension WireFloats: Hashable {
    /// Equal when the values are, element by element (as for `[Float]`), however they are held.
    public static func == (a: WireFloats, b: WireFloats) -> Bool {
        a.withUnsafeBufferPointer { x in b.withUnsafeBufferPointer { y in x.elementsEqual(y) } }
    }

    public func hash(into hasher: inout Hasher) {
        withUnsafeBufferPointer { values in
            hasher.combine(values.count)
            for value in values { hasher.combine(value) }
        }
    }
}

/// An evaluation shard's answer.
public struct EvaluationResult: Hashable, Sendable {
    public var step: UInt64
    public var shardID: UInt32
    public var sampleCount: Int
    public var lossSum: Double
    public var correctCount: Int

    public init(step: UInt64, shardID: UInt32, sampleCount: Int, lossSum: Double, correctCount: Int) {
        self.step = step
        self.shardID = shardID
        self.sampleCount = sampleCount
        self.lossSum = lossSum
        self.correctCount = correctCount
    }
}

/// Why the sender is closing the connection: a code and a sentence (at most 1024 bytes of
/// UTF-8; longer texts are cut when sent).
public struct ErrorReport: Hashable, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String

    public init(code: ErrorCode, message: String) {
        self.code = code
        self.message = message
    }

    /// The report sent for a violation detected locally.
    public init(_ error: WireError) {
        self.init(code: error.code, message: error.description)
    }

    /// The error to throw when a peer sent this report.
    public var error: WireError { .peer(code: code, message: message) }

    public var description: String { "\(code): \(message)" }
}
