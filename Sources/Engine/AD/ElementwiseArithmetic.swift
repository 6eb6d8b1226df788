import Foundation

/// Values with element-wise arithmetic and elementary functions: scalars, `Vector`, `Matrix`.
///
/// This is what lets one definition of `+`, `*`, `exp`, `log` and `logistic` on `BVar` serve
/// every tensor type; each conformance works entry by entry and checks shapes.
public protocol ElementwiseArithmetic: Backprop {
    /// The scalar type of the entries.
    associatedtype Scalar: TensorScalar
    static func + (lhs: Self, rhs: Self) -> Self
    static func - (lhs: Self, rhs: Self) -> Self
    static func * (lhs: Self, rhs: Self) -> Self
    static func / (lhs: Self, rhs: Self) -> Self
    static prefix func - (operand: Self) -> Self
    static func * (lhs: Scalar, rhs: Self) -> Self
    /// `f` applied to each pair of entries (shapes must match).
    func zipMap(_ other: Self, _ op: String, _ f: (Scalar, Scalar) -> Scalar) -> Self
    /// `f` applied to each entry.
    func map(_ f: (Scalar) -> Scalar) -> Self
    /// Element-wise `e^x`.
    func exp() -> Self
    /// Element-wise natural logarithm.
    func log() -> Self
    /// Element-wise `1 / (1 + e^-x)`.
    func logistic() -> Self
    /// Element-wise `self * y * (1 - y)`: the gradient `self` of `logistic()`'s result `y`,
    /// carried back to its input (`zipMap` by default; the tensors run one kernel).
    func logisticPullback(result y: Self) -> Self
    /// Sum of the entries.
    var sum: Scalar { get }
    /// A value shaped like `self` with every entry `value`.
    func filled(with value: Scalar) -> Self
}

extension ElementwiseArithmetic {
    public func logisticPullback(result y: Self) -> Self {
        zipMap(y, "logistic") { g, y in g * y * (1 - y) }
    }

    /// Sum of the products of the entries.
    public func dot(_ other: Self) -> Scalar { (self * other).sum }
}

extension Float: ElementwiseArithmetic {
    public typealias Scalar = Float
    public func zipMap(_ other: Float, _ op: String, _ f: (Float, Float) -> Float) -> Float { f(self, other) }
    public func map(_ f: (Float) -> Float) -> Float { f(self) }
    public func exp() -> Float { Foundation.exp(self) }
    public func log() -> Float { Foundation.log(self) }
    public func logistic() -> Float { 1 / (1 + Foundation.exp(-self)) }
    public var sum: Float { self }
    public func filled(with value: Float) -> Float { value }
}

extension Double: ElementwiseArithmetic {
    public typealias Scalar = Double
    public func zipMap(_ other: Double, _ op: String, _ f: (Double, Double) -> Double) -> Double { f(self, other) }
    public func map(_ f: (Double) -> Double) -> Double { f(self) }
    public func exp() -> Double { Foundation.exp(self) }
    public func log() -> Double { Foundation.log(self) }
    public func logistic() -> Double { 1 / (1 + Foundation.exp(-self)) }
    public var sum: Double { self }
    public func filled(with value: Double) -> Double { value }
}

extension Vector: ElementwiseArithmetic {
    public func filled(with value: Scalar) -> Vector { Vector(repeating: value, count: count) }
}

extension Matrix: ElementwiseArithmetic {
    public func filled(with value: Scalar) -> Matrix { Matrix(rows: rows, columns: columns, repeating: value) }
}
