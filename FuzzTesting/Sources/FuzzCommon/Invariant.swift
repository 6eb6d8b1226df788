#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Stops the fuzzer with a finding when a property of the code under test does not hold.
///
/// libFuzzer reports any crash as a finding and saves the input as `crash-<sha1>`; this prints
/// which property failed first, so the report says more than "trap".
public func fuzzRequire(_ condition: Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
    guard !condition else { return }
    let text = "fuzz invariant failed (\(file):\(line)): \(message())\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    abort()
}
