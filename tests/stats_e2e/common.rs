//! Helpers of the statistics tests (`tests/stats_e2e.rs`,
//! `tests/trace_e2e.rs`): a proxy ticking every 100 ms, a `STAT LISTEN`
//! stream read on a thread, sums over JSON records, lapin traffic of known
//! sizes, and the check that records add up to what `CONN` reports.
//!
//! Owns no assertions about the proxy's behaviour beyond that comparison;
//! never skips without RabbitMQ.
#![allow(dead_code)]

use crate::support::proxy::ProxyProcess;
use crate::support::rabbit;
use crate::support::{blocking, control::ctl, Deadline};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

pub const BACKEND: &str = "127.0.0.1_5672";

/// The fields of every stats object: the original's thirteen, the proxy
/// removals (Fix 6) and the two latencies.
pub const FIELDS: [&str; 16] = [
    "pausedConnectionCount",
    "activeConnectionCount",
    "authDeniedConnectionCount",
    "limitedConnectionCount",
    "removedConnectionGraceful",
    "removedConnectionBrokerSnapped",
    "removedConnectionClientSnapped",
    "removedConnectionProxy",
    "packetsReceived",
    "packetsSent",
    "framesReceived",
    "framesSent",
    "bytesReceived",
    "bytesSent",
    "receiveLatency",
    "sendLatency",
];

pub fn proxy(shards: usize, extra: &[&str]) -> ProxyProcess {
    rabbit::require_rabbitmq();
    let mut b = ProxyProcess::builder(rabbit::RABBITMQ_HOST, rabbit::RABBITMQ_PORT)
        .shards(shards)
        .arg("--cleanupIntervalMs")
        .arg("100");
    for a in extra {
        b = b.arg(*a);
    }
    b.start()
}

/// A `STAT LISTEN` connection; its lines arrive on a channel. Dropping it
/// closes the connection, which ends the stream at the proxy.
pub struct StatStream {
    pub lines: mpsc::Receiver<String>,
    socket: UnixStream,
}

impl StatStream {
    pub fn open(proxy: &ProxyProcess, command: &str) -> StatStream {
        let mut socket = UnixStream::connect(&proxy.control_socket).expect("control socket");
        socket.write_all(format!("{command}\n").as_bytes()).unwrap();
        let reader = socket.try_clone().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        StatStream { lines, socket }
    }

    pub fn line(&self) -> String {
        tokio::task::block_in_place(|| self.lines.recv_timeout(Duration::from_secs(10)))
            .expect("a STAT record within 10 s")
    }

    pub fn json(&self) -> Value {
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("invalid JSON ({e}): {line}"))
    }

    /// Every record received so far.
    pub fn drain(&self) -> Vec<Value> {
        self.lines
            .try_iter()
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("invalid JSON ({e}): {l}")))
            .collect()
    }
}

impl Drop for StatStream {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

/// A JSON pointer to `parts` (escaping `~` and `/`).
pub fn ptr(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// The sum of one field over records (absent counts as 0).
pub fn sum(records: &[Value], parts: &[&str]) -> u64 {
    let p = ptr(parts);
    records
        .iter()
        .map(|r| r.pointer(&p).and_then(Value::as_u64).unwrap_or(0))
        .sum()
}

pub async fn control(proxy: &ProxyProcess, line: &str) -> String {
    let (socket, line) = (proxy.control_socket.clone(), line.to_string());
    blocking(move || ctl(&socket, &line)).await
}

/// `CONN json`, as values.
pub async fn sessions(proxy: &ProxyProcess) -> Vec<Value> {
    serde_json::from_str(&control(proxy, "CONN json").await).expect("CONN json parses")
}

pub async fn connect(proxy: &ProxyProcess, vhost: &str, name: &str) -> Connection {
    let url = format!("{}?heartbeat=0", proxy.amqp_url("guest", "guest", vhost));
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(&url, props)
        .await
        .unwrap_or_else(|e| panic!("connect to {vhost:?} through the proxy: {e:?}"))
}

/// Publishes one confirmed message per size; returns the body bytes sent.
pub async fn publish(connection: &Connection, sizes: &[usize]) -> u64 {
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let queue = crate::support::declare_private_queue(&channel, "stats-q").await;
    for &size in sizes {
        let confirm = channel
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                &vec![b'x'; size],
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }
    // Closed here, not when dropped: its close must not race the counts.
    channel.close(200, "done").await.unwrap();
    sizes.iter().map(|s| *s as u64).sum()
}

/// Collects records until they add up to what `CONN` says (re-read each
/// round, so traffic still settling is followed); returns the records and
/// the sessions they matched.
pub async fn until_conn_matches(
    proxy: &ProxyProcess,
    stream: &StatStream,
) -> (Vec<Value>, Vec<Value>) {
    let mut deadline = Deadline::within(Duration::from_secs(15));
    let mut records = Vec::new();
    loop {
        records.extend(stream.drain());
        let conns = sessions(proxy).await;
        match records_match(&records, &conns) {
            Ok(()) => return (records, conns),
            Err(why) => {
                if !deadline.pause_async().await {
                    panic!("{why}")
                }
            }
        }
    }
}

/// Collects records until `check` passes (or panics after 15 s with its
/// last complaint); returns every record seen.
pub async fn until(
    stream: &StatStream,
    mut records: Vec<Value>,
    mut check: impl FnMut(&[Value]) -> Result<(), String>,
) -> Vec<Value> {
    let mut deadline = Deadline::within(Duration::from_secs(15));
    loop {
        records.extend(stream.drain());
        match check(&records) {
            Ok(()) => return records,
            Err(why) => {
                if !deadline.pause_async().await {
                    panic!("{why}")
                }
            }
        }
    }
}

pub fn agree(what: &str, got: u64, want: u64) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: records sum to {got}, CONN says {want}"))
    }
}

/// The records' sums per vhost, backend, source and overall equal what
/// `CONN` says the sessions moved.
pub fn records_match(records: &[Value], conns: &[Value]) -> Result<(), String> {
    let mut total_in = 0;
    for c in conns {
        let vhost = c["vhost"].as_str().unwrap();
        let by_vhost = |field: &str| sum(records, &["vhosts", vhost, field]);
        for (field, conn_field) in [
            ("bytesReceived", "in_bytes"),
            ("framesReceived", "in_frames"),
            ("packetsReceived", "in_packets"),
            ("bytesSent", "out_bytes"),
            ("framesSent", "out_frames"),
            ("packetsSent", "out_packets"),
        ] {
            agree(
                &format!("{vhost} {field}"),
                by_vhost(field),
                c[conn_field].as_u64().unwrap(),
            )?;
        }
        total_in += c["in_bytes"].as_u64().unwrap();
    }
    agree(
        "backend bytesReceived",
        sum(records, &["backends", BACKEND, "bytesReceived"]),
        total_in,
    )?;
    agree(
        "source bytesReceived",
        sum(records, &["sources", "127.0.0.1", "bytesReceived"]),
        total_in,
    )?;
    agree(
        "overall bytesReceived",
        sum(records, &["overall", "bytesReceived"]),
        total_in,
    )
}
