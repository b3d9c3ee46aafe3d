//! `SESSION id PAUSE | UNPAUSE | DISCONNECT_GRACEFUL | FORCE_DISCONNECT`,
//! executed (see `docs/commands.md#session`; `UNPAUSE` is this proxy's
//! addition). The action reaches the session's shard through its inbox.

use crate::control::grammar::SessionVerb;
use crate::control::{ControlState, Reply};
use crate::session::control::Ending;
use crate::session::SessionId;
use crate::shard::{SessionAction, SessionTarget, ShardCommand};

pub fn run(state: &ControlState, id: u64, verb: SessionVerb) -> Reply {
    let action = match verb {
        SessionVerb::Pause => SessionAction::Pause,
        SessionVerb::Unpause => SessionAction::Unpause,
        SessionVerb::DisconnectGraceful => SessionAction::End(Ending::Graceful),
        SessionVerb::ForceDisconnect => SessionAction::End(Ending::Force),
        SessionVerb::Limit(rate) => SessionAction::DataRate(rate),
    };
    let acted: usize = state
        .ask_shards(|reply| ShardCommand::Act {
            target: SessionTarget::Id(SessionId(id)),
            action,
            reply,
        })
        .into_iter()
        .flatten()
        .sum();
    if acted == 0 {
        return Reply::error("Session not found.\n");
    }
    Reply::empty()
}
