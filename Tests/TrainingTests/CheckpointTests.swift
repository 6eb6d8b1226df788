import Foundation
import TestSupport
import Testing
@testable import Training

/// Checkpoint files: exact round trip, crash-safe writing, damaged files detected.
@Suite("Checkpoints")
struct CheckpointTests {
    static let fingerprint = RunFingerprint(
        layerSizes: [4, 3, 2], batchSize: 10, shardSize: 5, seed: 7, optimizer: .adam, learningRate: 0.01,
        schedule: .cosine, totalSteps: 100, trainingData: String(repeating: "ab", count: 32))

    /// A state with Adam moments, after a few real optimizer steps.
    static func state(step: Int) -> TrainingState {
        var generator = SeededGenerator(seed: UInt64(step))
        var parameters = (0..<23).map { _ in generator.uniform(Float(-1)...1) }
        var optimizer = Optimizer(kind: .adam, learningRate: 0.01)
        for _ in 0..<3 {
            optimizer.apply(gradient: (0..<23).map { _ in generator.uniform(Float(-1)...1) }, to: &parameters)
        }
        return TrainingState(parameters: parameters, optimizer: optimizer, epoch: 2, batchesDone: 3, step: step,
                             epochGenerator: generator, trainSeconds: 1.5, points: 40)
    }

    static func directory() throws -> CheckpointDirectory {
        try CheckpointDirectory(path: temporaryDirectory("checkpoints").appendingPathComponent("run").path)
    }

    @Test("a checkpoint reads back bit for bit: parameters, Adam moments and step, generator, position")
    func roundTrip() throws {
        let state = Self.state(step: 5)
        let bytes = CheckpointDirectory.encode(state, fingerprint: Self.fingerprint)
        let (back, fingerprint) = try CheckpointDirectory.decode(bytes, path: "x")
        #expect(back == state)
        #expect(fingerprint == Self.fingerprint)
        // The restored optimizer continues exactly like the original.
        var a = state, b = back
        let gradient = [Float](repeating: 0.25, count: 23)
        a.optimizer.apply(gradient: gradient, to: &a.parameters)
        b.optimizer.apply(gradient: gradient, to: &b.parameters)
        #expect(a.parameters.map(\.bitPattern) == b.parameters.map(\.bitPattern))
    }

    @Test("every damaged form is refused with a message naming the file", arguments: [
        ("truncated", 0), ("bit flip in the arrays", 1), ("bit flip in the header", 2), ("wrong magic", 3), ("empty", 4),
    ])
    func damaged(_ name: String, _ kind: Int) throws {
        var bytes = CheckpointDirectory.encode(Self.state(step: 5), fingerprint: Self.fingerprint)
        switch kind {
        case 0: bytes.removeLast(100)
        case 1: bytes[bytes.count - 40] ^= 1
        case 2: bytes[20] ^= 1
        case 3: bytes[0] = UInt8(ascii: "X")
        default: bytes = []
        }
        let error = #expect(throws: CheckpointError.self) { try CheckpointDirectory.decode(bytes, path: "/ck/f") }
        let text = "\(error!)"
        print("[TrainingTests] \(name): \(text)")
        #expect(text.hasPrefix("checkpoint /ck/f "))
        #expect(text.contains(kind >= 3 ? "is not a checkpoint" : "is damaged (checksum mismatch)"))
    }

    @Test("the newest intact checkpoint is found; damaged newer ones and leftover temporary files are skipped; old ones pruned")
    func newestGood() throws {
        var directory = try Self.directory()
        directory.keep = 3
        for step in [2, 4, 6, 8] { try directory.save(Self.state(step: step), fingerprint: Self.fingerprint) }
        #expect(directory.checkpointFiles().map(\.step) == [8, 6, 4], "only the 3 newest are kept")
        // A crash mid-write leaves a temporary file: never read.
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: directory.path + "/.checkpoint-000000010.bpckpt.tmp"))
        // The newest is damaged on disk.
        let newest = directory.path + "/checkpoint-000000008.bpckpt"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: newest)))
        bytes[bytes.count / 2] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: newest))
        let found = try #require(directory.newest())
        #expect(found.state == Self.state(step: 6))
        #expect(found.skipped.count == 1 && found.skipped[0].contains("checkpoint-000000008.bpckpt is damaged"))
    }

    @Test("an empty directory has no checkpoint")
    func empty() throws {
        #expect(try Self.directory().newest() == nil)
    }

    @Test("fingerprints name each difference")
    func differences() {
        var other = Self.fingerprint
        other.seed = 8
        other.batchSize = 11
        #expect(Self.fingerprint.differences(from: other) == ["batch size: 10 here, 11 in the checkpoint", "seed: 7 here, 8 in the checkpoint"])
        #expect(Self.fingerprint.differences(from: Self.fingerprint).isEmpty)
    }
}
