import Foundation
import NIOCore
import TestSupport
import Testing
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// A peer that completes the handshake and then sends what no coordinator would: each time
/// the worker answers with an error frame naming the problem, closes that connection, and
/// goes on serving.
@Suite("Worker against a hostile session", .oneProcessTestAtATime)
struct HostileSessionTests {
    static let signature = ModelSignature(layerSizes: [784, 20, 10])

    /// The bytes of `message` as one frame.
    static func frame(_ message: WireMessage) throws -> [UInt8] {
        var payload = ByteBuffer()
        try message.encode(into: &payload, codec: PayloadCodec(), signature: nil)
        var out = ByteBuffer()
        try FrameEncoder().encode(data: WireFrame(type: message.type, payload: payload), out: &out)
        return Array(out.readableBytesView)
    }

    static let hello = WireMessage.hello(Hello(sessionID: 42, signature: signature, coordinatorName: "hostile"))

    /// A header announcing a payload of `length` bytes, with no payload after it.
    static func header(_ type: MessageType, length: UInt32) -> [UInt8] {
        var out = ByteBuffer()
        FrameHeader(type: type, payloadLength: length).write(to: &out)
        return Array(out.readableBytesView)
    }

    /// What follows the hello, and a word of the error it must get.
    static let cases: [(String, @Sendable () throws -> [UInt8], String)] = [
        ("a header announcing a 4 GB parameters frame",
         { header(.parameters, length: 0xFFFF_FFF0) }, "over the limit"),
        ("parameters of the wrong size for the model",
         { try frame(.parameters(ParameterUpdate(step: 1, values: [1, 2, 3, 4, 5]))) }, "5"),
        ("a task before any parameters",
         { try frame(.task(ShardTask(step: 1, shardID: 0, kind: .train, dataset: .train, samples: .range(start: 0, count: 3)))) },
         "before any parameters"),
        ("a second hello",
         { try frame(hello) }, "hello"),
        ("a data set whose samples are not the model's inputs",
         { try frame(.dataset(DatasetTransfer(kind: .train, featureCount: 100, classCount: 10,
                                              images: [UInt8](repeating: 1, count: 300), labels: [0, 1, 2]))) },
         "784 values per sample"),
        ("a data set with more classes than the model's outputs",
         { try frame(.dataset(DatasetTransfer(kind: .train, featureCount: 784, classCount: 12,
                                              images: [UInt8](repeating: 1, count: 784), labels: [11]))) },
         "at most 10 classes"),
        ("a task two steps past the parameters (only the next step's tasks may come ahead)",
         { try frame(.parameters(ParameterUpdate(step: 1, values: [Float](repeating: 0, count: signature.parameterCount))))
             + frame(.task(ShardTask(step: 3, shardID: 0, kind: .train, dataset: .train, samples: .range(start: 0, count: 3)))) },
         "parameters are for step 1"),
        ("an evaluation task ahead of its parameters",
         { try frame(.parameters(ParameterUpdate(step: 1, values: [Float](repeating: 0, count: signature.parameterCount))))
             + frame(.task(ShardTask(step: 2, shardID: 0, kind: .evaluate, dataset: .test, samples: .range(start: 0, count: 3)))) },
         "parameters are for step 1"),
        ("parameters naming a shared-memory slot in a session that agreed on no shared memory",
         {
             var payload = ByteBuffer()
             payload.writeInteger(UInt64(1))
             payload.writeInteger(UInt32(signature.parameterCount))
             payload.writeInteger(UInt8(4))     // encoding: shared slot
             payload.writeInteger(UInt32(4))
             payload.writeInteger(UInt32(0))    // slot 0
             var out = ByteBuffer()
             try FrameEncoder().encode(data: WireFrame(type: .parameters, payload: payload), out: &out)
             return Array(out.readableBytesView)
         }, "maps no shared region"),
        ("a worker's message sent to a worker",
         { try frame(.gradient(GradientResult(step: 1, shardID: 0, sampleCount: 1, lossSum: 0, correctCount: 0, gradientSum: []))) },
         "gradient"),
    ]

    @Test("each hostile session gets an error frame naming the problem and is closed; the worker then serves a real coordinator")
    func hostileSessions() async throws {
        let (_, workerPath) = try Products.require()
        let worker = try BackgroundWorker(executable: workerPath)
        defer { worker.stop() }
        for (name, bytes, expected) in Self.cases {
            // The hello, then (once the worker has answered it) the hostile frame.
            let result = try RawConnection.sendAndAwaitClose(port: worker.port, bytes: try Self.frame(Self.hello),
                                                             afterReply: try bytes(), timeout: 10)
            let text = String(decoding: result.received.map { (32...126).contains($0) ? $0 : UInt8(ascii: ".") }, as: UTF8.self)
            print("[DistributedTests] \(name): \(result.closed ? "closed" : "OPEN") after \(String(format: "%.2f", result.seconds)) s; answer: \(text)")
            #expect(result.closed, "\(name): the worker kept the connection open (\(result.detail))")
            #expect(text.contains("helloAck") || result.received.count > 12, "\(name): no handshake answer before the error")
            #expect(text.localizedCaseInsensitiveContains(expected), "\(name): the error does not say '\(expected)': \(text)")
            #expect(worker.process.isRunning, "\(name): the worker exited:\n\(worker.stderr)")
        }
        let outcome = try await TinyRun.coordinator(["--workers", "127.0.0.1:\(worker.port)", "--max-steps", "1"])
        #expect(outcome.status == 0 && !outcome.timedOut, "\(outcome)\n--- worker stderr ---\n\(worker.stderr)")
    }

    @Test("a session that goes silent after the handshake is ended at --idle-timeout, and the worker serves the next")
    func silentSession() async throws {
        let (_, workerPath) = try Products.require()
        let worker = try BackgroundWorker(executable: workerPath, arguments: ["--idle-timeout", "1"])
        defer { worker.stop() }
        let result = try RawConnection.sendAndAwaitClose(port: worker.port, bytes: try Self.frame(Self.hello), timeout: 10)
        print("[DistributedTests] silent session \(result.closed ? "ended" : "still open") after \(String(format: "%.2f", result.seconds)) s")
        #expect(result.closed && result.seconds >= 0.9 && result.seconds < 5, "\(result.detail), \(result.seconds) s")
        #expect(result.received.count > 12, "no helloAck before the silence")
        let outcome = try await TinyRun.coordinator(["--workers", "127.0.0.1:\(worker.port)", "--max-steps", "1"])
        #expect(outcome.status == 0 && !outcome.timedOut, "\(outcome)\n--- worker stderr ---\n\(worker.stderr)")
        #expect(worker.stderr.contains("ending the session"), "\(worker.stderr)")
    }

    @Test("a damaged data file stops the coordinator with an error naming the file, before any worker is started")
    func damagedDataFile() async throws {
        let directory = try temporaryDirectory("damaged-data")
        for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
            let source = Products.mnistDirectory + "/" + name
            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: source)))
            if name.hasPrefix("t10k-labels") { bytes.removeLast(bytes.count / 2) }  // cut short, as by a failed download
            try Data(bytes).write(to: directory.appendingPathComponent(name))
        }
        let outcome = try await TinyRun.coordinator(["--local", "1", "--data", directory.path], timeout: 60)
        #expect(outcome.status != 0 && !outcome.timedOut, "\(outcome)")
        #expect(outcome.output.contains("t10k-labels-idx1-ubyte.gz"), "the error does not name the damaged file:\n\(outcome)")
        #expect(!outcome.stdout.contains("starting"), "workers were started for data that cannot be used:\n\(outcome)")
    }
}
