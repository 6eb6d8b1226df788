import Foundation
import Synchronization

/// A new directory for a test's files under the system's temporary directory, named after
/// `name` and the test process. Every directory made here is removed when the test process
/// exits, so that test runs leave nothing behind; set `KEEP_TEST_FILES=1` to keep them for a
/// look after a failure.
public func temporaryDirectory(_ name: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("backprop-tests-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    madeDirectories.withLock { made in
        if made.isEmpty, ProcessInfo.processInfo.environment["KEEP_TEST_FILES"] == nil {
            atexit { removeMadeDirectories() }
        }
        made.append(url)
    }
    return url
}

/// The directories `temporaryDirectory(_:)` made, until the process exits.
private let madeDirectories = Mutex<[URL]>([])

private func removeMadeDirectories() {
    let made = madeDirectories.withLock { made in
        defer { made.removeAll() }
        return made
    }
    for url in made { try? FileManager.default.removeItem(at: url) }
}
