import Testing

/// Runs the tests of the suites it is attached to one at a time, across suites.
///
/// Each of these tests starts a coordinator and workers, on a 2-core machine; run side by side
/// they starve each other's processes, a worker starved for `--worker-timeout` seconds is
/// (rightly) given up, and the timings the tests check stop meaning anything. Unit tests in the
/// other targets still run alongside.
struct OneProcessTestAtATime: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(for test: Test, testCase: Test.Case?,
                      performing function: @Sendable () async throws -> Void) async throws {
        guard !test.isSuite, !ProcessGate.held else { return try await function() }
        await ProcessGate.shared.acquire()
        do {
            try await ProcessGate.$held.withValue(true) { try await function() }
        } catch {
            await ProcessGate.shared.release()
            throw error
        }
        await ProcessGate.shared.release()
    }
}

extension Trait where Self == OneProcessTestAtATime {
    /// The test starts real processes: it runs alone among such tests.
    static var oneProcessTestAtATime: Self { OneProcessTestAtATime() }
}

/// A one-holder async lock, first come first served.
actor ProcessGate {
    static let shared = ProcessGate()
    /// Whether the current task holds the gate (so nested scopes do not wait for themselves).
    @TaskLocal static var held = false
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        guard busy else {
            busy = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty { busy = false } else { waiting.removeFirst().resume() }
    }
}
