import NIOCore

/// Asks the ``LingeringCloseHandler`` of a channel to close gracefully: sent (as an outbound
/// user event) by ``WireMessageHandler`` whenever it writes an `error` frame.
public struct LingerOnClose: Sendable, Hashable {
    public init() {}
}

/// Makes sure a peer can read our last words: once an `error` frame has been written, closing
/// the connection sends its FIN after that frame (`shutdown(SHUT_WR)`) and reads and drops
/// whatever the peer still sends, until the peer closes its side or ``linger`` has passed;
/// only then is the socket closed.
///
/// A socket closed while it holds unread bytes, or that receives some afterwards, answers with
/// a reset instead of a FIN, and a peer that was still writing (a coordinator sending a data
/// set, or the next ping) may then see "connection reset" and close without ever reading the
/// refusal that explains it (an NIO channel closes on the failed write and drops what it had
/// not read). Connections closed without an error frame (a goodbye, a silent peer's deadline)
/// close at once, as before. Web servers do the same for the same reason ("lingering close").
///
/// It sits first in the pipeline, next to the socket; ``WirePipeline`` installs it.
public final class LingeringCloseHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    /// How long to wait for the peer's side to close once ours is shut.
    public let linger: TimeAmount
    /// An error frame was written: the next full close lingers.
    private var armed = false
    /// Our side is shut; waiting for the peer's, or for the timer.
    private var lingering = false
    private var timer: Scheduled<Void>?
    private var pending: [EventLoopPromise<Void>] = []

    public init(linger: TimeAmount = .seconds(2)) {
        self.linger = linger
    }

    public func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if event is LingerOnClose {
            armed = true
            promise?.succeed(())
            return
        }
        context.triggerUserOutboundEvent(event, promise: promise)
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .all, armed || lingering, context.channel.isActive else {
            context.close(mode: mode, promise: promise)
            return
        }
        if let promise { pending.append(promise) }
        guard !lingering else { return }  // already closing: completes with the first close
        lingering = true
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: linger) { [self] in
            timer = nil
            finish(context: context)
        }
        // Pending writes (the error frame) go out first, then the FIN.
        context.close(mode: .output).assumeIsolated().whenFailure { [self] _ in finish(context: context) }
        // Whoever read before (the session, with backpressure) reads no more: read for the drain.
        context.read()
    }

    /// Closes the socket for good (the peer has closed its side, or the wait is over).
    private func finish(context: ChannelHandlerContext) {
        let closed = context.eventLoop.makePromise(of: Void.self)
        for promise in stopWaiting() { closed.futureResult.cascade(to: promise) }
        context.close(mode: .all, promise: closed)
    }

    /// Cancels the timer and hands over the close promises still waiting.
    private func stopWaiting() -> [EventLoopPromise<Void>] {
        timer?.cancel()
        timer = nil
        defer { pending = [] }
        return pending
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if lingering { return }  // read and dropped: it keeps the socket from answering with a reset
        context.fireChannelRead(data)
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        if lingering {
            context.read()
            return
        }
        context.fireChannelReadComplete()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if lingering, let event = event as? ChannelEvent, event == .inputClosed {
            finish(context: context)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        for promise in stopWaiting() { promise.succeed(()) }
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }
}

@available(*, unavailable)
extension LingeringCloseHandler: Sendable {}
