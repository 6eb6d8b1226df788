/// The record of one gradient computation: the backward steps of every operation applied to a
/// variable, in the order they ran. Made by the runners (`backprop`, `gradBP`), one per call,
/// and never shared between threads.
final class Tape {
    private var backwardSteps: [() -> Void] = []

    func record(_ step: @escaping () -> Void) { backwardSteps.append(step) }

    /// Runs the backward steps in reverse order, then drops them (and with them every
    /// intermediate value and gradient).
    func runBackward() {
        for step in backwardSteps.reversed() { step() }
        backwardSteps.removeAll()
    }
}

@available(*, unavailable)
extension Tape: Sendable {}

/// Where the gradient of one variable goes. A `GradientSlot` keeps it; a `FieldSink` adds it
/// into a field of its parent's gradient, so that a lens costs no backward step at all.
class GradientSink<Value: Backprop> {
    /// Adds `gradient` to this variable's gradient.
    func accumulate(_ gradient: Value) { fatalError("abstract") }
    /// Adds `gradient` to the field at `keyPath` of this variable's gradient.
    func accumulate<Part: Backprop>(_ gradient: Part, at keyPath: WritableKeyPath<Value, Part>) {
        fatalError("abstract")
    }
}

/// Keeps the gradient of a variable until its backward step reads it.
final class GradientSlot<Value: Backprop>: GradientSink<Value> {
    /// The variable's value, for the shape of a zero gradient.
    private let value: Value
    private(set) var gradient: Value?

    init(value: Value) { self.value = value }

    override func accumulate(_ gradient: Value) {
        if self.gradient == nil {
            self.gradient = gradient
        } else {
            self.gradient!.add(gradient)
        }
    }

    override func accumulate<Part: Backprop>(_ gradient: Part, at keyPath: WritableKeyPath<Value, Part>) {
        if self.gradient == nil { self.gradient = value.zero() }
        self.gradient![keyPath: keyPath].add(gradient)
    }

    /// Hands the gradient over and forgets it (intermediate gradients die as soon as used).
    func take() -> Value? {
        defer { gradient = nil }
        return gradient
    }
}

/// The gradient sink of a field read through a key path: it writes into the parent's gradient.
final class FieldSink<Whole: Backprop, Part: Backprop>: GradientSink<Part> {
    private let parent: GradientSink<Whole>
    private let keyPath: WritableKeyPath<Whole, Part>

    init(parent: GradientSink<Whole>, keyPath: WritableKeyPath<Whole, Part>) {
        self.parent = parent
        self.keyPath = keyPath
    }

    override func accumulate(_ gradient: Part) {
        parent.accumulate(gradient, at: keyPath)
    }

    override func accumulate<Sub: Backprop>(_ gradient: Sub, at subPath: WritableKeyPath<Part, Sub>) {
        parent.accumulate(gradient, at: keyPath.appending(path: subPath))
    }
}
