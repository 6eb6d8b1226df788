/// A differentiable primitive of one argument: its value and its pullback, nothing else.
///
/// Make one with `op1`; the pullback maps the gradient of the result to the gradient of the
/// argument. An `Op1` knows nothing of tapes; applying it to a `BVar` records it.
public struct Op1<A: Backprop, B: Backprop> {
    /// The value and the pullback at `a`.
    public let run: (A) -> (B, (B) -> A)

    /// Applies the primitive to a variable.
    public func callAsFunction(_ a: BVar<A>) -> BVar<B> {
        let (value, pullback) = run(a.value)
        guard let tape = a.tape, let sink = a.sink else { return constVar(value) }
        let slot = GradientSlot(value: value)
        tape.record {
            if let g = slot.take() { sink.accumulate(pullback(g)) }
        }
        return BVar(value: value, tape: tape, sink: .slot(slot))
    }
}

/// Makes a one-argument primitive from its value-and-pullback function:
/// `op1 { x in (x * x, { d in 2 * d * x }) }`.
public func op1<A, B>(_ run: @escaping (A) -> (B, (B) -> A)) -> Op1<A, B> { Op1(run: run) }

/// A differentiable primitive of two arguments: its value and one pullback per argument, so
/// that no work is spent on the gradient of a constant argument.
public struct Op2<A: Backprop, B: Backprop, C: Backprop> {
    /// The value and the pullbacks to `a` and to `b`.
    public let run: (A, B) -> (C, (C) -> A, (C) -> B)

    /// Applies the primitive to two variables.
    public func callAsFunction(_ a: BVar<A>, _ b: BVar<B>) -> BVar<C> {
        let (value, pullA, pullB) = run(a.value, b.value)
        guard let tape = commonTape(a.tape, b.tape), a.sink != nil || b.sink != nil else {
            return constVar(value)
        }
        let slot = GradientSlot(value: value)
        let sinkA = a.sink, sinkB = b.sink
        tape.record {
            guard let g = slot.take() else { return }
            if let s = sinkA { s.accumulate(pullA(g)) }
            if let s = sinkB { s.accumulate(pullB(g)) }
        }
        return BVar(value: value, tape: tape, sink: .slot(slot))
    }
}

/// Makes a two-argument primitive: `op2 { x, y in (x * y, { d in d * y }, { d in d * x }) }`.
public func op2<A, B, C>(_ run: @escaping (A, B) -> (C, (C) -> A, (C) -> B)) -> Op2<A, B, C> {
    Op2(run: run)
}

/// A differentiable primitive of three arguments, with one pullback per argument.
public struct Op3<A: Backprop, B: Backprop, C: Backprop, D: Backprop> {
    /// The value and the pullbacks to `a`, `b` and `c`.
    public let run: (A, B, C) -> (D, (D) -> A, (D) -> B, (D) -> C)

    /// Applies the primitive to three variables.
    public func callAsFunction(_ a: BVar<A>, _ b: BVar<B>, _ c: BVar<C>) -> BVar<D> {
        let (value, pullA, pullB, pullC) = run(a.value, b.value, c.value)
        guard let tape = commonTape(a.tape, b.tape, c.tape),
              a.sink != nil || b.sink != nil || c.sink != nil else { return constVar(value) }
        let slot = GradientSlot(value: value)
        let sinkA = a.sink, sinkB = b.sink, sinkC = c.sink
        tape.record {
            guard let g = slot.take() else { return }
            if let s = sinkA { s.accumulate(pullA(g)) }
            if let s = sinkB { s.accumulate(pullB(g)) }
            if let s = sinkC { s.accumulate(pullC(g)) }
        }
        return BVar(value: value, tape: tape, sink: .slot(slot))
    }
}

/// Makes a three-argument primitive.
public func op3<A, B, C, D>(
    _ run: @escaping (A, B, C) -> (D, (D) -> A, (D) -> B, (D) -> C)
) -> Op3<A, B, C, D> {
    Op3(run: run)
}
