"""Client-compatibility check with pika (Python), run by ci/compat-pika.sh.

Owns: one publish/consume round trip and one wrong-password attempt against
each target given on the command line (label=port pairs), printed side by side
so the proxy's behaviour can be compared with RabbitMQ's. It never starts or
configures anything and is not part of ci/test.sh; it exits non-zero if a
round trip fails or a wrong password is accepted.
"""

import sys
import uuid

import pika


def round_trip(port):
    params = pika.ConnectionParameters(
        host="127.0.0.1",
        port=port,
        credentials=pika.PlainCredentials("guest", "guest"),
        client_properties={"connection_name": "compat-pika-" + uuid.uuid4().hex},
        blocked_connection_timeout=10,
        socket_timeout=10,
    )
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = channel.queue_declare(queue="", exclusive=True).method.queue
        body = ("hello through port %d " % port).encode() + uuid.uuid4().bytes
        channel.basic_publish(exchange="", routing_key=queue, body=body, mandatory=True)
        for _ in range(50):
            method, _properties, got = channel.basic_get(queue=queue, auto_ack=True)
            if method is not None:
                break
            connection.sleep(0.05)
        else:
            return "FAIL: nothing to get back"
        if got != body:
            return "FAIL: body differs (%r != %r)" % (got, body)
        return "ok: published with confirm and got the same %d bytes back" % len(body)
    finally:
        connection.close()


def wrong_password(port):
    params = pika.ConnectionParameters(
        host="127.0.0.1",
        port=port,
        credentials=pika.PlainCredentials("guest", "not-the-password"),
        connection_attempts=1,
        socket_timeout=10,
    )
    try:
        pika.BlockingConnection(params).close()
    except Exception as error:  # the class is what is being compared
        return "refused: %s%r" % (type(error).__name__, error.args)
    return "FAIL: accepted a wrong password"


def main(targets):
    failed = False
    for label, port in targets:
        print("== %s (127.0.0.1:%d)" % (label, port))
        for name, check in (("round trip", round_trip), ("wrong password", wrong_password)):
            try:
                outcome = check(port)
            except Exception as error:
                outcome = "FAIL: %s%r" % (type(error).__name__, error.args)
            failed = failed or outcome.startswith("FAIL")
            print("   %-15s %s" % (name + ":", outcome))
    return 1 if failed else 0


if __name__ == "__main__":
    pairs = []
    for argument in sys.argv[1:]:
        label, _, port = argument.partition("=")
        pairs.append((label, int(port)))
    if not pairs:
        sys.exit("usage: compat_pika.py LABEL=PORT [LABEL=PORT ...]")
    sys.exit(main(pairs))
