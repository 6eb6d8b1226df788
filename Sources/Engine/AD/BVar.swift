/// A value recorded on a tape: what a differentiable function works with.
///
/// Inside a function given to `backprop`, `gradBP` or `evalBP`, every input is a `BVar`;
/// operations on `BVar`s (arithmetic, `exp`, `matvec`, the model's layers, anything made with
/// `op1`/`op2`/`op3`) return `BVar`s and remember how to send gradients back. Values that
/// should get no gradient enter through `constVar`.
///
/// Fields of a struct are reached through key paths, the lenses of Swift: `layer.weights`
/// (dynamic member lookup), `net.layers[0]` or `net[\.layers]` gives a `BVar` whose gradient flows into that
/// field of the parent's gradient; `setting(_:to:)` writes a field.
///
/// A `BVar` belongs to the call that made it: keep it inside that function, and do not send it
/// to another thread.
@dynamicMemberLookup
public struct BVar<Value: Backprop> {
    /// The value this variable holds.
    public let value: Value
    /// The tape of the call that made this variable (nil for a constant), held without a
    /// reference count (see `TapeReference`).
    @usableFromInline let tape: TapeReference?
    @usableFromInline let sink: GradientSink<Value>?

    @inlinable
    init(value: Value, tape: TapeReference?, sink: GradientSink<Value>?) {
        self.value = value
        self.tape = tape
        self.sink = sink
    }

    /// Whether gradients flow into this variable (false for constants).
    public var isConstant: Bool { sink == nil }

    /// The field at `keyPath`, as a variable whose gradient goes into that field.
    @inlinable
    public subscript<Part: Backprop>(_ keyPath: WritableKeyPath<Value, Part>) -> BVar<Part> {
        self[StoredField(keyPath)]
    }

    /// The field `field` (its offset found once, when the `StoredField` was made). A stored
    /// property is read and its gradient written through its offset, much cheaper than
    /// applying the key path; a computed one goes through the key path.
    @inlinable
    public subscript<Part: Backprop>(_ field: StoredField<Value, Part>) -> BVar<Part> {
        let part: Part
        if let offset = field.offset {
            part = withUnsafeBytes(of: value) { $0.load(fromByteOffset: offset, as: Part.self) }
        } else {
            part = value[keyPath: field.keyPath]
        }
        return BVar<Part>(value: part, tape: tape, sink: sink?.part(field.keyPath, offset: field.offset))
    }

    /// The field at `keyPath` (dynamic member lookup: `layer.weights`).
    @inlinable
    public subscript<Part: Backprop>(dynamicMember keyPath: WritableKeyPath<Value, Part>) -> BVar<Part> {
        self[keyPath]
    }

    /// This value with the field at `keyPath` replaced by `part`; gradients flow to both.
    public func setting<Part: Backprop>(_ keyPath: WritableKeyPath<Value, Part>,
                                        to part: BVar<Part>) -> BVar<Value> {
        let op = op2 { (whole: Value, part: Part) -> (Value, (Value) -> Value, (Value) -> Part) in
            var result = whole
            result[keyPath: keyPath] = part
            return (result,
                    { g in var rest = g; rest[keyPath: keyPath] = g[keyPath: keyPath].zero(); return rest },
                    { g in g[keyPath: keyPath] })
        }
        return op(self, part)
    }
}

@available(*, unavailable)
extension BVar: Sendable {}

/// A field of `Whole` as a lens, with its place in `Whole` looked up once: for a model's
/// fields read on every call (`layer[weights]` with `let weights = StoredField(\Layer.weights)`
/// made once), where reading `layer[\.weights]` would look the key path's offset up each time.
public struct StoredField<Whole, Part>: @unchecked Sendable {
    /// The field's key path.
    public let keyPath: WritableKeyPath<Whole, Part>
    /// The field's byte offset in `Whole` when it is a stored property (else nil: read through
    /// the key path).
    public let offset: Int?

    @inlinable
    public init(_ keyPath: WritableKeyPath<Whole, Part>) {
        self.keyPath = keyPath
        offset = MemoryLayout<Whole>.offset(of: keyPath)
    }
}

extension BVar {
    /// Element `index` of an array variable, whose gradient goes into that element.
    @inlinable
    public subscript<Element: Backprop>(index: Int) -> BVar<Element> where Value == [Element] {
        precondition(value.indices.contains(index), "index \(index) out of range for an array of \(value.count)")
        return BVar<Element>(value: value[index], tape: tape, sink: sink?.element(index, tape: tape) ?? nil)
    }
}

/// A constant: a value that takes part in the computation but receives no gradient.
@inlinable
public func constVar<Value: Backprop>(_ value: Value) -> BVar<Value> {
    BVar(value: value, tape: nil, sink: nil)
}

/// The tape shared by the variable arguments of one operation (all variables of one call share
/// one tape; mixing variables of two calls is a programming error).
@inlinable
func commonTape(_ a: TapeReference?, _ b: TapeReference?) -> TapeReference? {
    guard let a else { return b }
    guard let b else { return a }
    precondition(a == b, "BVars from two different backprop calls were mixed in one operation")
    return a
}

/// `commonTape` of three arguments.
@inlinable
func commonTape(_ a: TapeReference?, _ b: TapeReference?, _ c: TapeReference?) -> TapeReference? {
    commonTape(commonTape(a, b), c)
}
