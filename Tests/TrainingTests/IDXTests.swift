import CZlib
import Foundation
import Testing
import Training

// MARK: - Fixtures

/// A fresh directory under the system's temporary directory, removed when released.
private final class ScratchDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("idx-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(at: url)
    }

    func path(_ name: String) -> String {
        url.appendingPathComponent(name).path
    }

    /// Writes `bytes` as they are.
    @discardableResult
    func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let path = path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Writes `bytes` gzip-compressed, through zlib's gzip file interface.
    @discardableResult
    func writeGzip(_ name: String, _ bytes: [UInt8]) throws -> String {
        let path = path(name)
        try #require(Self.gzip(bytes, to: path))
        return path
    }

    /// The gzip-compressed form of `bytes`.
    func gzipped(_ bytes: [UInt8]) throws -> [UInt8] {
        let path = path("gzip-\(UUID().uuidString).gz")
        try #require(Self.gzip(bytes, to: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    private static func gzip(_ bytes: [UInt8], to path: String) -> Bool {
        guard let file = gzopen(path, "wb9") else { return false }
        let written = bytes.withUnsafeBytes { raw in
            gzwrite(file, raw.baseAddress, UInt32(raw.count))
        }
        return gzclose(file) == Z_OK && Int(written) == bytes.count
    }
}

/// The bytes of an IDX file: magic, big-endian sizes, then `data`.
private func idx(type: UInt8 = 0x08, dimensions: [Int], data: [UInt8]) -> [UInt8] {
    var bytes: [UInt8] = [0, 0, type, UInt8(dimensions.count)]
    for size in dimensions {
        let size = UInt32(size)
        bytes += [UInt8(size >> 24), UInt8(size >> 16 & 0xff), UInt8(size >> 8 & 0xff), UInt8(size & 0xff)]
    }
    return bytes + data
}

/// Three 2x2 images with distinct pixels, and their labels.
private let samplePixels: [UInt8] = Array(0..<12).map { UInt8($0 * 20) }
private let sampleLabels: [UInt8] = [2, 0, 1]
private let imagesFile = idx(dimensions: [3, 2, 2], data: samplePixels)
private let labelsFile = idx(dimensions: [3], data: sampleLabels)

/// The error `body` throws, which must be an `IDXError`.
private func idxError(_ body: () throws -> Void) throws -> IDXError {
    do {
        try body()
    } catch let error as IDXError {
        return error
    }
    throw NoErrorThrown()
}

private struct NoErrorThrown: Error, CustomStringConvertible {
    var description: String { "expected an IDXError, but nothing was thrown" }
}

/// Checks that `error` names `file` and says `problem`, printing the description if not.
private func expectError(
    _ error: IDXError, code: IDXError.Code, names file: String, says problems: String...,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let text = error.description
    #expect(error.code == code, "\(text)", sourceLocation: sourceLocation)
    #expect(text.contains(file), "\(text)", sourceLocation: sourceLocation)
    for problem in problems {
        #expect(text.contains(problem), "\(text)", sourceLocation: sourceLocation)
    }
}

// MARK: - Good files

@Test func idxLoadsRawImagesAndLabels() throws {
    let dir = try ScratchDirectory()
    let images = try dir.write("images-idx3-ubyte", imagesFile)
    let labels = try dir.write("labels-idx1-ubyte", labelsFile)

    let set = try LabeledDataSet.load(images: images, labels: labels)
    #expect(set.count == 3)
    #expect(set.rows == 2 && set.columns == 2 && set.featureCount == 4)
    #expect(set.classCount == 3)  // largest label plus one
    #expect(set.pixels == samplePixels)
    #expect(Array(set.pixels(of: 1)) == [80, 100, 120, 140])
    #expect((0..<3).map(set.label(of:)) == [2, 0, 1])
    set.withPixels(of: 1..<3) { buffer in
        #expect(Array(buffer) == Array(samplePixels[4...]))
    }

    let tail = set.subset(1..<3)
    #expect(tail.count == 2 && tail.classCount == 3)
    #expect(Array(tail.pixels(of: 0)) == [80, 100, 120, 140])
    #expect(tail.label(of: 1) == 1)
    #expect(set.prefix(1).labels == [2])
    #expect(set.prefix(10) == set)
}

@Test func idxLoadsGzipFilesByContentNotName() throws {
    let dir = try ScratchDirectory()
    // Compressed files without .gz, and a raw file with .gz: the magic bytes decide.
    let images = try dir.writeGzip("images-idx3-ubyte", imagesFile)
    let labels = try dir.write("labels-idx1-ubyte.gz", labelsFile)
    let set = try LabeledDataSet.load(images: images, labels: labels, classCount: 10)
    #expect(set.count == 3 && set.rows == 2 && set.columns == 2)
    #expect(set.classCount == 10)
    #expect(set.pixels == samplePixels && set.labels == sampleLabels)
}

@Test func idxReadsConcatenatedGzipMembers() throws {
    let dir = try ScratchDirectory()
    let whole = imagesFile
    let joined = try dir.gzipped(Array(whole[..<7])) + dir.gzipped(Array(whole[7...]))
    let array = try IDXArray(decoding: joined, source: "two-members.gz", expectedRank: 3)
    #expect(array.dimensions == [3, 2, 2])
    #expect(array.elements == samplePixels)
}

@Test func idxArrayAcceptsAnyRankWhenNoneIsExpected() throws {
    let array = try IDXArray(decoding: idx(dimensions: [2, 1, 1, 3], data: Array(1...6)), source: "mem")
    #expect(array.dimensions == [2, 1, 1, 3])
    #expect(array.elements == Array(1...6))
}

// MARK: - Bad files

@Test func idxRejectsTruncatedData() throws {
    let dir = try ScratchDirectory()
    let path = try dir.write("short-images", Array(imagesFile.dropLast(5)))
    let error = try idxError { _ = try IDXArray.read(path: path, expectedRank: 3) }
    expectError(error, code: .truncated, names: "short-images",
                says: "truncated: header declares 3x2x2 = 12 bytes of data but the file holds 7",
                "sha256sum")
}

@Test func idxRejectsTruncatedHeader() throws {
    let dir = try ScratchDirectory()
    let path = try dir.write("header-only", Array(imagesFile.prefix(9)))
    let error = try idxError { _ = try IDXArray.read(path: path, expectedRank: 3) }
    expectError(error, code: .truncated, names: "header-only",
                says: "truncated: the IDX header needs 16 bytes but the file holds 9")

    let empty = try dir.write("empty-file", [])
    let emptyError = try idxError { _ = try IDXArray.read(path: empty) }
    expectError(emptyError, code: .truncated, names: "empty-file", says: "needs 4 bytes", "holds 0")
}

@Test func idxRejectsTrailingBytes() throws {
    let dir = try ScratchDirectory()
    let path = try dir.write("long-labels", labelsFile + [9, 9])
    let error = try idxError { _ = try IDXArray.read(path: path, expectedRank: 1) }
    expectError(error, code: .trailingData, names: "long-labels",
                says: "trailing data: header declares 3 = 3 bytes of data but the file holds 5 (2 extra)")
}

@Test func idxRejectsWrongMagic() throws {
    let dir = try ScratchDirectory()
    let path = try dir.write("not-idx.txt", Array("hello, world".utf8))
    let error = try idxError { _ = try IDXArray.read(path: path) }
    expectError(error, code: .badMagic, names: "not-idx.txt",
                says: "not an IDX file", "68 65 6c 6c")
}

@Test func idxRejectsUnsupportedElementType() throws {
    let dir = try ScratchDirectory()
    let path = try dir.write("floats", idx(type: 0x0D, dimensions: [1], data: [0, 0, 0, 0]))
    let error = try idxError { _ = try IDXArray.read(path: path) }
    expectError(error, code: .unsupportedType, names: "floats",
                says: "unsupported IDX element type 0x0d (32-bit float)", "only 0x08")
}

@Test func idxRejectsWrongRankAndEmptySizes() throws {
    let dir = try ScratchDirectory()
    let images = try dir.write("images", imagesFile)
    let labels = try dir.write("labels", labelsFile)
    // Images and labels swapped.
    let swapped = try idxError { _ = try LabeledDataSet.load(images: labels, labels: images) }
    expectError(swapped, code: .wrongRank, names: labels,
                says: "wrong number of dimensions: expected 3", "found 1")

    let empty = try dir.write("empty-images", idx(dimensions: [0, 28, 28], data: []))
    let emptyError = try idxError { _ = try IDXArray.read(path: empty, expectedRank: 3) }
    expectError(emptyError, code: .zeroDimension, names: "empty-images", says: "0x28x28")
}

@Test func idxNeverTrustsDeclaredSizes() throws {
    // Sizes whose product overflows, and a product far beyond the bytes present: no allocation
    // follows from either, only an error.
    let overflowing = idx(dimensions: [0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF], data: [1, 2, 3])
    let overflowError = try idxError { _ = try IDXArray(decoding: overflowing, source: "hostile-1") }
    expectError(overflowError, code: .tooLarge, names: "hostile-1",
                says: "4294967295x4294967295x4294967295")

    let huge = idx(dimensions: [65536, 65536, 16], data: [1, 2, 3])
    let hugeError = try idxError { _ = try IDXArray(decoding: huge, source: "hostile-2") }
    expectError(hugeError, code: .truncated, names: "hostile-2",
                says: "65536x65536x16 = 68719476736 bytes", "holds 3")

    let rankless = try idxError { _ = try IDXArray(decoding: [0, 0, 8, 0], source: "hostile-3") }
    expectError(rankless, code: .zeroDimension, names: "hostile-3", says: "empty data set")
}

@Test func idxRejectsTruncatedGzipStream() throws {
    let dir = try ScratchDirectory()
    let compressed = try dir.gzipped(imagesFile)
    for cut in [1, 8, compressed.count / 2] {
        let path = try dir.write("cut-\(cut).gz", Array(compressed.dropLast(cut)))
        let error = try idxError { _ = try IDXArray.read(path: path, expectedRank: 3) }
        expectError(error, code: .truncated, names: "cut-\(cut).gz", says: "truncated gzip stream")
    }
}

@Test func idxRejectsCorruptGzipStream() throws {
    let dir = try ScratchDirectory()
    var compressed = try dir.gzipped(imagesFile)
    compressed[compressed.count - 6] ^= 0xff  // inside the CRC-32 of the trailer
    let path = try dir.write("bad-crc.gz", compressed)
    let error = try idxError { _ = try IDXArray.read(path: path) }
    expectError(error, code: .corruptGzip, names: "bad-crc.gz",
                says: "corrupt gzip stream", "Z_DATA_ERROR (-3)", "incorrect data check")
}

@Test func idxRejectsGarbageAfterGzipStream() throws {
    let dir = try ScratchDirectory()
    let path = try dir.write("junk-after.gz", try dir.gzipped(labelsFile) + [0, 0, 0])
    let error = try idxError { _ = try IDXArray.read(path: path) }
    expectError(error, code: .trailingData, names: "junk-after.gz",
                says: "3 bytes after the end of the gzip stream")
}

@Test func idxCapsDecompressedSize() throws {
    let dir = try ScratchDirectory()
    let big = idx(dimensions: [100_000], data: [UInt8](repeating: 7, count: 100_000))
    let path = try dir.writeGzip("bomb.gz", big)
    let error = try idxError { _ = try IDXArray.read(path: path, maximumBytes: 50_000) }
    expectError(error, code: .tooLarge, names: "bomb.gz", says: "more than 50000 bytes")
    // The same file within the limit.
    #expect(try IDXArray.read(path: path, maximumBytes: 200_000).elements.count == 100_000)
}

@Test func idxRejectsImageLabelCountMismatch() throws {
    let dir = try ScratchDirectory()
    let images = try dir.write("imgs-idx3", imagesFile)
    let labels = try dir.write("lbls-idx1", idx(dimensions: [4], data: [0, 1, 2, 3]))
    let error = try idxError { _ = try LabeledDataSet.load(images: images, labels: labels) }
    expectError(error, code: .countMismatch, names: images,
                says: labels, "holds 3 images", "holds 4 labels")
}

@Test func idxReportsMissingAndUnreadableFiles() throws {
    let dir = try ScratchDirectory()
    let missing = dir.path("no-such-file")
    let error = try idxError { _ = try IDXArray.read(path: missing) }
    expectError(error, code: .fileMissing, names: missing, says: "no such file")

    let directoryError = try idxError { _ = try IDXArray.read(path: dir.url.path) }
    expectError(directoryError, code: .notReadable, names: dir.url.path, says: "is a directory")
}

@Test func idxRejectsLabelNotBelowClassCount() throws {
    let dir = try ScratchDirectory()
    let images = try dir.write("images", imagesFile)
    let labels = try dir.write("labels-big", labelsFile)
    let error = try idxError { _ = try LabeledDataSet.load(images: images, labels: labels, classCount: 2) }
    expectError(error, code: .labelOutOfRange, names: "labels-big",
                says: "sample 0 has label 2", "2 classes")

    let zero = try idxError { _ = try LabeledDataSet.load(images: images, labels: labels, classCount: 0) }
    expectError(zero, code: .invalidClassCount, names: "labels-big", says: "invalid class count 0")
}

@Test func idxRejectsInconsistentInMemoryDataSet() throws {
    let error = try idxError {
        _ = try LabeledDataSet(rows: 2, columns: 2, pixels: [1, 2, 3, 4, 5], labels: [0],
                               source: "shard 7")
    }
    expectError(error, code: .invalidShape, names: "shard 7", says: "5 pixels")
    let good = try LabeledDataSet(rows: 1, columns: 2, pixels: [1, 2, 3, 4], labels: [1, 4])
    #expect(good.count == 2 && good.classCount == 5)
}

@Test func mnistReportsMissingFileAndDirectory() throws {
    let dir = try ScratchDirectory()
    try dir.write("train-images-idx3-ubyte", imagesFile)
    let error = try idxError { _ = try MNIST.load(directory: dir.url.path) }
    expectError(error, code: .fileMissing, names: dir.url.path,
                says: "train-labels-idx1-ubyte", "data/mnist")

    let nowhere = dir.path("absent")
    let directoryError = try idxError { _ = try MNIST.load(directory: nowhere) }
    expectError(directoryError, code: .fileMissing, names: nowhere, says: "no such directory")
}

// MARK: - The real data

/// `data/mnist` of this package: three levels up from this file is the package root.
private let mnistDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("data/mnist").path

@Test func idxLoadsTheShippedMNIST() throws {
    let (train, test) = try MNIST.load(directory: mnistDirectory)
    #expect(train.count == 60_000)
    #expect(test.count == 10_000)
    for set in [train, test] {
        #expect(set.rows == 28 && set.columns == 28 && set.featureCount == 784)
        #expect(set.classCount == 10)
        #expect(set.pixels.count == set.count * 784)
        #expect(set.labels.allSatisfy { $0 < 10 })
    }
    #expect(train.label(of: 0) == 5)
    #expect(test.label(of: 0) == 7)
    // Every digit occurs in both sets.
    #expect(Set(train.labels).count == 10 && Set(test.labels).count == 10)
}

// MARK: - Other data sets of the same kind

/// IDX files for `count` images of `rows`x`columns` with labels cycling through `classes`.
private func dataSetFiles(count: Int, rows: Int, columns: Int, classes: Int) -> (images: [UInt8], labels: [UInt8]) {
    let pixels = (0..<(count * rows * columns)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
    let labels = (0..<count).map { UInt8($0 % classes) }
    return (idx(dimensions: [count, rows, columns], data: pixels), idx(dimensions: [count], data: labels))
}

@Test func dataDirectoryTakesSizesAndClassesFromTheFiles() throws {
    // EMNIST-style names, gzip and raw mixed, 6x5 images, 5 classes (the test set only has 3 of them).
    let dir = try ScratchDirectory()
    let train = dataSetFiles(count: 12, rows: 6, columns: 5, classes: 5)
    let test = dataSetFiles(count: 4, rows: 6, columns: 5, classes: 3)
    try dir.writeGzip("emnist-letters-train-images-idx3-ubyte.gz", train.images)
    try dir.write("emnist-letters-train-labels-idx1-ubyte", train.labels)
    try dir.writeGzip("emnist-letters-test-images-idx3-ubyte.gz", test.images)
    try dir.writeGzip("emnist-letters-test-labels-idx1-ubyte.gz", test.labels)
    let (a, b) = try MNIST.load(directory: dir.url.path)
    #expect(a.count == 12 && b.count == 4)
    #expect(a.featureCount == 30 && b.featureCount == 30)
    #expect(a.classCount == 5 && b.classCount == 5, "both sets take the classes of either")
}

@Test func dataDirectoryRefusesAmbiguousAndMismatchedFiles() throws {
    let dir = try ScratchDirectory()
    let train = dataSetFiles(count: 4, rows: 2, columns: 2, classes: 2)
    let test = dataSetFiles(count: 4, rows: 3, columns: 2, classes: 2)
    try dir.write("a-train-images-idx3-ubyte", train.images)
    try dir.write("b-train-images-idx3-ubyte", train.images)
    let ambiguous = try idxError { _ = try MNIST.load(directory: dir.url.path) }
    expectError(ambiguous, code: .fileMissing, names: dir.url.path, says: "a-train-images-idx3-ubyte", "b-train-images-idx3-ubyte")

    try FileManager.default.removeItem(atPath: dir.path("b-train-images-idx3-ubyte"))
    try dir.write("train-labels-idx1-ubyte", train.labels)
    try dir.write("t10k-images-idx3-ubyte", test.images)
    try dir.write("t10k-labels-idx1-ubyte", test.labels)
    let mismatch = try idxError { _ = try MNIST.load(directory: dir.url.path) }
    expectError(mismatch, code: .invalidShape, names: dir.url.path, says: "2x2", "3x2")
}
