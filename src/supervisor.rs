//! Process start-up and supervision: starts the shards (turning a missing
//! io_uring into one clear message), the control thread and simple mode,
//! then watches for `EXIT` or a shard that died, which fails the process.
//!
//! Runs on the main thread; it owns no session and touches no socket
//! besides binding the control socket.

use crate::cli::Options;
use crate::config::ConfigSnapshot;
use crate::control::{self, ControlServer, ControlState};
use crate::shard::{self, ShardEvent, Shared};
use std::sync::{Arc, Mutex};

/// What the main thread waits for.
enum Event {
    Shard(ShardEvent),
    Exit,
    /// SIGTERM or SIGINT.
    Terminate,
}

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
}

/// Runs the proxy until `EXIT`; returns the process exit code.
pub fn run(options: Options) -> Result<i32, StartError> {
    // Before anything opens a socket; logged once the verbosity is set.
    let nofile = crate::fdlimit::raise_to_hard();
    let shared = Arc::new(
        Shared::new(
            ConfigSnapshot::new(Default::default()),
            options.handshake_timeout,
            options.connect_timeout,
        )
        .with_broker_handshake_timeout(options.broker_handshake_timeout)
        .with_move_grace(options.drain_timeout),
    );
    let (events_tx, events_rx) = flume::unbounded::<Event>();

    // Shards first: without io_uring there is nothing to run.
    let cpus = shard::usable_cpus();
    let (shard_tx, shard_rx) = flume::unbounded::<ShardEvent>();
    let mut handles = Vec::with_capacity(options.shards);
    for index in 0..options.shards {
        let cpu = (!cpus.is_empty()).then(|| cpus[index % cpus.len()]);
        handles.push(
            shard::spawn(
                index,
                cpu,
                options.spin_before_park,
                Arc::clone(&shared),
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
    let state = Arc::new(Mutex::new(ControlState::new(Arc::clone(&shared), handles)));
    let hub = Arc::clone(&state.lock().unwrap_or_else(|p| p.into_inner()).stats);
    hub.set_health(Arc::clone(&shared.health));
    crate::stats::start(
        hub,
        collectors,
        crate::session::pool::BUFFER_SIZE,
        options.cleanup_interval,
        options.metrics_port,
    )
    .map_err(|error| StartError::Metrics {
        port: options.metrics_port.unwrap_or(0),
        error,
    })?;
    let server = ControlServer::bind(&options.control_socket).map_err(|error| {
        StartError::ControlSocket {
            path: options.control_socket.display().to_string(),
            error,
        }
    })?;

    reload_tls_on_sighup(&state)?;
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
    if let Some(file) = &options.config_file {
        apply_config_file(&state, file)?;
    }
    if let Some(simple) = &options.simple_mode {
        // Simple mode is expressed as control commands, as in the original.
        for line in [
            format!(
                "BACKEND ADD_DNS default-backend none {} {}",
                simple.destination_dns, simple.destination_port
            ),
            "FARM ADD default round-robin default-backend".to_string(),
            "MAP DEFAULT default".to_string(),
            format!("LISTEN START {}", simple.listen_port),
        ] {
            let reply = run_internal(&state, &line);
            print!("{}", reply.text);
            if reply.error {
                return Err(StartError::SimpleMode(format!(
                    "'{line}' failed: {}",
                    reply.text.trim_end()
                )));
            }
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
    {
        let state = Arc::clone(&state);
        let events_tx = events_tx.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                control::serve(server, state, move || {
                    let _ = events_tx.send(Event::Exit);
                })
            })
            .map_err(StartError::Thread)?;
    }

    let code = loop {
        match events_rx.recv() {
            Ok(Event::Exit) => break 0,
            Ok(Event::Terminate) => {
                drain(&state, &events_rx, options.drain_timeout);
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
    if let Ok(state) = state.lock() {
        state.shutdown_shards();
    }
    let _ = std::fs::remove_file(&options.control_socket);
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

/// Graceful drain (DECISIONS Add 4): stop accepting, ask every session to
/// end (established clients get `Connection.Close` 320 at a frame boundary,
/// so they reconnect elsewhere; the broker side is closed cleanly), and wait
/// until they are gone or `limit` passes. A second signal or `EXIT` ends
/// the wait at once.
fn drain(state: &Mutex<ControlState>, events: &flume::Receiver<Event>, limit: std::time::Duration) {
    use crate::session::control::Ending;
    use crate::shard::{SessionAction, SessionTarget, ShardCommand};
    let deadline = std::time::Instant::now() + limit;
    let count = |state: &ControlState| -> usize {
        state
            .ask_shards(|reply| ShardCommand::Sessions { reply })
            .into_iter()
            .flatten()
            .map(|views| views.len())
            .sum()
    };
    {
        let state = state.lock().unwrap_or_else(|p| p.into_inner());
        let _ = state.ask_shards(|reply| ShardCommand::StopListening { port: None, reply });
        let asked: usize = state
            .ask_shards(|reply| ShardCommand::Act {
                target: SessionTarget::All,
                action: SessionAction::End(Ending::Drain),
                reply,
            })
            .into_iter()
            .flatten()
            .sum();
        log::info!(
            "Draining: stopped listening, asked {asked} sessions to reconnect elsewhere; waiting up to {} ms",
            limit.as_millis()
        );
    }
    loop {
        let left = {
            let state = state.lock().unwrap_or_else(|p| p.into_inner());
            count(&state)
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
            Ok(Event::Shard(_)) | Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// SIGHUP re-reads every TLS file (the default action would kill the
/// proxy). A signal handler cannot take the control lock, so a thread
/// waits for the signal and reloads under it, as a control command would.
fn reload_tls_on_sighup(state: &Arc<Mutex<ControlState>>) -> Result<(), StartError> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(StartError::Thread)?;
    let state = Arc::clone(state);
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
                let control = &mut *guard;
                match control.config.tls.reload(&control.shared.tls) {
                    Ok(()) => log::info!("SIGHUP: TLS files reloaded"),
                    Err(e) => log::error!("SIGHUP: TLS reload failed, nothing changed: {e}"),
                }
            }
        })
        .map_err(StartError::Thread)?;
    Ok(())
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
