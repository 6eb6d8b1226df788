// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "backprop-swift",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Engine", targets: ["Engine"]),
        .library(name: "Training", targets: ["Training"]),
        .library(name: "Wire", targets: ["Wire"]),
        .executable(name: "backprop-mnist", targets: ["BackpropMNIST"]),
        .executable(name: "engine-bench", targets: ["EngineBenchmarks"]),
        .executable(name: "worker", targets: ["Worker"]),
        .executable(name: "coordinator", targets: ["Coordinator"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // Pinned to 4.5.x: Wire uses swift-crypto's internal BoringSSL module (see FrameCipher.swift).
        .package(url: "https://github.com/apple/swift-crypto", .upToNextMinor(from: "4.5.2")),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // System libraries (Debian: libopenblas-dev, zlib1g-dev, libzstd-dev; found through pkg-config).
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),

        // C kernels (AVX2 with a portable fallback, the same bits): a dense layer on a sparse input
        // batch, element-wise exp and logistic, and the coordinator's Adam step and shard sums.
        .target(name: "CSparseKernels"),
        // CRC-32C for the wire protocol's split float payloads (the processor's instruction
        // where there is one).
        .target(name: "CChecksum"),
        // Atomic loads and stores on memory shared with another process (Wire's shared payload region).
        .target(name: "CSharedMemory"),
        // Scheduler affinity (binding `coordinator --local`'s workers to CPUs of their own).
        .target(name: "CAffinity"),
        // Tensors on OpenBLAS and the reverse-mode AD engine.
        .target(name: "Engine", dependencies: ["COpenBLAS", "CSparseKernels"]),
        // What the programs share: the MNIST model, IDX data sets.
        .target(name: "Training", dependencies: [
            "Engine", "CSparseKernels", "CZlib", "CAffinity", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // The tutorial's program, single process.
        .executableTarget(name: "BackpropMNIST", dependencies: [
            "Engine", "Training",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Benchmarks of the Engine (engine-bench; see BENCHMARKS.md).
        .executableTarget(name: "EngineBenchmarks", dependencies: [
            "Engine", "Training", "Wire",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]),

        // The coordinator-worker protocol: framing, messages, compressed float payloads. FrameCipher
        // imports CCryptoBoringSSL, swift-crypto's internal BoringSSL module (not a product; visible
        // through Crypto on Linux, and free to change in any swift-crypto release).
        .target(name: "Wire", dependencies: [
            "CZstd", "CChecksum", "CSharedMemory",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),

        // The worker executable: serves shard gradients to a coordinator.
        .executableTarget(name: "Worker", dependencies: [
            "Engine", "Training", "Wire",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // The coordinator executable: shards batches across workers, reduces, steps.
        .executableTarget(name: "Coordinator", dependencies: [
            "Engine", "Training", "Wire",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),

        // What the test targets share: temporary directories removed when the tests end.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "EngineTests", dependencies: ["Engine"]),
        .testTarget(name: "TrainingTests", dependencies: [
            "Training", "Engine", "CSparseKernels", "TestSupport", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "WireTests", dependencies: [
            "Wire", "TestSupport", "CChecksum",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "DistributedTests", dependencies: [
            "Training", "Engine", "Wire", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // Unit tests of the coordinator's own code (the learning-curve plot).
        .testTarget(name: "CoordinatorTests", dependencies: ["Coordinator"]),
    ]
)
