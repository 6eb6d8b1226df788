import Engine
import Foundation
import NIOCore
import Training
import Wire

/// Compression of real gradients (the sum over one 1250-point shard, as a worker sends it) by
/// the wire's float codec: ratio and MB/s for each encoding and level.
enum CodecBenchmark {
    static func run(train: LabeledDataSet, net: Network<Float>, batch: [Int], repetitions: Int) throws {
        let shard = Array(batch.prefix(1250))
        let gradient = ShardResult.compute(net, on: train, indices: shard).gradient.flattened()
        let zeros = gradient.filter { $0 == 0 }.count
        let rawBytes = gradient.count * 4
        print(String(format: "codec: gradient of a 1250-point shard, %d floats (%d bytes), %.1f%% exact zeros",
                     gradient.count, rawBytes, 100 * Double(zeros) / Double(gradient.count)))
        let settings: [(String, FloatEncoding, Int32)] = [
            ("zstd level 1", .zstd, 1), ("shuffle + zstd level 1", .shuffledZstd, 1),
            ("shuffle + zstd level -1", .shuffledZstd, -1), ("shuffle + zstd level 3", .shuffledZstd, 3),
            ("split level 1", .splitZstd, 1), ("split level -1", .splitZstd, -1), ("split level 3", .splitZstd, 3),
        ]
        let parameters = net.flattened()
        for (name, encoding, level) in settings {
            let codec = PayloadCodec(.init(floatEncoding: encoding, level: CompressionLevel(level)))
            var encoded = ByteBuffer()
            let compress = median(repetitions) {
                encoded.clear()
                try! codec.encodeFloats(gradient, into: &encoded)
            }
            let size = encoded.readableBytes
            let decompress = median(repetitions) {
                var copy = encoded
                _ = try! codec.decodeFloats(from: &copy, expectedCount: gradient.count)
            }
            print(String(format: "codec: %-24@ %8d bytes, ratio %.3fx, compress %.0f MB/s, decompress %.0f MB/s",
                         name, size, Double(rawBytes) / Double(size),
                         Double(rawBytes) / compress / 1e6, Double(rawBytes) / decompress / 1e6))
        }
        // The parameters travel with the same codec (once per step and worker).
        for (name, encoding) in [("parameters, shuffle + zstd 1", FloatEncoding.shuffledZstd), ("parameters, split 1", .splitZstd)] {
            let codec = PayloadCodec(.init(floatEncoding: encoding))
            var encoded = ByteBuffer()
            let compress = median(repetitions) {
                encoded.clear()
                try! codec.encodeFloats(parameters, into: &encoded)
            }
            print(String(format: "codec: %-24@ %8d bytes, ratio %.3fx, compress %.0f MB/s",
                         name, encoded.readableBytes, Double(4 * parameters.count) / Double(encoded.readableBytes),
                         Double(4 * parameters.count) / compress / 1e6))
        }
    }
}
