import COpenBLAS
import Foundation

/// Makes a process run OpenBLAS on the best kernel for its CPU, with a chosen thread count.
///
/// OpenBLAS reads `OPENBLAS_CORETYPE` once, when the library loads, and on CPUs it does not
/// recognise (Debian's 0.3.21 on recent Xeons) it falls back to its slowest kernel,
/// "Prescott", 4-6x slower. Call `BLASRuntime.prepareProcess()` first thing in `main`: when the
/// process is on a fallback kernel and the user set no `OPENBLAS_CORETYPE`, it picks the kernel
/// from the CPU's features and re-executes the program once with the variable set. Workers
/// started by a coordinator get the variable in their environment from the start
/// (`childEnvironment(threads:)`).
public enum BLASRuntime {
    /// The kernel OpenBLAS is using in this process (`openblas_get_corename`).
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// The number of threads OpenBLAS uses in this process.
    public static var threadCount: Int { Int(openblas_get_num_threads()) }

    /// Sets the number of threads OpenBLAS uses from now on.
    public static func setThreadCount(_ count: Int) {
        openblas_set_num_threads(Int32(max(1, count)))
    }

    /// Kernels OpenBLAS falls back to when it does not recognise the CPU.
    public static let fallbackKernels: Set<String> = ["Prescott", "Katmai", "Core2", "Banias", "Atom"]

    /// The environment variable that marks a process as already re-executed.
    static let reexecMarker = "BACKPROP_BLAS_REEXECUTED"

    /// What `prepareProcess` decided, for the programs to report.
    public struct Report: Sendable, CustomStringConvertible {
        /// The kernel in use.
        public var coreName: String
        /// Threads OpenBLAS uses.
        public var threads: Int
        /// Where the kernel choice came from.
        public var source: String
        /// How long idle BLAS threads spin before they sleep (`shortenIdleSpin`).
        public var idleWait: String
        public var description: String {
            "OpenBLAS kernel \(coreName) (\(source)), \(threads) thread(s), \(idleWait)"
        }
    }

    /// Ensures the best kernel (re-executing the program once if needed), sets the thread
    /// count (nil: OpenBLAS's default) and keeps freed tensor memory in the process (see
    /// `keepFreedMemoryMapped`). Returns what is in use.
    @discardableResult
    public static func prepareProcess(threads: Int? = nil) -> Report {
        let environment = ProcessInfo.processInfo.environment
        let userValue = environment["OPENBLAS_CORETYPE"]
        var source = userValue.map { "OPENBLAS_CORETYPE=\($0) set by the user" } ?? "detected by OpenBLAS"
        if environment[reexecMarker] != nil {
            source = "chosen from CPU features: \(CPUFeatures.current().summary)"
        } else if userValue == nil, fallbackKernels.contains(coreName),
                  let kernel = CPUFeatures.current().recommendedKernel {
            reexecute(with: kernel)   // returns only if exec failed
            source = "fallback: could not re-execute with OPENBLAS_CORETYPE=\(kernel)"
        }
        let idleWait: String
        if let set = environment["OPENBLAS_THREAD_TIMEOUT"] {
            // The user's choice, or the value a coordinator passed on to its local workers.
            idleWait = "idle threads spin 2^\(set) cycles (OPENBLAS_THREAD_TIMEOUT from the environment)"
        } else if shortenIdleSpin() {
            idleWait = "idle threads spin 2^\(idleSpinExponent) cycles"
        } else {
            idleWait = "idle threads spin OpenBLAS's default 2^28 cycles (its internals were not found)"
        }
        if let threads { setThreadCount(threads) }
        keepFreedMemoryMapped()
        return Report(coreName: coreName, threads: threadCount, source: source, idleWait: idleWait)
    }

    /// How long OpenBLAS's idle threads spin before they sleep, as OpenBLAS's
    /// `OPENBLAS_THREAD_TIMEOUT` (2^n cycles): 2^18, about 0.1 ms, instead of its default 2^28.
    static let idleSpinExponent = 18

    /// OpenBLAS's idle threads wait for work by spinning on `sched_yield` for 2^28 cycles,
    /// about 0.1 s, after each threaded call (and after the library loads) before they sleep.
    /// Between two BLAS calls the Engine runs parallel kernels of its own (the sparse first
    /// layer, the element-wise passes), and a process that uses one BLAS thread leaves the
    /// pool idle: either way the spinning threads take cores from the work. `prepareProcess`
    /// calls this when `OPENBLAS_THREAD_TIMEOUT` is unset: it is set to `idleSpinExponent`
    /// (child processes inherit it and start with the short wait), OpenBLAS re-reads its
    /// environment (`openblas_read_env`) and its thread pool is stopped
    /// (`blas_thread_shutdown_`); the next threaded call starts it again with the shorter wait.
    /// Both are OpenBLAS internals (exported by 0.3.21), looked up at run time: without them
    /// nothing changes. Returns whether the wait was shortened.
    static func shortenIdleSpin() -> Bool {
        guard let readEnvironment = dlsym(nil, "openblas_read_env"),
              let shutDownThreads = dlsym(nil, "blas_thread_shutdown_") else { return false }
        typealias Function = @convention(c) () -> Void
        setenv("OPENBLAS_THREAD_TIMEOUT", String(idleSpinExponent), 1)
        unsafeBitCast(readEnvironment, to: Function.self)()
        unsafeBitCast(shutDownThreads, to: Function.self)()
        return true
    }

    /// Tensors of a training step are allocated and freed again at every step, many of them
    /// around a megabyte: glibc would hand those back to the kernel on each free (mmap
    /// threshold, heap trimming) and page-fault them in again on each use, which costs as much
    /// as the arithmetic. Keeping freed memory in the process avoids that; the peak stays the
    /// same.
    static func keepFreedMemoryMapped() {
        #if os(Linux)
        _ = glibcMallopt(-3 /* M_MMAP_THRESHOLD */, 64 << 20)
        _ = glibcMallopt(-1 /* M_TRIM_THRESHOLD */, 256 << 20)
        #endif
    }

    /// Environment entries for a child process that runs BLAS with `threads` threads on the
    /// kernel this CPU should use (a user-set `OPENBLAS_CORETYPE` is passed on unchanged).
    public static func childEnvironment(threads: Int) -> [String: String] {
        var env = ["OPENBLAS_NUM_THREADS": String(threads)]
        let environment = ProcessInfo.processInfo.environment
        if let user = environment["OPENBLAS_CORETYPE"] {
            env["OPENBLAS_CORETYPE"] = user
        } else if let kernel = CPUFeatures.current().recommendedKernel {
            env["OPENBLAS_CORETYPE"] = kernel
            env[reexecMarker] = "1"
        }
        return env
    }

    private static func reexecute(with kernel: String) {
        setenv("OPENBLAS_CORETYPE", kernel, 1)
        setenv(reexecMarker, "1", 1)
        let argv = CommandLine.unsafeArgv
        execv("/proc/self/exe", argv)
        // exec failed: carry on with the slow kernel rather than not at all.
        unsetenv("OPENBLAS_CORETYPE")
    }
}

/// The CPU features that decide the BLAS kernel, read from `/proc/cpuinfo`.
public struct CPUFeatures: Sendable, Equatable {
    /// CPU vendor (`GenuineIntel`, `AuthenticAMD`, …).
    public var vendor: String
    /// Feature flags, as the kernel names them (`avx2`, `avx512f`, …).
    public var flags: Set<String>

    public init(vendor: String, flags: Set<String>) {
        self.vendor = vendor
        self.flags = flags
    }

    /// Parses the text of `/proc/cpuinfo` (the first processor's entries).
    public init(cpuinfo: String) {
        var vendor = "", flags = Set<String>()
        for line in cpuinfo.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let key = parts[0].trimmingCharacters(in: .whitespaces)
            let value = parts[1].trimmingCharacters(in: .whitespaces)
            if key == "vendor_id", vendor.isEmpty { vendor = value }
            if key == "flags", flags.isEmpty { flags = Set(value.split(separator: " ").map(String.init)) }
        }
        self.init(vendor: vendor, flags: flags)
    }

    /// This machine's features (empty when `/proc/cpuinfo` cannot be read).
    public static func current() -> CPUFeatures {
        CPUFeatures(cpuinfo: (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "")
    }

    /// The OpenBLAS kernel for these features: AVX-512 → SkylakeX (Cooperlake with bf16),
    /// AVX2 with FMA → Haswell (Zen on AMD), otherwise none (leave OpenBLAS's choice).
    public var recommendedKernel: String? {
        if ["avx512f", "avx512bw", "avx512vl", "avx512dq"].allSatisfy(flags.contains) {
            return flags.contains("avx512_bf16") ? "Cooperlake" : "SkylakeX"
        }
        if flags.contains("avx2") && flags.contains("fma") {
            return vendor == "AuthenticAMD" ? "Zen" : "Haswell"
        }
        return nil
    }

    /// A short description for reports.
    public var summary: String {
        let simd = ["avx512f", "avx2", "fma", "avx"].filter(flags.contains).joined(separator: ",")
        return "\(vendor.isEmpty ? "unknown CPU" : vendor) [\(simd)]"
    }
}

#if os(Linux)
/// glibc's `mallopt` (declared in <malloc.h>, which the Glibc module does not export).
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif
