import Crypto

/// Which of the session's data sets a message is about.
public enum DatasetKind: UInt8, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    case train = 1
    case test = 2
    /// A held-out part kept apart from the training set.
    case validation = 3

    public var description: String {
        switch self {
        case .train: return "train"
        case .test: return "test"
        case .validation: return "validation"
        }
    }
}

/// How the features of a sample are stored in a data set's bytes.
public enum SampleFormat: UInt8, Hashable, Sendable, CaseIterable {
    /// One byte per feature (MNIST pixels, 0-255).
    case uint8 = 1
    /// IEEE-754 binary32, little-endian, per feature.
    case float32 = 2

    /// Bytes per feature.
    public var byteCount: Int { self == .uint8 ? 1 : 4 }
}

/// The SHA-256 of a data set's uncompressed bytes (images, then labels): how coordinator and
/// worker name a data set, so that it moves at most once per session and a worker can keep it.
///
/// ```swift
/// let digest = DatasetDigest(images: imageBytes, labels: labelBytes)
/// print(digest)   // 64 hex digits
/// ```
public struct DatasetDigest: Hashable, Sendable, CustomStringConvertible {
    /// The 32 bytes of the digest.
    public let bytes: [UInt8]

    /// Bytes in a digest.
    public static let byteCount = 32

    /// A digest from its 32 bytes; `nil` for any other length.
    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.byteCount else { return nil }
        self.bytes = bytes
    }

    /// The digest of `images` followed by `labels`, the layout a ``DatasetTransfer`` sends.
    public init(images: [UInt8], labels: [UInt8]) {
        var hasher = SHA256()
        images.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        labels.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        bytes = Array(hasher.finalize())
    }

    /// The digest of arbitrary bytes.
    public init(hashing data: UnsafeRawBufferPointer) {
        var hasher = SHA256()
        hasher.update(bufferPointer: data)
        bytes = Array(hasher.finalize())
    }

    /// 64 lowercase hex digits.
    public var description: String {
        let digits = Array("0123456789abcdef")
        var text = ""
        text.reserveCapacity(64)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0xF)])
        }
        return text
    }
}

/// What a data set is, without its bytes: sent in a ``WireMessage/datasetOffer(_:)`` so the
/// worker can say whether it already holds it, and in front of the bytes of a
/// ``DatasetTransfer``.
///
/// The uncompressed bytes are the images, `sampleCount * featureCount * format.byteCount` bytes
/// (sample-major), followed by the labels, one byte per sample, each below `classCount`.
public struct DatasetDescriptor: Hashable, Sendable {
    public var kind: DatasetKind
    public var digest: DatasetDigest
    public var sampleCount: Int
    /// Features per sample (784 for MNIST).
    public var featureCount: Int
    /// Label classes (10 for MNIST); every label must be below it.
    public var classCount: Int
    public var format: SampleFormat

    public init(kind: DatasetKind, digest: DatasetDigest, sampleCount: Int, featureCount: Int, classCount: Int, format: SampleFormat = .uint8) {
        self.kind = kind
        self.digest = digest
        self.sampleCount = sampleCount
        self.featureCount = featureCount
        self.classCount = classCount
        self.format = format
    }

    /// Bytes of the images, or `nil` when the product overflows.
    public var imageByteCount: Int? {
        let features = sampleCount.multipliedReportingOverflow(by: featureCount)
        let bytes = features.partialValue.multipliedReportingOverflow(by: format.byteCount)
        return features.overflow || bytes.overflow ? nil : bytes.partialValue
    }

    /// Bytes of images plus labels, or `nil` when it overflows.
    public var uncompressedByteCount: Int? {
        guard let images = imageByteCount else { return nil }
        let total = images.addingReportingOverflow(sampleCount)
        return total.overflow ? nil : total.partialValue
    }
}

/// A worker's answer to a ``WireMessage/datasetOffer(_:)`` or a ``WireMessage/dataset(_:)``.
public struct DatasetStatus: Hashable, Sendable {
    public enum State: UInt8, Hashable, Sendable {
        /// The worker does not hold this data set: send it.
        case missing = 0
        /// The worker holds it (kept from an earlier session, or just received and verified).
        case ready = 1
    }

    public var kind: DatasetKind
    public var digest: DatasetDigest
    public var state: State

    public init(kind: DatasetKind, digest: DatasetDigest, state: State) {
        self.kind = kind
        self.digest = digest
        self.state = state
    }
}

/// A whole data set: its descriptor and its uncompressed images and labels. On the wire the
/// bytes travel zstd-compressed; the receiver checks their size against the descriptor (before
/// allocating), their SHA-256 against the digest, and every label against the class count.
public struct DatasetTransfer: Hashable, Sendable {
    public var descriptor: DatasetDescriptor
    /// `sampleCount * featureCount * format.byteCount` bytes, sample-major.
    public var images: [UInt8]
    /// One byte per sample.
    public var labels: [UInt8]

    public init(descriptor: DatasetDescriptor, images: [UInt8], labels: [UInt8]) {
        self.descriptor = descriptor
        self.images = images
        self.labels = labels
    }

    /// A transfer whose descriptor's digest is computed from the bytes.
    public init(kind: DatasetKind, featureCount: Int, classCount: Int, format: SampleFormat = .uint8, images: [UInt8], labels: [UInt8]) {
        descriptor = DatasetDescriptor(
            kind: kind, digest: DatasetDigest(images: images, labels: labels), sampleCount: labels.count,
            featureCount: featureCount, classCount: classCount, format: format)
        self.images = images
        self.labels = labels
    }
}
