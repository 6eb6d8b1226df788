import NIOCore

/// Where a coordinator or worker starts: installs the protocol's handlers on a new channel
/// for the given role, and is the one place that decides how the connection is protected.
/// After this the channel reads and writes ``WireMessage``s; wrap it in an
/// `NIOAsyncChannel<WireMessage, WireMessage>` and write the session as async code.
///
/// The pipeline, from the socket inwards: ``LingeringCloseHandler`` (after an error frame, the
/// close waits for the peer to read it), ``FrameReadSizer`` (a frame is read as its header,
/// then its whole payload in one buffer), ``FrameDeadlineHandler`` (a started frame must be
/// complete within ``WireDeadlines/frame``), ``FrameEncoder`` / ``FrameDecoder`` (framing),
/// ``FrameSecurityHandler`` (with a secret: mutual authentication, then every frame sealed;
/// without: plain frames, authenticating peers refused), ``WireMessageHandler`` (messages,
/// direction, handshake, shape checks; and with `sharedMemory` on, the shared payload region
/// of a peer on this host, ``SharedPayloadRegion``).
///
/// Same as `channel.pipeline.syncOperations.addWireHandlers(role:limits:compression:security:deadlines:sharedMemory:)`;
/// call it on the channel's event loop (in a `channelInitializer`).
public enum WirePipeline {
    public static func configure(
        _ channel: Channel, role: SessionRole, limits: FrameLimits = .default,
        compression: PayloadCodec.Configuration = .init(), security: WireSecurity = .none,
        deadlines: WireDeadlines = .default, sharedMemory: SharedMemoryPolicy = .off
    ) throws {
        try channel.pipeline.syncOperations.addWireHandlers(
            role: role, limits: limits, compression: compression, security: security, deadlines: deadlines,
            sharedMemory: sharedMemory)
    }
}
