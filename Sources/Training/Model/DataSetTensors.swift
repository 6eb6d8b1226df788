import Engine

/// Conversions from a labelled data set's bytes to the tensors the network reads: pixels
/// scaled to 0...1, labels as class indices or one-hot vectors.
extension LabeledDataSet {
    /// Sample `index` as a vector of pixel intensities in 0...1.
    @_specialize(exported: true, where S == Float)
    @_specialize(exported: true, where S == Double)
    public func sampleVector<S: TensorScalar>(_ index: Int, as: S.Type = S.self) -> Vector<S> {
        let n = featureCount
        precondition(index >= 0 && index < count, "sample \(index) out of range for a data set of \(count)")
        return Vector(count: n) { out in
            pixels.withUnsafeBufferPointer { pixels in
                let base = index * n
                for j in 0..<n { out[j] = S(pixels[base + j]) * (1 / 255) }
            }
        }
    }

    /// Label `index` as a one-hot vector of `classCount` entries.
    @_specialize(exported: true, where S == Float)
    @_specialize(exported: true, where S == Double)
    public func oneHot<S: TensorScalar>(_ index: Int, as: S.Type = S.self) -> Vector<S> {
        precondition(index >= 0 && index < count, "sample \(index) out of range for a data set of \(count)")
        var t = Vector<S>.zeros(classCount)
        t[label(of: index)] = 1
        return t
    }

    /// The samples at `indices` as the rows of a matrix (pixel intensities in 0...1).
    public func batchMatrix<S: TensorScalar>(_ indices: [Int], as: S.Type = S.self) -> Matrix<S> {
        let n = featureCount
        for index in indices {
            precondition(index >= 0 && index < count, "sample \(index) out of range for a data set of \(count)")
        }
        return Matrix(rows: indices.count, columns: n) { out in
            let destination = out.baseAddress!
            pixels.withUnsafeBufferPointer { pixels in
                let source = pixels.baseAddress!
                ParallelLoop.forEachChunk(indices.count, minimumPerThread: 256) { rows in
                    for row in rows {
                        S.convert(bytes: source + indices[row] * n, scale: 1 / 255,
                                  into: destination + row * n, count: n)
                    }
                }
            }
        }
    }

    /// The labels of the samples at `indices`.
    public func batchLabels(_ indices: [Int]) -> [Int] {
        indices.map { label(of: $0) }
    }
}
