#!/usr/bin/env bash
# Runs the proxy in simple mode in front of the local RabbitMQ: clients connect
# to 127.0.0.1:${PORT:-5673} and every vhost goes to 127.0.0.1:5672.
#
# Owns only starting RabbitMQ (via ensure-rabbitmq.sh) and the proxy's command
# line; extra arguments are passed to amqpprox (e.g. `-v 4`). Never changes
# the broker's configuration.
#
#   PORT=5673 CONTROL_SOCKET=/tmp/amqpprox LOG_DIR=logs ci/run-proxy.sh [-v N]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

ci/ensure-rabbitmq.sh

exec cargo run --release --bin amqpprox -- \
    --listenPort "${PORT:-5673}" \
    --destinationDNS 127.0.0.1 \
    --destinationPort 5672 \
    --controlSocket "${CONTROL_SOCKET:-/tmp/amqpprox}" \
    --logDirectory "${LOG_DIR:-logs}" \
    "$@"
