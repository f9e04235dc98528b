#!/usr/bin/env bash
# The benchmark command (not part of the test run): builds ferry and ferry-bench in release
# mode, starts a private PostgreSQL and a private Synapse that knows two appservices (ferry and
# the benchmark's observer), runs every figure on SQLite and on PostgreSQL, prints the table
# (markdown, with the machine it ran on) and stops the services on any exit.
#
#   scripts/bench.sh [--quick]       --quick: small sizes, for trying the command out
#
# Environment: FERRY_BENCH_HS_PORT (default 18108), FERRY_BENCH_PG_PORT (default 15533).
# Uses ports 29800 (ferry) and 29801 (observer) too. State and logs: .ferry-bench/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
STATE="$ROOT/.ferry-bench"
HARNESS="$ROOT/scripts/harness.py"
HS_PORT=${FERRY_BENCH_HS_PORT:-18108}
PG_PORT=${FERRY_BENCH_PG_PORT:-15533}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

say() { printf 'bench.sh: %s\n' "$*" >&2; }
stop_services() {
    python3 "$HARNESS" synapse-down --dir "$STATE/synapse" || say "warning: synapse-down failed"
    python3 "$HARNESS" pg-down --dir "$STATE/pg" || say "warning: pg-down failed"
}
trap stop_services EXIT

export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

if [[ -d "$STATE" ]]; then stop_services; rm -rf "$STATE"; fi
mkdir -p "$STATE"

say "building (release)"
cargo build --release -p ferry -p ferry-bench >&2
"$TARGET/release/ferry-bench" write-registrations "$STATE"
python3 "$HARNESS" pg-up --dir "$STATE/pg" --port "$PG_PORT" >/dev/null
python3 "$HARNESS" synapse-up --dir "$STATE/synapse" --port "$HS_PORT" \
    --registrations "$STATE/ferry-registration.yaml" "$STATE/observer-registration.yaml" >/dev/null

CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
SYNAPSE=$("$ROOT/.venv/synapse/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null || echo "?")
T0=$SECONDS
"$TARGET/release/ferry-bench" run "$STATE" "$TARGET/release/ferry" "$@" > "$STATE/table.md"
echo "Machine: $(nproc) cores, $CPU, $MEM RAM; $(uname -sr); Synapse $SYNAPSE (SQLite) and ferry on the same cores; $(date -u +%Y-%m-%d); run took $((SECONDS - T0)) s."
echo
cat "$STATE/table.md"
