//! Control verbs: one file per verb, each a function from the tokens of a
//! line to a [`Reply`], with the original's grammar and texts
//! (behaviour.md §2). This file dispatches by verb and holds HELP, EXIT and
//! LOG. Commands mutate only the draft configuration they are given; the
//! caller decides whether it is published.

mod backend;
mod config;
mod conn;
mod datacenter;
mod farm;
mod listen;
mod map;
mod maphostname;
mod session;
mod stat;
mod tls;
mod trace;
mod vhost;

use super::{ControlState, Reply};
use crate::config::Config;

/// `HELP`: every verb, alphabetically, as the original lists them, plus this
/// project's additions.
pub const HELP: &str = "\
AUTH (SERVICE hostname port target | ALWAYS_ALLOW | PRINT) - Change authentication mechanism for connecting clients
BACKEND (ADD name datacenter host port [SEND-PROXY] [TLS] | ADD_DNS name datacenter address port [SEND-PROXY] [TLS] | DELETE name | PRINT) - Change backend servers
CONFIG DUMP - Print the current configuration as the control commands that recreate it
CONN Print the connected sessions
DATACENTER SET name | PRINT
EXIT Exit the program gracefully.
FARM (ADD name selector backend* | PARTITION name policy | DELETE name | PRINT) - Change farms
HELP Print this help text.
LIMIT (CONN_RATE_ALARM | CONN_RATE) (VHOST vhostName numberOfConnections | DEFAULT numberOfConnections) - Configure connection rate limits (normal or alarmonly) for incoming clients connections
LIMIT (DATA_RATE_ALARM | DATA_RATE) (DEFAULT | VHOST vhostName) BytesPerSecond - Configure data rate limits or alarms for incoming client data
LIMIT DISABLE (CONN_RATE_ALARM | CONN_RATE | DATA_RATE_ALARM | DATA_RATE) (VHOST vhostName | DEFAULT) - Disable configured limit thresholds
LIMIT PRINT [vhostName] - Print the configured default limits or specific vhost limits
LISTEN START port | START_SECURE port | STOP [port]
LOG CONSOLE verbosity | FILE verbosity
MAP (BACKEND vhost backend | FARM vhost name | UNMAP vhost | DEFAULT farmName | REMOVE_DEFAULT | PRINT) - Change mappings of resources to servers
MAPHOSTNAME DNS - Set up mapping of IPs to hostnames
SESSION  id# (PAUSE|UNPAUSE|DISCONNECT_GRACEFUL|FORCE_DISCONNECT) - Control a particular session
STAT (STOP SEND | SEND <host> <port> | (LISTEN (json|human) (overall|vhost=foo|backend=bar|source=baz|all|process|bufferpool)) - Output statistics
STAT (DISABLE|ENABLE) per-source - Enable/Disable internal collection of per-source statistics. Applies to all send/listeners
TLS (INGRESS | EGRESS) (KEY_FILE file | CERT_CHAIN_FILE file | RSA_KEY_FILE file | TMP_DH_FILE file | CA_CERT_FILE file | VERIFY_MODE mode* | CIPHERS (PRINT | SET ciphersuite(:ciphersuite)*))
TRACE (VHOST vhost | SOURCE ip | SESSION id# | OFF | PRINT) - Log each AMQP method of matching sessions at INFO (rate-bounded)
VHOST PAUSE vhost | UNPAUSE vhost | PRINT | BACKEND_DISCONNECT vhost | FORCE_DISCONNECT vhost
";

/// Runs `verb` with the rest of the line (which keeps its leading space).
pub fn dispatch(state: &mut ControlState, draft: &mut Config, verb: &str, rest: &str) -> Reply {
    let args: Vec<&str> = rest.split_whitespace().collect();
    let mut reply = match verb {
        "BACKEND" => backend::run(draft, &args),
        "CONFIG" => config::run(state, draft, &args),
        "CONN" => conn::run(state, &args),
        "DATACENTER" => datacenter::run(draft, &args),
        "EXIT" => Reply {
            exit: true,
            ..Reply::ok("Exiting.\n")
        },
        "FARM" => farm::run(draft, &args),
        "LISTEN" => listen::run(state, &args),
        "LOG" => log_verbosity(&args),
        "MAP" => map::run(draft, &args),
        "MAPHOSTNAME" => maphostname::run(&args),
        "SESSION" => session::run(state, &args),
        "TLS" => tls::run(state, &args),
        "STAT" => stat::run(state, &args),
        "TRACE" => trace::run(state, &args),
        "VHOST" => vhost::run(state, draft, &args),
        // Listed in HELP, built in later milestones: say so plainly rather
        // than answer with the help text.
        "AUTH" | "LIMIT" => Reply::error(format!(
            "{verb} is not available in this version of amqpprox yet.\n"
        )),
        // Unknown verbs, and HELP itself, answer with the help text.
        _ => Reply::ok(HELP),
    };
    // Every non-empty reply ends with a newline (DECISIONS Fix 16).
    if !reply.text.is_empty() && !reply.text.ends_with('\n') {
        reply.text.push('\n');
    }
    reply
}

/// Upper-cased sub-command, or "" when missing.
fn subcommand(args: &[&str]) -> String {
    args.first()
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default()
}

/// `LOG CONSOLE n` / `LOG FILE n`.
fn log_verbosity(args: &[&str]) -> Reply {
    let kind = subcommand(args);
    let Some(level) = args.get(1).and_then(|l| l.parse::<i64>().ok()) else {
        return Reply::error("Command or verbosity not found.\n");
    };
    // Negative silences everything but FATAL; above 5 behaves as 5.
    let level = level.clamp(0, 5) as u8;
    let Some(control) = crate::logging::control() else {
        return Reply::error("Logging is not running.\n");
    };
    match kind.as_str() {
        "CONSOLE" => control.set_console(level),
        "FILE" => control.set_file(level),
        _ => return Reply::error("Type to verb is not known.\n"),
    }
    Reply::empty()
}

/// Runs a config command's `run` on a line's whitespace-split tokens (for
/// the commands' unit tests).
#[cfg(test)]
fn run_tokens(run: fn(&mut Config, &[&str]) -> Reply, config: &mut Config, line: &str) -> Reply {
    let args: Vec<&str> = line.split_whitespace().collect();
    run(config, &args)
}
