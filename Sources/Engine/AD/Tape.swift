#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The record of one gradient computation: every operation applied to a variable, in the order
/// they ran. The runners (`backprop`, `gradBP`) take one per call (`Tape.begin`) and give it
/// back when the call is over (`end`); a tape is never shared between threads, and each thread
/// keeps one spare, so a call allocates neither the tape nor room for its operations.
@usableFromInline
final class Tape {
    @exclusivity(unchecked) private var nodes: ContiguousArray<TapeNode>

    /// Room for a small network's operations from the start (growing the array step by step
    /// cost several allocations per call).
    private init() {
        nodes = []
        nodes.reserveCapacity(32)
    }

    /// A tape for a new call: this thread's spare, or a new one (a call made inside another
    /// call's function finds the spare taken and makes its own).
    @usableFromInline static func begin() -> Tape {
        let key = spareTapeKey
        if let spare = pthread_getspecific(key) {
            pthread_setspecific(key, nil)
            return Unmanaged<Tape>.fromOpaque(spare).takeRetainedValue()
        }
        return Tape()
    }

    /// Ends the call: drops what is left on the tape and keeps it as this thread's spare,
    /// unless something still refers to it (a variable that escaped its call).
    @usableFromInline static func end(_ tape: inout Tape) {
        tape.nodes.removeAll(keepingCapacity: true)
        let key = spareTapeKey
        guard isKnownUniquelyReferenced(&tape), pthread_getspecific(key) == nil else { return }
        pthread_setspecific(key, Unmanaged.passRetained(tape).toOpaque())
    }

    @usableFromInline func record(_ node: TapeNode) { nodes.append(node) }

    /// Runs the operations' backward steps in reverse order, then drops them (and with them
    /// every intermediate value and gradient).
    @usableFromInline func runBackward() {
        var i = nodes.count
        while i > 0 {
            i -= 1
            nodes[i].backward()
        }
        nodes.removeAll(keepingCapacity: true)
    }
}

/// The thread-local slot of each thread's spare tape (released when the thread ends).
private let spareTapeKey: pthread_key_t = {
    var key = pthread_key_t()
    let status = pthread_key_create(&key) { spare in
        if let spare { Unmanaged<Tape>.fromOpaque(spare).release() }
    }
    precondition(status == 0, "pthread_key_create failed (\(status)): no thread-local slot for spare tapes")
    return key
}()

@available(*, unavailable)
extension Tape: Sendable {}

/// One recorded operation: its backward step sends the gradient of its result to its arguments.
/// An operation's node is also the slot where its result's gradient collects
/// (`GradientSlot`), so recording an operation makes one object, not a slot and a closure.
@usableFromInline
class TapeNode {
    @usableFromInline init() {}

    /// Sends the gradient that collected here to the operation's arguments.
    @usableFromInline func backward() {}
}

/// Where the gradient of one variable goes: the slot of an operation's result, or a part of
/// another variable's gradient.
///
/// A variable made by reading a field (`layer.weights`) or an array element keeps nothing: its
/// sink runs every addition on that part of its parent's gradient, in place, so a lens costs
/// no backward step, no copy and no object of its own. A stored property is a byte offset
/// into what its parent's sink reaches, so reading one allocates nothing; an array element is
/// reached through a closure made where it is read (in code specialised for the types at
/// hand), and the stored properties of that element are offsets from it again.
@usableFromInline
enum GradientSink<Value: Backprop> {
    /// The gradient collects in this slot.
    case slot(GradientSlot<Value>)
    /// The gradient is the stored part `offset` bytes into this slot's gradient.
    case field(AnyGradientSlot, offset: Int)
    /// The gradient is the stored part `offset` bytes into what the redirection reaches.
    case reached(RawRedirect, offset: Int)
    /// Runs its argument on a part of another variable's gradient.
    case part(((inout Value) -> Void) -> Void)

    /// Runs `body` on this variable's gradient (a zero gradient if none has arrived yet), in place.
    @inlinable func modify(_ body: (inout Value) -> Void) {
        switch self {
        case .slot(let slot):
            slot.modify(body)
        case .field(let slot, let offset):
            slot.withGradientBytes { body(&($0 + offset).assumingMemoryBound(to: Value.self).pointee) }
        case .reached(let redirect, let offset):
            redirect { body(&($0 + offset).assumingMemoryBound(to: Value.self).pointee) }
        case .part(let redirect):
            redirect(body)
        }
    }

    /// Adds `gradient` to this variable's gradient.
    @inlinable func accumulate(_ gradient: Value) {
        if case .slot(let slot) = self {
            slot.accumulate(gradient)
        } else {
            modify { $0.add(gradient) }
        }
    }

    /// The sink of the field at `keyPath`; `offset` is the field's offset when it is a stored
    /// property (`MemoryLayout.offset(of:)`).
    @inlinable func part<Part: Backprop>(_ keyPath: WritableKeyPath<Value, Part>, offset: Int?) -> GradientSink<Part> {
        if let offset {
            switch self {
            case .slot(let slot): return .field(slot, offset: offset)
            case .field(let slot, let start): return .field(slot, offset: start + offset)
            case .reached(let redirect, let start): return .reached(redirect, offset: start + offset)
            case .part: break
            }
        }
        return .part { body in modify { body(&$0[keyPath: keyPath]) } }
    }
}

/// Runs its argument on the address of a part of some variable's gradient.
@usableFromInline
typealias RawRedirect = ((UnsafeMutableRawPointer) -> Void) -> Void

extension GradientSink {
    /// The sink of element `index` of an array variable.
    @inlinable func element<Element: Backprop>(_ index: Int) -> GradientSink<Element> where Value == [Element] {
        .reached({ body in
            modify { array in array.withUnsafeMutableBufferPointer { body(UnsafeMutableRawPointer($0.baseAddress! + index)) } }
        }, offset: 0)
    }
}

/// A gradient slot of any value type: what a `GradientPath` starts from.
@usableFromInline
class AnyGradientSlot: TapeNode {
    /// Runs `body` on the address of the gradient (made zero first if none has arrived yet).
    @usableFromInline func withGradientBytes(_ body: (UnsafeMutableRawPointer) -> Void) {
        fatalError("AnyGradientSlot is abstract")
    }
}

/// Keeps the gradient of a variable until its backward step takes it: the root of a call, or,
/// through the subclasses that `Op1`, `Op2` and `Op3` record, an operation's result.
@usableFromInline
class GradientSlot<Value: Backprop>: AnyGradientSlot {
    /// The variable's value, for the shape of a zero gradient.
    @usableFromInline final let value: Value
    /// The gradient, when `hasGradient` (otherwise `value`, a placeholder). Not an optional:
    /// destroying a `Value?` in this generic class's deinit would look up the optional's type
    /// metadata at run time, for every variable of every call.
    @exclusivity(unchecked) @usableFromInline final var gradient: Value
    @exclusivity(unchecked) @usableFromInline final var hasGradient = false

    @inlinable init(value: Value) {
        self.value = value
        gradient = value
    }

    @usableFromInline override final func withGradientBytes(_ body: (UnsafeMutableRawPointer) -> Void) {
        modify { withUnsafeMutablePointer(to: &$0) { body(UnsafeMutableRawPointer($0)) } }
    }

    /// Runs `body` on the gradient (a zero gradient if none has arrived yet), in place.
    @inlinable final func modify(_ body: (inout Value) -> Void) {
        if !hasGradient {
            gradient = value.zero()
            hasGradient = true
        }
        body(&gradient)
    }

    /// Adds `gradient` to the gradient (the first one is kept as it is).
    @inlinable final func accumulate(_ gradient: Value) {
        if hasGradient {
            self.gradient.add(gradient)
        } else {
            self.gradient = gradient
            hasGradient = true
        }
    }

    /// Hands the gradient over and forgets it: intermediate gradients die as soon as used.
    @inlinable final func take() -> Value? {
        guard hasGradient else { return nil }
        hasGradient = false
        var taken = value
        swap(&gradient, &taken)
        return taken
    }

    /// The gradient, if any arrived.
    @inlinable final var current: Value? { hasGradient ? gradient : nil }
}
