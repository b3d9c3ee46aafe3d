"""A real Stream protocol client (rstream) for tests/streamproto_relay.rs and
tests/stream_proxy.rs.

Owns no assertions about the proxy: it does one job against HOST:PORT and
prints one result line the Rust test checks. Modes:

  roundtrip STREAM N [lb]
                       create STREAM, publish N messages with confirms,
                       consume them all from the first offset, delete STREAM;
                       prints "published N confirmed C consumed K in-order B";
                       with lb, in load-balancer mode (HOST:PORT is a balancer)
  create STREAM        create STREAM (on the node HOST:PORT leads to); prints
                       "created"
  refused USER PASS VHOST
                       connect and expect a refusal; prints
                       "refused <ExceptionClassName>", or "accepted"
  hold STREAM [lb]     publish one message (confirmed) to the existing
                       STREAM and consume it, then print "ready" and keep the
                       producer and the consumer connected until stdin ends;
                       prints "done"

The vhost is $RSTREAM_VHOST, "/" by default; roundtrip's message bodies are
padded to $RSTREAM_SIZE bytes (default: unpadded, a few bytes); hold names
its connections $RSTREAM_NAME-producer and $RSTREAM_NAME-consumer (default:
rstream's own names). With $RSTREAM_CAFILE, roundtrip connects with TLS,
trusting that CA.

Every wait has a deadline, so a stuck handshake fails instead of hanging.
"""

import asyncio
import os
import ssl
import sys

from rstream import (
    ConfirmationStatus,
    Consumer,
    ConsumerOffsetSpecification,
    MessageContext,
    OffsetType,
    Producer,
)

DEADLINE = 90
VHOST = os.environ.get("RSTREAM_VHOST", "/")
SIZE = int(os.environ.get("RSTREAM_SIZE", "0"))
NAME = os.environ.get("RSTREAM_NAME", "")
CAFILE = os.environ.get("RSTREAM_CAFILE")
TLS = ssl.create_default_context(cafile=CAFILE) if CAFILE else None


def body(i):
    return (b"m%d" % i).ljust(SIZE, b".")


async def roundtrip(host, port, stream, n, lb):
    confirmed = 0
    all_confirmed = asyncio.Event()

    async def on_confirm(status: ConfirmationStatus):
        nonlocal confirmed
        if status.is_confirmed:
            confirmed += 1
        if confirmed >= n:
            all_confirmed.set()

    async with Producer(
        host,
        port,
        username="guest",
        password="guest",
        vhost=VHOST,
        load_balancer_mode=lb,
        ssl_context=TLS,
    ) as producer:
        await producer.create_stream(stream, exists_ok=True)
        for i in range(n):
            await producer.send(stream, body(i), on_publish_confirm=on_confirm)
        await asyncio.wait_for(all_confirmed.wait(), DEADLINE)

    received = []
    got_all = asyncio.Event()

    async def on_message(body, ctx: MessageContext):
        received.append(bytes(body))
        if len(received) >= n:
            got_all.set()

    async with Consumer(
        host,
        port,
        username="guest",
        password="guest",
        vhost=VHOST,
        load_balancer_mode=lb,
        ssl_context=TLS,
    ) as consumer:
        await consumer.subscribe(
            stream,
            on_message,
            offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None),
        )
        await asyncio.wait_for(got_all.wait(), DEADLINE)
        await consumer.delete_stream(stream)

    in_order = received[:n] == [body(i) for i in range(n)]
    print(f"published {n} confirmed {confirmed} consumed {len(received)} in-order {in_order}")


async def create(host, port, stream):
    async with Producer(
        host, port, username="guest", password="guest", vhost=VHOST
    ) as producer:
        await producer.create_stream(stream, exists_ok=False)
    print("created")


async def refused(host, port, user, password, vhost):
    try:
        async with Producer(host, port, username=user, password=password, vhost=vhost):
            pass
    except Exception as e:  # the class name is the result
        print(f"refused {type(e).__name__}")
        return
    print("accepted")


async def hold(host, port, stream, lb):
    confirmed = asyncio.Event()
    received = asyncio.Event()

    async def on_confirm(status: ConfirmationStatus):
        if status.is_confirmed:
            confirmed.set()

    async def on_message(body, ctx: MessageContext):
        received.set()

    args = dict(username="guest", password="guest", vhost=VHOST, load_balancer_mode=lb)
    names = {"producer": "", "consumer": ""}
    if NAME:
        names = {role: f"{NAME}-{role}" for role in names}
    async with Producer(host, port, connection_name=names["producer"], **args) as producer:
        await producer.send(stream, b"held", on_publish_confirm=on_confirm)
        await asyncio.wait_for(confirmed.wait(), DEADLINE)
        async with Consumer(host, port, connection_name=names["consumer"], **args) as consumer:
            await consumer.subscribe(
                stream,
                on_message,
                offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None),
            )
            await asyncio.wait_for(received.wait(), DEADLINE)
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print("done", flush=True)


def main():
    host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "roundtrip":
        lb = sys.argv[6:7] == ["lb"]
        job = roundtrip(host, port, sys.argv[4], int(sys.argv[5]), lb)
    elif mode == "hold":
        job = hold(host, port, sys.argv[4], sys.argv[5:6] == ["lb"])
    elif mode == "create":
        job = create(host, port, sys.argv[4])
    elif mode == "refused":
        job = refused(host, port, sys.argv[4], sys.argv[5], sys.argv[6])
    else:
        sys.exit(f"unknown mode {mode}")
    # hold waits for its stdin as long as the test needs it.
    limit = None if mode == "hold" else DEADLINE * 2
    asyncio.run(asyncio.wait_for(job, limit))


if __name__ == "__main__":
    main()
