import Foundation

/// The learning curve of a run, drawn as a dependency-free SVG image: training and validation
/// error per step (log scale), steps below, training seconds above, final test error in the title.
///
/// The coordinator appends one point per step and writes the image at the end (`run.jsonl` →
/// `run.svg`, or `--plot FILE`). `init(metricsFile:)` rebuilds the same curve from a `--metrics`
/// file, so a plot can be redrawn (and tested) without training.
struct LearningCurve {
    struct Point: Equatable {
        var step: Int
        /// Training seconds up to the end of this step (evaluation excluded, as `train_seconds`).
        var seconds: Double
        var trainError: Double
        /// Present on steps after which the model was validated (`--eval-every`).
        var validationError: Double?
    }

    var points: [Point] = []
    /// The done line's figures, once the run has them.
    var testError: Double?
    var trainSeconds: Double?

    init() {}

    /// Records a step that took `seconds` of training time.
    mutating func append(step: Int, seconds: Double, trainError: Double, validationError: Double?) {
        let total = (points.last?.seconds ?? 0) + seconds
        points.append(Point(step: step, seconds: total, trainError: trainError, validationError: validationError))
    }

    /// Reads a `--metrics` file: the step lines (`step`, `seconds`, `train_error`, optional
    /// `validation_error`) and the done line (`test_error`, `train_seconds`).
    init(metricsFile path: String) throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        for (number, line) in text.split(separator: "\n").enumerated() {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw CoordinatorError("\(path) line \(number + 1) is not a JSON object")
            }
            func double(_ key: String) -> Double? { (object[key] as? NSNumber)?.doubleValue }
            if object["event"] as? String == "done" {
                testError = double("test_error")
                trainSeconds = double("train_seconds")
            } else if let step = (object["step"] as? NSNumber)?.intValue, let seconds = double("seconds"),
                      let trainError = double("train_error") {
                append(step: step, seconds: seconds, trainError: trainError, validationError: double("validation_error"))
            }
        }
    }

    /// `run.jsonl` → `run.svg` (same directory, extension replaced or added).
    static func defaultPath(forMetrics metrics: String) -> String {
        let url = URL(fileURLWithPath: metrics)
        let base = url.pathExtension.isEmpty ? url : url.deletingPathExtension()
        return base.appendingPathExtension("svg").path
    }

    func write(to path: String) throws {
        do {
            try Data(svg().utf8).write(to: URL(fileURLWithPath: path))
        } catch {
            throw CoordinatorError("cannot write the learning curve to \(path): \(error.localizedDescription)")
        }
    }

    // MARK: - Drawing

    private static let width = 720.0, height = 440.0
    private static let left = 70.0, right = 180.0, top = 70.0, bottom = 56.0
    private static let trainColour = "#1f77b4", validationColour = "#d62728"

    /// The image as SVG 1.1 text.
    func svg() -> String {
        let w = Self.width, h = Self.height
        let plotLeft = Self.left, plotRight = w - Self.right, plotTop = Self.top, plotBottom = h - Self.bottom
        let lastStep = max(points.last?.step ?? 1, 1)
        let firstStep = min(points.first?.step ?? 0, lastStep - 1)
        let errors = points.flatMap { [$0.trainError] + ($0.validationError.map { [$0] } ?? []) } + (testError.map { [$0] } ?? [])
        let axis = LogAxis(values: errors)
        func x(_ step: Int) -> Double {
            plotLeft + Double(step - firstStep) / Double(lastStep - firstStep) * (plotRight - plotLeft)
        }
        func y(_ error: Double) -> Double { plotBottom - axis.fraction(error) * (plotBottom - plotTop) }

        var title = "Learning curve: \(points.count) step\(points.count == 1 ? "" : "s")"
        if let e = testError { title += String(format: ", test error %.2f%%", e * 100) }
        if let s = trainSeconds ?? points.last?.seconds { title += String(format: ", %.1f s of training", s) }

        var svg = """
            <?xml version="1.0" encoding="UTF-8"?>
            <svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="\(Int(w))" height="\(Int(h))" \
            viewBox="0 0 \(Int(w)) \(Int(h))" font-family="sans-serif" font-size="12">
            <title>\(Self.escape(title))</title>
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(Self.f(w / 2))" y="22" text-anchor="middle" font-size="15">\(Self.escape(title))</text>

            """
        // Frame and grid.
        svg += "<g id=\"axes\" stroke=\"black\" fill=\"none\">\n"
        svg += "<rect x=\"\(Self.f(plotLeft))\" y=\"\(Self.f(plotTop))\" width=\"\(Self.f(plotRight - plotLeft))\" height=\"\(Self.f(plotBottom - plotTop))\"/>\n"
        svg += "</g>\n<g id=\"y-ticks\">\n"
        for tick in axis.ticks {
            let ty = y(tick)
            svg += "<line x1=\"\(Self.f(plotLeft))\" y1=\"\(Self.f(ty))\" x2=\"\(Self.f(plotRight))\" y2=\"\(Self.f(ty))\" stroke=\"#dddddd\"/>"
            svg += "<text x=\"\(Self.f(plotLeft - 6))\" y=\"\(Self.f(ty + 4))\" text-anchor=\"end\">\(Self.percent(tick))</text>\n"
        }
        svg += "</g>\n<g id=\"x-ticks\">\n"
        for step in Self.stepTicks(from: firstStep, to: lastStep) {
            let tx = x(step)
            svg += "<line x1=\"\(Self.f(tx))\" y1=\"\(Self.f(plotBottom))\" x2=\"\(Self.f(tx))\" y2=\"\(Self.f(plotBottom + 5))\" stroke=\"black\"/>"
            svg += "<text x=\"\(Self.f(tx))\" y=\"\(Self.f(plotBottom + 18))\" text-anchor=\"middle\">\(step)</text>\n"
            // The top axis: training seconds at the end of that step.
            if let point = points.last(where: { $0.step <= step }) {
                svg += "<line x1=\"\(Self.f(tx))\" y1=\"\(Self.f(plotTop - 5))\" x2=\"\(Self.f(tx))\" y2=\"\(Self.f(plotTop))\" stroke=\"black\"/>"
                svg += "<text x=\"\(Self.f(tx))\" y=\"\(Self.f(plotTop - 9))\" text-anchor=\"middle\" fill=\"#555555\">\(Self.seconds(point.seconds))</text>\n"
            }
        }
        svg += "</g>\n"
        svg += "<text x=\"\(Self.f((plotLeft + plotRight) / 2))\" y=\"\(Self.f(h - 14))\" text-anchor=\"middle\">step</text>\n"
        svg += "<text x=\"\(Self.f((plotLeft + plotRight) / 2))\" y=\"42\" text-anchor=\"middle\" fill=\"#555555\">training time (s)</text>\n"
        svg += "<text transform=\"translate(18 \(Self.f((plotTop + plotBottom) / 2))) rotate(-90)\" text-anchor=\"middle\">error (log scale)</text>\n"

        // The two curves.
        let train = points.map { "\(Self.f(x($0.step))),\(Self.f(y($0.trainError)))" }
        let validation = points.compactMap { p in p.validationError.map { "\(Self.f(x(p.step))),\(Self.f(y($0)))" } }
        for (id, colour, coordinates) in [("training-error", Self.trainColour, train),
                                          ("validation-error", Self.validationColour, validation)] {
            svg += "<polyline id=\"\(id)\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"1.5\" points=\"\(coordinates.joined(separator: " "))\"/>\n"
            if coordinates.count == 1, let only = coordinates.first?.split(separator: ",") {
                svg += "<circle cx=\"\(only[0])\" cy=\"\(only[1])\" r=\"3\" fill=\"\(colour)\"/>\n"
            }
        }

        // Legend, right of the plot.
        let legendX = plotRight + 14
        svg += "<g id=\"legend\">\n"
        var entries = [("training error (batch)", Self.trainColour), ("validation error", Self.validationColour)]
        if validation.isEmpty { entries[1].0 = "validation error (none)" }
        for (i, (label, colour)) in entries.enumerated() {
            let ly = plotTop + 14 + Double(i) * 20
            svg += "<line x1=\"\(Self.f(legendX))\" y1=\"\(Self.f(ly - 4))\" x2=\"\(Self.f(legendX + 22))\" y2=\"\(Self.f(ly - 4))\" stroke=\"\(colour)\" stroke-width=\"2\"/>"
            svg += "<text x=\"\(Self.f(legendX + 28))\" y=\"\(Self.f(ly))\">\(Self.escape(label))</text>\n"
        }
        if let e = testError {
            svg += "<text x=\"\(Self.f(legendX))\" y=\"\(Self.f(plotTop + 64))\">test error \(Self.percent(e, digits: 2))</text>\n"
        }
        svg += "</g>\n</svg>\n"
        return svg
    }

    /// A log10 axis over the error values, with ticks at 1, 2, 5 × powers of ten.
    struct LogAxis {
        var low: Double
        var high: Double
        var ticks: [Double]

        init(values: [Double]) {
            let positive = values.filter { $0 > 0 && $0.isFinite }
            let smallest = max(positive.min() ?? 0.01, 1e-4)
            let largest = min(max(positive.max() ?? 1, smallest * 2), 1)
            let candidates = (-4...0).flatMap { e in [1.0, 2, 5].map { $0 * pow(10, Double(e)) } }.filter { $0 <= 1 }
            low = candidates.last { $0 <= smallest } ?? 1e-4
            high = candidates.first { $0 >= largest } ?? 1
            if high <= low { high = min(1, low * 10) }
            let (low, high) = (low, high)
            ticks = candidates.filter { $0 >= low && $0 <= high }
        }

        /// 0 at `low`, 1 at `high`; values outside are clamped (an exact 0 error sits on the bottom).
        func fraction(_ value: Double) -> Double {
            let v = min(max(value, low), high)
            return (log10(v) - log10(low)) / (log10(high) - log10(low))
        }
    }

    /// About eight round step numbers from `first` to `last`.
    static func stepTicks(from first: Int, to last: Int) -> [Int] {
        let span = max(last - first, 1)
        let raw = Double(span) / 8
        let magnitude = pow(10, floor(log10(raw)))
        let stride = Int(max(1, ([1.0, 2, 5, 10].first { $0 * magnitude >= raw } ?? 10) * magnitude))
        let start = (first / stride) * stride
        return Swift.stride(from: start, through: last, by: stride).filter { $0 >= first }
    }

    private static func f(_ v: Double) -> String { String(format: "%.1f", v) }
    private static func percent(_ v: Double, digits: Int? = nil) -> String {
        let p = v * 100
        let d = digits ?? (p >= 1 ? 0 : p >= 0.1 ? 1 : 2)
        return String(format: "%.\(d)f%%", p)
    }
    private static func seconds(_ s: Double) -> String { String(format: s < 10 ? "%.1f" : "%.0f", s) }
    private static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
