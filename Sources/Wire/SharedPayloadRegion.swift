import CSharedMemory
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Memory that a coordinator and a worker on the same host both map, through which the floats
/// of parameters and gradients pass instead of through the socket: a float payload then names a
/// slot of the region (encoding 4, docs/PROTOCOL.md "Shared memory") and the frame carries a
/// few bytes. On loopback TCP a 1 MB frame costs two kernel copies and the stack's work on both
/// sides, about a third of the coordinator's CPU per step.
///
/// The coordinator makes one region per connection (`create`), a file in `/dev/shm` of mode
/// 0600 with a random name, and offers it in its `hello`; the worker maps it (`open`) only after
/// checking that it is a regular file of its own user, of exactly the expected size, with the
/// header and the random token the hello announced; the coordinator removes the file once the
/// handshake is over, so that nothing is left behind, whatever happens later.
///
/// Slots: two for parameters (written by the coordinator) and `gradientSlots` for gradients
/// (written by the worker), each room for the model's parameter count. Each slot has a state
/// word: free (the writer may fill it), written (a message names it), read (the receiver holds
/// it). The writer fills a free slot and marks it written before sending the message that
/// names it; the receiver marks it read when it decodes that message, and free again when the
/// message's values are no longer held (``SharedSlotLease``). A writer that finds no free slot
/// sends the floats in the frame as usual. So a slot is never written while the other side may
/// still read it, whatever the order of steps, retries and lost answers.
public final class SharedPayloadRegion: @unchecked Sendable {
    /// Which side writes a slot.
    public enum Family: Sendable, CustomStringConvertible {
        /// Written by the coordinator.
        case parameters
        /// Written by the worker.
        case gradients

        public var description: String { self == .parameters ? "parameters" : "gradient" }
    }

    static let magic: UInt32 = 0x4250_534D   // "BPSM"
    static let layoutVersion: UInt32 = 1
    /// Where regions are made; a region's path is this directory, `namePrefix`, then letters and digits.
    static let directory = "/dev/shm/"
    static let namePrefix = "backprop-"
    /// Parameter slots (two: the next parameters can be written while a worker still holds the last).
    public static let parameterSlots = 2
    /// Gradient slots a coordinator asks for: a worker's answers of one step at the default
    /// shard size, with room to spare.
    public static let defaultGradientSlots = 4
    /// The largest region either side makes or maps.
    public static let maximumBytes = 1 << 30

    private static let stateFree: UInt32 = 0
    private static let stateWritten: UInt32 = 1
    private static let stateRead: UInt32 = 2
    private static let headerBytes = 64
    private static let stateStride = 64
    private static let page = 4096

    /// The file's path (until the coordinator removes it, the name the hello carries).
    public let path: String
    /// 16 random bytes written in the header and announced in the hello.
    public let token: [UInt8]
    public let parameterCount: Int
    public let gradientSlots: Int
    private let base: UnsafeMutableRawPointer
    private let byteCount: Int
    private let slotStride: Int
    private let dataOffset: Int
    /// Whether this side made the file and has not removed it yet.
    private let linked: Mutex<Bool>

    private init(path: String, token: [UInt8], parameterCount: Int, gradientSlots: Int,
                 base: UnsafeMutableRawPointer, byteCount: Int, linked: Bool) {
        self.path = path
        self.token = token
        self.parameterCount = parameterCount
        self.gradientSlots = gradientSlots
        self.base = base
        self.byteCount = byteCount
        let layout = Self.layout(parameterCount: parameterCount, gradientSlots: gradientSlots)!
        slotStride = layout.slotStride
        dataOffset = layout.dataOffset
        self.linked = Mutex(linked)
    }

    deinit {
        unlink()
        munmap(base, byteCount)
    }

    /// The region's size and where its slots are, or nil when it would exceed `maximumBytes`.
    static func layout(parameterCount: Int, gradientSlots: Int) -> (bytes: Int, slotStride: Int, dataOffset: Int)? {
        guard parameterCount > 0, gradientSlots > 0, gradientSlots <= 255,
              parameterCount <= maximumBytes / 4 else { return nil }
        let slotStride = (4 * parameterCount + page - 1) / page * page
        let states = headerBytes + stateStride * (parameterSlots + gradientSlots)
        let dataOffset = (states + page - 1) / page * page
        let (bytes, overflow) = slotStride.multipliedReportingOverflow(by: parameterSlots + gradientSlots)
        guard !overflow, dataOffset + bytes <= maximumBytes else { return nil }
        return (dataOffset + bytes, slotStride, dataOffset)
    }

    /// Makes a region for a model of `parameterCount` parameters (the coordinator's side).
    public static func create(parameterCount: Int, gradientSlots: Int = defaultGradientSlots) throws -> SharedPayloadRegion {
        guard let layout = layout(parameterCount: parameterCount, gradientSlots: gradientSlots) else {
            throw SharedMemoryError("a region for \(parameterCount) parameters and \(gradientSlots) gradient slots would exceed \(maximumBytes) bytes")
        }
        _ = staleRegionsRemoved
        var generator = SystemRandomNumberGenerator()
        let token = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let suffix = (0..<16).map { _ in String(UInt8.random(in: 0...255, using: &generator), radix: 16) }.joined()
        let path = directory + namePrefix + "\(getpid())-" + suffix
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw SharedMemoryError("cannot create \(path): \(errnoText())") }
        defer { close(fd) }
        // Allocated now, not only sized: a tmpfs that runs out of room later would kill both
        // processes with SIGBUS at their next write to the region, where this fails cleanly.
        let allocated = posix_fallocate(fd, 0, off_t(layout.bytes))
        guard allocated == 0 else {
            Glibc.unlink(path)
            throw SharedMemoryError("cannot allocate \(layout.bytes) bytes for \(path): \(String(cString: strerror(allocated)))")
        }
        guard let base = map(fd, bytes: layout.bytes) else {
            let text = errnoText()
            Glibc.unlink(path)
            throw SharedMemoryError("cannot map \(path): \(text)")
        }
        base.storeBytes(of: magic, toByteOffset: 0, as: UInt32.self)
        base.storeBytes(of: layoutVersion, toByteOffset: 4, as: UInt32.self)
        base.storeBytes(of: UInt32(parameterCount), toByteOffset: 8, as: UInt32.self)
        base.storeBytes(of: UInt32(parameterSlots), toByteOffset: 12, as: UInt32.self)
        base.storeBytes(of: UInt32(gradientSlots), toByteOffset: 16, as: UInt32.self)
        for (i, byte) in token.enumerated() { base.storeBytes(of: byte, toByteOffset: 32 + i, as: UInt8.self) }
        return SharedPayloadRegion(path: path, token: token, parameterCount: parameterCount, gradientSlots: gradientSlots,
                                   base: base, byteCount: layout.bytes, linked: true)
    }

    /// Maps the region a coordinator announced (the worker's side), after checking that `path`
    /// is a region's name, that the file is a regular file of this process's user of exactly
    /// the size the counts give, and that its header holds those counts and `token`.
    public static func open(path: String, token: [UInt8], parameterCount: Int, gradientSlots: Int) throws -> SharedPayloadRegion {
        let name = path.dropFirst(directory.count)
        guard path.hasPrefix(directory + namePrefix), path.count <= 128,
              name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) else {
            throw SharedMemoryError("'\(path)' is not the name of a shared payload region (\(directory)\(namePrefix)...)")
        }
        guard token.count == 16 else { throw SharedMemoryError("the region's token has \(token.count) bytes, not 16") }
        guard let layout = layout(parameterCount: parameterCount, gradientSlots: gradientSlots) else {
            throw SharedMemoryError("a region for \(parameterCount) parameters and \(gradientSlots) gradient slots would exceed \(maximumBytes) bytes")
        }
        let fd = Glibc.open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw SharedMemoryError("cannot open \(path): \(errnoText())") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SharedMemoryError("cannot inspect \(path): \(errnoText())") }
        guard (info.st_mode & S_IFMT) == S_IFREG, info.st_uid == geteuid(), info.st_mode & 0o077 == 0 else {
            throw SharedMemoryError("\(path) is not a regular file of this user readable by it alone")
        }
        guard Int(info.st_size) == layout.bytes else {
            throw SharedMemoryError("\(path) has \(info.st_size) bytes, a region for \(parameterCount) parameters has \(layout.bytes)")
        }
        guard let base = map(fd, bytes: layout.bytes) else { throw SharedMemoryError("cannot map \(path): \(errnoText())") }
        let header = (0..<5).map { base.load(fromByteOffset: 4 * $0, as: UInt32.self) }
        let stored = (0..<16).map { base.load(fromByteOffset: 32 + $0, as: UInt8.self) }
        guard header == [magic, layoutVersion, UInt32(parameterCount), UInt32(parameterSlots), UInt32(gradientSlots)],
              stored == token else {
            munmap(base, layout.bytes)
            throw SharedMemoryError("\(path) does not hold the region the coordinator announced (header or token differ)")
        }
        return SharedPayloadRegion(path: path, token: token, parameterCount: parameterCount, gradientSlots: gradientSlots,
                                   base: base, byteCount: layout.bytes, linked: false)
    }

    /// `removeStaleRegions()`, once per process, before its first region.
    private static let staleRegionsRemoved: Void = removeStaleRegions()

    /// Removes the regions left in `/dev/shm` by processes of this user that no longer run (a
    /// coordinator killed between making a region and the end of that handshake).
    static func removeStaleRegions() {
        guard let listing = opendir(directory) else { return }
        var names: [String] = []
        while let entry = readdir(listing) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix(namePrefix) { names.append(name) }
        }
        closedir(listing)
        for name in names {
            let fields = name.dropFirst(namePrefix.count).split(separator: "-")
            guard fields.count == 2, let pid = pid_t(fields[0]), pid > 0, pid != getpid() else { continue }
            let path = directory + name
            var info = stat()
            guard lstat(path, &info) == 0, info.st_uid == geteuid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            Glibc.unlink(path)
        }
    }

    private static func map(_ fd: Int32, bytes: Int) -> UnsafeMutableRawPointer? {
        // Populated now, during the handshake, rather than page by page in the first steps.
        #if os(Linux)
        let flags = MAP_SHARED | MAP_POPULATE
        #else
        let flags = MAP_SHARED
        #endif
        let address = mmap(nil, bytes, PROT_READ | PROT_WRITE, flags, fd, 0)
        guard let address, address != MAP_FAILED else { return nil }
        return address
    }

    /// Removes the file if this side made it and has not removed it yet (the coordinator, once
    /// the worker has answered); both mappings stay valid.
    public func unlink() {
        linked.withLock { linked in
            if linked { Glibc.unlink(path) }
            linked = false
        }
    }

    /// Removes the file whichever side made it (the worker, once it has mapped it: the name is
    /// not needed any more, even if the coordinator dies before the handshake ends).
    public func removeName() {
        linked.withLock { linked in
            Glibc.unlink(path)
            linked = false
        }
    }

    /// Number of slots of `family`.
    public func slotCount(_ family: Family) -> Int {
        family == .parameters ? Self.parameterSlots : gradientSlots
    }

    private func slotNumber(_ family: Family, _ index: Int) -> Int {
        family == .parameters ? index : Self.parameterSlots + index
    }

    private func state(_ family: Family, _ index: Int) -> UnsafeMutablePointer<UInt32> {
        (base + Self.headerBytes + Self.stateStride * slotNumber(family, index)).assumingMemoryBound(to: UInt32.self)
    }

    private func data(_ family: Family, _ index: Int) -> UnsafeMutablePointer<Float> {
        (base + dataOffset + slotStride * slotNumber(family, index)).assumingMemoryBound(to: Float.self)
    }

    /// Copies `values` (the model's parameter count of them) into a free slot of `family`,
    /// marks it written and returns its index; nil when every slot is still held by the
    /// receiver (send the floats in the frame then).
    public func write(_ values: UnsafeBufferPointer<Float>, into family: Family) -> Int? {
        guard values.count == parameterCount, let source = values.baseAddress else { return nil }
        return write(into: family) { $0.baseAddress!.update(from: source, count: parameterCount) }
    }

    /// As ``write(_:into:)``, with `fill` writing the values into the slot (all
    /// `parameterCount` of them).
    func write(into family: Family, _ fill: (UnsafeMutableBufferPointer<Float>) -> Void) -> Int? {
        for index in 0..<slotCount(family) where bp_shared_load_acquire(state(family, index)) == Self.stateFree {
            fill(UnsafeMutableBufferPointer(start: data(family, index), count: parameterCount))
            bp_shared_store_release(state(family, index), Self.stateWritten)
            return index
        }
        return nil
    }

    /// Takes slot `index` of `family`, which a message just named, for reading: the slot must
    /// exist and be marked written. The slot is free again when the lease is released.
    func lease(_ family: Family, index: Int, count: Int) throws -> SharedSlotLease {
        guard index >= 0, index < slotCount(family) else {
            throw SharedMemoryError("a message names \(family) slot \(index); the region has \(slotCount(family))")
        }
        guard count == parameterCount else {
            throw SharedMemoryError("a message declares \(count) floats in a \(family) slot of \(parameterCount)")
        }
        guard bp_shared_compare_exchange(state(family, index), Self.stateWritten, Self.stateRead) != 0 else {
            throw SharedMemoryError("a message names \(family) slot \(index), which holds no values written for it")
        }
        return SharedSlotLease(region: self, family: family, index: index)
    }

    fileprivate func release(_ family: Family, _ index: Int) {
        bp_shared_store_release(state(family, index), Self.stateFree)
    }

    fileprivate func values(_ family: Family, _ index: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: data(family, index), count: parameterCount)
    }
}

/// The values of one slot of a ``SharedPayloadRegion`` that a received message named: held for
/// as long as the message's values are, then handed back to the writer.
final class SharedSlotLease: @unchecked Sendable {
    let region: SharedPayloadRegion
    let family: SharedPayloadRegion.Family
    let index: Int

    fileprivate init(region: SharedPayloadRegion, family: SharedPayloadRegion.Family, index: Int) {
        self.region = region
        self.family = family
        self.index = index
    }

    deinit { region.release(family, index) }

    /// The slot's floats (valid while the lease is held).
    var values: UnsafeBufferPointer<Float> { region.values(family, index) }
}

/// A shared payload region could not be made, mapped or used as a message said.
public struct SharedMemoryError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

private func errnoText() -> String { String(cString: strerror(errno)) }
