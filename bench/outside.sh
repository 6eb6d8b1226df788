#!/usr/bin/env bash
# The share of a distributed step spent outside gradient computation, and where each process's
# CPU goes per step. K workers are started by hand on loopback (one BLAS thread each, ports
# 7101...), so that their session log is kept. Each round makes two runs: one of 1 epoch and
# one of E epochs (`--eval-every 0`). Two measures of the E-epoch run:
#  - steps: the share of the training time (from the first gradient computation to the last)
#    during which no worker computed a gradient (forward and backward on a shard): the time
#    each step spends only on communication, compression, reduction and the optimizer. From
#    the workers' `--computation-log` (their computations on the host's monotonic clock); in
#    brackets, the same with the gathering of samples ahead counted as computation; then the
#    median and 90th percentile of that share step by step (a step: from the end of one time
#    with no computation to the end of the next).
#  - each worker: the share of its own time, from its first gradient computation to its last
#    answer, spent outside gradient computation (from its session log): this also counts the
#    time a worker done early waits for a slower one (load imbalance).
# It also prints the CPU time per step of the coordinator and of each worker (user + system,
# `/usr/bin/time`), and the workers' gradient time per step. These per-step figures are the two
# runs' difference divided by the steps between them, which leaves start-up out (in brackets:
# the median of the coordinator's own `coordinator_cpu_ms` metric, steps after the first).
# Capacity is the cores times the median step: the share of it that the three processes use
# shows whether the cores were saturated.
#
# Like `coordinator --local` (its default `--pin-workers auto`), worker i is bound to CPU i-1
# when the K workers fit in the CPUs (`worker --cpus`); --no-pin leaves them free.
#
#   bash bench/outside.sh [--rounds N] [--epochs E] [--workers K] [--bin DIR] [--no-pin]
#
# Defaults: 3 rounds, E = 5, K = 2, --bin the release build.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 epochs=5 workers=2 bin="" pin=1
while (($#)); do
    case "$1" in
        --rounds) rounds=${2:?}; shift 2 ;;
        --epochs) epochs=${2:?}; shift 2 ;;
        --workers) workers=${2:?}; shift 2 ;;
        --bin) bin=${2:?}; shift 2 ;;
        --no-pin) pin=0; shift ;;
        -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "outside.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
((epochs >= 2)) || { echo "outside.sh: --epochs must be at least 2 (the 1-epoch run is subtracted)" >&2; exit 2; }
((workers >= 1)) || { echo "outside.sh: --workers must be at least 1" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "outside.sh: /usr/bin/time is missing (apt-get install -y time)" >&2; exit 2; }
[ -n "$bin" ] || bin=$(swift build -c release --show-bin-path)
for exe in coordinator worker; do
    [ -x "$bin/$exe" ] || { echo "outside.sh: no $bin/$exe (build with: swift build -c release)" >&2; exit 2; }
done
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# One run: K workers and a coordinator for $1 epochs; results in $work/$2.*
run() {
    local e=$1 tag=$2 addresses="" i
    pids=()
    local cpus=()
    for ((i = 1; i <= workers; i++)); do
        ((pin && workers <= $(nproc))) && cpus=(--cpus $((i - 1)))
        /usr/bin/time -f "%U %S" -o "$work/$tag.w$i.cpu" "$bin/worker" --listen "127.0.0.1:$((7100 + i))" \
            --threads 1 --sessions 1 --log-level info "${cpus[@]}" --computation-log "$work/$tag.w$i.intervals" \
            >"$work/$tag.w$i.log" 2>&1 &
        pids+=($!)
        addresses+="${addresses:+,}127.0.0.1:$((7100 + i))"
    done
    sleep 0.7
    if ! /usr/bin/time -f "%U %S" -o "$work/$tag.co.cpu" "$bin/coordinator" --workers "$addresses" --epochs "$e" \
        --eval-every 0 --metrics "$work/$tag.jsonl" >/dev/null 2>"$work/$tag.err"; then
        echo "outside.sh: the coordinator failed:" >&2; tail -5 "$work/$tag.err" >&2
        grep -h "error" "$work/$tag".w*.log >&2 || true
        exit 1
    fi
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; $workers worker(s) ($( ((pin && workers <= $(nproc))) && echo "bound to CPUs 0-$((workers - 1))" || echo "not bound")); $rounds round(s) of 1 and $epochs epochs"
for ((r = 1; r <= rounds; r++)); do
    run 1 "r$r-short"
    run "$epochs" "r$r-long"
done
python3 - "$work" "$rounds" "$workers" "$epochs" "$(nproc)" <<'PY'
import json, re, statistics as st, sys
work, rounds, workers, epochs, cores = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

def cpu(path):
    user, system = open(path).read().split()[-2:]
    return float(user) + float(system)

def worker_log(path):
    """Gradient seconds and the share outside, from a worker's session line."""
    text = open(path).read()
    m = re.search(r"([\d.]+) s of gradient computation .*?: ([\d.]+)% outside", text)
    if not m:
        sys.exit(f"outside.sh: no session summary in {path}:\n{text[-500:]}")
    return float(m.group(1)), float(m.group(2))

def idle_share(tag, kinds):
    """Share of the span of the workers' computations during which none of them computed, and
    the median and 90th percentile of that share step by step (a step: from the end of one
    idle gap to the end of the next)."""
    intervals = []
    for i in range(1, workers + 1):
        for line in open(f"{work}/{tag}.w{i}.intervals"):
            fields = line.split()
            if len(fields) == 3 and fields[0] in kinds:
                intervals.append((int(fields[1]), int(fields[2])))
    if not intervals:
        sys.exit(f"outside.sh: no computation in the workers' logs of {tag}")
    intervals.sort()
    span = max(end for _, end in intervals) - intervals[0][0]
    gaps, end = [], intervals[0][1]
    for a, b in intervals[1:]:
        if a > end:
            gaps.append((end, a))
        end = max(end, b)
    starts = [intervals[0][0]] + [b for _, b in gaps]
    per_step = sorted((b - a) / (starts[k + 1] - starts[k]) for k, (a, b) in enumerate(gaps) if k + 1 < len(starts) and k > 0)
    quantile = lambda q: 100 * per_step[min(len(per_step) - 1, int(q * len(per_step)))] if per_step else float("nan")
    return 100 * sum(b - a for a, b in gaps) / span, quantile(0.5), quantile(0.9)

def run(tag):
    lines = [json.loads(l) for l in open(f"{work}/{tag}.jsonl")]
    steps = [l for l in lines if "step" in l]
    return {
        "steps": len(steps),
        "step_ms": 1000 * st.median(s["seconds"] for s in steps[1:]),
        "co_metric": st.median(s.get("coordinator_cpu_ms", float("nan")) for s in steps[1:]),
        "sha": lines[-1]["model_sha256"][:12],
        "co": cpu(f"{work}/{tag}.co.cpu"),
        "w": [cpu(f"{work}/{tag}.w{i}.cpu") for i in range(1, workers + 1)],
        "log": [worker_log(f"{work}/{tag}.w{i}.log") for i in range(1, workers + 1)],
        "steps_outside": idle_share(tag, {"gradient"}),
        "steps_outside_gathering": idle_share(tag, {"gradient", "gather"})[0],
    }

rows = []
print(f"{'round':>5} {'outside %: steps':>16} {'step by step':>16} {'each worker':>12} {'step ms':>8} {'coordinator':>19} {'workers CPU':>16} "
      f"{'workers gradient':>17} {'used/capacity':>14}  model")
for r in range(1, rounds + 1):
    short, long = run(f"r{r}-short"), run(f"r{r}-long")
    n = long["steps"] - short["steps"]
    co = 1000 * (long["co"] - short["co"]) / n
    w = [1000 * (a - b) / n for a, b in zip(long["w"], short["w"])]
    g = [1000 * (a[0] - b[0]) / n for a, b in zip(long["log"], short["log"])]
    outside = [o for _, o in long["log"]]
    used = (co + sum(w)) / (min(cores, 1 + workers) * long["step_ms"])
    whole, median_step, p90_step = long["steps_outside"]
    rows.append((outside, long["step_ms"], co, w, g, used, long["co_metric"], whole, long["steps_outside_gathering"], median_step, p90_step))
    print(f"{r:>5} {whole:>7.1f} ({long['steps_outside_gathering']:.1f}) {median_step:>7.1f}, p90 {p90_step:.1f} {' '.join(f'{o:.1f}' for o in outside):>12} {long['step_ms']:>8.2f} {co:>6.2f} ({long['co_metric']:.2f}) ms "
          f"{' '.join(f'{x:.1f}' for x in w):>13} ms {' '.join(f'{x:.1f}' for x in g):>14} ms {100 * used:>13.0f}%  {long['sha']}")
outside = [o for row in rows for o in row[0]]
steps = [r[7] for r in rows]
print(f"median: steps outside {st.median(steps):.1f}% ({min(steps):.1f}-{max(steps):.1f}; {st.median(r[8] for r in rows):.1f} with gathering; "
      f"step by step: median {st.median(r[9] for r in rows):.1f}, p90 {st.median(r[10] for r in rows):.1f}), "
      f"each worker outside {st.median(outside):.1f}% ({min(outside):.1f}-{max(outside):.1f}), step {st.median(r[1] for r in rows):.2f} ms, "
      f"coordinator {st.median(r[2] for r in rows):.2f} ms of CPU a step ({st.median(r[6] for r in rows):.2f} in its metrics), "
      f"a worker {st.median(x for r in rows for x in r[3]):.1f} ms of CPU of which {st.median(x for r in rows for x in r[4]):.1f} ms gradient, "
      f"{100 * st.median(r[5] for r in rows):.0f}% of the cores used")
PY
