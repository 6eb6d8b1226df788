/// What coordinator and worker must agree on about the network before any parameter moves:
/// its layer sizes and its scalar type. Sent in ``Hello`` and echoed in ``HelloAck``.
///
/// Version 1 of the protocol means the tutorial's fully connected network (logistic hidden
/// layers, softmax output, cross-entropy loss); parameters and gradients travel as one flat
/// `Float` array of ``parameterCount`` values, in the order the Training module defines.
/// Every parameters and gradient message of a session is checked against this count.
public struct ModelSignature: Hashable, Sendable, CustomStringConvertible {
    /// The element type of parameters and gradients.
    public enum Scalar: UInt8, Hashable, Sendable, CustomStringConvertible {
        case float32 = 1
        case float64 = 2

        public var description: String { self == .float32 ? "float32" : "float64" }
    }

    /// Neurons per layer, input first: `[784, 300, 100, 10]` for MNIST.
    public var layerSizes: [Int]
    public var scalar: Scalar

    public init(layerSizes: [Int], scalar: Scalar = .float32) {
        self.layerSizes = layerSizes
        self.scalar = scalar
    }

    /// The tutorial's MNIST network, 784-300-100-10 in `Float`.
    public static let mnist = ModelSignature(layerSizes: [784, 300, 100, 10])

    /// Weights and biases of all layers: the sum over consecutive sizes `(m, n)` of `m * n + n`.
    /// Meaningful once ``validate(limits:)`` has passed (sizes bounded, so no overflow).
    public var parameterCount: Int {
        zip(layerSizes, layerSizes.dropFirst()).reduce(0) { total, pair in
            let (weights, overflow1) = pair.0.multipliedReportingOverflow(by: pair.1)
            let (sum, overflow2) = total.addingReportingOverflow(weights &+ pair.1)
            return overflow1 || overflow2 ? Int.max : sum
        }
    }

    /// "784-300-100-10 float32".
    public var description: String {
        layerSizes.map(String.init).joined(separator: "-") + " " + scalar.description
    }

    /// Throws ``WireError/invalidModel(_:)`` unless a worker can train this network and its
    /// parameters fit in one frame under `limits`: at least two layers, at most 64, every size
    /// in 1...16,777,216, `float32` (the payloads of version 1 are `Float`).
    public func validate(limits: FrameLimits = .default) throws {
        guard layerSizes.count >= 2 else {
            throw WireError.invalidModel("\(self) needs at least an input and an output layer")
        }
        guard layerSizes.count <= WireLimits.maxLayers else {
            throw WireError.invalidModel("\(layerSizes.count) layers, over the limit of \(WireLimits.maxLayers)")
        }
        for (index, size) in layerSizes.enumerated() where size < 1 || size > WireLimits.maxLayerSize {
            throw WireError.invalidModel("layer \(index) has \(size) neurons, must be 1...\(WireLimits.maxLayerSize)")
        }
        guard scalar == .float32 else {
            throw WireError.invalidModel("\(self): protocol version \(WireProtocol.version) carries float32 parameters only")
        }
        let bytes = parameterCount.multipliedReportingOverflow(by: 4)
        // The raw (uncompressed) fallback of a parameters frame must fit too.
        let needed = bytes.overflow ? Int.max : bytes.partialValue
        guard needed <= limits.maxDecompressedBytes, needed <= limits.maxPayloadBytes - 64 else {
            throw WireError.invalidModel(
                "\(self) has \(parameterCount) parameters; \(needed) bytes do not fit the limits "
                    + "(\(limits.maxDecompressedBytes) decompressed, \(limits.maxPayloadBytes) per frame)")
        }
    }
}
