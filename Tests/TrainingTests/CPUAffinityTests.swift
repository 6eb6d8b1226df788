import Testing
import Training

/// CPU lists in the kernel's notation, and the placement of local workers on CPUs.
@Suite("CPU affinity")
struct CPUAffinityTests {
    @Test("CPU lists parse: single CPUs, ranges, both, spaces, repeats")
    func parses() {
        #expect(CPUAffinity.parse("3") == [3])
        #expect(CPUAffinity.parse("0-3") == [0, 1, 2, 3])
        #expect(CPUAffinity.parse("0,2,4-5") == [0, 2, 4, 5])
        #expect(CPUAffinity.parse(" 1 , 0 ") == [0, 1])
        #expect(CPUAffinity.parse("2,1-3") == [1, 2, 3])
        #expect(CPUAffinity.parse("1023") == [1023])
    }

    @Test("Lists that are not CPU lists are refused", arguments: ["", ",", "1,,2", "-1", "3-1", "a", "1-", "1-2-3", "1024", "0-1024"])
    func refuses(_ text: String) {
        #expect(CPUAffinity.parse(text) == nil, "'\(text)' was accepted")
    }

    @Test("Lists are written with ranges joined, and read back the same")
    func formats() {
        #expect(CPUAffinity.format([0, 1, 2, 5]) == "0-2,5")
        #expect(CPUAffinity.format([3]) == "3")
        #expect(CPUAffinity.format([5, 1, 0, 5]) == "0-1,5")
        for cpus in [[0], [0, 1], [1, 3, 4, 5, 9], Array(0..<64)] {
            #expect(CPUAffinity.parse(CPUAffinity.format(cpus)) == cpus)
        }
    }

    @Test("Workers get disjoint CPU sets in order, or none when they do not fit")
    func plans() {
        let own = { (cpu: Int) -> [Int]? in [0, cpu] }   // every CPU a core of its own
        #expect(CPUAffinity.plan(workers: 2, threads: 1, allowed: [0, 1], core: own) == [[0], [1]])
        #expect(CPUAffinity.plan(workers: 2, threads: 2, allowed: [0, 1, 4, 5, 6], core: own) == [[0, 1], [4, 5]])
        #expect(CPUAffinity.plan(workers: 1, threads: 2, allowed: [3, 7], core: own) == [[3, 7]])
        #expect(CPUAffinity.plan(workers: 3, threads: 1, allowed: [0, 1], core: own) == nil)
        #expect(CPUAffinity.plan(workers: 1, threads: 3, allowed: [0, 1], core: own) == nil)
        #expect(CPUAffinity.plan(workers: 0, threads: 1, allowed: [0, 1], core: own) == nil)
    }

    @Test("On a machine with two hardware threads a core, workers get whole cores, never each other's siblings")
    func plansByCore() {
        // 4 cores, 8 CPUs numbered as Linux does on x86: CPU n and n + 4 share core n.
        let core = { (cpu: Int) -> [Int]? in [0, cpu % 4] }
        let all = Array(0..<8)
        // One thread each: a CPU of a different core each.
        #expect(CPUAffinity.plan(workers: 2, threads: 1, allowed: all, core: core) == [[0], [1]])
        #expect(CPUAffinity.plan(workers: 2, threads: 2, allowed: all, core: core) == [[0, 1], [2, 3]])
        // More threads than cores: whole cores, a core's two CPUs together.
        #expect(CPUAffinity.plan(workers: 2, threads: 4, allowed: all, core: core) == [[0, 4, 1, 5], [2, 6, 3, 7]])
        #expect(CPUAffinity.plan(workers: 3, threads: 2, allowed: all, core: core) == [[0, 4], [1, 5], [2, 6]])
        // Only some CPUs allowed (a cgroup or taskset): the plan stays within them.
        #expect(CPUAffinity.plan(workers: 2, threads: 1, allowed: [4, 5, 6], core: core) == [[4], [5]])
        #expect(CPUAffinity.plan(workers: 2, threads: 2, allowed: [0, 4, 1, 5], core: core) == [[0, 4], [1, 5]])
        // Unknown topology: each CPU is a core of its own, numeric order.
        #expect(CPUAffinity.plan(workers: 2, threads: 2, allowed: [3, 1, 2, 0], core: { _ in nil }) == [[0, 1], [2, 3]])
    }

    @Test("This process may run on at least one CPU, reported in order")
    func allowed() throws {
        let cpus = try #require(CPUAffinity.allowedCPUs(), "sched_getaffinity failed")
        #expect(!cpus.isEmpty)
        #expect(cpus == cpus.sorted() && Set(cpus).count == cpus.count)
    }
}
