#!/usr/bin/env bash
# Client-compatibility check with pika: starts a proxy in front of the local
# RabbitMQ, then runs ci/compat_pika.py against the proxy and against RabbitMQ
# directly and prints both results.
#
# Owns a Python virtualenv with pika (in target/compat-pika-venv, from PyPI)
# and the proxy it starts (stopped on exit). Not part of ci/test.sh. Set
# PROXY_PORT to test an already running proxy instead of starting one.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

ci/ensure-rabbitmq.sh

venv=target/compat-pika-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import pika' 2>/dev/null; then
    echo "compat-pika: creating $venv with pika"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet pika
fi

proxy_pid=""
cleanup() {
    if [ -n "$proxy_pid" ]; then
        kill "$proxy_pid" 2>/dev/null || true
        wait "$proxy_pid" 2>/dev/null || true
    fi
    if [ -n "${work_dir:-}" ]; then
        rm -rf "$work_dir"
    fi
}
trap cleanup EXIT

port="${PROXY_PORT:-}"
if [ -z "$port" ]; then
    cargo build --bin amqpprox -j"${CARGO_JOBS:-2}"
    work_dir="$(mktemp -d -t amqpprox-compat-pika.XXXXXX)"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    target/debug/amqpprox --listenPort "$port" --destinationDNS 127.0.0.1 --destinationPort 5672 \
        --controlSocket "$work_dir/control.sock" --logDirectory "$work_dir/logs" \
        >"$work_dir/proxy.out" 2>&1 &
    proxy_pid=$!
    for _ in $(seq 1 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        kill -0 "$proxy_pid" 2>/dev/null || { cat "$work_dir/proxy.out"; exit 1; }
        sleep 0.1
    done
    echo "compat-pika: proxy pid $proxy_pid on port $port"
fi

"$venv/bin/python" ci/compat_pika.py "proxy=$port" "rabbitmq=5672"
