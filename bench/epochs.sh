#!/usr/bin/env bash
# One epoch of MNIST (60,000 points, batch 5000, 12 steps) with `coordinator --local 2` and
# `--local 1`, one BLAS thread per worker: the training time (`train_seconds` of the metrics),
# the first step and the median of the others, the median `answer_spread_ms` of the later steps
# (how long the worker done first waited for the other) and of `coordinator_cpu_ms` (the
# coordinator's CPU time per step; nan for a build without these), points/s of 2 workers
# over 1, and the model's SHA-256 (with --epochs N among the options, the runs have N epochs
# and the first epoch is also shown alone). With --base DIR, a second build (its
# coordinator and worker) runs alternately with this one, round after round, and the table
# adds the pairwise ratios: on a shared machine whose speed drifts, only runs alternated in
# one sitting compare.
#
# With --engine, each round also runs `engine-bench --only batched` of the --bin build: the
# Engine's batched training step in one process, on 1 and 2 BLAS threads, as an epoch of 12
# steps beside the distributed runs of the same sitting (adds ~8 s a round); the gain from the
# second thread is a gauge of how much of the two vCPUs the host leaves to this machine.
#
#   bash bench/epochs.sh [--rounds N] [--base DIR] [--bin DIR] [--engine] [extra coordinator options]
#
# Defaults: 8 rounds, --bin the release build (swift build -c release --show-bin-path).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=8 base="" bin="" engine=0
while (($#)); do
    case "$1" in
        --rounds) rounds=${2:?}; shift 2 ;;
        --base) base=${2:?}; shift 2 ;;
        --bin) bin=${2:?}; shift 2 ;;
        --engine) engine=1; shift ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) break ;;
    esac
done
options=("$@")
[ -n "$bin" ] || bin=$(swift build -c release --show-bin-path)
builds=(new); dirs=("$bin")
if [ -n "$base" ]; then builds=(base new); dirs=("$base" "$bin"); fi
for d in "${dirs[@]}"; do
    for exe in coordinator worker; do
        [ -x "$d/$exe" ] || { echo "epochs.sh: no $d/$exe (build with: swift build -c release)" >&2; exit 2; }
    done
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $rounds round(s)"
for ((r = 1; r <= rounds; r++)); do
    for n in 2 1; do
        for i in "${!builds[@]}"; do
            "${dirs[$i]}/coordinator" --local "$n" --threads-per-worker 1 --epochs 1 --eval-every 0 \
                --metrics "$work/${builds[$i]}-$n-$r.jsonl" "${options[@]}" >/dev/null 2>"$work/err" \
                || { echo "epochs.sh: ${dirs[$i]}/coordinator --local $n failed:" >&2; tail -5 "$work/err" >&2; exit 1; }
        done
    done
    if ((engine)); then
        "$bin/engine-bench" --only batched --repetitions 5 >"$work/engine-$r.txt" 2>"$work/err" \
            || { echo "epochs.sh: $bin/engine-bench failed:" >&2; tail -5 "$work/err" >&2; exit 1; }
    fi
done
python3 - "$work" "$rounds" "${builds[@]}" <<'PY'
import json, re, statistics as st, sys
work, rounds, builds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def run(build, n, r):
    lines = [json.loads(l) for l in open(f"{work}/{build}-{n}-{r}.jsonl")]
    steps = [l["seconds"] * 1000 for l in lines if "step" in l]
    spreads = [l.get("answer_spread_ms") for l in lines if "step" in l][1:]
    spread = st.median(spreads) if spreads and None not in spreads else float("nan")
    cpus = [l.get("coordinator_cpu_ms") for l in lines if "step" in l][1:]
    cpu = st.median(cpus) if cpus and None not in cpus else float("nan")
    first_epoch = sum(l["seconds"] for l in lines if "step" in l and l["epoch"] == 1)
    epochs = max(l["epoch"] for l in lines if "step" in l)
    return (lines[-1]["train_seconds"], steps[0], st.median(steps[1:]), lines[-1]["model_sha256"][:12], spread, cpu,
            first_epoch, epochs)
runs = {(b, n): [run(b, n, r) for r in range(1, rounds + 1)] for b in builds for n in (2, 1)}
print(f"{'build':6} {'workers':>7} {'epoch s (median)':>17} {'range':>13} {'step 1 ms':>9} {'later steps ms':>14} {'spread ms':>9} {'coord cpu ms':>12}  model")
for b in builds:
    for n in (2, 1):
        t = [x[0] for x in runs[(b, n)]]
        print(f"{b:6} {n:>7} {st.median(t):>17.3f} {min(t):>6.3f}-{max(t):.3f} {st.median(x[1] for x in runs[(b, n)]):>9.1f}"
              f" {st.median(x[2] for x in runs[(b, n)]):>14.1f} {st.median(x[4] for x in runs[(b, n)]):>9.1f}"
              f" {st.median(x[5] for x in runs[(b, n)]):>12.2f}"
              f"  {','.join(sorted({x[3] for x in runs[(b, n)]}))}")
for b in builds:
    one, two = [x[0] for x in runs[(b, 1)]], [x[0] for x in runs[(b, 2)]]
    print(f"{b}: 2 workers over 1, points/s: {st.median(one) / st.median(two):.3f} (ratio of medians), "
          f"{st.median(a / c for a, c in zip(one, two)):.3f} (median of the rounds' ratios)")
if any(x[7] > 1 for v in runs.values() for x in v):
    # Runs of several epochs (--epochs N among the options): the first epoch alone too.
    for b in builds:
        one, two = [x[6] for x in runs[(b, 1)]], [x[6] for x in runs[(b, 2)]]
        print(f"{b}: first epoch {st.median(two):.3f} s with 2 workers, {st.median(one):.3f} s with 1; 2 over 1: "
              f"{st.median(one) / st.median(two):.3f} (ratio of medians), "
              f"{st.median(a / c for a, c in zip(one, two)):.3f} (median of the rounds' ratios)")
engine = {1: [], 2: []}
for r in range(1, rounds + 1):
    try:
        for line in open(f"{work}/engine-{r}.txt"):
            m = re.match(r"threads=(\d) batched step \(.*\): ([\d.]+) ms", line)
            if m: engine[int(m.group(1))].append(12 * float(m.group(2)) / 1000)
    except FileNotFoundError:
        pass
for threads in (1, 2):
    if engine[threads]:
        e = engine[threads]
        two = st.median(x[0] for x in runs[("new", 2)])
        print(f"Engine alone, one process, {threads} BLAS thread(s): 12 batched steps {st.median(e):.3f} s "
              f"({min(e):.3f}-{max(e):.3f}); --local 2 takes {two / st.median(e):.3f} of that time")
if engine[1] and engine[2]:
    # The host's gauge: one process's gain from a second core, measured in the same sitting.
    gain = st.median(engine[1]) / st.median(engine[2])
    print(f"host check: the Engine gains {gain:.2f}x from a second BLAS thread (about 1.6 on this machine when the "
          f"host is quiet; much less means the host is taking CPU time from this machine's vCPUs: a busy sitting)")
if len(builds) == 2:
    for n in (2, 1):
        ratios = [x[0] / y[0] for x, y in zip(runs[("new", n)], runs[("base", n)])]
        print(f"--local {n}: new / base, median of the rounds' ratios {st.median(ratios):.3f} "
              f"({', '.join(f'{r:.2f}' for r in ratios)})")
PY
