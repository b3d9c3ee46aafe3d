//! `SESSION id PAUSE | UNPAUSE | DISCONNECT_GRACEFUL | FORCE_DISCONNECT`
//! (behaviour.md §2.14, §4.7; `UNPAUSE` added by DECISIONS Fix 8). The
//! action reaches the session's shard through its inbox.

use super::subcommand;
use crate::control::{ControlState, Reply};
use crate::session::control::Ending;
use crate::session::SessionId;
use crate::shard::{SessionAction, SessionTarget, ShardCommand};

pub fn run(state: &ControlState, args: &[&str]) -> Reply {
    let Some(id) = args.first().and_then(|s| s.parse::<u64>().ok()) else {
        return Reply::error("Session not found.\n");
    };
    let action = match subcommand(&args[1..]).as_str() {
        "PAUSE" => SessionAction::Pause,
        "UNPAUSE" => SessionAction::Unpause,
        "DISCONNECT_GRACEFUL" => SessionAction::End(Ending::Graceful),
        "FORCE_DISCONNECT" => SessionAction::End(Ending::Force),
        _ => {
            // The id is checked first, as in the original.
            return if act(state, id, None) == 0 {
                Reply::error("Session not found.\n")
            } else {
                Reply::error("Session subcommand not found.\n")
            };
        }
    };
    if act(state, id, Some(action)) == 0 {
        return Reply::error("Session not found.\n");
    }
    Reply::empty()
}

/// Applies `action` (or just counts, for `None`) to session `id`.
fn act(state: &ControlState, id: u64, action: Option<SessionAction>) -> usize {
    match action {
        Some(action) => state
            .ask_shards(|reply| ShardCommand::Act {
                target: SessionTarget::Id(SessionId(id)),
                action,
                reply,
            })
            .into_iter()
            .flatten()
            .sum(),
        None => super::conn::sessions(state)
            .iter()
            .filter(|s| s.id == SessionId(id))
            .count(),
    }
}
