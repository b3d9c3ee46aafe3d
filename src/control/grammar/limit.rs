//! The grammar of `LIMIT`, `AUTH` and `SESSION id LIMIT`, and how each
//! prints back (see `docs/commands.md#auth-and-limit`). The original's
//! quirks are kept: its sub-commands are upper-cased except the kind after
//! `DISABLE`, the `VHOST`/`DEFAULT` part is read before the kind is
//! checked, and its error texts are the reply texts. Pure, like the rest of
//! the grammar.

use super::ParseError;
use crate::auth::{AuthService, AuthUsageError};
use crate::limits::render::{change_command, LimitUsageError};
use crate::limits::{LimitChange, LimitKind, LimitScope};
use std::fmt::{self, Display, Formatter};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitCommand {
    Change(LimitChange),
    /// `LIMIT PRINT [vhost]`.
    Print {
        vhost: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthCommand {
    Service(AuthService),
    AlwaysAllow,
    Print,
}

/// The upper-cased word at `i`, or "" when missing.
fn word(args: &[&str], i: usize) -> String {
    args.get(i)
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default()
}

fn limit_error(e: LimitUsageError) -> ParseError {
    ParseError::Limit(e)
}

/// `(VHOST name | DEFAULT)` at `i`: the scope, and where the rest starts.
fn scope(args: &[&str], i: usize, sub: &str) -> Result<(LimitScope, usize), ParseError> {
    let no_scope = || {
        limit_error(LimitUsageError::NoScope {
            sub: sub.to_string(),
        })
    };
    match word(args, i).as_str() {
        "DEFAULT" => Ok((LimitScope::Default, i + 1)),
        "VHOST" => {
            let vhost = args.get(i + 1).ok_or_else(no_scope)?;
            Ok((LimitScope::Vhost(vhost.to_string()), i + 2))
        }
        _ => Err(no_scope()),
    }
}

/// Fails on the first token at or after `from`.
fn end(args: &[&str], from: usize, command: &'static str) -> Result<(), ParseError> {
    match args.get(from) {
        None => Ok(()),
        Some(token) => Err(ParseError::UnexpectedArgument {
            command,
            token: token.to_string(),
        }),
    }
}

/// A limit's value at `i`: a connection count (`u32`) or a byte rate.
fn value(args: &[&str], i: usize, kind: LimitKind) -> Result<u64, ParseError> {
    let given = args.get(i);
    match kind {
        LimitKind::DataRate | LimitKind::DataRateAlarm => given
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(limit_error(LimitUsageError::InvalidBytesPerSecond)),
        _ => given
            .and_then(|v| v.parse::<u32>().ok())
            .map(u64::from)
            .ok_or(limit_error(LimitUsageError::InvalidConnectionCount)),
    }
}

pub(super) fn limit(args: &[&str]) -> Result<LimitCommand, ParseError> {
    let sub = word(args, 0);
    match sub.as_str() {
        "" => Err(limit_error(LimitUsageError::NoSubcommand)),
        "PRINT" => {
            end(args, 2, "LIMIT PRINT")?;
            Ok(LimitCommand::Print {
                vhost: args.get(1).map(|v| v.to_string()),
            })
        }
        "DISABLE" => {
            // Compared as given: the original does not upper-case it.
            let Some(kind) = args.get(1) else {
                return Err(limit_error(LimitUsageError::NoDisableSubcommand));
            };
            let (scope, next) = scope(args, 2, kind)?;
            let kind = LimitKind::from_keyword(kind)
                .ok_or(limit_error(LimitUsageError::InvalidSubcommand))?;
            end(args, next, "LIMIT DISABLE")?;
            Ok(LimitCommand::Change(LimitChange::Disable { kind, scope }))
        }
        _ => {
            let (scope, next) = scope(args, 1, &sub)?;
            let kind = LimitKind::from_keyword(&sub)
                .ok_or(limit_error(LimitUsageError::InvalidSubcommand))?;
            let value = value(args, next, kind)?;
            end(args, next + 1, "LIMIT")?;
            Ok(LimitCommand::Change(LimitChange::Set {
                kind,
                scope,
                value,
            }))
        }
    }
}

pub(super) fn auth(args: &[&str]) -> Result<AuthCommand, ParseError> {
    let error = ParseError::Auth;
    match word(args, 0).as_str() {
        "" => Err(error(AuthUsageError::NoSubcommand)),
        "SERVICE" => {
            let Some(host) = args.get(1) else {
                return Err(error(AuthUsageError::NoHostname));
            };
            let port = match args.get(2).map(|p| p.parse::<u16>()) {
                Some(Ok(p)) if p != 0 => p,
                _ => return Err(error(AuthUsageError::InvalidPort)),
            };
            let Some(target) = args.get(3) else {
                return Err(error(AuthUsageError::NoTarget));
            };
            end(args, 4, "AUTH SERVICE")?;
            Ok(AuthCommand::Service(AuthService {
                host: host.to_string(),
                port,
                target: target.to_string(),
            }))
        }
        "ALWAYS_ALLOW" => {
            end(args, 1, "AUTH ALWAYS_ALLOW")?;
            Ok(AuthCommand::AlwaysAllow)
        }
        "PRINT" => {
            end(args, 1, "AUTH PRINT")?;
            Ok(AuthCommand::Print)
        }
        _ => Err(error(AuthUsageError::UnknownSubcommand)),
    }
}

/// `SESSION id LIMIT (DATA_RATE bytesPerSecond | DISABLE DATA_RATE)` from
/// the word after `LIMIT`: the session's own rate, or none.
pub(super) fn session_limit(args: &[&str]) -> Result<Option<u64>, ParseError> {
    match word(args, 0).as_str() {
        "DATA_RATE" => {
            let rate = value(args, 1, LimitKind::DataRate)?;
            end(args, 2, "SESSION LIMIT")?;
            Ok(Some(rate))
        }
        "DISABLE" if word(args, 1) == "DATA_RATE" => {
            end(args, 2, "SESSION LIMIT DISABLE")?;
            Ok(None)
        }
        _ => Err(ParseError::SessionLimitUsage),
    }
}

impl Display for LimitCommand {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            LimitCommand::Change(change) => f.write_str(&change_command(change)),
            LimitCommand::Print { vhost: None } => f.write_str("LIMIT PRINT"),
            LimitCommand::Print { vhost: Some(v) } => write!(f, "LIMIT PRINT {v}"),
        }
    }
}

impl Display for AuthCommand {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            AuthCommand::Service(s) => write!(f, "AUTH SERVICE {} {} {}", s.host, s.port, s.target),
            AuthCommand::AlwaysAllow => f.write_str("AUTH ALWAYS_ALLOW"),
            AuthCommand::Print => f.write_str("AUTH PRINT"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Command, SessionVerb};
    use super::*;

    fn change(line: &str) -> LimitChange {
        match parse(line) {
            Ok(Command::Limit(LimitCommand::Change(c))) => c,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn error(line: &str) -> String {
        parse(line).expect_err(line).to_string()
    }

    #[test]
    fn limit_lines_parse_and_print_back() {
        let vhost = |v: &str| LimitScope::Vhost(v.into());
        assert_eq!(
            change("LIMIT conn_rate VHOST orders 5"),
            LimitChange::Set {
                kind: LimitKind::ConnRate,
                scope: vhost("orders"),
                value: 5
            }
        );
        assert_eq!(
            change("LIMIT DATA_RATE default 18446744073709551615"),
            LimitChange::Set {
                kind: LimitKind::DataRate,
                scope: LimitScope::Default,
                value: u64::MAX
            }
        );
        assert_eq!(
            change("LIMIT DISABLE CONN_COUNT vhost v"),
            LimitChange::Disable {
                kind: LimitKind::ConnCount,
                scope: vhost("v")
            }
        );
        for line in [
            "LIMIT CONN_RATE_ALARM DEFAULT 0",
            "LIMIT CONN_COUNT VHOST v 3",
            "LIMIT DISABLE DATA_RATE_ALARM DEFAULT",
            "LIMIT PRINT",
            "LIMIT PRINT orders",
            "AUTH SERVICE auth.local 8080 /auth?tier=dev",
            "AUTH ALWAYS_ALLOW",
            "AUTH PRINT",
            "SESSION 7 LIMIT DATA_RATE 1000",
            "SESSION 7 LIMIT DISABLE DATA_RATE",
        ] {
            let command = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(command.to_string(), line);
        }
        assert_eq!(
            parse("SESSION 7 limit data_rate 10"),
            Ok(Command::Session {
                id: 7,
                action: SessionVerb::Limit(Some(10))
            })
        );
    }

    #[test]
    fn limit_errors_are_the_originals() {
        let cases = [
            ("LIMIT", "No subcommand provided for LIMIT command.\n"),
            (
                "LIMIT DISABLE",
                "No subcommand provided for LIMIT DISABLE command.\n",
            ),
            // The kind after DISABLE is not upper-cased.
            (
                "LIMIT DISABLE conn_rate DEFAULT",
                "Invalid subcommand provided for LIMIT command.\n",
            ),
            (
                "LIMIT DISABLE CONN_RATE",
                "Failed to read (VHOST vhostName | DEFAULT) for CONN_RATE",
            ),
            (
                "LIMIT CONN_RATE VHOST",
                "Failed to read (VHOST vhostName | DEFAULT) for CONN_RATE",
            ),
            (
                "LIMIT FOO BAR",
                "Failed to read (VHOST vhostName | DEFAULT) for FOO",
            ),
            (
                "LIMIT FOO DEFAULT 1",
                "Invalid subcommand provided for LIMIT command.\n",
            ),
            (
                "LIMIT CONN_RATE DEFAULT",
                "Invalid numberOfConnections provided.\n",
            ),
            (
                "LIMIT CONN_COUNT VHOST v 4294967296",
                "Invalid numberOfConnections provided.\n",
            ),
            ("LIMIT DATA_RATE VHOST v", "Failed to read bytesPerSecond"),
            (
                "LIMIT DATA_RATE DEFAULT -1",
                "Failed to read bytesPerSecond",
            ),
            (
                "LIMIT CONN_RATE DEFAULT 1 2",
                "Unexpected argument '2' after LIMIT.",
            ),
            ("AUTH", "No subcommand provided.\n"),
            ("AUTH SERVICE", "No hostname specified.\n"),
            ("AUTH SERVICE h", "Invalid port provided.\n"),
            ("AUTH SERVICE h 0 /t", "Invalid port provided.\n"),
            ("AUTH SERVICE h 65536 /t", "Invalid port provided.\n"),
            ("AUTH SERVICE h 80", "No http target specified.\n"),
            ("AUTH NOPE", "Unknown subcommand.\n"),
            (
                "SESSION 1 LIMIT",
                "Usage: SESSION id LIMIT (DATA_RATE bytesPerSecond | DISABLE DATA_RATE)",
            ),
            (
                "SESSION 1 LIMIT DATA_RATE x",
                "Failed to read bytesPerSecond",
            ),
        ];
        for (line, text) in cases {
            assert_eq!(error(line), text, "{line}");
        }
    }
}
