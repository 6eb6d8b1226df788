import Foundation
import Testing
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import Coordinator

/// The learning-curve SVG: well-formed XML, one vertex per step, axes, legend and title.
@Suite("Learning curve SVG")
struct LearningCurveTests {
    /// A metrics file as the coordinator writes it: validation every second step, then the done line.
    static func metricsText(steps: Int) -> String {
        var lines: [String] = []
        for step in 1...steps {
            let validation = step % 2 == 0 ? String(0.5 / Double(step)) : "null"
            lines.append("{\"step\": \(step), \"epoch\": 1, \"loss\": 1.5, \"train_error\": \(0.9 / Double(step)), "
                         + "\"seconds\": 0.25, \"bytes_sent\": 10, \"bytes_received\": 20, \"validation_error\": \(validation)}")
        }
        lines.append("{\"event\": \"done\", \"test_error\": 0.0321, \"test_loss\": 0.1, \"model_sha256\": \"ab\", "
                     + "\"steps\": \(steps), \"train_seconds\": \(0.25 * Double(steps))}")
        return lines.joined(separator: "\n") + "\n"
    }

    /// The vertices of the polyline with `id`, as (x, y) pairs.
    static func vertices(_ document: XMLDocument, id: String) throws -> [(Double, Double)] {
        let nodes = try document.nodes(forXPath: "//*[local-name()='polyline'][@id='\(id)']")
        let polyline = try #require(nodes.first as? XMLElement, "no polyline \(id)")
        // (swift-corelibs-foundation's attribute(forName:) misses attributes under a default
        // namespace, so look through the list.)
        let text = polyline.attributes?.first { $0.name == "points" }?.stringValue ?? ""
        return try text.split(separator: " ").map { pair in
            let parts = pair.split(separator: ",").compactMap { Double($0) }
            try #require(parts.count == 2, "bad vertex \(pair) in \(id)")
            return (parts[0], parts[1])
        }
    }

    @Test("built from a metrics file: parses as XML; training line has a vertex per step, validation one per validated step")
    func fromMetricsFile() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("curve-\(getpid()).jsonl").path
        try Self.metricsText(steps: 12).write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }

        let curve = try LearningCurve(metricsFile: path)
        #expect(curve.points.count == 12)
        #expect(curve.points.last?.seconds == 3.0, "seconds accumulate step by step")
        #expect(curve.testError == 0.0321)
        let svg = curve.svg()
        let document = try XMLDocument(xmlString: svg, options: [])
        let root = try #require(document.rootElement())
        #expect(root.name == "svg")

        let train = try Self.vertices(document, id: "training-error")
        let validation = try Self.vertices(document, id: "validation-error")
        #expect(train.count == 12)
        #expect(validation.count == 6)
        // x grows with the step; a lower error is drawn lower on the page (larger y).
        #expect(zip(train, train.dropFirst()).allSatisfy { $0.0 < $1.0 })
        #expect(zip(train, train.dropFirst()).allSatisfy { $0.1 < $1.1 }, "training error falls in this file: \(train)")

        let texts = try document.nodes(forXPath: "//*[local-name()='text']").compactMap(\.stringValue)
        #expect(texts.contains { $0.contains("test error 3.21%") && $0.contains("3.0 s of training") }, "title: \(texts)")
        #expect(texts.contains("step"))
        #expect(texts.contains("training time (s)"))
        #expect(texts.contains("training error (batch)") && texts.contains("validation error"), "legend: \(texts)")
        #expect(texts.contains("10%"), "y ticks: \(texts)")
        #expect(try document.nodes(forXPath: "//*[@id='x-ticks']/*[local-name()='text']").count >= 5)
    }

    @Test("appending in the run and reading the metrics give the same points")
    func appendMatchesFile() throws {
        var curve = LearningCurve()
        for step in 1...3 {
            curve.append(step: step, seconds: 0.25, trainError: 0.9 / Double(step),
                         validationError: step % 2 == 0 ? 0.5 / Double(step) : nil)
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("curve2-\(getpid()).jsonl").path
        try Self.metricsText(steps: 3).write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try LearningCurve(metricsFile: path).points == curve.points)
    }

    @Test("a one-step run with no validation and a zero error still draws (the zero sits on the axis)")
    func degenerate() throws {
        var curve = LearningCurve()
        curve.append(step: 1, seconds: 0.1, trainError: 0, validationError: nil)
        let document = try XMLDocument(xmlString: curve.svg(), options: [])
        #expect(try Self.vertices(document, id: "training-error").count == 1)
        #expect(try Self.vertices(document, id: "validation-error").isEmpty)
        #expect(!curve.svg().contains("nan") && !curve.svg().contains("inf"))
    }

    @Test("run.jsonl gives run.svg; a name without extension gets .svg")
    func defaultPath() {
        #expect(LearningCurve.defaultPath(forMetrics: "/tmp/x/run.jsonl") == "/tmp/x/run.svg")
        #expect(LearningCurve.defaultPath(forMetrics: "/tmp/x/metrics") == "/tmp/x/metrics.svg")
    }
}
