import NIOCore

/// Where a coordinator or worker starts: installs the protocol's handlers on a new channel
/// (frame decoding and encoding, then the message layer with its payload codec, handshake and
/// shape checks) for the given role. After this the channel reads and writes ``WireMessage``s;
/// wrap it in an `NIOAsyncChannel<WireMessage, WireMessage>` and write the session as async code.
///
/// Same as `channel.pipeline.syncOperations.addWireHandlers(role:limits:compression:)`; call it
/// on the channel's event loop (in a `channelInitializer`).
public enum WirePipeline {
    public static func configure(
        _ channel: Channel, role: SessionRole, limits: FrameLimits = .default,
        compression: PayloadCodec.Configuration = .init()
    ) throws {
        try channel.pipeline.syncOperations.addWireHandlers(role: role, limits: limits, compression: compression)
    }
}
