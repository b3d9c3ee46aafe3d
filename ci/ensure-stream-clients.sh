#!/usr/bin/env bash
# Installs the real Stream protocol clients the stream tests drive: Python's
# rstream (pinned: 1.1.1 works against RabbitMQ 3.10) in its own virtual
# environment, target/stream-venv, which tests/streamproto_relay.rs uses
# unless AMQPPROX_TEST_STREAM_PYTHON names another interpreter.
#
# Idempotent: an environment that already imports rstream is left alone.
# Never touches the other test environments (target/test-venv and so on).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly VENV=target/stream-venv
readonly RSTREAM=rstream==1.1.1

say() { printf 'ensure-stream-clients: %s\n' "$*"; }

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import rstream' 2>/dev/null; then
    say "rstream already in $VENV"
else
    mkdir -p target
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "$RSTREAM"
    "$VENV/bin/python" -c 'import rstream' || { say "ERROR: rstream does not import"; exit 1; }
    say "installed $RSTREAM in $VENV"
fi
