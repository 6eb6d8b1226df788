import Foundation
import Testing

/// What `BLASRuntime.prepareProcess` does to a real program's OpenBLAS, seen from outside: the
/// report line `backprop-mnist` prints, and a short training run on two BLAS threads after the
/// thread pool was stopped and started again. (In the test process itself, stopping the pool
/// would race with the other tests' BLAS calls.)
@Suite("OpenBLAS set-up of a program", .oneProcessTestAtATime)
struct BLASSetupTests {
    static let shortRun = ["--batches", "1", "--batch-size", "500", "--hidden", "20", "--threads", "2"]

    static func backpropMNIST() throws -> String {
        _ = try Products.require()
        let path = try #require(Products.directory) + "/backprop-mnist"
        try #require(FileManager.default.isExecutableFile(atPath: path), "no backprop-mnist beside the coordinator: \(path)")
        return path
    }

    @Test("idle OpenBLAS threads spin 2^18 cycles, not 2^28, and a program still trains and validates on 2 threads")
    func idleWaitShortened() async throws {
        let path = try Self.backpropMNIST()
        let outcome = try await runProcess(path, Self.shortRun + ["--data", Products.mnistDirectory], timeout: 120)
        #expect(outcome.status == 0, "\(outcome)")
        if let user = ProcessInfo.processInfo.environment["OPENBLAS_THREAD_TIMEOUT"] {
            #expect(outcome.stdout.contains("idle threads spin 2^\(user) cycles (OPENBLAS_THREAD_TIMEOUT from the environment)"), "\(outcome)")
        } else {
            #expect(outcome.stdout.contains("2 thread(s), idle threads spin 2^18 cycles\n"), "\(outcome)")
        }
        #expect(outcome.stdout.contains("Validation error:"), "no validation after the BLAS pool restarted:\n\(outcome)")
    }

    @Test("an OPENBLAS_THREAD_TIMEOUT in the environment is kept and reported")
    func userChoiceKept() async throws {
        let path = try Self.backpropMNIST()
        let outcome = try await runProcess(path, Self.shortRun + ["--data", Products.mnistDirectory], timeout: 120,
                                           environment: ["OPENBLAS_THREAD_TIMEOUT": "12"])
        #expect(outcome.status == 0, "\(outcome)")
        #expect(outcome.stdout.contains("idle threads spin 2^12 cycles (OPENBLAS_THREAD_TIMEOUT from the environment)"), "\(outcome)")
    }
}
