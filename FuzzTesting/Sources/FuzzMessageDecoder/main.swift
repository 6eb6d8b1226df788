import FuzzCommon
import NIOCore
import Wire

// libFuzzer harness: an arbitrary message type, options and payload (see MessageInput) into
// WireMessage.decode, which is what WireMessageHandler calls on every frame. Float payloads reach
// PayloadCodec's raw, zstd and shuffle + zstd paths with any declared count, byte length and zstd
// frame header; data sets reach the descriptor's size checks, decompression and the SHA-256.
//
// Properties checked on every input, besides "no crash, no leak, no overflow" (ASan):
// - every error thrown is a WireError;
// - a decoded message keeps the limits: parameter and gradient counts equal the signature's,
//   data set sizes match their descriptor, labels are below the class count, tasks are within
//   the sample limit;
// - a decoded message can be encoded again, and that encoding decodes to a message that encodes
//   to the same bytes (compared as bytes, so NaN payloads compare too).

/// One codec for every input, as a channel keeps one for its whole life: its zstd contexts and
/// scratch buffer are reused, so state left over from a refused input is exercised too.
nonisolated(unsafe) private let codec = PayloadCodec()
/// Re-encodes raw, so that the round trip compares floats bit for bit without compressing.
nonisolated(unsafe) private let rawCodec = PayloadCodec(.init(floatEncoding: .raw))

private func checkLimits(_ message: WireMessage, _ input: MessageInput) {
    switch message {
    case .parameters(let update):
        if let signature = input.signature {
            fuzzRequire(update.values.count == signature.parameterCount, "parameters of \(update.values.count) floats for \(signature)")
        }
        fuzzRequire(update.values.count * 4 <= input.limits.maxDecompressedBytes, "parameters over the decompressed limit")
    case .gradient(let result):
        if let signature = input.signature {
            fuzzRequire(result.gradientValues.count == signature.parameterCount, "gradient of \(result.gradientValues.count) floats for \(signature)")
        }
        // The count, not `gradientSum`: that would copy the floats into an array on every input.
        fuzzRequire(result.gradientValues.count * 4 <= input.limits.maxDecompressedBytes, "gradient over the decompressed limit")
        fuzzRequire(result.correctCount <= result.sampleCount, "more correct than samples")
    case .dataset(let transfer):
        let descriptor = transfer.descriptor
        fuzzRequire(transfer.images.count == descriptor.imageByteCount, "data set images do not match the descriptor")
        fuzzRequire(transfer.labels.count == descriptor.sampleCount, "data set labels do not match the descriptor")
        fuzzRequire(transfer.labels.allSatisfy { Int($0) < descriptor.classCount }, "a label beyond the class count")
        fuzzRequire(transfer.images.count + transfer.labels.count <= input.limits.maxDecompressedBytes, "data set over the decompressed limit")
    case .task(let task):
        fuzzRequire((1...input.limits.maxTaskSamples).contains(task.samples.count), "a task of \(task.samples.count) samples")
    default:
        break
    }
}

private func encoded(_ message: WireMessage, signature: ModelSignature?) throws -> ByteBuffer {
    var buffer = ByteBuffer()
    try message.encode(into: &buffer, codec: rawCodec, signature: signature)
    return buffer
}

private func checkRoundTrip(_ message: WireMessage, _ input: MessageInput) {
    do {
        let first = try encoded(message, signature: input.signature)
        let again = try WireMessage.decode(
            type: input.type, payload: first, codec: codec, limits: input.limits, signature: input.signature)
        let second = try encoded(again, signature: input.signature)
        fuzzRequire(first == second, "\(input.type): the re-encoded message does not encode to the same bytes")
    } catch {
        fuzzRequire(false, "\(input.type): a decoded message does not survive encode and decode: \(error)")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMessageDecoder(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    guard let input = MessageInput(UnsafeRawBufferPointer(start: start, count: count)) else { return -1 }
    let message: WireMessage
    do {
        message = try WireMessage.decode(
            type: input.type, payload: input.payload, codec: codec, limits: input.limits, signature: input.signature)
    } catch is WireError {
        return 0
    } catch {
        fuzzRequire(false, "WireMessage.decode threw a non-WireError: \(error)")
        return 0
    }
    fuzzRequire(message.type == input.type, "a \(input.type) payload decoded as \(message.type)")
    checkLimits(message, input)
    checkRoundTrip(message, input)
    return 0
}
