import Crypto
import Foundation

/// Everything a training run needs to go on from where it stopped, exactly: the parameters,
/// the optimizer's state, the random generator and the position in the run.
///
/// A run resumed from a checkpoint takes the same steps on the same batches with the same
/// arithmetic as the run that wrote it, so it ends with the same parameters bit for bit.
public struct TrainingState: Sendable, Equatable {
    /// The flat parameter vector (``Network/flattened()`` order).
    public var parameters: [Float]
    /// The optimizer with its moments and step count.
    public var optimizer: Optimizer
    /// The epoch in progress, from 1.
    public var epoch: Int
    /// Batches of `epoch` already trained on.
    public var batchesDone: Int
    /// Descent steps taken since the start of the run.
    public var step: Int
    /// The generator as it was before `epoch`'s shuffle: the shuffle is drawn again from it.
    public var epochGenerator: SeededGenerator
    /// Wall time of the training steps so far (seconds).
    public var trainSeconds: Double
    /// Points trained on so far.
    public var points: Int

    public init(parameters: [Float], optimizer: Optimizer, epoch: Int, batchesDone: Int, step: Int,
                epochGenerator: SeededGenerator, trainSeconds: Double = 0, points: Int = 0) {
        self.parameters = parameters
        self.optimizer = optimizer
        self.epoch = epoch
        self.batchesDone = batchesDone
        self.step = step
        self.epochGenerator = epochGenerator
        self.trainSeconds = trainSeconds
        self.points = points
    }
}

/// What a checkpoint must agree on with the run that resumes it: everything that changes the
/// arithmetic of the steps. A checkpoint of a different run is refused, naming the difference.
public struct RunFingerprint: Sendable, Equatable, Codable {
    public var layerSizes: [Int]
    public var batchSize: Int
    public var shardSize: Int
    public var seed: UInt64
    public var optimizer: OptimizerKind
    public var learningRate: Float
    public var schedule: LearningRateSchedule
    /// Steps the run takes in all (the cosine schedule depends on it).
    public var totalSteps: Int
    /// SHA-256 of the training set, as the wire protocol names it.
    public var trainingData: String

    public init(layerSizes: [Int], batchSize: Int, shardSize: Int, seed: UInt64, optimizer: OptimizerKind,
                learningRate: Float, schedule: LearningRateSchedule, totalSteps: Int, trainingData: String) {
        self.layerSizes = layerSizes
        self.batchSize = batchSize
        self.shardSize = shardSize
        self.seed = seed
        self.optimizer = optimizer
        self.learningRate = learningRate
        self.schedule = schedule
        self.totalSteps = totalSteps
        self.trainingData = trainingData
    }

    /// The fields that differ from `other`, as "name: ours vs theirs".
    public func differences(from other: RunFingerprint) -> [String] {
        var out: [String] = []
        func check<T: Equatable>(_ name: String, _ a: T, _ b: T) {
            if a != b { out.append("\(name): \(a) here, \(b) in the checkpoint") }
        }
        check("layer sizes", layerSizes, other.layerSizes)
        check("batch size", batchSize, other.batchSize)
        check("shard size", shardSize, other.shardSize)
        check("seed", seed, other.seed)
        check("optimizer", optimizer, other.optimizer)
        check("learning rate", learningRate, other.learningRate)
        check("schedule", schedule, other.schedule)
        check("total steps", totalSteps, other.totalSteps)
        check("training data sha256", trainingData, other.trainingData)
        return out
    }
}

/// The checkpoint files of a run directory (`--checkpoint-dir`): writing them crash-safely,
/// and finding the newest good one.
///
/// File layout (`checkpoint-<step>.bpckpt`, integers little-endian):
///
/// | bytes | field |
/// |---|---|
/// | 8 | magic `BPCKPT02` (ASCII) |
/// | 4 | length `h` of the header (UInt32) |
/// | h | header: JSON with the fingerprint, position, optimizer hyper-parameters, array lengths |
/// | 4·P | parameters (IEEE-754 Float32) |
/// | 4·M | optimizer first moment / velocity (M = 0 or P) |
/// | 4·V | optimizer second moment (V = 0 or P) |
/// | 32 | SHA-256 of every byte before it |
///
/// The arrays are in `Network.flattened()` order (weights by input). Checkpoints of the first
/// format (`BPCKPT01`) held each layer's weights by output; they are still read, their three
/// arrays reordered. A run resumed from one continues with this version's arithmetic, so it
/// does not end with the bits the older version would have reached.
///
/// A file is written to a temporary name in the same directory, flushed with `fsync`, renamed
/// into place, and the directory is `fsync`ed, so that after a crash at any point the
/// directory holds either the complete new file or none of it. The newest files are kept
/// (``keep``); older ones are deleted after a new one is in place.
public struct CheckpointDirectory: Sendable {
    /// The directory.
    public let path: String
    /// How many of the newest checkpoints stay on disk.
    public var keep = 3

    static let magic = Array("BPCKPT02".utf8)
    /// The first format's magic: weights by output.
    static let legacyMagic = Array("BPCKPT01".utf8)
    static let prefix = "checkpoint-"
    static let suffix = ".bpckpt"

    /// Uses `path`, creating it if needed.
    public init(path: String) throws {
        self.path = path
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw CheckpointError(path: path, problem: "cannot be created: \(error.localizedDescription)")
        }
        guard FileManager.default.isWritableFile(atPath: path) else {
            throw CheckpointError(path: path, problem: "is not writable")
        }
    }

    /// The header, as JSON.
    struct Header: Codable {
        var fingerprint: RunFingerprint
        var epoch: Int
        var batchesDone: Int
        var step: Int
        var generator: UInt64
        var trainSeconds: Double
        var points: Int
        var optimizerKind: OptimizerKind
        var learningRate: Float
        var beta1: Float
        var beta2: Float
        var epsilon: Float
        var optimizerStep: Int
        var parameterCount: Int
        var firstCount: Int
        var secondCount: Int
    }

    /// A checkpoint's bytes.
    public static func encode(_ state: TrainingState, fingerprint: RunFingerprint) -> [UInt8] {
        let o = state.optimizer
        let header = Header(
            fingerprint: fingerprint, epoch: state.epoch, batchesDone: state.batchesDone, step: state.step,
            generator: state.epochGenerator.state, trainSeconds: state.trainSeconds, points: state.points,
            optimizerKind: o.kind, learningRate: o.learningRate, beta1: o.beta1, beta2: o.beta2, epsilon: o.epsilon,
            optimizerStep: o.step, parameterCount: state.parameters.count, firstCount: o.first.count,
            secondCount: o.second.count)
        let json = Array(try! JSONEncoder().encode(header))
        var bytes = magic
        bytes.reserveCapacity(magic.count + 4 + json.count + 4 * (header.parameterCount * 3) + 32)
        ModelFile.append(UInt32(json.count), to: &bytes)
        bytes += json
        for array in [state.parameters, o.first, o.second] {
            array.withUnsafeBytes { bytes += $0 }  // little-endian on every platform Swift runs here
        }
        bytes += Array(SHA256.hash(data: bytes))
        return bytes
    }

    /// Parses a checkpoint's bytes; `path` only names the file in errors.
    public static func decode(_ bytes: [UInt8], path: String) throws -> (TrainingState, RunFingerprint) {
        func fail(_ problem: String) -> CheckpointError { CheckpointError(path: path, problem: problem) }
        let legacy = bytes.starts(with: legacyMagic)
        let body = try ModelFile.verifiedBody(
            bytes, magic: legacy ? legacyMagic : magic,
            notThisKind: "is not a checkpoint (no BPCKPT02 or BPCKPT01 header; a partial or foreign file)", fail)
        var offset = magic.count
        let length = Int(ModelFile.uint32(body, at: offset)!)  // verifiedBody: at least 4 bytes follow the magic
        offset += 4
        guard length <= body.count - offset else { throw fail("has a header longer than the file") }
        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: Data(body[offset..<(offset + length)]))
        } catch {
            throw fail("has an unreadable header: \(error)")
        }
        offset += length
        let counts = [header.parameterCount, header.firstCount, header.secondCount]
        guard counts.allSatisfy({ $0 >= 0 && $0 <= 1 << 28 }),
              body.count - offset == 4 * counts.reduce(0, +) else {
            throw fail("holds \(body.count - offset) bytes of arrays, the header declares \(counts)")
        }
        var arrays: [[Float]] = []
        for count in counts {
            var values = [Float](repeating: 0, count: count)
            values.withUnsafeMutableBytes { target in
                body[offset..<(offset + 4 * count)].withUnsafeBytes { target.copyMemory(from: $0) }
            }
            offset += 4 * count
            arrays.append(legacy ? ParameterOrder.byInput(fromByOutput: values, sizes: header.fingerprint.layerSizes) : values)
        }
        let optimizer = Optimizer(restoring: header.optimizerKind, learningRate: header.learningRate,
                                  beta1: header.beta1, beta2: header.beta2, epsilon: header.epsilon,
                                  step: header.optimizerStep, first: arrays[1], second: arrays[2])
        let state = TrainingState(parameters: arrays[0], optimizer: optimizer, epoch: header.epoch,
                                  batchesDone: header.batchesDone, step: header.step,
                                  epochGenerator: SeededGenerator(seed: header.generator),
                                  trainSeconds: header.trainSeconds, points: header.points)
        return (state, header.fingerprint)
    }

    /// Writes `state` as the checkpoint of its step, crash-safely; returns the file's path.
    @discardableResult
    public func save(_ state: TrainingState, fingerprint: RunFingerprint) throws -> String {
        let name = Self.prefix + String(format: "%09d", state.step) + Self.suffix
        let final = path + "/" + name
        let temporary = path + "/." + name + ".tmp"
        let bytes = Self.encode(state, fingerprint: fingerprint)
        func fail(_ what: String) -> CheckpointError {
            CheckpointError(path: final, problem: "cannot be written: \(what): \(String(cString: strerror(errno)))")
        }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw fail("open") }
        var written = 0
        let ok = bytes.withUnsafeBytes { raw -> Bool in
            while written < raw.count {
                let n = write(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 { if errno == EINTR { continue }; return false }
                written += n
            }
            return true
        }
        guard ok, fsync(fd) == 0 else {
            let error = fail("write")
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, final) == 0 else {
            let error = fail("rename")
            unlink(temporary)
            throw error
        }
        let directory = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 {
            fsync(directory)
            close(directory)
        }
        for old in checkpointFiles().dropFirst(keep) { unlink(old.path) }
        return final
    }

    /// The checkpoint files, newest (highest step) first.
    public func checkpointFiles() -> [(step: Int, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.compactMap { name -> (Int, String)? in
            guard name.hasPrefix(Self.prefix), name.hasSuffix(Self.suffix),
                  let step = Int(name.dropFirst(Self.prefix.count).dropLast(Self.suffix.count)) else { return nil }
            return (step, path + "/" + name)
        }.sorted { $0.0 > $1.0 }
    }

    /// The newest checkpoint that reads back intact, with the problems of any newer ones that
    /// did not (each a message naming the file); nil when there is none.
    public func newest() -> (state: TrainingState, fingerprint: RunFingerprint, path: String, skipped: [String])? {
        var skipped: [String] = []
        for file in checkpointFiles() {
            do {
                guard let data = FileManager.default.contents(atPath: file.path) else {
                    throw CheckpointError(path: file.path, problem: "cannot be read")
                }
                let (state, fingerprint) = try Self.decode([UInt8](data), path: file.path)
                return (state, fingerprint, file.path, skipped)
            } catch {
                skipped.append("\(error)")
            }
        }
        return nil
    }
}

/// A checkpoint that could not be written or read, naming the file and the problem.
public struct CheckpointError: Error, CustomStringConvertible {
    public var path: String
    public var problem: String
    public var description: String { "checkpoint \(path) \(problem)" }
}
