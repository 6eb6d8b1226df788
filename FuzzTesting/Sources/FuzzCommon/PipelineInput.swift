import Wire

/// How the pipeline and handshake harnesses read their input (and how their seeds are written,
/// see `Tests/WireTests/FuzzSeedCorpusTests.swift`):
///
/// ```
/// byte 0   bit 0: the role of the pipeline under test (0 worker, 1 coordinator)
/// byte 1   the size of the pieces the rest is delivered in (0: all at once)
/// rest     the bytes the peer sends
/// ```
public struct PipelineInput {
    public var role: SessionRole
    public var pieceSize: Int
    public var bytes: UnsafeRawBufferPointer

    /// `nil` for inputs shorter than the two leading bytes.
    public init?(_ input: UnsafeRawBufferPointer) {
        guard input.count >= 2 else { return nil }
        role = input[0] & 1 == 0 ? .worker : .coordinator
        pieceSize = input[1] == 0 ? max(1, input.count - 2) : Int(input[1])
        bytes = UnsafeRawBufferPointer(rebasing: input[2...])
    }
}
