//! Child processes of a run and what the harness reads about them from
//! /proc: the dummy broker (this binary, `dummy-broker` subcommand, plain or
//! TLS), the target in front of it (amqpprox with 1 or N shards: in simple
//! mode, or from a `--config` file with a `TLS` backend when the broker
//! speaks TLS; or an external proxy command), CPU time (`/proc/<pid>/stat` utime + stime in
//! ticks, and each thread's run time and run-queue wait in nanoseconds from
//! its `schedstat`) and memory (`/proc/<pid>/status` VmRSS, VmHWM); the
//! machine's idle time (`/proc/stat`); plus raising RLIMIT_NOFILE, which
//! every child inherits.
//!
//! Owns starting, readiness (the port accepts) and stopping of the children
//! it spawned, by pid. Never signals a process it did not start, never
//! leaves one running (stop on drop), and never reads the /proc entries of
//! a process other than its own children (and itself).

use amqpprox_testkit::load::broker::Mode;
use amqpprox_testkit::wait;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a child may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// What the clients connect to.
#[derive(Debug, Clone)]
pub enum TargetKind {
    /// Straight to the dummy broker (or RabbitMQ): the machine's limit.
    Direct,
    /// amqpprox in simple mode with this many shards.
    Proxy { shards: usize },
    /// A command run through `sh -c 'exec ...'`, listening on `port`.
    External { command: String, port: u16 },
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
}

/// Where things live and listen, fixed for the whole invocation so that an
/// external proxy's configuration can name the broker port.
#[derive(Debug, Clone)]
pub struct Layout {
    pub proxy_bin: PathBuf,
    pub proxy_port: u16,
    pub broker_port: u16,
    pub broker_threads: usize,
    /// The niceness of the load: the harness's client threads and the
    /// dummy broker (`--load-nice`).
    pub load_nice: i32,
    pub work_dir: PathBuf,
}

/// A running child, stopped (and reaped) when dropped; the drop also waits
/// until its port can be bound again.
pub struct Proc {
    child: Child,
    name: String,
    port: u16,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the child has already exited (e.g. a bad external command).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of our own unreaped child: it cannot
        // have been recycled for another process before we wait for it.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let exited = wait::wait_until(wait::deadline_in(Duration::from_secs(3)), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        wait_port_free(self.port);
    }
}

/// Waits (up to 5 s) until `port` can be bound. A process that used
/// io_uring keeps its listening socket for some milliseconds after it has
/// been reaped (the ring is torn down asynchronously): the next run's
/// listener would fail to bind, or its readiness probe would reach the
/// dying socket and its clients be reset.
fn wait_port_free(port: u16) {
    // std binds with SO_REUSEADDR, so TIME_WAIT leftovers do not count;
    // [::] also conflicts with an IPv4 listener on the port.
    wait::wait_until(wait::deadline_in(Duration::from_secs(5)), || {
        std::net::TcpListener::bind(("::", port))
            .or_else(|_| std::net::TcpListener::bind(("127.0.0.1", port)))
            .is_ok()
    });
}

/// What a target forwards to: the broker's port, and for a TLS broker the
/// CA file (absolute) that its certificate chains to.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub port: u16,
    pub tls_ca: Option<PathBuf>,
    /// A RabbitMQ stream node (its host; `port` is its AMQP port): the
    /// proxy then listens with `LISTEN START_STREAM`.
    pub stream_node: Option<String>,
    /// The proxy routes by vhost (a `MAP FARM` for `/`): it answers the
    /// client's handshake itself and replays it to the broker, where a
    /// default route alone relays the broker's own.
    pub routed_by_vhost: bool,
}

/// The directory a TLS dummy broker writes its key material into.
pub fn tls_dir(layout: &Layout) -> PathBuf {
    layout.work_dir.join("tls")
}

/// Starts the dummy broker on the layout's broker port; with `tls`, a TLS
/// broker whose fresh CA is then at [`Upstream::tls_ca`]; behind a link of
/// `link_delay` each way when that is not zero.
pub fn start_broker(
    layout: &Layout,
    mode: Mode,
    tls: bool,
    link_delay: Duration,
) -> Result<(Proc, Upstream)> {
    let exe = std::env::current_exe().context("find the harness binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("dummy-broker")
        .args(["--port", &layout.broker_port.to_string()])
        .args(["--mode", mode.as_arg()])
        .args(["--threads", &layout.broker_threads.to_string()])
        .args(["--nice", &layout.load_nice.to_string()])
        .args(["--link-delay-us", &link_delay.as_micros().to_string()])
        .stdin(Stdio::null());
    let mut tls_ca = None;
    if tls {
        let dir = std::path::absolute(tls_dir(layout))?;
        cmd.arg("--tls-dir").arg(&dir);
        tls_ca = Some(crate::tls::ca_file(&dir));
    }
    let proc = spawn_ready(cmd, "dummy broker", layout.broker_port)?;
    let upstream = Upstream {
        port: layout.broker_port,
        tls_ca,
        stream_node: None,
        routed_by_vhost: false,
    };
    Ok((proc, upstream))
}

/// The `--config` file of amqpprox in front of a TLS broker: one `TLS`
/// backend at `localhost` (SNI and the name checked), verified against the
/// broker's CA, as the default route; the same listener as simple mode.
fn proxy_tls_config(layout: &Layout, upstream_port: u16, ca: &Path) -> String {
    format!(
        "# amqpprox-bench: egress TLS to the dummy broker\n\
         TLS EGRESS CA_CERT_FILE {ca}\n\
         TLS EGRESS VERIFY_MODE PEER\n\
         BACKEND ADD bench-broker bench {host} {upstream_port} TLS\n\
         FARM ADD bench round-robin bench-broker\n\
         MAP DEFAULT bench\n\
         LISTEN START {port}\n",
        ca = ca.display(),
        host = crate::tls::BROKER_HOST,
        port = layout.proxy_port,
    )
}

/// The `--config` file of amqpprox in front of a stream node: the node as
/// the default route, a stream listener on the proxy port.
fn proxy_stream_config(layout: &Layout, node: &str, amqp_port: u16) -> String {
    format!(
        "# amqpprox-bench: RabbitMQ Stream protocol to a stream node\n\
         BACKEND ADD bench-stream bench {node} {amqp_port}\n\
         FARM ADD bench round-robin bench-stream\n\
         MAP DEFAULT bench\n\
         LISTEN START_STREAM 127.0.0.1:{port}\n",
        port = layout.proxy_port,
    )
}

/// The `--config` file of amqpprox routing vhost `/` to the dummy broker:
/// with a vhost's own mapping the proxy answers the client's handshake and
/// replays it to the broker; the same listener as simple mode.
fn proxy_vhost_config(layout: &Layout, upstream_port: u16) -> String {
    format!(
        "# amqpprox-bench: vhost / routed to the dummy broker\n\
         BACKEND ADD bench-broker bench 127.0.0.1 {upstream_port}\n\
         FARM ADD bench round-robin bench-broker\n\
         MAP FARM / bench\n\
         LISTEN START {port}\n",
        port = layout.proxy_port,
    )
}

/// Where a run's target writes its stdout and stderr.
pub fn output_path(layout: &Layout, target: &Target, run: &str) -> PathBuf {
    layout
        .work_dir
        .join("logs")
        .join(format!("{}-{run}.out", target.name))
}

/// Starts `target` in front of `upstream`; `None` for direct. Its output
/// goes to [`output_path`] for `run` (e.g. "large-2"). An external command
/// in front of a TLS broker also gets `BENCH_TLS_CA_FILE`.
pub fn start_target(
    layout: &Layout,
    target: &Target,
    upstream: &Upstream,
    run: &str,
) -> Result<Option<Proc>> {
    let upstream_port = upstream.port;
    let log_dir = layout.work_dir.join("logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    if matches!(target.kind, TargetKind::Direct) {
        return Ok(None);
    }
    let log = File::create(output_path(layout, target, run))?;
    let cmd = match &target.kind {
        TargetKind::Direct => return Ok(None),
        TargetKind::Proxy { shards } => {
            let mut cmd = Command::new(&layout.proxy_bin);
            let socket = layout
                .work_dir
                .join(format!("control-{}.sock", layout.proxy_port));
            // Simple mode, unless the broker needs a configuration: a stream
            // listener, a TLS backend, or a route by vhost.
            let config = if let Some(node) = &upstream.stream_node {
                Some(("stream", proxy_stream_config(layout, node, upstream_port)))
            } else if let Some(ca) = &upstream.tls_ca {
                Some(("tls", proxy_tls_config(layout, upstream_port, ca)))
            } else if upstream.routed_by_vhost {
                Some(("vhost", proxy_vhost_config(layout, upstream_port)))
            } else {
                None
            };
            if let Some((kind, text)) = config {
                let file = layout
                    .work_dir
                    .join(format!("proxy-{kind}-{}.conf", layout.proxy_port));
                std::fs::write(&file, text).with_context(|| format!("write {}", file.display()))?;
                cmd.arg("--config").arg(file);
            } else {
                cmd.args(["--listenPort", &layout.proxy_port.to_string()])
                    .args(["--destinationDNS", "127.0.0.1"])
                    .args(["--destinationPort", &upstream_port.to_string()]);
            }
            cmd.arg("--controlSocket")
                .arg(&socket)
                .arg("--logDirectory")
                .arg(log_dir.join(&target.name))
                .args(["--shards", &shards.to_string()]);
            cmd
        }
        TargetKind::External { command, port } => {
            let command = expand(command, *port, upstream_port, upstream.tls_ca.is_some());
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(format!("exec {command}"));
            cmd.env("BENCH_LISTEN_PORT", port.to_string())
                .env("BENCH_BROKER_PORT", upstream_port.to_string());
            if let Some(ca) = &upstream.tls_ca {
                cmd.env("BENCH_TLS_CA_FILE", ca);
            }
            cmd
        }
    };
    let port = listen_port(layout, target);
    let mut cmd = cmd;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    spawn_ready(cmd, &target.name, port).map(Some)
}

/// The port the clients use for `target`.
pub fn listen_port(layout: &Layout, target: &Target) -> u16 {
    match target.kind {
        TargetKind::Direct => layout.broker_port,
        TargetKind::Proxy { .. } => layout.proxy_port,
        TargetKind::External { port, .. } => port,
    }
}

/// `{port}`, `{broker_port}` and `{haproxy_cfg}` (this crate's
/// `haproxy.cfg`, or `haproxy-tls.cfg` in front of a TLS broker) in an
/// external command.
fn expand(command: &str, port: u16, broker_port: u16, tls: bool) -> String {
    command
        .replace("{port}", &port.to_string())
        .replace("{broker_port}", &broker_port.to_string())
        .replace("{haproxy_cfg}", &haproxy_cfg(tls).display().to_string())
}

/// The HAProxy configuration this crate ships for a plain or TLS broker.
pub fn haproxy_cfg(tls: bool) -> PathBuf {
    let file = if tls {
        "haproxy-tls.cfg"
    } else {
        "haproxy.cfg"
    };
    Path::new(env!("CARGO_MANIFEST_DIR")).join(file)
}

/// The external command used when none is given and HAProxy is installed:
/// HAProxy in the foreground with this crate's configuration.
pub const HAPROXY_COMMAND: &str = "haproxy -db -f {haproxy_cfg}";

/// Whether an executable `haproxy` is on the PATH.
pub fn haproxy_installed() -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join("haproxy"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

fn spawn_ready(mut cmd: Command, name: &str, port: u16) -> Result<Proc> {
    let child = cmd
        .spawn()
        .with_context(|| format!("start {name}: {cmd:?}"))?;
    let mut proc = Proc {
        child,
        name: name.to_string(),
        port,
    };
    wait_ready(&mut proc, port)?;
    Ok(proc)
}

/// Polls until 127.0.0.1:`port` accepts a connection.
fn wait_ready(proc: &mut Proc, port: u16) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut deadline = wait::Deadline::within(READY_TIMEOUT);
    loop {
        proc.check_alive()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if !deadline.pause() {
            bail!(
                "{} did not accept on {addr} within {READY_TIMEOUT:?}",
                proc.name
            );
        }
    }
}

/// Fails early when something already listens on a port the run needs.
pub fn ensure_port_free(port: u16) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        bail!("port {port} is already in use; choose others with --broker-port / --proxy-port");
    }
    Ok(())
}

/// Lowers the calling thread's priority to `nice` (Linux keeps a niceness
/// per thread; threads created after inherit it). Raising niceness needs
/// no privilege; 0 changes nothing.
pub fn lower_priority(nice: i32) -> Result<()> {
    if nice == 0 {
        return Ok(());
    }
    // SAFETY: setpriority with who = 0 acts on the calling thread only.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        bail!("setpriority({nice}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// User + system CPU seconds of `pid` so far (all threads).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    cpu_times(pid).map(|(user, system)| user + system)
}

/// User and system CPU seconds of `pid` so far (all threads), apart: the
/// kernel's share of a proxy's CPU is mostly the TCP work it shares with
/// any other proxy, its user share is its own code.
pub fn cpu_times(pid: u32) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name: state is field 3, so
    // utime (14) and stime (15) are the 12th and 13th after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("parse /proc/pid/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11).context("utime")?.parse()?;
    let system: u64 = fields.get(12).context("stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((user as f64 / hz, system as f64 / hz))
}

/// Run time and run-queue wait of each live thread of `pid` so far, in
/// nanoseconds, by thread id (the first two fields of
/// `/proc/<pid>/task/<tid>/schedstat`). The scheduler keeps the run time
/// to the nanosecond (a thread running at the moment of reading is at most
/// one scheduler tick behind, 4 ms at 250 Hz), where `/proc/<pid>/stat`
/// reports the same time in 10 ms clock ticks per field: a 0.2 s round of
/// a fast scenario is 20 ticks, so ticks alone move the CPU per unit by up
/// to 5%. The wait is the time a thread was ready to run but had no core:
/// a target that waits long for its core is one whose rate the machine's
/// other threads set, not its own cost.
pub fn thread_runtimes(pid: u32) -> Result<ThreadRuntimes> {
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread that exits between the listing and the read is skipped:
        // the comparison in `ThreadRuntimes::since` then sees the change.
        let Ok(schedstat) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        let times = amqpprox::stats::process::parse_schedstat(&schedstat)
            .with_context(|| format!("thread {tid}'s schedstat: {schedstat:?}"))?;
        threads.push(ThreadTime {
            tid,
            run_ns: times.on_cpu_ns,
            wait_ns: times.run_delay_ns,
        });
    }
    threads.sort_unstable_by_key(|t| t.tid);
    Ok(ThreadRuntimes(threads))
}

/// One thread's reading in [`ThreadRuntimes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadTime {
    pub tid: u32,
    /// Nanoseconds on a core.
    pub run_ns: u64,
    /// Nanoseconds ready to run, waiting for a core.
    pub wait_ns: u64,
}

/// Each thread's time, sorted by id ([`thread_runtimes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRuntimes(pub Vec<ThreadTime>);

/// Seconds the same threads ran and waited for a core between two readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThreadSeconds {
    pub run: f64,
    pub waited: f64,
}

impl ThreadRuntimes {
    /// Seconds run and waited since `before`, when the same threads were
    /// alive at both readings; `None` when a thread came or went between
    /// them (its time outside the window cannot be told apart), so that the
    /// caller falls back to the tick counts, which keep exited threads.
    pub fn since(&self, before: &ThreadRuntimes) -> Option<ThreadSeconds> {
        if self.0.len() != before.0.len() {
            return None;
        }
        let (mut run, mut waited) = (0u64, 0u64);
        for (now, then) in self.0.iter().zip(&before.0) {
            if now.tid != then.tid || now.run_ns < then.run_ns || now.wait_ns < then.wait_ns {
                return None;
            }
            run += now.run_ns - then.run_ns;
            waited += now.wait_ns - then.wait_ns;
        }
        Some(ThreadSeconds {
            run: run as f64 / 1e9,
            waited: waited as f64 / 1e9,
        })
    }
}

/// The machine's idle and total clock ticks so far, over every core (the
/// `cpu` line of `/proc/stat`; idle counts I/O wait too).
pub fn machine_ticks() -> Result<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    parse_machine_ticks(&stat)
}

fn parse_machine_ticks(stat: &str) -> Result<MachineTicks> {
    let line = stat.lines().next().context("empty /proc/stat")?;
    let mut fields = line.split_whitespace();
    if fields.next() != Some("cpu") {
        bail!("/proc/stat does not open with the cpu line: {line:?}");
    }
    let ticks: Vec<u64> = fields.map(str::parse).collect::<Result<_, _>>()?;
    if ticks.len() < 5 {
        bail!("/proc/stat's cpu line is short: {line:?}");
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already inside user and nice.
    let total = ticks.iter().take(8).sum();
    Ok(MachineTicks {
        idle: ticks[3] + ticks[4],
        total,
    })
}

/// Clock ticks of the whole machine ([`machine_ticks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineTicks {
    pub idle: u64,
    pub total: u64,
}

impl MachineTicks {
    /// The share of the cores' time idle since `before` (0 to 1), or `None`
    /// when no tick passed.
    pub fn idle_share_since(&self, before: &MachineTicks) -> Option<f64> {
        let total = self.total.checked_sub(before.total)?;
        let idle = self.idle.checked_sub(before.idle)?;
        (total > 0).then(|| idle as f64 / total as f64)
    }
}

/// Interrupts one CPU sent another so far, over every CPU: the `RES`
/// (reschedule: wake or preempt a thread there) and `CAL` (function call:
/// the queued remote wake-ups among them) rows of `/proc/interrupts`. On a
/// VM each is an exit to the hypervisor, so their count per unit of work
/// says what a placement costs in wake-ups across cores.
pub fn wakeup_ipis() -> Result<u64> {
    parse_wakeup_ipis(&std::fs::read_to_string("/proc/interrupts")?)
}

fn parse_wakeup_ipis(text: &str) -> Result<u64> {
    let mut rows = 0;
    let mut total = 0;
    for line in text.lines() {
        let line = line.trim_start();
        let Some(counts) = line
            .strip_prefix("RES:")
            .or_else(|| line.strip_prefix("CAL:"))
        else {
            continue;
        };
        rows += 1;
        // One count per CPU, then the row's description.
        total += counts
            .split_whitespace()
            .map_while(|f| f.parse::<u64>().ok())
            .sum::<u64>();
    }
    if rows == 0 {
        bail!("/proc/interrupts has no RES or CAL row");
    }
    Ok(total)
}

/// A `kB` field of `/proc/<pid>/status`, e.g. "VmRSS" or "VmHWM".
pub fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
            let kib = rest.trim().trim_end_matches("kB").trim();
            return Ok(kib.parse()?);
        }
    }
    bail!("no {field} in /proc/{pid}/status")
}

/// Raises the open-files limit (10k idle sessions through a proxy need
/// ~20k descriptors in the proxy and 10k here); children inherit it.
pub fn raise_nofile(want: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur >= want {
            return Ok(lim.rlim_cur);
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return Ok(want);
        }
        // Not privileged to raise the hard limit: take what it allows.
        let capped = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &capped) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
        Ok(lim.rlim_max)
    }
}

/// Where the proxy binary is by default: next to this one.
pub fn default_proxy_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("amqpprox")))
        .unwrap_or_else(|| Path::new("target/release/amqpprox").to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_stat_and_status() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(status_kib(pid, "VmRSS").unwrap() > 0);
        assert!(status_kib(pid, "VmHWM").unwrap() > 0);
    }

    #[test]
    fn thread_runtimes_count_this_threads_time_in_nanoseconds() {
        // Other tests run on threads of their own that come and go, so
        // this looks at the calling thread's entry alone.
        let pid = std::process::id();
        // SAFETY: gettid has no preconditions.
        let tid = u32::try_from(unsafe { libc::gettid() }).unwrap();
        let mine = || {
            let all = thread_runtimes(pid).unwrap();
            let found = all.0.iter().find(|t| t.tid == tid).map(|t| t.run_ns);
            found.unwrap_or_else(|| panic!("thread {tid} missing from {all:?}"))
        };
        // The thread's own CPU clock: the other tests share the cores, so
        // wall time says nothing about how long this thread ran.
        let cpu_ns = || {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: ts is a valid timespec for the call to fill.
            assert_eq!(
                unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) },
                0
            );
            ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
        };
        let before = mine();
        // Burn 20 ms of this thread's CPU: the reading sees it in
        // nanoseconds (within a scheduler tick, as this thread is running
        // when it reads).
        let start = cpu_ns();
        let mut x = 0u64;
        while cpu_ns() - start < 20_000_000 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let used = mine() - before;
        assert!(
            (15_000_000..30_000_000).contains(&used),
            "ran 20 ms of CPU, counted {used} ns"
        );
    }

    #[test]
    fn thread_runtimes_refuse_a_window_in_which_threads_changed() {
        let at = |times: &[(u32, u64, u64)]| {
            ThreadRuntimes(
                times
                    .iter()
                    .map(|&(tid, run_ns, wait_ns)| ThreadTime {
                        tid,
                        run_ns,
                        wait_ns,
                    })
                    .collect(),
            )
        };
        let before = at(&[(10, 1_000, 400), (11, 5_000, 0)]);
        let same = at(&[(10, 3_000, 1_400), (11, 5_500, 500)]);
        assert_eq!(
            same.since(&before),
            Some(ThreadSeconds {
                run: 2.5e-6,
                waited: 1.5e-6
            })
        );
        let one_exited = at(&[(10, 3_000, 400)]);
        assert_eq!(one_exited.since(&before), None);
        let replaced = at(&[(10, 3_000, 400), (12, 100, 0)]);
        assert_eq!(replaced.since(&before), None);
        let went_back = at(&[(10, 500, 400), (11, 5_000, 0)]);
        assert_eq!(went_back.since(&before), None);
    }

    #[test]
    fn a_thread_that_cannot_get_a_core_is_counted_as_waiting() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        // Two threads pinned to one core, both spinning: each is ready all
        // the time and runs about half of it, so each keeps waiting.
        let pid = std::process::id();
        // SAFETY: sched_getcpu has no preconditions.
        let core = usize::try_from(unsafe { libc::sched_getcpu() }).unwrap();
        let tids = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let spinners: Vec<_> = (0..2)
            .map(|_| {
                let (tids, stop) = (tids.clone(), stop.clone());
                std::thread::spawn(move || {
                    // SAFETY: a zeroed cpu_set_t is a valid empty set;
                    // CPU_SET and sched_setaffinity act on this thread.
                    unsafe {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        libc::CPU_SET(core, &mut set);
                        assert_eq!(
                            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
                            0
                        );
                    }
                    // SAFETY: gettid has no preconditions.
                    tids.lock()
                        .unwrap()
                        .push(u32::try_from(unsafe { libc::gettid() }).unwrap());
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                })
            })
            .collect();
        let deadline = amqpprox_testkit::wait::deadline_in(Duration::from_secs(10));
        let started =
            amqpprox_testkit::wait::wait_until(deadline, || tids.lock().unwrap().len() == 2);
        let mine = |r: &ThreadRuntimes| -> Vec<ThreadTime> {
            let tids = tids.lock().unwrap();
            r.0.iter()
                .filter(|t| tids.contains(&t.tid))
                .copied()
                .collect()
        };
        let first = mine(&thread_runtimes(pid).unwrap());
        // Each must wait 20 ms while sharing the core: a reading that
        // counted no wait would never get there.
        let both_waited = started
            && amqpprox_testkit::wait::wait_until(deadline, || {
                let now = mine(&thread_runtimes(pid).unwrap());
                now.len() == 2
                    && now
                        .iter()
                        .zip(&first)
                        .all(|(n, f)| n.wait_ns - f.wait_ns > 20_000_000)
            });
        stop.store(true, Ordering::Relaxed);
        for s in spinners {
            s.join().unwrap();
        }
        assert!(started && first.len() == 2, "both spinners started");
        assert!(
            both_waited,
            "two threads sharing one core never showed 20 ms of waiting each"
        );
    }

    #[test]
    fn machine_ticks_count_idle_and_io_wait_out_of_every_state() {
        let stat = "cpu  100 5 50 800 20 3 2 10 7 0\ncpu0 50 2 25 400 10 1 1 5 3 0\n";
        let t = parse_machine_ticks(stat).unwrap();
        assert_eq!(
            t,
            MachineTicks {
                idle: 820,
                total: 990
            }
        );
        let later = MachineTicks {
            idle: 820 + 30,
            total: 990 + 120,
        };
        assert_eq!(later.idle_share_since(&t), Some(0.25));
        assert_eq!(t.idle_share_since(&t), None);
        assert!(parse_machine_ticks("intr 5\n").is_err());
        assert!(machine_ticks().unwrap().total > 0);
    }

    #[test]
    fn wakeup_ipis_add_the_reschedule_and_call_rows_over_every_cpu() {
        let text = "           CPU0       CPU1
  0:         44          0   IO-APIC   2-edge      timer
NMI:          0          0   Non-maskable interrupts
LOC:    1089265     998877   Local timer interrupts
RES:    1500000    1557173   Rescheduling interrupts
CAL:    1200000    1271235   Function call interrupts
TLB:     214106          0   TLB shootdowns
";
        assert_eq!(
            parse_wakeup_ipis(text).unwrap(),
            1_500_000 + 1_557_173 + 1_200_000 + 1_271_235
        );
        assert!(parse_wakeup_ipis("           CPU0\nLOC:  12  Local timer interrupts\n").is_err());
    }

    #[test]
    fn lower_priority_sets_the_calling_threads_niceness_only() {
        let niceness = || {
            // SAFETY: getpriority on the calling thread (who = 0).
            unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
        };
        let before = niceness();
        let (inside, inherited) = std::thread::spawn(move || {
            lower_priority(before + 3).unwrap();
            let inside = niceness();
            let inherited = std::thread::spawn(niceness).join().unwrap();
            (inside, inherited)
        })
        .join()
        .unwrap();
        assert_eq!(inside, before + 3);
        assert_eq!(inherited, before + 3, "threads it starts inherit it");
        assert_eq!(niceness(), before, "the spawning thread keeps its own");
    }

    #[test]
    fn proxy_tls_config_names_a_verified_tls_backend() {
        let layout = Layout {
            proxy_bin: PathBuf::new(),
            proxy_port: 5791,
            broker_port: 5790,
            broker_threads: 2,
            load_nice: 0,
            work_dir: PathBuf::from("/w"),
        };
        let text = proxy_tls_config(&layout, 5790, Path::new("/w/tls/ca.pem"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1..],
            [
                "TLS EGRESS CA_CERT_FILE /w/tls/ca.pem",
                "TLS EGRESS VERIFY_MODE PEER",
                "BACKEND ADD bench-broker bench localhost 5790 TLS",
                "FARM ADD bench round-robin bench-broker",
                "MAP DEFAULT bench",
                "LISTEN START 5791",
            ]
        );
    }

    #[test]
    fn external_command_placeholders() {
        assert_eq!(
            expand(
                "socat TCP-L:{port} TCP:127.0.0.1:{broker_port}",
                1,
                2,
                false
            ),
            "socat TCP-L:1 TCP:127.0.0.1:2"
        );
        let plain = expand(HAPROXY_COMMAND, 1, 2, false);
        let tls = expand(HAPROXY_COMMAND, 1, 2, true);
        assert!(plain.ends_with("benches/haproxy.cfg"), "{plain}");
        assert!(tls.ends_with("benches/haproxy-tls.cfg"), "{tls}");
        assert!(haproxy_cfg(false).is_file() && haproxy_cfg(true).is_file());
    }
}
