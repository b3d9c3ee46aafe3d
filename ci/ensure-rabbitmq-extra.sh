#!/usr/bin/env bash
# Makes the test certificates and starts the two extra RabbitMQ nodes the TLS
# and PROXY-protocol end-to-end tests need, beside the main node on :5672
# (ci/ensure-rabbitmq.sh), which this script never touches:
#
#   amqpprox_tls@localhost    AMQP on 127.0.0.1/[::1]:5690, AMQPS on
#                             127.0.0.1/[::1]:5691 (TLS 1.2 and 1.3, client
#                             certificate required, signed by the test CA)
#   amqpprox_proxy@localhost  AMQP on 127.0.0.1:5693 with proxy_protocol = true
#
# Certificates (openssl, made once into target/test-certs/): ca.pem/ca.key,
# server.pem/server.key (SAN DNS:localhost and IP:::1 only, so 127.0.0.1 is a
# wrong host name on purpose), client.pem/client.key/client.p12 (password
# "amqpprox", for lapin). Each node lives in target/rabbitmq-extra/<node>/
# (config, a copy of the certificates it serves, data, logs; or under
# /var/lib/rabbitmq/amqpprox-extra/ when the rabbitmq user cannot reach this
# checkout), runs as the rabbitmq user with the main node's Erlang cookie, so
# `rabbitmqctl -n <node>` talks to it, and enables no plugin.
#
# Idempotent: a node that answers (and, for TLS, serves these certificates)
# is left alone; one that serves other certificates (an older checkout) is
# stopped and started again. Fails loudly, with the node's log tail.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly ROOT="$PWD"
readonly CERTS="$ROOT/target/test-certs"
BASE="$ROOT/target/rabbitmq-extra"
readonly WAIT_SECONDS="${RABBITMQ_WAIT_SECONDS:-120}"
readonly TLS_NODE=amqpprox_tls@localhost
readonly PROXY_NODE=amqpprox_proxy@localhost

say() { printf 'ensure-rabbitmq-extra: %s\n' "$*"; }
die() { printf 'ensure-rabbitmq-extra: ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

if ! command -v openssl >/dev/null 2>&1; then
    say "openssl is missing: installing it from the distribution's packages"
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: install openssl by hand"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y openssl \
        || { as_root apt-get update && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y openssl; } \
        || die "cannot install openssl"
fi
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] \
    || die "RabbitMQ is not installed: run ci/ensure-rabbitmq.sh first"
id rabbitmq >/dev/null 2>&1 || die "no rabbitmq user (is rabbitmq-server installed?)"

# The extra nodes run as rabbitmq, with its home (and so its Erlang cookie).
as_rabbitmq() {
    if [ "$(id -un)" = rabbitmq ]; then env HOME=/var/lib/rabbitmq "$@"
    elif [ "$(id -u)" -eq 0 ]; then runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq "$@"
    else sudo -n -u rabbitmq env HOME=/var/lib/rabbitmq "$@"
    fi
}

# Bounded; -k 5 kills a CLI Erlang VM that outlives the TERM (one hung on a
# node still in its boot), rather than leaving it holding a CLI distribution
# port.
ctl() { as_root timeout -k 5 60 rabbitmqctl --quiet "$@"; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# --- certificates -----------------------------------------------------------

make_certs() {
    local tmp
    tmp="$(mktemp -d "$ROOT/target/test-certs.XXXXXX")"
    (
        cd "$tmp"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
            -subj "/CN=amqpprox test CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
            -subj "/CN=localhost" 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:::1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -out server.pem -days 3650 -extfile server.ext 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr \
            -subj "/CN=amqpprox-test-client" 2>/dev/null
        printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > client.ext
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -out client.pem -days 3650 -extfile client.ext 2>/dev/null
        openssl pkcs12 -export -in client.pem -inkey client.key -certfile ca.pem \
            -out client.p12 -passout pass:amqpprox
        rm -f ./*.csr ./*.ext ./*.srl
        # Test keys: the broker (user rabbitmq) and the tests read them.
        chmod 0644 ./*
    ) || { rm -rf "$tmp"; die "openssl could not make the test certificates"; }
    rm -rf "$CERTS"
    mv "$tmp" "$CERTS"
    chmod 0755 "$CERTS"
    say "made a test CA, server and client certificates in $CERTS"
}

certs_complete() {
    local f
    for f in ca.pem ca.key server.pem server.key client.pem client.key client.p12; do
        [ -s "$CERTS/$f" ] || return 1
    done
    openssl verify -CAfile "$CERTS/ca.pem" "$CERTS/server.pem" "$CERTS/client.pem" >/dev/null 2>&1
}

mkdir -p "$ROOT/target"
certs_complete || make_certs

# The nodes run as rabbitmq: their directory must be reachable by it.
mkdir -p "$BASE"
as_root chown rabbitmq:rabbitmq "$BASE"
if ! as_rabbitmq test -w "$BASE"; then
    BASE=/var/lib/rabbitmq/amqpprox-extra
    say "the rabbitmq user cannot reach this checkout: nodes live in $BASE"
    as_root mkdir -p "$BASE"
    as_root chown rabbitmq:rabbitmq "$BASE"
fi
readonly BASE

# --- nodes ------------------------------------------------------------------

# write_node NAME DIST_PORT AMQP_PORT CONFIG_TEXT
write_node() {
    local dir="$BASE/$1"
    as_root mkdir -p "$dir/mnesia" "$dir/log" "$dir/certs"
    as_root cp "$CERTS/ca.pem" "$CERTS/server.pem" "$CERTS/server.key" "$dir/certs/"
    printf '%s\n' "$4" | as_root tee "$dir/rabbitmq.conf" >/dev/null
    printf '[].\n' | as_root tee "$dir/enabled_plugins" >/dev/null
    # Empty: keeps /etc/rabbitmq/rabbitmq-env.conf (the main node's name) out.
    as_root truncate -s 0 "$dir/rabbitmq-env.conf"
    as_root chown -R rabbitmq:rabbitmq "$dir"
}

start_node() {
    local name="$1" dist="$2" amqp="$3" dir="$BASE/$1"
    say "starting $name (AMQP $amqp, distribution $dist)"
    as_rabbitmq env \
        RABBITMQ_NODENAME="$name@localhost" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
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

node_up() { ctl -n "$1" status >/dev/null 2>&1; }

tls_serves_our_certs() {
    timeout 15 openssl s_client -connect 127.0.0.1:5691 -CAfile "$CERTS/ca.pem" \
        -cert "$CERTS/client.pem" -key "$CERTS/client.key" -verify_return_error \
        -servername localhost </dev/null >/dev/null 2>&1
}

show_logs() {
    local f
    for f in "$BASE/$1"/log/*; do
        printf -- '--- tail of %s ---\n' "$f" >&2
        as_root tail -n 40 "$f" >&2 || true
    done
}

wait_node() {
    local name="$1" host="$2" port="$3" deadline=$(( SECONDS + WAIT_SECONDS ))
    until ctl -n "$name@localhost" await_startup >/dev/null 2>&1; do
        if (( SECONDS >= deadline )); then
            show_logs "$name"
            die "$name@localhost did not finish starting within ${WAIT_SECONDS}s"
        fi
        sleep 1
    done
    until port_open "$host" "$port"; do
        if (( SECONDS >= deadline )); then
            show_logs "$name"
            die "$name@localhost runs but $host:$port does not accept"
        fi
        sleep 1
    done
}

NODE_CERTS="$BASE/amqpprox_tls/certs"
TLS_CONF="listeners.tcp.1 = 127.0.0.1:5690
listeners.tcp.2 = ::1:5690
listeners.ssl.1 = 127.0.0.1:5691
listeners.ssl.2 = ::1:5691
ssl_options.cacertfile = $NODE_CERTS/ca.pem
ssl_options.certfile = $NODE_CERTS/server.pem
ssl_options.keyfile = $NODE_CERTS/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
ssl_options.versions.1 = tlsv1.3
ssl_options.versions.2 = tlsv1.2
loopback_users.guest = false"

PROXY_CONF="listeners.tcp.1 = 127.0.0.1:5693
proxy_protocol = true
loopback_users.guest = false"

started=$SECONDS
to_wait=()

if node_up "$TLS_NODE" && tls_serves_our_certs; then
    say "$TLS_NODE already runs with these certificates"
else
    if node_up "$TLS_NODE"; then
        say "$TLS_NODE serves other certificates: restarting it"
        ctl -n "$TLS_NODE" stop >/dev/null || die "cannot stop $TLS_NODE"
    fi
    write_node amqpprox_tls 25690 5690 "$TLS_CONF"
    start_node amqpprox_tls 25690 5690
    to_wait+=("amqpprox_tls 127.0.0.1 5691")
fi

if node_up "$PROXY_NODE"; then
    say "$PROXY_NODE already runs"
else
    write_node amqpprox_proxy 25693 5693 "$PROXY_CONF"
    start_node amqpprox_proxy 25693 5693
    to_wait+=("amqpprox_proxy 127.0.0.1 5693")
fi

for entry in "${to_wait[@]}"; do
    # shellcheck disable=SC2086
    wait_node $entry
done
# A node that has just opened its TLS port may still refuse the first
# handshakes (seen once in a full run: the port answered, the handshake
# failed, and a moment later it passed): try until the deadline.
tls_deadline=$(( SECONDS + WAIT_SECONDS ))
until tls_serves_our_certs; do
    if (( SECONDS >= tls_deadline )); then
        show_logs amqpprox_tls
        die "$TLS_NODE does not complete a verified TLS handshake on 127.0.0.1:5691"
    fi
    sleep 1
done
say "extra nodes ready in $(( SECONDS - started ))s: $TLS_NODE (5690, TLS 5691), $PROXY_NODE (PROXY protocol 5693)"
