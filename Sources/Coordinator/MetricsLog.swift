import Foundation

/// The `--metrics` file: one JSON object per line, written as each step ends.
final class MetricsLog {
    enum Value {
        case int(Int)
        case double(Double)
        case string(String)

        var json: String {
            switch self {
            case .int(let v): return String(v)
            case .double(let v): return v.isFinite ? String(v) : "null"
            case .string(let s):
                let escaped = s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                return "\"\(escaped)\""
            }
        }
    }

    private let handle: FileHandle

    init(path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil) else {
            throw CoordinatorError("cannot create the metrics file \(path) (does its directory exist?)")
        }
        handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    }

    /// Writes one object, keys in the order given.
    func write(_ fields: KeyValuePairs<String, Value>) throws {
        let body = fields.map { "\"\($0.key)\": \($0.value.json)" }.joined(separator: ", ")
        try handle.write(contentsOf: Data("{\(body)}\n".utf8))
    }

    deinit { try? handle.close() }
}
