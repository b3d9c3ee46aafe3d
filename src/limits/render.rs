//! The texts of the `LIMIT` replies, byte for byte as the original writes
//! them (see `docs/commands.md#auth-and-limit`), plus this project's `CONN_COUNT`
//! lines in the same style.
//!
//! Pure functions of the settings; never reads live counters (the caller
//! says whether a vhost's limiter exists yet). Some original texts end
//! without a newline, or in a newline and a space: they are kept here as
//! they are, and the control dispatcher adds the final newline every
//! non-empty reply gets.

use std::fmt::Write;

use super::admission::rate_description;
use super::settings::{LimitChange, LimitKind, LimitScope, LimitSettings};

/// `LIMIT PRINT` without a vhost.
pub fn print_defaults(s: &LimitSettings) -> String {
    let mut out = String::new();
    if let Some(n) = s.conn_rate_alarm.default {
        let _ = writeln!(
            out,
            "Default limit for any vhost, allow average {n} connections per second in alarm only mode."
        );
    }
    if let Some(n) = s.conn_rate.default {
        let _ = writeln!(
            out,
            "Default limit for any vhost, allow average {n} connections per second."
        );
    }
    if let Some(n) = s.data_rate_alarm.default {
        let _ = writeln!(
            out,
            "Default data limit for any vhost, allow max {n} bytes per second in alarm only mode."
        );
    }
    if let Some(n) = s.data_rate.default {
        let _ = writeln!(
            out,
            "Default data limit for any vhost, allow max {n} bytes per second."
        );
    }
    if let Some(n) = s.conn_count.default {
        let _ = writeln!(
            out,
            "Default limit for any vhost, allow at most {n} concurrent connections."
        );
    }
    if out.is_empty() {
        out.push_str("No default limit configured for any vhost.\n");
    }
    out
}

/// `LIMIT PRINT vhost`. `seen` says whether the vhost's limiter exists
/// (a connection for it was admitted, or a limit names it): the original
/// words a connection-rate limit differently before that.
pub fn print_vhost(s: &LimitSettings, vhost: &str, seen: bool) -> String {
    let mut out = String::new();
    // A vhost's own limit always has its limiter; a default one only once
    // a connection materialised it.
    let materialised = |own: bool| own || seen;
    if let Some((n, _)) = s.conn_rate_alarm.effective(vhost) {
        if materialised(s.conn_rate_alarm.vhosts.contains_key(vhost)) {
            let _ = writeln!(
                out,
                "Alarm only limit, for vhost {vhost}, {}.",
                rate_description(n)
            );
        } else {
            let _ = writeln!(
                out,
                "Alarm only limit, for vhost {vhost}, allow average {n} number of connections per second."
            );
        }
    }
    if let Some((n, _)) = s.conn_rate.effective(vhost) {
        if materialised(s.conn_rate.vhosts.contains_key(vhost)) {
            let _ = writeln!(out, "For vhost {vhost}, {}.", rate_description(n));
        } else {
            let _ = writeln!(
                out,
                "For vhost {vhost}, allow average {n} number of connections per second."
            );
        }
    }
    if let Some((n, _)) = s.data_rate_alarm.effective(vhost) {
        let _ = writeln!(
            out,
            "Alarm only data limit, for vhost {vhost}, allow max {n} bytes per second."
        );
    }
    if let Some((n, _)) = s.data_rate.effective(vhost) {
        let _ = writeln!(out, "For vhost {vhost}, allow max {n} bytes per second.");
    }
    if let Some((n, _)) = s.conn_count.effective(vhost) {
        let _ = writeln!(
            out,
            "For vhost {vhost}, allow at most {n} concurrent connections."
        );
    }
    if out.is_empty() {
        let _ = writeln!(out, "No limit configured for vhost {vhost}.");
    }
    out
}

const ALARM_NOTE: &str = "The limiter will only log at warning level with AMQPPROX_CONNECTION_LIMIT as a substring and the relevant limit details, when the new incoming connection violates";

/// The reply to a `LIMIT` command that set or disabled a limit.
pub fn change_reply(change: &LimitChange) -> String {
    use LimitKind::*;
    use LimitScope::{Default, Vhost};
    match change {
        LimitChange::Set { kind, scope, value } => match (kind, scope) {
            (ConnRateAlarm, Default) => format!(
                "Default connection rate limit is set to {value} connections per second in alarm only mode.\n{ALARM_NOTE} the default limit for all vhosts.\n"
            ),
            (ConnRateAlarm, Vhost(v)) => format!(
                "For vhost {v}, Allow average {value} number of connections per 1 seconds in alarm only mode.\n{ALARM_NOTE} the specified limit.\n"
            ),
            (ConnRate, Default) => {
                format!("Default connection rate limit is set to {value} connections per second.\n")
            }
            (ConnRate, Vhost(v)) => {
                format!("For vhost {v}, Allow average {value} number of connections per 1 seconds\n")
            }
            (ConnCount, Default) => format!(
                "Default concurrent connection limit is set to {value} connections for each vhost.\n"
            ),
            (ConnCount, Vhost(v)) => {
                format!("For vhost {v}, allow at most {value} concurrent connections.\n")
            }
            (DataRate | DataRateAlarm, _) => String::new(),
        },
        LimitChange::Disable { kind, scope } => match (kind, scope) {
            (ConnRateAlarm, Default) => {
                "Successfully disabled default alarm only connection rate limit\n ".to_owned()
            }
            (ConnRateAlarm, Vhost(v)) => format!(
                "Successfully disabled specific alarm only connection rate limit for vhost {v}\n"
            ),
            (ConnRate, Default) => "Successfully disabled default connection rate limit\n ".to_owned(),
            (ConnRate, Vhost(v)) => {
                format!("Successfully disabled specific connection rate limit for vhost {v}\n")
            }
            (ConnCount, Default) => {
                "Successfully disabled default concurrent connection limit\n".to_owned()
            }
            (ConnCount, Vhost(v)) => format!(
                "Successfully disabled specific concurrent connection limit for vhost {v}\n"
            ),
            (DataRate | DataRateAlarm, _) => String::new(),
        },
    }
}

/// The `LIMIT` command line that makes `change` (what `CONFIG DUMP` prints).
pub fn change_command(change: &LimitChange) -> String {
    let scope = |scope: &LimitScope| match scope {
        LimitScope::Default => "DEFAULT".to_owned(),
        LimitScope::Vhost(v) => format!("VHOST {v}"),
    };
    match change {
        LimitChange::Set {
            kind,
            scope: s,
            value,
        } => {
            format!("LIMIT {} {} {value}", kind.keyword(), scope(s))
        }
        LimitChange::Disable { kind, scope: s } => {
            format!("LIMIT DISABLE {} {}", kind.keyword(), scope(s))
        }
    }
}

/// The `LIMIT` lines of `CONFIG DUMP`: applied in order to no limits, they
/// give `settings` back.
pub fn dump(settings: &LimitSettings) -> Vec<String> {
    settings.changes().iter().map(change_command).collect()
}

/// The original's error replies to a malformed `LIMIT` line, for the
/// control grammar to return. Display is the exact reply text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitUsageError {
    #[error("No subcommand provided for LIMIT command.\n")]
    NoSubcommand,
    #[error("No subcommand provided for LIMIT DISABLE command.\n")]
    NoDisableSubcommand,
    #[error("Invalid subcommand provided for LIMIT command.\n")]
    InvalidSubcommand,
    /// `sub` is the sub-command as given (e.g. `CONN_RATE`).
    #[error("Failed to read (VHOST vhostName | DEFAULT) for {sub}")]
    NoScope { sub: String },
    #[error("Invalid numberOfConnections provided.\n")]
    InvalidConnectionCount,
    #[error("Failed to read bytesPerSecond")]
    InvalidBytesPerSecond,
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
