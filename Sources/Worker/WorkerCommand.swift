import ArgumentParser
import Engine
import Foundation
import Logging
import NIOCore
import NIOPosix
import Training
import Wire

/// The `worker` executable: listens for a coordinator and computes shard gradients for it.
@main
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Compute gradients for a training coordinator.",
        discussion: """
            A worker listens on an address, serves one coordinator session at a time, and keeps
            the data sets it was sent (by SHA-256) for the next session.

            Examples:
              worker                          # listen on 127.0.0.1:7070
              worker --listen 0.0.0.0:7070    # listen on every interface
              worker --listen 127.0.0.1:0     # any free port (printed on start)
              worker --listen 0.0.0.0:7070 --secret-file /etc/backprop/secret

            With a shared secret (--secret-file FILE, or BACKPROP_SECRET_FILE=FILE, or the
            systemd credential "backprop-secret"), only a coordinator that proves it knows the
            secret is served, and every frame is encrypted and authenticated. Without one, the
            worker listens only on loopback unless given --insecure. See docs/SECURITY.md.
            """)

    @Option(help: "Address to listen on, HOST:PORT (port 0: any free port).")
    var listen = "127.0.0.1:\(WireProtocol.defaultPort)"

    @Option(help: "Shards computed at once, each on one BLAS thread (default: all cores).")
    var threads: Int?

    @Option(help: "Exit after serving this many sessions (default: serve forever).")
    var sessions: Int?

    @Option(help: "Seconds without a byte from the coordinator (which sends heartbeats twice a second) after which a session is over.")
    var idleTimeout: Double = 15

    @Option(help: "Compress the gradients sent: auto (not to a coordinator on this machine), zstd, or none.")
    var compression: CompressionPolicy = .auto

    @Option(help: "Accept a coordinator's offer to pass parameters and gradients through shared memory (a coordinator on this machine): on or off.")
    var sharedMemory: SharedMemoryPolicy = .on

    @Option(help: "Least important log messages shown: trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    @Flag(help: "Exit when the parent process ends (used by coordinator --local).")
    var exitWithParent = false

    @Option(help: "File holding the secret shared with the coordinator (mode 600, at least 16 bytes); or set BACKPROP_SECRET_FILE.")
    var secretFile: String?

    @Flag(help: "Allow listening beyond loopback without a secret (anyone who can reach the port can use the worker).")
    var insecure = false

    @Option(help: "Seconds a started frame may take to arrive completely before the peer is dropped.")
    var frameTimeout: Double = 30

    @Option(help: "Run only on these CPUs, in the kernel's list notation (3, 0-3, 0,2); coordinator --local gives each worker its own (default: any).")
    var cpus: String?

    @Option(help: ArgumentHelp("Append each session's gradient computations to this file: one line per shard, its start and end on the host's monotonic clock (for benchmarks: bench/outside.sh).", valueName: "file"))
    var computationLog: String?

    func validate() throws {
        guard ListenAddress(listen) != nil else {
            throw ValidationError("--listen must be HOST:PORT, like 127.0.0.1:7070 or 0.0.0.0:7070; got '\(listen)'")
        }
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1, got \(t)") }
        guard idleTimeout > 0, idleTimeout < 86_400 else {
            throw ValidationError("--idle-timeout must be between 0 and 86400 seconds, got \(idleTimeout)")
        }
        guard frameTimeout > 0, frameTimeout < 86_400 else {
            throw ValidationError("--frame-timeout must be between 0 and 86400 seconds, got \(frameTimeout)")
        }
        if let cpus, CPUAffinity.parse(cpus) == nil {
            throw ValidationError("--cpus must be a CPU list like 3, 0-3 or 0,2 (CPUs 0 to 1023); got '\(cpus)'")
        }
        if let path = computationLog {
            // Checked now rather than at the end of the first session.
            do {
                _ = try SessionTiming.openLog(path)
            } catch {
                throw ValidationError("--computation-log \(path): cannot open it for appending (\(error))")
            }
        }
    }

    func run() async throws {
        // Before any thread of ours starts, so that they all inherit the CPUs.
        let cpuList = cpus.flatMap(CPUAffinity.parse)
        if let cpuList {
            do {
                try CPUAffinity.restrictProcess(to: cpuList)
            } catch {
                throw ValidationError("--cpus \(cpus!): \(error)")
            }
        }
        if exitWithParent { ParentWatch.exitWhenParentEnds() }
        let parallelism = threads ?? cpuList?.count ?? ProcessInfo.processInfo.activeProcessorCount
        let blas = BLASRuntime.prepareProcess(threads: 1)
        let logger = {
            var logger = Logger(label: "worker")
            logger.logLevel = logLevel
            return logger
        }()
        if let cpuList, parallelism > cpuList.count {
            logger.warning("\(parallelism) shards at once (--threads) on \(cpuList.count) CPU(s) (--cpus): they will take turns on them")
        }
        let address = ListenAddress(listen)!
        let secret: SharedSecret?
        do {
            secret = try SharedSecret.resolve(option: secretFile)
        } catch {
            throw ValidationError("\(error)")
        }
        if secret == nil && !insecure && !isLoopbackHost(address.host) {
            throw ValidationError("""
                refusing to listen on \(listen) without a secret: anyone who can reach that port could \
                send this worker data and tasks and take its CPU. Give a shared secret with \
                --secret-file FILE (or \(SharedSecret.environmentVariable)=FILE), or pass --insecure on a \
                trusted network, or listen on 127.0.0.1.
                """)
        }
        let security: WireSecurity = secret.map(WireSecurity.sharedSecret) ?? .none
        let idle = TimeAmount.nanoseconds(Int64(idleTimeout * 1e9))
        let deadlines = WireDeadlines(frame: .nanoseconds(Int64(frameTimeout * 1e9)))
        if let secret {
            logger.info("authenticating coordinators with the secret in \(secret.path)")
        } else if !isLoopbackHost(address.host) {
            logger.warning("listening on \(address.host) without a secret (--insecure): anyone who can reach the port can use this worker")
        }
        let server: NIOAsyncChannel<NIOAsyncChannel<WireMessage, WireMessage>, Never>
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .bind(host: address.host, port: address.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // A session with nothing from the coordinator for a while is over (it
                        // sends heartbeats twice a second): a coordinator that died or whose
                        // link was cut must not keep this worker from serving the next one.
                        let peer = channel.remoteAddress.map { "\($0)" } ?? "unknown peer"
                        try channel.pipeline.syncOperations.addHandlers(
                            IdleStateHandler(readTimeout: idle), CloseWhenIdle(logger: logger, peer: peer, timeout: idle))
                        let local = channel.remoteAddress?.ipAddress.map(isLoopbackHost) ?? false
                        try WirePipeline.configure(channel, role: .worker,
                                                   compression: compression.configuration(peerIsLoopback: local),
                                                   security: security, deadlines: deadlines, sharedMemory: sharedMemory)
                        return try NIOAsyncChannel<WireMessage, WireMessage>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw ValidationError("cannot listen on \(listen): \(error) (is another worker using that port? choose another with --listen)")
        }
        let bound = server.channel.localAddress?.port ?? address.port
        // The coordinator's --local mode reads this line to learn the port.
        FileHandle.standardOutput.write(Data("worker listening on \(address.host):\(bound) [\(blas)]\(cpuList.map { ", on CPUs \(CPUAffinity.format($0))" } ?? "")\n".utf8))

        let state = WorkerState(blas: blas, parallelism: parallelism, logger: logger, computationLog: computationLog)
        var served = 0
        try await server.executeThenClose { connections in
            for try await connection in connections {
                await state.serve(connection, parallelism: parallelism)
                served += 1
                if let limit = sessions, served >= limit { break }
            }
        }
    }
}

/// `HOST:PORT`, parsed.
struct ListenAddress {
    var host: String
    var port: Int

    init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65535).contains(port), colon > text.startIndex else { return nil }
        host = String(text[..<colon])
        self.port = port
    }
}

/// `--exit-with-parent`: the worker ends when the process that started it ends, even if that
/// process was killed with SIGKILL.
///
/// The parent's end is noticed by polling `getppid()` (an orphan is adopted by another
/// process). `PR_SET_PDEATHSIG` is not used: it fires when the *thread* that forked the worker
/// ends, and the threads of a Swift program come and go, which killed healthy workers.
enum ParentWatch {
    static func exitWhenParentEnds() {
        let parent = getppid()
        let thread = Thread {
            while true {
                if getppid() != parent { exit(0) }
                usleep(200_000)
            }
        }
        thread.name = "parent-watch"
        thread.start()
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

extension CompressionPolicy: ExpressibleByArgument {}
extension SharedMemoryPolicy: ExpressibleByArgument {}
