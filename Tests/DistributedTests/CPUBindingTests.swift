import Foundation
import Testing
import Training

/// `worker --cpus` binds every thread of the worker; `coordinator --local` binds each local
/// worker to a CPU of its own when they fit, and says so.
@Suite("CPU binding", .oneProcessTestAtATime)
struct CPUBindingTests {
    /// The `Cpus_allowed_list` of every thread of process `pid`.
    static func threadCPULists(_ pid: Int32) throws -> [String] {
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")
        return tasks.compactMap { tid in
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/status", encoding: .utf8) else { return nil }
            return status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }?
                .split(separator: ":").last?.trimmingCharacters(in: .whitespaces)
        }
    }

    @Test("worker --cpus N runs every one of its threads on CPU N only")
    func workerBindsEveryThread() throws {
        let (_, workerPath) = try Products.require()
        let cpus = try #require(CPUAffinity.allowedCPUs())
        let cpu = cpus.last!
        let worker = try BackgroundWorker(executable: workerPath, arguments: ["--cpus", "\(cpu)"])
        defer { worker.stop() }
        let lists = try Self.threadCPULists(worker.process.processIdentifier)
        #expect(lists.count >= 2, "expected the worker's threads, read \(lists)")
        #expect(lists.allSatisfy { $0 == "\(cpu)" }, "threads' CPUs: \(lists)")
    }

    @Test("worker --cpus with a CPU it may not use, or a malformed list, fails naming the problem",
          arguments: [("1023", "not one this process may run on"), ("2-1", "must be a CPU list")])
    func workerRefusesBadLists(_ list: String, _ message: String) async throws {
        let (_, worker) = try Products.require()
        if list == "1023", CPUAffinity.allowedCPUs()?.contains(1023) == true {
            print("skipped: CPU 1023 exists here")
            return
        }
        let outcome = try await runProcess(worker, ["--listen", "127.0.0.1:0", "--cpus", list], timeout: 30)
        #expect(!outcome.timedOut, "\(outcome)")
        #expect(outcome.status != 0, "\(outcome)")
        #expect(outcome.output.contains("--cpus") && outcome.output.contains(message), "\(outcome)")
    }

    @Test("coordinator --local N --pin-workers on fails, saying why, when N workers do not fit in the CPUs")
    func pinningThatCannotFit() async throws {
        let cpus = try #require(CPUAffinity.allowedCPUs())
        let outcome = try await TinyRun.coordinator(["--local", "\(cpus.count + 1)", "--threads-per-worker", "1",
                                                     "--pin-workers", "on"], timeout: 60)
        #expect(!outcome.timedOut, "\(outcome)")
        #expect(outcome.status != 0, "\(outcome)")
        #expect(outcome.output.contains("--pin-workers on") && outcome.output.contains("need \(cpus.count + 1) CPUs"), "\(outcome)")
        #expect(!outcome.output.contains("(Batch"), "it trained anyway:\n\(outcome)")
    }
}

extension CPUBindingTests {
    @Test("coordinator --local 2 with one thread each binds the workers to CPUs of their own, and says which")
    func localWorkersArePinned() async throws {
        let allowed = try #require(CPUAffinity.allowedCPUs())
        guard let plan = CPUAffinity.plan(workers: 2, threads: 1, allowed: allowed) else {
            print("skipped: this process may use \(allowed.count) CPU(s); two workers do not fit")
            return
        }
        let outcome = try await TinyRun.coordinator(["--local", "2", "--threads-per-worker", "1", "--max-steps", "1"], timeout: 120)
        #expect(outcome.status == 0 && !outcome.timedOut, "\(outcome)")
        #expect(outcome.output.contains("1 BLAS thread(s) each; CPUs \(plan[0][0]), \(plan[1][0])"), "\(outcome)")
        let off = try await TinyRun.coordinator(["--local", "2", "--threads-per-worker", "1", "--max-steps", "1",
                                                 "--pin-workers", "off"], timeout: 120)
        #expect(off.status == 0 && !off.timedOut, "\(off)")
        #expect(off.output.contains("1 BLAS thread(s) each\n") || off.output.contains("1 BLAS thread(s) each\r"), "\(off)")
        // More workers than CPUs: not bound, and the start line says why.
        let many = try await TinyRun.coordinator(["--local", "\(allowed.count + 1)", "--threads-per-worker", "1", "--max-steps", "1"], timeout: 120)
        #expect(many.status == 0 && !many.timedOut, "\(many)")
        #expect(many.output.contains("not bound to CPUs (\(allowed.count + 1) threads, \(allowed.count) CPUs)"), "\(many)")
    }
}
