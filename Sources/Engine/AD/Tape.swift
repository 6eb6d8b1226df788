/// The record of one gradient computation: the backward steps of every operation applied to a
/// variable, in the order they ran. Made by the runners (`backprop`, `gradBP`), one per call,
/// and never shared between threads.
@usableFromInline
final class Tape {
    @exclusivity(unchecked) private var backwardSteps: [() -> Void]

    /// Room for a small network's steps from the start (growing the array step by step cost
    /// several allocations per call).
    @usableFromInline init() {
        backwardSteps = []
        backwardSteps.reserveCapacity(32)
    }

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

/// Where the gradient of one variable goes: the slot of an operation's result, or a part of
/// another variable's gradient.
///
/// A variable made by reading a field (`layer.weights`) or an array element keeps nothing: its
/// sink runs every addition on that part of its parent's gradient, in place, so a lens costs
/// no backward step, no copy and no object of its own. The redirection is a closure made where
/// the field is read, so it runs in code specialised for the types at hand (a chain of generic
/// sink classes, one per lens, cost more than a small layer's arithmetic).
@usableFromInline
enum GradientSink<Value: Backprop> {
    /// The gradient collects in this slot.
    case slot(GradientSlot<Value>)
    /// Runs its argument on a part of another variable's gradient.
    case part(((inout Value) -> Void) -> Void)

    /// Runs `body` on this variable's gradient (a zero gradient if none has arrived yet), in place.
    @inlinable func modify(_ body: (inout Value) -> Void) {
        switch self {
        case .slot(let slot): slot.modify(body)
        case .part(let redirect): redirect(body)
        }
    }

    /// Adds `gradient` to this variable's gradient.
    @inlinable func accumulate(_ gradient: Value) {
        switch self {
        case .slot(let slot): slot.accumulate(gradient)
        case .part(let redirect): redirect { $0.add(gradient) }
        }
    }

    /// The sink of the field at `keyPath` (through the field's address when it is a stored
    /// property, much cheaper than applying the key path).
    @inlinable func part<Part: Backprop>(_ keyPath: WritableKeyPath<Value, Part>, offset: Int?) -> GradientSink<Part> {
        if let offset {
            return .part { body in
                modify { whole in
                    withUnsafeMutableBytes(of: &whole) { body(&($0.baseAddress! + offset).assumingMemoryBound(to: Part.self).pointee) }
                }
            }
        }
        return .part { body in modify { body(&$0[keyPath: keyPath]) } }
    }
}

extension GradientSink {
    /// The sink of element `index` of an array variable.
    @inlinable func element<Element: Backprop>(_ index: Int) -> GradientSink<Element> where Value == [Element] {
        .part { body in modify { body(&$0[index]) } }
    }
}

/// Keeps the gradient of an operation's result until its backward step takes it.
@usableFromInline
final class GradientSlot<Value: Backprop> {
    /// The variable's value, for the shape of a zero gradient.
    @usableFromInline let value: Value
    /// The gradient, when `hasGradient` (otherwise `value`, a placeholder). Not an optional:
    /// destroying a `Value?` in this generic class's deinit would look up the optional's type
    /// metadata at run time, for every variable of every call.
    @exclusivity(unchecked) @usableFromInline var gradient: Value
    @exclusivity(unchecked) @usableFromInline var hasGradient = false

    @inlinable init(value: Value) {
        self.value = value
        gradient = value
    }

    /// Runs `body` on the gradient (a zero gradient if none has arrived yet), in place.
    @inlinable func modify(_ body: (inout Value) -> Void) {
        if !hasGradient {
            gradient = value.zero()
            hasGradient = true
        }
        body(&gradient)
    }

    /// Adds `gradient` to the gradient (the first one is kept as it is).
    @inlinable func accumulate(_ gradient: Value) {
        if hasGradient {
            self.gradient.add(gradient)
        } else {
            self.gradient = gradient
            hasGradient = true
        }
    }

    /// Hands the gradient over and forgets it: intermediate gradients die as soon as used.
    @inlinable func take() -> Value? {
        guard hasGradient else { return nil }
        hasGradient = false
        var taken = value
        swap(&gradient, &taken)
        return taken
    }

    /// The gradient, if any arrived.
    @inlinable var current: Value? { hasGradient ? gradient : nil }
}
