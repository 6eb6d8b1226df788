/// The record of one gradient computation: the backward steps of every operation applied to a
/// variable, in the order they ran. Made by the runners (`backprop`, `gradBP`), one per call,
/// and never shared between threads.
@usableFromInline
final class Tape {
    private var backwardSteps: [() -> Void] = []

    @usableFromInline init() {}

    @usableFromInline func record(_ step: @escaping () -> Void) { backwardSteps.append(step) }

    /// Runs the backward steps in reverse order, then drops them (and with them every
    /// intermediate value and gradient).
    @usableFromInline func runBackward() {
        for step in backwardSteps.reversed() { step() }
        backwardSteps.removeAll()
    }
}

@available(*, unavailable)
extension Tape: Sendable {}

/// Where the gradient of one variable goes. A `GradientSlot` keeps it; a `FieldSink` or an
/// `ElementSink` adds it into a part of its parent's gradient, so that a lens costs no
/// backward step and no copy: the addition happens in place, through `modify`.
@usableFromInline
class GradientSink<Value: Backprop> {
    @usableFromInline init() {}

    /// Runs `body` on this variable's gradient (a zero gradient if none has arrived yet).
    @usableFromInline func modify(_ body: (inout Value) -> Void) { fatalError("abstract") }

    /// Adds `gradient` to this variable's gradient.
    @usableFromInline func accumulate(_ gradient: Value) { modify { $0.add(gradient) } }
}

/// Keeps the gradient of a variable until its backward step reads it.
@usableFromInline
final class GradientSlot<Value: Backprop>: GradientSink<Value> {
    /// The variable's value, for the shape of a zero gradient.
    private let value: Value
    @usableFromInline private(set) var gradient: Value?

    @usableFromInline init(value: Value) { self.value = value }

    @usableFromInline override func accumulate(_ gradient: Value) {
        if self.gradient == nil {
            self.gradient = gradient
        } else {
            modify { $0.add(gradient) }
        }
    }

    override func modify(_ body: (inout Value) -> Void) {
        // Move the gradient out while it is updated, so that its storage stays uniquely
        // referenced and the update happens in place.
        var total = gradient.take() ?? value.zero()
        body(&total)
        gradient = total
    }

    /// Hands the gradient over and forgets it (intermediate gradients die as soon as used).
    func take() -> Value? { gradient.take() }
}

/// The gradient sink of a field read through a key path: it writes into the parent's gradient.
/// (Stored properties are updated in place; a computed property is read and written back.)
@usableFromInline
final class FieldSink<Whole: Backprop, Part: Backprop>: GradientSink<Part> {
    private let parent: GradientSink<Whole>
    private let keyPath: WritableKeyPath<Whole, Part>

    @usableFromInline init(parent: GradientSink<Whole>, keyPath: WritableKeyPath<Whole, Part>) {
        self.parent = parent
        self.keyPath = keyPath
    }

    override func modify(_ body: (inout Part) -> Void) {
        parent.modify { body(&$0[keyPath: keyPath]) }
    }
}

/// The gradient sink of one element of an array variable.
@usableFromInline
final class ElementSink<Element: Backprop>: GradientSink<Element> {
    private let parent: GradientSink<[Element]>
    private let index: Int

    @usableFromInline init(parent: GradientSink<[Element]>, index: Int) {
        self.parent = parent
        self.index = index
    }

    override func modify(_ body: (inout Element) -> Void) {
        parent.modify { body(&$0[index]) }
    }
}
