"""One pika publisher for amqpprox-bench's `rabbit-pika` scenarios.

Owns one BlockingConnection to 127.0.0.1:PORT (guest/guest) and one
exclusive queue of its own. It prints `ready` once connected, waits for a
line on stdin, publishes MESSAGES bodies of SIZE bytes to its queue (with
--confirms, each waits for its confirm, as pika's BlockingConnection does),
makes sure the broker has taken them all, prints `done`, and closes. It never
touches another queue and never consumes.

usage: pika_publish.py PORT MESSAGES SIZE [--confirms]
"""

import sys

import pika


def main():
    port, messages, size = (int(a) for a in sys.argv[1:4])
    confirms = "--confirms" in sys.argv[4:]
    params = pika.ConnectionParameters(
        host="127.0.0.1",
        port=port,
        credentials=pika.PlainCredentials("guest", "guest"),
        client_properties={"connection_name": "amqpprox-bench-pika"},
        socket_timeout=30,
        blocked_connection_timeout=60,
    )
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    queue = channel.queue_declare(queue="", exclusive=True).method.queue
    if confirms:
        channel.confirm_delivery()
    body = b"x" * size
    print("ready", flush=True)
    if sys.stdin.readline() == "":
        return
    for _ in range(messages):
        channel.basic_publish(exchange="", routing_key=queue, body=body)
    # Its answer comes after every earlier publish on the channel.
    channel.queue_declare(queue=queue, passive=True)
    print("done", flush=True)
    connection.close()


if __name__ == "__main__":
    main()
