//! `BACKEND DRAIN` end to end (docs/routing.md#draining-a-backend): a proxy with two shards
//! and a farm of two backends, `b1` and `b2`, that are both the local
//! RabbitMQ, so `CONN json`'s `backend` shows where each session went.
//! Real clients: amqprs connections that report the `Connection.Close` they
//! get, and lapin publishers with confirms that reconnect on any error and
//! publish again what was not confirmed.
//!
//! These tests own the observable drain contract: a drained backend's
//! sessions are told 320 and reconnect to the other member with no
//! confirmed message lost, `BACKEND PRINT` shows the state, `UNDRAIN`
//! routes to it again, and deleting a backend or taking it out of the farm
//! moves its sessions the same way (and only those). They fail, never
//! skip, without RabbitMQ. Deadlines are generous: they run on a loaded
//! two-core machine.

mod support;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ConnectionProperties};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::control::ctl_bin;
use support::proxy::ProxyProcess;
use support::rabbit::{require_rabbitmq, RABBITMQ_HOST, RABBITMQ_PORT};
use support::{blocking, deadline_in, unique_name, wait_until_async};

/// What the client of a moved session is told (docs/routing.md#draining-a-backend).
const MOVE_TEXT: &str =
    "CONNECTION_FORCED - amqpprox is moving this connection to another broker, please reconnect";

/// A bound on each wait; far above what a drain takes on an idle machine.
const WAIT: Duration = Duration::from_secs(30);

/// A proxy with two shards routing every vhost to farm `f` = [b1, b2].
fn start() -> ProxyProcess {
    start_with(&[])
}

fn start_with(args: &[&str]) -> ProxyProcess {
    require_rabbitmq();
    let mut builder = ProxyProcess::builder("unused", 1)
        .without_simple_mode()
        .shards(2)
        .verbosity(4);
    for arg in args {
        builder = builder.arg(*arg);
    }
    let proxy = builder.start();
    for line in [
        format!("BACKEND ADD b1 dc1 {RABBITMQ_HOST} {RABBITMQ_PORT}"),
        format!("BACKEND ADD b2 dc1 {RABBITMQ_HOST} {RABBITMQ_PORT}"),
        "FARM ADD f round-robin b1 b2".to_string(),
        "MAP DEFAULT f".to_string(),
        format!("LISTEN START {}", proxy.port),
    ] {
        assert_eq!(control_sync(&proxy, &line), "", "control line {line:?}");
    }
    proxy
}

fn control_sync(proxy: &ProxyProcess, line: &str) -> String {
    let (reply, code) = ctl_bin(&proxy.control_socket, line);
    assert_eq!(code, 0, "{line:?} failed: {reply}");
    reply
}

async fn control(proxy: &ProxyProcess, line: &str) -> String {
    let socket = proxy.control_socket.clone();
    let line = line.to_string();
    blocking(move || {
        let (reply, code) = ctl_bin(&socket, &line);
        assert_eq!(code, 0, "{line:?} failed: {reply}");
        reply
    })
    .await
}

/// The body of `GET /metrics` on `port`.
async fn metrics(port: u16) -> String {
    blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    })
    .await
}

/// One session as `CONN json` shows it.
#[derive(Debug, Clone)]
struct Placed {
    backend: String,
    open: bool,
    moving: bool,
}

/// Every session by id.
async fn sessions(proxy: &ProxyProcess) -> BTreeMap<u64, Placed> {
    let json = control(proxy, "CONN json").await;
    let views: Vec<serde_json::Value> =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("CONN json: {e}: {json}"));
    views
        .iter()
        .map(|v| {
            (
                v["id"].as_u64().expect("id"),
                Placed {
                    backend: v["backend"].as_str().unwrap_or_default().to_string(),
                    open: v["phase"] == "Open",
                    moving: v["moving"].as_bool().expect("moving"),
                },
            )
        })
        .collect()
}

/// How many established sessions each backend has.
async fn per_backend(proxy: &ProxyProcess) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in sessions(proxy).await.values().filter(|s| s.open) {
        *counts.entry(s.backend.clone()).or_default() += 1;
    }
    counts
}

/// Waits until `per_backend` is `wanted`, or panics showing the last view.
async fn wait_placement(proxy: &ProxyProcess, wanted: &[(&str, usize)], what: &str) {
    let wanted: BTreeMap<String, usize> = wanted
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(b, n)| (b.to_string(), *n))
        .collect();
    let reached = wait_until_async(deadline_in(WAIT), || async {
        per_backend(proxy).await == wanted
    })
    .await;
    assert!(
        reached,
        "{what}: wanted {wanted:?}, have {:?}\n{}",
        sessions(proxy).await,
        proxy.log_files()
    );
}

/// Hands the `Connection.Close` an amqprs client receives to the test.
struct CloseSeen(tokio::sync::mpsc::UnboundedSender<(u16, String)>);

#[async_trait::async_trait]
impl amqprs::callbacks::ConnectionCallback for CloseSeen {
    async fn close(
        &mut self,
        _: &amqprs::connection::Connection,
        close: amqprs::Close,
    ) -> Result<(), amqprs::error::Error> {
        let _ = self
            .0
            .send((close.reply_code(), close.reply_text().clone()));
        Ok(())
    }
    async fn blocked(&mut self, _: &amqprs::connection::Connection, _: String) {}
    async fn unblocked(&mut self, _: &amqprs::connection::Connection) {}
    async fn secret_updated(&mut self, _: &amqprs::connection::Connection) {}
}

/// An amqprs client, the backend its session landed on, and the closes it
/// was sent.
struct Observer {
    connection: amqprs::connection::Connection,
    backend: String,
    closes: tokio::sync::mpsc::UnboundedReceiver<(u16, String)>,
}

/// Opens an amqprs connection and finds its session (the one new id in
/// `CONN json` once it is open), so the test knows its backend.
async fn observe(proxy: &ProxyProcess) -> Observer {
    let before: BTreeSet<u64> = sessions(proxy).await.keys().copied().collect();
    let args =
        amqprs::connection::OpenConnectionArguments::new("127.0.0.1", proxy.port, "guest", "guest");
    let connection = amqprs::connection::Connection::open(&args)
        .await
        .unwrap_or_else(|e| panic!("amqprs connects through the proxy: {e}\n{}", proxy.output()));
    let (tx, closes) = tokio::sync::mpsc::unbounded_channel();
    connection.register_callback(CloseSeen(tx)).await.unwrap();
    let backend = support::poll_until_async(deadline_in(WAIT), || {
        let before = &before;
        async move {
            let new: Vec<Placed> = sessions(proxy)
                .await
                .into_iter()
                .filter(|(id, s)| !before.contains(id) && s.open)
                .map(|(_, s)| s)
                .collect();
            match new.as_slice() {
                [only] => Some(only.backend.clone()),
                _ => None,
            }
        }
    })
    .await
    .expect("the new session never showed in CONN json");
    Observer {
        connection,
        backend,
        closes,
    }
}

impl Observer {
    /// The close this client was sent, waiting up to [`WAIT`].
    async fn expect_close(&mut self) -> (u16, String) {
        tokio::time::timeout(WAIT, self.closes.recv())
            .await
            .expect("a moved client is told within the deadline")
            .expect("close callback")
    }

    /// Still connected and never sent a close.
    fn assert_untouched(&mut self) {
        assert!(
            self.closes.try_recv().is_err(),
            "a session on {} was closed",
            self.backend
        );
        assert!(
            self.connection.is_open(),
            "a session on {} lost its connection",
            self.backend
        );
    }
}

/// What the publishers share with the test.
#[derive(Default)]
struct Published {
    confirmed: Mutex<BTreeSet<u32>>,
    /// Every error a publisher's connection reported, as text.
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Published {
    fn confirmed(&self) -> usize {
        self.confirmed.lock().unwrap().len()
    }
}

/// Publishes `ids` in order to `queue` with confirms, reconnecting through
/// the proxy after any error and publishing again the one message whose
/// confirm it had not seen; stops early when asked.
async fn publisher(url: String, queue: String, ids: std::ops::Range<u32>, shared: Arc<Published>) {
    let mut ids = ids.peekable();
    'connect: while ids.peek().is_some() && !shared.stop.load(Ordering::Relaxed) {
        let connection =
            match lapin::Connection::connect(&url, ConnectionProperties::default()).await {
                Ok(c) => c,
                Err(e) => {
                    shared.errors.lock().unwrap().push(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
        let errors = Arc::clone(&shared);
        connection.on_error(move |e| errors.errors.lock().unwrap().push(e.to_string()));
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
        while let Some(&id) = ids.peek() {
            if shared.stop.load(Ordering::Relaxed) {
                break 'connect;
            }
            let confirm = match channel
                .basic_publish(
                    "",
                    &queue,
                    BasicPublishOptions::default(),
                    &id.to_be_bytes(),
                    BasicProperties::default(),
                )
                .await
            {
                Ok(pending) => pending.await,
                Err(e) => Err(e),
            };
            match confirm {
                Ok(c) if c.is_ack() => {
                    shared.confirmed.lock().unwrap().insert(id);
                    ids.next();
                }
                Ok(_) => panic!("message {id} nacked"),
                Err(e) => {
                    shared.errors.lock().unwrap().push(format!("publish: {e}"));
                    continue 'connect;
                }
            }
        }
        let _ = connection.close(200, "done").await;
    }
}

/// Declares `queue` (shared by every connection, so it outlives a moved
/// one) straight at RabbitMQ.
async fn declare(queue: &str) -> lapin::Connection {
    let url = support::amqp_url(RABBITMQ_HOST, RABBITMQ_PORT, "guest", "guest", "/");
    let connection = lapin::Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(queue, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    connection
}

/// Every message in `queue` (ids; duplicates allowed), and deletes it.
async fn drain_queue(connection: &lapin::Connection, queue: &str) -> BTreeSet<u32> {
    let channel = connection.create_channel().await.unwrap();
    let mut seen = BTreeSet::new();
    while let Some(message) = channel
        .basic_get(queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        seen.insert(u32::from_be_bytes(
            message.delivery.data[..4].try_into().unwrap(),
        ));
    }
    channel
        .queue_delete(queue, QueueDeleteOptions::default())
        .await
        .unwrap();
    seen
}

async fn within<T>(proxy: &ProxyProcess, body: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(180), body).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish in 180 s\n{}", proxy.output()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drained_sessions_reconnect_to_the_other_member_and_lose_no_confirmed_message() {
    let proxy = start();
    within(&proxy, async {
        let queue = unique_name("drain-q");
        let direct = declare(&queue).await;
        let mut observers = Vec::new();
        for _ in 0..4 {
            observers.push(observe(&proxy).await);
        }
        let shared = Arc::new(Published::default());
        let url = proxy.amqp_url("guest", "guest", "/");
        let publishers: Vec<_> = [0..1_000_000, 1_000_000..2_000_000]
            .into_iter()
            .map(|ids| {
                tokio::spawn(publisher(
                    url.clone(),
                    queue.clone(),
                    ids,
                    Arc::clone(&shared),
                ))
            })
            .collect();
        // Six sessions in strict rotation over two members.
        wait_placement(&proxy, &[("b1", 3), ("b2", 3)], "before the drain").await;
        let flowing =
            wait_until_async(deadline_in(WAIT), || async { shared.confirmed() >= 200 }).await;
        assert!(flowing, "publishers stalled before the drain");
        let on_b1: Vec<u64> = sessions(&proxy)
            .await
            .into_iter()
            .filter(|(_, s)| s.backend == "b1")
            .map(|(id, _)| id)
            .collect();

        assert_eq!(control(&proxy, "BACKEND DRAIN b1").await, "");
        assert_eq!(
            control(&proxy, "BACKEND PRINT").await,
            format!(
                // Both reached OpenOk before the drain: passive health says up.
                "b1 (dc1): {RABBITMQ_HOST} {RABBITMQ_HOST}:{RABBITMQ_PORT} DRAINED HEALTH UP\n\
                 b2 (dc1): {RABBITMQ_HOST} {RABBITMQ_HOST}:{RABBITMQ_PORT} HEALTH UP\n"
            )
        );
        let json = control(&proxy, "BACKEND PRINT json").await;
        assert!(
            json.contains(r#""name":"b1","#) && json.contains(r#""drained":true"#),
            "{json}"
        );

        // Every observer on b1 is told 320 with the proxy's text; the
        // others are untouched.
        for observer in observers.iter_mut().filter(|o| o.backend == "b1") {
            assert_eq!(observer.expect_close().await, (320, MOVE_TEXT.to_string()));
        }
        // The publishers reconnected: every session is on b2 now.
        let observers_on_b2 = observers.iter().filter(|o| o.backend == "b2").count();
        wait_placement(&proxy, &[("b2", observers_on_b2 + 2)], "after the drain").await;
        for observer in observers.iter_mut().filter(|o| o.backend == "b2") {
            observer.assert_untouched();
        }
        // The moved observers reconnect too, and land on b2.
        for _ in observers.iter().filter(|o| o.backend == "b1") {
            let again = observe(&proxy).await;
            assert_eq!(again.backend, "b2");
        }
        let moved_publisher = shared
            .errors
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains("moving this connection to another broker"));
        assert!(
            moved_publisher,
            "no publisher saw the 320: {:?}",
            shared.errors.lock().unwrap()
        );

        // Publishing goes on through b2; then stop and count.
        let at_drain = shared.confirmed();
        let resumed = wait_until_async(deadline_in(WAIT), || async {
            shared.confirmed() >= at_drain + 200
        })
        .await;
        assert!(resumed, "publishing did not resume after the drain");
        shared.stop.store(true, Ordering::Relaxed);
        for p in publishers {
            p.await.unwrap();
        }
        let confirmed = shared.confirmed.lock().unwrap().clone();
        let stored = drain_queue(&direct, &queue).await;
        let lost: Vec<&u32> = confirmed.difference(&stored).take(10).collect();
        assert!(
            lost.is_empty(),
            "{} confirmed messages lost, e.g. {lost:?}",
            confirmed.difference(&stored).count()
        );
        // Each moved session closed its broker side with an AMQP close (a
        // proper close for RabbitMQ, not a dropped socket), whether or not
        // its client acknowledged ours first (lapin just leaves).
        let log = proxy.settled_log_files();
        for id in on_b1 {
            let moved =
                format!("{id}: Moving the session off backend 'b1': backend 'b1' is drained");
            let ended = format!("{id}: Session ended (Graceful): client side: CloseSentToBroker");
            assert!(
                log.contains(&moved) && log.contains(&ended),
                "session {id}:\n{log}"
            );
        }
        let _ = direct.close(200, "done").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn undrain_routes_to_the_backend_again_and_moves_nothing() {
    let port = support::proxy::free_port().to_string();
    let proxy = start_with(&["--metricsPort", &port]);
    let port: u16 = port.parse().unwrap();
    within(&proxy, async {
        assert_eq!(control(&proxy, "BACKEND DRAIN b1").await, "");
        let scraped = metrics(port).await;
        assert!(
            scraped.contains("amqpprox_backend_drained{name=\"b1\"} 1\n")
                && scraped.contains("amqpprox_backend_drained{name=\"b2\"} 0\n"),
            "{scraped}"
        );
        let mut first = Vec::new();
        for _ in 0..4 {
            first.push(observe(&proxy).await);
        }
        assert!(
            first.iter().all(|o| o.backend == "b2"),
            "a new session went to the drained b1"
        );
        let dump = control(&proxy, "CONFIG DUMP").await;
        assert!(dump.contains("\nBACKEND DRAIN b1\n"), "{dump}");

        assert_eq!(control(&proxy, "BACKEND UNDRAIN b1").await, "");
        assert!(!control(&proxy, "BACKEND PRINT").await.contains("DRAINED"));
        assert!(metrics(port)
            .await
            .contains("amqpprox_backend_drained{name=\"b1\"} 0\n"));
        let mut second = Vec::new();
        for _ in 0..4 {
            second.push(observe(&proxy).await);
        }
        let on_b1 = second.iter().filter(|o| o.backend == "b1").count();
        assert_eq!(on_b1, 2, "the rotation includes b1 again");
        // Undraining moves nobody back.
        wait_placement(&proxy, &[("b1", 2), ("b2", 6)], "after the undrain").await;
        for o in first.iter_mut() {
            o.assert_untouched();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_backend_moves_its_sessions_only() {
    let proxy = start();
    within(&proxy, async {
        let mut observers = Vec::new();
        for _ in 0..4 {
            observers.push(observe(&proxy).await);
        }
        wait_placement(&proxy, &[("b1", 2), ("b2", 2)], "before the delete").await;
        assert_eq!(control(&proxy, "BACKEND DELETE b1").await, "");
        for o in observers.iter_mut().filter(|o| o.backend == "b1") {
            assert_eq!(o.expect_close().await, (320, MOVE_TEXT.to_string()));
        }
        wait_placement(&proxy, &[("b2", 2)], "after the delete").await;
        for o in observers.iter_mut().filter(|o| o.backend == "b2") {
            o.assert_untouched();
        }
        assert_eq!(observe(&proxy).await.backend, "b2");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redefining_a_farm_without_a_member_moves_only_that_members_sessions() {
    let proxy = start();
    within(&proxy, async {
        let mut observers = Vec::new();
        for _ in 0..4 {
            observers.push(observe(&proxy).await);
        }
        // With the farm gone every vhost would be refused: nobody moves.
        assert_eq!(control(&proxy, "FARM DELETE f").await, "");
        let placed = sessions(&proxy).await;
        assert!(placed.values().all(|s| !s.moving), "{placed:?}");
        assert_eq!(control(&proxy, "FARM ADD f round-robin b2").await, "");
        for o in observers.iter_mut().filter(|o| o.backend == "b1") {
            assert_eq!(o.expect_close().await, (320, MOVE_TEXT.to_string()));
        }
        wait_placement(&proxy, &[("b2", 2)], "after the farm lost b1").await;
        for o in observers.iter_mut().filter(|o| o.backend == "b2") {
            o.assert_untouched();
        }
        assert_eq!(observe(&proxy).await.backend, "b2");
    })
    .await;
}
