import CSparseKernels
import Foundation

/// The descent rule applied to the flat parameter vector once per batch, with its state.
///
/// All arithmetic is in a fixed order on `Float`s, so a given sequence of gradients gives the
/// same parameters bit for bit on every run.
public enum OptimizerKind: String, Sendable, CaseIterable, Codable {
    case sgd, momentum, adam
}

/// An optimizer and its state (momentum or Adam moments, step count): everything a checkpoint
/// must keep to continue the same run.
public struct Optimizer: Sendable, Equatable, Codable {
    public var kind: OptimizerKind
    public var learningRate: Float
    /// Momentum coefficient (momentum) or first-moment decay (Adam).
    public var beta1: Float
    /// Second-moment decay (Adam).
    public var beta2: Float
    /// Adam's epsilon.
    public var epsilon: Float
    /// Steps taken so far.
    public private(set) var step = 0
    /// Velocity (momentum) or first moment (Adam).
    public private(set) var first: [Float] = []
    /// Second moment (Adam).
    public private(set) var second: [Float] = []

    public init(kind: OptimizerKind, learningRate: Float, beta1: Float? = nil, beta2: Float = 0.999,
                epsilon: Float = 1e-8) {
        self.kind = kind
        self.learningRate = learningRate
        self.beta1 = beta1 ?? 0.9
        self.beta2 = beta2
        self.epsilon = epsilon
    }

    /// An optimizer in the state a checkpoint saved.
    public init(restoring kind: OptimizerKind, learningRate: Float, beta1: Float, beta2: Float, epsilon: Float,
                step: Int, first: [Float], second: [Float]) {
        self.init(kind: kind, learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon)
        self.step = step
        self.first = first
        self.second = second
    }

    /// Takes one step: `parameters` move against `gradient` (the batch's mean gradient).
    public mutating func apply(gradient: [Float], to parameters: inout [Float]) {
        // Multiplying by 1 is exact: the same bits as applying `gradient` itself.
        apply(gradientSum: gradient, scale: 1, to: &parameters)
    }

    /// Makes the state (zero moments for momentum and Adam) if there is none yet. `apply` calls
    /// it; a run calls it before its first step, so that the step does not pay for mapping the
    /// state's fresh pages (2 MB for Adam on the tutorial's network, about 1 ms of page faults
    /// in the coordinator's first step on the project's virtual machine). Zero moments are
    /// what the first step would have made, so the results do not change.
    public mutating func makeState(parameterCount: Int) {
        switch kind {
        case .sgd:
            break
        case .momentum:
            if first.isEmpty { first = [Float](repeating: 0, count: parameterCount) }
        case .adam:
            if first.isEmpty { first = [Float](repeating: 0, count: parameterCount) }
            if second.isEmpty { second = [Float](repeating: 0, count: parameterCount) }
        }
    }

    /// Takes one step against the mean gradient `gradientSum[i] * scale` (a batch's gradient
    /// sum and 1 / its size), without materialising the mean: each entry is computed as the
    /// same Float product and used in the same operations, so the bits are those of
    /// `apply(gradient: gradientSum.map { $0 * scale }, to:)`. Adam, the default, runs on 8-lane
    /// vectors in C (element-wise IEEE operations in the scalar order, no fused multiply-adds,
    /// so again the same bits).
    public mutating func apply(gradientSum: [Float], scale: Float, to parameters: inout [Float]) {
        gradientSum.withUnsafeBufferPointer { apply(gradientSum: $0, plus: nil, scale: scale, to: &parameters) }
    }

    /// As `apply(gradientSum:scale:to:)`, on the sum `half[i] + otherHalf[i]` when `otherHalf`
    /// is given: the two halves of the batch's last addition (`GradientReducer.withGradientSum`),
    /// added here entry by entry (the same Float addition, so the same bits) instead of being
    /// written to a buffer that the step then reads again.
    public mutating func apply(gradientSum half: UnsafeBufferPointer<Float>, plus otherHalf: UnsafeBufferPointer<Float>?,
                               scale: Float, to parameters: inout [Float]) {
        precondition(half.count == parameters.count && (otherHalf?.count ?? half.count) == half.count,
                     "gradient has \(half.count) entries (and \(otherHalf?.count ?? half.count)), the parameters \(parameters.count)")
        step += 1
        let lr = learningRate
        makeState(parameterCount: parameters.count)   // nothing to do if the run made it already
        switch (kind, otherHalf) {
        case (.sgd, nil):
            for i in parameters.indices { parameters[i] -= lr * (half[i] * scale) }
        case (.sgd, let otherHalf?):
            for i in parameters.indices { parameters[i] -= lr * ((half[i] + otherHalf[i]) * scale) }
        case (.momentum, nil):
            let mu = beta1
            for i in parameters.indices {
                first[i] = mu * first[i] + half[i] * scale
                parameters[i] -= lr * first[i]
            }
        case (.momentum, let otherHalf?):
            let mu = beta1
            for i in parameters.indices {
                first[i] = mu * first[i] + (half[i] + otherHalf[i]) * scale
                parameters[i] -= lr * first[i]
            }
        case (.adam, _):
            let b1 = beta1, b2 = beta2, eps = epsilon
            let correction1 = 1 - Float(pow(Double(b1), Double(step)))
            let correction2 = 1 - Float(pow(Double(b2), Double(step)))
            let stepSize = lr / correction1
            let root2 = Float(Double(correction2).squareRoot())
            first.withUnsafeMutableBufferPointer { m in
                second.withUnsafeMutableBufferPointer { v in
                    parameters.withUnsafeMutableBufferPointer { p in
                        guard let pp = p.baseAddress else { return }
                        if let otherHalf {
                            sk_adam_sum2_f(m.baseAddress!, v.baseAddress!, pp, half.baseAddress!, otherHalf.baseAddress!,
                                           Int64(p.count), scale, b1, b2, eps, stepSize, root2)
                        } else {
                            sk_adam_f(m.baseAddress!, v.baseAddress!, pp, half.baseAddress!, Int64(p.count), scale, b1, b2,
                                      eps, stepSize, root2)
                        }
                    }
                }
            }
        }
    }
}

/// How the learning rate changes over a run.
public enum LearningRateSchedule: String, Sendable, CaseIterable, Codable {
    /// The same rate at every step.
    case constant
    /// `base * (1 + cos(pi * step / totalSteps)) / 2`: from the base rate down to zero.
    case cosine

    /// The rate for step `step` (from 0) of `totalSteps`.
    public func rate(base: Float, step: Int, totalSteps: Int) -> Float {
        switch self {
        case .constant: return base
        case .cosine:
            let progress = Double(step) / Double(max(totalSteps, 1))
            return Float(Double(base) * (1 + cos(Double.pi * progress)) / 2)
        }
    }
}
