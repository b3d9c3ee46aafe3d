//! The vhost migration recipe of
//! docs/sessions.md#moving-a-vhost-to-another-cluster, end to end: publishers
//! with confirms and a consumer with acks run through the proxy while an
//! operator moves their vhost from one backend to another (`VHOST PAUSE` → `MAP
//! FARM` → `VHOST BACKEND_DISCONNECT` → `VHOST UNPAUSE` → `VHOST
//! FORCE_DISCONNECT`). Every confirmed message must be consumed, and a message
//! consumed twice only as a broker redelivery.
//!
//! The two "clusters" are two relays in front of the one local RabbitMQ, so
//! the test can tell which path each connection took. Fails, never skips,
//! without RabbitMQ.

mod support;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::control::ctl_bin;
use support::proxy::ProxyProcess;
use support::rabbit::{require_rabbitmq, TempVhost, RABBITMQ_HOST, RABBITMQ_PORT};
use support::relay::Relay;
use support::{blocking, unique_name};

/// Runs a control line that must succeed with an empty reply.
async fn control(proxy: &ProxyProcess, line: &str) {
    let socket = proxy.control_socket.clone();
    let owned = line.to_string();
    let (reply, code) = blocking(move || ctl_bin(&socket, &owned)).await;
    assert_eq!((reply.as_str(), code), ("", 0), "control line {line:?}");
}

async fn connect(url: &str) -> Option<Connection> {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .ok()
}

/// Publishes ids `first..` with confirms until `stop`, reconnecting after
/// any failure. Only acknowledged confirms count; an unconfirmed id is
/// never re-sent (it may or may not have reached the queue).
async fn publisher(url: String, queue: String, first: u64, stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut confirmed = Vec::new();
    let mut next = first;
    while !stop.load(Ordering::Relaxed) {
        let Some(connection) = connect(&url).await else {
            // A reconnecting client's pace, as real ones have.
            support::idle_for_async(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(channel) = connection.create_channel().await else {
            continue;
        };
        if channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .is_err()
        {
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            let id = next;
            next += 1;
            let sent = channel
                .basic_publish(
                    "",
                    &queue,
                    BasicPublishOptions::default(),
                    &id.to_be_bytes(),
                    BasicProperties::default(),
                )
                .await;
            let Ok(confirm) = sent else { break };
            match tokio::time::timeout(Duration::from_secs(30), confirm).await {
                Ok(Ok(c)) if c.is_ack() => confirmed.push(id),
                _ => break,
            }
            // The publisher's pace: a steady stream, not a flood.
            support::idle_for_async(Duration::from_millis(5)).await;
        }
        let _ = connection.close(200, "publisher done").await;
    }
    confirmed
}

/// What the consumer saw: how often each id came, and whether the repeats
/// were flagged as redeliveries.
#[derive(Default)]
struct Consumed {
    deliveries: BTreeMap<u64, u32>,
    repeats_not_redelivered: Vec<u64>,
}

/// Consumes and acks until `stop`, reconnecting after any failure.
async fn consumer(url: String, queue: String, seen: Arc<Mutex<Consumed>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Some(connection) = connect(&url).await else {
            // A reconnecting client's pace, as real ones have.
            support::idle_for_async(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(channel) = connection.create_channel().await else {
            continue;
        };
        let _ = channel.basic_qos(50, BasicQosOptions::default()).await;
        let Ok(mut deliveries) = channel
            .basic_consume(
                &queue,
                "",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        else {
            continue;
        };
        loop {
            let next = tokio::time::timeout(Duration::from_millis(200), deliveries.next()).await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let delivery = match next {
                Err(_) => continue,
                Ok(Some(Ok(d))) => d,
                Ok(_) => break,
            };
            let id = u64::from_be_bytes(delivery.data[..8].try_into().unwrap());
            {
                let mut seen = seen.lock().unwrap();
                let count = seen.deliveries.entry(id).or_insert(0);
                *count += 1;
                if *count > 1 && !delivery.redelivered {
                    seen.repeats_not_redelivered.push(id);
                }
            }
            if delivery.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
        }
        let _ = connection.close(200, "consumer done").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn vhost_migration_moves_clients_and_loses_no_confirmed_message() {
    require_rabbitmq();
    let rabbit: SocketAddr = format!("{RABBITMQ_HOST}:{RABBITMQ_PORT}").parse().unwrap();
    let (old_path, new_path) = (Relay::start(rabbit), Relay::start(rabbit));
    let vhost = TempVhost::create(&unique_name("migrate"));
    let proxy = ProxyProcess::builder("unused", 1)
        .without_simple_mode()
        .start();
    for line in [
        format!("BACKEND ADD old dc1 127.0.0.1 {}", old_path.port()),
        format!("BACKEND ADD new dc1 127.0.0.1 {}", new_path.port()),
        "FARM ADD old-cluster round-robin old".to_string(),
        "FARM ADD new-cluster round-robin new".to_string(),
        format!("MAP FARM {} old-cluster", vhost.name),
        format!("LISTEN START {}", proxy.port),
    ] {
        control(&proxy, &line).await;
    }

    let url = support::amqp_url("127.0.0.1", proxy.port, "guest", "guest", &vhost.name);
    let queue = unique_name("migrating");
    {
        let direct = support::amqp_url(RABBITMQ_HOST, RABBITMQ_PORT, "guest", "guest", &vhost.name);
        let connection = Connection::connect(&direct, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .queue_declare(
                &queue,
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        connection.close(200, "declared").await.unwrap();
    }

    let stop_publishing = Arc::new(AtomicBool::new(false));
    let stop_consuming = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Consumed::default()));
    let publishers: Vec<_> = (0..2u64)
        .map(|p| {
            tokio::spawn(publisher(
                url.clone(),
                queue.clone(),
                p * 1_000_000,
                stop_publishing.clone(),
            ))
        })
        .collect();
    let consuming = tokio::spawn(consumer(
        url.clone(),
        queue.clone(),
        seen.clone(),
        stop_consuming.clone(),
    ));

    // Every client is on and messages flow before the migration starts.
    let delivered = || seen.lock().unwrap().deliveries.len();
    support::wait_until_async(support::deadline_in(Duration::from_secs(20)), || {
        std::future::ready(old_path.accepted() >= 3 && delivered() >= 20)
    })
    .await;
    let before = (old_path.accepted(), new_path.accepted());
    assert!(
        before.0 >= 3 && before.1 == 0,
        "clients start on the old path: {before:?}"
    );

    // The recipe.
    control(&proxy, &format!("VHOST PAUSE {}", vhost.name)).await;
    // The recipe's pauses are part of what is tested: an operator lets
    // in-flight traffic settle after the pause and the disconnect.
    support::idle_for_async(Duration::from_millis(500)).await;
    control(&proxy, &format!("MAP FARM {} new-cluster", vhost.name)).await;
    control(&proxy, &format!("VHOST BACKEND_DISCONNECT {}", vhost.name)).await;
    support::idle_for_async(Duration::from_millis(500)).await;
    control(&proxy, &format!("VHOST UNPAUSE {}", vhost.name)).await;
    control(&proxy, &format!("VHOST FORCE_DISCONNECT {}", vhost.name)).await;

    // Clients reconnect through the new path and carry on.
    let back = support::wait_until_async(support::deadline_in(Duration::from_secs(20)), || {
        std::future::ready(new_path.accepted() >= 3)
    })
    .await;
    assert!(back, "clients did not come back through the new path");
    // Messages flow through the new path for a while, during which no
    // client may come back through the old one.
    let on_new_path = delivered();
    support::wait_until_async(support::deadline_in(Duration::from_secs(20)), || {
        std::future::ready(delivered() >= on_new_path + 100)
    })
    .await;
    assert_eq!(
        old_path.accepted(),
        before.0,
        "a client reconnected through the old path"
    );

    stop_publishing.store(true, Ordering::Relaxed);
    let mut confirmed = BTreeSet::new();
    for p in publishers {
        confirmed.extend(p.await.unwrap());
    }
    let mut deadline = support::Deadline::within(Duration::from_secs(30));
    loop {
        let missing: Vec<u64> = {
            let seen = seen.lock().unwrap();
            confirmed
                .iter()
                .filter(|id| !seen.deliveries.contains_key(id))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            deadline.pause_async().await,
            "{} confirmed messages never consumed, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    }
    stop_consuming.store(true, Ordering::Relaxed);
    consuming.await.unwrap();

    let seen = seen.lock().unwrap();
    assert!(
        confirmed.len() > 50,
        "too little traffic to mean anything: {}",
        confirmed.len()
    );
    assert!(
        seen.repeats_not_redelivered.is_empty(),
        "consumed twice without a redelivery: {:?}",
        seen.repeats_not_redelivered
    );
    eprintln!(
        "migration: {} confirmed, {} consumed, {} redelivered; connections old={} new={}",
        confirmed.len(),
        seen.deliveries.len(),
        seen.deliveries.values().filter(|n| **n > 1).count(),
        old_path.accepted(),
        new_path.accepted()
    );
}
