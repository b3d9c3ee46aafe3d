#!/usr/bin/env bash
# The project's test command: makes sure RabbitMQ runs, then checks
# formatting and lints, builds, and runs every test of the workspace,
# including the end-to-end tests that put the proxy in front of RabbitMQ;
# last, builds the Debian package and checks it installed (ci/deb.sh --check).
#
# Owns the order and strictness of those steps and the closing summary. Never
# installs Rust toolchains, never cleans the build directory, never skips the
# RabbitMQ tests: when their result lines are missing from the test output,
# the run fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly JOBS="${CARGO_JOBS:-2}"
# The end-to-end tests go through a spawned proxy unless told otherwise
# (AMQPPROX_TEST_TARGET=direct points them straight at RabbitMQ).
export AMQPPROX_TEST_TARGET="${AMQPPROX_TEST_TARGET:-proxy}"
readonly RABBITMQ_TEST_BINARIES=(rabbitmq_lapin rabbitmq_amqprs session_ops routing_e2e migration transparent stats_e2e trace_e2e tls_e2e proxy_protocol_e2e streamproto_broker streamproto_relay refused_login_rabbitmq health_probe soak drain_e2e upgrade_e2e limits_e2e auth_e2e stream_proxy stream_rust_client)

step() { printf '\n==> %s\n' "$*"; }

step "RabbitMQ"
ci/ensure-rabbitmq.sh

step "Extra RabbitMQ nodes (TLS, PROXY protocol) and test certificates"
ci/ensure-rabbitmq-extra.sh

step "Private RabbitMQ nodes with the stream plugin (one standalone, one three-node cluster)"
ci/ensure-rabbitmq-stream.sh --cluster

step "rstream for the Stream protocol tests"
ci/ensure-stream-clients.sh

step "pika for the client-compatibility tests"
# tests/transparent.rs checks how Python's pika reports refusals; it runs
# the interpreter named here and fails (never skips) without pika.
venv=target/test-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import pika' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet pika
fi
export AMQPPROX_TEST_PYTHON="$PWD/$venv/bin/python"
"$AMQPPROX_TEST_PYTHON" -c 'import pika; print("pika", pika.__version__)'

step "amqplib (Node.js) for the client-compatibility tests"
# tests/transparent.rs also checks how Node's amqplib reports refusals.
node_dir=target/test-node
if [ ! -d "$node_dir/node_modules/amqplib" ]; then
    mkdir -p "$node_dir"
    (cd "$node_dir" && npm install --silent --no-audit --no-fund amqplib@0.10 >/dev/null)
fi
export AMQPPROX_TEST_NODE_PATH="$PWD/$node_dir/node_modules"
node -e 'require(process.env.AMQPPROX_TEST_NODE_PATH + "/amqplib"); console.log("amqplib ok")'

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -j"$JOBS" -- -D warnings

step "cargo build --workspace"
cargo build --workspace -j"$JOBS"

step "cargo test --workspace (AMQPPROX_TEST_TARGET=$AMQPPROX_TEST_TARGET)"
test_log="$(mktemp -t amqpprox-test-log.XXXXXX)"
set +e
# --no-fail-fast: one failing test binary must not hide the others' results.
cargo test --workspace --no-fail-fast -j"$JOBS" 2>&1 | tee "$test_log"
test_status=${PIPESTATUS[0]}
set -e

# One line per test binary: which binary ran and its result line.
step "Summary"
awk '
    /^ *Running / {
        name = $2
        if (name == "unittests") {
            name = $3
            # Name the crate: "(target/debug/deps/amqpprox_ctl-0123abcd)".
            if (match($0, /deps\/[A-Za-z0-9_]+-/)) name = substr($0, RSTART + 5, RLENGTH - 6) " " name
        }
    }
    /^ *Doc-tests / { name = "doc-tests " $2 }
    /^test result:/ { printf "  %-40s %s\n", name, $0 }
' "$test_log"
awk '
    /^ *Running / { name = $2 }
    /^test .* FAILED$/ { printf "  FAILED in %s: %s\n", name, $2 }
' "$test_log"

missing=0
for binary in "${RABBITMQ_TEST_BINARIES[@]}"; do
    if ! awk -v want="tests/${binary}.rs" '
            /^ *Running / { current = $2 }
            /^test result:/ && current == want { found = 1 }
            END { exit found ? 0 : 1 }
        ' "$test_log"; then
        printf '  MISSING: no result line for tests/%s.rs: the RabbitMQ tests did not run\n' "$binary"
        missing=1
    fi
done
rm -f "$test_log"

if (( test_status != 0 )); then
    printf '\nFAILED: cargo test exited with %s\n' "$test_status"
    exit "$test_status"
fi
if (( missing != 0 )); then
    printf '\nFAILED: RabbitMQ end-to-end tests missing from the run\n'
    exit 1
fi

step "Debian package: release build, install, a session through it, purge (ci/deb.sh --check)"
# Last, because it is the slowest step (a release build) and the tests above
# say more when they fail. Its time is printed so CI's budget can be watched.
deb_started=$SECONDS
ci/deb.sh --check
printf '  ci/deb.sh --check took %s s\n' "$((SECONDS - deb_started))"

step "ci/fuzz.sh 10 (every fuzz target for 10 s; says why and passes where nightly or cargo-fuzz is missing)"
ci/fuzz.sh 10
printf '\nOK: all checks and tests passed (RabbitMQ tests via %s)\n' "$AMQPPROX_TEST_TARGET"
