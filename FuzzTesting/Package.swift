// swift-tools-version:5.4
// libFuzzer harnesses for the Wire protocol (issue 4, docs/FUZZING.md).
//
// A separate package, as swift-protobuf's FuzzTesting/ is, and at tools version 5.4 on purpose:
// from 5.5 on, SwiftPM renames an executable's entry point to `<Module>_main` and links `main`
// to it, so an executable whose `main` must come from libFuzzer (built with `-parse-as-library`)
// fails to link ("undefined symbol 'FuzzFrameDecoder_main'", Swift 6.3.1 on Linux). Build and
// run with `bash FuzzTesting/run.sh SECONDS` from the repository root.
import PackageDescription

let package = Package(
    name: "FuzzTesting",
    platforms: [.macOS(.v10_15)],
    dependencies: [
        .package(name: "backprop-swift", path: ".."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        // What the harnesses share: the input's framing, the invariants they check, reading back sent frames.
        .target(name: "FuzzCommon", dependencies: [
            .product(name: "Wire", package: "backprop-swift"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]),
        // Arbitrary bytes into FrameDecoder, whole and one byte at a time.
        .executableTarget(name: "FuzzFrameDecoder", dependencies: [
            "FuzzCommon",
            .product(name: "Wire", package: "backprop-swift"),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        // Arbitrary type byte and payload into WireMessage.decode.
        .executableTarget(name: "FuzzMessageDecoder", dependencies: [
            "FuzzCommon",
            .product(name: "Wire", package: "backprop-swift"),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        // Arbitrary bytes into a worker's or coordinator's receiving pipeline (EmbeddedChannel).
        .executableTarget(name: "FuzzPipeline", dependencies: [
            "FuzzCommon",
            .product(name: "Wire", package: "backprop-swift"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]),
        // Arbitrary bytes into a pipeline with a shared secret, before authentication.
        .executableTarget(name: "FuzzHandshake", dependencies: [
            "FuzzCommon",
            .product(name: "Wire", package: "backprop-swift"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]),
    ]
)
