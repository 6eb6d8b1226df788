/// A dense vector of `Float` or `Double` with value semantics, backed by contiguous memory.
///
/// Start here for the tensor API: `Vector(repeating:count:)`, `Vector([1, 2, 3])`, the
/// element-wise operators, `dot`, `sum`, and `Matrix` for the BLAS-backed products. Shapes are
/// checked at run time; a mismatch stops the program with a message naming both shapes.
public struct Vector<Scalar: TensorScalar>: Sendable {
    @usableFromInline nonisolated(unsafe) var storage: TensorStorage<Scalar>

    /// Number of entries.
    @inlinable public var count: Int { storage.count }

    @inlinable init(storage: TensorStorage<Scalar>) { self.storage = storage }

    /// A vector of `count` copies of `value`.
    @inlinable
    public init(repeating value: Scalar, count: Int) {
        storage = TensorStorage(repeating: value, count: count)
    }

    /// A vector holding `scalars`.
    @inlinable
    public init(_ scalars: [Scalar]) {
        storage = TensorStorage(uninitializedCount: scalars.count)
        scalars.withUnsafeBufferPointer { storage.pointer.update(from: $0.baseAddress!, count: $0.count) }
    }

    /// A vector of `count` entries written by `body`, which must set every one of them.
    @inlinable
    public init(count: Int, initializingWith body: (UnsafeMutableBufferPointer<Scalar>) throws -> Void) rethrows {
        // Float and Double are trivial types: writing into the fresh buffer initialises it.
        storage = TensorStorage(uninitializedCount: count)
        try body(UnsafeMutableBufferPointer(start: storage.pointer, count: count))
    }

    /// A vector of zeros (sharing one read-only zero buffer per size: free to make).
    @inlinable
    public static func zeros(_ count: Int) -> Vector { Vector(storage: .sharedZeros(count: count)) }

    /// The entries as an array.
    public var scalars: [Scalar] { Array(UnsafeBufferPointer(start: storage.pointer, count: count)) }

    @inlinable public subscript(index: Int) -> Scalar {
        get {
            precondition(index >= 0 && index < count, "index \(index) out of range for Vector[\(count)]")
            return storage.pointer[index]
        }
        set {
            precondition(index >= 0 && index < count, "index \(index) out of range for Vector[\(count)]")
            makeUnique()
            storage.pointer[index] = newValue
        }
    }

    @inlinable
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Scalar>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.pointer, count: count))
    }

    @inlinable
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (UnsafeMutableBufferPointer<Scalar>) throws -> R
    ) rethrows -> R {
        makeUnique()
        return try body(UnsafeMutableBufferPointer(start: storage.pointer, count: count))
    }

    @inlinable mutating func makeUnique() {
        if storage.isSharedZero || !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
    }

    /// Adds `scale * other` to this vector in place (BLAS axpy).
    @inlinable
    public mutating func add(_ other: Vector, scaledBy scale: Scalar = 1) {
        checkSameShape(other, "add")
        if storage.isSharedZero && scale == 1 {
            storage = other.storage   // 0 + other: share other's storage (copy on write)
            return
        }
        makeUnique()
        Scalar.axpy(count: count, alpha: scale, x: other.storage.pointer, y: storage.pointer)
    }

    /// Multiplies every entry by `scale` in place.
    @inlinable
    public mutating func scale(by scale: Scalar) {
        makeUnique()
        let p = storage.pointer
        for i in 0..<count { p[i] *= scale }
    }

    /// Index of the largest entry (the first one on ties).
    @inlinable
    public var indexOfMaximum: Int {
        precondition(count > 0, "indexOfMaximum of an empty vector")
        let p = storage.pointer
        var best = 0
        for i in 1..<count where p[i] > p[best] { best = i }
        return best
    }

    /// Sum of the entries.
    @inlinable
    public var sum: Scalar {
        let p = storage.pointer
        var s: Scalar = 0
        for i in 0..<count { s += p[i] }
        return s
    }

    @usableFromInline
    func checkSameShape(_ other: Vector, _ operation: String) {
        precondition(count == other.count,
                     "shape mismatch in \(operation): Vector[\(count)] vs Vector[\(other.count)]")
    }

    /// A vector of the same length with `transform` applied to each pair of entries.
    @inlinable
    public func zipMap(_ other: Vector, _ op: String = "element-wise operation",
                       _ transform: (Scalar, Scalar) -> Scalar) -> Vector {
        checkSameShape(other, op)
        let a = storage.pointer, b = other.storage.pointer
        return Vector(count: count) { out in
            for i in 0..<out.count { out[i] = transform(a[i], b[i]) }
        }
    }

    /// A vector with `transform` applied to each entry.
    @inlinable
    public func map(_ transform: (Scalar) -> Scalar) -> Vector {
        let a = storage.pointer
        return Vector(count: count) { out in
            for i in 0..<out.count { out[i] = transform(a[i]) }
        }
    }
}

extension Vector: Equatable {
    @inlinable
    public static func == (lhs: Vector, rhs: Vector) -> Bool {
        lhs.count == rhs.count && (lhs.storage === rhs.storage
            || (0..<lhs.count).allSatisfy { lhs.storage.pointer[$0] == rhs.storage.pointer[$0] })
    }
}

extension Vector: CustomStringConvertible {
    public var description: String {
        let shown = scalars.prefix(8).map { "\($0)" }.joined(separator: ", ")
        return "Vector[\(count)](\(shown)\(count > 8 ? ", …" : ""))"
    }
}

// MARK: - Arithmetic

extension Vector {
    @inlinable public static func + (a: Vector, b: Vector) -> Vector { a.zipMap(b, "+") { $0 + $1 } }
    @inlinable public static func - (a: Vector, b: Vector) -> Vector { a.zipMap(b, "-") { $0 - $1 } }
    /// Element-wise (Hadamard) product.
    @inlinable public static func * (a: Vector, b: Vector) -> Vector { a.zipMap(b, "*") { $0 * $1 } }
    @inlinable public static func / (a: Vector, b: Vector) -> Vector { a.zipMap(b, "/") { $0 / $1 } }
    @inlinable public static prefix func - (a: Vector) -> Vector { a.map { -$0 } }
    @inlinable public static func * (s: Scalar, a: Vector) -> Vector { a.map { s * $0 } }
    @inlinable public static func * (a: Vector, s: Scalar) -> Vector { a.map { $0 * s } }
    @inlinable public static func + (a: Vector, s: Scalar) -> Vector { a.map { $0 + s } }
    @inlinable public static func + (s: Scalar, a: Vector) -> Vector { a.map { s + $0 } }
    @inlinable public static func / (s: Scalar, a: Vector) -> Vector { a.map { s / $0 } }

    /// Dot product (BLAS).
    @inlinable
    public func dot(_ other: Vector) -> Scalar {
        checkSameShape(other, "dot")
        return Scalar.dot(count: count, storage.pointer, other.storage.pointer)
    }

    /// Element-wise `e^x`.
    @inlinable
    public func exp() -> Vector {
        Vector(count: count) { Scalar.exp(storage.pointer, into: $0.baseAddress!, count: count) }
    }
    /// Element-wise natural logarithm.
    @inlinable
    public func log() -> Vector {
        Vector(count: count) { Scalar.log(storage.pointer, into: $0.baseAddress!, count: count) }
    }
    /// Element-wise logistic function `1 / (1 + e^-x)`.
    @inlinable
    public func logistic() -> Vector {
        Vector(count: count) { Scalar.logistic(storage.pointer, into: $0.baseAddress!, count: count) }
    }
    /// `self * y * (1 - y)` entry by entry (the logistic function's pullback, given its result).
    @inlinable
    public func logisticPullback(result y: Vector) -> Vector {
        checkSameShape(y, "logistic")
        return Vector(count: count) {
            Scalar.logisticPullback(storage.pointer, y.storage.pointer, into: $0.baseAddress!, count: count)
        }
    }
    /// `e^x / sum(e^x)`, computed stably (the maximum is subtracted first).
    @inlinable
    public func softMax() -> Vector {
        precondition(count > 0, "softMax of an empty vector")
        let m = self[indexOfMaximum]
        // In one buffer: shift, exponentiate in place, normalise.
        return Vector(count: count) { out in
            let x = storage.pointer, y = out.baseAddress!, n = count
            for i in 0..<n { y[i] = x[i] + (-m) }
            Scalar.exp(y, into: y, count: n)
            var sum: Scalar = 0
            for i in 0..<n { sum += y[i] }
            let scale = 1 / sum
            for i in 0..<n { y[i] *= scale }
        }
    }
}
