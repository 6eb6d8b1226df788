import Foundation
import Engine
import Crypto

/// The binary file a trained network is saved in (`--model-out`), read back by
/// `backprop-mnist --evaluate`. Layout, all integers little-endian:
///
/// | bytes | field |
/// |---|---|
/// | 8 | magic `BPMODEL2` (ASCII) |
/// | 4 | number of layer sizes `n` (UInt32) |
/// | 4·n | layer sizes, inputs first (UInt32 each) |
/// | 4·P | parameters as IEEE-754 Float32, per layer weights (row-major, inputs x outputs: `Layer`'s layout) then biases |
/// | 32 | SHA-256 of every byte before it |
///
/// `P` must equal the parameter count the sizes imply; anything else is rejected with an error
/// naming the file. Files of the first format (`BPMODEL1`, written before `Layer` stored its
/// weights by input) differ only in holding each layer's weights by output (outputs x inputs);
/// they are still read, their weights transposed on loading.
public enum ModelFile {
    static let magic = Array("BPMODEL2".utf8)
    /// The first format's magic: weights by output.
    static let legacyMagic = Array("BPMODEL1".utf8)

    /// The file's bytes for a network.
    public static func encode(_ network: Network<Float>) -> [UInt8] {
        var bytes = magic
        let sizes = network.sizes
        append(UInt32(sizes.count), to: &bytes)
        for s in sizes { append(UInt32(s), to: &bytes) }
        for value in network.flattened() { append(value.bitPattern, to: &bytes) }
        bytes += Array(SHA256.hash(data: bytes))
        return bytes
    }

    /// Writes `network` to `path` (through a temporary file and a rename).
    public static func save(_ network: Network<Float>, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp")
        do {
            try Data(encode(network)).write(to: temporary)
        } catch {
            throw ModelFileError(path: path, problem: "cannot be written: \(error.localizedDescription)")
        }
        guard rename(temporary.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: temporary)
            throw ModelFileError(path: path, problem: "cannot be written: \(reason)")
        }
    }

    /// Reads a network saved by `save`.
    public static func load(from path: String) throws -> Network<Float> {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelFileError(path: path, problem: "cannot be read (missing or not permitted)")
        }
        return try decode([UInt8](data), path: path)
    }

    /// Parses a model file's bytes; `path` only names the file in errors.
    public static func decode(_ bytes: [UInt8], path: String = "model") throws -> Network<Float> {
        func fail(_ problem: String) -> ModelFileError { ModelFileError(path: path, problem: problem) }
        let legacy = bytes.starts(with: legacyMagic)
        let body = try verifiedBody(bytes, magic: legacy ? legacyMagic : magic,
                                    notThisKind: "is not a model file (no BPMODEL2 or BPMODEL1 header)", fail)
        var offset = magic.count
        func u32() -> UInt32? {
            defer { offset += 4 }
            return uint32(body, at: offset)
        }
        guard let n = u32(), n >= 2, n <= 64 else { throw fail("has an invalid number of layers") }
        var sizes = [Int]()
        for _ in 0..<n {
            guard let s = u32(), s > 0, s <= 1 << 20 else { throw fail("has an invalid layer size") }
            sizes.append(Int(s))
        }
        let count = zip(sizes, sizes.dropFirst()).reduce(0) { $0 + $1.0 * $1.1 + $1.1 }
        guard body.count - offset == 4 * count else {
            throw fail("holds \((body.count - offset) / 4) parameters, sizes \(sizes) need \(count)")
        }
        var flat = [Float]()
        flat.reserveCapacity(count)
        for _ in 0..<count { flat.append(Float(bitPattern: u32()!)) }
        if legacy { flat = ParameterOrder.byInput(fromByOutput: flat, sizes: sizes) }
        return flat.withUnsafeBufferPointer { Network(sizes: sizes, flattened: $0) }
    }

    static func append(_ value: UInt32, to bytes: inout [UInt8]) {
        bytes += [UInt8(value & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 24)]
    }

    /// The little-endian UInt32 at `offset` of `bytes`, or nil past their end.
    static func uint32(_ bytes: ArraySlice<UInt8>, at offset: Int) -> UInt32? {
        guard offset >= bytes.startIndex, offset + 4 <= bytes.endIndex else { return nil }
        return UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16
            | UInt32(bytes[offset + 3]) << 24
    }

    /// `bytes` without the SHA-256 that ends them, once they are known to start with `magic`,
    /// to hold at least a 4-byte field, and to match that checksum: the frame of model files
    /// and checkpoints. Otherwise throws `fail(notThisKind)` or `fail("is damaged (checksum mismatch)")`.
    static func verifiedBody<E: Error>(_ bytes: [UInt8], magic: [UInt8], notThisKind: String,
                                       _ fail: (String) -> E) throws -> ArraySlice<UInt8> {
        guard bytes.count >= magic.count + 4 + 32, Array(bytes.prefix(magic.count)) == magic else {
            throw fail(notThisKind)
        }
        let body = bytes[..<(bytes.count - 32)]
        guard Array(SHA256.hash(data: Array(body))) == Array(bytes.suffix(32)) else {
            throw fail("is damaged (checksum mismatch)")
        }
        return body
    }
}

/// A model file that could not be read, naming the file and the problem.
public struct ModelFileError: Error, CustomStringConvertible {
    public var path: String
    public var problem: String
    public var description: String { "\(path): \(problem)" }
}

/// The flat parameter order of files written before `Layer` stored its weights by input
/// (model files `BPMODEL1`, checkpoints `BPCKPT01`): per layer, the weights by output
/// (outputs x inputs, row-major), then the biases.
enum ParameterOrder {
    /// `flat` in that order, as the current order (`Network.flattened()`): each layer's
    /// weights transposed, the biases where they were. Arrays of another length (an empty
    /// optimizer moment) are returned as they are.
    static func byInput(fromByOutput flat: [Float], sizes: [Int]) -> [Float] {
        let expected = zip(sizes, sizes.dropFirst()).reduce(0) { $0 + $1.0 * $1.1 + $1.1 }
        guard flat.count == expected else { return flat }
        var out = flat
        var offset = 0
        for (inputs, outputs) in zip(sizes, sizes.dropFirst()) {
            for o in 0..<outputs {
                for j in 0..<inputs { out[offset + j * outputs + o] = flat[offset + o * inputs + j] }
            }
            offset += inputs * outputs + outputs
        }
        return out
    }
}
