import NIOCore
import Testing
import Wire

@Suite("Messages")
struct MessageTests {
    @Test("every message survives encode then decode", arguments: Samples.everyMessage())
    func roundTrip(message: WireMessage) throws {
        let codec = PayloadCodec()
        var payload = ByteBuffer()
        try message.encode(into: &payload, codec: codec, signature: Samples.signature)
        let decoded = try WireMessage.decode(type: message.type, payload: payload, codec: codec, signature: Samples.signature)
        #expect(decoded == message)
    }

    @Test("the hello's shard size: its bytes, a round trip, and nil when absent, malformed or zero (unknown tags ignored)")
    func helloShardSize() throws {
        #expect(WireExtension.shardSize(1250) == WireExtension(tag: 1, value: [0, 0, 0x04, 0xE2]))
        let hello = Hello(sessionID: 5, signature: Samples.signature, coordinatorName: "c",
                          extensions: [WireExtension(tag: 7, value: [9]), .shardSize(1250)])
        var payload = ByteBuffer()
        try WireMessage.hello(hello).encode(into: &payload, codec: PayloadCodec(), signature: Samples.signature)
        let decoded = try WireMessage.decode(type: .hello, payload: payload, codec: PayloadCodec(), signature: Samples.signature)
        guard case .hello(let back) = decoded else { Issue.record("decoded \(decoded)"); return }
        #expect(back.shardSize == 1250)
        func size(_ extensions: [WireExtension]) -> Int? {
            Hello(sessionID: 5, signature: Samples.signature, coordinatorName: "c", extensions: extensions).shardSize
        }
        #expect(size([]) == nil)
        #expect(size([WireExtension(tag: 1, value: [4, 0xE2])]) == nil, "a 2-byte value is malformed")
        #expect(size([.shardSize(0)]) == nil)
        #expect(size([WireExtension(tag: 1, value: [1, 2, 3, 4, 5]), .shardSize(7)]) == 7, "the first well-formed one counts")
    }

    @Test("every float encoding round-trips parameters and gradients", arguments: FloatEncoding.allCases)
    func roundTripEncodings(encoding: FloatEncoding) throws {
        let codec = PayloadCodec(.init(floatEncoding: encoding))
        let message = WireMessage.gradient(GradientResult(
            step: 1, shardID: 0, sampleCount: 10, lossSum: 2.5, correctCount: 3,
            gradientSum: gradientLikeValues(count: Samples.signature.parameterCount)))
        var payload = ByteBuffer()
        try message.encode(into: &payload, codec: codec)
        #expect(try WireMessage.decode(type: .gradient, payload: payload, codec: PayloadCodec(), signature: Samples.signature) == message)
    }

    @Test("raw gradients and parameters are read in place from the frame's bytes when aligned for Float, else from a copy; same values",
          arguments: ["gradient", "parameters"])
    func rawFloatsReadInPlace(kind: String) throws {
        let values = gradientLikeValues(count: Samples.signature.parameterCount)
        let message: WireMessage = kind == "gradient"
            ? .gradient(GradientResult(step: 4, shardID: 2, sampleCount: 10, lossSum: 2.5, correctCount: 3, gradientSum: values))
            : .parameters(ParameterUpdate(step: 4, values: values))
        var inPlace = 0
        // The floats end the payload; shifting its start moves them across every alignment.
        for shift in 0..<4 {
            var payload = ByteBuffer()
            payload.writeRepeatingByte(0xEE, count: shift)
            try message.encode(into: &payload, codec: PayloadCodec(.init(floatEncoding: .raw)))
            payload.moveReaderIndex(forwardBy: shift)
            let decoded = try WireMessage.decode(type: message.type, payload: payload, codec: PayloadCodec(), signature: Samples.signature)
            let received: WireFloats
            switch decoded {
            case .gradient(let g):
                received = g.gradientValues
                #expect(g.gradientSum == values, "shift \(shift)")
                #expect(g.isFinite)
            case .parameters(let p):
                received = p.parameterValues
                #expect(p.values == values, "shift \(shift)")
            default:
                Issue.record("decoded \(decoded)")
                return
            }
            let floats = payload.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) + UInt($0.count - 4 * values.count) }
            let read = received.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
            if floats % UInt(MemoryLayout<Float>.alignment) == 0 {
                #expect(read == floats, "aligned floats (shift \(shift)) were copied out of the frame")
                inPlace += 1
            } else {
                #expect(read != floats, "misaligned floats (shift \(shift)) were read in place")
            }
            #expect(received.count == values.count)
            #expect(received.withUnsafeBufferPointer { Array($0) } == values, "shift \(shift)")
            // Equal to, and hashed like, the same message held as an array, either way round.
            #expect(decoded == message && message == decoded, "shift \(shift)")
            #expect(Set([message]).contains(decoded), "shift \(shift)")
            #expect(received == WireFloats(values) && Set([WireFloats(values)]).contains(received))
        }
        #expect(inPlace == 1, "one shift in four aligns the floats")
    }

    @Test("a gradient is finite unless an entry (in the 8-lane part or the tail) or the loss is NaN or infinite")
    func gradientFiniteness() {
        func result(_ values: [Float], loss: Double = 1) -> GradientResult {
            GradientResult(step: 1, shardID: 0, sampleCount: 1, lossSum: loss, correctCount: 0, gradientSum: values)
        }
        let extremes: [Float] = [.greatestFiniteMagnitude, -.greatestFiniteMagnitude, .leastNonzeroMagnitude, -0.0, 0]
        let base = (0..<37).map { extremes[$0 % extremes.count] }
        #expect(result(base).isFinite)
        #expect(result([]).isFinite)
        #expect(!result(base, loss: .nan).isFinite)
        for position in [0, 7, 8, 31, 32, 36] {
            for bad: Float in [.nan, .infinity, -.infinity, .signalingNaN] {
                var values = base
                values[position] = bad
                #expect(!result(values).isFinite, "entry \(position) = \(bad)")
            }
        }
    }

    @Test("a gradient whose length does not match the model is refused before decompressing")
    func gradientOfWrongShape() throws {
        let codec = PayloadCodec()
        let message = WireMessage.gradient(GradientResult(
            step: 1, shardID: 5, sampleCount: 10, lossSum: 1, correctCount: 1, gradientSum: [Float](repeating: 0.5, count: 1000)))
        var payload = ByteBuffer()
        try message.encode(into: &payload, codec: codec)
        let error = try #require(throws: WireError.self) {
            try WireMessage.decode(type: .gradient, payload: payload, codec: codec, signature: Samples.signature)
        }
        #expect(error.code == .shapeMismatch)
        #expect(error.description.contains("266610 floats") && error.description.contains("1000 floats"))
        #expect(error.description.contains("784-300-100-10"))

        // Sending one is refused as well.
        #expect(throws: WireError.self) { try message.encode(into: &payload, codec: codec, signature: Samples.signature) }
    }

    @Test("a data set whose bytes do not hash to the announced SHA-256 is refused")
    func datasetDigestMismatch() throws {
        var transfer = Samples.dataset()
        transfer.descriptor.digest = DatasetDigest(bytes: Array(repeating: 0xAB, count: 32))!
        var payload = ByteBuffer()
        try WireMessage.dataset(transfer).encode(into: &payload, codec: PayloadCodec())
        let error = try #require(throws: WireError.self) {
            try WireMessage.decode(type: .dataset, payload: payload, codec: PayloadCodec())
        }
        #expect(error.code == .digestMismatch)
        #expect(error.description.contains(String(repeating: "ab", count: 32)))
    }

    @Test("a data set with a label beyond its class count is refused")
    func datasetBadLabel() throws {
        var images = Samples.dataset().images
        images[0] = 1
        let transfer = DatasetTransfer(kind: .train, featureCount: 784, classCount: 10, images: images, labels: [UInt8](repeating: 3, count: 49) + [10])
        var payload = ByteBuffer()
        try WireMessage.dataset(transfer).encode(into: &payload, codec: PayloadCodec())
        let error = try #require(throws: WireError.self) {
            try WireMessage.decode(type: .dataset, payload: payload, codec: PayloadCodec())
        }
        #expect(error.code == .malformedPayload)
        #expect(error.description.contains("label 10 of sample 49"))
    }

    @Test("a data set declaring more bytes than allowed is refused from its descriptor")
    func datasetOverLimit() throws {
        let transfer = Samples.dataset()
        var payload = ByteBuffer()
        try WireMessage.dataset(transfer).encode(into: &payload, codec: PayloadCodec())
        let limits = FrameLimits(maxDecompressedBytes: 1000)
        let error = try #require(throws: WireError.self) {
            try WireMessage.decode(type: .dataset, payload: payload, codec: PayloadCodec(), limits: limits)
        }
        #expect(error.code == .decompressedSizeTooLarge)
        // A descriptor with sizes whose product overflows is refused the same way.
        var offer = ByteBuffer()
        offer.writeMultipleIntegers(DatasetKind.train.rawValue, SampleFormat.float32.rawValue, UInt16(10), UInt32.max, UInt32.max, endianness: .big)
        offer.writeBytes([UInt8](repeating: 0, count: 32))
        #expect(throws: WireError.self) { try WireMessage.decode(type: .datasetOffer, payload: offer, codec: PayloadCodec()) }
    }

    @Test("payloads cut short, padded, or with bad enumerations are refused with the field named")
    func malformedPayloads() throws {
        let codec = PayloadCodec()
        var payload = ByteBuffer()
        try WireMessage.task(ShardTask(step: 1, shardID: 2, kind: .train, dataset: .train, samples: .indices([1, 2, 3]))).encode(into: &payload, codec: codec)

        let cut = payload.getSlice(at: 0, length: payload.readableBytes - 1)!
        let shortError = try #require(throws: WireError.self) { try WireMessage.decode(type: .task, payload: cut, codec: codec) }
        #expect(shortError.code == .malformedPayload)
        #expect(shortError.description.contains("sample indices"))

        var padded = payload
        padded.writeInteger(UInt8(0))
        let padError = try #require(throws: WireError.self) { try WireMessage.decode(type: .task, payload: padded, codec: codec) }
        #expect(padError.description.contains("1 unexpected bytes"))

        var badKind = payload
        badKind.setInteger(UInt8(9), at: badKind.readerIndex + 12)
        let kindError = try #require(throws: WireError.self) { try WireMessage.decode(type: .task, payload: badKind, codec: codec) }
        #expect(kindError.description.contains("unknown task kind 9"))

        // A count far beyond the bytes present: refused before reserving anything.
        var hugeCount = payload
        hugeCount.setInteger(UInt32(1_000_000), at: hugeCount.readerIndex + 15, endianness: .big)
        let countError = try #require(throws: WireError.self) { try WireMessage.decode(type: .task, payload: hugeCount, codec: codec) }
        #expect(countError.description.contains("4000000 bytes"))
    }

    @Test("any mutation of a valid payload is refused or decoded, never a trap")
    func mutatedPayloadsNeverTrap() throws {
        let codec = PayloadCodec()
        var rng = SeededGenerator(seed: 99)
        let limits = FrameLimits(maxDecompressedBytes: 4 << 20)
        let messages = Samples.everyMessage(signature: Samples.smallSignature, datasetSamples: 3)
        var outcomes = (decoded: 0, refused: 0)
        for message in messages {
            var payload = ByteBuffer()
            try message.encode(into: &payload, codec: codec)
            let bytes = Array(payload.readableBytesView)
            for _ in 0..<400 {
                var mutated = bytes
                switch Int.random(in: 0..<4, using: &rng) {
                case 0 where !mutated.isEmpty:
                    mutated[Int.random(in: 0..<mutated.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
                case 1 where !mutated.isEmpty:
                    mutated.removeLast(Int.random(in: 1...mutated.count, using: &rng))
                case 2:
                    mutated.append(contentsOf: (0..<Int.random(in: 1...8, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
                default:
                    let at = Int.random(in: 0..<max(1, mutated.count - 3), using: &rng)
                    if mutated.count >= at + 4 { for k in 0..<4 { mutated[at + k] = 0xFF } }
                }
                do {
                    _ = try WireMessage.decode(type: message.type, payload: ByteBuffer(bytes: mutated), codec: codec, limits: limits)
                    outcomes.decoded += 1
                } catch is WireError {
                    outcomes.refused += 1
                }
            }
        }
        #expect(outcomes.refused > outcomes.decoded)
    }
}
