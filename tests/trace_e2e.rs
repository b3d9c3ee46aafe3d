//! Logging and `TRACE` end to end, through the proxy to RabbitMQ
//! (docs/logging.md#lines-operators-grep-for, docs/logging.md#credentials,
//! docs/logging.md#tracing): log files appear with the original's names and
//! carry the per-session lines; no log, at any level, holds a password; `TRACE`
//! logs the methods of the sessions it selects (by vhost, source or session),
//! nothing of the others and never a body, switches live, and is bounded in
//! rate.
//!
//! These tests read the proxy's log files and stderr; they fail, never
//! skip, without RabbitMQ.

#[path = "stats_e2e/common.rs"]
mod common;
mod support;

use common::{connect, control, proxy, sessions};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::time::{Duration, Instant};
use support::proxy::ProxyProcess;
use support::rabbit::{self, rabbitmqctl, TempVhost};
use support::{blocking, unique_name};

/// Waits until the log files satisfy `check`; panics with them after 10 s.
async fn wait_logs(proxy: &ProxyProcess, what: &str, check: impl Fn(&str) -> bool) -> String {
    let found = support::poll_until_async(support::deadline_in(Duration::from_secs(10)), || {
        let logs = proxy.log_files();
        std::future::ready(check(&logs).then_some(logs))
    })
    .await;
    found.unwrap_or_else(|| panic!("{what}:\n{}", proxy.log_files()))
}

/// A queue on a fresh channel, and a few publishes carrying `marker`; the
/// channel is returned so that the caller decides when it closes.
async fn traffic(connection: &Connection, marker: &str, count: usize) -> Channel {
    let channel = connection.create_channel().await.unwrap();
    let queue = support::declare_private_queue(&channel, "trace-q").await;
    for _ in 0..count {
        channel
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                marker.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    channel
}

/// Trace lines of one session (`[vhost] id: Trace: ...`).
fn trace_lines(logs: &str, vhost: &str, id: u64) -> usize {
    let tag = format!(" [{vhost}] {id}: Trace: ");
    logs.lines().filter(|l| l.contains(&tag)).count()
}

async fn session_id(proxy: &ProxyProcess, vhost: &str) -> u64 {
    sessions(proxy)
        .await
        .iter()
        .find(|s| s["vhost"] == vhost)
        .and_then(|s| s["id"].as_u64())
        .unwrap_or_else(|| panic!("no session on {vhost}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_logs_the_methods_of_selected_sessions_only() {
    let proxy = proxy(2, &[]);
    let a = TempVhost::create(&unique_name("trace-a"));
    let b = TempVhost::create(&unique_name("trace-b"));
    let marker = unique_name("BODY-MARKER");
    assert_eq!(control(&proxy, "TRACE PRINT").await, "Tracing off.\n");
    assert_eq!(
        control(&proxy, &format!("TRACE VHOST {}", a.name)).await,
        format!("Tracing vhost {}: 0 sessions now.\n", a.name)
    );
    let ca = connect(&proxy, &a.name, &unique_name("trace-a")).await;
    // Channels stay open: lapin refuses to close a connection while one of
    // its channels is still closing.
    let mut held = Vec::new();
    let cb = connect(&proxy, &b.name, &unique_name("trace-b")).await;
    let (ida, idb) = (
        session_id(&proxy, &a.name).await,
        session_id(&proxy, &b.name).await,
    );
    held.push(traffic(&ca, &marker, 3).await);
    held.push(traffic(&cb, &marker, 3).await);
    let publish = format!(
        " [{}] {ida}: Trace: client->broker channel=1 basic.publish size=",
        a.name
    );
    let logs = wait_logs(&proxy, "the traced vhost's publishes", |l| {
        l.matches(&publish).count() == 3
    })
    .await;
    for expected in [
        format!(
            " [{}] {ida}: Trace: client->broker channel=1 channel.open size=5",
            a.name
        ),
        format!(
            " [{}] {ida}: Trace: broker->client channel=1 queue.declare-ok size=",
            a.name
        ),
    ] {
        assert!(logs.contains(&expected), "no {expected:?} in\n{logs}");
    }
    assert!(logs
        .lines()
        .any(|l| l.contains(&format!(" [{}] {ida}: Trace: ", a.name)) && l.contains(" INFO ")));
    assert_eq!(trace_lines(&logs, &b.name, idb), 0, "{logs}");
    assert!(!logs.contains(&marker), "a body reached the log:\n{logs}");
    assert_eq!(
        control(&proxy, "TRACE PRINT").await,
        format!("Tracing vhost {}.\n", a.name)
    );

    // A session switched on live; the vhost filter is replaced.
    assert_eq!(
        control(&proxy, &format!("TRACE SESSION {idb}")).await,
        format!("Tracing session {idb}: 1 sessions now.\n")
    );
    let before_a = trace_lines(&proxy.settled_log_files(), &a.name, ida);
    held.push(traffic(&cb, &marker, 2).await);
    held.push(traffic(&ca, &marker, 2).await);
    wait_logs(&proxy, "the traced session's methods", |l| {
        trace_lines(l, &b.name, idb) >= 4
    })
    .await;

    // Off: nothing more for anyone.
    assert_eq!(control(&proxy, "TRACE OFF").await, "Tracing off.\n");
    let logs = proxy.settled_log_files();
    let before_b = trace_lines(&logs, &b.name, idb);
    assert_eq!(trace_lines(&logs, &a.name, ida), before_a, "{logs}");
    let untraced = traffic(&cb, &marker, 2).await;
    // A round trip on the same channel: its answer comes after the broker
    // has the publishes, so the proxy has relayed (and, were it tracing,
    // logged) them; settled_log_files then waits out the log writer.
    untraced
        .basic_qos(10, lapin::options::BasicQosOptions::default())
        .await
        .unwrap();
    held.push(untraced);
    assert_eq!(
        trace_lines(&proxy.settled_log_files(), &b.name, idb),
        before_b
    );

    // By source: both sessions come from 127.0.0.1.
    assert_eq!(
        control(&proxy, "TRACE SOURCE 127.0.0.1").await,
        "Tracing source 127.0.0.1: 2 sessions now.\n"
    );
    ca.close(200, "done").await.unwrap();
    let close = format!(
        " [{}] {ida}: Trace: client->broker channel=0 connection.close size=",
        a.name
    );
    wait_logs(&proxy, "the close of a source-traced session", |l| {
        l.contains(&close)
    })
    .await;
    cb.close(200, "done").await.unwrap();

    let socket = &proxy.control_socket;
    let usage = "Usage: TRACE (VHOST vhost | SOURCE ip | SESSION id | OFF | PRINT)\n";
    assert_eq!(
        support::control::ctl_bin(socket, "TRACE"),
        (usage.into(), 3)
    );
    assert_eq!(
        support::control::ctl(socket, "TRACE SESSION x"),
        "Invalid session id 'x'.\n"
    );
    assert_eq!(
        support::control::ctl(socket, "TRACE SOURCE nowhere"),
        "Invalid IP address 'nowhere'.\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_is_bounded_in_rate() {
    let proxy = proxy(1, &[]);
    assert_eq!(
        control(&proxy, "TRACE VHOST /").await,
        "Tracing vhost /: 0 sessions now.\n"
    );
    let c = connect(&proxy, "/", &unique_name("trace-flood")).await;
    let id = session_id(&proxy, "/").await;
    let started = Instant::now();
    let channel = traffic(&c, "x", 3000).await;
    // A round trip after the publishes: every one has passed the proxy.
    channel
        .queue_declare(
            &unique_name("sync"),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let logs = wait_logs(&proxy, "the count of suppressed lines", |l| {
        l.contains("lines suppressed in the last second (at most 200 per second per shard)")
    })
    .await;
    let seconds = started.elapsed().as_secs() + 2;
    let traced = trace_lines(&logs, "/", id) as u64;
    assert!(traced <= 200 * seconds, "{traced} lines in {seconds} s");
    assert!(traced >= 200, "{traced}");
    c.close(200, "done").await.unwrap();
}

/// A RabbitMQ user for one test, deleted on drop.
struct TempUser(String);

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn log_files_carry_session_lines_and_never_a_password() {
    rabbit::require_rabbitmq();
    let user = TempUser(unique_name("trace-user"));
    let password = unique_name("S3cret-pw");
    let wrong = unique_name("Wr0ng-pw");
    {
        let (u, p) = (user.0.clone(), password.clone());
        blocking(move || {
            rabbitmqctl(&["add_user", &u, &p]);
            rabbitmqctl(&["set_permissions", "-p", "/", &u, ".*", ".*", ".*"]);
        })
        .await;
    }
    let proxy = proxy(1, &["-v", "5"]);
    assert_eq!(control(&proxy, "LOG FILE 5").await, "");
    assert_eq!(
        control(&proxy, "TRACE VHOST /").await,
        "Tracing vhost /: 0 sessions now.\n"
    );
    let name = unique_name("logged-app");
    let url = format!("amqp://{}:{password}@127.0.0.1:{}/%2F", user.0, proxy.port);
    let props = ConnectionProperties::default().with_connection_name(name.clone().into());
    let c = Connection::connect(&url, props)
        .await
        .expect("connect as the test user");
    let mut held = Vec::new();
    held.push(traffic(&c, "hello", 2).await);
    c.close(200, "done").await.unwrap();
    let bad = format!("amqp://{}:{wrong}@127.0.0.1:{}/%2F", user.0, proxy.port);
    assert!(Connection::connect(&bad, ConnectionProperties::default())
        .await
        .is_err());

    let line = format!("Starting connection for: connectionName=\"{name}\" tlsEnabled=insecure");
    let logs = wait_logs(&proxy, "the per-session lines", |l| {
        l.contains(&line) && l.contains("Session ended (Graceful)")
    })
    .await;
    let files: Vec<String> = std::fs::read_dir(&proxy.log_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let today = chrono::Utc::now().format("%Y%m%d").to_string();
    assert!(
        files
            .iter()
            .any(|f| f == &format!("amqpprox_{today}_00000.log")),
        "{files:?}"
    );
    let stderr = proxy.stderr();
    assert!(stderr.contains(&line), "console at TRACE lacks {line:?}");
    for secret in [&password, &wrong] {
        assert!(
            !logs.contains(secret.as_str()),
            "a password is in the log files"
        );
        assert!(
            !stderr.contains(secret.as_str()),
            "a password is on the console"
        );
    }
}
