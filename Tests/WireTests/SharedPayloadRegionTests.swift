import Foundation
import NIOCore
import Testing
@testable import Wire

#if canImport(Glibc)
import Glibc
#endif

/// The shared payload region (docs/PROTOCOL.md, "Shared memory"): made by one side, mapped by
/// the other after its checks, slots handed back and forth, and the messages that name them.
@Suite("Shared payload region", .enabled(if: access("/dev/shm", W_OK) == 0,
                                         "needs a writable /dev/shm, where shared payload regions are made"))
struct SharedPayloadRegionTests {
    static let count = Samples.signature.parameterCount

    /// A coordinator's region and a worker's mapping of it.
    static func pair() throws -> (coordinator: SharedPayloadRegion, worker: SharedPayloadRegion) {
        let made = try SharedPayloadRegion.create(parameterCount: count)
        let mapped = try SharedPayloadRegion.open(path: made.path, token: made.token, parameterCount: count,
                                                  gradientSlots: made.gradientSlots)
        return (made, mapped)
    }

    @Test("a region is a private file until the handshake ends, then no file at all; the mappings outlive it")
    func fileLifetime() throws {
        let (made, mapped) = try Self.pair()
        var info = stat()
        #expect(stat(made.path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600, "mode \(String(info.st_mode & 0o777, radix: 8))")
        made.unlink()
        #expect(!FileManager.default.fileExists(atPath: made.path), "\(made.path) is still there")
        let values = (0..<Self.count).map { Float($0) * 0.25 }
        let slot = try #require(values.withUnsafeBufferPointer { made.write($0, into: .parameters) })
        let lease = try mapped.lease(.parameters, index: slot, count: Self.count)
        #expect(Array(lease.values) == values, "the worker's mapping does not see the coordinator's writes")
    }

    @Test("slots: written, read, handed back when the lease goes; a full family declines to write")
    func slotHandOff() throws {
        let (made, mapped) = try Self.pair()
        defer { made.unlink() }
        var leases: [SharedSlotLease] = []
        for round in 0..<mapped.gradientSlots {
            let values = [Float](repeating: Float(round), count: Self.count)
            let slot = try #require(values.withUnsafeBufferPointer { mapped.write($0, into: .gradients) }, "round \(round)")
            leases.append(try made.lease(.gradients, index: slot, count: Self.count))
        }
        let extra = [Float](repeating: 9, count: Self.count)
        #expect(extra.withUnsafeBufferPointer { mapped.write($0, into: .gradients) } == nil,
                "a slot still held by the reader was written over")
        for (round, lease) in leases.enumerated() {
            #expect(lease.values.allSatisfy { $0 == Float(round) }, "slot \(lease.index) changed while held")
        }
        let freed = leases.removeFirst().index
        #expect(extra.withUnsafeBufferPointer { mapped.write($0, into: .gradients) } == freed)
        // The other family is separate.
        #expect(extra.withUnsafeBufferPointer { made.write($0, into: .parameters) } != nil)
    }

    @Test("a message that names a slot never written, out of range, twice, or with another count is refused")
    func badSlotNames() throws {
        let (made, mapped) = try Self.pair()
        defer { made.unlink() }
        #expect(throws: SharedMemoryError.self) { try mapped.lease(.parameters, index: 0, count: Self.count) }
        #expect(throws: SharedMemoryError.self) { try mapped.lease(.parameters, index: 2, count: Self.count) }
        #expect(throws: SharedMemoryError.self) { try mapped.lease(.gradients, index: -1, count: Self.count) }
        let values = [Float](repeating: 1, count: Self.count)
        let slot = try #require(values.withUnsafeBufferPointer { made.write($0, into: .parameters) })
        #expect(throws: SharedMemoryError.self) { try mapped.lease(.parameters, index: slot, count: Self.count + 1) }
        let lease = try mapped.lease(.parameters, index: slot, count: Self.count)
        #expect(throws: SharedMemoryError.self) { try mapped.lease(.parameters, index: slot, count: Self.count) }
        _ = lease
    }

    @Test("a worker maps only a region it can verify: name, owner, mode, size, header and token")
    func verification() throws {
        let (made, _) = try Self.pair()
        defer { made.unlink() }
        func refused(_ path: String, token: [UInt8]? = nil, count: Int = Self.count, slots: Int? = nil) -> String? {
            do {
                _ = try SharedPayloadRegion.open(path: path, token: token ?? made.token, parameterCount: count,
                                                 gradientSlots: slots ?? made.gradientSlots)
                return nil
            } catch {
                return "\(error)"
            }
        }
        var wrongToken = made.token
        wrongToken[0] ^= 1
        #expect(refused(made.path, token: wrongToken)?.contains("token") == true)
        #expect(refused(made.path, count: Self.count + 1) != nil, "a region for another model was mapped")
        #expect(refused(made.path, slots: made.gradientSlots + 1) != nil)
        #expect(refused("/tmp/backprop-1-2")?.contains("not the name") == true)
        #expect(refused("/dev/shm/backprop-../../etc/passwd")?.contains("not the name") == true)
        #expect(refused("/dev/shm/backprop-0-missing")?.contains("cannot open") == true)

        // A file readable by others, and a symbolic link to the real region, are refused.
        let loose = "/dev/shm/backprop-0-loose\(getpid())"
        FileManager.default.createFile(atPath: loose, contents: Data(count: 16), attributes: [.posixPermissions: 0o644])
        defer { unlink(loose) }
        #expect(refused(loose)?.contains("alone") == true)
        let link = "/dev/shm/backprop-0-link\(getpid())"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: made.path)
        defer { unlink(link) }
        #expect(refused(link)?.contains("cannot open") == true)
    }

    @Test("parameters and gradients that name slots decode in place; without a region they are refused")
    func messagesNamingSlots() throws {
        let (made, mapped) = try Self.pair()
        defer { made.unlink() }
        let values = (0..<Self.count).map { Float($0 % 97) - 48.5 }
        let allocator = ByteBufferAllocator()
        let update = WireMessage.parameters(ParameterUpdate(step: 7, values: values))
        let payload = try #require(try update.sharedPayload(in: made, role: .coordinator, signature: Samples.signature,
                                                           allocator: allocator))
        #expect(payload.readableBytes < 32, "a parameters frame naming a slot has \(payload.readableBytes) bytes")
        #expect(throws: WireError.self) {
            try WireMessage.decode(type: .parameters, payload: payload, codec: PayloadCodec(), signature: Samples.signature)
        }
        guard case .parameters(let received) = try WireMessage.decode(
            type: .parameters, payload: payload, codec: PayloadCodec(), signature: Samples.signature, shared: mapped) else {
            Issue.record("not a parameters message")
            return
        }
        #expect(received.step == 7 && received.parameterValues.isShared && received.values == values)

        let result = GradientResult(step: 7, shardID: 3, sampleCount: 150, lossSum: 12.5, correctCount: 40, gradientSum: values)
        let answer = try #require(try WireMessage.gradient(result).sharedPayload(
            in: mapped, role: .worker, signature: Samples.signature, allocator: allocator))
        guard case .gradient(let decoded) = try WireMessage.decode(
            type: .gradient, payload: answer, codec: PayloadCodec(), signature: Samples.signature, shared: made) else {
            Issue.record("not a gradient message")
            return
        }
        #expect(decoded == result && decoded.gradientValues.isShared)
        // A coordinator does not put gradients in the region, nor a worker parameters.
        #expect(try WireMessage.gradient(result).sharedPayload(in: made, role: .coordinator, signature: nil, allocator: allocator) == nil)
        #expect(try update.sharedPayload(in: mapped, role: .worker, signature: nil, allocator: allocator) == nil)
    }

    @Test("regions left by processes that no longer run are removed; a live process's are kept")
    func staleRegions() throws {
        let (made, _) = try Self.pair()
        defer { made.unlink() }
        // A process that has ended: its pid is free (until the system reuses it).
        let ended = Process()
        ended.executableURL = URL(fileURLWithPath: "/bin/true")
        try ended.run()
        ended.waitUntilExit()
        let stale = "/dev/shm/backprop-\(ended.processIdentifier)-0123abcd"
        #expect(FileManager.default.createFile(atPath: stale, contents: Data(count: 8), attributes: [.posixPermissions: 0o600]))
        defer { unlink(stale) }
        SharedPayloadRegion.removeStaleRegions()
        #expect(!FileManager.default.fileExists(atPath: stale), "a dead process's region was left")
        #expect(FileManager.default.fileExists(atPath: made.path), "this process's region was removed")
    }

    @Test("the handshake's extensions: the offer names the region; the answer says accepted, or declined and why")
    func handshakeExtensions() throws {
        let (made, _) = try Self.pair()
        defer { made.unlink() }
        let hello = Hello(sessionID: 1, signature: Samples.signature, coordinatorName: "c",
                          extensions: [.shardSize(150), .sharedMemoryOffer(made)])
        let offer = try #require(hello.sharedMemoryOffer)
        #expect(offer.path == made.path && offer.token == made.token && offer.gradientSlots == made.gradientSlots)
        func answer(_ extensions: [WireExtension]) -> (accepted: Bool, reason: String)? {
            HelloAck(answering: hello, workerName: "w", blasKernel: "k", threadCount: 1, extensions: extensions).sharedMemoryAnswer
        }
        #expect(answer([]) == nil)
        #expect(answer([.sharedMemoryAccepted])?.accepted == true)
        let declined = answer([.sharedMemoryDeclined("cannot open /dev/shm/x: No such file or directory")])
        #expect(declined?.accepted == false && declined?.reason.contains("No such file") == true)
        #expect(WireExtension.sharedMemoryDeclined(String(repeating: "x", count: 5000)).value.count == 1001)
    }
}
