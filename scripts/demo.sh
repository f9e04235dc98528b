#!/usr/bin/env bash
# The demo: ferry on its embedded defaults (SQLite, the sim network), a local Synapse and the
# sim server, then a scripted conversation across the bridge. Everything stays running; the
# script ends by printing how to log in with any Matrix client.
#
#   scripts/demo.sh          (re-runs stop the previous demo first and reuse demo-data/)
#   scripts/demo-down.sh     stop it; --wipe also deletes demo-data/
#
# Ports (127.0.0.1): Synapse 8008, ferry 29318 (metrics 9318), sim server 29399.
# Environment (optional):
#   FERRY_DEMO_BUILD_TIMEOUT   seconds allowed for cargo build (default 3600)
#   FERRY_SYNAPSE_VENV, FERRY_HARNESS_PIP_TIMEOUT, FERRY_HARNESS_APT_TIMEOUT: see harness.py
set -euo pipefail
export LC_NUMERIC=C # decimal point in $EPOCHREALTIME

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
DATA="$ROOT/demo-data"
HARNESS="$ROOT/scripts/harness.py"
HELPER="$ROOT/scripts/demo_conversation.py"
HS_PORT=8008
AS_PORT=29318
SIM_PORT=29399
METRICS_PORT=9318
HS_URL="http://127.0.0.1:$HS_PORT"
SIM_URL="http://127.0.0.1:$SIM_PORT"
BUILD_TIMEOUT=${FERRY_DEMO_BUILD_TIMEOUT:-3600}
T_START=$EPOCHREALTIME
STEP=""
STARTED=0 # set once services may be running

elapsed() { awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
step() {
    STEP=$*
    printf '\n==> [%6s s] %s\n' "$(elapsed)" "$*"
}
die() {
    printf 'demo: error: %s\n' "$*" >&2
    exit 1
}
on_exit() {
    local rc=$?
    if ((rc != 0)); then
        printf '\ndemo: FAILED at "%s" after %s s (exit %d).\n' "$STEP" "$(elapsed)" "$rc" >&2
        if ((STARTED)); then
            printf 'demo: whatever started is left running for inspection; logs: demo-data/ferry.log,\n' >&2
            printf '      demo-data/sim.log, demo-data/synapse/homeserver.log. Stop it: scripts/demo-down.sh\n' >&2
        fi
    fi
}
trap on_exit EXIT

# True if something accepts connections on 127.0.0.1:$1.
listening() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# start_bg NAME PIDFILE LOG DIR CMD...: runs CMD in DIR in its own session (it outlives this
# script), stdout and stderr appended to LOG; writes its pid to PIDFILE.
start_bg() {
    local name=$1 pidfile=$2 log=$3 dir=$4 pid
    shift 4
    printf '=== %s: %s, started by scripts/demo.sh ===\n' "$(date -Is)" "$name" >>"$log"
    # Not a process-group leader in this non-interactive shell, so setsid execs in place and
    # $! is the program's own pid (and its session and process group id).
    (cd "$dir" && exec setsid "$@" </dev/null >>"$log" 2>&1) &
    pid=$!
    echo "$pid" >"$pidfile"
    START_PID=$pid
}

# ---------------------------------------------------------------- checks

step "Checking prerequisites"
for tool in cargo python3 setsid timeout awk; do
    command -v "$tool" >/dev/null || die "$tool is not installed (the demo needs Rust 1.95+, Python 3.9+, util-linux, coreutils)"
done
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' || die "Python 3.9 or newer is needed (found $(python3 --version 2>&1))"
echo "cargo: $(cargo --version), $(python3 --version)"

if [[ -f "$DATA/ferry.pid" || -f "$DATA/sim.pid" || -f "$DATA/synapse/synapse.pid" ]]; then
    step "Stopping the previous demo (scripts/demo-down.sh)"
    "$ROOT/scripts/demo-down.sh" || die "could not stop the previous demo; see above"
fi
for port in $HS_PORT $AS_PORT $SIM_PORT $METRICS_PORT; do
    if listening "$port"; then
        die "something already listens on 127.0.0.1:$port, which the demo needs (another demo or program?)"
    fi
done

# ---------------------------------------------------------------- build

step "Building ferry and the sim server (cargo build --workspace --bins; the first build takes minutes)"
if ! timeout --foreground "$BUILD_TIMEOUT" cargo build --workspace --bins; then
    die "cargo build failed or took longer than $BUILD_TIMEOUT s (FERRY_DEMO_BUILD_TIMEOUT)"
fi
# target/debug unless CARGO_TARGET_DIR or a cargo config says otherwise.
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') ||
    die "cargo metadata failed"
FERRY="$TARGET_DIR/debug/ferry"
TESTNET="$TARGET_DIR/debug/testnet"
[[ -x "$FERRY" && -x "$TESTNET" ]] || die "cargo build did not produce $FERRY and $TESTNET"

# ---------------------------------------------------------------- configuration

step "Writing demo-data/config.yaml and the appservice registration"
mkdir -p "$DATA"
"$FERRY" generate-config -o "$DATA/config.yaml"
python3 "$HELPER" configure "$DATA/config.yaml"
if [[ -f "$DATA/registration.yaml" ]]; then
    echo "keeping demo-data/registration.yaml (its tokens are already known to Synapse)"
else
    "$FERRY" -c "$DATA/config.yaml" generate-registration
fi
# The sim server keeps its chats in memory only (the new one starts empty and reuses ids), and
# Synapse on SQLite numbers its appservice transactions from 1 again: see reset_state there.
python3 "$HELPER" reset-state "$DATA/config.yaml"

# ---------------------------------------------------------------- services

step "Starting Synapse on $HS_URL (the first run installs it from PyPI into .venv/synapse)"
STARTED=1
python3 "$HARNESS" synapse-up --dir "$DATA/synapse" --port "$HS_PORT" \
    --registrations "$DATA/registration.yaml" >/dev/null ||
    die "Synapse did not start; see above and demo-data/synapse/homeserver.log"

step "Starting the sim server on $SIM_URL"
start_bg "sim server" "$DATA/sim.pid" "$DATA/sim.log" "$DATA" "$TESTNET" sim --listen "127.0.0.1:$SIM_PORT"
python3 "$HELPER" wait-http "$SIM_URL/" --any-status --what "the sim server" \
    --pid "$START_PID" --log "$DATA/sim.log" --timeout 30

step "Starting ferry (cwd demo-data, so sqlite://ferry.db is demo-data/ferry.db)"
start_bg ferry "$DATA/ferry.pid" "$DATA/ferry.log" "$DATA" "$FERRY" -c "$DATA/config.yaml" run
python3 "$HELPER" wait-http "http://127.0.0.1:$AS_PORT/health" --what ferry \
    --pid "$START_PID" --log "$DATA/ferry.log" --timeout 60
python3 "$HELPER" ping --registration "$DATA/registration.yaml" --hs "$HS_URL"

# ---------------------------------------------------------------- the conversation

step "Running the conversation (scripts/demo_conversation.py)"
timeout --foreground 600 python3 "$HELPER" run --hs "$HS_URL" --sim "$SIM_URL" \
    --ferry "http://127.0.0.1:$AS_PORT" --registration "$DATA/registration.yaml" ||
    die "the conversation failed; see above and demo-data/ferry.log"

# ---------------------------------------------------------------- how to use it

read -r DM_CHAT GROUP_CHAT MGMT_ROOM < <(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(s["dm_chat"], s["group_chat"], s["management_room"])' "$DATA/demo-state.json")
STEP="done"
cat <<EOF

==> [$(printf '%6s' "$(elapsed)") s] The demo is running.

Log in with any Matrix client (Element, Cinny, nheko, ...), on this machine or through an SSH
tunnel (ssh -L 8008:127.0.0.1:8008 this-host):
    homeserver  $HS_URL
    user        demo          (@demo:localhost)
    password    demo-password
The management room is the DM with @ferrybot:localhost ($MGMT_ROOM): send \`help\` there.
You are logged in to sim as alice; the portals are "Bob Builder (Sim)" and "Book club".

Act as the remote users through the sim server's control API:
    # bob writes to alice (the DM is $DM_CHAT), carol writes in "Book club" ($GROUP_CHAT)
    curl -s -X POST $SIM_URL/control/chats/$DM_CHAT/messages -d '{"sender": "bob", "text": "Hello from Bob"}'
    curl -s -X POST $SIM_URL/control/chats/$GROUP_CHAT/messages -d '{"sender": "carol", "text": "See you at 8"}'
    # what alice sent from Matrix
    curl -s $SIM_URL/control/chats/$DM_CHAT/messages
    # a new contact, a DM with alice and a seat in the group (each appears in Matrix)
    curl -s -X POST $SIM_URL/control/users -d '{"id": "dave", "name": "Dave"}'
    curl -s -X POST $SIM_URL/control/dms -d '{"a": "alice", "b": "dave"}'
    curl -s -X POST $SIM_URL/control/groups/$GROUP_CHAT/members -d '{"user_id": "dave"}'
    (the whole control API: testnet/SIM_PROTOCOL.md)

Logs: demo-data/ferry.log, demo-data/sim.log, demo-data/synapse/homeserver.log
Metrics: http://127.0.0.1:$METRICS_PORT/metrics
Stop: scripts/demo-down.sh   (--wipe also deletes demo-data/)
EOF
