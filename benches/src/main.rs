//! `amqpprox-bench`: the load harness of issue #6 and the micro-benchmarks.
//! Everything runs on this machine over loopback, bounded in count and time:
//! raw AMQP clients (this process, std threads) publish, connect, ping-pong
//! or idle through a target (direct, amqpprox with 1 and N shards, or an
//! external proxy command) to a dummy broker (a subprocess of this binary),
//! or with lapin to RabbitMQ (`--rabbitmq`). Targets are interleaved, each
//! run repeated, medians printed with the ratio to direct and the proxy's
//! CPU per unit of work, and everything written as JSON.
//!
//! This file owns the command line and the wiring. It never measures,
//! never prints a table itself and never keeps a child process past its run.
//!
//! ```text
//! amqpprox-bench                      all load scenarios, 3 repeats
//! amqpprox-bench --quick              the same, ~10x smaller (smoke run)
//! amqpprox-bench --scenario large     one scenario (comma list allowed)
//! amqpprox-bench --rabbitmq           lapin publishes to RabbitMQ at :5672
//! amqpprox-bench --rabbitmq --scenario stream
//!                                     Stream protocol publish + consume
//! amqpprox-bench --micro              scanner and handshake micro-benchmarks
//! amqpprox-bench --external 'haproxy -f /tmp/h.cfg' --external-port 5780
//! amqpprox-bench dummy-broker --port 5790 --mode echo
//! amqpprox-bench link --port 5795 --to 127.0.0.1:5672 --delay-us 2000
//!                                     RabbitMQ 2 ms away, for checks by hand
//! amqpprox-bench pool a/results.json b/results.json
//!                                     the tables over several runs' rounds
//! amqpprox-bench --scenario connections-tls --external 'haproxy -db -f benches/haproxy-tls.cfg'
//! ```
//!
//! TLS only in `connections-tls`: the dummy broker speaks TLS and the
//! targets' egress leg with it; the clients stay plain AMQP except the
//! `direct` ones, which speak TLS straight to the broker.

mod client;
mod micro;
mod plan;
mod pool;
mod procs;
mod rabbit;
mod report;
mod scenarios;
mod stream;
mod tls;

use amqpprox_testkit::load::broker::{self, Mode};
use amqpprox_testkit::load::link;
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use plan::{Plan, Scenario, Sizes};
use procs::{Layout, TargetKind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "amqpprox-bench",
    about = "Load harness and micro-benchmarks for amqpprox (issue #6)"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// The dummy broker (started by the harness; runs until killed).
    DummyBroker {
        #[arg(long)]
        port: u16,
        /// discard, echo or confirm (see `amqpprox_testkit::load::broker`).
        #[arg(long, default_value = "discard")]
        mode: Mode,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Niceness to take before starting (its threads inherit it).
        #[arg(long, default_value_t = 0)]
        nice: i32,
        /// Speak TLS, with a certificate (and its CA, `ca.pem`) made at
        /// start and written into this directory.
        #[arg(long)]
        tls_dir: Option<PathBuf>,
        /// Hold every byte each way this many microseconds, as a link to a
        /// broker that far away would (0: none). Plain brokers only.
        #[arg(long, default_value_t = 0)]
        link_delay_us: u64,
    },
    /// A delayed link in front of a TCP server (a real RabbitMQ, say), for
    /// checks by hand: every byte each way held `--delay-us` after it
    /// arrived (see `amqpprox_testkit::load::link`). Runs until killed.
    Link {
        /// The port to listen on (127.0.0.1).
        #[arg(long)]
        port: u16,
        /// The server to link to.
        #[arg(long)]
        to: std::net::SocketAddr,
        /// How long each byte is held, each way, in microseconds.
        #[arg(long)]
        delay_us: u64,
    },
    /// Print the tables over the rounds of several earlier runs (their
    /// results files), each proxy target paired with the external one only
    /// within the run they shared.
    Pool {
        /// Results files written by earlier runs (`WORK_DIR/results.json`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the pooled result set to this JSON file as well.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Scale every scenario down ~10x for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Run the micro-benchmarks instead of the load scenarios.
    #[arg(long)]
    micro: bool,
    /// Publish with lapin to RabbitMQ (with and without confirms) instead
    /// of the dummy-broker scenarios.
    #[arg(long)]
    rabbitmq: bool,
    /// Scenarios to run (comma-separated): large, small, trickle,
    /// trickle-confirm, connections,
    /// connections-tls, connections-remote, latency, idle, rabbit-publish, rabbit-confirm,
    /// rabbit-pika, rabbit-pika-confirm.
    /// Default: all of the mode's.
    #[arg(long, value_delimiter = ',')]
    scenario: Vec<String>,
    /// Runs per (scenario, target); medians are reported.
    #[arg(long, short = 'r', default_value_t = 3)]
    repeats: usize,
    /// Targets to run (comma-separated names from: direct, proxy-1,
    /// proxy-N, external). Default: all.
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Shards of the "all shards" proxy target (default: usable cores).
    #[arg(long)]
    shards: Option<usize>,
    /// An external proxy command, started per run via `sh -c 'exec CMD'`.
    /// `{port}`, `{broker_port}` and `{haproxy_cfg}` are replaced, and
    /// BENCH_LISTEN_PORT and
    /// BENCH_BROKER_PORT are set; it must forward --external-port to the
    /// broker port.
    #[arg(long)]
    external: Option<String>,
    /// Leave HAProxy out: without `--external`, a `haproxy` on the PATH is
    /// the external target (`haproxy -db -f benches/haproxy.cfg`, or
    /// `haproxy-tls.cfg` in front of a TLS broker).
    #[arg(long)]
    no_haproxy: bool,
    /// The port the external command listens on.
    #[arg(long, default_value_t = 5780)]
    external_port: u16,
    /// The dummy broker's port (fixed so external configs can name it).
    #[arg(long, default_value_t = 5790)]
    broker_port: u16,
    /// The port amqpprox listens on.
    #[arg(long, default_value_t = 5791)]
    proxy_port: u16,
    /// RabbitMQ's port for --rabbitmq (guest/guest on 127.0.0.1).
    #[arg(long, default_value_t = 5672)]
    rabbitmq_port: u16,
    /// Runtime worker threads of the dummy broker.
    #[arg(long, default_value_t = 2)]
    broker_threads: usize,
    /// Run the load (this process's client threads and the dummy broker) at
    /// this niceness (0-19), so that a target's rate shows its own speed
    /// rather than its share of cores the load also wants. Targets keep
    /// the default priority.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    load_nice: i32,
    /// The proxy binary (default: `amqpprox` next to this binary).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// Where logs and control sockets go.
    #[arg(long, default_value = "target/bench")]
    work_dir: PathBuf,
    /// The JSON results file (default: WORK_DIR/results.json, or
    /// WORK_DIR/micro.json with --micro).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Override: clients of large/small/trickle/rabbit.
    #[arg(long)]
    clients: Option<usize>,
    /// Override: messages per client of large/small/trickle/rabbit.
    #[arg(long)]
    messages: Option<usize>,
    /// Override: message body bytes of large/small/trickle/latency/rabbit.
    #[arg(long)]
    size: Option<usize>,
    /// Override: total connections of `connections` and `connections-tls`.
    #[arg(long)]
    connections: Option<usize>,
    /// Override: connections in parallel of `connections` and
    /// `connections-tls`.
    #[arg(long)]
    parallel: Option<usize>,
    /// Override: round trips of `latency`.
    #[arg(long)]
    round_trips: Option<usize>,
    /// Override: sessions held by `idle`.
    #[arg(long)]
    sessions: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::DummyBroker {
            port,
            mode,
            threads,
            nice,
            tls_dir,
            link_delay_us,
        }) => procs::lower_priority(nice).and_then(|()| {
            let link_delay = Duration::from_micros(link_delay_us);
            run_broker(port, mode, threads, tls_dir.as_deref(), link_delay)
        }),
        Some(Command::Link { port, to, delay_us }) => {
            link::run(port, to, Duration::from_micros(delay_us))
        }
        Some(Command::Pool { files, json }) => run_pool(&files, json.as_deref()),
        None if cli.run.micro => run_micro(&cli.run),
        None => run_load(&cli.run),
    };
    // One line, whatever RUST_BACKTRACE says: these are operator errors.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("amqpprox-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the three tables of a set of runs: medians against direct, CPU
/// per unit of work, and each proxy target against the external one round
/// by round.
fn print_report(records: &[report::RunRecord]) -> (Vec<report::Row>, Vec<report::Paired>) {
    let rows = report::rows(records);
    print!("{}", report::table(&rows));
    println!(
        "\nCPU per unit of work (medians; the broker is the dummy broker, or none with RabbitMQ):"
    );
    print!("{}", report::cpu_table(&rows));
    let paired = report::paired(records);
    if !paired.is_empty() {
        println!(
            "\nAgainst external, round by round (median of the per-round ratios, their range, \
             and the rounds at least as good as external's):"
        );
        print!("{}", report::paired_table(&paired));
    }
    (rows, paired)
}

/// The `pool` subcommand: earlier runs' results read back and reported as
/// one set.
fn run_pool(files: &[PathBuf], json: Option<&Path>) -> Result<()> {
    let sets = files
        .iter()
        .map(|f| pool::read_runs(f))
        .collect::<Result<Vec<_>>>()?;
    let records = pool::pooled(sets);
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    println!("amqpprox-bench: pooled from {}\n", names.join(", "));
    let (rows, paired) = print_report(&records);
    if let Some(path) = json {
        let config = serde_json::json!({ "pooled_from": names });
        report::write_json(path, config, &records, &rows, &paired)?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

/// The `dummy-broker` subcommand: the kit's load broker, with its TLS key
/// material made (and written into `tls_dir`) first when asked.
fn run_broker(
    port: u16,
    mode: Mode,
    threads: usize,
    tls_dir: Option<&Path>,
    link_delay: Duration,
) -> Result<()> {
    let tls = tls_dir.map(tls::broker_config).transpose()?;
    broker::run(port, mode, threads, tls, link_delay)
}

fn run_micro(args: &RunArgs) -> Result<()> {
    let results = micro::run(args.quick)?;
    print!("{}", micro::table(&results));
    let path = args
        .json
        .clone()
        .unwrap_or_else(|| args.work_dir.join("micro.json"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// Sizes with the command line's overrides applied.
fn sizes(args: &RunArgs) -> Sizes {
    let mut s = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    for t in [
        &mut s.large,
        &mut s.small,
        &mut s.trickle,
        &mut s.trickle_confirm,
    ] {
        t.clients = args.clients.unwrap_or(t.clients);
        t.messages = args.messages.unwrap_or(t.messages);
        t.size = args.size.unwrap_or(t.size);
    }
    s.rabbit.clients = args.clients.unwrap_or(s.rabbit.clients);
    s.rabbit.messages = args.messages.unwrap_or(s.rabbit.messages);
    s.rabbit.size = args.size.unwrap_or(s.rabbit.size);
    for p in [&mut s.pika, &mut s.pika_confirm] {
        p.clients = args.clients.unwrap_or(p.clients);
        p.messages = args.messages.unwrap_or(p.messages);
        p.size = args.size.unwrap_or(p.size);
    }
    for c in [&mut s.connections, &mut s.connections_tls] {
        c.total = args.connections.unwrap_or(c.total);
        c.parallel = args.parallel.unwrap_or(c.parallel);
    }
    s.latency.round_trips = args.round_trips.unwrap_or(s.latency.round_trips);
    s.latency.size = args.size.unwrap_or(s.latency.size);
    s.idle_sessions = args.sessions.unwrap_or(s.idle_sessions);
    s
}

fn build_plan(args: &RunArgs) -> Result<Plan> {
    let scenarios: Vec<Scenario> = if args.scenario.is_empty() {
        if args.rabbitmq {
            Scenario::RABBIT.to_vec()
        } else {
            Scenario::LOAD.to_vec()
        }
    } else {
        args.scenario
            .iter()
            .map(|s| Scenario::parse(s))
            .collect::<Result<_>>()?
    };
    if scenarios.iter().any(|s| s.is_rabbit() != args.rabbitmq) {
        bail!("rabbit-* scenarios run with --rabbitmq, and only they do");
    }
    let shards = args
        .shards
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let external = args.external.clone().or_else(|| {
        (!args.no_haproxy && procs::haproxy_installed()).then(|| procs::HAPROXY_COMMAND.into())
    });
    let mut targets = plan::default_targets(shards, external.map(|c| (c, args.external_port)));
    if !args.targets.is_empty() {
        for name in &args.targets {
            if !targets.iter().any(|t| &t.name == name) {
                let known: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                bail!("unknown target {name:?}; known here: {}", known.join(", "));
            }
        }
        targets.retain(|t| args.targets.contains(&t.name));
    }
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let layout = Layout {
        proxy_bin: args
            .proxy_bin
            .clone()
            .unwrap_or_else(procs::default_proxy_bin),
        proxy_port: args.proxy_port,
        broker_port: args.broker_port,
        broker_threads: args.broker_threads,
        load_nice: args.load_nice,
        work_dir: args.work_dir.clone(),
    };
    Ok(Plan {
        scenarios,
        targets,
        repeats: args.repeats,
        sizes: sizes(args),
        layout,
        rabbit_port: args.rabbitmq_port,
    })
}

/// Checks what the plan needs before the first run.
fn preflight(plan: &Plan, rabbitmq: bool) -> Result<()> {
    let uses_proxy = plan
        .targets
        .iter()
        .any(|t| matches!(t.kind, TargetKind::Proxy { .. }));
    if uses_proxy && !plan.layout.proxy_bin.is_file() {
        bail!(
            "proxy binary {} not found: run `cargo build --release -j2 --workspace` (or pass --proxy-bin)",
            plan.layout.proxy_bin.display()
        );
    }
    if plan.scenarios.contains(&Scenario::Stream) {
        let addr = stream::node_addr();
        std::net::TcpStream::connect(addr).with_context(|| {
            format!(
                "the stream node is not listening on {addr} (start it: ci/ensure-rabbitmq-stream.sh)"
            )
        })?;
    }
    if rabbitmq {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], plan.rabbit_port));
        std::net::TcpStream::connect(addr).with_context(|| {
            format!("RabbitMQ is not listening on {addr} (start it: ci/ensure-rabbitmq.sh)")
        })?;
    } else {
        procs::ensure_port_free(plan.layout.broker_port)?;
    }
    if uses_proxy {
        procs::ensure_port_free(plan.layout.proxy_port)?;
    }
    for t in &plan.targets {
        if let TargetKind::External { port, .. } = t.kind {
            procs::ensure_port_free(port)?;
        }
    }
    Ok(())
}

fn run_load(args: &RunArgs) -> Result<()> {
    let plan = build_plan(args)?;
    preflight(&plan, args.rabbitmq)?;
    scenarios::set_load_nice(args.load_nice);
    let nofile = procs::raise_nofile(65_536)?;
    let mut plan = plan;
    // A proxy holds two descriptors per session (client and broker side).
    let fits = (nofile.saturating_sub(512) / 2) as usize;
    if plan.scenarios.contains(&Scenario::Idle) && plan.sizes.idle_sessions > fits {
        eprintln!(
            "warning: the open-files limit is {nofile} and cannot be raised here; \
             idle holds {fits} sessions instead of {}",
            plan.sizes.idle_sessions
        );
        plan.sizes.idle_sessions = fits;
    }
    let names: Vec<&str> = plan.targets.iter().map(|t| t.name.as_str()).collect();
    let scen: Vec<&str> = plan.scenarios.iter().map(|s| s.name()).collect();
    println!(
        "amqpprox-bench: scenarios {}; targets {}; {} repeats{}",
        scen.join(","),
        names.join(","),
        plan.repeats,
        if args.quick { " (quick)" } else { "" }
    );
    let records = plan::run(&plan);
    println!();
    let (rows, paired) = print_report(&records);
    let path = args
        .json
        .clone()
        .unwrap_or_else(|| args.work_dir.join("results.json"));
    let config = serde_json::json!({
        "args": std::env::args().collect::<Vec<_>>(),
        "quick": args.quick,
        "repeats": plan.repeats,
        "scenarios": plan.scenarios,
        "targets": names,
        "sizes": plan.sizes,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "broker_threads": plan.layout.broker_threads,
        "load_nice": plan.layout.load_nice,
        "egress_tls_scenarios": plan.scenarios.iter().filter(|s| s.is_tls()).collect::<Vec<_>>(),
    });
    report::write_json(&path, config, &records, &rows, &paired)?;
    println!("\nwrote {}", path.display());
    if records.iter().all(|r| r.error.is_some()) {
        bail!("every run failed");
    }
    Ok(())
}
