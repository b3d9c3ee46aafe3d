//! A bounded soak through the proxy to the real RabbitMQ (see
//! `docs/reliability.md`): a proxy with 2 shards, publishers with confirms
//! and consumers with acks that reconnect all the time (their own churn and
//! forced disconnects), and an operator issuing random control commands
//! meanwhile (vhost and session pause/unpause, forced and graceful
//! disconnects, backends added to and removed from the farm, a dead member
//! to fail over past, `CONN` through `amqpprox_ctl`). At the end every
//! confirmed message was consumed at least once, no message was settled
//! twice (acknowledged, by two different deliveries, on connections that
//! then closed cleanly: two copies) or delivered twice on one connection
//! (a frame passed on twice), the proxy lists
//! no session, and its RSS is back near where it was after the warm-up.
//!
//! Runs `AMQPPROX_SOAK_SECS` seconds of churn (default 120). Publishers
//! re-publish what was not confirmed, as a numbered new attempt: a copy
//! of a message whose confirm was lost is a different message, not a
//! duplicate. Fails, never skips, without RabbitMQ; never sleeps to wait
//! for a result, only to pace the load.

mod support;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::control::{ctl, ctl_bin};
use support::proxy::ProxyProcess;
use support::rabbit::{require_rabbitmq, TempVhost, RABBITMQ_HOST, RABBITMQ_PORT};
use support::{blocking, unique_name};

const PUBLISHERS: u64 = 3;
const CONSUMERS: usize = 2;
/// How long any single AMQP step may take before the client gives up on
/// the connection and starts over (a pause lasts at most a second).
const STEP_LIMIT: Duration = Duration::from_secs(20);

fn soak_duration() -> Duration {
    match std::env::var("AMQPPROX_SOAK_SECS") {
        Err(_) => Duration::from_secs(120),
        Ok(v) => Duration::from_secs(
            v.parse()
                .unwrap_or_else(|_| panic!("AMQPPROX_SOAK_SECS={v:?} is not a number of seconds")),
        ),
    }
}

/// A small deterministic generator: the seed is printed, so a failing run
/// can be repeated with `AMQPPROX_SOAK_SEED`.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The message body: the id and the publish attempt.
fn body(id: u64, attempt: u32) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(&attempt.to_be_bytes());
    b
}

async fn connect(url: &str, name: &str) -> Option<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(STEP_LIMIT, Connection::connect(url, props)).await {
        Ok(Ok(c)) => Some(c),
        _ => None,
    }
}

#[derive(Default)]
struct Published {
    confirmed: BTreeSet<u64>,
    attempts: u64,
    connections: u64,
}

/// Publishes new ids from `first` until `stop`, a batch at a time, each
/// batch confirmed before the next; closes its connection every few
/// batches. Whatever was not confirmed (a nack, a timeout, a dropped
/// connection) is published again on the next connection as a new attempt.
async fn publisher(
    url: String,
    queue: String,
    first: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Published {
    let mut out = Published::default();
    let mut rng = Rng::new(seed);
    let mut next = first;
    let mut attempts: BTreeMap<u64, u32> = BTreeMap::new();
    let mut unconfirmed: VecDeque<u64> = VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(connection) = connect(&url, &format!("soak-pub-{first}")).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        out.connections += 1;
        let channel = match tokio::time::timeout(STEP_LIMIT, connection.create_channel()).await {
            Ok(Ok(c)) => c,
            _ => continue,
        };
        let selected = tokio::time::timeout(
            STEP_LIMIT,
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await;
        if !matches!(selected, Ok(Ok(()))) {
            continue;
        }
        let batches = 1 + rng.below(20);
        'batches: for _ in 0..batches {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let mut batch = Vec::new();
            while batch.len() < 10 {
                batch.push(unconfirmed.pop_front().unwrap_or_else(|| {
                    next += 1;
                    next - 1
                }));
            }
            let mut confirms = Vec::new();
            for (k, &id) in batch.iter().enumerate() {
                let attempt = attempts.entry(id).or_insert(0);
                *attempt += 1;
                out.attempts += 1;
                let sent = channel
                    .basic_publish(
                        "",
                        &queue,
                        BasicPublishOptions::default(),
                        &body(id, *attempt),
                        BasicProperties::default(),
                    )
                    .await;
                match sent {
                    Ok(confirm) => confirms.push((id, confirm)),
                    Err(_) => {
                        unconfirmed.extend(&batch[k..]);
                        break;
                    }
                }
            }
            let mut broken = confirms.len() < batch.len();
            // One deadline for the batch: a dead connection costs one
            // STEP_LIMIT, not one per message.
            let deadline = tokio::time::Instant::now() + STEP_LIMIT;
            for (id, confirm) in confirms {
                match tokio::time::timeout_at(deadline, confirm).await {
                    Ok(Ok(c)) if c.is_ack() => {
                        out.confirmed.insert(id);
                    }
                    _ => {
                        unconfirmed.push_back(id);
                        broken = true;
                    }
                }
            }
            if broken {
                break 'batches;
            }
            tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
        }
        let _ = tokio::time::timeout(STEP_LIMIT, connection.close(200, "publisher churn")).await;
    }
    out
}

/// What the consumers saw.
#[derive(Default)]
struct Consumed {
    /// (id, attempt) -> deliveries.
    deliveries: BTreeMap<(u64, u32), u32>,
    /// Every delivery in the order seen: its number (the index), its
    /// message and its redelivered flag.
    log: Vec<((u64, u32), bool)>,
    /// Message -> the numbers of its deliveries that were acknowledged on
    /// a connection that then closed cleanly: the broker had processed each
    /// such acknowledgement, so the delivery was settled.
    settled: BTreeMap<(u64, u32), Vec<usize>>,
    /// Messages delivered twice on one connection (its one channel): the
    /// broker requeues only when a channel closes, so a repeat there is a
    /// frame the proxy passed on twice.
    repeated_on_one_connection: Vec<(u64, u32)>,
    ids: BTreeSet<u64>,
    redelivered: u64,
    connections: u64,
}

/// What the repeated deliveries of a run say.
struct Repeats {
    /// Settled by two different deliveries: the broker held two copies,
    /// which is a duplicate. (One copy is settled at most once: a copy is
    /// requeued only when no acknowledgement of it was processed.)
    duplicates: Vec<(u64, u32)>,
    /// Delivered again without the redelivered flag, and not a duplicate.
    /// RabbitMQ's flag is a hint (AMQP 0-9-1 tells clients not to rely on
    /// it), and the consumers' log is in the order they handled deliveries,
    /// not the order the broker sent them: a consumer whose connection was
    /// cut can still hand over a first delivery that lapin had buffered
    /// after another consumer logged the requeued copy.
    unflagged_repeats: u64,
}

impl Consumed {
    fn repeats(&self) -> Repeats {
        let mut seen_before = BTreeSet::new();
        let unflagged_repeats = self
            .log
            .iter()
            .filter(|(key, redelivered)| !seen_before.insert(*key) && !*redelivered)
            .count() as u64;
        let duplicates = self
            .settled
            .iter()
            .filter(|(_, deliveries)| deliveries.len() > 1)
            .map(|(key, _)| *key)
            .collect();
        Repeats {
            duplicates,
            unflagged_repeats,
        }
    }
}

/// Consumes with acks until `stop`, closing its connection after a random
/// number of deliveries (unacked ones come back flagged as redelivered).
async fn consumer(
    url: String,
    queue: String,
    seed: u64,
    seen: Arc<Mutex<Consumed>>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let Some(connection) = connect(&url, &format!("soak-con-{seed}")).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        seen.lock().unwrap().connections += 1;
        let channel = match tokio::time::timeout(STEP_LIMIT, connection.create_channel()).await {
            Ok(Ok(c)) => c,
            _ => continue,
        };
        let _ = tokio::time::timeout(
            STEP_LIMIT,
            channel.basic_qos(20, BasicQosOptions::default()),
        )
        .await;
        let consumed = tokio::time::timeout(
            STEP_LIMIT,
            channel.basic_consume(
                &queue,
                "",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await;
        let Ok(Ok(mut deliveries)) = consumed else {
            continue;
        };
        let quota = 50 + rng.below(500);
        let mut taken = 0;
        // Deliveries acknowledged on this connection, by number.
        let mut acked_here = Vec::new();
        let mut on_this_connection = BTreeSet::new();
        while taken < quota && !stop.load(Ordering::Relaxed) {
            let delivery =
                match tokio::time::timeout(Duration::from_millis(200), deliveries.next()).await {
                    Err(_) => continue,
                    Ok(Some(Ok(d))) => d,
                    Ok(_) => break,
                };
            taken += 1;
            let id = u64::from_be_bytes(delivery.data[..8].try_into().unwrap());
            let attempt = u32::from_be_bytes(delivery.data[8..12].try_into().unwrap());
            let number = {
                let mut seen = seen.lock().unwrap();
                if !on_this_connection.insert((id, attempt)) {
                    seen.repeated_on_one_connection.push((id, attempt));
                }
                *seen.deliveries.entry((id, attempt)).or_insert(0) += 1;
                if delivery.redelivered {
                    seen.redelivered += 1;
                }
                seen.ids.insert(id);
                seen.log.push(((id, attempt), delivery.redelivered));
                seen.log.len() - 1
            };
            let acked =
                tokio::time::timeout(STEP_LIMIT, delivery.ack(BasicAckOptions::default())).await;
            if !matches!(acked, Ok(Ok(()))) {
                break;
            }
            acked_here.push(((id, attempt), number));
        }
        let closed =
            tokio::time::timeout(STEP_LIMIT, connection.close(200, "consumer churn")).await;
        // A clean close (CloseOk) comes after the broker has processed this
        // connection's earlier frames, the acknowledgements among them.
        if matches!(closed, Ok(Ok(()))) {
            let mut seen = seen.lock().unwrap();
            for (key, number) in acked_here {
                seen.settled.entry(key).or_default().push(number);
            }
        }
    }
}

/// A control line; the reply is returned (session commands may name a
/// session that has just gone, which is not a failure of the soak).
async fn control(proxy: &ProxyProcess, line: &str) -> String {
    let socket = proxy.control_socket.clone();
    let line = line.to_string();
    blocking(move || ctl(&socket, &line)).await
}

/// A control line that must succeed with an empty reply.
async fn control_ok(proxy: &ProxyProcess, line: &str) {
    let reply = control(proxy, line).await;
    assert_eq!(reply, "", "control line {line:?}\n{}", proxy.output());
}

async fn session_ids(proxy: &ProxyProcess) -> Vec<u64> {
    control(proxy, "CONN")
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .collect()
}

/// The operator: one random action at a time until `stop`, each leaving
/// the configuration as it found it. Returns how often each action ran.
async fn operator(
    proxy: &ProxyProcess,
    vhost: &str,
    dead_port: u16,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> BTreeMap<&'static str, u64> {
    let mut rng = Rng::new(seed);
    let mut counts = BTreeMap::new();
    let mut extra = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(600))).await;
        let pause = Duration::from_millis(100 + rng.below(700));
        let action = match rng.below(8) {
            0 => {
                control_ok(proxy, &format!("VHOST PAUSE {vhost}")).await;
                tokio::time::sleep(pause).await;
                control_ok(proxy, &format!("VHOST UNPAUSE {vhost}")).await;
                "vhost pause"
            }
            1 => {
                control_ok(proxy, &format!("VHOST FORCE_DISCONNECT {vhost}")).await;
                "vhost force disconnect"
            }
            2 | 3 => {
                let ids = session_ids(proxy).await;
                if ids.is_empty() {
                    continue;
                }
                let id = ids[rng.below(ids.len() as u64) as usize];
                let verb =
                    ["FORCE_DISCONNECT", "DISCONNECT_GRACEFUL", "PAUSE"][rng.below(3) as usize];
                control(proxy, &format!("SESSION {id} {verb}")).await;
                if verb == "PAUSE" {
                    tokio::time::sleep(pause).await;
                    control(proxy, &format!("SESSION {id} UNPAUSE")).await;
                }
                match verb {
                    "PAUSE" => "session pause",
                    "FORCE_DISCONNECT" => "session force disconnect",
                    _ => "session graceful disconnect",
                }
            }
            4 | 5 => {
                // A second path to the same broker joins the farm, then leaves.
                extra += 1;
                let name = format!("soak-extra-{extra}");
                control_ok(
                    proxy,
                    &format!("BACKEND ADD {name} dc1 127.0.0.1 {RABBITMQ_PORT}"),
                )
                .await;
                control_ok(
                    proxy,
                    &format!("FARM ADD default round-robin {name} default-backend"),
                )
                .await;
                tokio::time::sleep(pause * 2).await;
                control_ok(proxy, "FARM ADD default round-robin default-backend").await;
                control_ok(proxy, &format!("BACKEND DELETE {name}")).await;
                "backend added and removed"
            }
            6 => {
                // A member that refuses connections: sessions fail over.
                control_ok(
                    proxy,
                    &format!("BACKEND ADD soak-dead dc1 127.0.0.1 {dead_port}"),
                )
                .await;
                control_ok(
                    proxy,
                    "FARM ADD default round-robin soak-dead default-backend",
                )
                .await;
                tokio::time::sleep(pause * 2).await;
                control_ok(proxy, "FARM ADD default round-robin default-backend").await;
                control_ok(proxy, "BACKEND DELETE soak-dead").await;
                "dead member added and removed"
            }
            _ => {
                let socket = proxy.control_socket.clone();
                let (out, code) = blocking(move || ctl_bin(&socket, "CONN json")).await;
                assert_eq!(code, 0, "amqpprox_ctl CONN json: {out}");
                assert!(out.trim_start().starts_with('['), "{out}");
                "amqpprox_ctl CONN json"
            }
        };
        *counts.entry(action).or_insert(0) += 1;
    }
    counts
}

/// The proxy's resident set in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proxy status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Waits until the proxy lists no session.
async fn wait_no_sessions(proxy: &ProxyProcess, limit: Duration) {
    let start = Instant::now();
    loop {
        let ids = session_ids(proxy).await;
        if ids.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "sessions left after every client closed: {ids:?}\n{}",
            control(proxy, "CONN").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the workload (publishers, consumers, and the operator when
/// `chaos`) for `duration`, then waits until every confirmed message was
/// consumed. Returns what was published and consumed and the operator's
/// counts.
async fn run_workload(
    proxy: &ProxyProcess,
    vhost: &str,
    queue: &str,
    first_id: u64,
    seed: u64,
    duration: Duration,
    chaos: bool,
) -> (Published, Arc<Mutex<Consumed>>, BTreeMap<&'static str, u64>) {
    let url = support::amqp_url("127.0.0.1", proxy.port, "guest", "guest", vhost);
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let stop_consuming = Arc::new(AtomicBool::new(false));
    let stop_operator = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Consumed::default()));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            tokio::spawn(publisher(
                url.clone(),
                queue.to_string(),
                first_id + p * 1_000_000_000,
                seed ^ (p + 1),
                stop_publishing.clone(),
            ))
        })
        .collect();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|c| {
            tokio::spawn(consumer(
                url.clone(),
                queue.to_string(),
                seed ^ (100 + c as u64),
                seen.clone(),
                stop_consuming.clone(),
            ))
        })
        .collect();
    // Nothing listens on a port just freed: the dead member refuses.
    let dead_port = support::proxy::free_port();
    let operating = async {
        if chaos {
            operator(proxy, vhost, dead_port, seed ^ 999, stop_operator.clone()).await
        } else {
            BTreeMap::new()
        }
    };
    let timer = async {
        tokio::time::sleep(duration).await;
        stop_operator.store(true, Ordering::Relaxed);
    };
    let (counts, ()) = tokio::join!(operating, timer);

    stop_publishing.store(true, Ordering::Relaxed);
    let mut published = Published::default();
    for p in publishers {
        let p = p.await.expect("publisher task");
        published.confirmed.extend(p.confirmed);
        published.attempts += p.attempts;
        published.connections += p.connections;
    }
    // Every confirmed message must reach a consumer; generous, as queued
    // messages drain at the consumers' pace on a loaded machine.
    let start = Instant::now();
    loop {
        let missing: Vec<u64> = {
            let seen = seen.lock().unwrap();
            published
                .confirmed
                .iter()
                .filter(|id| !seen.ids.contains(id))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} confirmed messages never consumed, e.g. {:?} (seed {seed})",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_consuming.store(true, Ordering::Relaxed);
    for c in consumers {
        c.await.expect("consumer task");
    }
    (published, seen, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_loses_no_confirmed_message_and_returns_to_its_memory_baseline() {
    require_rabbitmq();
    let seed = std::env::var("AMQPPROX_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("soak: seed {seed} (AMQPPROX_SOAK_SEED to repeat)");
    let duration = soak_duration();
    let vhost = TempVhost::create(&unique_name("soak"));
    let proxy = ProxyProcess::builder(RABBITMQ_HOST, RABBITMQ_PORT)
        .shards(2)
        .start();
    let queue = unique_name("soak");
    {
        let direct = support::amqp_url(RABBITMQ_HOST, RABBITMQ_PORT, "guest", "guest", &vhost.name);
        let connection = Connection::connect(&direct, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ directly");
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
    // Touch the control socket once so a broken proxy fails here.
    control_ok(&proxy, &format!("VHOST UNPAUSE {}", vhost.name)).await;

    // Warm-up: the same load without the operator, so the baseline includes
    // the proxy's working set (buffers, allocator arenas).
    let (warm, _, _) = run_workload(
        &proxy,
        &vhost.name,
        &queue,
        0,
        seed,
        Duration::from_secs(10),
        false,
    )
    .await;
    assert!(
        warm.confirmed.len() > 20,
        "warm-up confirmed only {}",
        warm.confirmed.len()
    );
    wait_no_sessions(&proxy, Duration::from_secs(30)).await;
    let baseline = rss_kib(proxy.pid());

    let (published, seen, counts) = run_workload(
        &proxy,
        &vhost.name,
        &queue,
        100_000_000_000,
        seed,
        duration,
        true,
    )
    .await;
    wait_no_sessions(&proxy, Duration::from_secs(30)).await;
    // The allocator may return memory lazily; give it a moment by polling.
    let limit = baseline + baseline / 2 + 32 * 1024;
    let start = Instant::now();
    let mut end = rss_kib(proxy.pid());
    while end > limit && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        end = rss_kib(proxy.pid());
    }

    let seen = seen.lock().unwrap();
    let repeats = seen.repeats();
    eprintln!(
        "soak: {:?} of churn: {} confirmed of {} publish attempts, {} distinct consumed, \
         {} redelivered ({} more repeats unflagged); {} publisher and {} \
         consumer connections; operator: {counts:?}; RSS {baseline} KiB after warm-up, \
         {end} KiB at the end",
        duration,
        published.confirmed.len(),
        published.attempts,
        seen.ids.len(),
        seen.redelivered,
        repeats.unflagged_repeats,
        published.connections,
        seen.connections,
    );
    assert!(
        seen.repeated_on_one_connection.is_empty(),
        "delivered twice on one connection (id, attempt): {:?} (seed {seed})",
        &seen.repeated_on_one_connection[..seen.repeated_on_one_connection.len().min(20)]
    );
    assert!(
        repeats.duplicates.is_empty(),
        "settled twice, so the broker held two copies (id, attempt): \
         {:?} (seed {seed})",
        &repeats.duplicates[..repeats.duplicates.len().min(20)]
    );
    assert!(
        published.confirmed.len() as u64 > duration.as_secs() * 5,
        "too little traffic to mean anything: {} confirmed",
        published.confirmed.len()
    );
    assert!(
        published.connections + seen.connections > duration.as_secs() / 2,
        "too little churn: {} connections",
        published.connections + seen.connections
    );
    assert!(
        counts.values().sum::<u64>() > duration.as_secs() / 4,
        "{counts:?}"
    );
    assert!(
        end <= limit,
        "RSS grew from {baseline} KiB after the warm-up to {end} KiB (limit {limit} KiB)\n{}",
        proxy.output()
    );
}

#[test]
fn only_a_message_settled_twice_is_a_duplicate() {
    let a = (1, 1);
    let b = (2, 1);
    let c = (3, 1);
    let seen = Consumed {
        log: vec![
            (a, false),
            (b, false),
            (c, true),
            (a, false),
            (b, true),
            (c, false),
        ],
        settled: BTreeMap::from([
            // a: two deliveries settled: two copies.
            (a, vec![0, 3]),
            // b: its first delivery's connection ended uncleanly; the
            // flagged requeue was settled.
            (b, vec![4]),
            // c: the requeued copy was logged (and settled) before the
            // cut consumer handed over its buffered first delivery.
            (c, vec![2]),
        ]),
        ..Default::default()
    };
    let repeats = seen.repeats();
    assert_eq!(repeats.duplicates, vec![a]);
    assert_eq!(repeats.unflagged_repeats, 2, "a and c came again unflagged");
}
