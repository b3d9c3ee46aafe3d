//! Process start-up and supervision: starts the shards (turning a missing
//! io_uring into one clear message), the control thread and simple mode,
//! then watches for `EXIT` or a shard that died, which fails the process.
//!
//! It tells systemd (`Type=notify`, docs/deployment.md#systemd) when the
//! proxy is ready, reloading and stopping, and how many sessions it
//! carries. SIGHUP re-applies `--config` (`reload`).
//!
//! With `--takeover` it first takes the running proxy's listening sockets
//! and configuration, replays that configuration adopting the sockets,
//! releases the old process and only then binds the control socket path
//! (docs/deployment.md#upgrading-without-refusing-connections). A process
//! that handed itself over never removes the control socket path: it is
//! the new process's.
//!
//! Runs on the main thread; it owns no session and touches no socket
//! besides binding the control socket.

mod reload;

use crate::cli::Options;
use crate::config::ConfigSnapshot;
use crate::control::upgrade::{Adoption, UpgradeState};
use crate::control::{self, ControlEvent, ControlServer, ControlState};
use crate::handoff::{self, HandoffError};
use crate::shard::{self, ShardCommand, ShardEvent, Shared};
use crate::stats::StatsHub;
use crate::systemd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the main thread waits for.
enum Event {
    Shard(ShardEvent),
    Exit,
    /// SIGTERM or SIGINT.
    Terminate,
    /// `UPGRADE RELEASE`: a new process serves; drain this one.
    Released,
}

/// Bound on each step of the takeover exchange with the old process.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Shard(#[from] shard::ShardError),
    #[error("cannot start shard threads: {0}")]
    Thread(std::io::Error),
    #[error("cannot bind the control socket '{path}': {error}")]
    ControlSocket { path: String, error: std::io::Error },
    #[error("cannot serve metrics on port {port}: {error}")]
    Metrics { port: u16, error: std::io::Error },
    #[error("{file}:{line}: {reason}")]
    ConfigFile {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("cannot read the config file '{file}': {error}")]
    ConfigRead { file: String, error: std::io::Error },
    #[error("simple mode: {0}")]
    SimpleMode(String),
    #[error("--takeover: {0}")]
    Takeover(#[from] HandoffError),
    #[error(
        "--takeover: replaying the running proxy's configuration, line {line} '{text}': {reason}"
    )]
    TakeoverConfig {
        line: usize,
        text: String,
        reason: String,
    },
    #[error("--cpus: CPU {cpu} is not one this process may run on (usable: {usable:?})")]
    CpuNotUsable { cpu: usize, usable: Vec<usize> },
}

/// Runs the proxy until `EXIT`; returns the process exit code.
pub fn run(options: Options) -> Result<i32, StartError> {
    // Before anything opens a socket; logged once the verbosity is set.
    let nofile = crate::fdlimit::raise_to_hard();
    // Asked before anything starts: if the running proxy cannot hand over,
    // nothing here has touched it and it serves on.
    let takeover = match &options.takeover {
        Some(path) => Some(handoff::request_handoff(path, TAKEOVER_TIMEOUT)?),
        None => None,
    };
    let shared = Arc::new(
        Shared::new(
            ConfigSnapshot::new(Default::default()),
            options.handshake_timeout,
            options.connect_timeout,
        )
        .with_broker_handshake_timeout(options.broker_handshake_timeout)
        .with_auth_timeouts(options.auth_timeouts)
        .with_move_grace(options.drain_timeout)
        .with_window_clamp(options.window_clamp),
    );
    let (events_tx, events_rx) = flume::unbounded::<Event>();

    // Shards first: without io_uring there is nothing to run.
    let cpus = shard::usable_cpus();
    if let crate::cli::CpuPlacement::List(list) = &options.cpus {
        // Checked here, not by the executor, so the refusal names the CPU.
        if let Some(&cpu) = list.iter().find(|c| !cpus.is_empty() && !cpus.contains(c)) {
            return Err(StartError::CpuNotUsable { cpu, usable: cpus });
        }
    }
    let (shard_tx, shard_rx) = flume::unbounded::<ShardEvent>();
    let mut handles = Vec::with_capacity(options.shards);
    // Connections the kernel hashed unevenly are evened out between shards.
    let balance = Arc::new(shard::Balance::new(options.shards));
    let placement: Vec<Option<usize>> = (0..options.shards)
        .map(|index| options.cpus.cpu_for(index, options.shards, &cpus))
        .collect();
    log::info!(
        "{}",
        crate::cli::describe_placement(&placement, &options.cpus, cpus.len())
    );
    for (index, &cpu) in placement.iter().enumerate() {
        handles.push(
            shard::spawn(
                index,
                cpu,
                options.spin_before_park,
                Arc::clone(&shared),
                Arc::clone(&balance),
                shard_tx.clone(),
            )
            .map_err(StartError::Thread)?,
        );
    }
    for _ in 0..options.shards {
        match shard_rx.recv() {
            Ok(ShardEvent::Started(_)) => {}
            Ok(ShardEvent::FailedToStart(e)) => return Err(e.into()),
            Ok(ShardEvent::Exited { index, .. }) => {
                return Err(StartError::Shard(shard::ShardError::Executor {
                    index,
                    reason: "the shard thread ended during start-up".into(),
                }))
            }
            Err(_) => break,
        }
    }
    {
        let events_tx = events_tx.clone();
        std::thread::Builder::new()
            .name("shard-watch".into())
            .spawn(move || {
                for ev in shard_rx.iter() {
                    if events_tx.send(Event::Shard(ev)).is_err() {
                        break;
                    }
                }
            })
            .map_err(StartError::Thread)?;
    }

    // The stats thread asks the shards directly, beside the control thread.
    let collectors: Vec<crate::stats::Collector> = handles
        .iter()
        .map(|h| {
            let inbox = h.inbox.clone();
            Box::new(move |reply| {
                inbox
                    .send(crate::shard::ShardCommand::CollectStats { reply })
                    .is_ok()
            }) as crate::stats::Collector
        })
        .collect();
    crate::dns_watch::start(
        Arc::clone(&shared),
        handles.iter().map(|h| h.inbox.clone()).collect(),
        options.dns_recheck,
    )
    .map_err(StartError::Thread)?;
    let mut control_state = ControlState::new(Arc::clone(&shared), handles);
    let mut takeover = takeover;
    if let Some(received) = takeover.as_mut() {
        control_state.adoption = Some(Adoption::new(
            std::mem::take(&mut received.listeners),
            options.shards,
        ));
    }
    let state = Arc::new(Mutex::new(control_state));
    let hub = Arc::clone(&state.lock().unwrap_or_else(|p| p.into_inner()).stats);
    hub.set_health(Arc::clone(&shared.health));
    // The old process holds the metrics port until it exits.
    let metrics_now = options.metrics_port.filter(|_| takeover.is_none());
    crate::stats::start(
        Arc::clone(&hub),
        collectors,
        crate::session::pool::BUFFER_SIZE,
        options.cleanup_interval,
        metrics_now,
    )
    .map_err(|error| StartError::Metrics {
        port: options.metrics_port.unwrap_or(0),
        error,
    })?;
    // Bound now, so a client that connects early waits in its backlog;
    // served once the configuration is applied. Taking over, the path is
    // the old process's until it has been released.
    let server = match takeover {
        None => Some(bind_control(&options.control_socket)?),
        Some(_) => None,
    };

    // Caught from here on (the default action would kill the proxy), but
    // handled only once start-up is done: a reload racing the --config
    // replay would fail it.
    let sighup = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(StartError::Thread)?;
    forward_termination(events_tx.clone())?;

    if options.console_verbosity > 0 {
        run_internal(
            &state,
            &format!("LOG CONSOLE {}", options.console_verbosity),
        );
    }
    match &nofile {
        Ok(raise) => log::info!("Start: {raise}"),
        Err(e) => log::warn!("Start: {e}"),
    }
    if let (Some(received), Some(old)) = (takeover, &options.takeover) {
        take_over(&state, &received.config, old)?;
        // Only now: the release above went through the old process's
        // control socket at this path.
        let server = bind_control(&options.control_socket)?;
        serve_control(server, &state, &events_tx)?;
        // The old process watches this connection; closed after the
        // release, it tells that process nothing is left to undo.
        drop(received.connection);
        log::info!(
            "--takeover: complete; control socket {}",
            options.control_socket.display()
        );
        if let Some(port) = options.metrics_port {
            serve_metrics_when_free(port, Arc::clone(&hub));
        }
    }
    if let Some(file) = &options.config_file {
        apply_config_file(&state, file)?;
    }
    let simple_lines = options
        .simple_mode
        .as_ref()
        .map(simple_mode_lines)
        .unwrap_or_default();
    for line in &simple_lines {
        let reply = run_internal(&state, line);
        print!("{}", reply.text);
        if reply.error {
            return Err(StartError::SimpleMode(format!(
                "'{line}' failed: {}",
                reply.text.trim_end()
            )));
        }
    }

    // The probe follows the registry the control thread keeps in step with
    // each committed configuration; it idles while the policy has no
    // interval (docs/reliability.md#health-checks).
    let _prober =
        crate::health::Prober::spawn(Arc::clone(&shared.health), Arc::new(log_probe_change))
            .map_err(StartError::Thread)?;

    // Served only now: the socket exists from the start (a client that
    // connects early waits in its backlog), but nobody sees a half-applied
    // --config or simple mode.
    if let Some(server) = server {
        serve_control(server, &state, &events_tx)?;
    }

    reload_on_sighup(
        sighup,
        &state,
        Recipe {
            file: options.config_file.clone(),
            simple: simple_lines,
        },
        Arc::clone(&hub),
    )?;
    // Everything start-up asked for is in place and listening.
    systemd::ready(sessions(&hub));
    systemd::report_status_every(options.cleanup_interval, {
        let hub = Arc::clone(&hub);
        move || sessions(&hub)
    })
    .map_err(StartError::Thread)?;

    let code = loop {
        match events_rx.recv() {
            Ok(Event::Exit) => {
                systemd::stopping(sessions(&hub));
                break 0;
            }
            Ok(Event::Terminate) => {
                drain(&state, &events_rx, options.drain_timeout);
                break 0;
            }
            Ok(Event::Released) => {
                upgrade_drain(
                    &state,
                    &events_rx,
                    options.upgrade_grace,
                    options.drain_timeout,
                );
                break 0;
            }
            Ok(Event::Shard(ShardEvent::Exited { index, panicked })) => {
                crate::fatal!("Shard {index} stopped unexpectedly (panicked: {panicked}); exiting");
                break 1;
            }
            Ok(Event::Shard(_)) => {}
            Err(_) => break 1,
        }
    };
    let handed_off = {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        // Exiting while handed over and not released (EXIT, a dead
        // shard): the new process shares the sockets, so the accepts in
        // flight are completed, never dropped.
        settle_handed_over(&mut state);
        state.shutdown_shards();
        state.upgrade.handed_off()
    };
    if !handed_off {
        let _ = std::fs::remove_file(&options.control_socket);
    }
    Ok(code)
}

/// A probe changed a backend's state: one line, naming it and why.
fn log_probe_change(
    name: &str,
    recorded: crate::health::Recorded,
    error: Option<&crate::health::ProbeError>,
) {
    match error {
        Some(e) => log::warn!(
            "Backend '{name}' is {} (was {}): probe failed: {e}",
            recorded.after,
            recorded.before
        ),
        None => log::warn!(
            "Backend '{name}' is {} (was {}): probe succeeded",
            recorded.after,
            recorded.before
        ),
    }
}

/// Binds the control socket path (replacing a stale file).
fn bind_control(path: &Path) -> Result<ControlServer, StartError> {
    ControlServer::bind(path).map_err(|error| StartError::ControlSocket {
        path: path.display().to_string(),
        error,
    })
}

/// Serves the bound control socket on its own thread.
fn serve_control(
    server: ControlServer,
    state: &Arc<Mutex<ControlState>>,
    events: &flume::Sender<Event>,
) -> Result<(), StartError> {
    let state = Arc::clone(state);
    let events = events.clone();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            control::serve(server, state, move |event| {
                let _ = events.send(match event {
                    ControlEvent::Exit => Event::Exit,
                    ControlEvent::Released => Event::Released,
                });
            })
        })
        .map_err(StartError::Thread)?;
    Ok(())
}

/// The new process's side after the exchange: replays the configuration
/// (its `LISTEN START`s adopt the handed sockets), releases the old
/// process, then lets the shards accept on the adopted sockets. The old
/// process has stopped accepting by then, so no socket ever has accepts
/// armed in two processes that one of them might drop; a client arriving
/// in between waits in the socket's queue.
fn take_over(
    state: &Mutex<ControlState>,
    config: &str,
    old_control_socket: &Path,
) -> Result<(), StartError> {
    for (i, line) in config.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let reply = run_internal(state, line);
        if reply.error {
            return Err(StartError::TakeoverConfig {
                line: i + 1,
                text: line.to_string(),
                reason: reply.text.trim_end().to_string(),
            });
        }
    }
    let handed_ports = {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        // What is left unclaimed is closed here, before any accept.
        let adoption = state.adoption.take();
        let unclaimed = adoption.as_ref().map(|a| a.unclaimed_ports());
        if let Some(unclaimed) = unclaimed.filter(|u| !u.is_empty()) {
            log::warn!(
                "--takeover: sockets of ports {unclaimed:?} came without a LISTEN line; closed here, the old process keeps serving them until it exits"
            );
        }
        adoption.map(|a| a.bound_addrs()).unwrap_or_default()
    };
    match handoff::release(old_control_socket, TAKEOVER_TIMEOUT) {
        Ok(reply) => log::info!("--takeover: the old process answered: {}", reply.trim_end()),
        // Serving anyway: a process that cannot be reached is not
        // accepting either, or accepts beside us until it exits.
        Err(e) => log::warn!("--takeover: releasing the old process failed: {e}"),
    }
    let state = state.lock().unwrap_or_else(|p| p.into_inner());
    let started: usize = state
        .ask_shards(|reply| ShardCommand::StartAdopted { reply })
        .into_iter()
        .flatten()
        .sum();
    log::info!("--takeover: accepting on {started} handed-over sockets");
    // More shards than the old process had sockets: the shards the plan
    // left without one bind their own now. Not earlier: a socket of ours
    // would take connections at once, and had the takeover failed, closing
    // it would have reset them.
    for (port, addr) in handed_ports {
        let Some(listener) = state.config.listeners.get(&port) else {
            continue;
        };
        let kind = shard::ListenerKind {
            tls: listener.tls,
            proxy: listener.proxy,
            stream: listener.stream.is_some(),
        };
        for (index, reply) in state
            .ask_shards(|reply| ShardCommand::Listen { addr, kind, reply })
            .into_iter()
            .enumerate()
        {
            match reply {
                Some(Ok(())) => {}
                Some(Err(e)) => log::warn!("--takeover: shard {index}: {e}"),
                None => log::warn!("--takeover: shard {index} did not answer"),
            }
        }
    }
    Ok(())
}

/// The metrics port stays the old process's until it exits; serve it as
/// soon as it is free.
fn serve_metrics_when_free(port: u16, hub: Arc<crate::stats::StatsHub>) {
    let spawned = std::thread::Builder::new()
        .name("metrics-wait".into())
        .spawn(move || loop {
            match crate::stats::http::serve(port, Arc::clone(&hub)) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    log::error!("Cannot serve metrics on port {port}: {e}");
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("Cannot start the metrics thread: {e}");
    }
}

/// Completes the accepts still in flight on handed-over sockets when this
/// process stops while handed over but not released.
fn settle_handed_over(state: &mut ControlState) {
    if let UpgradeState::HandedOff { gates } = &state.upgrade {
        let settled = control::upgrade::settle(gates);
        log::info!(
            "Handed over and stopping: no accept left on {settled} of {} sockets",
            gates.len()
        );
    }
}

/// Connections accepted and not ended, on every shard.
fn connections(state: &Mutex<ControlState>) -> usize {
    let state = state.lock().unwrap_or_else(|p| p.into_inner());
    state
        .ask_shards(|reply| ShardCommand::Connections { reply })
        .into_iter()
        .flatten()
        .sum()
}

/// The old process's drain after `UPGRADE RELEASE`: it accepts nothing any
/// more. Its connections first get `grace` to end on their own (a client
/// in its handshake finishes it, a short-lived one its work), then the rest
/// are drained as on SIGTERM.
fn upgrade_drain(
    state: &Mutex<ControlState>,
    events: &flume::Receiver<Event>,
    grace: Duration,
    limit: Duration,
) {
    let deadline = Instant::now() + grace;
    // The new process serves from now on: systemd should hear it at once,
    // not after the grace period.
    systemd::stopping(connections(state));
    log::info!(
        "Released by a new process: waiting up to {} ms for {} connections to end",
        grace.as_millis(),
        connections(state)
    );
    loop {
        if connections(state) == 0 {
            log::info!("Every connection has ended");
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match events.recv_timeout((deadline - now).min(Duration::from_millis(50))) {
            // EXIT means now; a signal skips the grace, as a second one
            // then skips the drain.
            Ok(Event::Exit) => return,
            Ok(Event::Terminate) => break,
            Ok(_) | Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => return,
        }
    }
    drain(state, events, limit);
}

/// SIGTERM and SIGINT start a drain instead of killing the process.
fn forward_termination(events: flume::Sender<Event>) -> Result<(), StartError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(StartError::Thread)?;
    std::thread::Builder::new()
        .name("sigterm".into())
        .spawn(move || {
            for _ in signals.forever() {
                if events.send(Event::Terminate).is_err() {
                    return;
                }
            }
        })
        .map_err(StartError::Thread)?;
    Ok(())
}

/// Graceful drain (docs/sessions.md#graceful-drain): stop accepting, ask every
/// session to end (established clients get `Connection.Close` 320 at a frame
/// boundary, so they reconnect elsewhere; the broker side is closed cleanly),
/// and wait until they are gone or `limit` passes. A second signal or `EXIT`
/// ends the wait at once.
fn drain(state: &Mutex<ControlState>, events: &flume::Receiver<Event>, limit: std::time::Duration) {
    use crate::session::control::Ending;
    use crate::shard::{SessionAction, SessionTarget, ShardCommand};
    let deadline = std::time::Instant::now() + limit;
    let ask_all = |state: &ControlState| -> usize {
        state
            .ask_shards(|reply| ShardCommand::Act {
                target: SessionTarget::All,
                action: SessionAction::End(Ending::Drain),
                reply,
            })
            .into_iter()
            .flatten()
            .sum()
    };
    {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        // Handed over and not released: the sockets are shared, so their
        // accepts are stopped through the gates, never cancelled.
        settle_handed_over(&mut state);
        if let UpgradeState::HandedOff { .. } = state.upgrade {
            state.upgrade = UpgradeState::Released;
        }
        let _ = state.ask_shards(|reply| ShardCommand::StopListening { port: None, reply });
        let asked = ask_all(&state);
        systemd::stopping(asked);
        log::info!(
            "Draining: stopped listening, asked {asked} sessions to reconnect elsewhere; waiting up to {} ms",
            limit.as_millis()
        );
    }
    loop {
        let left = {
            let state = state.lock().unwrap_or_else(|p| p.into_inner());
            // Asked again each time: a connection that was still in its
            // TLS or PROXY step last time may be a session now.
            ask_all(&state);
            state
                .ask_shards(|reply| ShardCommand::Connections { reply })
                .into_iter()
                .flatten()
                .sum::<usize>()
        };
        if left == 0 {
            log::info!("Drained: every session has ended");
            return;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            log::warn!("Drain timed out with {left} sessions left; exiting");
            return;
        }
        let wait = (deadline - now).min(std::time::Duration::from_millis(100));
        match events.recv_timeout(wait) {
            Ok(Event::Terminate | Event::Exit) => {
                log::warn!("Asked again: exiting with {left} sessions left");
                return;
            }
            Ok(Event::Shard(_) | Event::Released) | Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Simple mode expressed as control commands, as in the original.
fn simple_mode_lines(simple: &crate::cli::SimpleMode) -> Vec<String> {
    vec![
        format!(
            "BACKEND ADD_DNS default-backend none {} {}",
            simple.destination_dns, simple.destination_port
        ),
        "FARM ADD default round-robin default-backend".to_string(),
        "MAP DEFAULT default".to_string(),
        format!("LISTEN START {}", simple.listen_port),
    ]
}

/// Sessions at the last statistics tick (none before the first): cheap,
/// it asks no shard.
fn sessions(hub: &StatsHub) -> usize {
    hub.latest().map_or(0, |s| {
        usize::try_from(s.overall.gauges.active).unwrap_or(usize::MAX)
    })
}

/// What start-up configured from, for SIGHUP to apply again.
struct Recipe {
    file: Option<std::path::PathBuf>,
    /// The simple-mode commands, applied after the file.
    simple: Vec<String>,
}

/// SIGHUP, caught by `signals`: with `--config`, the
/// file and simple mode are applied again and the running configuration
/// is brought to what they build (`reload`), TLS files read afresh; without
/// it, every TLS file is re-read. A signal handler cannot take the control
/// lock, so a thread waits for the signal and works under the lock, as a
/// control command would; the file is read and checked before the lock is
/// taken. systemd hears `RELOADING=1` first and `READY=1` when done.
fn reload_on_sighup(
    mut signals: signal_hook::iterator::Signals,
    state: &Arc<Mutex<ControlState>>,
    recipe: Recipe,
    hub: Arc<StatsHub>,
) -> Result<(), StartError> {
    let state = Arc::clone(state);
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                systemd::reloading();
                match &recipe.file {
                    Some(file) => reapply(&state, file, &recipe.simple),
                    None => {
                        let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
                        let control = &mut *guard;
                        match control.config.tls.reload(&control.shared.tls) {
                            Ok(()) => log::info!("SIGHUP: TLS files reloaded"),
                            Err(e) => {
                                log::error!("SIGHUP: TLS reload failed, nothing changed: {e}")
                            }
                        }
                    }
                }
                systemd::ready(sessions(&hub));
            }
        })
        .map_err(StartError::Thread)?;
    Ok(())
}

/// One SIGHUP with `--config`: see `reload`. Logs what it did; a file that
/// cannot be read or has a failing line changes nothing.
fn reapply(state: &Mutex<ControlState>, file: &std::path::Path, simple: &[String]) {
    let (target, skipped) = match reload::target(file, simple) {
        Ok(built) => built,
        Err(e) => {
            log::error!("SIGHUP: configuration not re-applied, nothing changed: {e}");
            return;
        }
    };
    for line in skipped {
        log::info!("SIGHUP: '{line}' is not configuration; not run again");
    }
    let mut control = state.lock().unwrap_or_else(|p| p.into_inner());
    let steps = reload::plan(&control.config, &target);
    let outcome = reload::apply(&mut control, &target, steps);
    for (line, reason) in &outcome.failures {
        log::error!("SIGHUP: '{line}' failed: {reason}");
    }
    if outcome.failures.is_empty() {
        log::info!(
            "SIGHUP: re-applied '{}': {} changes, TLS files read again",
            file.display(),
            outcome.changes
        );
    } else {
        log::error!(
            "SIGHUP: re-applied '{}' with {} of {} changes failed (above); the rest is in force",
            file.display(),
            outcome.failures.len(),
            outcome.changes
        );
    }
}

fn run_internal(state: &Mutex<ControlState>, line: &str) -> control::Reply {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    state.execute(line)
}

/// Applies a file of control commands (as `CONFIG DUMP` prints them);
/// blank lines and `#` comments are skipped; the first failing line stops
/// the start with its number and reason.
fn apply_config_file(
    state: &Mutex<ControlState>,
    file: &std::path::Path,
) -> Result<(), StartError> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|error| StartError::ConfigRead {
        file: name.clone(),
        error,
    })?;
    // One lock for the whole file: no command from another thread (a
    // control client, a signal) lands in the middle of it.
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let reply = state.execute(line);
        if reply.error {
            return Err(StartError::ConfigFile {
                file: name,
                line: i + 1,
                reason: reply.text.trim_end().to_string(),
            });
        }
    }
    Ok(())
}
