//! The real-RabbitMQ scenarios (`--rabbitmq`): lapin clients publish to a
//! queue of their own on the broker at 127.0.0.1:5672 (guest/guest), with
//! and without publisher confirms, straight or through a target; and the
//! same with pika (`rabbit-pika`, `rabbit-pika-confirm`), a real client that
//! writes each publish on its own, one Python process per client
//! (`benches/pika_publish.py`, run with the test venv's Python).
//!
//! Owns the lapin connections of one run and the queues they declare (one
//! per client, purged and deleted at the end). Never touches other queues or
//! the broker's configuration, never consumes, and never leaves more than a
//! window of unconfirmed messages in flight.

use crate::scenarios::{Metrics, Probe};
use anyhow::{Context, Result};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Unconfirmed messages one client keeps in flight with confirms on.
const CONFIRM_WINDOW: usize = 1000;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RabbitLoad {
    pub clients: usize,
    pub messages: usize,
    pub size: usize,
}

/// Publishes `load` through `port`; `confirms` turns on publisher confirms.
pub fn publish(port: u16, load: RabbitLoad, confirms: bool, probe: Probe) -> Result<Metrics> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(port, load, confirms, probe))
}

async fn run(port: u16, load: RabbitLoad, confirms: bool, probe: Probe) -> Result<Metrics> {
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let mut clients = Vec::with_capacity(load.clients);
    for i in 0..load.clients {
        let conn = Connection::connect(&uri, ConnectionProperties::default())
            .await
            .with_context(|| format!("lapin connect {uri}"))?;
        let channel = conn.create_channel().await?;
        let queue = format!("amqpprox-bench-{}-{i}", std::process::id());
        channel
            .queue_declare(
                &queue,
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
        if confirms {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
        }
        clients.push((conn, channel, queue));
    }
    let payload = vec![0xABu8; load.size];
    let cpu0 = probe.cpu();
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (_, channel, queue) in &clients {
        let (channel, queue, payload) = (channel.clone(), queue.clone(), payload.clone());
        tasks.spawn(publisher(channel, queue, payload, load.messages, confirms));
    }
    while let Some(done) = tasks.join_next().await {
        done.context("publisher task")??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let used = probe.cpu().since(&cpu0);
    for (conn, channel, queue) in clients {
        channel
            .queue_delete(&queue, QueueDeleteOptions::default())
            .await?;
        conn.close(200, "bench done").await?;
    }
    let messages = (load.clients * load.messages) as f64;
    let mut m = Metrics::new();
    m.insert("secs".into(), secs);
    m.insert("msgs_per_s".into(), messages / secs);
    m.insert("mb_per_s".into(), messages * load.size as f64 / 1e6 / secs);
    used.record(&mut m);
    used.record_per(&mut m, "us_per_msg", messages / 1e6);
    Ok(m)
}

/// One client's publishes. Without confirms the run ends with a passive
/// `Queue.Declare`: its reply comes after the broker has taken every
/// earlier publish on the channel.
async fn publisher(
    channel: Channel,
    queue: String,
    payload: Vec<u8>,
    messages: usize,
    confirms: bool,
) -> Result<()> {
    let mut window = VecDeque::with_capacity(CONFIRM_WINDOW);
    for _ in 0..messages {
        let confirm = channel
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default(),
            )
            .await?;
        if confirms {
            window.push_back(confirm);
            if window.len() >= CONFIRM_WINDOW {
                if let Some(c) = window.pop_front() {
                    anyhow::ensure!(c.await?.is_ack(), "broker nacked a message");
                }
            }
        }
    }
    for c in window {
        anyhow::ensure!(c.await?.is_ack(), "broker nacked a message");
    }
    if !confirms {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(&queue, passive, FieldTable::default())
            .await?;
    }
    Ok(())
}

/// The Python that has pika: `AMQPPROX_BENCH_PYTHON`, or the test venv
/// (`target/test-venv`, made by the test scripts).
fn pika_python() -> std::path::PathBuf {
    std::env::var_os("AMQPPROX_BENCH_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/python"),
        Into::into,
    )
}

/// `load.clients` pika processes publish `load.messages` each through
/// `port`; the clock runs from "go" (all connected) until the last "done".
pub fn pika(port: u16, load: RabbitLoad, confirms: bool, probe: Probe) -> Result<Metrics> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pika_publish.py");
    let python = pika_python();
    let mut children = Vec::with_capacity(load.clients);
    for _ in 0..load.clients {
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .arg(port.to_string())
            .arg(load.messages.to_string())
            .arg(load.size.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if confirms {
            cmd.arg("--confirms");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {} (set AMQPPROX_BENCH_PYTHON)", python.display()))?;
        children.push(Publisher::new(child));
    }
    for c in &mut children {
        c.expect("ready")?;
    }
    let cpu0 = probe.cpu();
    let t0 = Instant::now();
    for c in &mut children {
        c.go()?;
    }
    for c in &mut children {
        c.expect("done")?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let used = probe.cpu().since(&cpu0);
    for c in children {
        c.finish()?;
    }
    let messages = (load.clients * load.messages) as f64;
    let mut m = Metrics::new();
    m.insert("secs".into(), secs);
    m.insert("msgs_per_s".into(), messages / secs);
    m.insert("mb_per_s".into(), messages * load.size as f64 / 1e6 / secs);
    used.record(&mut m);
    used.record_per(&mut m, "us_per_msg", messages / 1e6);
    Ok(m)
}

/// One pika process and the line protocol of `pika_publish.py`; killed if
/// dropped before it finished.
struct Publisher {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Publisher {
    fn new(mut child: std::process::Child) -> Publisher {
        let stdout = child.stdout.take().expect("piped stdout");
        Publisher {
            child,
            lines: std::io::BufReader::new(stdout).lines(),
        }
    }

    /// Waits for the line `want` (bounded: the script's sockets time out).
    fn expect(&mut self, want: &str) -> Result<()> {
        match self.lines.next() {
            Some(Ok(line)) if line.trim() == want => Ok(()),
            other => anyhow::bail!("pika publisher: expected {want:?}, got {other:?}"),
        }
    }

    fn go(&mut self) -> Result<()> {
        let stdin = self.child.stdin.as_mut().context("pika stdin")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "pika publisher exited with {status}");
        Ok(())
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
