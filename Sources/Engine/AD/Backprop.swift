/// Anything that can carry a gradient: the gradient algebra the engine needs, and nothing else.
///
/// A gradient has the same type (and shape) as the value it belongs to. Conforming types give
/// three things, each a function of an existing value so that run-time shapes carry over:
///
/// - `zero()`: the additive identity shaped like `self`;
/// - `add(_:)`: adds another gradient of the same shape, in place;
/// - `one()`: the seed gradient of a result, shaped like `self` (all ones).
///
/// Laws, for any `x`, `y`, `z` of the same shape (tested for every conformance in this
/// package, see `BackpropLawTests`):
///
/// 1. identity: `x.adding(y.zero()) == x` and `x.zero().adding(x) == x`;
/// 2. commutativity: `x.adding(y) == y.adding(x)`;
/// 3. associativity: `x.adding(y).adding(z) == x.adding(y.adding(z))` (up to rounding);
/// 4. shape: `x.zero()` and `x.one()` have the shape of `x`; `zero` and `one` do not depend on
///    the entries of `x`, only on its shape;
/// 5. `adding` agrees with `add`: `{ var a = x; a.add(y); return a }() == x.adding(y)`.
///
/// Conform a struct of parameters by listing its parameter fields once, through key paths:
/// see `BackpropFields`.
public protocol Backprop {
    /// The additive identity, shaped like `self`.
    func zero() -> Self
    /// The seed gradient (all ones), shaped like `self`.
    func one() -> Self
    /// Adds a gradient of the same shape to this one.
    mutating func add(_ other: Self)
}

extension Backprop {
    /// The sum of two gradients.
    @inlinable
    public func adding(_ other: Self) -> Self {
        var sum = self
        sum.add(other)
        return sum
    }
}

extension Float: Backprop {
    public func zero() -> Float { 0 }
    public func one() -> Float { 1 }
    public mutating func add(_ other: Float) { self += other }
}

extension Double: Backprop {
    public func zero() -> Double { 0 }
    public func one() -> Double { 1 }
    public mutating func add(_ other: Double) { self += other }
}

extension Vector: Backprop {
    public func zero() -> Vector { Vector(storage: storage.zeros) }
    public func one() -> Vector { Vector(repeating: 1, count: count) }
    public mutating func add(_ other: Vector) { add(other, scaledBy: 1) }
}

extension Matrix: Backprop {
    public func zero() -> Matrix { Matrix(storage: storage.zeros, rows: rows, columns: columns) }
    public func one() -> Matrix { Matrix(rows: rows, columns: columns, repeating: 1) }
    public mutating func add(_ other: Matrix) { add(other, scaledBy: 1) }
}

/// Arrays of gradients add entry by entry; both arrays must have the same length.
extension Array: Backprop where Element: Backprop {
    public func zero() -> [Element] { map { $0.zero() } }
    public func one() -> [Element] { map { $0.one() } }
    public mutating func add(_ other: [Element]) {
        precondition(count == other.count,
                     "shape mismatch in add: Array[\(count)] vs Array[\(other.count)]")
        for i in indices { self[i].add(other[i]) }
    }
}

/// A pair of gradients, for functions of two arguments and results with two parts.
/// (Swift tuples cannot conform to protocols; `Pair` stands in for `(A, B)`.)
public struct Pair<First: Backprop, Second: Backprop>: Backprop {
    public var first: First
    public var second: Second
    public init(_ first: First, _ second: Second) {
        self.first = first
        self.second = second
    }
    public func zero() -> Pair { Pair(first.zero(), second.zero()) }
    public func one() -> Pair { Pair(first.one(), second.one()) }
    public mutating func add(_ other: Pair) {
        first.add(other.first)
        second.add(other.second)
    }
}

extension Pair: Equatable where First: Equatable, Second: Equatable {}
extension Pair: Sendable where First: Sendable, Second: Sendable {}

/// A struct whose gradient algebra is that of its parameter fields, listed once by key path.
///
/// ```swift
/// struct Affine: BackpropFields {
///     var weights: Matrix<Float>
///     var biases: Vector<Float>
///     static let backpropFields: [BackpropField<Affine>] = [.init(\.weights), .init(\.biases)]
/// }
/// ```
/// Fields that are not listed (hyper-parameters, shapes) are copied unchanged by `zero` and
/// `one`, and ignored by `add`.
public protocol BackpropFields: Backprop {
    /// The parameter fields, each a writable key path to a `Backprop` value.
    static var backpropFields: [BackpropField<Self>] { get }
}

/// One parameter field of a `BackpropFields` type.
///
/// Sendable: it holds only closures over an immutable key path.
public struct BackpropField<Root>: @unchecked Sendable {
    let zero: (inout Root) -> Void
    let one: (inout Root) -> Void
    let add: (inout Root, Root) -> Void

    /// The field at `keyPath`.
    public init<Field: Backprop>(_ keyPath: WritableKeyPath<Root, Field>) {
        zero = { $0[keyPath: keyPath] = $0[keyPath: keyPath].zero() }
        one = { $0[keyPath: keyPath] = $0[keyPath: keyPath].one() }
        add = { $0[keyPath: keyPath].add($1[keyPath: keyPath]) }
    }
}

extension BackpropFields {
    public func zero() -> Self {
        var result = self
        for field in Self.backpropFields { field.zero(&result) }
        return result
    }
    public func one() -> Self {
        var result = self
        for field in Self.backpropFields { field.one(&result) }
        return result
    }
    public mutating func add(_ other: Self) {
        for field in Self.backpropFields { field.add(&self, other) }
    }
}
