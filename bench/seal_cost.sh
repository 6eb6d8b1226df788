#!/usr/bin/env bash
# The cost of sealed frames (--secret-file) on a training step at batch 5000, measured two ways
# in alternating runs of `coordinator --local 2` (release build):
#   - CPU: the task-clock of the coordinator and its workers (perf stat follows the children)
#     over 100 steps (SEAL_COST_STEPS) minus that over 10 steps, so that start-up and the data
#     sets' transfer cancel; steadier than wall time on a shared machine;
#   - wall: the median of the per-step "seconds" of the metrics (steps 2-40), which is what a
#     user waits for, but moves with the machine's load.
# Usage: bash bench/seal_cost.sh [PAIRS=3] [extra coordinator options, e.g. --compression zstd]
set -euo pipefail
pairs=${1:-3}; shift || true
long_steps=${SEAL_COST_STEPS:-100}
options=("$@")
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d)
secret=$work/secret
head -c 32 /dev/urandom > "$secret"; chmod 600 "$secret"

run() { # mode steps tag -> prints "cpu_ms wall_step_ms sha"
    local mode=$1 steps=$2 tag=$3 extra=()
    [ "$mode" = sealed ] && extra=(--secret-file "$secret")
    local m=$work/$tag.jsonl
    perf stat -x, -e task-clock -o "$work/$tag.perf" \
        "$bin/coordinator" --local 2 --max-steps "$steps" --eval-every 0 --metrics "$m" "${extra[@]}" "${options[@]}" \
        >/dev/null 2>&1
    python3 - "$m" "$work/$tag.perf" <<'PY'
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
steps = [l["seconds"] for l in lines if l.get("event") != "done" and "step" in l][1:]
cpu = next(float(l.split(",")[0]) for l in open(sys.argv[2]) if "task-clock" in l)
print(f"{cpu:.1f} {statistics.median(steps) * 1e3:.2f} {lines[-1]['model_sha256'][:12]}")
PY
}

echo "pair mode cpu_ms($long_steps steps - 10 steps) per_step_cpu_ms wall_step_ms sha"
for i in $(seq 1 "$pairs"); do
    # ABBA order: a drift within a pair does not always favour the same side.
    order="plain sealed"; [ $((i % 2)) = 0 ] && order="sealed plain"
    for mode in $order; do
        short=$(run $mode 10 "$mode-$i-10")
        long=$(run $mode "$long_steps" "$mode-$i-long")
        read -r c10 _ _ <<<"$short"; read -r cl wl sha <<<"$long"
        python3 -c "print($i, '$mode', round($cl - $c10, 1), round(($cl - $c10) / ($long_steps - 10), 2), $wl, '$sha')"
    done
done | tee "$work/summary"
python3 - "$work/summary" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l[0].isdigit()]
by = {}
for pair, mode, _, cpu, wall, _ in rows:
    by.setdefault(pair, {})[mode] = (float(cpu), float(wall))
cpu = [v["sealed"][0] / v["plain"][0] for v in by.values()]
wall = [v["sealed"][1] / v["plain"][1] for v in by.values()]
print(f"sealed/plain, median of {len(by)} pairs: CPU per step {statistics.median(cpu):.3f} "
      f"({', '.join(f'{r:.3f}' for r in cpu)}); wall per step {statistics.median(wall):.3f} "
      f"({', '.join(f'{r:.3f}' for r in wall)})")
PY
rm -rf "$work"
