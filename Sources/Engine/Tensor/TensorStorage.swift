import Synchronization

/// Owns the memory of one tensor: a 64-byte aligned buffer of `count` scalars.
///
/// Tensors are value types that share a storage until one of them is mutated
/// (copy on write); the storage itself is never exposed.
@usableFromInline
final class TensorStorage<Scalar: TensorScalar>: @unchecked Sendable {
    @usableFromInline let pointer: UnsafeMutablePointer<Scalar>
    @usableFromInline let count: Int
    /// Whether this is one of the shared, never-mutated all-zero buffers (see `sharedZeros`).
    @usableFromInline private(set) var isSharedZero = false

    @usableFromInline
    init(uninitializedCount count: Int) {
        precondition(count >= 0, "tensor size must not be negative, got \(count)")
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(
            byteCount: max(count, 1) * MemoryLayout<Scalar>.stride, alignment: 64)
        pointer = raw.bindMemory(to: Scalar.self, capacity: max(count, 1))
    }

    @usableFromInline
    convenience init(repeating value: Scalar, count: Int) {
        self.init(uninitializedCount: count)
        // Raw memory operations: this class is generic and often runs unspecialised, where a
        // typed element loop would cost a generic witness call per entry.
        if value == 0 {
            UnsafeMutableRawPointer(pointer).initializeMemory(as: UInt8.self, repeating: 0,
                                                              count: count * MemoryLayout<Scalar>.stride)
        } else {
            Scalar.fill(pointer, count: count, with: value)
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
    static func sharedZeros(count: Int) -> TensorStorage {
        if count < 4096 { return TensorStorage(repeating: 0, count: count) }
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

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }
}

struct SharedZeroKey: Hashable {
    var scalar: ObjectIdentifier
    var count: Int
}

/// The shared all-zero buffers, by scalar type and size (at most 64 sizes are kept).
let sharedZeroCache = Mutex<[SharedZeroKey: AnyObject]>([:])
