// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "backprop-swift",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "Engine", targets: ["Engine"]),
        .library(name: "Training", targets: ["Training"]),
        .executable(name: "backprop-mnist", targets: ["BackpropMNIST"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // System libraries (Debian: libopenblas-dev, zlib1g-dev; found through pkg-config).
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        // Tensors on OpenBLAS and the reverse-mode AD engine.
        .target(name: "Engine", dependencies: ["COpenBLAS"],
                swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]),
        // What the programs share: the MNIST model, IDX data sets.
        .target(name: "Training", dependencies: ["Engine", "CZlib"]),
        // The tutorial's program, single process.
        .executableTarget(name: "BackpropMNIST", dependencies: [
            "Engine", "Training",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "EngineTests", dependencies: ["Engine"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Engine"]),
    ]
)
