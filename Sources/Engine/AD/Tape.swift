import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The record of one gradient computation: every operation applied to a variable, in the order
/// they ran (and the redirections of array elements read, which must live as long). The runners (`backprop`, `gradBP`) take one per call (`Tape.begin`) and give it
/// back when the call is over (`end`); a tape is never shared between threads, and each thread
/// keeps one spare, so a call allocates neither the tape nor room for its operations; and a
/// call that records the operations of the tape's last call reuses their nodes (`reuse`).
///
/// Variables refer to their tape without counting (`TapeReference`): a tape is never
/// deallocated. When a call ends, its tape goes back to its thread's spare slot, or, when that
/// slot is taken (a nested call) or the thread ends, to a process-wide pool that `begin` draws
/// from; so there are only ever as many tapes as calls that once ran at the same time, and an
/// uncounted reference to one always points to a live object. Each call on a tape has a new
/// number (`call`), so a variable that escaped its call is known as such (`TapeReference.isCurrent`).
@usableFromInline
final class Tape {
    /// The operations of the current call are `nodes[0..<count]`; the nodes after them were
    /// recorded by earlier calls and are kept to be reused (see `reuse`).
    @exclusivity(unchecked) @usableFromInline var nodes: ContiguousArray<TapeNode>
    /// How many of `nodes` the current call has recorded.
    @exclusivity(unchecked) @usableFromInline var count = 0
    /// The gradient slot of the last call's input, kept like the nodes (see `root(for:)`).
    @exclusivity(unchecked) @usableFromInline var keptRoot: AnyGradientSlot?
    /// The number of the call that the tape serves now (or served last), raised when a call
    /// ends. Atomic only so that reading it is defined even from a variable that escaped to
    /// another thread; relaxed loads and stores are plain moves.
    @usableFromInline let call = Atomic<UInt>(0)

    /// Room for a small network's operations from the start (growing the array step by step
    /// cost several allocations per call).
    private init() {
        nodes = []
        nodes.reserveCapacity(32)
    }

    /// A tape for a new call: this thread's spare, else one from the pool, else a new one (a
    /// call made inside another call's function finds the spare taken).
    @usableFromInline static func begin() -> Tape {
        let key = spareTapeKey
        if let spare = pthread_getspecific(key) {
            pthread_setspecific(key, nil)
            return Unmanaged<Tape>.fromOpaque(spare).takeRetainedValue()
        }
        return pool.withLock { $0.popLast() }?.tape ?? Tape()
    }

    /// Ends the call: empties the nodes that still hold anything of it (`finish`), numbers its
    /// next call, and keeps it as
    /// this thread's spare (or in the pool if the spare slot is taken). A variable that escaped
    /// the call still refers to the tape, which stays alive, but is no longer current: an
    /// operation on it records nothing.
    @usableFromInline static func end(_ tape: Tape) {
        if tape.count > 0 { tape.finish() }
        tape.call.add(1, ordering: .relaxed)
        let key = spareTapeKey
        if pthread_getspecific(key) == nil {
            pthread_setspecific(key, Unmanaged.passRetained(tape).toOpaque())
        } else {
            pool.withLock { $0.append(PooledTape(tape: tape)) }
        }
    }

    /// Tapes not in use and not a thread's spare (from nested calls and ended threads): tapes
    /// are never deallocated, so that `TapeReference` needs no reference count.
    fileprivate static let pool = Mutex<[PooledTape]>([])

    /// Appends an operation. The node is taken, not borrowed: an operation hands over the one
    /// reference it made (the variables refer to the node without counting), so recording
    /// costs no retain and release. It takes the place of a kept node of another type.
    @inlinable func record(_ node: __owned TapeNode) {
        if count < nodes.count {
            nodes.withUnsafeMutableBufferPointer { $0[count] = node }
        } else {
            nodes.append(node)
        }
        count += 1
    }

    /// The node an earlier call recorded at this call's next position, if it is of type
    /// `Node`: the operation resets it and records nothing (`count` moves on). A computation
    /// repeated call after call (a training step, a sample) so records its operations with
    /// no allocation, and in code specialised for them, instead of allocating a node and
    /// destroying it through run-time type metadata. Held without a retain: the tape holds it.
    @inlinable func reuse<Node: TapeNode>(_ type: Node.Type) -> Unmanaged<Node>? {
        guard count < nodes.count else { return nil }
        let kept = nodes.withUnsafeBufferPointer {
            UnsafeRawPointer($0.baseAddress! + count).load(as: Unmanaged<TapeNode>.self)
        }
        guard kept._withUnsafeGuaranteedRef({ ObjectIdentifier(Swift.type(of: $0)) }) == ObjectIdentifier(Node.self) else {
            return nil
        }
        count += 1
        return Unmanaged<Node>.fromOpaque(kept.toOpaque())
    }

    /// The gradient slot of this call's input `x`: the last call's, if it was of the same
    /// type, else a new one kept for the next call. Held without a retain: the tape holds it.
    /// The runner takes its gradient and clears it before the call ends.
    @inlinable func root<Value: Backprop>(for x: Value) -> Unmanaged<GradientSlot<Value>> {
        if let kept = keptRoot, ObjectIdentifier(Swift.type(of: kept)) == ObjectIdentifier(GradientSlot<Value>.self) {
            let slot = Unmanaged<GradientSlot<Value>>.fromOpaque(Unmanaged.passUnretained(kept).toOpaque())
            slot._withUnsafeGuaranteedRef { $0.reset(value: x) }
            return slot
        }
        let slot = GradientSlot(value: x)
        keptRoot = slot
        return .passUnretained(slot)
    }

    /// Lets go of what the current call's nodes hold for their backward steps (pullbacks and
    /// the operands they keep: a layer's weights, say, which a descent step must find
    /// unshared); the nodes stay for the next call. A node whose backward step ran has done
    /// this already.
    @usableFromInline func finish() {
        nodes.withUnsafeBufferPointer { kept in
            for i in 0..<count {
                UnsafeRawPointer(kept.baseAddress! + i).load(as: Unmanaged<TapeNode>.self)._withUnsafeGuaranteedRef { $0.finish() }
            }
        }
        count = 0
    }

    /// Runs the operations' backward steps in reverse order; each step then empties its node
    /// (and with it the intermediate value and gradient), which the tape keeps for its next
    /// call. Sinks refer to the nodes' slots without counting (see `GradientSink`): every node
    /// lives at least until the last step.
    @usableFromInline func runBackward() {
        var i = count
        while i > 0 {
            i -= 1
            // Read without a retain: the array holds the node while its step runs (a step that
            // recorded an operation would grow the array, but not drop the node).
            let node = nodes.withUnsafeBufferPointer {
                UnsafeRawPointer($0.baseAddress! + i).load(as: Unmanaged<TapeNode>.self)
            }
            node._withUnsafeGuaranteedRef { $0.backward() }
        }
        count = 0
    }
}

/// A tape in the pool: in use by no call and no thread, so it may move to whichever thread
/// takes it next.
private struct PooledTape: @unchecked Sendable {
    let tape: Tape
}

/// The thread-local slot of each thread's spare tape (moved to the pool when the thread ends).
private let spareTapeKey: pthread_key_t = {
    var key = pthread_key_t()
    let status = pthread_key_create(&key) { spare in
        if let spare {
            let tape = Unmanaged<Tape>.fromOpaque(spare).takeRetainedValue()
            Tape.pool.withLock { $0.append(PooledTape(tape: tape)) }
        }
    }
    precondition(status == 0, "pthread_key_create failed (\(status)): no thread-local slot for spare tapes")
    return key
}()

/// A variable's tape and the call it belongs to, held without a reference count: tapes are
/// never deallocated (see `Tape`), so the pointer stays valid even for a variable that
/// outlives its call; `isCurrent` tells whether that call is still running. Copying a
/// variable then costs no atomic operation for its tape (per sample, each layer makes and
/// drops several variables).
@usableFromInline
struct TapeReference: Equatable {
    @usableFromInline let tape: Unmanaged<Tape>
    @usableFromInline let call: UInt

    /// A reference to `tape` for its current call.
    @inlinable init(_ tape: Tape) {
        self.tape = Unmanaged.passUnretained(tape)
        call = tape.call.load(ordering: .relaxed)
    }

    /// Whether the call this reference was made in is still running on the tape.
    @inlinable var isCurrent: Bool {
        tape._withUnsafeGuaranteedRef { $0.call.load(ordering: .relaxed) } == call
    }

    /// Records an operation on the tape (taking the node: see `Tape.record`).
    @inlinable func record(_ node: __owned TapeNode) {
        tape._withUnsafeGuaranteedRef { $0.record(node) }
    }

    @inlinable static func == (a: TapeReference, b: TapeReference) -> Bool {
        a.tape.toOpaque() == b.tape.toOpaque() && a.call == b.call
    }
}

@available(*, unavailable)
extension Tape: Sendable {}

/// One recorded operation: its backward step sends the gradient of its result to its arguments.
/// An operation's node is also the slot where its result's gradient collects
/// (`GradientSlot`), so recording an operation makes one object, not a slot and a closure.
@usableFromInline
class TapeNode {
    @usableFromInline init() {}

    /// Sends the gradient that collected here to the operation's arguments, then lets go of
    /// what only that step needed (see `finish`).
    @usableFromInline func backward() {}

    /// Lets go of what the backward step would have needed, when it does not run.
    @usableFromInline func finish() {}
}

/// Where the gradient of one variable goes: the slot of an operation's result, or a part of
/// another variable's gradient.
///
/// A variable made by reading a field (`layer.weights`) or an array element keeps nothing: its
/// sink runs every addition on that part of its parent's gradient, in place, so a lens costs
/// no backward step, no copy and no object of its own. A stored property is a byte offset
/// into what its parent's sink reaches, so reading one allocates nothing; an array element is
/// reached through an `ElementRedirect` recorded on the tape (its work a closure made where
/// the element is read, in code specialised for the types at hand), and the stored properties
/// of that element are offsets from it again.
///
/// A sink refers to its slot without a reference count, so copying a variable or a sink (each
/// operation copies its arguments' sinks into its node) costs no atomic operation. This is
/// safe because a sink is dereferenced only by the backward pass of the call that made it
/// (`accumulate`, `modify`), and every slot of a call lives until that call ends: the root
/// slot and the operations' nodes are held by the tape, which keeps them after the call (to
/// reuse them, emptied: `Tape.reuse`) and never frees itself (see `Tape`). A variable
/// that escapes its call keeps a dangling sink, but nothing dereferences it: reading a field
/// only makes a new sink from the same pointer, and an operation on the variable records
/// nothing (its tape reference is no longer current, checked before any node is made).
@usableFromInline
enum GradientSink<Value: Backprop> {
    /// The gradient collects in this slot.
    case slot(Unmanaged<GradientSlot<Value>>)
    /// The gradient is the stored part `offset` bytes into this slot's gradient.
    case field(Unmanaged<AnyGradientSlot>, offset: Int)
    /// The gradient is the stored part `offset` bytes into what the redirection reaches (held
    /// without a reference count: the redirection is on the tape, see `ElementRedirect`).
    case reached(Unmanaged<RawRedirect>, offset: Int)
    /// Runs its argument on a part of another variable's gradient.
    case part(((inout Value) -> Void) -> Void)

    /// Runs `body` on this variable's gradient (a zero gradient if none has arrived yet), in place.
    @inlinable func modify(_ body: (inout Value) -> Void) {
        switch self {
        case .slot(let slot):
            slot._withUnsafeGuaranteedRef { $0.modify(body) }
        case .field(let slot, let offset):
            slot._withUnsafeGuaranteedRef {
                $0.withGradientBytes { body(&($0 + offset).assumingMemoryBound(to: Value.self).pointee) }
            }
        case .reached(let redirect, let offset):
            redirect._withUnsafeGuaranteedRef { $0.reach { body(&($0 + offset).assumingMemoryBound(to: Value.self).pointee) } }
        case .part(let redirect):
            redirect(body)
        }
    }

    /// Adds `gradient` to this variable's gradient.
    @inlinable func accumulate(_ gradient: Value) {
        if case .slot(let slot) = self {
            slot._withUnsafeGuaranteedRef { $0.accumulate(gradient) }
        } else {
            modify { $0.add(gradient) }
        }
    }

    /// The sink of the field at `keyPath`; `offset` is the field's offset when it is a stored
    /// property (`MemoryLayout.offset(of:)`).
    @inlinable func part<Part: Backprop>(_ keyPath: WritableKeyPath<Value, Part>, offset: Int?) -> GradientSink<Part> {
        if let offset {
            switch self {
            case .slot(let slot): return .field(.fromOpaque(slot.toOpaque()), offset: offset)
            case .field(let slot, let start): return .field(slot, offset: start + offset)
            case .reached(let redirect, let start): return .reached(redirect, offset: start + offset)
            case .part: break
            }
        }
        return .part { body in modify { body(&$0[keyPath: keyPath]) } }
    }
}

/// Runs its argument on the address of a part of some variable's gradient (an array
/// element). Recorded on the tape like an operation, with no backward step of its own, so that
/// it lives as long as the call's nodes, and sinks refer to it without counting.
@usableFromInline
class RawRedirect: TapeNode {
    @usableFromInline func reach(_ body: (UnsafeMutableRawPointer) -> Void) {
        fatalError("RawRedirect is abstract")
    }
}

/// Element `index` of the array whose sink is `parent`. Its work runs in a closure that
/// captures nothing, made where the element type is known (a generic class's own methods run
/// unspecialised).
@usableFromInline
final class ElementRedirect<Element: Backprop>: RawRedirect {
    @exclusivity(unchecked) @usableFromInline var parent: GradientSink<[Element]>
    @exclusivity(unchecked) @usableFromInline var index: Int
    @usableFromInline let step: (ElementRedirect, (UnsafeMutableRawPointer) -> Void) -> Void

    @inlinable init(parent: GradientSink<[Element]>, index: Int,
                    step: @escaping (ElementRedirect, (UnsafeMutableRawPointer) -> Void) -> Void) {
        self.parent = parent
        self.index = index
        self.step = step
    }

    override func reach(_ body: (UnsafeMutableRawPointer) -> Void) { step(self, body) }
}

extension GradientSink {
    /// The sink of element `index` of an array variable of the call on `tape` (which keeps the
    /// redirection), or nil if that call is over (an operation on the element records nothing).
    @inlinable func element<Element: Backprop>(_ index: Int, tape: TapeReference?) -> GradientSink<Element>?
    where Value == [Element] {
        guard let tape, tape.isCurrent else { return nil }
        let kept = tape.tape._withUnsafeGuaranteedRef { $0.reuse(ElementRedirect<Element>.self) }
        if let kept {
            kept._withUnsafeGuaranteedRef {
                $0.parent = self
                $0.index = index
            }
            return .reached(.fromOpaque(kept.toOpaque()), offset: 0)
        }
        let redirect = ElementRedirect(parent: self, index: index) { redirect, body in
            let index = redirect.index
            redirect.parent.modify { array in
                array.withUnsafeMutableBufferPointer { body(UnsafeMutableRawPointer($0.baseAddress! + index)) }
            }
        }
        let sink = GradientSink<Element>.reached(.passUnretained(redirect), offset: 0)
        tape.record(consume redirect)
        return sink
    }
}

extension GradientSink {
    /// The sink of a slot (held without a reference count: see `GradientSink`).
    @inlinable static func slot(of slot: GradientSlot<Value>) -> GradientSink {
        .slot(Unmanaged.passUnretained(slot))
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
    /// The variable's value (for the shape of a zero gradient) at `cells[0]` while
    /// `hasValue`, and its gradient at `cells[1]` while `hasGradient`: initialised and
    /// destroyed by hand, so that a node kept for the next call (`Tape.reuse`) holds nothing
    /// of its own call and needs no placeholder values (nor an `Optional`, whose metadata the
    /// unspecialised methods of this generic class would look up at run time).
    @usableFromInline final let cells: UnsafeMutablePointer<Value>
    @exclusivity(unchecked) @usableFromInline final var hasValue = true
    @exclusivity(unchecked) @usableFromInline final var hasGradient = false

    @inlinable init(value: __owned Value) {
        cells = .allocate(capacity: 2)
        cells.initialize(to: value)
    }

    deinit {
        if hasValue { cells.deinitialize(count: 1) }
        if hasGradient { (cells + 1).deinitialize(count: 1) }
        cells.deallocate()
    }

    /// Lets go of the value and any gradient left when the call is over (the node stays for
    /// the next call, see `Tape.reuse`).
    @inlinable final func clear() {
        if hasValue {
            cells.deinitialize(count: 1)
            hasValue = false
        }
        if hasGradient {
            (cells + 1).deinitialize(count: 1)
            hasGradient = false
        }
    }

    /// Makes the slot that of a new variable of value `value`, with no gradient (a node reused
    /// by a later call, see `Tape.reuse`).
    @inlinable final func reset(value: __owned Value) {
        clear()
        cells.initialize(to: value)
        hasValue = true
    }

    @usableFromInline override final func withGradientBytes(_ body: (UnsafeMutableRawPointer) -> Void) {
        modify { withUnsafeMutablePointer(to: &$0) { body(UnsafeMutableRawPointer($0)) } }
    }

    /// Runs `body` on the gradient (a zero gradient if none has arrived yet), in place.
    @inlinable final func modify(_ body: (inout Value) -> Void) {
        if !hasGradient {
            (cells + 1).initialize(to: cells.pointee.zero())
            hasGradient = true
        }
        body(&cells[1])
    }

    /// Adds `gradient` to the gradient (the first one is kept as it is).
    @inlinable final func accumulate(_ gradient: __owned Value) {
        if hasGradient {
            cells[1].add(gradient)
        } else {
            (cells + 1).initialize(to: gradient)
            hasGradient = true
        }
    }

    /// Hands the gradient over and forgets it: intermediate gradients die as soon as used.
    @inlinable final func take() -> Value? {
        guard hasGradient else { return nil }
        hasGradient = false
        return (cells + 1).move()
    }

    /// The gradient, if any arrived.
    @inlinable final var current: Value? { hasGradient ? cells[1] : nil }
}
