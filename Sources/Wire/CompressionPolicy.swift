/// When a side compresses the float arrays it sends (parameters, gradients): the sender
/// chooses per connection, and a receiver decodes whatever encoding a payload names.
///
/// Compression pays only when the link is slower than the compressor: on this model's
/// gradients, byte shuffle + zstd level 1 saves about 28% of the bytes at about 200 MB/s of one
/// core, so it shortens a transfer only on links slower than about 450 Mbit/s, and on loopback
/// it costs the CPU the workers need for gradients (BENCHMARKS.md). Data sets are compressed in
/// every case (they are sent once).
public enum CompressionPolicy: String, Sendable, CaseIterable {
    /// Raw floats to a peer on the same machine (loopback), byte shuffle + zstd to others.
    case auto
    /// Byte shuffle + zstd to every peer.
    case zstd
    /// Raw floats to every peer.
    case none

    /// The codec configuration for a connection to a peer that is, or is not, on loopback.
    public func configuration(peerIsLoopback: Bool) -> PayloadCodec.Configuration {
        switch self {
        case .zstd: return PayloadCodec.Configuration(floatEncoding: .shuffledZstd)
        case .none: return PayloadCodec.Configuration(floatEncoding: .raw)
        case .auto: return PayloadCodec.Configuration(floatEncoding: peerIsLoopback ? .raw : .shuffledZstd)
        }
    }
}
