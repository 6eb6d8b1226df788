import NIOCore
import NIOEmbedded
import Testing
import Wire

/// The handlers of both ends, connected through `EmbeddedChannel`s: the handshake, messages in
/// both directions, and every violation answered by an error message and a closed connection.
@Suite("Session pipeline")
struct SessionPipelineTests {
    /// A coordinator and a worker pipeline after a completed handshake.
    private func connectedPair() throws -> (coordinator: EmbeddedChannel, coordinatorLog: PipelineRecorder, worker: EmbeddedChannel, workerLog: PipelineRecorder) {
        let (coordinator, coordinatorLog) = try makeChannel(role: .coordinator)
        let (worker, workerLog) = try makeChannel(role: .worker)
        try coordinator.writeOutbound(WireMessage.hello(Samples.hello))
        try pump(from: coordinator, to: worker)
        #expect(workerLog.messages == [.hello(Samples.hello)])
        try worker.writeOutbound(WireMessage.helloAck(Samples.ack))
        try pump(from: worker, to: coordinator)
        #expect(coordinatorLog.messages == [.helloAck(Samples.ack)])
        return (coordinator, coordinatorLog, worker, workerLog)
    }

    /// The one message `channel` sent, which must be an error report.
    private func sentErrorReport(_ channel: EmbeddedChannel) throws -> ErrorReport? {
        let messages = try decodeMessages(writtenBytes(channel))
        guard messages.count == 1, case .error(let report) = messages[0] else { return nil }
        return report
    }

    @Test("a whole session: handshake, data set, parameters, tasks, results, heartbeat, goodbye")
    func wholeSession() throws {
        let (coordinator, coordinatorLog, worker, workerLog) = try connectedPair()
        let toWorker = Samples.everyMessage().filter { $0.type.sender == .coordinator && $0.type != .hello }
        let toCoordinator = Samples.everyMessage().filter { $0.type.sender == .worker && $0.type != .helloAck }
        for message in toWorker { try coordinator.writeOutbound(message) }
        try coordinator.writeOutbound(WireMessage.ping(9))
        try pump(from: coordinator, to: worker)
        for message in toCoordinator { try worker.writeOutbound(message) }
        try worker.writeOutbound(WireMessage.pong(9))
        try pump(from: worker, to: coordinator)
        try coordinator.writeOutbound(WireMessage.goodbye(reason: "done"))
        try pump(from: coordinator, to: worker)

        #expect(Array(workerLog.messages.dropFirst()) == toWorker + [.ping(9), .goodbye(reason: "done")])
        #expect(Array(coordinatorLog.messages.dropFirst()) == toCoordinator + [.pong(9)])
        #expect(workerLog.errors.isEmpty && coordinatorLog.errors.isEmpty)
        #expect(worker.isActive && coordinator.isActive)
    }

    @Test("the worker pipeline fed one byte at a time decodes the same messages")
    func workerOneByteAtATime() throws {
        let (worker, workerLog) = try makeChannel(role: .worker)
        let coordinatorMessages = [WireMessage.hello(Samples.smallHello)]
            + Samples.everyMessage(signature: Samples.smallSignature, datasetSamples: 3)
                .filter { $0.type.sender == .coordinator && $0.type != .hello }
        var bytes = ByteBuffer()
        for message in coordinatorMessages {
            var frame = try frameBytes(message)
            bytes.writeBuffer(&frame)
        }
        var acknowledged = false
        for index in bytes.readerIndex..<bytes.writerIndex {
            try worker.writeInbound(bytes.getSlice(at: index, length: 1)!)
            if !acknowledged && !workerLog.messages.isEmpty {
                try worker.writeOutbound(WireMessage.helloAck(Samples.smallAck))
                acknowledged = true
            }
        }
        #expect(workerLog.messages == coordinatorMessages)
        #expect(workerLog.errors.isEmpty)
    }

    // MARK: Violations: error message to the peer, connection closed, error passed on

    private func expectRefusal(_ input: ByteBuffer, role: SessionRole = .worker, code: ErrorCode, limits: FrameLimits = .default) throws {
        let (channel, log) = try makeChannel(role: role, limits: limits)
        try channel.writeInbound(input)
        #expect(log.wireErrors.map(\.code) == [code])
        #expect(log.messages.isEmpty)
        let report = try #require(try sentErrorReport(channel))
        #expect(report.code == code)
        #expect(report.message == log.wireErrors.first?.description)
        #expect(!channel.isActive)
        // Later input is ignored: no second report, no message.
        _ = try? channel.writeInbound(try frameBytes(.ping(1)))
        #expect(log.messages.isEmpty && log.wireErrors.count == 1)
    }

    @Test("a wrong magic is refused with an error message and a closed connection")
    func wrongMagic() throws {
        try expectRefusal(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"), code: .badMagic)
    }

    @Test("an unknown version is refused")
    func unknownVersion() throws {
        var hello = try frameBytes(.hello(Samples.hello))
        hello.setInteger(WireProtocol.version &+ 1, at: 4)
        try expectRefusal(hello, code: .unsupportedVersion)
    }

    @Test("an unknown message type is refused")
    func unknownType() throws {
        try expectRefusal(rawFrame(type: 0x99, payload: [1, 2, 3]), code: .unknownMessageType)
    }

    @Test("a length over the limit is refused from the header, without waiting for the payload")
    func lengthOverLimit() throws {
        try expectRefusal(rawFrame(type: MessageType.dataset.rawValue, length: UInt32.max), code: .frameTooLarge)
        try expectRefusal(rawFrame(type: MessageType.ping.rawValue, length: 70_000), code: .frameTooLarge)
    }

    @Test("a connection closed in the middle of a frame is reported as truncated")
    func truncatedFrame() throws {
        let (channel, log) = try makeChannel(role: .worker)
        let hello = try frameBytes(.hello(Samples.hello))
        try channel.writeInbound(hello.getSlice(at: 0, length: 20)!)
        #expect(log.errors.isEmpty)
        try channel.close().wait()
        #expect(log.wireErrors == [.truncatedFrame(received: 20, expected: hello.readableBytes)])
    }

    @Test("a gradient whose length does not match the model is refused by the coordinator")
    func gradientOfWrongShape() throws {
        let (coordinator, coordinatorLog, _, _) = try connectedPair()
        // A hostile worker skips its own pipeline's checks.
        let wrong = WireMessage.gradient(GradientResult(
            step: 1, shardID: 0, sampleCount: 5, lossSum: 1, correctCount: 1, gradientSum: [Float](repeating: 1, count: 266_609)))
        try coordinator.writeInbound(try frameBytes(wrong))
        #expect(coordinatorLog.wireErrors.map(\.code) == [.shapeMismatch])
        #expect(try sentErrorReport(coordinator)?.message.contains("266609 floats") == true)
        #expect(!coordinator.isActive)
        #expect(coordinatorLog.messages.count == 1)  // only the helloAck
    }

    @Test("a compressed gradient declaring a size over the limit is refused before decompressing")
    func compressedOverLimit() throws {
        // A model whose gradient fits the frame limit but not the decompression limit of this coordinator.
        let limits = FrameLimits(maxDecompressedBytes: 1 << 20)
        let (coordinator, log) = try makeChannel(role: .coordinator, limits: limits)
        let hello = Hello(sessionID: 5, signature: ModelSignature(layerSizes: [4, 2]), coordinatorName: "c")
        try coordinator.writeOutbound(WireMessage.hello(hello))
        _ = try writtenBytes(coordinator)
        try coordinator.writeInbound(try frameBytes(.helloAck(HelloAck(answering: hello, workerName: "w", blasKernel: "k", threadCount: 1))))
        var payload = ByteBuffer()
        payload.writeMultipleIntegers(UInt64(1), UInt32(0), UInt32(1), endianness: .big)
        payload.writeInteger(Double(1).bitPattern, endianness: .big)
        payload.writeInteger(UInt32(1), endianness: .big)
        payload.writeInteger(UInt32(1), endianness: .big)   // shard count
        var floats = ByteBuffer()
        // One zstd frame for the whole array (the split encoding would be refused at its mask).
        try PayloadCodec(.init(floatEncoding: .shuffledZstd)).encodeFloats([Float](repeating: 0, count: 1 << 19), into: &floats)
        floats.setInteger(UInt32(10), at: floats.readerIndex, endianness: .big)  // count = the model's 10 parameters
        payload.writeBuffer(&floats)
        var frame = ByteBuffer()
        try FrameEncoder().encode(data: WireFrame(type: .gradient, payload: payload), out: &frame)
        try coordinator.writeInbound(frame)
        #expect(log.wireErrors.map(\.code) == [.decompressedSizeTooLarge])
        #expect(!coordinator.isActive)
    }

    // MARK: Handshake

    @Test("a worker refuses a model it cannot train, and both sides see why")
    func handshakeRefusedByWorker() throws {
        let (coordinator, coordinatorLog) = try makeChannel(role: .coordinator)
        let (worker, workerLog) = try makeChannel(role: .worker)
        let hello = Hello(sessionID: 1, signature: ModelSignature(layerSizes: [784, 10], scalar: .float64), coordinatorName: "c")
        try coordinator.writeOutbound(WireMessage.hello(hello))
        try pump(from: coordinator, to: worker)
        #expect(workerLog.wireErrors.map(\.code) == [.handshakeMismatch])
        #expect(!worker.isActive)
        try pump(from: worker, to: coordinator)
        guard case .error(let report)? = coordinatorLog.messages.first else {
            Issue.record("coordinator received \(coordinatorLog.messages)")
            return
        }
        #expect(report.code == .handshakeMismatch)
        #expect(report.message.contains("float32"))
        #expect(!coordinator.isActive)
    }

    @Test("a coordinator refuses a helloAck for another model or session")
    func handshakeRefusedByCoordinator() throws {
        for ack in [
            HelloAck(sessionID: Samples.hello.sessionID, signature: ModelSignature(layerSizes: [784, 30, 10]), workerName: "w", blasKernel: "k", threadCount: 1),
            HelloAck(sessionID: 77, signature: Samples.signature, workerName: "w", blasKernel: "k", threadCount: 1),
        ] {
            let (coordinator, log) = try makeChannel(role: .coordinator)
            try coordinator.writeOutbound(WireMessage.hello(Samples.hello))
            _ = try writtenBytes(coordinator)
            try coordinator.writeInbound(try frameBytes(.helloAck(ack)))
            #expect(log.wireErrors.map(\.code) == [.handshakeMismatch])
            #expect(try sentErrorReport(coordinator)?.code == .handshakeMismatch)
            #expect(!coordinator.isActive)
        }
    }

    @Test("messages before the handshake or in the wrong direction are refused")
    func outOfOrder() throws {
        let task = WireMessage.task(ShardTask(step: 0, shardID: 0, kind: .train, dataset: .train, samples: .range(start: 0, count: 10)))
        try expectRefusal(try frameBytes(task), role: .worker, code: .unexpectedMessage)
        try expectRefusal(try frameBytes(.ping(1)), role: .worker, code: .unexpectedMessage)
        try expectRefusal(try frameBytes(.hello(Samples.hello)), role: .coordinator, code: .unexpectedMessage)

        let (coordinator, coordinatorLog, worker, workerLog) = try connectedPair()
        try worker.writeInbound(try frameBytes(.evaluation(EvaluationResult(step: 0, shardID: 0, sampleCount: 1, lossSum: 0, correctCount: 0))))
        #expect(workerLog.wireErrors.map(\.code) == [.unexpectedMessage])
        try coordinator.writeInbound(try frameBytes(.helloAck(Samples.ack)))
        #expect(coordinatorLog.wireErrors.map(\.code) == [.unexpectedMessage])
    }

    @Test("a side refuses to send what its role may not send, without closing")
    func outboundChecks() throws {
        let (worker, _) = try makeChannel(role: .worker)
        #expect(throws: WireError.self) { try worker.writeOutbound(WireMessage.hello(Samples.hello)) }
        #expect(throws: WireError.self) { try worker.writeOutbound(WireMessage.ping(1)) }
        #expect(worker.isActive)
        let (coordinator, _, _, _) = try connectedPair()
        let wrong = WireMessage.parameters(ParameterUpdate(step: 1, values: [1, 2, 3]))
        let error = try #require(throws: WireError.self) { try coordinator.writeOutbound(wrong) }
        #expect(error.code == .shapeMismatch)
        #expect(coordinator.isActive)
    }
}
