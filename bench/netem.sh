#!/usr/bin/env bash
# Step time against link speed: the coordinator and N workers in network namespaces on a bridge
# (as in Tests/DistributedTests/NetworkNamespaceTests.swift), every link shaped alike, one run
# per setting; prints a table of median step time and bytes per step per worker.
#
#   sudo bench/netem.sh [--workers N] [--steps S] [--bin DIR] [SETTING...]
#
# A SETTING is RATE/DELAY ("1gbit/0.5ms", "100mbit/2ms", "10mbit/10ms"), "none" (namespaces,
# no shaping) or "loopback" (coordinator --local N, no namespaces, for comparison); the delay is
# one way, added in both directions (RTT = 2 x DELAY). Shaping uses `tc qdisc ... netem delay
# DELAY rate RATE` on both ends of every veth; where the kernel has no netem (sch_netem), it falls
# back to `tbf` for the rate alone and says so in the table ("delay not applied").
# Needs root, iproute2, python3, and a release build (swift build -c release).
set -euo pipefail
cd "$(dirname "$0")/.."

workers=2 steps=12 bin=.build/release
while (($#)); do
    case "$1" in
        --workers) workers=${2:?}; shift 2 ;;
        --steps) steps=${2:?}; shift 2 ;;
        --bin) bin=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) break ;;
    esac
done
settings=("$@")
((${#settings[@]})) || settings=(loopback none 1gbit/0.5ms 200mbit/1ms 100mbit/2ms 10mbit/10ms)
[[ $(id -u) == 0 ]] || { echo "netem.sh: needs root (ip netns, tc)" >&2; exit 2; }
for exe in coordinator worker; do
    [[ -x $bin/$exe ]] || { echo "netem.sh: no $bin/$exe (swift build -c release)" >&2; exit 2; }
done

tag="bptbench$$"
sw="$tag-sw"
out=$(mktemp -d "${TMPDIR:-/tmp}/netem.XXXXXX")
pids=()
teardown() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
    for ns in $(ip netns list | awk -v t="$tag-" 'index($1, t) == 1 {print $1}'); do ip netns del "$ns"; done
}
trap 'teardown; rm -rf "$out"' EXIT

netem_ok=1
ip netns add "$tag-probe"
ip -n "$tag-probe" link add probe0 type veth peer name probe1
tc -n "$tag-probe" qdisc add dev probe0 root netem delay 1ms 2>/dev/null || netem_ok=0
ip netns del "$tag-probe"

# shape NS DEV RATE DELAY: egress of DEV in namespace NS.
shape() {
    local ns=$1 dev=$2 rate=$3 delay=$4
    if ((netem_ok)); then
        tc -n "$ns" qdisc add dev "$dev" root netem delay "$delay" rate "$rate" limit 100000
    else
        # Token bucket: a burst of 1 ms at the rate, at least 64 KiB (veth sends GSO super-packets).
        tc -n "$ns" qdisc add dev "$dev" root tbf rate "$rate" burst 64kb latency 200ms
    fi
}

# lab SETTING: host 0 (coordinator) and hosts 1..N (workers), 10.232.0.(i+1), on a bridge.
lab() {
    local setting=$1 i ns
    ip netns add "$sw"
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" link set br0 up
    for ((i = 0; i <= workers; i++)); do
        ns="$tag-h$i"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$sw" link add "p$i" type veth peer name eth0 netns "$ns"
        ip -n "$sw" link set "p$i" master br0 up
        ip -n "$ns" addr add "10.232.0.$((i + 1))/24" dev eth0
        ip -n "$ns" link set eth0 up
        if [[ $setting != none ]]; then
            shape "$ns" eth0 "${setting%/*}" "${setting#*/}"
            shape "$sw" "p$i" "${setting%/*}" "${setting#*/}"
        fi
    done
}

insecure=()
"$bin/worker" --help 2>/dev/null | grep -q -- --insecure && insecure=(--insecure)

# report METRICS SETTING SHAPING: one table row from a metrics file.
report() {
    python3 - "$1" "$workers" "$2" "$3" <<'PY'
import json, statistics, sys
path, workers, setting, shaping = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
steps = [json.loads(l) for l in open(path) if '"step"' in l]
body = steps[1:] or steps          # the first step also warms up
seconds = sorted(s["seconds"] for s in body)
median = statistics.median(seconds)
p90 = seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))]
sent = statistics.median(s["bytes_sent"] for s in body) / workers
received = statistics.median(s["bytes_received"] for s in body) / workers
points = 5000 / median
print(f"{setting:<14} {shaping:<22} {median:10.4f} {p90:10.4f} {sent / 1e6:11.2f} MB {received / 1e6:11.2f} MB {points:10.0f}")
PY
}

printf '%-14s %-22s %10s %10s %14s %14s %10s\n' setting shaping "step (s)" "p90 (s)" "sent/worker" "recv/worker" "points/s"
for setting in "${settings[@]}"; do
    metrics="$out/$(echo "$setting" | tr '/' '_').jsonl"
    if [[ $setting == loopback ]]; then
        "$bin/coordinator" --local "$workers" --threads-per-worker 1 --max-steps "$steps" --eval-every 0 \
            --metrics "$metrics" >"$out/coordinator.log" 2>&1 || { cat "$out/coordinator.log" >&2; exit 1; }
        report "$metrics" loopback "--local $workers"
        continue
    fi
    lab "$setting"
    list=()
    for ((i = 1; i <= workers; i++)); do
        ip netns exec "$tag-h$i" "$bin/worker" --listen "10.232.0.$((i + 1)):7070" --threads 1 \
            "${insecure[@]}" >"$out/worker$i.log" 2>&1 &
        pids+=($!)
        list+=("10.232.0.$((i + 1)):7070")
    done
    for ((i = 1; i <= workers; i++)); do
        until grep -q "listening on" "$out/worker$i.log"; do sleep 0.1; done
    done
    ip netns exec "$tag-h0" "$bin/coordinator" --workers "$(IFS=,; echo "${list[*]}")" \
        --max-steps "$steps" --eval-every 0 --metrics "$metrics" >"$out/coordinator.log" 2>&1 \
        || { cat "$out/coordinator.log" >&2; exit 1; }
    shaping=none
    if [[ $setting != none ]]; then
        if ((netem_ok)); then shaping="netem ${setting%/*} ${setting#*/}"; else shaping="tbf ${setting%/*} (delay not applied)"; fi
    fi
    report "$metrics" "$setting" "$shaping"
    teardown
done
