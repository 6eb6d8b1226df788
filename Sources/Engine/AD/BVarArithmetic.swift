/// Arithmetic and elementary functions on variables, each a primitive made with `op1`/`op2`.
extension BVar where Value: ElementwiseArithmetic {
    public typealias Scalar = Value.Scalar

    @_specialize(exported: true, where Value == Float)
    @_specialize(exported: true, where Value == Double)
    @_specialize(exported: true, where Value == Vector<Float>)
    @_specialize(exported: true, where Value == Matrix<Float>)
    @_specialize(exported: true, where Value == Vector<Double>)
    @_specialize(exported: true, where Value == Matrix<Double>)
    public static func + (a: BVar, b: BVar) -> BVar {
        op2 { (x: Value, y: Value) in (x + y, { $0 }, { $0 }) }(a, b)
    }
    @_specialize(exported: true, where Value == Float)
    @_specialize(exported: true, where Value == Double)
    @_specialize(exported: true, where Value == Vector<Float>)
    @_specialize(exported: true, where Value == Matrix<Float>)
    @_specialize(exported: true, where Value == Vector<Double>)
    @_specialize(exported: true, where Value == Matrix<Double>)
    public static func - (a: BVar, b: BVar) -> BVar {
        op2 { (x: Value, y: Value) in (x - y, { $0 }, { -$0 }) }(a, b)
    }
    /// Element-wise product.
    @_specialize(exported: true, where Value == Float)
    @_specialize(exported: true, where Value == Double)
    @_specialize(exported: true, where Value == Vector<Float>)
    @_specialize(exported: true, where Value == Matrix<Float>)
    @_specialize(exported: true, where Value == Vector<Double>)
    @_specialize(exported: true, where Value == Matrix<Double>)
    public static func * (a: BVar, b: BVar) -> BVar {
        op2 { (x: Value, y: Value) in (x * y, { $0 * y }, { $0 * x }) }(a, b)
    }
    @_specialize(exported: true, where Value == Float)
    @_specialize(exported: true, where Value == Double)
    @_specialize(exported: true, where Value == Vector<Float>)
    @_specialize(exported: true, where Value == Matrix<Float>)
    @_specialize(exported: true, where Value == Vector<Double>)
    @_specialize(exported: true, where Value == Matrix<Double>)
    public static func / (a: BVar, b: BVar) -> BVar {
        op2 { (x: Value, y: Value) in
            (x / y, { $0 / y }, { g in g.zipMap(x / (y * y), "/") { -$0 * $1 } })
        }(a, b)
    }
    @_specialize(exported: true, where Value == Float)
    @_specialize(exported: true, where Value == Double)
    @_specialize(exported: true, where Value == Vector<Float>)
    @_specialize(exported: true, where Value == Matrix<Float>)
    @_specialize(exported: true, where Value == Vector<Double>)
    @_specialize(exported: true, where Value == Matrix<Double>)
    public static prefix func - (a: BVar) -> BVar {
        op1 { (x: Value) in (-x, { -$0 }) }(a)
    }

    @_specialize(exported: true, where Value == Float)
    @_specialize(exported: true, where Value == Double)
    @_specialize(exported: true, where Value == Vector<Float>)
    @_specialize(exported: true, where Value == Matrix<Float>)
    @_specialize(exported: true, where Value == Vector<Double>)
    @_specialize(exported: true, where Value == Matrix<Double>)
    public static func + (a: BVar, c: Scalar) -> BVar { op1 { (x: Value) in (x.map { $0 + c }, { $0 }) }(a) }
    @_specialize(exported: true, where Value == Float)
    @_specialize(exported: true, where Value == Double)
    @_specialize(exported: true, where Value == Vector<Float>)
    @_specialize(exported: true, where Value == Matrix<Float>)
    @_specialize(exported: true, where Value == Vector<Double>)
    @_specialize(exported: true, where Value == Matrix<Double>)
    public static func + (c: Scalar, a: BVar) -> BVar { a + c }
    @_specialize(exported: true, where Value == Float)
    @_specialize(exported: true, where Value == Double)
    @_specialize(exported: true, where Value == Vector<Float>)
    @_specialize(exported: true, where Value == Matrix<Float>)
    @_specialize(exported: true, where Value == Vector<Double>)
    @_specialize(exported: true, where Value == Matrix<Double>)
    public static func - (a: BVar, c: Scalar) -> BVar { a + (-c) }
    @_specialize(exported: true, where Value == Float)
    @_specialize(exported: true, where Value == Double)
    @_specialize(exported: true, where Value == Vector<Float>)
    @_specialize(exported: true, where Value == Matrix<Float>)
    @_specialize(exported: true, where Value == Vector<Double>)
    @_specialize(exported: true, where Value == Matrix<Double>)
    public static func - (c: Scalar, a: BVar) -> BVar { op1 { (x: Value) in (x.map { c - $0 }, { -$0 }) }(a) }
    @_specialize(exported: true, where Value == Float)
    @_specialize(exported: true, where Value == Double)
    @_specialize(exported: true, where Value == Vector<Float>)
    @_specialize(exported: true, where Value == Matrix<Float>)
    @_specialize(exported: true, where Value == Vector<Double>)
    @_specialize(exported: true, where Value == Matrix<Double>)
    public static func * (c: Scalar, a: BVar) -> BVar { op1 { (x: Value) in (c * x, { c * $0 }) }(a) }
    @_specialize(exported: true, where Value == Float)
    @_specialize(exported: true, where Value == Double)
    @_specialize(exported: true, where Value == Vector<Float>)
    @_specialize(exported: true, where Value == Matrix<Float>)
    @_specialize(exported: true, where Value == Vector<Double>)
    @_specialize(exported: true, where Value == Matrix<Double>)
    public static func * (a: BVar, c: Scalar) -> BVar { c * a }
    @_specialize(exported: true, where Value == Float)
    @_specialize(exported: true, where Value == Double)
    @_specialize(exported: true, where Value == Vector<Float>)
    @_specialize(exported: true, where Value == Matrix<Float>)
    @_specialize(exported: true, where Value == Vector<Double>)
    @_specialize(exported: true, where Value == Matrix<Double>)
    public static func / (a: BVar, c: Scalar) -> BVar { (1 / c) * a }
    @_specialize(exported: true, where Value == Float)
    @_specialize(exported: true, where Value == Double)
    @_specialize(exported: true, where Value == Vector<Float>)
    @_specialize(exported: true, where Value == Matrix<Float>)
    @_specialize(exported: true, where Value == Vector<Double>)
    @_specialize(exported: true, where Value == Matrix<Double>)
    public static func / (c: Scalar, a: BVar) -> BVar {
        op1 { (x: Value) in (x.map { c / $0 }, { g in g.zipMap(x, "/") { g, x in -c * g / (x * x) } }) }(a)
    }

    /// Sum of the entries.
    @_specialize(exported: true, where Value == Float)
    @_specialize(exported: true, where Value == Double)
    @_specialize(exported: true, where Value == Vector<Float>)
    @_specialize(exported: true, where Value == Matrix<Float>)
    @_specialize(exported: true, where Value == Vector<Double>)
    @_specialize(exported: true, where Value == Matrix<Double>)
    public func sum() -> BVar<Scalar> {
        op1 { (x: Value) in (x.sum, { x.filled(with: $0) }) }(self)
    }

    /// Sum of the products of the entries of two variables of the same shape.
    @_specialize(exported: true, where Value == Float)
    @_specialize(exported: true, where Value == Double)
    @_specialize(exported: true, where Value == Vector<Float>)
    @_specialize(exported: true, where Value == Matrix<Float>)
    @_specialize(exported: true, where Value == Vector<Double>)
    @_specialize(exported: true, where Value == Matrix<Double>)
    public func dot(_ other: BVar) -> BVar<Scalar> {
        op2 { (x: Value, y: Value) in (x.dot(y), { $0 * y }, { $0 * x }) }(self, other)
    }
}

/// Element-wise `e^x`.
@_specialize(exported: true, where V == Float)
@_specialize(exported: true, where V == Double)
@_specialize(exported: true, where V == Vector<Float>)
@_specialize(exported: true, where V == Matrix<Float>)
@_specialize(exported: true, where V == Vector<Double>)
@_specialize(exported: true, where V == Matrix<Double>)
public func exp<V: ElementwiseArithmetic>(_ a: BVar<V>) -> BVar<V> {
    op1 { (x: V) in let y = x.exp(); return (y, { $0 * y }) }(a)
}

/// Element-wise natural logarithm.
@_specialize(exported: true, where V == Float)
@_specialize(exported: true, where V == Double)
@_specialize(exported: true, where V == Vector<Float>)
@_specialize(exported: true, where V == Matrix<Float>)
@_specialize(exported: true, where V == Vector<Double>)
@_specialize(exported: true, where V == Matrix<Double>)
public func log<V: ElementwiseArithmetic>(_ a: BVar<V>) -> BVar<V> {
    op1 { (x: V) in (x.log(), { $0 / x }) }(a)
}

/// Element-wise logistic function `1 / (1 + e^-x)`, the hidden layers' activation.
@_specialize(exported: true, where V == Float)
@_specialize(exported: true, where V == Double)
@_specialize(exported: true, where V == Vector<Float>)
@_specialize(exported: true, where V == Matrix<Float>)
@_specialize(exported: true, where V == Vector<Double>)
@_specialize(exported: true, where V == Matrix<Double>)
public func logistic<V: ElementwiseArithmetic>(_ a: BVar<V>) -> BVar<V> {
    op1 { (x: V) in
        let y = x.logistic()
        return (y, { g in g.logisticPullback(result: y) })
    }(a)
}

/// Broadcasts a scalar variable to a vector of `count` entries (the tutorial's `konst'`).
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func konst<S: TensorScalar & ElementwiseArithmetic>(_ c: BVar<S>, count: Int) -> BVar<Vector<S>> {
    op1 { (s: S) in (Vector(repeating: s, count: count), { $0.sum }) }(c)
}

/// Every entry of `a` times the scalar variable `c`; gradients flow to both.
@_specialize(exported: true, where V == Float)
@_specialize(exported: true, where V == Double)
@_specialize(exported: true, where V == Vector<Float>)
@_specialize(exported: true, where V == Matrix<Float>)
@_specialize(exported: true, where V == Vector<Double>)
@_specialize(exported: true, where V == Matrix<Double>)
public func scale<V: ElementwiseArithmetic>(_ a: BVar<V>, by c: BVar<V.Scalar>) -> BVar<V> {
    op2 { (s: V.Scalar, x: V) in (s * x, { $0.dot(x) }, { s * $0 }) }(c, a)
}

/// A scalar variable times every entry of a vector variable (the tutorial's `konst' c * v`).
public func * <S>(c: BVar<S>, a: BVar<Vector<S>>) -> BVar<Vector<S>> { scale(a, by: c) }

/// A scalar variable times every entry of a matrix variable.
public func * <S>(c: BVar<S>, a: BVar<Matrix<S>>) -> BVar<Matrix<S>> { scale(a, by: c) }
