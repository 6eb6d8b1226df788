import Foundation
import Synchronization

/// Owns the memory of one tensor: a buffer of `count` scalars.
///
/// Tensors are value types that share a storage until one of them is mutated
/// (copy on write); the storage itself is never exposed.
///
/// A storage may hold an outer product not yet written out (`PendingOuter`): the gradient of
/// a matrix-vector product, which a descent step adds to the weights in one pass (`Matrix.add`)
/// without the matrix ever being formed. The first read of `pointer` writes it out, once, on
/// whichever thread reads first.
@usableFromInline
final class TensorStorage<Scalar: TensorScalar>: @unchecked Sendable {
    /// The buffer (not yet allocated while a pending product has not been written out).
    @exclusivity(unchecked) @usableFromInline private(set) var raw: UnsafeMutableRawPointer?
    @usableFromInline let count: Int
    /// Whether this is one of the shared, never-mutated all-zero buffers (see `sharedZeros`).
    @exclusivity(unchecked) @usableFromInline private(set) var isSharedZero = false
    /// 0 once the entries are in `base`; 1 while they are the pending product; 2 while a
    /// thread writes them out (a tiny spin lock: writing out happens once per storage).
    @usableFromInline let state = Atomic<Int>(0)
    /// The `PendingOuter<Scalar>` (as `AnyObject`: a stored property whose type depends on
    /// `Scalar` would make every deallocation look up generic metadata at run time). Never
    /// changes; kept after writing out.
    private let product: AnyObject?
    /// The shared zero buffer of this size once found (`zeros`): the address of a retained
    /// storage, or 0 (an atomic integer: it is read on every gradient computation, and the
    /// generic atomic reference types are not inlined into this module).
    private let zeroTwin = Atomic<UInt>(0)

    /// The shared, read-only zero buffer of this storage's size. A parameter's zero gradient
    /// is asked for at every gradient computation; after the first, this is one atomic load.
    @usableFromInline var zeros: TensorStorage {
        if isSharedZero { return self }
        let found = zeroTwin.load(ordering: .acquiring)
        if found != 0 { return Unmanaged<TensorStorage>.fromOpaque(UnsafeRawPointer(bitPattern: found)!).takeUnretainedValue() }
        let zeros = TensorStorage.sharedZeros(count: count, evenIfSmall: true)
        let address = UInt(bitPattern: Unmanaged.passRetained(zeros).toOpaque())
        let (stored, current) = zeroTwin.compareExchange(expected: 0, desired: address, ordering: .acquiringAndReleasing)
        if stored { return zeros }
        Unmanaged<TensorStorage>.fromOpaque(UnsafeRawPointer(bitPattern: address)!).release()   // another thread was first
        return Unmanaged<TensorStorage>.fromOpaque(UnsafeRawPointer(bitPattern: current)!).takeUnretainedValue()
    }

    /// The entries (written out first if they are a pending outer product).
    @inlinable var pointer: UnsafeMutablePointer<Scalar> {
        if _slowPath(state.load(ordering: .acquiring) != 0) { writeOutPending() }
        return raw.unsafelyUnwrapped.assumingMemoryBound(to: Scalar.self)
    }

    /// The buffer of a storage made with one (never a pending product's before writing out).
    @inlinable var base: UnsafeMutablePointer<Scalar> { raw.unsafelyUnwrapped.assumingMemoryBound(to: Scalar.self) }

    /// A storage of `count` entries holding the product `outer` until they are read (its
    /// buffer is allocated then: a product added to weights and dropped never needs one).
    init(pending outer: PendingOuter<Scalar>, count: Int) {
        self.count = count
        raw = nil
        product = outer
        state.store(1, ordering: .releasing)
    }

    /// The outer product these entries are, while it has not been written out.
    var pendingOuter: PendingOuter<Scalar>? {
        guard state.load(ordering: .acquiring) != 0, let product else { return nil }
        return unsafeDowncast(product, to: PendingOuter<Scalar>.self)
    }

    @usableFromInline func writeOutPending() {
        while true {
            let (claimed, found) = state.compareExchange(expected: 1, desired: 2, ordering: .acquiring)
            if claimed {
                let outer = unsafeDowncast(product!, to: PendingOuter<Scalar>.self)
                let buffer = Self.allocate(count)
                outer.write(into: buffer.assumingMemoryBound(to: Scalar.self))
                raw = buffer
                state.store(0, ordering: .releasing)
                return
            }
            if found == 0 { return }
            sched_yield()   // another thread is writing the entries out
        }
    }

    @usableFromInline
    init(uninitializedCount count: Int) {
        precondition(count >= 0, "tensor size must not be negative, got \(count)")
        self.count = count
        raw = Self.allocate(count)
        product = nil
    }

    /// Buffers of 16 KB or more start on a cache line; smaller ones take malloc's own
    /// alignment (16 bytes), which lets malloc serve them from its per-thread cache (the many
    /// small vectors of a per-sample step). No kernel needs more than the scalar's alignment.
    private static func allocate(_ count: Int) -> UnsafeMutableRawPointer {
        let bytes = max(count, 1) * MemoryLayout<Scalar>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: bytes >= 16384 ? 64 : 16)
        raw.bindMemory(to: Scalar.self, capacity: max(count, 1))
        return raw
    }

    @usableFromInline
    convenience init(repeating value: Scalar, count: Int) {
        self.init(uninitializedCount: count)
        // Raw memory operations: this class is generic and often runs unspecialised, where a
        // typed element loop would cost a generic witness call per entry.
        if value == 0 {
            UnsafeMutableRawPointer(base).initializeMemory(as: UInt8.self, repeating: 0,
                                                           count: count * MemoryLayout<Scalar>.stride)
        } else {
            Scalar.fill(base, count: count, with: value)
        }
    }

    @usableFromInline
    func copy() -> TensorStorage {
        let new = TensorStorage(uninitializedCount: count)
        UnsafeMutableRawPointer(new.pointer).copyMemory(from: pointer, byteCount: count * MemoryLayout<Scalar>.stride)
        return new
    }

    /// An all-zero buffer of `count` scalars shared by every zero tensor of that size: a zero
    /// gradient costs no memory and no time, and adding a gradient to it just takes that
    /// gradient's storage. Tensors never write to it (copy on write sees it shared).
    @usableFromInline
    /// (Below 4096 entries a fresh buffer is cheaper than the shared cache's lock, unless
    /// `evenIfSmall`: a zero that will be added to is better shared, since adding to it then
    /// just takes the other storage.)
    static func sharedZeros(count: Int, evenIfSmall: Bool = false) -> TensorStorage {
        if count < 4096 && !evenIfSmall { return TensorStorage(repeating: 0, count: count) }
        let key = SharedZeroKey(scalar: ObjectIdentifier(Scalar.self), count: count)
        return sharedZeroCache.withLock { cache in
            if let found = cache[key] { return unsafeDowncast(found, to: TensorStorage.self) }
            if cache.count >= 64 { cache.removeAll() }
            let zeros = TensorStorage(repeating: 0, count: count)
            zeros.isSharedZero = true
            cache[key] = zeros
            return zeros
        }
    }

    deinit {
        raw?.deallocate()
        let twin = zeroTwin.load(ordering: .acquiring)
        if twin != 0 { Unmanaged<TensorStorage>.fromOpaque(UnsafeRawPointer(bitPattern: twin)!).release() }
    }
}

struct SharedZeroKey: Hashable {
    var scalar: ObjectIdentifier
    var count: Int
}

/// The shared all-zero buffers, by scalar type and size (at most 64 sizes are kept).
let sharedZeroCache = Mutex<[SharedZeroKey: AnyObject]>([:])
