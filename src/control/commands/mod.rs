//! Control verbs, executed: one file per verb, each taking its typed
//! command from [`crate::control::grammar`] and running it against the
//! control state (see `docs/commands.md`). This file dispatches and holds
//! HELP, EXIT and LOG. Commands that change the configuration change only
//! the draft they are given; the caller publishes it if they succeed.
//! Verb files never import each other; what several share lives in
//! `control::render` (JSON and text shapes) or on [`ControlState`].

mod auth;
mod backend;
mod config;
mod conn;
mod datacenter;
mod farm;
mod limit;
mod listen;
mod map;
mod maphostname;
mod session;
mod stat;
mod tls;
mod trace;
mod vhost;

use super::grammar::{Command, LogTarget, ParseError};
use super::{ControlState, Reply};
use crate::config::Config;
/// `HELP`: every verb, alphabetically, as the original lists them, plus this
/// project's additions.
pub const HELP: &str = "\
AUTH (SERVICE hostname port target | ALWAYS_ALLOW | PRINT) - Change authentication mechanism for connecting clients
BACKEND (ADD name datacenter host port [SEND-PROXY] [TLS] | ADD_DNS name datacenter address port [SEND-PROXY] [TLS] | DELETE name | DRAIN name | UNDRAIN name | PRINT) - Change backend servers
BACKEND HEALTH ([INTERVAL ms] [TIMEOUT ms] [RISE n] [FALL n] [PASSIVE_FALL n] [DOWN_HOLD ms] | OFF | PRINT) - Change how backends are health-checked
CONFIG DUMP - Print the current configuration as the control commands that recreate it
CONN Print the connected sessions
DATACENTER SET name | PRINT
EXIT Exit the program gracefully.
FARM (ADD name selector backend* | PARTITION name policy | DELETE name | PRINT) - Change farms
HELP Print this help text.
LIMIT (CONN_RATE_ALARM | CONN_RATE) (VHOST vhostName numberOfConnections | DEFAULT numberOfConnections) - Configure connection rate limits (normal or alarmonly) for incoming clients connections
LIMIT (DATA_RATE_ALARM | DATA_RATE) (DEFAULT | VHOST vhostName) BytesPerSecond - Configure data rate limits or alarms for incoming client data
LIMIT CONN_COUNT (VHOST vhostName numberOfConnections | DEFAULT numberOfConnections) - Configure the most concurrent connections of each vhost (LIMIT DISABLE CONN_COUNT to remove)
LIMIT DISABLE (CONN_RATE_ALARM | CONN_RATE | DATA_RATE_ALARM | DATA_RATE) (VHOST vhostName | DEFAULT) - Disable configured limit thresholds
LIMIT PRINT [vhostName] - Print the configured default limits or specific vhost limits
LISTEN START port | START_SECURE port | STOP [port]
LOG CONSOLE verbosity | FILE verbosity
MAP (BACKEND vhost backend | FARM vhost name | UNMAP vhost | DEFAULT farmName | REMOVE_DEFAULT | PRINT) - Change mappings of resources to servers
MAPHOSTNAME DNS - Set up mapping of IPs to hostnames
SESSION  id# (PAUSE|UNPAUSE|DISCONNECT_GRACEFUL|FORCE_DISCONNECT) - Control a particular session
SESSION id# LIMIT (DATA_RATE BytesPerSecond | DISABLE DATA_RATE) - Limit the data rate of a particular session
STAT (STOP SEND | SEND <host> <port> | (LISTEN (json|human) (overall|vhost=foo|backend=bar|source=baz|all|process|bufferpool)) - Output statistics
STAT (DISABLE|ENABLE) per-source - Enable/Disable internal collection of per-source statistics. Applies to all send/listeners
TLS (INGRESS | EGRESS) (KEY_FILE file | CERT_CHAIN_FILE file | RSA_KEY_FILE file | TMP_DH_FILE file | CA_CERT_FILE file | VERIFY_MODE mode* | CIPHERS (PRINT | SET ciphersuite(:ciphersuite)*))
TRACE (VHOST vhost | SOURCE ip | SESSION id# | OFF | PRINT) - Log each AMQP method of matching sessions at INFO (rate-bounded)
UPGRADE (HANDOFF | RELEASE) - Sent by a new amqpprox started with --takeover: hand over the listening sockets and configuration, then stop accepting and drain
VHOST PAUSE vhost | UNPAUSE vhost | PRINT | BACKEND_DISCONNECT vhost | FORCE_DISCONNECT vhost
";

/// Runs one parsed command.
pub fn dispatch(state: &mut ControlState, draft: &mut Config, command: Command) -> Reply {
    let mut reply = match command {
        Command::Help => Reply::ok(HELP),
        Command::Exit => Reply {
            exit: true,
            ..Reply::ok("Exiting.\n")
        },
        Command::Auth(c) => auth::run(draft, c),
        Command::Backend(c) => backend::run(draft, c, &state.shared.health),
        Command::ConfigDump { json } => config::run(draft, json),
        Command::Conn { json } => conn::run(state, json),
        Command::Datacenter(c) => datacenter::run(draft, c),
        Command::Farm(c) => farm::run(draft, c),
        Command::Limit(c) => limit::run(state, draft, c),
        Command::Listen(c) => listen::run(state, draft, c),
        Command::Log { target, level } => log_verbosity(target, level),
        Command::Map(c) => map::run(draft, c),
        Command::MapHostnameDns => maphostname::run(),
        Command::Session { id, action } => session::run(state, id, action),
        Command::Stat(c) => stat::run(state, c),
        Command::Tls { side, setting } => tls::run(state, draft, side, setting),
        Command::Trace(c) => trace::run(state, c),
        // Served by the control server itself, which owns the connection
        // the sockets travel on; anywhere else (a --config file, say) it
        // cannot run.
        Command::Upgrade(step) => Reply::error(format!(
            "{} is sent over the control socket by a new amqpprox started with --takeover.",
            Command::Upgrade(step)
        )),
        Command::Vhost(c) => vhost::run(state, draft, c),
    };
    finish(&mut reply);
    reply
}

/// The reply to a line the grammar refused.
pub fn refuse(state: &ControlState, error: ParseError) -> Reply {
    let mut reply = match error {
        // The original names a bad sub-command only for a session that
        // exists.
        ParseError::SessionSubcommand { id, .. } if !state.session_exists(id) => {
            Reply::error("Session not found.\n")
        }
        error => Reply::error(error.to_string()),
    };
    finish(&mut reply);
    reply
}

/// Every non-empty reply ends with a newline.
fn finish(reply: &mut Reply) {
    if !reply.text.is_empty() && !reply.text.ends_with('\n') {
        reply.text.push('\n');
    }
}

/// `LOG CONSOLE n` / `LOG FILE n`.
fn log_verbosity(target: LogTarget, level: u8) -> Reply {
    let Some(control) = crate::logging::control() else {
        return Reply::error("Logging is not running.\n");
    };
    match target {
        LogTarget::Console => control.set_console(level),
        LogTarget::File => control.set_file(level),
    }
    Reply::empty()
}

/// Parses `line` and runs it on `config` (for the configuration verbs'
/// unit tests, which need no shard).
#[cfg(test)]
fn run_line(config: &mut Config, line: &str) -> Reply {
    let command = match crate::control::grammar::parse(line) {
        Ok(c) => c,
        Err(e) => return Reply::error(e.to_string() + "\n"),
    };
    let mut reply = match command {
        Command::Backend(c) => backend::run(
            config,
            c,
            &crate::health::HealthRegistry::new(Default::default()),
        ),
        Command::Datacenter(c) => datacenter::run(config, c),
        Command::Farm(c) => farm::run(config, c),
        Command::Map(c) => map::run(config, c),
        Command::ConfigDump { json } => config::run(config, json),
        other => panic!("not a configuration command: {other}"),
    };
    finish(&mut reply);
    reply
}
