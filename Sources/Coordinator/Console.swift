import Foundation

/// The coordinator's output: plain lines, plus, on a terminal, a progress line kept at the
/// bottom and redrawn in place. Output to a file or a pipe (a log) gets the plain lines only,
/// each written at once.
final class Console: @unchecked Sendable {
    private let lock = NSLock()
    private let isTerminal = isatty(STDOUT_FILENO) == 1
    private var status = ""

    /// The process's console.
    static let shared = Console()

    private init() {}

    /// Writes straight to the file descriptor: lines reach a log as they are printed, not
    /// when a buffer fills (and are not lost if the process is killed).
    private func emit(_ text: String) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { write(STDOUT_FILENO, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            offset += n
        }
    }

    /// Prints a line (above the progress line, on a terminal).
    func line(_ text: String) {
        lock.withLock {
            if isTerminal && !status.isEmpty {
                emit("\r\u{1B}[2K\(text)\n\(status)")
            } else {
                emit(text + "\n")
            }
        }
    }

    /// Sets the progress line (shown only on a terminal).
    func status(_ text: String) {
        guard isTerminal else { return }
        lock.withLock {
            status = text
            emit("\r\u{1B}[2K\(text)")
        }
    }

    /// Removes the progress line.
    func clearStatus() {
        guard isTerminal else { return }
        lock.withLock {
            if !status.isEmpty { emit("\r\u{1B}[2K") }
            status = ""
        }
    }
}
