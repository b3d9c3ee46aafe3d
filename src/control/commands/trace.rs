//! `TRACE`: log each AMQP method of the matching sessions (DECISIONS Add 8).
//!
//! ```text
//! TRACE VHOST vhost     sessions of this vhost, current and new
//! TRACE SOURCE ip       sessions from this client address
//! TRACE SESSION id      one session (as `CONN` numbers them)
//! TRACE OFF             stop tracing
//! TRACE PRINT           what is traced
//! ```
//!
//! One filter at a time: a new `TRACE` replaces the previous one. Lines go
//! to the log at INFO, at most `stats::trace::MAX_LINES_PER_SECOND` per
//! shard. This file only parses and hands the filter to the shards; it
//! never touches a session itself.

use crate::control::{ControlState, Reply};
use crate::shard::ShardCommand;
use crate::stats::trace::TraceFilter;

const USAGE: &str = "Usage: TRACE (VHOST vhost | SOURCE ip | SESSION id | OFF | PRINT)\n";

/// Parses the arguments into the filter to install (`Ok(None)` = off).
fn parse(args: &[&str]) -> Result<Option<TraceFilter>, String> {
    let kind = super::subcommand(args);
    if kind == "OFF" {
        return Ok(None);
    }
    let Some(value) = args.get(1) else {
        return Err(USAGE.into());
    };
    let filter = match kind.as_str() {
        "VHOST" => TraceFilter::Vhost(value.to_string()),
        "SOURCE" => TraceFilter::Source(
            value
                .parse()
                .map_err(|_| format!("Invalid IP address '{value}'.\n"))?,
        ),
        "SESSION" => TraceFilter::Session(
            value
                .parse()
                .map_err(|_| format!("Invalid session id '{value}'.\n"))?,
        ),
        _ => return Err(USAGE.into()),
    };
    Ok(Some(filter))
}

pub fn run(state: &ControlState, args: &[&str]) -> Reply {
    if super::subcommand(args) == "PRINT" {
        return match &*state.stats.trace.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(filter) => Reply::ok(format!("Tracing {filter}.\n")),
            None => Reply::ok("Tracing off.\n"),
        };
    }
    let filter = match parse(args) {
        Ok(f) => f,
        Err(text) => return Reply::error(text),
    };
    let answers = state.ask_shards(|reply| ShardCommand::Trace {
        filter: filter.clone(),
        reply,
    });
    if answers.iter().any(Option::is_none) {
        return Reply::error("A shard did not answer; tracing may be partly applied.\n");
    }
    let traced: usize = answers.into_iter().flatten().sum();
    let text = match &filter {
        Some(f) => format!("Tracing {f}: {traced} sessions now.\n"),
        None => "Tracing off.\n".to_string(),
    };
    *state.stats.trace.lock().unwrap_or_else(|p| p.into_inner()) = filter;
    Reply::ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        assert_eq!(parse(&["off"]), Ok(None));
        assert_eq!(
            parse(&["vhost", "orders"]),
            Ok(Some(TraceFilter::Vhost("orders".into())))
        );
        assert_eq!(
            parse(&["SOURCE", "10.0.0.1"]),
            Ok(Some(TraceFilter::Source("10.0.0.1".parse().unwrap())))
        );
        assert_eq!(
            parse(&["session", "12"]),
            Ok(Some(TraceFilter::Session(crate::stats::SessionId(12))))
        );
        assert!(parse(&["session", "x"]).is_err());
        assert!(parse(&["vhost"]).is_err());
        assert_eq!(parse(&[]), Err(USAGE.to_string()));
    }
}
