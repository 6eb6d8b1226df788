import NIOCore

/// Installs the protocol's handlers on a new channel: frame decoding and encoding, then the
/// message layer (payload codec, handshake checks) for the given role. After this the channel
/// reads and writes `WireMessage`s; wrap it in an `NIOAsyncChannel<WireMessage, WireMessage>`.
public enum WirePipeline {
    public static func configure(_ channel: Channel, role: SessionRole, limits: FrameLimits = .default,
                                 compression: PayloadCodec.Configuration = .init()) throws {
        try channel.pipeline.syncOperations.addHandlers([
            ByteToMessageHandler(FrameDecoder(limits: limits)),
            MessageToByteHandler(FrameEncoder(limits: limits)),
            WireMessageHandler(role: role, limits: limits, compression: compression),
        ])
    }
}
