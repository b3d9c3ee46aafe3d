#!/usr/bin/env bash
# Makes sure a local RabbitMQ node answers on 127.0.0.1:5672 with the default
# guest/guest user, for the end-to-end tests and for ci/run-proxy.sh.
#
# Owns: installing rabbitmq-server from the distribution's packages when it is
# missing, and starting the node when it is not running. Idempotent: a running
# node is left alone. Never reconfigures, resets or stops a node. Fails loudly
# (non-zero exit, with the node's log tail) when the broker does not come up.
set -euo pipefail

readonly WAIT_SECONDS="${RABBITMQ_WAIT_SECONDS:-120}"
readonly AMQP_HOST=127.0.0.1
readonly AMQP_PORT=5672

say() { printf 'ensure-rabbitmq: %s\n' "$*"; }
die() { printf 'ensure-rabbitmq: ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

amqp_port_open() {
    (exec 3<>"/dev/tcp/${AMQP_HOST}/${AMQP_PORT}") 2>/dev/null
}

node_running() {
    as_root rabbitmqctl --quiet status >/dev/null 2>&1
}

show_logs() {
    local dir=/var/log/rabbitmq
    if [ -d "$dir" ]; then
        for log in "$dir"/*.log; do
            [ -f "$log" ] || continue
            printf '%s\n' "--- tail of $log ---" >&2
            as_root tail -n 40 "$log" >&2 || true
        done
    fi
}

# 1. Installed?
if command -v rabbitmq-server >/dev/null 2>&1 && command -v rabbitmqctl >/dev/null 2>&1; then
    say "rabbitmq-server is installed ($(command -v rabbitmq-server))"
else
    say "rabbitmq-server is missing: installing it from the distribution's packages"
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: install rabbitmq-server by hand"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server
    # The package may start the node through its service manager; fine either way.
    command -v rabbitmqctl >/dev/null 2>&1 || die "rabbitmqctl still missing after the install"
    say "installed rabbitmq-server"
fi

# 2. Running?
if amqp_port_open && node_running; then
    say "RabbitMQ is already running and accepting AMQP on ${AMQP_HOST}:${AMQP_PORT}"
    exit 0
fi

if node_running; then
    say "the RabbitMQ node is up but ${AMQP_HOST}:${AMQP_PORT} is not accepting yet; waiting"
else
    # No service manager is assumed (containers, CI runners). Debian's
    # wrapper switches to the rabbitmq user itself when started as root.
    say "starting RabbitMQ: rabbitmq-server -detached"
    as_root rabbitmq-server -detached || die "rabbitmq-server -detached failed"
fi

# 3. Wait until the node has booted and the AMQP port accepts. await_startup
# fails at once while the freshly started node is not yet reachable, so retry
# it until the deadline.
deadline=$(( SECONDS + WAIT_SECONDS ))
until as_root timeout 60 rabbitmqctl --quiet --timeout 60 await_startup >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then
        show_logs
        die "the RabbitMQ node did not finish starting within ${WAIT_SECONDS}s"
    fi
    sleep 2
done
until amqp_port_open; do
    if (( SECONDS >= deadline )); then
        show_logs
        die "RabbitMQ is running but ${AMQP_HOST}:${AMQP_PORT} did not accept within ${WAIT_SECONDS}s"
    fi
    sleep 1
done
say "RabbitMQ $(as_root rabbitmqctl --quiet version 2>/dev/null || echo '?') is up on ${AMQP_HOST}:${AMQP_PORT}"
