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
    let shared = Arc::new(Shared::new(
        ConfigSnapshot::new(Default::default()),
        options.handshake_timeout,
        options.connect_timeout,
    ));
    let (events_tx, events_rx) = flume::unbounded::<Event>();

    // Shards first: without io_uring there is nothing to run.
    let cpus = shard::usable_cpus();
    let (shard_tx, shard_rx) = flume::unbounded::<ShardEvent>();
    let mut handles = Vec::with_capacity(options.shards);
    for index in 0..options.shards {
        let cpu = (!cpus.is_empty()).then(|| cpus[index % cpus.len()]);
        handles.push(
            shard::spawn(index, cpu, Arc::clone(&shared), shard_tx.clone())
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
    let inboxes: Vec<_> = handles.iter().map(|h| h.inbox.clone()).collect();
    let state = Arc::new(Mutex::new(ControlState::new(Arc::clone(&shared), handles)));
    let hub = Arc::clone(&state.lock().unwrap_or_else(|p| p.into_inner()).stats);
    crate::stats::start(hub, inboxes, options.cleanup_interval, options.metrics_port).map_err(
        |error| StartError::Metrics {
            port: options.metrics_port.unwrap_or(0),
            error,
        },
    )?;
    let server = ControlServer::bind(&options.control_socket).map_err(|error| {
        StartError::ControlSocket {
            path: options.control_socket.display().to_string(),
            error,
        }
    })?;
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

    reload_tls_on_sighup(&state)?;

    if options.console_verbosity > 0 {
        run_internal(
            &state,
            &format!("LOG CONSOLE {}", options.console_verbosity),
        );
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

    let code = loop {
        match events_rx.recv() {
            Ok(Event::Exit) => break 0,
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
                match control.tls.reload(&control.shared.tls) {
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
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let reply = run_internal(state, line);
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
