#!/usr/bin/env bash
# The project's benchmark command: builds the workspace in release mode and
# runs the load harness (benches/, binary amqpprox-bench) with the given
# arguments; with none, every load scenario against every target, 3 repeats.
#
#   ci/bench.sh                     full run (several minutes)
#   ci/bench.sh --quick             smoke run, ~10x smaller (under a minute)
#   ci/bench.sh --scenario large    one scenario (large, small, trickle,
#                                   trickle-confirm, connections,
#                                   connections-tls, latency, idle)
#   ci/bench.sh --rabbitmq          lapin and pika publish to RabbitMQ at
#                                   :5672, with and without confirms
#   ci/bench.sh --no-haproxy        leave out HAProxy (otherwise the
#                                   `external` target whenever installed)
#   ci/bench.sh --micro             frame scanner / handshake micro-benchmarks
#   ci/bench.sh --help              every option
#
# Results: a table on stdout and target/bench/results.json. Owns only the
# build and the invocation. Never cleans the build directory, never installs
# anything and never starts RabbitMQ (ci/ensure-rabbitmq.sh does that).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly JOBS="${CARGO_JOBS:-2}"

cargo build --release -j"$JOBS" --workspace
exec target/release/amqpprox-bench "$@"
