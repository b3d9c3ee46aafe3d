#!/usr/bin/env bash
# Starts the private RabbitMQ nodes with the stream plugin that the Stream
# protocol tests need, beside the main node on :5672 (ci/ensure-rabbitmq.sh)
# and the TLS/PROXY nodes (ci/ensure-rabbitmq-extra.sh), neither of which this
# script ever touches:
#
#   amqpprox_stream@localhost   a standalone node: Stream protocol on
#                               127.0.0.20:5552, AMQP on 127.0.0.20:5700
#   with --cluster, also a three-node cluster joined with join_cluster:
#   amqpprox_sc1@localhost      Stream 127.0.0.21:5552, AMQP 127.0.0.21:5701
#   amqpprox_sc2@localhost      Stream 127.0.0.22:5552, AMQP 127.0.0.22:5702
#   amqpprox_sc3@localhost      Stream 127.0.0.23:5552, AMQP 127.0.0.23:5703
#
# Each node has its own loopback address, so every one can use the Stream
# protocol's usual port and advertises its own address (stream.advertised_host)
# in the Open response and in Metadata: what a proxy must rewrite. The
# distribution ports are 25700-25703. Each node lives in
# target/rabbitmq-stream/<node>/ (config, enabled_plugins with
# [rabbitmq_stream]., data, logs; or under /var/lib/rabbitmq/amqpprox-stream/
# when the rabbitmq user cannot reach this checkout), runs as the rabbitmq
# user with the main node's Erlang cookie, so `rabbitmqctl -n <node>` talks to
# it. The default user guest/guest may log in from loopback.
#
# Idempotent: a node that answers is left alone, a cluster whose three nodes
# already run together is left alone; a cluster that is not whole is stopped
# and rebuilt from empty data directories. Waits until every node answers on
# its Stream port; prints how long that took. Fails loudly, with log tails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly ROOT="$PWD"
BASE="$ROOT/target/rabbitmq-stream"
readonly WAIT_SECONDS="${RABBITMQ_WAIT_SECONDS:-180}"
readonly STREAM_PORT=5552

WANT_CLUSTER=0
for arg in "$@"; do
    case "$arg" in
        --cluster) WANT_CLUSTER=1 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) printf 'ensure-rabbitmq-stream: unknown argument %s (only --cluster)\n' "$arg" >&2; exit 2 ;;
    esac
done

say() { printf 'ensure-rabbitmq-stream: %s\n' "$*"; }
die() { printf 'ensure-rabbitmq-stream: ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] \
    || die "RabbitMQ is not installed: run ci/ensure-rabbitmq.sh first"
id rabbitmq >/dev/null 2>&1 || die "no rabbitmq user (is rabbitmq-server installed?)"
ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins/rabbitmq_stream-* >/dev/null 2>&1 \
    || die "this RabbitMQ has no rabbitmq_stream plugin"

# The nodes run as rabbitmq, with its home (and so its Erlang cookie).
as_rabbitmq() {
    if [ "$(id -un)" = rabbitmq ]; then env HOME=/var/lib/rabbitmq "$@"
    elif [ "$(id -u)" -eq 0 ]; then runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq "$@"
    else sudo -n -u rabbitmq env HOME=/var/lib/rabbitmq "$@"
    fi
}

# rabbitmqctl as the rabbitmq user (its Erlang cookie), bounded. The CLI's
# Erlang VM runs in timeout's process group, so a call that hangs (a node
# stuck in its boot) is killed whole instead of lingering and holding one of
# the CLI's few distribution ports.
ctl() {
    as_rabbitmq timeout -k 5 "${CTL_TIMEOUT:-60}" \
        /usr/lib/rabbitmq/bin/rabbitmqctl --quiet "$@"
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

mkdir -p "$ROOT/target" "$BASE"
as_root chown rabbitmq:rabbitmq "$BASE"
if ! as_rabbitmq test -w "$BASE"; then
    BASE=/var/lib/rabbitmq/amqpprox-stream
    say "the rabbitmq user cannot reach this checkout: nodes live in $BASE"
    as_root mkdir -p "$BASE"
    as_root chown rabbitmq:rabbitmq "$BASE"
fi
readonly BASE

# node_conf IP AMQP_PORT: the node's rabbitmq.conf.
node_conf() {
    printf '%s\n' \
        "listeners.tcp.1 = $1:$2" \
        "stream.listeners.tcp.1 = $1:$STREAM_PORT" \
        "stream.advertised_host = $1" \
        "stream.advertised_port = $STREAM_PORT" \
        "loopback_users = none"
}

# start_node NAME IP AMQP_PORT DIST_PORT
start_node() {
    local name="$1" ip="$2" amqp="$3" dist="$4" dir="$BASE/$1"
    as_root mkdir -p "$dir/mnesia" "$dir/log"
    node_conf "$ip" "$amqp" | as_root tee "$dir/rabbitmq.conf" >/dev/null
    printf '[rabbitmq_stream].\n' | as_root tee "$dir/enabled_plugins" >/dev/null
    # Empty: keeps /etc/rabbitmq/rabbitmq-env.conf (the main node's name) out.
    as_root truncate -s 0 "$dir/rabbitmq-env.conf"
    as_root chown -R rabbitmq:rabbitmq "$dir"
    say "starting $name@localhost (Stream $ip:$STREAM_PORT, AMQP $ip:$amqp, distribution $dist)"
    as_rabbitmq env \
        RABBITMQ_NODENAME="$name@localhost" \
        RABBITMQ_NODE_IP_ADDRESS="$ip" \
        RABBITMQ_NODE_PORT="$amqp" \
        RABBITMQ_DIST_PORT="$dist" \
        RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/pid" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        sh -c 'exec /usr/lib/rabbitmq/bin/rabbitmq-server -detached >"$1" 2>&1' sh "$dir/log/startup.out" \
        || { as_root tail -n 40 "$dir/log/startup.out" >&2; die "rabbitmq-server -detached failed for $name"; }
}

node_up() { ctl -n "$1@localhost" status >/dev/null 2>&1; }

show_logs() {
    local f
    for f in "$BASE/$1"/log/*; do
        printf -- '--- tail of %s ---\n' "$f" >&2
        as_root tail -n 40 "$f" >&2 || true
    done
}

# wait_node NAME IP: until the node has booted and its Stream port accepts.
wait_node() {
    local name="$1" ip="$2" deadline=$(( SECONDS + WAIT_SECONDS ))
    until CTL_TIMEOUT=20 ctl -n "$name@localhost" await_startup >/dev/null 2>&1; do
        if (( SECONDS >= deadline )); then
            show_logs "$name"
            die "$name@localhost did not finish starting within ${WAIT_SECONDS}s"
        fi
        sleep 1
    done
    until port_open "$ip" "$STREAM_PORT"; do
        if (( SECONDS >= deadline )); then
            show_logs "$name"
            die "$name@localhost runs but $ip:$STREAM_PORT does not accept"
        fi
        sleep 1
    done
}

# ensure_node NAME IP AMQP_PORT DIST_PORT: start it unless it answers.
# Appends the node to to_wait when it was started.
to_wait=()
ensure_node() {
    if node_up "$1"; then
        say "$1@localhost already runs"
    else
        start_node "$@"
        to_wait+=("$1 $2")
    fi
}

# The cluster's members as amqpprox_sc1 sees them, sorted, space-separated.
cluster_members() {
    ctl -n amqpprox_sc1@localhost eval \
        'io:format("~s", [string:join([atom_to_list(N) || N <- lists:sort(rabbit_nodes:all_running())], " ")]).' \
        2>/dev/null | head -n1 | sed 's/ok$//'
}

readonly WANT_MEMBERS="amqpprox_sc1@localhost amqpprox_sc2@localhost amqpprox_sc3@localhost"

# The cluster's nodes: NAME IP AMQP_PORT DIST_PORT.
readonly CLUSTER=(
    "amqpprox_sc1 127.0.0.21 5701 25701"
    "amqpprox_sc2 127.0.0.22 5702 25702"
    "amqpprox_sc3 127.0.0.23 5703 25703"
)

cluster_whole() {
    local n
    for n in amqpprox_sc1 amqpprox_sc2 amqpprox_sc3; do
        node_up "$n" || return 1
    done
    [ "$(cluster_members)" = "$WANT_MEMBERS" ]
}

registered() { epmd -names 2>/dev/null | grep -q "^name $1 at "; }

# stop_node NAME: stops a node this script started, whether it answers or
# not: one stuck in its boot (peers that disagree about the cluster) is
# halted. Done when the node is gone from epmd.
stop_node() {
    local name="$1" deadline=$(( SECONDS + 90 ))
    registered "$name" || return 0
    ctl -n "$name@localhost" stop >/dev/null 2>&1 \
        || CTL_TIMEOUT=15 ctl -n "$name@localhost" eval 'erlang:halt().' >/dev/null 2>&1 \
        || true
    while registered "$name"; do
        (( SECONDS < deadline )) || die "$name@localhost does not stop"
        sleep 1
    done
}

# A cluster that is not whole (a node down, a node that left or was reset,
# peers that disagree) is rebuilt from empty data directories: the state of
# a half-joined cluster is not worth repairing for tests, and a fresh one
# takes about half a minute.
rebuild_cluster() {
    local entry name n out
    say "the three-node cluster is not whole: rebuilding it from empty data directories"
    for entry in "${CLUSTER[@]}"; do
        name="${entry%% *}"
        stop_node "$name"
        as_root rm -rf "$BASE/$name/mnesia"
    done
    for entry in "${CLUSTER[@]}"; do
        # shellcheck disable=SC2086
        start_node $entry
    done
    for entry in "${CLUSTER[@]}"; do
        # shellcheck disable=SC2086
        set -- $entry
        wait_node "$1" "$2"
    done
    for n in amqpprox_sc2 amqpprox_sc3; do
        say "joining $n@localhost to amqpprox_sc1@localhost"
        # The commands' chatter (feature-flag warnings) is shown on failure.
        out="$( { ctl -n "$n@localhost" stop_app \
            && ctl -n "$n@localhost" join_cluster amqpprox_sc1@localhost \
            && ctl -n "$n@localhost" start_app; } 2>&1 )" \
            || { printf '%s\n' "$out" >&2; show_logs "$n"; die "$n@localhost could not join amqpprox_sc1@localhost"; }
    done
    wait_node amqpprox_sc2 127.0.0.22
    wait_node amqpprox_sc3 127.0.0.23
    local members
    members="$(cluster_members)"
    [ "$members" = "$WANT_MEMBERS" ] \
        || die "the cluster runs as [$members], expected [$WANT_MEMBERS]"
}

started=$SECONDS
ensure_node amqpprox_stream 127.0.0.20 5700 25700
for entry in "${to_wait[@]}"; do
    # shellcheck disable=SC2086
    wait_node $entry
done

if (( WANT_CLUSTER )); then
    if cluster_whole; then
        say "the three-node cluster already runs"
    else
        rebuild_cluster
    fi
fi

if (( WANT_CLUSTER )); then
    say "stream nodes ready in $(( SECONDS - started ))s: amqpprox_stream (127.0.0.20:$STREAM_PORT), cluster amqpprox_sc1-3 (127.0.0.21-23:$STREAM_PORT)"
else
    say "stream node ready in $(( SECONDS - started ))s: amqpprox_stream (127.0.0.20:$STREAM_PORT)"
fi
