/// Runs `f` at `x` on a tape of its own and sends the seed gradient back to `x`.
@inlinable
func runBackward<A: Backprop, B: Backprop>(
    _ f: (BVar<A>) -> BVar<B>, at x: A
) -> (value: B, gradient: A) {
    let tape = Tape.begin()
    let reference = TapeReference(tape)
    let root = tape.root(for: x)   // kept by the tape for its next call
    let value: B
    do {
        let result = f(BVar(value: x, tape: reference, sink: .slot(root)))
        value = result.value
        if let sink = result.sink {
            precondition(result.tape == reference, "the function returned a BVar of another backprop call")
            sink.accumulate(result.value.one())
            tape.runBackward()
        }
    }
    let gradient = root._withUnsafeGuaranteedRef { slot in
        defer { slot.clear() }
        return slot.take() ?? x.zero()
    }
    Tape.end(tape)
    return (value, gradient)
}

/// Runs `f` at `x` like a normal function: nothing is recorded.
@inlinable
public func evalBP<A: Backprop, B: Backprop>(_ f: (BVar<A>) -> BVar<B>, _ x: A) -> B {
    f(constVar(x)).value
}

/// The gradient of `f` at `x` (for a result that is not a scalar, the gradient of the sum of
/// its entries).
@inlinable
public func gradBP<A: Backprop, B: Backprop>(_ f: (BVar<A>) -> BVar<B>, _ x: A) -> A {
    runBackward(f, at: x).gradient
}

/// The value of `f` at `x` and its gradient, in one pass.
@inlinable
public func backprop<A: Backprop, B: Backprop>(_ f: (BVar<A>) -> BVar<B>, _ x: A) -> (value: B, gradient: A) {
    runBackward(f, at: x)
}

/// Two-argument `evalBP`.
public func evalBP2<A: Backprop, B: Backprop, C: Backprop>(
    _ f: (BVar<A>, BVar<B>) -> BVar<C>, _ x: A, _ y: B
) -> C {
    f(constVar(x), constVar(y)).value
}

/// Two-argument `gradBP`: the gradients with respect to both arguments.
public func gradBP2<A: Backprop, B: Backprop, C: Backprop>(
    _ f: (BVar<A>, BVar<B>) -> BVar<C>, _ x: A, _ y: B
) -> (A, B) {
    backprop2(f, x, y).gradients
}

/// Two-argument `backprop`: the value and the gradients with respect to both arguments.
public func backprop2<A: Backprop, B: Backprop, C: Backprop>(
    _ f: (BVar<A>, BVar<B>) -> BVar<C>, _ x: A, _ y: B
) -> (value: C, gradients: (A, B)) {
    let (value, g) = runBackward({ (p: BVar<Pair<A, B>>) in f(p.first, p.second) }, at: Pair(x, y))
    return (value, (g.first, g.second))
}
