import Foundation

/// Matrix products, broadcasting and the softmax family on variables: the primitives of a
/// dense network, each with its pullback (no gradient is computed for a constant argument).

/// Matrix-vector product `m * x` (the tutorial's `#>!`).
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func matvec<S>(_ m: BVar<Matrix<S>>, _ x: BVar<Vector<S>>) -> BVar<Vector<S>> {
    op2 { (m: Matrix<S>, x: Vector<S>) in
        // A sparse x (an image) is compressed once, for the product and for the gradient.
        let entries = SparseEntries(x)
        return (m.matvec(entries), { g in Matrix.outer(g, entries) }, { g in m.transposedMatvec(g) })
    }(m, x)
}

/// `m * x + b` in one primitive (a dense layer on one sample): the same values as
/// `matvec(m, x) + b`, with one recorded operation and one result vector instead of two.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func matvec<S>(_ m: BVar<Matrix<S>>, _ x: BVar<Vector<S>>, plus b: BVar<Vector<S>>) -> BVar<Vector<S>> {
    op3 { (m: Matrix<S>, x: Vector<S>, b: Vector<S>) in
        precondition(b.count == m.rows,
                     "shape mismatch in matvec plus: \(m.shapeDescription) times Vector[\(x.count)] plus Vector[\(b.count)]")
        let saved = MatvecOperands(m, SparseEntries(x))
        var y = m.matvec(saved.x)
        y.add(b)
        // Both pullbacks capture the one object (a closure whose only capture is one object
        // uses it as its context: no allocation per pullback).
        return (y, { g in Matrix.outer(g, saved.x) }, { g in saved.m.transposedMatvec(g) }, { g in g })
    }(m, x, b)
}

/// `mᵀ * x + b` in one primitive: a dense layer on one sample when `m` holds the weights by
/// input (inputs x outputs, the layout of `Layer`). For a sparse `x` (an image), the product
/// reads only the rows of `x`'s nonzeros, and the weights' gradient `x gᵀ` stays pending
/// (`Matrix.outer`), so that a descent step adds it to those rows only.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func transposedMatvec<S>(_ m: BVar<Matrix<S>>, _ x: BVar<Vector<S>>, plus b: BVar<Vector<S>>) -> BVar<Vector<S>> {
    op3 { (m: Matrix<S>, x: Vector<S>, b: Vector<S>) in
        precondition(m.rows == x.count && b.count == m.columns,
                     "shape mismatch in transposedMatvec plus: \(m.shapeDescription)ᵀ times Vector[\(x.count)] plus Vector[\(b.count)]")
        let saved = MatvecOperands(m, SparseEntries(x))
        let y = m.transposedMatvec(saved.x, plus: b)
        // As in `matvec(_:_:plus:)`, both pullbacks capture the one object.
        return (y, { g in Matrix.outer(saved.x, g) }, { g in saved.m.matvec(SparseEntries(dense: g)) }, { g in g })
    }(m, x, b)
}

/// What the pullbacks of a matrix-vector product keep of its operands, as one object that both
/// capture (a closure whose only capture is one object uses it as its context: no allocation per
/// pullback). `matvec(_:_:plus:)`, `transposedMatvec(_:_:plus:)` and the model's per-sample
/// layer use it.
public final class MatvecOperands<S: TensorScalar> {
    public let m: Matrix<S>
    public let x: SparseEntries<S>

    public init(_ m: Matrix<S>, _ x: SparseEntries<S>) {
        self.m = m
        self.x = x
    }
}

/// Matrix product `op(a) * op(b)`, where `op` transposes when asked (one GEMM forward, one per
/// argument backward).
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func matmul<S>(_ a: BVar<Matrix<S>>, _ b: BVar<Matrix<S>>,
                      transposeA ta: Bool = false, transposeB tb: Bool = false) -> BVar<Matrix<S>> {
    op2 { (a: Matrix<S>, b: Matrix<S>) in
        let value = Matrix.matmul(a, b, transposeA: ta, transposeB: tb)
        let pullA: (Matrix<S>) -> Matrix<S> = { g in
            switch (ta, tb) {
            case (false, false): Matrix.matmul(g, b, transposeB: true)
            case (false, true): Matrix.matmul(g, b)
            case (true, false): Matrix.matmul(b, g, transposeB: true)
            case (true, true): Matrix.matmul(b, g, transposeA: true, transposeB: true)
            }
        }
        let pullB: (Matrix<S>) -> Matrix<S> = { g in
            switch (ta, tb) {
            case (false, false): Matrix.matmul(a, g, transposeA: true)
            case (false, true): Matrix.matmul(g, a, transposeA: true)
            case (true, false): Matrix.matmul(a, g)
            case (true, true): Matrix.matmul(g, a, transposeA: true, transposeB: true)
            }
        }
        return (value, pullA, pullB)
    }(a, b)
}

/// Adds the vector `v` to every row of `m` (a bias added to a batch of samples).
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func addingToEachRow<S>(_ m: BVar<Matrix<S>>, _ v: BVar<Vector<S>>) -> BVar<Matrix<S>> {
    op2 { (m: Matrix<S>, v: Vector<S>) in
        (m.addingToEachRow(v), { $0 }, { $0.columnSums() })
    }(m, v)
}

/// A dense layer on a batch: `x * weights + biases` on every row of `x` (`weights` stored by
/// input, inputs x outputs), in one GEMM forward (biases pre-filled) and one GEMM per matrix
/// argument backward.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func affine<S>(_ x: BVar<Matrix<S>>, _ weights: BVar<Matrix<S>>, _ biases: BVar<Vector<S>>) -> BVar<Matrix<S>> {
    op3 { (x: Matrix<S>, w: Matrix<S>, b: Vector<S>) in
        (Matrix.affine(x, w, b),
         { g in Matrix.matmul(g, w, transposeB: true) },
         { g in Matrix.matmul(x, g, transposeA: true) },
         { g in g.columnSums() })
    }(x, weights, biases)
}

/// A dense layer on a sparse batch: `x * weights + biases` on every row of `x` (`weights`
/// inputs x outputs), where `x` is a constant (an input batch; no gradient flows into it).
/// Work is proportional to the nonzeros of `x`, forward and for the weights' gradient; the
/// biases' gradient is the column sums. Equal to `affine(constVar(x.dense()), weights,
/// biases)` up to rounding, and the same bits on any number of threads.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func sparseAffine<S>(_ x: SparseMatrix<S>, _ weights: BVar<Matrix<S>>,
                            _ biases: BVar<Vector<S>>) -> BVar<Matrix<S>> {
    op2 { (w: Matrix<S>, b: Vector<S>) in
        (x.affine(w, b),
         { g in x.weightGradient(g) },
         { g in g.columnSums() })
    }(weights, biases)
}

/// `e^x / sum(e^x)`, computed stably (a primitive, so its gradient is exact and cheap).
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func softMax<S>(_ x: BVar<Vector<S>>) -> BVar<Vector<S>> {
    op1 { (x: Vector<S>) in
        let y = x.softMax()
        return (y, { g in let s = g.dot(y); return y.zipMap(g, "softMax") { y, g in y * (g - s) } })
    }(x)
}

/// Cross-entropy of predicted probabilities against a target distribution:
/// `-(log probabilities · target)`, as one primitive (its gradient is `-target / probabilities`).
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func crossEntropy<S>(_ target: Vector<S>, _ probabilities: BVar<Vector<S>>) -> BVar<S> {
    op1 { (p: Vector<S>) in
        precondition(p.count == target.count,
                     "shape mismatch in crossEntropy: Vector[\(target.count)] target, Vector[\(p.count)] probabilities")
        return (-p.log().dot(target), { g in target.zipMap(p, "crossEntropy") { t, p in -g * t / p } })
    }(probabilities)
}

/// `crossEntropy(oneHot(label), softMax(logits))` in one stable primitive: the loss is
/// `logSumExp(logits) - logits[label]`, its gradient `softMax(logits) - oneHot(label)`.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func softMaxCrossEntropy<S>(logits: BVar<Vector<S>>, label: Int) -> BVar<S> {
    op1 { (z: Vector<S>) in
        precondition(label >= 0 && label < z.count, "label \(label) out of range for \(z.count) classes")
        let top = z.indexOfMaximum
        let p = z.softMax()
        // log(sum_k e^(z_k - m)) is -log p_top (m = z_top): no second pass of exponentials,
        // and p_top >= 1/n never underflows.
        let loss = S(-Foundation.log(Double(p[top])) - Double(z[label] - z[top]))
        return (loss, { g in
            var d = p
            d[label] -= 1
            d.scale(by: g)
            return d
        })
    }(logits)
}

/// `crossEntropy(target, softMax(logits))` in one stable primitive, for any target
/// distribution: the loss is `sum(target) * logSumExp(logits) - logits · target`, its gradient
/// `sum(target) * softMax(logits) - target` (`softMax(logits) - target` for a one-hot target).
/// One recorded operation instead of two, and no logarithm of a probability that underflowed.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func softMaxCrossEntropy<S>(logits: BVar<Vector<S>>, target: Vector<S>) -> BVar<S> {
    op1 { (z: Vector<S>) in
        precondition(target.count == z.count,
                     "shape mismatch in softMaxCrossEntropy: Vector[\(z.count)] logits, Vector[\(target.count)] target")
        let top = z.indexOfMaximum
        let p = z.softMax()
        // loss = sum_j t_j * (log(sum_k e^(z_k - m)) - (z_j - m)) with m = z_top, where the
        // logarithm is -log p_top (as in the label form), accumulated in Double.
        let m = z[top]
        var targetSum = 0.0, shiftedDot = 0.0
        z.withUnsafeBufferPointer { zp in
            target.withUnsafeBufferPointer { tp in
                for j in 0..<zp.count where tp[j] != 0 {
                    targetSum += Double(tp[j])
                    shiftedDot += Double(tp[j]) * Double(zp[j] - m)
                }
            }
        }
        let loss = S(-targetSum * Foundation.log(Double(p[top])) - shiftedDot)
        return (loss, { g in
            var d = p
            let scale = S(targetSum)
            d.withUnsafeMutableBufferPointer { dp in
                target.withUnsafeBufferPointer { tp in
                    for j in 0..<dp.count { dp[j] = g * (scale * dp[j] - tp[j]) }
                }
            }
            return d
        })
    }(logits)
}

/// Sum over the rows of a batch of logits of the softmax cross-entropy against each row's
/// class label; stable for any logits.
@_specialize(exported: true, where S == Float)
@_specialize(exported: true, where S == Double)
public func softMaxCrossEntropy<S>(logits: BVar<Matrix<S>>, labels: [Int]) -> BVar<S> {
    op1 { (z: Matrix<S>) in
        precondition(labels.count == z.rows,
                     "shape mismatch in softMaxCrossEntropy: \(z.shapeDescription) with \(labels.count) labels")
        let p = z.softMaxRows()
        let c = z.columns
        // loss_i = log(sum_j e^(z_ij - m_i)) - (z_i,label - m_i), with m_i the row maximum.
        var loss = 0.0
        z.withUnsafeBufferPointer { zp in
            for (i, label) in labels.enumerated() {
                precondition(label >= 0 && label < c, "label \(label) out of range for \(c) classes")
                let row = zp[(i * c)..<(i * c + c)]
                let m = row.max()!
                let sumExp = row.reduce(0.0) { $0 + Foundation.exp(Double($1 - m)) }
                loss += Foundation.log(sumExp) - Double(row[i * c + label] - m)
            }
        }
        return (S(loss), { g in
            var d = p
            d.withUnsafeMutableBufferPointer { dp in
                for (i, label) in labels.enumerated() { dp[i * c + label] -= 1 }
            }
            if g != 1 { d.scale(by: g) }
            return d
        })
    }(logits)
}
