//! The Rust client of the RabbitMQ Stream protocol (`rabbitmq-stream-client`
//! 0.4) through the real proxy (`LISTEN START_STREAM`, a plain listener, not
//! load-balancer mode) in front of the standalone stream node that
//! `ci/ensure-rabbitmq-stream.sh --cluster` starts (127.0.0.20:5552).
//!
//! Owns this client's end-to-end contract: 10,000 messages published with
//! every publish confirmed, then consumed from the first offset in order
//! with their exact bodies; the `Metadata` the client follows to the
//! stream's leader pointing back at the proxy, and every one of its
//! connections going through the proxy (`CONN`, the proxy's log); a wrong
//! password reported to the client as an authentication failure, not a
//! hang. Never connects to the node directly, never covers what
//! tests/stream_proxy.rs covers with rstream (routing, refusals, locality,
//! operator commands), and never skips: a missing node fails the test.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use rabbitmq_stream_client::error::ClientError;
use rabbitmq_stream_client::types::{Message, OffsetSpecification, ResponseCode};
use rabbitmq_stream_client::{Client, ClientOptions, Environment};
use support::control::ctl;
use support::stream::{assert_sessions_logged, standalone_proxy};

const MESSAGES: usize = 10_000;

/// The limit of each step (connecting, publishing, consuming): far above
/// what a step takes, so that a hang fails instead of blocking CI.
const STEP: Duration = Duration::from_secs(90);

/// Message `i`'s body: 8 to 127 bytes that depend on `i` throughout.
fn body(i: usize) -> Vec<u8> {
    support::body_for(i, 8 + i % 120)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// `step` within [`STEP`]; panics naming `what` otherwise.
async fn bounded<T>(what: &str, step: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, step).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no answer within {STEP:?}"),
    }
}

/// An environment whose connections start at `entry` as guest.
async fn environment(entry: SocketAddr, password: &str) -> Result<Environment, ClientError> {
    Environment::builder()
        .host(&entry.ip().to_string())
        .port(entry.port())
        .username("guest")
        .password(password)
        .virtual_host("/")
        .build()
        .await
}

/// How many stream sessions the proxy's `CONN` lists.
fn stream_sessions(control: &Path) -> usize {
    ctl(control, "CONN")
        .lines()
        .filter(|l| l.contains("protocol=stream"))
        .count()
}

/// What one publish came to: the publishing id the broker confirmed, or
/// why there was no confirmation.
type Outcome = Result<u64, String>;

/// Publishes and consumes through the proxy listening at `entry` (its
/// control socket at `control`); returns how long publishing with
/// confirms and consuming took.
async fn roundtrip(
    env: Environment,
    entry: SocketAddr,
    control: PathBuf,
    stream: String,
) -> (Duration, Duration) {
    // The Metadata the producer follows to the stream's leader (and a
    // consumer to a replica, of which a standalone node has none) names
    // the proxy's listener, not the node.
    let client = bounded(
        "a raw client",
        Client::connect(
            ClientOptions::builder()
                .host(&entry.ip().to_string())
                .port(entry.port())
                .build(),
        ),
    )
    .await
    .expect("connect a raw client to the proxy");
    let metadata = bounded("Metadata", client.metadata(vec![stream.clone()]))
        .await
        .expect("Metadata");
    let metadata = &metadata[&stream];
    assert_eq!(metadata.response_code, ResponseCode::Ok, "{metadata:?}");
    assert_eq!(
        (metadata.leader.host.as_str(), metadata.leader.port),
        (entry.ip().to_string().as_str(), u32::from(entry.port())),
        "the leader in Metadata is not the proxy's listener: {metadata:?}"
    );
    assert!(
        metadata.replicas.iter().all(|r| r == &metadata.leader),
        "{metadata:?}"
    );
    bounded("closing the raw client", client.close())
        .await
        .expect("close the raw client");

    let producer = bounded("a producer", env.producer().build(&stream))
        .await
        .expect("a producer on the stream's leader");
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let started = Instant::now();
    for i in 0..MESSAGES {
        let outcomes = outcomes.clone();
        bounded(
            "a publish",
            producer.send(Message::builder().body(body(i)).build(), move |outcome| {
                let outcome = match outcome {
                    Ok(status) if status.confirmed() && *status.status() == ResponseCode::Ok => {
                        Ok(status.publishing_id())
                    }
                    Ok(status) => Err(format!("{status:?}")),
                    Err(e) => Err(e.to_string()),
                };
                outcomes.lock().unwrap().push(outcome);
                std::future::ready(())
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("publish message {i}: {e}"));
    }
    let count = || outcomes.lock().unwrap().len();
    support::wait_for_async(STEP, "a confirmation of every publish", || {
        std::future::ready(count() >= MESSAGES)
    })
    .await;
    let published = started.elapsed();
    {
        let outcomes = outcomes.lock().unwrap();
        assert_eq!(outcomes.len(), MESSAGES, "more outcomes than publishes");
        let mut ids = Vec::with_capacity(MESSAGES);
        for outcome in outcomes.iter() {
            match outcome {
                Ok(id) => ids.push(*id),
                Err(why) => panic!("a publish was not confirmed: {why}"),
            }
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), MESSAGES, "a publish was confirmed twice");
    }

    let mut consumer = bounded(
        "a consumer",
        env.consumer()
            .offset(OffsetSpecification::First)
            .build(&stream),
    )
    .await
    .expect("a consumer from the first offset");
    // The producer's connection to the leader and the consumer's: both
    // through the proxy. The connections closed so far (the environment's
    // check, the creator's, the producer's first stop and the raw client)
    // leave `CONN` once closed; a producer that went to the node itself
    // would leave one session.
    let sessions = support::poll_until_async(support::deadline_in(STEP), || {
        let control = control.clone();
        async move {
            let n = support::blocking(move || stream_sessions(&control)).await;
            (n == 2).then_some(n)
        }
    })
    .await;
    assert_eq!(sessions, Some(2), "CONN:\n{}", ctl(&control, "CONN"));

    let started = Instant::now();
    for i in 0..MESSAGES {
        let delivery = bounded("a delivery", consumer.next())
            .await
            .unwrap_or_else(|| panic!("the consumer ended after {i} messages"))
            .unwrap_or_else(|e| panic!("delivery {i}: {e}"));
        assert_eq!(delivery.offset(), i as u64, "delivery {i}: offset");
        let got = delivery
            .message()
            .data()
            .unwrap_or_else(|| panic!("delivery {i}: no body"));
        support::assert_body_eq(i, got, &body(i));
    }
    let consumed = started.elapsed();

    bounded("closing the consumer", consumer.handle().close())
        .await
        .expect("close the consumer");
    bounded("closing the producer", producer.close())
        .await
        .expect("close the producer");
    (published, consumed)
}

#[test]
fn the_rust_client_publishes_and_consumes_10000_messages_through_the_proxy() {
    let (proxy, entry) = standalone_proxy();
    let stream = support::unique_name("rust-client");
    let runtime = runtime();
    let env = runtime
        .block_on(bounded("the environment", environment(entry, "guest")))
        .expect("connect the Rust client to the proxy");
    runtime
        .block_on(bounded(
            "creating the stream",
            env.stream_creator().create(&stream),
        ))
        .expect("create the stream");
    // On its own task, so that the stream is deleted whatever happened.
    let outcome = runtime.block_on(runtime.spawn(roundtrip(
        env.clone(),
        entry,
        proxy.control_socket.clone(),
        stream.clone(),
    )));
    let deleted = runtime.block_on(bounded("deleting the stream", env.delete_stream(&stream)));
    let (published, consumed) = match outcome {
        Ok(figures) => figures,
        Err(failure) if failure.is_panic() => std::panic::resume_unwind(failure.into_panic()),
        Err(failure) => panic!("the round trip did not finish: {failure}"),
    };
    deleted.expect("delete the stream");
    println!(
        "rabbitmq-stream-client through the proxy: {MESSAGES} messages published and confirmed in {published:?}, consumed in {consumed:?}"
    );
    // The client's connections, each a session of the proxy with a broker
    // connection of its own: the environment's check, the creator, the raw
    // client, the producer's two (the entry, then the leader from
    // Metadata), the consumer and the deleter.
    assert_sessions_logged(&proxy, 7);
}

#[test]
fn a_wrong_password_is_an_authentication_failure_for_the_rust_client() {
    let (_proxy, entry) = standalone_proxy();
    let refused = runtime().block_on(bounded(
        "a login with a wrong password",
        environment(entry, "wrong-password"),
    ));
    match refused {
        Err(ClientError::RequestError(ResponseCode::AuthenticationFailure)) => {}
        Err(other) => panic!("expected AuthenticationFailure, got {other:?}"),
        Ok(_) => panic!("a wrong password was accepted"),
    }
}
