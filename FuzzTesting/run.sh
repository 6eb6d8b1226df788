#!/usr/bin/env bash
# Builds the libFuzzer harnesses and runs each for a fixed time (docs/FUZZING.md).
#
#   bash FuzzTesting/run.sh [SECONDS_PER_HARNESS] [HARNESS...]
#
# SECONDS_PER_HARNESS defaults to 300; the harnesses are FrameDecoder, MessageDecoder, Pipeline
# and Handshake (all four by default). Each run starts from the committed seeds
# (FuzzTesting/Corpus/<harness>) in a fresh work corpus (FuzzTesting/.work/<harness>/corpus; FUZZ_KEEP_CORPUS=1 keeps the previous one).
# Crashes, leaks, timeouts and out-of-memory inputs are saved in FuzzTesting/.work/<harness>/
# artifacts; the script prints executions, exec/s, coverage and findings per harness and exits
# non-zero when there is any finding. Environment: FUZZ_MAX_LEN (default 8192 bytes per input),
# FUZZ_RSS_LIMIT_MB (default 2048), FUZZ_TIMEOUT (seconds for one input, default 10).
set -euo pipefail

seconds=${1:-300}
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(FrameDecoder MessageDecoder Pipeline Handshake)
here=$(cd "$(dirname "$0")" && pwd)
max_len=${FUZZ_MAX_LEN:-8192}
rss_limit=${FUZZ_RSS_LIMIT_MB:-2048}
timeout=${FUZZ_TIMEOUT:-10}

build=(swift build --package-path "$here" -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library)
"${build[@]}"
bin=$("${build[@]}" --show-bin-path)

status=0
summary=()
for harness in "${harnesses[@]}"; do
    work="$here/.work/$harness"
    [ "${FUZZ_KEEP_CORPUS:-0}" = 1 ] || rm -rf "$work"
    mkdir -p "$work/corpus" "$work/artifacts"
    rm -f "$work"/artifacts/*
    echo "== Fuzz$harness for ${seconds}s (max_len $max_len, rss_limit_mb $rss_limit, timeout ${timeout}s)"
    set +e
    # New inputs go to the first directory; the committed seeds are only read.
    "$bin/Fuzz$harness" "$work/corpus" "$here/Corpus/$harness" \
        -dict="$here/wire.dict" -max_total_time="$seconds" -max_len="$max_len" \
        -rss_limit_mb="$rss_limit" -timeout="$timeout" -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/" >"$work/log" 2>&1
    rc=$?
    set -e
    stat() { sed -n "s/^stat::$1: *//p" "$work/log" | tail -1; }
    coverage=$(grep -E '^#[0-9]+' "$work/log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[^ ]+' || true)
    findings=$(find "$work/artifacts" -type f | wc -l)
    line="Fuzz$harness: exit $rc, $(stat number_of_executed_units) executions, $(stat average_exec_per_sec) exec/s, ${coverage:-no coverage line}, peak RSS $(stat peak_rss_mb) MB, findings $findings"
    echo "$line"
    summary+=("$line")
    if [ "$rc" -ne 0 ] || [ "$findings" -ne 0 ]; then
        status=1
        tail -40 "$work/log"
        find "$work/artifacts" -type f
    fi
done
echo "== Summary (${seconds}s each)"
printf '%s\n' "${summary[@]}"
exit "$status"
