#!/usr/bin/env bash
# Builds the Debian package: both binaries in release, the man pages and
# shell completions from the clap definitions (`cargo xtask dist-assets`),
# then `cargo deb --no-build` with the metadata in Cargo.toml. Prints the
# package's path last.
#
#   ci/deb.sh           build target/debian/amqpprox_<version>_<arch>.deb
#   ci/deb.sh --check   build it, then install it on this machine with
#                       dpkg -i, run the installed binaries (--version, a
#                       simple-mode session with pika to RabbitMQ on
#                       127.0.0.1:5672, amqpprox_ctl against it) and purge it
#
# Owns the package build and its smoke test; installs cargo-deb when it is
# missing. Never starts or enables the systemd service, never touches
# RabbitMQ's configuration, and purges what it installed even on failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly JOBS="${CARGO_JOBS:-2}"
check=false
case "${1:-}" in
    "") ;;
    --check) check=true ;;
    *) echo "usage: ci/deb.sh [--check]" >&2; exit 2 ;;
esac

step() { printf '\n==> %s\n' "$*"; }
fail() { echo "deb.sh: $*" >&2; exit 1; }

step "cargo-deb"
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install cargo-deb --locked -j"$JOBS"
fi
cargo deb --version

step "release build of amqpprox and amqpprox_ctl"
cargo build --release -j"$JOBS" -p amqpprox -p amqpprox_ctl

step "man pages and completions"
cargo run --quiet -j"$JOBS" -p xtask -- dist-assets target/dist-assets

step "cargo deb"
# The release profile keeps line tables (for profiling); the package ships
# them in a separate file under /usr/lib/debug instead of in the binary.
deb="$(cargo deb --no-build -p amqpprox --output target/debian/ --separate-debug-symbols \
    --compress-debug-symbols | tail -n 1)"
[ -f "$deb" ] || fail "cargo deb reported '$deb', which is not a file"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"

if ! $check; then
    echo "$deb"
    exit 0
fi

# ---------------------------------------------------------------------------
# --check: install, run, purge
# ---------------------------------------------------------------------------
command -v dpkg >/dev/null || fail "--check needs dpkg"
if dpkg -s amqpprox >/dev/null 2>&1; then
    # On CI the only way to get here is an earlier --check that was killed
    # before its cleanup ran; anywhere else the package may be someone's.
    if [ "${CI:-}" = true ]; then
        echo "deb.sh: purging amqpprox left installed by an interrupted check (CI=true)"
        dpkg --purge amqpprox
    else
        fail "amqpprox is already installed here; --check will not replace it (dpkg --purge amqpprox first)"
    fi
fi

work="$(mktemp -d -t amqpprox-deb-check.XXXXXX)"
proxy_pid=""
cleanup() {
    if [ -n "$proxy_pid" ]; then
        kill "$proxy_pid" 2>/dev/null || true
        wait "$proxy_pid" 2>/dev/null || true
    fi
    dpkg --purge amqpprox >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

step "dpkg -i"
dpkg -i "$deb"
for f in /usr/bin/amqpprox /usr/bin/amqpprox_ctl /etc/amqpprox/amqpprox.conf \
         /usr/share/man/man1/amqpprox.1.gz /usr/share/man/man1/amqpprox_ctl.1.gz \
         /usr/share/bash-completion/completions/amqpprox \
         /usr/lib/systemd/system/amqpprox.service; do
    [ -e "$f" ] || fail "the installed package lacks $f"
done

step "installed binaries"
# --version may not exist yet in this build: then --help must name the
# program, and amqpprox_ctl without arguments must print its usage.
if out="$(/usr/bin/amqpprox --version 2>&1)"; then
    echo "$out"
    grep -q '^amqpprox ' <<<"$out" || fail "amqpprox --version printed: $out"
else
    # --help exits 1, as the original's does.
    out="$(/usr/bin/amqpprox --help 2>&1 || true)"
    grep -q -- '--controlSocket' <<<"$out" || fail "amqpprox --help does not run: $out"
    echo "amqpprox --help runs (no --version in this build)"
fi
if out="$(/usr/bin/amqpprox_ctl --version 2>&1)"; then
    echo "$out"
    grep -q '^amqpprox_ctl ' <<<"$out" || fail "amqpprox_ctl --version printed: $out"
else
    grep -q 'Usage: amqpprox_ctl' <<<"$out" || fail "amqpprox_ctl does not run: $out"
    echo "amqpprox_ctl runs (no --version in this build)"
fi

step "a simple-mode session through the installed proxy"
venv=target/test-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import pika' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet pika
fi
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
/usr/bin/amqpprox --listenPort "$port" --destinationDNS 127.0.0.1 --destinationPort 5672 \
    --logDirectory "$work/logs" --controlSocket "$work/control" --shards 1 \
    >"$work/stdout" 2>&1 &
proxy_pid=$!
deadline=$((SECONDS + 30))
until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; do
    kill -0 "$proxy_pid" 2>/dev/null || { cat "$work/stdout"; fail "the installed proxy exited"; }
    [ "$SECONDS" -lt "$deadline" ] || { cat "$work/stdout"; fail "the installed proxy never listened on $port"; }
    sleep 0.2
done
"$venv/bin/python" - "$port" <<'EOF'
import sys, pika
port = int(sys.argv[1])
conn = pika.BlockingConnection(pika.URLParameters(
    f"amqp://guest:guest@127.0.0.1:{port}/%2F?connection_attempts=3&retry_delay=1"))
ch = conn.channel()
q = ch.queue_declare(queue="", exclusive=True).method.queue
ch.basic_publish(exchange="", routing_key=q, body=b"through the installed proxy")
for _ in range(100):
    method, _props, body = ch.basic_get(queue=q, auto_ack=True)
    if method:
        break
    conn.sleep(0.05)
assert body == b"through the installed proxy", body
conn.close()
print("pika: published and got a message through the installed proxy")
EOF
/usr/bin/amqpprox_ctl "$work/control" BACKEND PRINT

step "dpkg --purge"
kill "$proxy_pid"
wait "$proxy_pid" 2>/dev/null || true
proxy_pid=""
dpkg --purge amqpprox
[ ! -e /usr/bin/amqpprox ] || fail "purge left /usr/bin/amqpprox"
[ ! -e /etc/amqpprox/amqpprox.conf ] || fail "purge left /etc/amqpprox/amqpprox.conf"
echo "package check passed: $deb"
