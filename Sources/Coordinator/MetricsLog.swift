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

    /// Creates the file, or, for a resumed run, keeps the lines of the steps up to
    /// `keepingStepsThrough` (those the checkpoint includes) and appends after them.
    init(path: String, keepingStepsThrough kept: Int? = nil) throws {
        var prefix = Data()
        if let kept, let old = FileManager.default.contents(atPath: path) {
            for line in old.split(separator: UInt8(ascii: "\n")) {
                // A line cut short by a crash, a summary line, or a step the checkpoint does
                // not include is dropped: the resumed run writes those again.
                guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                      object["event"] == nil, let step = object["step"] as? Int, step <= kept else { continue }
                prefix.append(Data(line))
                prefix.append(UInt8(ascii: "\n"))
            }
        }
        guard FileManager.default.createFile(atPath: path, contents: prefix) else {
            throw CoordinatorError("cannot create the metrics file \(path) (does its directory exist?)")
        }
        handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
    }

    /// Writes one object, keys in the order given.
    func write(_ fields: KeyValuePairs<String, Value>) throws {
        let body = fields.map { "\"\($0.key)\": \($0.value.json)" }.joined(separator: ", ")
        try handle.write(contentsOf: Data("{\(body)}\n".utf8))
    }

    deinit { try? handle.close() }
}
