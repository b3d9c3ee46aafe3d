//! `TRACE VHOST vhost | SOURCE ip | SESSION id | OFF | PRINT`, executed:
//! log each AMQP method of the matching sessions (see
//! `docs/logging.md`).
//!
//! One filter at a time: a new `TRACE` replaces the previous one. Lines go
//! to the log at INFO, at most `stats::trace::MAX_LINES_PER_SECOND` per
//! shard. This file only hands the filter to the shards; it never touches
//! a session itself.

use crate::control::grammar::TraceCommand;
use crate::control::{ControlState, Reply};
use crate::shard::ShardCommand;
use crate::stats::trace::TraceFilter;
use crate::stats::SessionId;

pub fn run(state: &ControlState, command: TraceCommand) -> Reply {
    let filter = match command {
        TraceCommand::Print => {
            return match &*state.stats.trace.lock().unwrap_or_else(|p| p.into_inner()) {
                Some(filter) => Reply::ok(format!("Tracing {filter}.\n")),
                None => Reply::ok("Tracing off.\n"),
            }
        }
        TraceCommand::Off => None,
        TraceCommand::Vhost(vhost) => Some(TraceFilter::Vhost(vhost)),
        TraceCommand::Source(ip) => Some(TraceFilter::Source(ip)),
        TraceCommand::Session(id) => Some(TraceFilter::Session(SessionId(id))),
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
