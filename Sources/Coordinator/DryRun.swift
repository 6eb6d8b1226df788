import Foundation
import Training
import Wire

/// `coordinator --dry-run`: everything a run needs, checked without training.
enum DryRun {
    /// Reaches every worker at once and prints one line per worker; true if all answered.
    static func check(addresses: [String], sizes: [Int], train: LabeledDataSet, test: LabeledDataSet) async -> Bool {
        let console = Console.shared
        console.line("data: \(train.count) training and \(test.count) test samples, \(train.featureCount) features, \(train.classCount) classes")
        console.line("model: \(sizes.map(String.init).joined(separator: "-")), protocol version \(WireProtocol.version)")
        let hello = Hello(sessionID: UInt64.random(in: 1...UInt64.max), signature: ModelSignature(layerSizes: sizes),
                          coordinatorName: ProcessInfo.processInfo.hostName)
        let results = await withTaskGroup(of: (Int, Result<(HelloAck, Double), Error>).self) { group in
            for (i, address) in addresses.enumerated() {
                group.addTask {
                    let link = WorkerLink(index: i, address: address)
                    do { return (i, .success(try await link.probe(hello: hello))) } catch { return (i, .failure(error)) }
                }
            }
            var all: [(Int, Result<(HelloAck, Double), Error>)] = []
            for await result in group { all.append(result) }
            return all.sorted { $0.0 < $1.0 }
        }
        var failures = 0
        for (i, result) in results {
            switch result {
            case .success(let (ack, seconds)):
                console.line(String(format: "  ok      %@  %@, OpenBLAS %@, %d thread(s), handshake %.0f ms",
                                    addresses[i], ack.workerName, ack.blasKernel, ack.threadCount, seconds * 1000))
            case .failure(let error):
                failures += 1
                console.line("  FAILED  \(addresses[i])  \(error)")
            }
        }
        console.line(failures == 0 ? "all \(addresses.count) worker(s) ready; nothing was trained (--dry-run)"
                                   : "\(failures) of \(addresses.count) worker(s) cannot be used")
        return failures == 0
    }
}
