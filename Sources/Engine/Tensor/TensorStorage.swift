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

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }
}
