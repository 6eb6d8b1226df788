#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Engine
import Foundation
import Synchronization

/// A set of classified images, such as MNIST's training or test set, kept as raw bytes.
///
/// This is what the trainers (single process, coordinator and workers) read samples from. Load one
/// with ``load(images:labels:classCount:maximumBytes:)`` or, for MNIST, ``MNIST/load(directory:)``;
/// read a sample with ``pixels(of:)`` and ``label(of:)``.
///
/// Pixels stay `UInt8` (60,000 MNIST images take 47 MB, a quarter of their `Float` size); convert
/// them when a batch is built.
public struct LabeledDataSet: Sendable, Equatable {
    /// The number of samples.
    public let count: Int
    /// The height of each image.
    public let rows: Int
    /// The width of each image.
    public let columns: Int
    /// The number of distinct labels; every label is in `0..<classCount`.
    public let classCount: Int
    /// All pixels, row-major, image after image: sample `i` is `pixels[i*featureCount ..< (i+1)*featureCount]`.
    public let pixels: [UInt8]
    /// The label of each sample.
    public let labels: [UInt8]
    /// The pixels' nonzero entries, indexed on first use (``sparsePixels``).
    private let sparseIndex = SparsePixelIndex()

    /// The number of pixels in one image, `rows * columns`.
    public var featureCount: Int { rows * columns }

    /// Builds a data set from pixels and labels held in memory, checking that they agree.
    ///
    /// - Parameters:
    ///   - classCount: the number of classes, or `nil` for the largest label plus one.
    ///   - source: names where the data came from; it starts every error description.
    /// - Throws: ``IDXError`` if the sizes disagree or a label is not below `classCount`.
    public init(
        rows: Int, columns: Int, pixels: [UInt8], labels: [UInt8], classCount: Int? = nil,
        source: String = "in-memory data set"
    ) throws(IDXError) {
        guard rows > 0, columns > 0 else {
            throw .invalidShape(source, detail: "images of \(rows)x\(columns) pixels; both sizes must be at least 1")
        }
        let (featureCount, overflow) = rows.multipliedReportingOverflow(by: columns)
        guard !overflow, pixels.count.isMultiple(of: featureCount),
              pixels.count / featureCount == labels.count
        else {
            throw .invalidShape(source, detail: "\(pixels.count) pixels do not make \(labels.count) "
                + "images of \(rows)x\(columns); there must be rows*columns pixels per label")
        }
        let classes = try Self.checkLabels(labels, classCount: classCount, source: source)
        self.init(validatedCount: labels.count, rows: rows, columns: columns,
                  classCount: classes, pixels: pixels, labels: labels)
    }

    private init(
        validatedCount count: Int, rows: Int, columns: Int, classCount: Int,
        pixels: [UInt8], labels: [UInt8]
    ) {
        self.count = count
        self.rows = rows
        self.columns = columns
        self.classCount = classCount
        self.pixels = pixels
        self.labels = labels
    }

    /// Returns the class count to use, after checking every label against it.
    private static func checkLabels(
        _ labels: [UInt8], classCount: Int?, source: String
    ) throws(IDXError) -> Int {
        if let classCount {
            guard (1...256).contains(classCount) else {
                throw .invalidClassCount(source, classCount)
            }
            if let index = labels.firstIndex(where: { Int($0) >= classCount }) {
                throw .labelOutOfRange(source, sample: index, label: Int(labels[index]),
                                       classCount: classCount)
            }
            return classCount
        }
        return Int(labels.max() ?? 0) + 1
    }

    /// Loads a data set from an IDX images file (count x rows x columns unsigned bytes) and an IDX
    /// labels file (count unsigned bytes), each raw or gzip-compressed.
    ///
    /// - Parameters:
    ///   - classCount: the number of classes, or `nil` for the largest label plus one.
    ///   - maximumBytes: the largest file, decompressed, that will be read into memory.
    /// - Throws: ``IDXError``, naming the file at fault; a count mismatch names both files.
    public static func load(
        images imagesPath: String, labels labelsPath: String, classCount: Int? = nil,
        maximumBytes: Int = IDXArray.defaultMaximumBytes
    ) throws(IDXError) -> LabeledDataSet {
        let images = try IDXArray.read(path: imagesPath, expectedRank: 3, maximumBytes: maximumBytes)
        let labels = try IDXArray.read(path: labelsPath, expectedRank: 1, maximumBytes: maximumBytes)
        guard images.dimensions[0] == labels.dimensions[0] else {
            throw .countMismatch(imagesPath: imagesPath, images: images.dimensions[0],
                                 labelsPath: labelsPath, labels: labels.dimensions[0])
        }
        let classes = try checkLabels(labels.elements, classCount: classCount, source: labelsPath)
        return LabeledDataSet(
            validatedCount: labels.dimensions[0], rows: images.dimensions[1],
            columns: images.dimensions[2], classCount: classes,
            pixels: images.elements, labels: labels.elements)
    }

    /// Each sample's nonzero pixels, indexed when first asked for (a pass over all pixels; MNIST's
    /// training set: ~27 MB) and kept: sparse batches are gathered from it by copying their
    /// samples' entries. `nil` for images of more than `SparseByteRows.maximumRowLength` pixels.
    public var sparsePixels: SparseByteRows? {
        guard featureCount <= SparseByteRows.maximumRowLength else { return nil }
        return sparseIndex.value { [pixels, featureCount] in
            pixels.withUnsafeBufferPointer { SparseByteRows($0, rowLength: featureCount) }
        }
    }

    /// Two data sets are equal when their images, labels and class counts are.
    public static func == (a: LabeledDataSet, b: LabeledDataSet) -> Bool {
        a.count == b.count && a.rows == b.rows && a.columns == b.columns && a.classCount == b.classCount
            && a.labels == b.labels && a.pixels == b.pixels
    }

    /// The pixels of one sample, row after row. `sample` must be in `0..<count`.
    public func pixels(of sample: Int) -> ArraySlice<UInt8> {
        precondition(sample >= 0 && sample < count, "sample \(sample) is not in 0..<\(count)")
        let start = sample * featureCount
        return pixels[start..<start + featureCount]
    }

    /// Calls `body` with the pixels of the samples in `samples`, contiguous, image after image.
    public func withPixels<Result, Failure: Error>(
        of samples: Range<Int>, _ body: (UnsafeBufferPointer<UInt8>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        precondition(samples.lowerBound >= 0 && samples.upperBound <= count,
                     "samples \(samples) are not within 0..<\(count)")
        let width = featureCount
        return try pixels.withUnsafeBufferPointer { (all) throws(Failure) -> Result in
            try body(UnsafeBufferPointer(rebasing: all[samples.lowerBound * width ..< samples.upperBound * width]))
        }
    }

    /// The label of one sample, in `0..<classCount`. `sample` must be in `0..<count`.
    public func label(of sample: Int) -> Int {
        Int(labels[sample])
    }

    /// The samples in `range`, with the same image size and class count.
    public func subset(_ range: Range<Int>) -> LabeledDataSet {
        precondition(range.lowerBound >= 0 && range.upperBound <= count,
                     "range \(range) is not within 0..<\(count)")
        let width = featureCount
        return LabeledDataSet(
            validatedCount: range.count, rows: rows, columns: columns, classCount: classCount,
            pixels: Array(pixels[range.lowerBound * width ..< range.upperBound * width]),
            labels: Array(labels[range]))
    }

    /// The first `length` samples (all of them if there are fewer).
    public func prefix(_ length: Int) -> LabeledDataSet {
        subset(0..<min(max(length, 0), count))
    }
}

/// Finds and loads an image-classification data set stored as IDX files in a directory: the
/// MNIST database of handwritten digits (the repository ships it in `data/mnist`), or any
/// set laid out the same way (Fashion-MNIST, EMNIST, KMNIST, your own).
///
/// The directory holds four files: training images and labels, test images and labels. Each
/// is found by its usual name (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`), raw or gzip-compressed (`.gz`; the
/// uncompressed copy is read when both are present), or else by a name that contains the
/// same parts (`emnist-letters-train-images-idx3-ubyte.gz`, `test-images.idx3-ubyte`). The
/// image size comes from the files and the number of classes from the labels (the largest
/// label plus one).
public enum MNIST {
    /// The name of the training images file, without `.gz`.
    public static let trainImages = "train-images-idx3-ubyte"
    /// The name of the training labels file, without `.gz`.
    public static let trainLabels = "train-labels-idx1-ubyte"
    /// The name of the test images file, without `.gz`.
    public static let testImages = "t10k-images-idx3-ubyte"
    /// The name of the test labels file, without `.gz`.
    public static let testLabels = "t10k-labels-idx1-ubyte"

    /// Loads the training set and the test set from `directory`.
    ///
    /// - Throws: ``IDXError``; a missing file is reported with the directory, the file's name and
    ///   where to get MNIST; images of different sizes in the two sets are refused.
    public static func load(directory: String) throws(IDXError) -> (train: LabeledDataSet, test: LabeledDataSet) {
        guard isDirectory(directory) else {
            throw .dataSetFileMissing(
                directory: directory, missing: "no such directory",
                hint: "pass the directory holding the IDX files (the repository ships MNIST in data/mnist)")
        }
        let train = try LabeledDataSet.load(
            images: try locate(trainImages, in: directory),
            labels: try locate(trainLabels, in: directory))
        let test = try LabeledDataSet.load(
            images: try locate(testImages, in: directory),
            labels: try locate(testLabels, in: directory))
        guard train.rows == test.rows, train.columns == test.columns else {
            throw .invalidShape(directory, detail: "the training images are \(train.rows)x\(train.columns) pixels, "
                + "the test images \(test.rows)x\(test.columns); both sets must have images of one size")
        }
        // Both sets use the classes either one has a label of.
        let classes = max(train.classCount, test.classCount, 2)
        func widened(_ set: LabeledDataSet, _ name: String) throws(IDXError) -> LabeledDataSet {
            guard set.classCount != classes else { return set }
            return try LabeledDataSet(rows: set.rows, columns: set.columns, pixels: set.pixels, labels: set.labels,
                                      classCount: classes, source: "\(directory) (\(name))")
        }
        return (try widened(train, "training set"), try widened(test, "test set"))
    }

    /// The path of the file for `name` in `directory`: `name` or `name.gz`, preferring the
    /// uncompressed file; else the one file whose name holds the same parts (such as
    /// `emnist-digits-train-images-idx3-ubyte.gz` for `train-images-idx3-ubyte`).
    static func locate(_ name: String, in directory: String) throws(IDXError) -> String {
        let base = directory.hasSuffix("/") ? directory + name : directory + "/" + name
        for candidate in [base, base + ".gz"] where exists(candidate) {
            return candidate
        }
        // "train-images-idx3-ubyte" -> role "train-images" (or "test-images" for t10k) and
        // format "idx3-ubyte"; separators may be "-" or ".".
        let parts = name.split(separator: "-")
        let kind = parts[1], format = parts[2] + "-" + parts[3]
        let sets = parts[0] == "t10k" ? ["t10k", "test"] : ["train"]
        let listing = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let matches = listing.filter { file in
            let lower = file.lowercased()
            return sets.contains { set in lower.contains("\(set)-\(kind)") }
                && (lower.hasSuffix(format) || lower.hasSuffix(format + ".gz"))
        }.sorted()
        // Of a raw and a gzip copy of the same file, the raw one.
        let distinct = matches.filter { !$0.hasSuffix(".gz") || !matches.contains(String($0.dropLast(3))) }
        if distinct.count == 1 {
            return (directory.hasSuffix("/") ? directory : directory + "/") + distinct[0]
        }
        if distinct.count > 1 {
            throw .dataSetFileMissing(
                directory: directory,
                missing: "several files could be the \(name) file: \(distinct.joined(separator: ", "))",
                hint: "keep one data set per directory")
        }
        throw .dataSetFileMissing(
            directory: directory,
            missing: "missing IDX file \(name) (looked for \(name), \(name).gz, and names containing "
                + "\(sets.map { "\($0)-\(kind)" }.joined(separator: " or ")) and ending in \(format))",
            hint: "the repository ships MNIST in data/mnist (restore it with `git checkout -- data/mnist`); "
                + "elsewhere, copy the four IDX files (training images and labels, test images and labels) "
                + "into this directory; MNIST itself is at https://yann.lecun.com/exdb/mnist/ and mirrors")
    }

    private static func exists(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0
    }

    private static func isDirectory(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFDIR
    }
}

/// Holds a data set's `SparseByteRows` once built; copies of the data set share it.
private final class SparsePixelIndex: Sendable {
    private let index = Mutex<SparseByteRows?>(nil)

    /// The index, built by `build` on the first call.
    func value(_ build: () -> SparseByteRows) -> SparseByteRows {
        index.withLock { stored in
            if let stored { return stored }
            let built = build()
            stored = built
            return built
        }
    }
}
