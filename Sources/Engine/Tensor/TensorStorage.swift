/// Owns the memory of one tensor: a 64-byte aligned buffer of `count` scalars.
///
/// Tensors are value types that share a storage until one of them is mutated
/// (copy on write); the storage itself is never exposed.
@usableFromInline
final class TensorStorage<Scalar: TensorScalar> {
    @usableFromInline let pointer: UnsafeMutablePointer<Scalar>
    @usableFromInline let count: Int

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
        pointer.initialize(repeating: value, count: count)
    }

    @usableFromInline
    func copy() -> TensorStorage {
        let new = TensorStorage(uninitializedCount: count)
        new.pointer.update(from: pointer, count: count)
        return new
    }

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }
}
