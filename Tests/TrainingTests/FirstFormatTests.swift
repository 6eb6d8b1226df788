import Crypto
import Engine
import Foundation
import Testing
@testable import Training

/// Files written before `Layer` stored its weights by input (model files `BPMODEL1`,
/// checkpoints `BPCKPT01`) hold each layer's weights by output; they must still load, as the
/// same network.
@Suite("Files of the first format")
struct FirstFormatTests {
    static let sizes = [5, 4, 3]

    /// `net`'s parameters in the first format's order: per layer, weights by output, then biases.
    static func byOutput(_ net: Network<Float>) -> [Float] {
        var flat: [Float] = []
        for layer in net.layers {
            for o in 0..<layer.outputs {
                for j in 0..<layer.inputs { flat.append(layer.weights[j, o]) }
            }
            flat += layer.biases.scalars
        }
        return flat
    }

    /// `body` behind `magic`, with the SHA-256 trailer.
    static func sealed(_ magic: String, _ body: [UInt8]) -> [UInt8] {
        let bytes = Array(magic.utf8) + body
        return bytes + Array(SHA256.hash(data: bytes))
    }

    static func littleEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 24)]
    }

    @Test("a BPMODEL1 model file loads as the same network, each layer's weights transposed")
    func modelFile() throws {
        var rng = SeededGenerator(seed: 3)
        let net = Network<Float>(sizes: Self.sizes, using: &rng)
        var body = Self.littleEndian(UInt32(Self.sizes.count))
        for s in Self.sizes { body += Self.littleEndian(UInt32(s)) }
        for value in Self.byOutput(net) { body += Self.littleEndian(value.bitPattern) }
        let loaded = try ModelFile.decode(Self.sealed("BPMODEL1", body), path: "old.model")
        #expect(loaded == net)
        // The current format writes the weights by input, and reads them back as they were.
        let current = ModelFile.encode(net)
        #expect(Array(current.prefix(8)) == Array("BPMODEL2".utf8))
        #expect(try ModelFile.decode(current) == net)
        #expect(current != Self.sealed("BPMODEL2", body), "the two formats differ in the weights' order")
    }

    @Test("a BPCKPT01 checkpoint loads with its parameters and Adam moments reordered")
    func checkpoint() throws {
        var rng = SeededGenerator(seed: 5)
        let net = Network<Float>(sizes: Self.sizes, using: &rng)
        let first = Network<Float>(sizes: Self.sizes, using: &rng), second = Network<Float>(sizes: Self.sizes, using: &rng)
        let fingerprint = RunFingerprint(
            layerSizes: Self.sizes, batchSize: 10, shardSize: 5, seed: 7, optimizer: .adam, learningRate: 0.01,
            schedule: .constant, totalSteps: 100, trainingData: String(repeating: "cd", count: 32))
        func state(_ p: [Float], _ m: [Float], _ v: [Float]) -> TrainingState {
            TrainingState(parameters: p,
                          optimizer: Optimizer(restoring: .adam, learningRate: 0.01, beta1: 0.9, beta2: 0.999,
                                               epsilon: 1e-8, step: 4, first: m, second: v),
                          epoch: 1, batchesDone: 4, step: 4, epochGenerator: SeededGenerator(seed: 9))
        }
        let expected = state(net.flattened(), first.flattened(), second.flattened())
        // The first format's bytes: today's encoding of the arrays in the old order, under the old magic.
        let encoded = CheckpointDirectory.encode(state(Self.byOutput(net), Self.byOutput(first), Self.byOutput(second)),
                                                 fingerprint: fingerprint)
        #expect(Array(encoded.prefix(8)) == Array("BPCKPT02".utf8))
        let old = Self.sealed("BPCKPT01", Array(encoded[8..<(encoded.count - 32)]))
        let (loaded, loadedFingerprint) = try CheckpointDirectory.decode(old, path: "old.bpckpt")
        #expect(loaded == expected)
        #expect(loadedFingerprint == fingerprint)
    }
}
