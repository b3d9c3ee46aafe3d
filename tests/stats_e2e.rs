//! Statistics end to end, with real traffic through the proxy to RabbitMQ
//! (docs/commands.md#stat, docs/statistics.md#removal-causes,
//! docs/statistics.md#what-a-session-counts, docs/statistics.md#prometheus):
//! the `STAT LISTEN` records add up, per vhost, backend and source, to exactly
//! what `CONN` says each session moved; the human and filtered outputs have the
//! original's shapes; StatsD datagrams arrive, parse and add up too; `/metrics`
//! parses with a Prometheus parser and agrees with `STAT`; and every removal
//! cause is produced and counted once.
//!
//! The proxy ticks every 100 ms here. Every session starts after the first
//! record arrived, so all it moved is in the records that follow. Heartbeats
//! are off so that counters stand still once a test's traffic stops. These
//! tests fail, never skip, without RabbitMQ.

#[path = "stats_e2e/common.rs"]
mod common;
mod support;

use amqpprox::session::pool::BUFFER_SIZE;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use support::control::{ctl, ctl_bin, ctl_binary};
use support::proxy::free_port;
use support::rabbit::{self, TempVhost};
use support::raw::{self, RawConn};
use support::{blocking, unique_name};

#[tokio::test(flavor = "multi_thread")]
async fn json_records_add_up_to_what_each_session_moved() {
    let proxy = proxy(2, &[]);
    let a = TempVhost::create(&unique_name("stats-a"));
    // A name JSON must escape and StatsD must sanitise.
    let b = TempVhost::create(&format!("{} q\"uo,te", unique_name("stats-b")));
    let stream = StatStream::open(&proxy, "STAT LISTEN json all");
    let first = stream.json();
    for key in [
        "overall",
        "process",
        "bufferpool",
        "vhosts",
        "sources",
        "backends",
        "shards",
    ] {
        assert!(first.get(key).is_some(), "no {key:?} in {first}");
    }
    for field in FIELDS {
        assert!(
            first["overall"].get(field).is_some(),
            "no {field} in {first}"
        );
    }

    let ca = connect(&proxy, &a.name, &unique_name("stats-a")).await;
    let cb = connect(&proxy, &b.name, &unique_name("stats-b")).await;
    let sizes = [0, 1, 1000, 20_000, 131_072, 300_000];
    let body_a = publish(&ca, &sizes).await;
    publish(&cb, &sizes[..3]).await;

    let (records, conns) = until_conn_matches(&proxy, &stream).await;
    assert_eq!(conns.len(), 2, "{conns:?}");
    let in_a = conns
        .iter()
        .find(|c| c["vhost"] == a.name.as_str())
        .unwrap()["in_bytes"]
        .as_u64()
        .unwrap();
    // Bodies, plus at least a method, a header and a body frame each.
    assert!(in_a >= body_a + 6 * (12 + 22 + 8), "in_bytes {in_a}");
    for r in &records {
        for field in FIELDS {
            assert!(r["vhosts"]
                .as_object()
                .unwrap()
                .values()
                .all(|v| v.get(field).is_some()));
        }
    }

    // Each shard's share of a core, once two readings of its thread exist.
    let records = until(&stream, records, |records| {
        let Some(r) = records.last() else {
            return Err("no record yet".into());
        };
        let load = |shard: &str, field: &str| r["shards"][shard][field].as_u64();
        match ["0", "1"].map(|shard| (load(shard, "cpuPercent"), load(shard, "runDelayPercent"))) {
            [(Some(cpu0), Some(_)), (Some(cpu1), Some(_))] if cpu0 <= 100 && cpu1 <= 100 => Ok(()),
            other => Err(format!("shard loads: {other:?}")),
        }
    })
    .await;

    ca.close(200, "done").await.unwrap();
    cb.close(200, "done").await.unwrap();
    let records = until(&stream, records, |r| {
        let removed = |v: &str| sum(r, &["vhosts", v, "removedConnectionGraceful"]);
        match (removed(&a.name), removed(&b.name)) {
            (1, 1) => Ok(()),
            other => Err(format!("graceful removals per vhost: {other:?}")),
        }
    })
    .await;
    let last = records.last().unwrap();
    assert_eq!(last["overall"]["activeConnectionCount"], 0, "{last}");
    assert_eq!(sum(&records, &["overall", "removedConnectionGraceful"]), 2);
    assert_eq!(
        sum(&records, &["overall", "removedConnectionClientSnapped"]),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_and_human_output_have_the_original_shapes() {
    let proxy = proxy(1, &[]);
    let c = connect(&proxy, "/", &unique_name("stats-human")).await;
    let one = |filter: &str| {
        let stream = StatStream::open(&proxy, &format!("STAT LISTEN json {filter}"));
        stream.json()
    };
    assert_eq!(one("overall")["activeConnectionCount"], 1);
    assert_eq!(one("vhost=/")["activeConnectionCount"], 1);
    assert_eq!(
        one(&format!("BACKEND={BACKEND}"))["activeConnectionCount"],
        1
    );
    assert_eq!(one("source=127.0.0.1")["activeConnectionCount"], 1);
    assert_eq!(one("source=192.0.2.1")["activeConnectionCount"], 0);
    let process = one("process");
    assert!(process["mem_rss_kb"].as_u64().unwrap() > 0, "{process}");
    for f in [
        "cpu_percent_overall",
        "cpu_percent_user",
        "cpu_percent_system",
        "log_records_dropped",
    ] {
        assert!(process.get(f).is_some(), "{process}");
    }
    let pool = one("bufferpool");
    assert_eq!(pool["spill_to_heap_count"], 0, "{pool}");
    assert!(
        pool["pools"][BUFFER_SIZE.to_string()]["highest"]
            .as_u64()
            .is_some(),
        "{pool}"
    );

    let unknown = StatStream::open(&proxy, "STAT LISTEN json colour=red");
    assert_eq!(unknown.line(), "Unknown filter type: 'COLOUR'");

    let human = StatStream::open(&proxy, "STAT LISTEN human all");
    let mut block = Vec::new();
    loop {
        let line = human.line();
        if line.is_empty() {
            break;
        }
        block.push(line);
    }
    let titles: Vec<&str> = block
        .iter()
        .filter(|l| l.ends_with(':'))
        .map(String::as_str)
        .collect();
    assert_eq!(
        titles,
        [
            "Overall:",
            "Process:",
            "BufferPool:",
            "Vhosts:",
            "Sources:",
            "Backends:"
        ],
        "{block:#?}"
    );
    assert!(block[1].starts_with(
        "Paused: 0 Active: 1 Auth denied: 0 Limited connections: 0 Removed(Clean): 0"
    ));
    assert!(
        block[1].contains(" IN: ") && block[1].contains(" B/s ") && block[1].ends_with("frames/s")
    );
    assert!(block[3].starts_with("CPU%: "), "{block:#?}");
    let pools = format!("Spilt to heap: 0, Pools (Current/Peak): {BUFFER_SIZE}=");
    assert!(block[5].starts_with(&pools), "{block:#?}");
    assert!(
        block
            .iter()
            .any(|l| l.starts_with("/: Paused: 0 Active: 1")),
        "{block:#?}"
    );
    assert!(block
        .iter()
        .any(|l| l.starts_with("127.0.0.1: Paused: 0 Active: 1")));
    assert!(block
        .iter()
        .any(|l| l.starts_with(&format!("{BACKEND}: Paused: 0 Active: 1"))));

    let socket = &proxy.control_socket;
    assert_eq!(ctl(socket, "STAT LISTEN"), "No output type specified.\n");
    assert_eq!(
        ctl(socket, "STAT LISTEN xml"),
        "json or human must be the type of output\n"
    );
    assert_eq!(
        ctl_bin(socket, "STAT LISTEN json a b"),
        ("Filter specified incorrectly.\n".into(), 3)
    );

    // amqpprox_ctl prints a stream as it comes.
    let mut child = std::process::Command::new(ctl_binary())
        .args([
            socket.to_str().unwrap(),
            "STAT",
            "LISTEN",
            "human",
            "overall",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.starts_with("Paused: 0 Active: 1"), "{first:?}");
    c.close(200, "done").await.unwrap();
}

/// One StatsD datagram: name with tags, value, type.
fn parse_datagram(d: &str) -> (String, f64, char) {
    let (name, rest) = d
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("no ':' in {d:?}"));
    let (value, kind) = rest
        .split_once('|')
        .unwrap_or_else(|| panic!("no '|' in {d:?}"));
    assert!(name.starts_with("amqpprox."), "{d:?}");
    assert!(matches!(kind, "g" | "c" | "d"), "{d:?}");
    (
        name.to_string(),
        value.parse().unwrap_or_else(|_| panic!("{d:?}")),
        kind.chars().next().unwrap(),
    )
}

fn datagrams(socket: &UdpSocket, during: Duration) -> Vec<(String, f64, char)> {
    let deadline = Instant::now() + during;
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(parse_datagram(std::str::from_utf8(&buf[..n]).unwrap()));
        }
    }
    got
}

/// Reads 300 ms windows of datagrams until one satisfies `settled`, so that
/// whatever was on its way before a command applied has arrived; panics
/// naming `what` after 15 s.
async fn quiet_window(
    udp: &UdpSocket,
    what: &str,
    settled: impl Fn(&[(String, f64, char)]) -> bool,
) {
    let mut deadline = support::Deadline::within(Duration::from_secs(15));
    loop {
        let window = blocking({
            let udp = udp.try_clone().unwrap();
            move || datagrams(&udp, Duration::from_millis(300))
        })
        .await;
        if settled(&window) {
            return;
        }
        assert!(
            deadline.pause_async().await,
            "waiting for {what}: {window:?}"
        );
    }
}

/// Reads what has arrived, up to the first 50 ms without a datagram (a gap
/// between two ticks).
fn drain(socket: &UdpSocket) {
    let mut buf = [0u8; 2048];
    while socket.recv(&mut buf).is_ok() {}
}

#[tokio::test(flavor = "multi_thread")]
async fn statsd_datagrams_arrive_sanitised_and_add_up() {
    let proxy = proxy(2, &[]);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let port = udp.local_addr().unwrap().port();
    let vhost = TempVhost::create(&format!("{},x:y", unique_name("statsd")));
    let sanitised = vhost.name.replace([',', ':'], "_");
    assert_eq!(
        control(&proxy, &format!("STAT SEND 127.0.0.1 {port}")).await,
        format!("Sending stats on 127.0.0.1:{port}\n")
    );
    let c = connect(&proxy, &vhost.name, &unique_name("statsd")).await;
    publish(&c, &[10, 5000]).await;
    let in_bytes = sessions(&proxy).await[0]["in_bytes"].as_u64().unwrap();
    let name = format!("amqpprox.bytesReceived,rmqEndpointType=vhost,rmqVhostName={sanitised}");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        seen.extend(
            blocking({
                let udp = udp.try_clone().unwrap();
                move || datagrams(&udp, Duration::from_millis(300))
            })
            .await,
        );
        let total: f64 = seen
            .iter()
            .filter(|(n, _, _)| *n == name)
            .map(|(_, v, _)| v)
            .sum();
        if total as u64 == in_bytes {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name} sums to {total}, CONN says {in_bytes}"
        );
    }
    let has = |prefix: &str| seen.iter().any(|(n, _, _)| n.starts_with(prefix));
    assert!(seen.iter().any(|(n, _, k)| n
        == "amqpprox.pausedConnectionCount,rmqEndpointType=overall"
        && *k == 'g'));
    assert!(seen
        .iter()
        .any(|(n, _, k)| n == "amqpprox.cpu_percent_overall" && *k == 'c'));
    assert!(has(&format!("amqpprox.pools_{BUFFER_SIZE}_highest")));
    assert!(has(&format!(
        "amqpprox.activeConnectionCount,rmqEndpointType=backends,rmqEndpointHostname={BACKEND}"
    )));
    assert!(has(
        "amqpprox.bytesSent,rmqEndpointType=sources,rmqEndpointHostname=127.0.0.1"
    ));
    // Each of the two shards' share of a core, as gauges within one core,
    // from the tick that has two readings of its thread.
    let shard_gauges = |seen: &[(String, f64, char)]| {
        ["0", "1"].iter().all(|shard| {
            ["shard_cpu_percent", "shard_run_delay_percent"]
                .iter()
                .all(|family| {
                    let name = format!("amqpprox.{family},shard={shard}");
                    seen.iter()
                        .any(|(n, v, k)| *n == name && *k == 'g' && (0.0..=100.0).contains(v))
                })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !shard_gauges(&seen) {
        assert!(
            Instant::now() < deadline,
            "no gauges of both shards' loads in {seen:?}"
        );
        seen.extend(
            blocking({
                let udp = udp.try_clone().unwrap();
                move || datagrams(&udp, Duration::from_millis(300))
            })
            .await,
        );
    }

    assert_eq!(
        control(&proxy, "STAT DISABLE per-source").await,
        "DISABLE per-source applied.\n"
    );
    // A tick already on its way when the command applied may still carry
    // per-source lines: wait for a window of ticks without them.
    let per_source = |d: &[(String, f64, char)]| {
        d.iter()
            .any(|(n, _, _)| n.contains("rmqEndpointType=sources"))
    };
    quiet_window(&udp, "ticks without per-source lines", move |d| {
        !d.is_empty() && !per_source(d)
    })
    .await;
    drain(&udp);
    let later = blocking({
        let udp = udp.try_clone().unwrap();
        move || datagrams(&udp, Duration::from_millis(500))
    })
    .await;
    assert!(
        !later.is_empty()
            && !later
                .iter()
                .any(|(n, _, _)| n.contains("rmqEndpointType=sources"))
    );
    assert_eq!(
        control(&proxy, "STAT ENABLE per-source").await,
        "ENABLE per-source applied.\n"
    );

    let socket = proxy.control_socket.clone();
    let (text, code) =
        blocking(move || ctl_bin(&socket, "STAT SEND no-such-host.invalid 8125")).await;
    assert!(
        text.starts_with("Cannot resolve 'no-such-host.invalid'") && code == 3,
        "{text} {code}"
    );
    assert_eq!(
        control(&proxy, "STAT STOP SEND").await,
        "Stopped sending stats.\n"
    );
    // A tick already on its way may still arrive: wait for a silent window.
    quiet_window(&udp, "no more datagrams", |d| d.is_empty()).await;
    drain(&udp);
    let after = blocking(move || datagrams(&udp, Duration::from_millis(500))).await;
    assert!(after.is_empty(), "datagrams after STOP SEND: {after:?}");
    c.close(200, "done").await.unwrap();
}

/// `GET path` on the metrics port: status line and body.
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// Scrapes `/metrics` and sums the samples of `metric` whose labels
/// include every pair of `labels`.
fn scrape_sum(port: u16, metric: &str, labels: &[(&str, &str)]) -> (f64, prometheus_parse::Scrape) {
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let total = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{metric} is not a counter or gauge: {other:?}"),
        })
        .sum();
    (total, scrape)
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_metrics_parse_and_agree_with_stat() {
    let port = free_port();
    let proxy = proxy(2, &["--metricsPort", &port.to_string()]);
    let vhost = TempVhost::create(&unique_name("prom"));
    let stream = StatStream::open(&proxy, "STAT LISTEN json all");
    stream.json();
    let c = connect(&proxy, &vhost.name, &unique_name("prom")).await;
    publish(&c, &[100, 70_000]).await;
    let (records, _) = until_conn_matches(&proxy, &stream).await;
    let v = vhost.name.as_str();
    let stat_in = sum(&records, &["vhosts", v, "bytesReceived"]);
    let stat_frames_out = sum(&records, &["vhosts", v, "framesSent"]);

    let scrape = blocking(move || scrape_sum(port, "amqpprox_bytes_received_total", &[]).1).await;
    for name in [
        "amqpprox_bytes_received_total",
        "amqpprox_bytes_sent_total",
        "amqpprox_frames_received_total",
        "amqpprox_active_connections",
        "amqpprox_removed_connections_total",
        "amqpprox_shard_active_connections",
        "amqpprox_log_records_dropped_total",
    ] {
        assert!(scrape.docs.contains_key(name), "no HELP for {name}");
    }
    let metric = |m: &'static str, labels: Vec<(&'static str, String)>| {
        blocking(move || {
            let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            scrape_sum(port, m, &l).0
        })
    };
    let vl = || vec![("vhost", vhost.name.clone())];
    assert_eq!(
        metric("amqpprox_bytes_received_total", vl()).await as u64,
        stat_in
    );
    assert_eq!(
        metric("amqpprox_frames_sent_total", vl()).await as u64,
        stat_frames_out
    );
    assert_eq!(metric("amqpprox_active_connections", vl()).await, 1.0);
    assert_eq!(
        metric(
            "amqpprox_bytes_received_total",
            vec![("backend", BACKEND.into())]
        )
        .await as u64,
        stat_in
    );
    let shards =
        blocking(move || scrape_sum(port, "amqpprox_shard_active_connections", &[]).1).await;
    let labels: std::collections::BTreeSet<String> = shards
        .samples
        .iter()
        .filter(|s| s.metric == "amqpprox_shard_active_connections")
        .map(|s| s.labels.get("shard").unwrap().to_string())
        .collect();
    assert_eq!(labels, ["0", "1"].map(String::from).into());
    // Each shard thread's scheduler times: it has run (it relayed the
    // handshake and the publishes), and no thread ran longer than the
    // whole process (read in the same tick, after the threads').
    let per_shard = |metric: &str| -> std::collections::BTreeMap<String, f64> {
        shards
            .samples
            .iter()
            .filter(|s| s.metric == metric)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) => {
                    (s.labels.get("shard").unwrap().to_string(), v)
                }
                ref other => panic!("{metric} is not a counter: {other:?}"),
            })
            .collect()
    };
    let on_cpu = per_shard("amqpprox_shard_cpu_seconds_total");
    let delayed = per_shard("amqpprox_shard_run_delay_seconds_total");
    assert_eq!(on_cpu.keys().collect::<Vec<_>>(), ["0", "1"], "{on_cpu:?}");
    assert_eq!(
        delayed.keys().collect::<Vec<_>>(),
        ["0", "1"],
        "{delayed:?}"
    );
    assert!(on_cpu.values().all(|&t| t > 0.0), "{on_cpu:?}");
    let process: f64 = shards
        .samples
        .iter()
        .filter(|s| s.metric == "amqpprox_process_cpu_seconds_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            ref other => panic!("process CPU is not a counter: {other:?}"),
        })
        .sum();
    assert!(
        on_cpu.values().all(|&t| t <= process + 0.01),
        "shards {on_cpu:?}, process {process}"
    );

    c.close(200, "done").await.unwrap();
    let mut l = vl();
    l.push(("cause", "graceful".into()));
    support::wait_for_async(
        Duration::from_secs(15),
        "a graceful removal in /metrics",
        || {
            let removed = metric("amqpprox_removed_connections_total", l.clone());
            async move { removed.await == 1.0 }
        },
    )
    .await;
    assert_eq!(
        blocking(move || http_get(port, "/nope")).await.0,
        "HTTP/1.1 404 Not Found"
    );
}

/// Waits until the records' sum of each removal field equals `want`.
async fn removals(stream: &StatStream, records: Vec<Value>, want: [u64; 4]) -> Vec<Value> {
    until(stream, records, |r| {
        let got = [
            "removedConnectionGraceful",
            "removedConnectionBrokerSnapped",
            "removedConnectionClientSnapped",
            "removedConnectionProxy",
        ]
        .map(|f| sum(r, &[f]));
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "removals (graceful, broker, client, proxy): {got:?}, want {want:?}"
            ))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn each_removal_cause_is_produced_and_counted() {
    let metrics_port = free_port();
    let proxy = proxy(2, &["--metricsPort", &metrics_port.to_string()]);
    // The proxy's readiness probe (a bare TCP connect) ends as a client
    // removal: let it be counted (the metrics port shows it) before the
    // first record, which is not summed (it covers time before the
    // subscription).
    support::wait_for_async(
        Duration::from_secs(15),
        "the readiness probe's removal in /metrics",
        || async move {
            blocking(move || {
                scrape_sum(
                    metrics_port,
                    "amqpprox_removed_connections_total",
                    &[("cause", "client")],
                )
                .0 >= 1.0
            })
            .await
        },
    )
    .await;
    let stream = StatStream::open(&proxy, "STAT LISTEN json overall");
    stream.json();
    let records = Vec::new();

    // Graceful: the client closes.
    let c = connect(&proxy, "/", &unique_name("cause-graceful")).await;
    c.close(200, "bye").await.unwrap();
    let records = removals(&stream, records, [1, 0, 0, 0]).await;

    // Broker: RabbitMQ closes the connection.
    let name = unique_name("cause-broker");
    let _c = connect(&proxy, "/", &name).await;
    blocking(move || {
        let conn = rabbit::wait_for_connection(&name, Duration::from_secs(15));
        rabbit::close_connection(&conn, "stats test");
    })
    .await;
    let records = removals(&stream, records, [1, 1, 0, 0]).await;

    // Client: the socket is dropped without an AMQP close.
    let port = proxy.port;
    blocking(move || {
        let mut conn = RawConn::connect_local(port);
        raw::client_handshake(&mut conn, &unique_name("cause-client"), "/");
    })
    .await;
    let records = removals(&stream, records, [1, 1, 1, 0]).await;

    // Proxy: the operator forces it.
    let _c = connect(&proxy, "/", &unique_name("cause-proxy")).await;
    let id = sessions(&proxy).await[0]["id"].as_u64().unwrap();
    assert_eq!(
        control(&proxy, &format!("SESSION {id} FORCE_DISCONNECT")).await,
        ""
    );
    let records = removals(&stream, records, [1, 1, 1, 1]).await;
    assert_eq!(records.last().unwrap()["activeConnectionCount"], 0);
}
