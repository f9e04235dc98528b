#!/usr/bin/env bash
# Stops the demo started by scripts/demo.sh: ferry, the sim server and Synapse. Their data
# stays in demo-data/ (the next scripts/demo.sh picks it up again) unless --wipe is given.
#
#   scripts/demo-down.sh           stop everything, keep demo-data/
#   scripts/demo-down.sh --wipe    stop everything and delete demo-data/
#
# Only the processes named in demo-data's pid files are stopped (and only if they still are
# the program that was started); every wait is bounded.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
DATA="$ROOT/demo-data"
STOP_TIMEOUT=20

WIPE=0
for arg in "$@"; do
    case "$arg" in
        --wipe) WIPE=1 ;;
        -h | --help)
            sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "demo-down: unknown argument: $arg (see --help)" >&2
            exit 2
            ;;
    esac
done

say() { printf 'demo-down: %s\n' "$*"; }

# True if the pid exists and is not a zombie (orphans may never be reaped in containers).
alive() {
    local pid=$1 stat
    kill -0 "$pid" 2>/dev/null || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    [[ ${stat%% *} != Z && ${stat%% *} != X ]]
}

# stop NAME PIDFILE PROGRAM: SIGTERM the process (its whole session group when it leads one),
# wait, then SIGKILL.
stop() {
    local name=$1 pidfile=$2 program=$3 pid cmdline target i
    if [[ ! -f "$pidfile" ]]; then
        say "$name: not running (no ${pidfile#"$ROOT"/})"
        return 0
    fi
    pid=$(tr -dc '0-9' <"$pidfile")
    if [[ -z "$pid" ]] || ! alive "$pid"; then
        say "$name: not running"
        rm -f "$pidfile"
        return 0
    fi
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    if [[ "$cmdline" != *"$program"* ]]; then
        say "$name: pid $pid is no longer $program (${cmdline:0:80}); leaving it alone"
        rm -f "$pidfile"
        return 0
    fi
    target=$pid
    if [[ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" == "$pid" ]]; then
        target=-$pid # the process group it leads (started with setsid)
    fi
    kill -TERM -- "$target" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        say "$name (pid $pid) still running after ${STOP_TIMEOUT} s; sending SIGKILL"
        kill -KILL -- "$target" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            say "error: $name (pid $pid) survived SIGKILL"
            return 1
        fi
    fi
    say "$name (pid $pid) stopped"
    rm -f "$pidfile"
}

rc=0
stop ferry "$DATA/ferry.pid" "/debug/ferry" || rc=1
stop "sim server" "$DATA/sim.pid" "/debug/testnet" || rc=1
if [[ -d "$DATA/synapse" ]]; then
    if out=$(timeout 60 python3 "$ROOT/scripts/harness.py" synapse-down --dir "$DATA/synapse" 2>&1); then
        say "synapse: ${out//harness: /}"
    else
        say "error: stopping synapse failed: ${out//harness: /}"
        rc=1
    fi
else
    say "synapse: not running (no demo-data/synapse)"
fi

if ((WIPE)); then
    if ((rc != 0)); then
        say "error: not wiping demo-data/ while something may still be running"
        exit 1
    fi
    rm -rf -- "$DATA"
    say "deleted demo-data/"
elif [[ -d "$DATA" ]]; then
    say "data kept in demo-data/ (scripts/demo-down.sh --wipe deletes it)"
fi
exit "$rc"
