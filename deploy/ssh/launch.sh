#!/usr/bin/env bash
# Starts a worker on each host of a hosts file over ssh, runs the coordinator against them here,
# and stops the workers when the coordinator ends (also on an error, Ctrl-C or SIGTERM).
#
#   deploy/ssh/launch.sh --hosts hosts.txt [options] -- [coordinator options]
#
# Hosts file: one worker per line, `[user@]host[:port] [address]`; `#` starts a comment. ssh
# logs in to `[user@]host`; the worker listens on `--listen-host`:port there (port default 7070);
# the coordinator dials `address:port` (address default: host). Several lines may name the same
# host with different ports.
#
# Options (before `--`):
#   --hosts FILE          the hosts file (required)
#   --worker PATH         the worker executable on the hosts (default: worker, from their PATH)
#   --coordinator PATH    the coordinator executable here (default: coordinator, from PATH)
#   --listen-host ADDR    address the workers listen on (default 0.0.0.0; give the secret with
#                         --worker-arg --secret-file=/etc/backprop/secret)
#   --worker-arg ARG      one more argument for every worker (repeatable)
#   --ssh-port N          ssh port (default: ssh's own, usually 22)
#   --identity FILE       ssh private key
#   --ssh-option OPT      one more `ssh -o` option, like StrictHostKeyChecking=accept-new (repeatable)
#   --start-timeout S     seconds to wait for each worker's "listening on" line (default 60)
# Everything after `--` goes to the coordinator, which gets `--workers` from the hosts file.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "launch.sh: $*" >&2; exit 2; }

hosts_file="" worker="worker" coordinator="coordinator" listen_host="0.0.0.0" start_timeout=60
worker_args=() ssh_options=(-o BatchMode=yes -o ServerAliveInterval=15 -o ServerAliveCountMax=4)
while (($#)); do
    case "$1" in
        --hosts) hosts_file=${2:?}; shift 2 ;;
        --worker) worker=${2:?}; shift 2 ;;
        --coordinator) coordinator=${2:?}; shift 2 ;;
        --listen-host) listen_host=${2:?}; shift 2 ;;
        --worker-arg) worker_args+=("${2:?}"); shift 2 ;;
        --ssh-port) ssh_options+=(-p "${2:?}"); shift 2 ;;
        --identity) ssh_options+=(-i "${2:?}"); shift 2 ;;
        --ssh-option) ssh_options+=(-o "${2:?}"); shift 2 ;;
        --start-timeout) start_timeout=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) die "unknown option $1 (options end with --; --help lists them)" ;;
    esac
done
[[ -n $hosts_file ]] || die "--hosts FILE is required (--help for the format)"
[[ -r $hosts_file ]] || die "cannot read the hosts file $hosts_file"

destinations=() ports=() addresses=()
while read -r target address _; do
    [[ -z $target || $target == \#* ]] && continue
    port=7070 destination=$target
    if [[ $target =~ ^(.*):([0-9]+)$ ]]; then destination=${BASH_REMATCH[1]} port=${BASH_REMATCH[2]}; fi
    [[ -z ${address:-} || $address == \#* ]] && address=${destination#*@}
    destinations+=("$destination") ports+=("$port") addresses+=("$address")
done < "$hosts_file"
((${#destinations[@]})) || die "no hosts in $hosts_file"

logs=$(mktemp -d "${TMPDIR:-/tmp}/backprop-launch.XXXXXX")
ssh_pids=() worker_pids=()

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for i in "${!destinations[@]}"; do
        # SIGTERM to the worker; if its pid never came, ending the ssh session ends it
        # (workers run with --exit-with-parent).
        if [[ -n ${worker_pids[i]:-} ]]; then
            ssh "${ssh_options[@]}" -n "${destinations[i]}" "kill ${worker_pids[i]} 2>/dev/null" || true
        fi
    done
    for pid in "${ssh_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if ((status != 0)); then echo "launch.sh: worker logs kept in $logs" >&2; else rm -rf "$logs"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for i in "${!destinations[@]}"; do
    command=(exec "$worker" --listen "$listen_host:${ports[i]}" --exit-with-parent "${worker_args[@]}")
    # The remote shell prints its pid, then becomes the worker (same pid).
    ssh "${ssh_options[@]}" -n "${destinations[i]}" "echo \$\$; $(printf '%q ' "${command[@]}")" \
        >"$logs/worker-$i.out" 2>"$logs/worker-$i.err" &
    ssh_pids+=($!)
done

workers=()
for i in "${!destinations[@]}"; do
    deadline=$((SECONDS + start_timeout))
    until grep -q "listening on" "$logs/worker-$i.out" 2>/dev/null; do
        if ! kill -0 "${ssh_pids[i]}" 2>/dev/null || ((SECONDS >= deadline)); then
            echo "launch.sh: the worker on ${destinations[i]} (port ${ports[i]}) did not start:" >&2
            cat "$logs/worker-$i.out" "$logs/worker-$i.err" >&2
            exit 1
        fi
        sleep 0.1
    done
    worker_pids[i]=$(head -n 1 "$logs/worker-$i.out")
    echo "launch.sh: $(sed -n 2p "$logs/worker-$i.out") on ${destinations[i]} (pid ${worker_pids[i]})"
    workers+=("${addresses[i]}:${ports[i]}")
done

list=$(IFS=,; echo "${workers[*]}")
echo "launch.sh: $coordinator --workers $list $*"
"$coordinator" --workers "$list" "$@"
