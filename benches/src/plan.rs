//! What an invocation runs and in which order: the scenarios with their
//! sizes (full, `--quick`, or overridden), the targets, and the interleaved
//! loop `for scenario { for repeat { for target { run } } }` that starts a
//! fresh dummy broker and target for every run, so each run's CPU, RSS and
//! peak RSS belong to it alone.
//!
//! Owns sequencing and the per-run lifecycle. Never measures (see
//! `scenarios`, `rabbit`) and never formats results (see `report`); a
//! failed run is recorded and the loop goes on. `connections-tls` differs
//! from `connections` only in its broker (TLS, fresh key material per run)
//! and so in its targets' egress leg; its clients speak TLS only to
//! `direct`. `connections-remote` puts the dummy broker behind a link of
//! [`REMOTE_LINK_DELAY`] each way, and the proxy routes by vhost there, so
//! that it replays the handshake to the broker rather than relaying it.

use crate::procs::{self, Layout, Target, TargetKind, Upstream};
use crate::rabbit::{self, RabbitLoad};
use crate::report::{RunRecord, DIRECT};
use crate::scenarios::{self, Connections, Latency, Metrics, Probe, Throughput};
use crate::stream;
use amqpprox_testkit::load::broker::Mode;
use anyhow::{bail, Result};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The one-way delay of the link to the broker in `connections-remote`: a
/// broker a few milliseconds away, as across a region's zones or between
/// nearby datacenters.
pub const REMOTE_LINK_DELAY: Duration = Duration::from_millis(2);

/// A named scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Large,
    Small,
    Trickle,
    TrickleConfirm,
    Connections,
    ConnectionsTls,
    /// Connections to a broker behind a delayed link (see
    /// [`REMOTE_LINK_DELAY`]), the proxy routing by vhost.
    ConnectionsRemote,
    Latency,
    Idle,
    RabbitPublish,
    RabbitConfirm,
    /// RabbitMQ Stream protocol publish and consume (`stream`), opt-in:
    /// it needs the private stream node.
    Stream,
    RabbitPika,
    RabbitPikaConfirm,
}

impl Scenario {
    pub const LOAD: [Scenario; 9] = [
        Scenario::Large,
        Scenario::Small,
        Scenario::Trickle,
        Scenario::TrickleConfirm,
        Scenario::Connections,
        Scenario::ConnectionsTls,
        Scenario::ConnectionsRemote,
        Scenario::Latency,
        Scenario::Idle,
    ];
    pub const RABBIT: [Scenario; 4] = [
        Scenario::RabbitPublish,
        Scenario::RabbitConfirm,
        Scenario::RabbitPika,
        Scenario::RabbitPikaConfirm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Large => "large",
            Scenario::Small => "small",
            Scenario::Trickle => "trickle",
            Scenario::TrickleConfirm => "trickle-confirm",
            Scenario::Connections => "connections",
            Scenario::ConnectionsTls => "connections-tls",
            Scenario::ConnectionsRemote => "connections-remote",
            Scenario::Latency => "latency",
            Scenario::Idle => "idle",
            Scenario::RabbitPublish => "rabbit-publish",
            Scenario::RabbitConfirm => "rabbit-confirm",
            Scenario::Stream => "stream",
            Scenario::RabbitPika => "rabbit-pika",
            Scenario::RabbitPikaConfirm => "rabbit-pika-confirm",
        }
    }

    pub fn parse(name: &str) -> Result<Scenario> {
        let all = || {
            Scenario::LOAD
                .into_iter()
                .chain(Scenario::RABBIT)
                .chain([Scenario::Stream])
        };
        all().find(|s| s.name() == name).ok_or_else(|| {
            let known: Vec<&str> = all().map(Scenario::name).collect();
            anyhow::anyhow!("unknown scenario {name:?}; known: {}", known.join(", "))
        })
    }

    /// Runs against a real broker (`--rabbitmq`), not the dummy one.
    pub fn is_rabbit(self) -> bool {
        Scenario::RABBIT.contains(&self) || self == Scenario::Stream
    }

    /// True when the dummy broker speaks TLS.
    pub fn is_tls(self) -> bool {
        self == Scenario::ConnectionsTls
    }

    /// How far away the dummy broker is (zero: on this machine's loopback).
    pub fn link_delay(self) -> Duration {
        match self {
            Scenario::ConnectionsRemote => REMOTE_LINK_DELAY,
            _ => Duration::ZERO,
        }
    }

    fn broker_mode(self) -> Mode {
        match self {
            Scenario::Latency => Mode::Echo,
            Scenario::TrickleConfirm => Mode::Confirm,
            _ => Mode::Discard,
        }
    }
}

/// Every scenario's size; see [`Sizes::full`].
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sizes {
    pub large: Throughput,
    pub small: Throughput,
    pub trickle: Throughput,
    pub trickle_confirm: Throughput,
    pub connections: Connections,
    pub connections_tls: Connections,
    pub connections_remote: Connections,
    pub latency: Latency,
    pub idle_sessions: usize,
    pub rabbit: RabbitLoad,
    pub pika: RabbitLoad,
    pub pika_confirm: RabbitLoad,
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

impl Sizes {
    /// The targets table: 10 x 50 x 10 MiB, 10 x 100k x 1 KiB,
    /// trickle 4 x 400k x 1 KiB (rounds of a second or two: at 50k, a round
    /// took 0.2 s and its spread hid a 10% effect; with one confirm in
    /// flight: 4 x 10k), 20k
    /// connections 100 at a time (plain, and with egress TLS), 2k to a
    /// remote broker 20 at a time (few enough that the link, not the
    /// cores, sets the pace), 20k round trips, 10k idle sessions.
    pub fn full() -> Sizes {
        Sizes {
            large: Throughput {
                clients: 10,
                messages: 50,
                size: 10 * MIB,
            },
            small: Throughput {
                clients: 10,
                messages: 100_000,
                size: KIB,
            },
            trickle: Throughput {
                clients: 4,
                messages: 400_000,
                size: KIB,
            },
            trickle_confirm: Throughput {
                clients: 4,
                messages: 10_000,
                size: KIB,
            },
            connections: Connections {
                total: 20_000,
                parallel: 100,
            },
            connections_tls: Connections {
                total: 20_000,
                parallel: 100,
            },
            connections_remote: Connections {
                total: 2_000,
                parallel: 20,
            },
            latency: Latency {
                round_trips: 20_000,
                size: 64,
            },
            idle_sessions: 10_000,
            rabbit: RabbitLoad {
                clients: 4,
                messages: 25_000,
                size: KIB,
            },
            pika: RabbitLoad {
                clients: 2,
                messages: 20_000,
                size: KIB,
            },
            pika_confirm: RabbitLoad {
                clients: 2,
                messages: 4_000,
                size: KIB,
            },
        }
    }

    /// About a tenth of [`Sizes::full`] (large: a twelfth), for a smoke run.
    pub fn quick() -> Sizes {
        let full = Sizes::full();
        Sizes {
            large: Throughput {
                messages: 4,
                ..full.large
            },
            small: Throughput {
                messages: 10_000,
                ..full.small
            },
            trickle: Throughput {
                messages: 40_000,
                ..full.trickle
            },
            trickle_confirm: Throughput {
                messages: 1_000,
                ..full.trickle_confirm
            },
            connections: Connections {
                total: 2_000,
                ..full.connections
            },
            connections_tls: Connections {
                total: 2_000,
                ..full.connections_tls
            },
            connections_remote: Connections {
                total: 200,
                ..full.connections_remote
            },
            latency: Latency {
                round_trips: 2_000,
                ..full.latency
            },
            idle_sessions: 1_000,
            rabbit: RabbitLoad {
                messages: 2_500,
                ..full.rabbit
            },
            pika: RabbitLoad {
                messages: 2_000,
                ..full.pika
            },
            pika_confirm: RabbitLoad {
                messages: 400,
                ..full.pika_confirm
            },
        }
    }
}

/// Everything one invocation runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenarios: Vec<Scenario>,
    pub targets: Vec<Target>,
    pub repeats: usize,
    pub sizes: Sizes,
    pub layout: Layout,
    pub rabbit_port: u16,
}

/// Runs the whole plan, printing one progress line per run.
pub fn run(plan: &Plan) -> Vec<RunRecord> {
    let mut records = Vec::new();
    for &scenario in &plan.scenarios {
        for repeat in 0..plan.repeats {
            for target in &plan.targets {
                if scenario == Scenario::Idle && matches!(target.kind, TargetKind::Direct) {
                    continue; // no proxy process to weigh
                }
                let label = format!(
                    "[{} {}/{}] {}",
                    scenario.name(),
                    repeat + 1,
                    plan.repeats,
                    target.name
                );
                let started = Instant::now();
                let result = run_one(plan, scenario, target, repeat);
                let took = started.elapsed().as_secs_f64();
                let (metrics, error) = match result {
                    Ok(m) => {
                        println!("{label:<40} {} ({took:.1} s)", headline(scenario, &m));
                        (m, None)
                    }
                    Err(e) => {
                        println!("{label:<40} FAILED: {e:#}");
                        (Metrics::new(), Some(format!("{e:#}")))
                    }
                };
                records.push(RunRecord {
                    scenario: scenario.name().into(),
                    target: target.name.clone(),
                    repeat,
                    metrics,
                    error,
                });
            }
        }
    }
    records
}

/// A fresh broker (unless RabbitMQ) and target, one scenario, then both
/// stopped (on drop) before the next run.
fn run_one(plan: &Plan, scenario: Scenario, target: &Target, repeat: usize) -> Result<Metrics> {
    let run_label = format!("{}-{}", scenario.name(), repeat + 1);
    let layout = &plan.layout;
    let (broker, upstream) = if scenario == Scenario::Stream {
        let upstream = Upstream {
            port: stream::STREAM_NODE_AMQP_PORT,
            tls_ca: None,
            stream_node: Some(stream::STREAM_NODE.into()),
            routed_by_vhost: false,
        };
        (None, upstream)
    } else if scenario.is_rabbit() {
        let upstream = Upstream {
            port: plan.rabbit_port,
            tls_ca: None,
            stream_node: None,
            routed_by_vhost: false,
        };
        (None, upstream)
    } else {
        let (broker, mut upstream) = procs::start_broker(
            layout,
            scenario.broker_mode(),
            scenario.is_tls(),
            scenario.link_delay(),
        )?;
        upstream.routed_by_vhost = scenario == Scenario::ConnectionsRemote;
        (Some(broker), upstream)
    };
    let mut proc = procs::start_target(layout, target, &upstream, &run_label)?;
    let port = match target.kind {
        TargetKind::Direct => upstream.port,
        _ => procs::listen_port(layout, target),
    };
    // Only a client that goes straight to a TLS broker speaks TLS.
    let client_tls = match (&upstream.tls_ca, &target.kind) {
        (Some(ca), TargetKind::Direct) => Some(crate::tls::client_config(ca)?),
        _ => None,
    };
    let addr = match (scenario, &target.kind) {
        (Scenario::Stream, TargetKind::Direct) => stream::node_addr(),
        _ => SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let probe = Probe {
        pid: proc.as_ref().map(|p| p.pid()),
        broker: broker.as_ref().map(|b| b.pid()),
    };
    let s = &plan.sizes;
    let result = match scenario {
        Scenario::Large => scenarios::throughput(addr, s.large, probe),
        Scenario::Small => scenarios::throughput(addr, s.small, probe),
        Scenario::Trickle => scenarios::trickle(addr, s.trickle, false, probe),
        Scenario::TrickleConfirm => scenarios::trickle(addr, s.trickle_confirm, true, probe),
        Scenario::Connections => scenarios::connections(addr, s.connections, None, probe),
        Scenario::ConnectionsTls => {
            scenarios::connections(addr, s.connections_tls, client_tls, probe)
        }
        Scenario::ConnectionsRemote => {
            scenarios::connections(addr, s.connections_remote, None, probe)
        }
        Scenario::Latency => scenarios::latency(addr, s.latency, probe),
        Scenario::Idle => scenarios::idle(addr, s.idle_sessions, probe),
        Scenario::RabbitPublish => rabbit::publish(port, s.rabbit, false, probe),
        Scenario::RabbitConfirm => rabbit::publish(port, s.rabbit, true, probe),
        Scenario::Stream => stream::roundtrip(addr, s.rabbit, probe),
        Scenario::RabbitPika => rabbit::pika(port, s.pika, false, probe),
        Scenario::RabbitPikaConfirm => rabbit::pika(port, s.pika_confirm, true, probe),
    };
    let output = procs::output_path(layout, target, &run_label);
    if let Some(p) = proc.as_mut() {
        if let Err(e) = p.check_alive() {
            bail!("{e:#} during the run (output: {})", output.display());
        }
    }
    drop(proc);
    drop(broker);
    match (result, &target.kind) {
        (Err(e), TargetKind::Proxy { .. } | TargetKind::External { .. }) => {
            Err(e.context(format!("target output: {}", output.display())))
        }
        (result, _) => result,
    }
}

/// The one number a progress line shows.
fn headline(scenario: Scenario, m: &Metrics) -> String {
    let v = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
    match scenario {
        Scenario::Large => format!("{:.0} MB/s", v("mb_per_s")),
        Scenario::Small
        | Scenario::Trickle
        | Scenario::TrickleConfirm
        | Scenario::RabbitPublish
        | Scenario::RabbitConfirm
        | Scenario::RabbitPika
        | Scenario::RabbitPikaConfirm => {
            format!("{:.0} msg/s", v("msgs_per_s"))
        }
        Scenario::Stream => format!(
            "publish {:.0} msg/s, consume {:.0} msg/s",
            v("msgs_per_s"),
            v("consume_msgs_per_s")
        ),
        Scenario::Connections | Scenario::ConnectionsTls | Scenario::ConnectionsRemote => {
            format!(
                "{:.0} conn/s, open p50 {:.2} ms",
                v("conns_per_s"),
                v("open_p50_us") / 1000.0
            )
        }
        Scenario::Latency => format!("p50 {:.1} us, p99 {:.1} us", v("p50_us"), v("p99_us")),
        Scenario::Idle => format!("{:.2} KiB/session", v("kib_per_session")),
    }
}

/// The default targets: direct, the proxy with 1 shard and with `shards`
/// (if more than 1), and the external command if given.
pub fn default_targets(shards: usize, external: Option<(String, u16)>) -> Vec<Target> {
    let mut targets = vec![
        Target {
            name: DIRECT.into(),
            kind: TargetKind::Direct,
        },
        Target {
            name: "proxy-1".into(),
            kind: TargetKind::Proxy { shards: 1 },
        },
    ];
    if shards > 1 {
        targets.push(Target {
            name: format!("proxy-{shards}"),
            kind: TargetKind::Proxy { shards },
        });
    }
    if let Some((command, port)) = external {
        targets.push(Target {
            name: "external".into(),
            kind: TargetKind::External { command, port },
        });
    }
    targets
}
