import Foundation
import TestSupport
import Testing
#if canImport(FoundationXML)
import FoundationXML
#endif

/// The coordinator leaves a learning curve next to its metrics and says where.
@Suite("Learning curve of a run", .oneProcessTestAtATime)
struct LearningCurveRunTests {
    @Test("--metrics run.jsonl gives run.svg, announced on stdout, with one vertex per step on each curve")
    func plotNextToMetrics() async throws {
        let directory = try temporaryDirectory("plot")
        defer { try? FileManager.default.removeItem(at: directory) }
        let metrics = directory.appendingPathComponent("run.jsonl").path
        let plot = directory.appendingPathComponent("run.svg").path
        let outcome = try await TinyRun.coordinator(["--local", "1", "--eval-every", "1", "--metrics", metrics])
        try #require(outcome.status == 0 && !outcome.timedOut, "\(outcome)")
        #expect(outcome.stdout.contains("learning curve written to \(plot)"), "\(outcome)")

        let document = try XMLDocument(contentsOf: URL(fileURLWithPath: plot), options: [])
        #expect(document.rootElement()?.name == "svg")
        for id in ["training-error", "validation-error"] {
            let nodes = try document.nodes(forXPath: "//*[local-name()='polyline'][@id='\(id)']")
            let polyline = try #require(nodes.first as? XMLElement, "no \(id) line in \(plot)")
            let points = polyline.attributes?.first { $0.name == "points" }?.stringValue ?? ""
            #expect(points.split(separator: " ").count == 3, "\(id): \(points)")
        }
        // The per-step metrics carry the validation error the plot shows.
        let text = try String(contentsOfFile: metrics, encoding: .utf8)
        #expect(text.split(separator: "\n").dropLast().allSatisfy { $0.contains("\"validation_error\": 0.") }, "\(text)")
    }
}
