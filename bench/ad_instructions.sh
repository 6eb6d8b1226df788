#!/usr/bin/env bash
# The per-sample AD overhead in instructions, which do not drift with the load of a shared
# machine: valgrind's callgrind counts the instructions of 200 per-sample gradients of the
# 784-300-100-10 network (after 200 to warm up), computed by the Engine (`gradBP` of `netErr`)
# and by the hand-written gradient (HandWrittenGradients.sample), and the calls to swift_retain,
# swift_release, swift_allocObject and malloc among them. Prints each per sample, and the
# Engine's excess over the hand-written code.
#
#   bash bench/ad_instructions.sh [--bin DIR]      (default: the release build)
#
# Needs valgrind (Debian: apt-get install -y valgrind). Valgrind 3.19 cannot read the DWARF 5
# debug information of Swift's binaries, so it runs a copy of engine-bench without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=""
while (($#)); do
    case "$1" in
        --bin) bin=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "ad_instructions.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || { echo "ad_instructions.sh: valgrind is missing (apt-get install -y valgrind)" >&2; exit 2; }
[ -n "$bin" ] || bin=$(swift build -c release --show-bin-path)
[ -x "$bin/engine-bench" ] || { echo "ad_instructions.sh: no $bin/engine-bench (swift build -c release)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$bin/engine-bench" "$work/engine-bench"
strip --strip-debug "$work/engine-bench"
for which in engine hand; do
    # The kernel is set so that the program does not re-execute itself under valgrind.
    OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$(grep -q avx2 /proc/cpuinfo && echo Haswell || echo Prescott)} \
        valgrind --tool=callgrind --callgrind-out-file="$work/$which.out" \
        --toggle-collect='*PerSampleCount*measured*' \
        "$work/engine-bench" --only "count-$which" >"$work/$which.log" 2>&1 &
done
wait
python3 - "$work" <<'PY'
import re, sys
work = sys.argv[1]
watched = ["swift_retain", "swift_release", "swift_allocObject", "malloc"]

def read(which):
    """Total instructions and calls to the watched functions, from a callgrind output file."""
    names, total, calls, callee = {}, 0, {w: 0 for w in watched}, None
    for line in open(f"{work}/{which}.out"):
        m = re.match(r"summary: (\d+)", line)
        if m: total = int(m.group(1))
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(2): names[m.group(1)] = m.group(2).strip()
            name = names.get(m.group(1), "")
            callee = name if line.startswith("cfn=") else None
            continue
        m = re.match(r"calls=(\d+)", line)
        if m and callee:
            base = re.sub(r"'\d+$", "", callee)
            if base in calls: calls[base] += int(m.group(1))
    return total, calls

n = 200
# Callgrind counts calls whether or not collection is on: its call counts cover the 200
# warm-up gradients as well as the 200 measured ones (the instructions cover only the latter).
calls_n = 2 * n
(he, hc), (ee, ec) = read("hand"), read("engine")
print(f"per sample           {'hand-written':>13} {'engine':>10} {'excess':>10}")
print(f"instructions         {he / n:13.0f} {ee / n:10.0f} {(ee - he) / n:+10.0f}  (ratio {ee / he:.3f})")
for w in watched:
    print(f"{w + ' calls':20} {hc[w] / calls_n:13.1f} {ec[w] / calls_n:10.1f} {(ec[w] - hc[w]) / calls_n:+10.1f}")
PY
