import Dispatch

/// Splits a long element-wise loop across the threads BLAS is allowed to use, so that the
/// non-BLAS parts of a batched step scale with `BLASRuntime.setThreadCount` like the products
/// do (and stay on one thread in a worker that runs one shard per thread).
public enum ParallelLoop {
    /// Calls `body` on disjoint sub-ranges covering `0..<count`, on up to
    /// `BLASRuntime.threadCount` threads, when each gets at least `minimumPerThread` elements.
    @inlinable
    public static func forEachChunk(_ count: Int, minimumPerThread: Int = 1 << 16,
                                    _ body: (Range<Int>) -> Void) {
        let threads = min(BLASRuntime.threadCount, count / max(minimumPerThread, 1))
        if threads <= 1 {
            body(0..<count)
            return
        }
        let chunk = (count + threads - 1) / threads
        withoutActuallyEscaping(body) { body in
            // The chunks are disjoint; the caller's closure writes only its own chunk.
            let shared = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                let start = t * chunk
                shared.value(start..<min(start + chunk, count))
            }
        }
    }
}

/// A value handed to other threads under the caller's guarantee that they use it safely.
@usableFromInline
struct UncheckedSendable<Value>: @unchecked Sendable {
    @usableFromInline let value: Value
    @usableFromInline init(_ value: Value) { self.value = value }
}
