/// When a side compresses the float arrays it sends (parameters, gradients): the sender
/// chooses per connection, and a receiver decodes whatever encoding a payload names.
///
/// Compression pays only when the link is slower than the compressor: on this model's
/// gradients, the split encoding (``FloatEncoding/splitZstd``) saves about 33% of the bytes at
/// about 500 MB/s of one core, so it shortens a transfer only on links slower than about
/// 1.5 Gbit/s, and on loopback it costs the CPU the workers need for gradients (BENCHMARKS.md).
/// Data sets are compressed in every case (they are sent once).
public enum CompressionPolicy: String, Sendable, CaseIterable {
    /// Raw floats to a peer on the same machine (loopback), the split encoding to others.
    case auto
    /// The split encoding (zero mask and high bytes through zstd) to every peer.
    case zstd
    /// Raw floats to every peer.
    case none

    /// The codec configuration for a connection to a peer that is, or is not, on loopback.
    public func configuration(peerIsLoopback: Bool) -> PayloadCodec.Configuration {
        switch self {
        case .zstd: return PayloadCodec.Configuration(floatEncoding: .splitZstd)
        case .none: return PayloadCodec.Configuration(floatEncoding: .raw)
        case .auto: return PayloadCodec.Configuration(floatEncoding: peerIsLoopback ? .raw : .splitZstd)
        }
    }
}
