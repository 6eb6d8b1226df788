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
        #expect(CPUAffinity.plan(workers: 2, threads: 1, allowed: [0, 1]) == [[0], [1]])
        #expect(CPUAffinity.plan(workers: 2, threads: 2, allowed: [0, 1, 4, 5, 6]) == [[0, 1], [4, 5]])
        #expect(CPUAffinity.plan(workers: 1, threads: 2, allowed: [3, 7]) == [[3, 7]])
        #expect(CPUAffinity.plan(workers: 3, threads: 1, allowed: [0, 1]) == nil)
        #expect(CPUAffinity.plan(workers: 1, threads: 3, allowed: [0, 1]) == nil)
        #expect(CPUAffinity.plan(workers: 0, threads: 1, allowed: [0, 1]) == nil)
    }

    @Test("This process may run on at least one CPU, reported in order")
    func allowed() throws {
        let cpus = try #require(CPUAffinity.allowedCPUs(), "sched_getaffinity failed")
        #expect(!cpus.isEmpty)
        #expect(cpus == cpus.sorted() && Set(cpus).count == cpus.count)
    }
}
