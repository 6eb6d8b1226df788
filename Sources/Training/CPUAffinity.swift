import CAffinity
import Foundation

/// The CPUs a process's threads may run on (Linux scheduler affinity), for binding the local
/// workers of `coordinator --local` to cores of their own, as MPI launchers do by default.
///
/// With two single-threaded workers and the coordinator on two cores, unbound, the worker that
/// finishes a step last stays the same one for tens of steps, then the other does, as the
/// scheduler moves the processes about. Bound, each worker keeps its core (and its cache) and
/// only the coordinator's short bursts of work move: one epoch of `--local 2` took 3-13% less
/// time than unbound in three alternated sittings (BENCHMARKS.md, eighteenth session).
public enum CPUAffinity {
    /// Why a CPU list cannot be used.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// The CPUs this process may run on, in increasing order; nil where the system does not say.
    public static func allowedCPUs() -> [Int]? {
        var cpus = [Int32](repeating: 0, count: 1024)
        let n = bp_allowed_cpus(&cpus, Int32(cpus.count))
        guard n >= 0 else { return nil }
        return cpus.prefix(Int(n)).map(Int.init)
    }

    /// Restricts every thread of this process, and the threads they start from now on, to
    /// `cpus`. Throws if a CPU is not among the allowed ones, or the system refuses.
    public static func restrictProcess(to cpus: [Int]) throws {
        guard !cpus.isEmpty else { throw Failure(description: "no CPU given") }
        guard let allowed = allowedCPUs() else {
            throw Failure(description: "this system does not let a process choose its CPUs (\(String(cString: strerror(errno))))")
        }
        if let outside = cpus.first(where: { !allowed.contains($0) }) {
            throw Failure(description: "CPU \(outside) is not one this process may run on (\(format(allowed)))")
        }
        let list = cpus.map(Int32.init)
        // The calling thread first, so that threads it starts meanwhile inherit the set; then
        // every thread the process has (OpenBLAS starts its own when the library loads).
        var threads: [pid_t] = [0]
        if let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") {
            threads += tasks.compactMap { pid_t($0) }
        }
        for thread in threads {
            guard bp_bind_thread(thread, list, Int32(list.count)) != 0 else { continue }
            let code = errno
            // A thread that ended since the directory was read is not a failure.
            if code == ESRCH { continue }
            throw Failure(description: "cannot bind thread \(thread) to CPUs \(format(cpus)): \(String(cString: strerror(code)))")
        }
    }

    /// Parses a CPU list in the kernel's notation: "3", "0-3", "0,2,4-5". Nil if it is not one
    /// (empty, negative, a range that runs backwards, or a CPU beyond the 1,024 a set holds).
    public static func parse(_ text: String) -> [Int]? {
        var cpus = Set<Int>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
                .map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard (1...2).contains(bounds.count), let low = bounds.first!, let high = bounds.last!,
                  low >= 0, low <= high, high < 1024 else { return nil }
            cpus.formUnion(low...high)
        }
        return cpus.sorted()
    }

    /// A CPU list in the kernel's notation, ranges joined: [0, 1, 2, 5] → "0-2,5".
    public static func format(_ cpus: [Int]) -> String {
        var parts: [String] = []
        var i = 0
        let sorted = Array(Set(cpus)).sorted()
        while i < sorted.count {
            var j = i
            while j + 1 < sorted.count, sorted[j + 1] == sorted[j] + 1 { j += 1 }
            parts.append(i == j ? "\(sorted[i])" : "\(sorted[i])-\(sorted[j])")
            i = j + 1
        }
        return parts.joined(separator: ",")
    }

    /// CPUs for `workers` processes of `threads` threads each, one disjoint set per process; nil
    /// if they do not fit in `allowed`.
    ///
    /// Like an MPI launcher's binding to cores: when every thread can have a physical core of its
    /// own, each gets one CPU of a different core (two workers never share a core through its
    /// hardware threads); otherwise the CPUs are handed out core by core, a core's hardware
    /// threads together. `core` names a CPU's physical core (package and core number; nil if
    /// unknown: the CPU is then a core of its own), from sysfs by default.
    public static func plan(workers: Int, threads: Int, allowed: [Int],
                            core: (Int) -> [Int]? = physicalCore) -> [[Int]]? {
        guard workers >= 1, threads >= 1, workers * threads <= allowed.count else { return nil }
        var cores: [[Int]] = []
        var coreIndex: [[Int]: Int] = [:]
        for cpu in allowed.sorted() {
            let key = core(cpu)
            if let key, let i = coreIndex[key] {
                cores[i].append(cpu)
            } else {
                if let key { coreIndex[key] = cores.count }
                cores.append([cpu])
            }
        }
        let order = workers * threads <= cores.count ? cores.map { $0[0] } : cores.flatMap { $0 }
        return (0..<workers).map { Array(order[($0 * threads)..<(($0 + 1) * threads)]) }
    }

    /// CPU `cpu`'s physical core as [package, core] (sysfs `topology`), or nil if unknown.
    public static func physicalCore(_ cpu: Int) -> [Int]? {
        func read(_ name: String) -> Int? {
            let path = "/sys/devices/system/cpu/cpu\(cpu)/topology/\(name)"
            return (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        guard let package = read("physical_package_id"), let core = read("core_id") else { return nil }
        return [package, core]
    }
}
