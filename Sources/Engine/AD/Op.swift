/// A differentiable primitive of one argument: its value and its pullback, nothing else.
///
/// Make one with `op1`; the pullback maps the gradient of the result to the gradient of the
/// argument. An `Op1` knows nothing of tapes; applying it to a `BVar` records it. Applying it
/// is inlinable, so a primitive made in another module is recorded by code specialised there
/// for its types (unspecialised, recording went through run-time type metadata at every step,
/// about twice the cost).
public struct Op1<A: Backprop, B: Backprop> {
    /// The value and the pullback at `a`.
    public let run: (A) -> (B, (B) -> A)

    @usableFromInline init(run: @escaping (A) -> (B, (B) -> A)) { self.run = run }

    /// Applies the primitive to a variable.
    @inlinable
    public func callAsFunction(_ a: BVar<A>) -> BVar<B> {
        let (value, pullback) = run(a.value)
        guard let tape = a.tape, let sink = a.sink, tape.isCurrent else { return constVar(value) }
        if let kept = tape.tape._withUnsafeGuaranteedRef({ $0.reuse(Op1Node<A, B>.self) }) {
            // The tape holds the node: no retain for this use of it.
            unowned(unsafe) let node = kept.takeUnretainedValue()
            let result = BVar(value: value, tape: tape, sink: .slot(of: node))
            node.reset(value: consume value, sink: sink, pullback: consume pullback)
            return result
        }
        let node = Op1Node(value: value, sink: sink, pullback: consume pullback) { $0.finishCall(sendingGradient: $1) }
        let result = BVar(value: value, tape: tape, sink: .slot(of: node))
        tape.record(consume node)   // the tape takes the node's one reference (see `Tape.record`)
        return result
    }
}

/// Makes a one-argument primitive from its value-and-pullback function:
/// `op1 { x in (x * x, { d in 2 * d * x }) }`.
@inlinable
public func op1<A, B>(_ run: @escaping (A) -> (B, (B) -> A)) -> Op1<A, B> { Op1(run: run) }

/// A differentiable primitive of two arguments: its value and one pullback per argument, so
/// that no work is spent on the gradient of a constant argument.
public struct Op2<A: Backprop, B: Backprop, C: Backprop> {
    /// The value and the pullbacks to `a` and to `b`.
    public let run: (A, B) -> (C, (C) -> A, (C) -> B)

    @usableFromInline init(run: @escaping (A, B) -> (C, (C) -> A, (C) -> B)) { self.run = run }

    /// Applies the primitive to two variables.
    @inlinable
    public func callAsFunction(_ a: BVar<A>, _ b: BVar<B>) -> BVar<C> {
        let (value, pullA, pullB) = run(a.value, b.value)
        guard let tape = commonTape(a.tape, b.tape), a.sink != nil || b.sink != nil, tape.isCurrent else {
            return constVar(value)
        }
        if let kept = tape.tape._withUnsafeGuaranteedRef({ $0.reuse(Op2Node<A, B, C>.self) }) {
            unowned(unsafe) let node = kept.takeUnretainedValue()
            let result = BVar(value: value, tape: tape, sink: .slot(of: node))
            node.reset(value: consume value, sinks: (a.sink, b.sink), pullbacks: (consume pullA, consume pullB))
            return result
        }
        let node = Op2Node(value: value, sinks: (a.sink, b.sink), pullbacks: (consume pullA, consume pullB)) { $0.finishCall(sendingGradient: $1) }
        let result = BVar(value: value, tape: tape, sink: .slot(of: node))
        tape.record(consume node)
        return result
    }
}

/// Makes a two-argument primitive: `op2 { x, y in (x * y, { d in d * y }, { d in d * x }) }`.
@inlinable
public func op2<A, B, C>(_ run: @escaping (A, B) -> (C, (C) -> A, (C) -> B)) -> Op2<A, B, C> {
    Op2(run: run)
}

/// A differentiable primitive of three arguments, with one pullback per argument.
public struct Op3<A: Backprop, B: Backprop, C: Backprop, D: Backprop> {
    /// The value and the pullbacks to `a`, `b` and `c`.
    public let run: (A, B, C) -> (D, (D) -> A, (D) -> B, (D) -> C)

    @usableFromInline init(run: @escaping (A, B, C) -> (D, (D) -> A, (D) -> B, (D) -> C)) { self.run = run }

    /// Applies the primitive to three variables.
    @inlinable
    public func callAsFunction(_ a: BVar<A>, _ b: BVar<B>, _ c: BVar<C>) -> BVar<D> {
        let (value, pullA, pullB, pullC) = run(a.value, b.value, c.value)
        guard let tape = commonTape(a.tape, b.tape, c.tape),
              a.sink != nil || b.sink != nil || c.sink != nil, tape.isCurrent else { return constVar(value) }
        if let kept = tape.tape._withUnsafeGuaranteedRef({ $0.reuse(Op3Node<A, B, C, D>.self) }) {
            unowned(unsafe) let node = kept.takeUnretainedValue()
            let result = BVar(value: value, tape: tape, sink: .slot(of: node))
            node.reset(value: consume value, sinks: (a.sink, b.sink, c.sink),
                       pullbacks: (consume pullA, consume pullB, consume pullC))
            return result
        }
        let node = Op3Node(value: value, sinks: (a.sink, b.sink, c.sink),
                           pullbacks: (consume pullA, consume pullB, consume pullC)) { $0.finishCall(sendingGradient: $1) }
        let result = BVar(value: value, tape: tape, sink: .slot(of: node))
        tape.record(consume node)
        return result
    }
}

/// Makes a three-argument primitive.
@inlinable
public func op3<A, B, C, D>(
    _ run: @escaping (A, B, C) -> (D, (D) -> A, (D) -> B, (D) -> C)
) -> Op3<A, B, C, D> {
    Op3(run: run)
}

// The nodes' backward steps run through a closure made where the operation is applied (where
// its types are known), not through `backward()` alone: the methods of a generic class run
// unspecialised, and every gradient addition there went through run-time type metadata. The
// closure captures nothing, so it costs no allocation.

/// A one-argument operation on the tape: its result's gradient slot, where that gradient goes
/// next, and the pullback that takes it there.
@usableFromInline
final class Op1Node<A: Backprop, B: Backprop>: GradientSlot<B> {
    @exclusivity(unchecked) @usableFromInline var sink: GradientSink<A>
    @exclusivity(unchecked) @usableFromInline var pullback: (B) -> A
    /// `finishCall`, made where the node's types are known (see above).
    @usableFromInline let step: (Op1Node, Bool) -> Void

    @inlinable init(value: B, sink: GradientSink<A>, pullback: @escaping (B) -> A, step: @escaping (Op1Node, Bool) -> Void) {
        self.sink = sink
        self.pullback = pullback
        self.step = step
        super.init(value: value)
    }

    override func backward() { step(self, true) }
    override func finish() { step(self, false) }

    @inlinable @inline(__always) func sendGradient() {
        if let g = take() { sink.accumulate(pullback(g)) }
    }

    /// The node's part of the backward pass (`sendingGradient`) or of a call that ends without
    /// one: send the gradient, then let go of everything of the call (see `Tape.reuse`).
    @inlinable @inline(__always) func finishCall(sendingGradient: Bool) {
        if sendingGradient { sendGradient() }
        dropPullback()
        clear()
    }

    /// The node of a new operation of the next call (see `Tape.reuse`).
    @inlinable @inline(__always) func reset(value: __owned B, sink: GradientSink<A>, pullback: __owned @escaping (B) -> A) {
        reset(value: value)
        self.sink = sink
        self.pullback = pullback
    }

    /// Lets go of the pullback and what it keeps.
    @inlinable @inline(__always) func dropPullback() {
        pullback = { _ in preconditionFailure("the pullback of an operation of a finished call") }
    }
}

/// A two-argument operation on the tape (a constant argument has no sink and gets nothing).
@usableFromInline
final class Op2Node<A: Backprop, B: Backprop, C: Backprop>: GradientSlot<C> {
    @exclusivity(unchecked) @usableFromInline var sinks: (GradientSink<A>?, GradientSink<B>?)
    @exclusivity(unchecked) @usableFromInline var pullbacks: ((C) -> A, (C) -> B)
    /// `finishCall`, made where the node's types are known (see above).
    @usableFromInline let step: (Op2Node, Bool) -> Void

    @inlinable init(value: C, sinks: (GradientSink<A>?, GradientSink<B>?), pullbacks: ((C) -> A, (C) -> B),
         step: @escaping (Op2Node, Bool) -> Void) {
        self.sinks = sinks
        self.pullbacks = pullbacks
        self.step = step
        super.init(value: value)
    }

    override func backward() { step(self, true) }
    override func finish() { step(self, false) }

    @inlinable @inline(__always) func sendGradient() {
        guard let g = take() else { return }
        if let s = sinks.0 { s.accumulate(pullbacks.0(g)) }
        if let s = sinks.1 { s.accumulate(pullbacks.1(g)) }
    }

    /// The node's part of the backward pass (`sendingGradient`) or of a call that ends without
    /// one: send the gradient, then let go of everything of the call (see `Tape.reuse`).
    @inlinable @inline(__always) func finishCall(sendingGradient: Bool) {
        if sendingGradient { sendGradient() }
        dropPullbacks()
        clear()
    }

    /// The node of a new operation of the next call (see `Tape.reuse`).
    @inlinable @inline(__always) func reset(value: __owned C, sinks: (GradientSink<A>?, GradientSink<B>?),
                                            pullbacks: __owned ((C) -> A, (C) -> B)) {
        reset(value: value)
        self.sinks = sinks
        self.pullbacks = pullbacks
    }

    /// Lets go of the pullbacks and what they keep.
    @inlinable @inline(__always) func dropPullbacks() {
        pullbacks = ({ _ in preconditionFailure("the pullback of an operation of a finished call") },
                     { _ in preconditionFailure("the pullback of an operation of a finished call") })
    }
}

/// A three-argument operation on the tape.
@usableFromInline
final class Op3Node<A: Backprop, B: Backprop, C: Backprop, D: Backprop>: GradientSlot<D> {
    @exclusivity(unchecked) @usableFromInline var sinks: (GradientSink<A>?, GradientSink<B>?, GradientSink<C>?)
    @exclusivity(unchecked) @usableFromInline var pullbacks: ((D) -> A, (D) -> B, (D) -> C)
    /// `finishCall`, made where the node's types are known (see above).
    @usableFromInline let step: (Op3Node, Bool) -> Void

    @inlinable init(value: D, sinks: (GradientSink<A>?, GradientSink<B>?, GradientSink<C>?),
         pullbacks: ((D) -> A, (D) -> B, (D) -> C), step: @escaping (Op3Node, Bool) -> Void) {
        self.sinks = sinks
        self.pullbacks = pullbacks
        self.step = step
        super.init(value: value)
    }

    override func backward() { step(self, true) }
    override func finish() { step(self, false) }

    @inlinable @inline(__always) func sendGradient() {
        guard let g = take() else { return }
        if let s = sinks.0 { s.accumulate(pullbacks.0(g)) }
        if let s = sinks.1 { s.accumulate(pullbacks.1(g)) }
        if let s = sinks.2 { s.accumulate(pullbacks.2(g)) }
    }

    /// The node's part of the backward pass (`sendingGradient`) or of a call that ends without
    /// one: send the gradient, then let go of everything of the call (see `Tape.reuse`).
    @inlinable @inline(__always) func finishCall(sendingGradient: Bool) {
        if sendingGradient { sendGradient() }
        dropPullbacks()
        clear()
    }

    /// The node of a new operation of the next call (see `Tape.reuse`).
    @inlinable @inline(__always) func reset(value: __owned D, sinks: (GradientSink<A>?, GradientSink<B>?, GradientSink<C>?),
                                            pullbacks: __owned ((D) -> A, (D) -> B, (D) -> C)) {
        reset(value: value)
        self.sinks = sinks
        self.pullbacks = pullbacks
    }

    /// Lets go of the pullbacks and what they keep.
    @inlinable @inline(__always) func dropPullbacks() {
        pullbacks = ({ _ in preconditionFailure("the pullback of an operation of a finished call") },
                     { _ in preconditionFailure("the pullback of an operation of a finished call") },
                     { _ in preconditionFailure("the pullback of an operation of a finished call") })
    }
}
