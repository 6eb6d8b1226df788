import NIOCore

// The byte layout of every payload; docs/PROTOCOL.md lists the same fields. Integers are
// big-endian, Doubles are big-endian bit patterns, strings are UInt16 length + UTF-8, float
// arrays are float payloads (PayloadCodec).

extension WireMessage {
    /// This message's payload (not the frame header), in a buffer from `allocator`; as
    /// ``encode(into:codec:signature:)``. A `parameters` message's payload is encoded once per
    /// ``ParameterUpdate`` and returned shared, not copied, to every connection it is written to.
    public func payload(codec: PayloadCodec, signature: ModelSignature? = nil,
                        allocator: ByteBufferAllocator = ByteBufferAllocator()) throws -> ByteBuffer {
        if case .parameters(let update) = self {
            return try Self.parametersPayload(update, codec: codec, signature: signature)
        }
        var buffer = allocator.buffer(capacity: estimatedPayloadSize)
        try encode(into: &buffer, codec: codec, signature: signature)
        return buffer
    }

    /// This message's payload with its floats written into a free slot of `region` (a
    /// coordinator's parameters, a worker's gradient), or nil when the message carries no
    /// floats of that side or every slot is still held (then send ``payload(codec:signature:allocator:)``).
    func sharedPayload(in region: SharedPayloadRegion, role: SessionRole, signature: ModelSignature?,
                       allocator: ByteBufferAllocator) throws -> ByteBuffer? {
        switch (role, self) {
        case (.coordinator, .parameters(let update)):
            let values = update.parameterValues
            if let signature { try checkCount(values.count, signature, "parameters of step \(update.step)") }
            guard let slot = values.withUnsafeBufferPointer({ region.write($0, into: .parameters) }) else { return nil }
            var buffer = allocator.buffer(capacity: 32)
            buffer.writeInteger(update.step, endianness: .big)
            PayloadCodec.writeSharedSlot(count: values.count, index: slot, into: &buffer)
            return buffer
        case (.worker, .gradient(let result)):
            let values = result.gradientValues
            if let signature { try checkCount(values.count, signature, "gradient of shard \(result.shardID)") }
            var buffer = allocator.buffer(capacity: 64)
            try writeResultHeader(result.step, result.shardID, result.sampleCount, result.lossSum, result.correctCount, into: &buffer)
            try writeShardCount(result, into: &buffer)
            guard values.count == region.parameterCount,
                  let slot = region.write(into: .gradients, { values.write(into: $0) }) else { return nil }
            PayloadCodec.writeSharedSlot(count: values.count, index: slot, into: &buffer)
            return buffer
        default:
            return nil
        }
    }

    /// A first capacity for the payload's buffer: enough for most messages without growing.
    private var estimatedPayloadSize: Int {
        switch self {
        case .gradient(let result): return 4 * result.gradientValues.count + 64
        case .task(let task): return 4 * task.samples.count + 64
        case .dataset(let transfer): return transfer.images.count / 4 + transfer.labels.count + 64
        default: return 256
        }
    }

    /// A parameters message's payload (the step, then the float payload), from the update's
    /// cache after the first time.
    private static func parametersPayload(_ update: ParameterUpdate, codec: PayloadCodec,
                                          signature: ModelSignature?) throws -> ByteBuffer {
        let values = update.parameterValues
        if let signature { try checkCount(values.count, signature, "parameters of step \(update.step)") }
        return try update.encoded.bytes(for: codec.configuration) {
            var bytes = ByteBuffer()
            bytes.reserveCapacity(8 + 4 * values.count + 64)
            bytes.writeInteger(update.step, endianness: .big)
            try values.withUnsafeBufferPointer { try codec.encodeFloats($0, into: &bytes) }
            return bytes
        }
    }

    /// Appends this message's payload (not the frame header) to `buffer`, compressing float
    /// arrays and data sets with `codec`. When `signature` is given, parameters and gradients
    /// must have its parameter count. Throws ``WireError`` when a value does not fit its field.
    public func encode(into buffer: inout ByteBuffer, codec: PayloadCodec, signature: ModelSignature? = nil) throws {
        switch self {
        case .hello(let hello):
            buffer.writeInteger(hello.protocolVersion)
            buffer.writeInteger(hello.sessionID, endianness: .big)
            try writeSignature(hello.signature, into: &buffer)
            try buffer.writeWireString(hello.coordinatorName, "coordinator name")
            try writeExtensions(hello.extensions, into: &buffer)
        case .helloAck(let ack):
            buffer.writeInteger(ack.protocolVersion)
            buffer.writeInteger(ack.sessionID, endianness: .big)
            try writeSignature(ack.signature, into: &buffer)
            try buffer.writeWireString(ack.workerName, "worker name")
            try buffer.writeWireString(ack.blasKernel, "BLAS kernel")
            buffer.writeInteger(try uint16(ack.threadCount, "thread count"), endianness: .big)
            try writeExtensions(ack.extensions, into: &buffer)
        case .datasetOffer(let descriptor):
            try writeDescriptor(descriptor, into: &buffer)
        case .datasetStatus(let status):
            buffer.writeMultipleIntegers(status.kind.rawValue, status.state.rawValue)
            buffer.writeBytes(status.digest.bytes)
        case .dataset(let transfer):
            try writeDataset(transfer, into: &buffer, codec: codec)
        case .parameters(let update):
            var payload = try Self.parametersPayload(update, codec: codec, signature: signature)
            buffer.writeBuffer(&payload)
        case .task(let task):
            buffer.writeInteger(task.step, endianness: .big)
            buffer.writeInteger(task.shardID, endianness: .big)
            buffer.writeMultipleIntegers(task.kind.rawValue, task.dataset.rawValue)
            switch task.samples {
            case .indices(let indices):
                guard !indices.isEmpty, indices.count <= Int(UInt32.max) else {
                    throw WireError.encoding("a task needs 1...\(UInt32.max) indices, has \(indices.count)")
                }
                buffer.writeInteger(SelectionTag.indices.rawValue)
                buffer.writeInteger(UInt32(indices.count), endianness: .big)
                buffer.reserveCapacity(minimumWritableBytes: 4 * indices.count)
                for index in indices { buffer.writeInteger(index, endianness: .big) }
            case .range(let start, let count):
                let end = start.addingReportingOverflow(count)
                guard start >= 0, count >= 1, !end.overflow, end.partialValue <= Int(UInt32.max) + 1 else {
                    throw WireError.encoding("sample range of \(count) from \(start) is empty or beyond UInt32")
                }
                buffer.writeInteger(SelectionTag.range.rawValue)
                buffer.writeMultipleIntegers(UInt32(start), UInt32(count), endianness: .big)
            }
        case .gradient(let result):
            if let signature { try checkCount(result.gradientValues.count, signature, "gradient of shard \(result.shardID)") }
            try writeResultHeader(result.step, result.shardID, result.sampleCount, result.lossSum, result.correctCount, into: &buffer)
            try writeShardCount(result, into: &buffer)
            try result.gradientValues.withUnsafeBufferPointer { try codec.encodeFloats($0, into: &buffer) }
        case .evaluation(let result):
            try writeResultHeader(result.step, result.shardID, result.sampleCount, result.lossSum, result.correctCount, into: &buffer)
        case .ping(let nonce), .pong(let nonce):
            buffer.writeInteger(nonce, endianness: .big)
        case .goodbye(let reason):
            buffer.writeTruncatedWireString(reason)
        case .error(let report):
            // Frozen in every version: code, then the text.
            buffer.writeInteger(report.code.rawValue, endianness: .big)
            buffer.writeTruncatedWireString(report.message)
        }
    }

    /// Parses the payload of a frame of `type`. Never traps: every length and count is checked
    /// against the bytes that remain and against `limits` before anything is allocated,
    /// enumerations and ranges are checked, trailing bytes are refused, compressed payloads are
    /// checked as ``PayloadCodec`` describes, data sets against their SHA-256. When `signature`
    /// is given, parameters and gradients must have its parameter count (checked before
    /// decompressing).
    public static func decode(
        type: MessageType, payload: ByteBuffer, codec: PayloadCodec, limits: FrameLimits = .default,
        signature: ModelSignature? = nil, shared: SharedPayloadRegion? = nil
    ) throws -> WireMessage {
        var reader = PayloadReader(payload, type: type)
        let message: WireMessage
        switch type {
        case .authChallenge, .authResponse, .authConfirm:
            throw WireError.unexpectedMessage(type, "authentication frames are handled by the security layer, not as messages")
        case .hello:
            let version = try reader.readInteger(UInt8.self, "protocol version")
            let session = try reader.readInteger(UInt64.self, "session id")
            let model = try readSignature(&reader)
            let name = try reader.readString("coordinator name")
            let extensions = try readExtensions(&reader)
            message = .hello(Hello(protocolVersion: version, sessionID: session, signature: model, coordinatorName: name, extensions: extensions))
        case .helloAck:
            let version = try reader.readInteger(UInt8.self, "protocol version")
            let session = try reader.readInteger(UInt64.self, "session id")
            let model = try readSignature(&reader)
            let name = try reader.readString("worker name")
            let kernel = try reader.readString("BLAS kernel")
            let threads = Int(try reader.readInteger(UInt16.self, "thread count"))
            let extensions = try readExtensions(&reader)
            message = .helloAck(HelloAck(
                protocolVersion: version, sessionID: session, signature: model, workerName: name, blasKernel: kernel,
                threadCount: threads, extensions: extensions))
        case .datasetOffer:
            message = .datasetOffer(try readDescriptor(&reader, limits: limits))
        case .datasetStatus:
            let kind = try reader.readEnum(DatasetKind.self, "data set kind")
            let state = try reader.readEnum(DatasetStatus.State.self, "data set state")
            let digest = try readDigest(&reader)
            message = .datasetStatus(DatasetStatus(kind: kind, digest: digest, state: state))
        case .dataset:
            message = .dataset(try readDataset(&reader, codec: codec, limits: limits))
        case .parameters:
            let step = try reader.readInteger(UInt64.self, "step")
            let values = try codec.readFloatValues(
                &reader, expectedCount: signature?.parameterCount, limits: limits,
                what: "parameters of step \(step)\(signature.map { " for \($0)" } ?? "")",
                shared: shared.map { ($0, .parameters) })
            message = .parameters(ParameterUpdate(step: step, parameterValues: values))
        case .task:
            message = .task(try readTask(&reader, limits: limits))
        case .gradient:
            let header = try readResultHeader(&reader)
            let shards = try reader.readInteger(UInt32.self, "shard count")
            guard shards >= 1, UInt64(header.shard) + UInt64(shards) <= UInt64(UInt32.max) + 1 else {
                throw reader.malformed("a gradient of \(shards) shards from shard \(header.shard)")
            }
            let values = try codec.readFloatValues(
                &reader, expectedCount: signature?.parameterCount, limits: limits,
                what: "gradient of shard \(header.shard) (step \(header.step))\(signature.map { " for \($0)" } ?? "")",
                shared: shared.map { ($0, .gradients) })
            message = .gradient(GradientResult(
                step: header.step, shardID: header.shard, shardCount: shards, sampleCount: header.samples, lossSum: header.loss,
                correctCount: header.correct, gradientValues: values))
        case .evaluation:
            let header = try readResultHeader(&reader)
            message = .evaluation(EvaluationResult(
                step: header.step, shardID: header.shard, sampleCount: header.samples, lossSum: header.loss,
                correctCount: header.correct))
        case .ping:
            message = .ping(try reader.readInteger(UInt64.self, "nonce"))
        case .pong:
            message = .pong(try reader.readInteger(UInt64.self, "nonce"))
        case .goodbye:
            message = .goodbye(reason: try reader.readString("reason", lossy: true))
        case .error:
            let code = ErrorCode(rawValue: try reader.readInteger(UInt16.self, "error code"))
            message = .error(ErrorReport(code: code, message: try reader.readString("error message", lossy: true)))
        }
        try reader.finish()
        return message
    }
}

// MARK: - Fields

private enum SelectionTag: UInt8 {
    case indices = 1
    case range = 2
}

private func uint32(_ value: Int, _ field: String) throws -> UInt32 {
    guard let narrow = UInt32(exactly: value) else { throw WireError.encoding("\(field) \(value) is outside 0...\(UInt32.max)") }
    return narrow
}

private func uint16(_ value: Int, _ field: String) throws -> UInt16 {
    guard let narrow = UInt16(exactly: value) else { throw WireError.encoding("\(field) \(value) is outside 0...\(UInt16.max)") }
    return narrow
}

private func checkCount(_ count: Int, _ signature: ModelSignature, _ what: String) throws {
    guard count == signature.parameterCount else {
        throw WireError.shapeMismatch(
            "\(what) for \(signature)", expected: "\(signature.parameterCount) floats", actual: "\(count) floats")
    }
}

// Model signature: scalar UInt8, layer count UInt16, sizes UInt32 each.

private func writeSignature(_ signature: ModelSignature, into buffer: inout ByteBuffer) throws {
    guard signature.layerSizes.count <= WireLimits.maxLayers else {
        throw WireError.encoding("\(signature.layerSizes.count) layers, over the limit of \(WireLimits.maxLayers)")
    }
    buffer.writeInteger(signature.scalar.rawValue)
    buffer.writeInteger(UInt16(signature.layerSizes.count), endianness: .big)
    for size in signature.layerSizes { buffer.writeInteger(try uint32(size, "layer size"), endianness: .big) }
}

private func readSignature(_ reader: inout PayloadReader) throws -> ModelSignature {
    let scalar = try reader.readEnum(ModelSignature.Scalar.self, "scalar type")
    let layerCount = Int(try reader.readInteger(UInt16.self, "layer count"))
    guard layerCount <= WireLimits.maxLayers else {
        throw reader.malformed("\(layerCount) layers, over the limit of \(WireLimits.maxLayers)")
    }
    var sizes: [Int] = []
    sizes.reserveCapacity(layerCount)
    for index in 0..<layerCount {
        let size = Int(try reader.readInteger(UInt32.self, "size of layer \(index)"))
        guard size <= WireLimits.maxLayerSize else {
            throw reader.malformed("layer \(index) has \(size) neurons, over the limit of \(WireLimits.maxLayerSize)")
        }
        sizes.append(size)
    }
    return ModelSignature(layerSizes: sizes, scalar: scalar)
}

// Extensions: count UInt8, then per extension tag UInt16, length UInt16, bytes.

private func writeExtensions(_ extensions: [WireExtension], into buffer: inout ByteBuffer) throws {
    guard extensions.count <= WireLimits.maxExtensions else {
        throw WireError.encoding("\(extensions.count) extensions, over the limit of \(WireLimits.maxExtensions)")
    }
    buffer.writeInteger(UInt8(extensions.count))
    for item in extensions {
        guard item.value.count <= WireLimits.maxExtensionBytes else {
            throw WireError.encoding("extension \(item.tag) of \(item.value.count) bytes, over the limit of \(WireLimits.maxExtensionBytes)")
        }
        buffer.writeMultipleIntegers(item.tag, UInt16(item.value.count), endianness: .big)
        buffer.writeBytes(item.value)
    }
}

private func readExtensions(_ reader: inout PayloadReader) throws -> [WireExtension] {
    let count = Int(try reader.readInteger(UInt8.self, "extension count"))
    guard count <= WireLimits.maxExtensions else {
        throw reader.malformed("\(count) extensions, over the limit of \(WireLimits.maxExtensions)")
    }
    var extensions: [WireExtension] = []
    for index in 0..<count {
        let tag = try reader.readInteger(UInt16.self, "tag of extension \(index)")
        let length = Int(try reader.readInteger(UInt16.self, "length of extension \(index)"))
        guard length <= WireLimits.maxExtensionBytes else {
            throw reader.malformed("extension \(tag) of \(length) bytes, over the limit of \(WireLimits.maxExtensionBytes)")
        }
        extensions.append(WireExtension(tag: tag, value: try reader.readBytes(count: length, "value of extension \(tag)")))
    }
    return extensions
}

// Data sets. Descriptor: kind UInt8, format UInt8, class count UInt16, sample count UInt32,
// feature count UInt32, digest 32 bytes. Transfer: descriptor, compressed length UInt32, one
// zstd frame of images then labels.

private func writeDescriptor(_ descriptor: DatasetDescriptor, into buffer: inout ByteBuffer) throws {
    buffer.writeMultipleIntegers(descriptor.kind.rawValue, descriptor.format.rawValue)
    buffer.writeInteger(try uint16(descriptor.classCount, "class count"), endianness: .big)
    buffer.writeMultipleIntegers(
        try uint32(descriptor.sampleCount, "sample count"), try uint32(descriptor.featureCount, "feature count"),
        endianness: .big)
    buffer.writeBytes(descriptor.digest.bytes)
}

private func readDigest(_ reader: inout PayloadReader) throws -> DatasetDigest {
    // 32 bytes read, so the initializer cannot fail.
    DatasetDigest(bytes: try reader.readBytes(count: DatasetDigest.byteCount, "SHA-256"))!
}

private func readDescriptor(_ reader: inout PayloadReader, limits: FrameLimits) throws -> DatasetDescriptor {
    let kind = try reader.readEnum(DatasetKind.self, "data set kind")
    let format = try reader.readEnum(SampleFormat.self, "sample format")
    let classes = Int(try reader.readInteger(UInt16.self, "class count"))
    let samples = Int(try reader.readInteger(UInt32.self, "sample count"))
    let features = Int(try reader.readInteger(UInt32.self, "feature count"))
    let digest = try readDigest(&reader)
    guard (1...256).contains(classes) else { throw reader.malformed("class count \(classes) must be 1...256 (labels are bytes)") }
    let descriptor = DatasetDescriptor(
        kind: kind, digest: digest, sampleCount: samples, featureCount: features, classCount: classes, format: format)
    guard let total = descriptor.uncompressedByteCount, total <= limits.maxDecompressedBytes else {
        throw WireError.decompressedSizeTooLarge(
            "\(kind) data set of \(samples) samples x \(features) features",
            declared: descriptor.uncompressedByteCount.map(UInt64.init) ?? .max, limit: limits.maxDecompressedBytes)
    }
    return descriptor
}

private func writeDataset(_ transfer: DatasetTransfer, into buffer: inout ByteBuffer, codec: PayloadCodec) throws {
    let descriptor = transfer.descriptor
    guard let imageBytes = descriptor.imageByteCount, transfer.images.count == imageBytes else {
        throw WireError.shapeMismatch(
            "\(descriptor.kind) images", expected: "\(descriptor.sampleCount) x \(descriptor.featureCount) x \(descriptor.format.byteCount) bytes",
            actual: "\(transfer.images.count) bytes")
    }
    guard transfer.labels.count == descriptor.sampleCount else {
        throw WireError.shapeMismatch(
            "\(descriptor.kind) labels", expected: "\(descriptor.sampleCount) bytes", actual: "\(transfer.labels.count) bytes")
    }
    try writeDescriptor(descriptor, into: &buffer)
    let lengthIndex = buffer.writerIndex
    buffer.writeInteger(UInt32(0), endianness: .big)
    let written = try transfer.images.withUnsafeBytes { images in
        try transfer.labels.withUnsafeBytes { labels in
            try codec.compress(parts: [images, labels], into: &buffer)
        }
    }
    guard let length = UInt32(exactly: written) else {
        throw WireError.encoding("\(descriptor.kind) data set compresses to \(written) bytes, over UInt32")
    }
    buffer.setInteger(length, at: lengthIndex, endianness: .big)
}

private func readDataset(_ reader: inout PayloadReader, codec: PayloadCodec, limits: FrameLimits) throws -> DatasetTransfer {
    let descriptor = try readDescriptor(&reader, limits: limits)
    let length = Int(try reader.readInteger(UInt32.self, "compressed length"))
    let compressed = try reader.readSlice(length: length, "compressed data set")
    // Both non-nil and within the limit: readDescriptor checked them.
    let imageBytes = descriptor.imageByteCount!
    let total = descriptor.uncompressedByteCount!
    var images = try compressed.withUnsafeReadableBytes { source in
        try codec.decompressBytes(
            source, expectedSize: total, limit: limits.maxDecompressedBytes,
            what: "\(descriptor.kind) data set", type: .dataset)
    }
    let actual = images.withUnsafeBytes { DatasetDigest(hashing: $0) }
    guard actual == descriptor.digest else {
        throw WireError.digestMismatch(expected: descriptor.digest.description, actual: actual.description)
    }
    let labels = Array(images[imageBytes...])
    images.removeSubrange(imageBytes...)
    if let bad = labels.firstIndex(where: { Int($0) >= descriptor.classCount }) {
        throw reader.malformed("label \(labels[bad]) of sample \(bad) is not below the class count \(descriptor.classCount)")
    }
    return DatasetTransfer(descriptor: descriptor, images: images, labels: labels)
}

// Tasks: step UInt64, shard UInt32, kind UInt8, data set UInt8, selection tag UInt8, then
// (tag 1) count UInt32 and that many UInt32 indices, or (tag 2) start UInt32, count UInt32.

private func readTask(_ reader: inout PayloadReader, limits: FrameLimits) throws -> ShardTask {
    let step = try reader.readInteger(UInt64.self, "step")
    let shard = try reader.readInteger(UInt32.self, "shard id")
    let kind = try reader.readEnum(TaskKind.self, "task kind")
    let dataset = try reader.readEnum(DatasetKind.self, "data set kind")
    let selection: SampleSelection
    switch try reader.readEnum(SelectionTag.self, "sample selection") {
    case .indices:
        let count = try reader.readCount("sample indices", elementSize: 4, limit: limits.maxTaskSamples)
        guard count > 0 else { throw reader.malformed("a task with no samples") }
        var indices = [UInt32]()
        indices.reserveCapacity(count)
        for index in 0..<count { indices.append(try reader.readInteger(UInt32.self, "sample index \(index)")) }
        selection = .indices(indices)
    case .range:
        let start = Int(try reader.readInteger(UInt32.self, "range start"))
        let count = Int(try reader.readInteger(UInt32.self, "range count"))
        guard count > 0 else { throw reader.malformed("a task with no samples") }
        guard count <= limits.maxTaskSamples else {
            throw reader.malformed("range of \(count) samples, over the limit of \(limits.maxTaskSamples)")
        }
        guard start + count <= Int(UInt32.max) + 1 else { throw reader.malformed("range \(start)..<\(start + count) beyond UInt32") }
        selection = .range(start: start, count: count)
    }
    return ShardTask(step: step, shardID: shard, kind: kind, dataset: dataset, samples: selection)
}

// Results: step UInt64, shard UInt32, sample count UInt32, loss sum Double, correct count UInt32.

private func writeResultHeader(
    _ step: UInt64, _ shard: UInt32, _ samples: Int, _ loss: Double, _ correct: Int, into buffer: inout ByteBuffer
) throws {
    guard correct <= samples else { throw WireError.encoding("\(correct) correct out of \(samples) samples") }
    buffer.writeInteger(step, endianness: .big)
    buffer.writeMultipleIntegers(shard, try uint32(samples, "sample count"), endianness: .big)
    buffer.writeDouble(loss)
    buffer.writeInteger(try uint32(correct, "correct count"), endianness: .big)
}

/// A gradient's shard count, after its result header (protocol version 6).
private func writeShardCount(_ result: GradientResult, into buffer: inout ByteBuffer) throws {
    guard result.shardCount >= 1, UInt64(result.shardID) + UInt64(result.shardCount) <= UInt64(UInt32.max) + 1 else {
        throw WireError.encoding("a gradient of \(result.shardCount) shards from shard \(result.shardID)")
    }
    buffer.writeInteger(result.shardCount, endianness: .big)
}

private func readResultHeader(_ reader: inout PayloadReader) throws -> (step: UInt64, shard: UInt32, samples: Int, loss: Double, correct: Int) {
    let step = try reader.readInteger(UInt64.self, "step")
    let shard = try reader.readInteger(UInt32.self, "shard id")
    let samples = Int(try reader.readInteger(UInt32.self, "sample count"))
    let loss = try reader.readDouble("loss sum")
    let correct = Int(try reader.readInteger(UInt32.self, "correct count"))
    guard correct <= samples else { throw reader.malformed("\(correct) correct out of \(samples) samples") }
    return (step, shard, samples, loss, correct)
}
