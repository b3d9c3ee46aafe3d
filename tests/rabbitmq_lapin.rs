//! End-to-end tests with the lapin client against a real RabbitMQ, through a
//! proxy spawned per test (or straight to RabbitMQ with
//! `AMQPPROX_TEST_TARGET=direct`, to check the tests themselves).
//!
//! These tests own the client-visible contract of the proxy: connections,
//! channels, confirms, large bodies, heartbeats, vhost separation, and the
//! broker's errors and closes reaching the client with their codes and texts.
//! They never inspect bytes on the wire (the byte-level tests do) and never
//! skip when RabbitMQ is absent: they fail.

mod support;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use support::rabbit::{self, TempVhost};
use support::{
    assert_body_eq, blocking, body_for, declare_private_queue, mixed_sizes, unique_name, within,
    Target,
};

const MIB: usize = 1024 * 1024;

/// Connects with a `connection_name` client property, panicking with the
/// target and error on failure.
async fn connect(target: &Target, vhost: &str, connection_name: &str) -> Connection {
    let url = target.amqp_url("guest", "guest", vhost);
    connect_url(target, &url, connection_name).await
}

async fn connect_url(target: &Target, url: &str, connection_name: &str) -> Connection {
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    Connection::connect(url, properties)
        .await
        .unwrap_or_else(|err| panic!("connect to {} ({url}): {err:?}", target.describe()))
}

/// A connection attempt that must fail; returns lapin's error.
async fn connect_failure(url: &str) -> lapin::Error {
    let properties =
        ConnectionProperties::default().with_connection_name(unique_name("failing").into());
    match Connection::connect(url, properties).await {
        Ok(connection) => {
            let _ = connection.close(200, "unexpected success").await;
            panic!("connecting to {url} succeeded but must fail")
        }
        Err(err) => err,
    }
}

/// The reply code and text of an AMQP error (a broker `Close`), or a panic
/// naming what lapin reported instead.
fn amqp_error(err: &lapin::Error) -> (u16, String) {
    match err {
        lapin::Error::ProtocolError(amqp) => (amqp.get_id(), amqp.get_message().to_string()),
        other => panic!("expected an AMQP error carrying a reply code, got {other:?}"),
    }
}

/// Publishes to the default exchange and waits for the broker's confirm,
/// which must be an ack.
async fn publish_confirmed(channel: &Channel, queue: &str, body: &[u8]) {
    let confirm = channel
        .basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap_or_else(|err| panic!("publish to {queue}: {err:?}"))
        .await
        .unwrap_or_else(|err| panic!("confirm of a publish to {queue}: {err:?}"));
    assert!(
        confirm.is_ack(),
        "publish to {queue} was not acked: {confirm:?}"
    );
}

/// Fetches one message with basic.get, retrying briefly in case the broker
/// has not enqueued it yet.
async fn get_one(channel: &Channel, queue: &str) -> Vec<u8> {
    let what = format!("a message on {queue}");
    support::poll_for_async(Duration::from_secs(10), &what, || async {
        channel
            .basic_get(queue, BasicGetOptions { no_ack: true })
            .await
            .unwrap_or_else(|err| panic!("basic.get on {queue}: {err:?}"))
            .map(|message| message.delivery.data)
    })
    .await
}

/// lapin marks a connection `Closed` on its own executor shortly after the
/// broker's CloseOk resolved `close()`, so the state is polled briefly.
async fn wait_until_closed(connection: &Connection) {
    let closed = support::wait_until_async(support::deadline_in(Duration::from_secs(5)), || {
        std::future::ready(connection.status().closed())
    })
    .await;
    assert!(
        closed,
        "the connection is not closed 5 s after close(): {:?}",
        connection.status().state()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_open_channel_and_close_cleanly() {
    let target = Target::start();
    within(&target, async {
        let connection = connect(&target, "/", &unique_name("lapin-connect")).await;
        assert!(connection.status().connected());

        let channel = connection.create_channel().await.expect("open a channel");
        assert!(channel.status().connected());
        channel
            .close(200, "channel done")
            .await
            .expect("close the channel");
        assert!(!channel.status().connected());

        connection
            .close(200, "connection done")
            .await
            .expect("close the connection");
        wait_until_closed(&connection).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn thousand_mixed_size_messages_are_confirmed_and_come_back_intact_in_order() {
    let target = Target::start();
    within(&target, async {
        let big = [MIB, 8 * MIB, 3 * MIB + 17, 8 * MIB - 1, 5 * MIB, 2 * MIB + 131_064];
        let sizes = mixed_sizes(1000, &big);
        let total: usize = sizes.iter().sum();
        assert!(total < 120 * MIB, "test data grew to {total} bytes");
        let bodies: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, len)| body_for(i, *len))
            .collect();

        let connection = connect(&target, "/", &unique_name("lapin-bulk")).await;
        let channel = connection.create_channel().await.expect("open a channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("enable publisher confirms");
        let queue = declare_private_queue(&channel, "bulk").await;

        let started = Instant::now();
        let mut confirms = Vec::with_capacity(bodies.len());
        for (i, body) in bodies.iter().enumerate() {
            let confirm = channel
                .basic_publish(
                    "",
                    &queue,
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default(),
                )
                .await
                .unwrap_or_else(|err| panic!("publish message {i}: {err:?}"));
            confirms.push(confirm);
        }
        for (i, confirm) in confirms.into_iter().enumerate() {
            let confirmation = confirm
                .await
                .unwrap_or_else(|err| panic!("confirm of message {i}: {err:?}"));
            assert!(confirmation.is_ack(), "message {i} was not acked: {confirmation:?}");
        }
        let published = started.elapsed();

        channel
            .basic_qos(64, BasicQosOptions::default())
            .await
            .expect("set prefetch");
        let mut consumer = channel
            .basic_consume(
                &queue,
                "bulk-consumer",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("start consuming");
        for (i, expected) in bodies.iter().enumerate() {
            let delivery = tokio::time::timeout(Duration::from_secs(60), consumer.next())
                .await
                .unwrap_or_else(|_| panic!("message {i} was not delivered within 60 s"))
                .unwrap_or_else(|| panic!("the consumer ended before message {i}"))
                .unwrap_or_else(|err| panic!("delivery of message {i}: {err:?}"));
            assert!(!delivery.redelivered, "message {i} was redelivered");
            assert_body_eq(i, &delivery.data, expected);
            delivery
                .ack(BasicAckOptions::default())
                .await
                .unwrap_or_else(|err| panic!("ack message {i}: {err:?}"));
        }
        eprintln!(
            "{} messages, {total} bytes: published and confirmed in {published:?}, round trip {:?} ({})",
            bodies.len(),
            started.elapsed(),
            target.describe()
        );

        connection.close(200, "done").await.expect("close the connection");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_keep_an_idle_connection_open() {
    let target = Target::start();
    within(&target, async {
        let url = format!("{}?heartbeat=2", target.amqp_url("guest", "guest", "/"));
        let connection = connect_url(&target, &url, &unique_name("lapin-heartbeat")).await;
        let (errors_tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
        connection.on_error(move |err| {
            let _ = errors_tx.send(err);
        });
        let channel = connection.create_channel().await.expect("open a channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("enable publisher confirms");
        let queue = declare_private_queue(&channel, "heartbeat").await;

        // Idle for more than three heartbeat intervals: without heartbeats
        // flowing both ways, either side would have declared the other dead.
        // The idle time is the behaviour under test.
        support::idle_for_async(Duration::from_secs(7)).await;

        if let Ok(err) = errors.try_recv() {
            panic!("the connection failed while idle: {err:?}");
        }
        assert!(
            connection.status().connected(),
            "connection state after idling: {:?}",
            connection.status().state()
        );
        publish_confirmed(&channel, &queue, b"still alive").await;
        assert_eq!(get_one(&channel, &queue).await, b"still alive");
        assert!(connection.status().connected());
        connection
            .close(200, "done")
            .await
            .expect("close the connection");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_channels_on_one_connection_each_get_their_own_message() {
    let target = Target::start();
    within(&target, async {
        let connection = connect(&target, "/", &unique_name("lapin-channels")).await;
        let mut channels = Vec::new();
        for _ in 0..50 {
            channels.push(connection.create_channel().await.expect("open a channel"));
        }
        let ids: HashSet<u16> = channels.iter().map(Channel::id).collect();
        assert_eq!(ids.len(), 50, "channel ids are not distinct: {ids:?}");

        let mut tasks = tokio::task::JoinSet::new();
        for (i, channel) in channels.into_iter().enumerate() {
            tasks.spawn(async move {
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("enable publisher confirms");
                let queue = declare_private_queue(&channel, &format!("channel-{i}")).await;
                let body = format!("message for channel {} (#{i})", channel.id()).into_bytes();
                publish_confirmed(&channel, &queue, &body).await;
                let got = get_one(&channel, &queue).await;
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&body),
                    "channel {} got another channel's message",
                    channel.id()
                );
                channel.close(200, "done").await.expect("close the channel");
            });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(err) = joined {
                std::panic::resume_unwind(err.into_panic());
            }
        }
        assert!(connection.status().connected());
        connection
            .close(200, "done")
            .await
            .expect("close the connection");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_vhosts_are_kept_apart() {
    let target = Target::start();
    let vhost_a_name = unique_name("vhost-a");
    let vhost_b_name = unique_name("vhost-b");
    let (vhost_a, vhost_b) = blocking(move || {
        (
            TempVhost::create(&vhost_a_name),
            TempVhost::create(&vhost_b_name),
        )
    })
    .await;
    within(&target, async {
        let queue = unique_name("only-in-a");

        let in_a = connect(&target, &vhost_a.name, &unique_name("lapin-vhost-a")).await;
        let channel_a = in_a.create_channel().await.expect("open a channel in A");
        channel_a
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("enable publisher confirms");
        channel_a
            .queue_declare(
                &queue,
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare the queue in A");
        publish_confirmed(&channel_a, &queue, b"published in A").await;

        let in_b = connect(&target, &vhost_b.name, &unique_name("lapin-vhost-b")).await;
        let channel_b = in_b.create_channel().await.expect("open a channel in B");
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let err = channel_b
            .queue_declare(&queue, passive, FieldTable::default())
            .await
            .expect_err("a queue declared in vhost A must not exist in vhost B");
        let (code, text) = amqp_error(&err);
        assert_eq!(code, 404, "passive declare in B: {text}");
        assert!(
            text.starts_with("NOT_FOUND"),
            "passive declare in B: {text}"
        );
        assert!(text.contains(&vhost_b.name), "passive declare in B: {text}");

        let seen = channel_a
            .queue_declare(&queue, passive, FieldTable::default())
            .await
            .expect("the queue exists in A");
        assert_eq!(seen.message_count(), 1, "messages waiting in A");
        assert_eq!(get_one(&channel_a, &queue).await, b"published in A");

        in_a.close(200, "done")
            .await
            .expect("close the connection to A");
        let _ = in_b.close(200, "done").await;
    })
    .await;
    blocking(move || drop((vhost_a, vhost_b))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_refused_with_403_and_the_brokers_text() {
    let target = Target::start();
    within(&target, async {
        let url = target.amqp_url("guest", "definitely-not-the-password", "/");
        let err = connect_failure(&url).await;
        let (code, text) = amqp_error(&err);
        assert_eq!(code, 403, "reply text: {text}");
        assert!(text.starts_with("ACCESS_REFUSED"), "reply text: {text}");
        eprintln!("wrong password via {}: {code} {text}", target.describe());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_vhost_is_refused_with_530_and_the_brokers_text() {
    let target = Target::start();
    within(&target, async {
        let vhost = unique_name("no-such-vhost");
        let url = target.amqp_url("guest", "guest", &vhost);
        let err = connect_failure(&url).await;
        let (code, text) = amqp_error(&err);
        assert_eq!(code, 530, "reply text: {text}");
        assert!(text.starts_with("NOT_ALLOWED"), "reply text: {text}");
        assert!(text.contains(&vhost), "reply text: {text}");
        eprintln!("unknown vhost via {}: {code} {text}", target.describe());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_side_close_connection_reaches_the_client_with_its_reason() {
    let target = Target::start();
    within(&target, async {
        let connection_name = unique_name("lapin-closed-by-broker");
        let connection = connect(&target, "/", &connection_name).await;
        let (errors_tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
        connection.on_error(move |err| {
            let _ = errors_tx.send(err);
        });
        let _channel = connection.create_channel().await.expect("open a channel");

        let reason = format!("closed by the test {}", unique_name("reason"));
        let closing = reason.clone();
        blocking(move || {
            let found = rabbit::wait_for_connection(&connection_name, Duration::from_secs(15));
            rabbit::close_connection(&found, &closing);
        })
        .await;

        let err = tokio::time::timeout(Duration::from_secs(15), errors.recv())
            .await
            .expect("the client was not told about the close within 15 s")
            .expect("the error callback was dropped");
        let (code, text) = amqp_error(&err);
        assert_eq!(code, 320, "reply text: {text}");
        assert!(
            text.contains(&reason),
            "reply text {text:?} lacks {reason:?}"
        );
        eprintln!("close_connection via {}: {code} {text}", target.describe());

        assert!(!connection.status().connected());
        assert!(
            connection.create_channel().await.is_err(),
            "a closed connection must not open channels"
        );
    })
    .await;
}

// lapin's connector signature fixes the closure's large error type.
#[allow(clippy::result_large_err)]
#[tokio::test(flavor = "multi_thread")]
async fn broker_sees_proxy_and_client_properties() {
    let target = Target::start();
    within(&target, async {
        // Open the socket ourselves so the client's local port is known.
        let socket = std::net::TcpStream::connect((target.host(), target.port()))
            .unwrap_or_else(|err| panic!("TCP connect to {}: {err}", target.describe()));
        let client_port = socket.local_addr().expect("local address").port();
        socket.set_nonblocking(true).expect("non-blocking socket");
        let stream = lapin::tcp::TcpStream::from_std(socket).expect("wrap the socket for lapin");
        let slot = Mutex::new(Some(stream));

        let connection_name = unique_name("lapin-properties");
        let uri = target
            .amqp_url("guest", "guest", "/")
            .parse::<lapin::uri::AMQPUri>()
            .expect("parse the AMQP URI");
        let properties =
            ConnectionProperties::default().with_connection_name(connection_name.as_str().into());
        let connection = Connection::connector(
            uri,
            Box::new(move |_| {
                slot.lock()
                    .expect("socket slot")
                    .take()
                    .ok_or_else(|| std::io::Error::other("the socket was already used").into())
            }),
            properties,
        )
        .await
        .unwrap_or_else(|err| panic!("connect to {}: {err:?}", target.describe()));

        let wanted = connection_name.clone();
        let seen =
            blocking(move || rabbit::wait_for_connection(&wanted, Duration::from_secs(15))).await;
        let props = &seen.client_properties;
        assert_eq!(
            seen.property("connection_name"),
            Some(connection_name.as_str())
        );
        assert_eq!(seen.property("product"), Some("lapin"), "{props:#?}");
        assert_eq!(
            props
                .get("capabilities")
                .and_then(|caps| caps.get("authentication_failure_close")),
            Some(&serde_json::Value::Bool(true)),
            "the client's nested capabilities table must survive: {props:#?}"
        );

        if target.via_proxy() {
            assert_eq!(
                seen.property("amqpprox_client"),
                Some(format!("127.0.0.1:{client_port}").as_str()),
                "{props:#?}"
            );
            let host = seen
                .property("amqpprox_host")
                .unwrap_or_else(|| panic!("no amqpprox_host property: {props:#?}"));
            let listen_prefix = format!("(:{}) ", target.port());
            assert!(host.starts_with(&listen_prefix), "amqpprox_host = {host:?}");
            assert!(
                host.ends_with(&format!(":{}", seen.peer_port)),
                "amqpprox_host = {host:?} should end with the egress port {}",
                seen.peer_port
            );
        } else {
            // Direct: the broker's peer is this very socket, and no proxy
            // properties appear.
            assert_eq!(seen.peer_port, client_port);
            assert_eq!(seen.property("amqpprox_client"), None);
            assert_eq!(seen.property("amqpprox_host"), None);
        }

        connection
            .close(200, "done")
            .await
            .expect("close the connection");
    })
    .await;
}
