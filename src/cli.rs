//! The `amqpprox` command line: the original's flags, defaults, messages and
//! exit codes (docs/flags.md#flags), plus this project's `--shards`, `--cpus`,
//! `--handshakeTimeoutMs`, `--connectTimeoutMs`, `--metricsPort` and
//! `--version`.
//!
//! It only parses and validates; it never starts anything. Every refusal is a
//! [`CliExit`] carrying the text and the exit code, so `main` decides where
//! it goes and tests can check both.

use clap::{error::ErrorKind, Arg, ArgAction, Command};
use std::path::PathBuf;
use std::time::Duration;

/// Everything the proxy needs from its command line, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub log_directory: PathBuf,
    pub control_socket: PathBuf,
    pub cleanup_interval: Duration,
    pub simple_mode: Option<SimpleMode>,
    pub console_verbosity: u8,
    pub shards: usize,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    /// `--brokerHandshakeTimeoutMs`: a connected broker that has not
    /// started (transparent) or finished (proxied) its handshake by then is
    /// skipped for the next member.
    pub broker_handshake_timeout: Duration,
    /// `--authConnectTimeoutMs` and `--authResponseTimeoutMs`: the bounds
    /// on one auth service request (a DENY when either passes).
    pub auth_timeouts: crate::auth::AuthTimeouts,
    pub config_file: Option<PathBuf>,
    /// `--spinBeforeParkUs`: how long an idle shard polls before sleeping.
    pub spin_before_park: Duration,
    /// `--drainTimeoutMs`: how long a SIGTERM drain waits for clients.
    pub drain_timeout: Duration,
    /// `--dnsRecheckMs`: how often DNS backends are looked up again to move
    /// sessions off addresses that left their answer (zero: never).
    pub dns_recheck: Duration,
    /// `--metricsPort`: Prometheus `/metrics` on this port (off when unset
    /// or 0).
    pub metrics_port: Option<u16>,
    /// `--takeover`: the control socket of a running proxy whose listening
    /// sockets and configuration this one takes over.
    pub takeover: Option<PathBuf>,
    /// `--upgradeGraceMs`: once a new process has taken over, how long
    /// this one lets its connections end on their own before it drains.
    pub upgrade_grace: Duration,
    /// `--cpus`: where the shard threads run.
    pub cpus: CpuPlacement,
    /// `--windowClampBytes`: TCP_WINDOW_CLAMP of every session socket,
    /// which bounds the window scale of its handshake (0: none).
    pub window_clamp: u32,
}

/// Where shard threads run (`--cpus`, docs/flags.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuPlacement {
    /// The default: when the shards cover every CPU this process may use,
    /// shard i pinned to the i-th of them (round robin when there are more
    /// shards than CPUs); with fewer shards than those CPUs (`--shards`
    /// below them, or a CPU quota below the CPUs allowed, as in a
    /// container) nothing is pinned, since which CPUs they should keep to
    /// is then not this process's to choose.
    Usable,
    /// Shard i pinned to the i-th CPU of the list (round robin).
    List(Vec<usize>),
    /// `none`: no pinning; the kernel moves shard threads where it likes,
    /// which suits a machine whose cores other busy processes share.
    Unpinned,
}

impl CpuPlacement {
    /// The CPU shard `index` of `shards` is pinned to, given the CPUs this
    /// process may use; `None` leaves it unpinned.
    pub fn cpu_for(&self, index: usize, shards: usize, usable: &[usize]) -> Option<usize> {
        match self {
            CpuPlacement::Usable if !usable.is_empty() && shards >= usable.len() => {
                Some(usable[index % usable.len()])
            }
            CpuPlacement::Usable | CpuPlacement::Unpinned => None,
            CpuPlacement::List(cpus) => cpus.get(index % cpus.len().max(1)).copied(),
        }
    }
}

/// The start-up line that says where the shards run: `pinned` holds each
/// shard's CPU as [`CpuPlacement::cpu_for`] chose it, `usable` is how many
/// CPUs this process may run on.
pub fn describe_placement(pinned: &[Option<usize>], cpus: &CpuPlacement, usable: usize) -> String {
    let shards = crate::shard::count_phrase(pinned.len());
    if pinned.iter().all(Option::is_some) && !pinned.is_empty() {
        let list: Vec<String> = pinned.iter().flatten().map(usize::to_string).collect();
        return format!("{shards}, pinned to CPUs {}", list.join(","));
    }
    match cpus {
        CpuPlacement::Unpinned => format!("{shards}, unpinned (--cpus none)"),
        _ if usable == 0 => format!("{shards}, unpinned: the CPUs this process may use are unknown"),
        _ => format!(
            "{shards}, unpinned: fewer shards than the {usable} CPUs this process may use (--cpus pins them)"
        ),
    }
}

/// Why a `--cpus` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuListError {
    #[error("--cpus: {0:?} is not a CPU number or a range like 2-5")]
    NotACpu(String),
    #[error("--cpus: the range {first}-{last} runs backwards")]
    Backwards { first: usize, last: usize },
    #[error("--cpus: CPU {0} is listed twice")]
    Repeated(usize),
    #[error("--cpus: give a list such as 0,2-3, or none")]
    Empty,
}

/// Parses `--cpus`: `none`, or a comma list of CPU numbers and inclusive
/// ranges (`0,2-3`), kept in the order given (shard i takes the i-th).
pub fn parse_cpus(text: &str) -> Result<CpuPlacement, CpuListError> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") {
        return Ok(CpuPlacement::Unpinned);
    }
    let number = |t: &str| {
        t.trim()
            .parse::<usize>()
            .map_err(|_| CpuListError::NotACpu(t.trim().to_string()))
    };
    let mut cpus = Vec::new();
    for item in text.split(',').filter(|i| !i.trim().is_empty()) {
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(item)?, number(item)?),
        };
        if last < first {
            return Err(CpuListError::Backwards { first, last });
        }
        for cpu in first..=last {
            if cpus.contains(&cpu) {
                return Err(CpuListError::Repeated(cpu));
            }
            cpus.push(cpu);
        }
    }
    if cpus.is_empty() {
        return Err(CpuListError::Empty);
    }
    Ok(CpuPlacement::List(cpus))
}

/// `--listenPort --destinationDNS --destinationPort`: every vhost goes to one
/// destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleMode {
    pub listen_port: u16,
    pub destination_dns: String,
    pub destination_port: u16,
}

/// Why the command line does not start a proxy: what to print, where, and the
/// exit code the original uses (0 for `--version`, which the original lacks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliExit {
    pub message: String,
    pub to_stdout: bool,
    pub code: i32,
}

const ABOUT: &str = "amqpprox: an AMQP 0.9.1 proxy. It answers the client's handshake up to \
Connection.Open, picks a broker for the requested vhost (per-vhost farms, datacenter \
affinity, failover) and then forwards the connection. It is configured at run time over \
the control socket with amqpprox_ctl, or started in simple mode with --listenPort, \
--destinationDNS and --destinationPort.";

pub fn command() -> Command {
    let cores = default_shards();
    Command::new("amqpprox")
        .about(ABOUT)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(Arg::new("help").long("help").action(ArgAction::SetTrue).help("This help message"))
        .arg(
            Arg::new("version")
                .long("version")
                .action(ArgAction::SetTrue)
                .help("Print the version (and the git revision it was built from) and exit"),
        )
        .arg(
            Arg::new("logDirectory")
                .long("logDirectory")
                .default_value("logs")
                .help("Set logging directory"),
        )
        .arg(
            Arg::new("controlSocket")
                .long("controlSocket")
                .default_value("/tmp/amqpprox")
                .help("Set control UNIX domain socket location"),
        )
        .arg(
            Arg::new("cleanupIntervalMs")
                .long("cleanupIntervalMs")
                .default_value("1000")
                .value_parser(clap::value_parser!(u32).range(1..))
                .help("Set the cleanup interval to garbage collect connections (also the statistics period)"),
        )
        .arg(
            Arg::new("listenPort")
                .long("listenPort")
                .value_parser(clap::value_parser!(u16))
                .help("Simple mode: port to listen on"),
        )
        .arg(
            Arg::new("destinationPort")
                .long("destinationPort")
                .value_parser(clap::value_parser!(u16))
                .help("Simple mode: broker port"),
        )
        .arg(
            Arg::new("destinationDNS")
                .long("destinationDNS")
                .help("Simple mode: broker DNS name or address, resolved for every connection"),
        )
        .arg(
            Arg::new("consoleVerbosity")
                .short('v')
                .long("consoleVerbosity")
                .default_value("0")
                .value_parser(clap::value_parser!(u16))
                .help("Console log verbosity: 0 fatal only .. 5 trace"),
        )
        .arg(
            Arg::new("shards")
                .long("shards")
                .value_parser(clap::value_parser!(u16).range(1..))
                .help(format!("Number of data-path shards, one thread per core (default: usable cores, here {cores})")),
        )
        .arg(
            Arg::new("cpus")
                .long("cpus")
                .value_parser(clap::builder::NonEmptyStringValueParser::new())
                .help("CPUs the shards are pinned to, e.g. 0,2-3 (shard i on the i-th; --shards defaults to their number), or none: unpinned (default: pinned one per CPU when the shards cover every usable CPU, unpinned when they are fewer)"),
        )
        .arg(
            Arg::new("handshakeTimeoutMs")
                .long("handshakeTimeoutMs")
                .default_value("10000")
                .value_parser(clap::value_parser!(u64).range(1..))
                .help("Close a client that has not completed its handshake within this time"),
        )
        .arg(
            Arg::new("connectTimeoutMs")
                .long("connectTimeoutMs")
                .default_value("5000")
                .value_parser(clap::value_parser!(u64).range(1..))
                .help("Give up on one broker address after this time and try the next"),
        )
        .arg(
            Arg::new("brokerHandshakeTimeoutMs")
                .long("brokerHandshakeTimeoutMs")
                .default_value("5000")
                .value_parser(clap::value_parser!(u64).range(1..))
                .help(
                    "Try the next broker when one sends nothing (or closes) before its handshake ends within this time",
                ),
        )
        .arg(
            Arg::new("authConnectTimeoutMs")
                .long("authConnectTimeoutMs")
                .default_value("5000")
                .value_parser(clap::value_parser!(u64).range(1..))
                .help("Deny a session when the auth service cannot be connected to within this time"),
        )
        .arg(
            Arg::new("authResponseTimeoutMs")
                .long("authResponseTimeoutMs")
                .default_value("10000")
                .value_parser(clap::value_parser!(u64).range(1..))
                .help("Deny a session when the auth service has not answered within this time after connecting"),
        )
        .arg(
            Arg::new("spinBeforeParkUs")
                .long("spinBeforeParkUs")
                .default_value("0")
                .value_parser(clap::value_parser!(u64).range(0..=10_000))
                .help("Let an idle shard poll this long before it sleeps: lower latency for more CPU (0: sleep at once)"),
        )
        .arg(
            Arg::new("windowClampBytes")
                .long("windowClampBytes")
                .default_value("131072")
                .value_parser(clap::value_parser!(u32).range(0..=i32::MAX as i64))
                .help("TCP_WINDOW_CLAMP of every session socket, set before its handshake: a peer may have at most 64 KiB x 2^n unacknowledged, the smallest such reaching this (256 KiB for the default), which keeps clients that write each publish on its own from sending many small segments (0: the kernel's window, for peers whose bandwidth times round trip is larger)"),
        )
        .arg(
            Arg::new("drainTimeoutMs")
                .long("drainTimeoutMs")
                .default_value("30000")
                .value_parser(clap::value_parser!(u64))
                .help("On SIGTERM or SIGINT: stop accepting, ask every client to reconnect (Connection.Close 320), exit once they have gone or after this time"),
        )
        .arg(
            Arg::new("dnsRecheckMs")
                .long("dnsRecheckMs")
                .default_value("30000")
                .value_parser(clap::value_parser!(u64))
                .help("Look up every ADD_DNS backend's host this often and move sessions off addresses that have left its answer (0: never)"),
        )
        .arg(
            Arg::new("metricsPort")
                .long("metricsPort")
                .value_parser(clap::value_parser!(u16))
                .help("Serve Prometheus metrics over HTTP at /metrics on this port (off by default)"),
        )
        .arg(
            Arg::new("takeover")
                .long("takeover")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Hitless upgrade: take over the listening sockets and configuration of the amqpprox whose control socket this is, then tell it to stop accepting and drain"),
        )
        .arg(
            Arg::new("upgradeGraceMs")
                .long("upgradeGraceMs")
                .default_value("10000")
                .value_parser(clap::value_parser!(u64))
                .help("After a new process took over (--takeover): let connections end on their own this long, then drain as on SIGTERM"),
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Apply a file of control commands (as printed by CONFIG DUMP) at start, and again on SIGHUP"),
        )
}

/// The number of cores this process may run on.
pub fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The help text, as printed for `--help` and after an unknown option.
pub fn help_text() -> String {
    command().render_help().to_string()
}

/// The `--version` line: `amqpprox 0.1.0 (git 4d6f46a)` when built from a
/// git checkout, `amqpprox 0.1.0` otherwise (see `build.rs`).
pub fn version_text() -> String {
    let version = env!("CARGO_PKG_VERSION");
    match option_env!("AMQPPROX_GIT_REVISION") {
        Some(revision) => format!("amqpprox {version} (git {revision})"),
        None => format!("amqpprox {version}"),
    }
}

/// Parses `args` (with the program name first) into [`Options`].
pub fn parse<I, T>(args: I) -> Result<Options, CliExit>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => return Err(clap_exit(&e)),
    };
    if matches.get_flag("version") {
        return Err(CliExit {
            message: version_text(),
            to_stdout: true,
            code: 0,
        });
    }
    if matches.get_flag("help") {
        return Err(CliExit {
            message: help_text(),
            to_stdout: true,
            code: 1,
        });
    }

    let listen_port = matches.get_one::<u16>("listenPort").copied().unwrap_or(0);
    let destination_port = matches
        .get_one::<u16>("destinationPort")
        .copied()
        .unwrap_or(0);
    let destination_dns = matches
        .get_one::<String>("destinationDNS")
        .cloned()
        .unwrap_or_default();
    let set = [
        listen_port != 0,
        destination_port != 0,
        !destination_dns.is_empty(),
    ];
    let simple_mode = if set.iter().all(|s| *s) {
        Some(SimpleMode {
            listen_port,
            destination_dns,
            destination_port,
        })
    } else if set.iter().any(|s| *s) {
        return Err(CliExit {
            message: "If configuring in simple mode, the --listenPort, --destinationPort and --destinationDNS must all be set".into(),
            to_stdout: true,
            code: 2,
        });
    } else {
        None
    };

    let takeover = matches.get_one::<PathBuf>("takeover").cloned();
    if takeover.is_some() && (simple_mode.is_some() || matches.contains_id("config")) {
        return Err(CliExit {
            message: "--takeover replays the running proxy's configuration; it cannot be combined with --config or simple mode".into(),
            to_stdout: false,
            code: 1,
        });
    }

    let verbosity = *matches.get_one::<u16>("consoleVerbosity").unwrap_or(&0);
    if verbosity > 5 {
        return Err(CliExit {
            message: "Console log verbosity must be between 0 and 5".into(),
            to_stdout: true,
            code: 3,
        });
    }
    let cpus = match matches.get_one::<String>("cpus") {
        None => CpuPlacement::Usable,
        Some(text) => parse_cpus(text).map_err(|e| CliExit {
            message: e.to_string(),
            to_stdout: false,
            code: 1,
        })?,
    };

    Ok(Options {
        log_directory: PathBuf::from(
            matches
                .get_one::<String>("logDirectory")
                .cloned()
                .unwrap_or_default(),
        ),
        // A takeover serves the same path next, unless told otherwise.
        control_socket: match (&takeover, matches.value_source("controlSocket")) {
            (Some(path), Some(clap::parser::ValueSource::DefaultValue)) => path.clone(),
            _ => PathBuf::from(
                matches
                    .get_one::<String>("controlSocket")
                    .cloned()
                    .unwrap_or_default(),
            ),
        },
        cleanup_interval: Duration::from_millis(u64::from(
            *matches.get_one::<u32>("cleanupIntervalMs").unwrap_or(&1000),
        )),
        simple_mode,
        console_verbosity: verbosity as u8,
        shards: matches
            .get_one::<u16>("shards")
            .map(|n| usize::from(*n))
            .unwrap_or(match &cpus {
                CpuPlacement::List(list) => list.len(),
                _ => default_shards(),
            }),
        handshake_timeout: Duration::from_millis(
            *matches
                .get_one::<u64>("handshakeTimeoutMs")
                .unwrap_or(&10_000),
        ),
        connect_timeout: Duration::from_millis(
            *matches.get_one::<u64>("connectTimeoutMs").unwrap_or(&5_000),
        ),
        broker_handshake_timeout: Duration::from_millis(
            *matches
                .get_one::<u64>("brokerHandshakeTimeoutMs")
                .unwrap_or(&5_000),
        ),
        auth_timeouts: crate::auth::AuthTimeouts::from_millis(
            *matches
                .get_one::<u64>("authConnectTimeoutMs")
                .unwrap_or(&5_000),
            *matches
                .get_one::<u64>("authResponseTimeoutMs")
                .unwrap_or(&10_000),
        ),
        config_file: matches.get_one::<PathBuf>("config").cloned(),
        spin_before_park: Duration::from_micros(
            *matches.get_one::<u64>("spinBeforeParkUs").unwrap_or(&0),
        ),
        drain_timeout: Duration::from_millis(
            *matches.get_one::<u64>("drainTimeoutMs").unwrap_or(&30_000),
        ),
        window_clamp: *matches
            .get_one::<u32>("windowClampBytes")
            .unwrap_or(&crate::net::DEFAULT_WINDOW_CLAMP),
        dns_recheck: Duration::from_millis(
            *matches.get_one::<u64>("dnsRecheckMs").unwrap_or(&30_000),
        ),
        metrics_port: matches
            .get_one::<u16>("metricsPort")
            .copied()
            .filter(|p| *p != 0),
        takeover,
        upgrade_grace: Duration::from_millis(
            *matches.get_one::<u64>("upgradeGraceMs").unwrap_or(&10_000),
        ),
        cpus,
    })
}

fn clap_exit(e: &clap::Error) -> CliExit {
    use clap::error::{ContextKind, ContextValue};
    match e.kind() {
        ErrorKind::UnknownArgument => {
            let name = match e.get(ContextKind::InvalidArg) {
                Some(ContextValue::String(s)) => s.clone(),
                _ => String::from("?"),
            };
            CliExit {
                message: format!("Unknown command line option: {name}\n{}", help_text()),
                to_stdout: true,
                code: 1,
            }
        }
        // A value that does not parse (a non-numeric port, say): the original
        // aborts here; we say which flag and why, and exit non-zero.
        _ => CliExit {
            message: e.to_string().trim_end().to_string(),
            to_stdout: false,
            code: 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit_of(args: &[&str]) -> CliExit {
        parse(std::iter::once("amqpprox").chain(args.iter().copied())).unwrap_err()
    }

    #[test]
    fn defaults_match_the_original() {
        let o = parse(["amqpprox"]).unwrap();
        assert_eq!(o.log_directory, PathBuf::from("logs"));
        assert_eq!(o.control_socket, PathBuf::from("/tmp/amqpprox"));
        assert_eq!(o.cleanup_interval, Duration::from_millis(1000));
        assert_eq!(o.simple_mode, None);
        assert_eq!(o.console_verbosity, 0);
        assert_eq!(o.handshake_timeout, Duration::from_secs(10));
        assert_eq!(o.connect_timeout, Duration::from_secs(5));
        assert_eq!(o.broker_handshake_timeout, Duration::from_secs(5));
        assert_eq!(o.auth_timeouts, crate::auth::AuthTimeouts::default());
        let o = parse([
            "amqpprox",
            "--authConnectTimeoutMs",
            "250",
            "--authResponseTimeoutMs",
            "1500",
        ])
        .unwrap();
        assert_eq!(
            o.auth_timeouts,
            crate::auth::AuthTimeouts::from_millis(250, 1500)
        );
        assert_eq!(o.drain_timeout, Duration::from_secs(30));
        assert_eq!(o.dns_recheck, Duration::from_secs(30));
        assert_eq!(o.spin_before_park, Duration::ZERO);
        assert_eq!(o.window_clamp, 128 * 1024);
        assert_eq!(o.shards, default_shards());
        assert_eq!(o.metrics_port, None);
        assert_eq!(o.cpus, CpuPlacement::Usable);
        let o = parse(["amqpprox", "--metricsPort", "9187"]).unwrap();
        assert_eq!(o.metrics_port, Some(9187));
    }

    #[test]
    fn takeover_serves_the_old_control_socket_path_next() {
        let o = parse(["amqpprox", "--takeover", "/run/amqpprox.sock"]).unwrap();
        assert_eq!(o.takeover, Some(PathBuf::from("/run/amqpprox.sock")));
        assert_eq!(o.control_socket, PathBuf::from("/run/amqpprox.sock"));
        assert_eq!(o.upgrade_grace, Duration::from_secs(10));
        let o = parse([
            "amqpprox",
            "--takeover",
            "/run/old.sock",
            "--controlSocket",
            "/run/new.sock",
            "--upgradeGraceMs",
            "0",
        ])
        .unwrap();
        assert_eq!(o.control_socket, PathBuf::from("/run/new.sock"));
        assert_eq!(o.upgrade_grace, Duration::ZERO);
        assert_eq!(parse(["amqpprox"]).unwrap().takeover, None);
    }

    #[test]
    fn takeover_refuses_a_configuration_of_its_own() {
        for extra in [
            &["--config", "proxy.conf"][..],
            &[
                "--listenPort",
                "5673",
                "--destinationDNS",
                "h",
                "--destinationPort",
                "5672",
            ],
        ] {
            let e = exit_of(&[&["--takeover", "/tmp/old"][..], extra].concat());
            assert_eq!(e.code, 1);
            assert!(e.message.contains("--takeover"), "{}", e.message);
        }
    }

    #[test]
    fn cpus_pick_the_shard_cores_or_leave_them_unpinned() {
        let o = parse(["amqpprox", "--cpus", "3,0-1"]).unwrap();
        assert_eq!(o.cpus, CpuPlacement::List(vec![3, 0, 1]));
        assert_eq!(o.shards, 3, "--shards defaults to the list's length");
        let o = parse(["amqpprox", "--cpus", "1", "--shards", "2"]).unwrap();
        assert_eq!(
            (o.cpus.cpu_for(0, 2, &[]), o.cpus.cpu_for(1, 2, &[])),
            (Some(1), Some(1))
        );
        // A list pins even fewer shards than the CPUs allowed.
        assert_eq!(o.cpus.cpu_for(0, 2, &[0, 1, 2, 3]), Some(1));
        let o = parse(["amqpprox", "--cpus", "none"]).unwrap();
        assert_eq!(
            (o.cpus.clone(), o.shards),
            (CpuPlacement::Unpinned, default_shards())
        );
        assert_eq!(o.cpus.cpu_for(0, 2, &[0, 1]), None);
        let usable = CpuPlacement::Usable;
        // One shard per CPU allowed: pinned, in the order the CPUs come.
        assert_eq!(
            (usable.cpu_for(0, 2, &[4, 6]), usable.cpu_for(1, 2, &[4, 6])),
            (Some(4), Some(6))
        );
        // More shards than CPUs: round robin.
        assert_eq!(usable.cpu_for(3, 4, &[4, 6]), Some(6));
        // Fewer shards than CPUs allowed (`--shards 1` on two cores, or a
        // container's quota of 2 CPUs on a 64-CPU host): unpinned.
        assert_eq!(usable.cpu_for(0, 1, &[0, 1]), None);
        assert_eq!(usable.cpu_for(1, 2, &(0..64).collect::<Vec<_>>()), None);
        assert_eq!(usable.cpu_for(0, 1, &[]), None);
        for (bad, why) in [
            ("0,x", CpuListError::NotACpu("x".into())),
            ("3-1", CpuListError::Backwards { first: 3, last: 1 }),
            ("0,0-1", CpuListError::Repeated(0)),
            (",", CpuListError::Empty),
        ] {
            assert_eq!(parse_cpus(bad), Err(why.clone()), "{bad}");
            let e = exit_of(&["--cpus", bad]);
            assert_eq!((e.code, e.message), (1, why.to_string()));
        }
    }

    #[test]
    fn the_start_up_line_says_where_the_shards_run() {
        let usable = CpuPlacement::Usable;
        assert_eq!(
            describe_placement(&[Some(0), Some(1)], &usable, 2),
            "2 shards, pinned to CPUs 0,1"
        );
        assert_eq!(
            describe_placement(&[None], &usable, 2),
            "1 shard, unpinned: fewer shards than the 2 CPUs this process may use (--cpus pins them)"
        );
        assert_eq!(
            describe_placement(&[None, None], &CpuPlacement::Unpinned, 2),
            "2 shards, unpinned (--cpus none)"
        );
        assert_eq!(
            describe_placement(&[None], &usable, 0),
            "1 shard, unpinned: the CPUs this process may use are unknown"
        );
    }

    #[test]
    fn the_window_clamp_is_a_byte_count_or_0_for_the_kernels() {
        let o = parse(["amqpprox", "--windowClampBytes", "65536"]).unwrap();
        assert_eq!(o.window_clamp, 65536);
        let o = parse(["amqpprox", "--windowClampBytes=0"]).unwrap();
        assert_eq!(o.window_clamp, 0);
        // The kernel takes an `int`: a larger value is refused by name.
        for bad in ["2147483648", "-1", "64k"] {
            let e = exit_of(&["--windowClampBytes", bad]);
            assert_eq!(e.code, 1, "{bad}");
            assert!(e.message.contains("--windowClampBytes"), "{}", e.message);
        }
    }

    #[test]
    fn simple_mode_needs_all_three_flags() {
        let e = exit_of(&["--listenPort", "5673"]);
        assert_eq!(e.code, 2);
        assert!(e.message.starts_with("If configuring in simple mode"));
        let o = parse([
            "amqpprox",
            "--listenPort=5673",
            "--destinationDNS",
            "localhost",
            "--destinationPort",
            "5672",
        ])
        .unwrap();
        assert_eq!(
            o.simple_mode,
            Some(SimpleMode {
                listen_port: 5673,
                destination_dns: "localhost".into(),
                destination_port: 5672
            })
        );
    }

    #[test]
    fn verbosity_above_five_exits_three() {
        let e = exit_of(&["-v", "6"]);
        assert_eq!(
            (e.code, e.message.as_str()),
            (3, "Console log verbosity must be between 0 and 5")
        );
    }

    #[test]
    fn unknown_option_and_help_exit_one() {
        let e = exit_of(&["--bogus"]);
        assert_eq!(e.code, 1);
        assert!(e
            .message
            .starts_with("Unknown command line option: --bogus\n"));
        let h = exit_of(&["--help"]);
        assert_eq!(h.code, 1);
        assert!(h.message.contains("--controlSocket"));
    }

    #[test]
    fn version_exits_zero_with_the_package_version() {
        let e = exit_of(&["--version"]);
        assert_eq!((e.code, e.to_stdout), (0, true));
        assert!(
            e.message
                .starts_with(&format!("amqpprox {}", env!("CARGO_PKG_VERSION"))),
            "{}",
            e.message
        );
        assert_eq!(e.message, version_text());
    }

    #[test]
    fn bad_number_names_the_flag() {
        let e = exit_of(&["--listenPort", "abc"]);
        assert_ne!(e.code, 0);
        assert!(e.message.contains("--listenPort"), "{}", e.message);
    }
}
