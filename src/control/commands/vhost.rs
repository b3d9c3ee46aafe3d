//! `VHOST PAUSE | UNPAUSE | BACKEND_DISCONNECT | FORCE_DISCONNECT vhost`
//! and `VHOST PRINT`, executed (see `docs/sessions.md`).
//!
//! Pausing is recorded in the configuration (`Config::paused_vhosts`), so
//! sessions that reach `Open` later are held too, and sent to every shard
//! for the live sessions. Unpause resumes both sessions held at `Open` and
//! established ones (the original force-disconnects the latter).

use crate::config::Config;
use crate::control::grammar::{VhostAction, VhostCommand};
use crate::control::{ControlState, Reply};
use crate::session::control::Ending;
use crate::shard::{SessionAction, SessionTarget, ShardCommand};

pub fn run(state: &mut ControlState, draft: &mut Config, command: VhostCommand) -> Reply {
    let (vhost, action) = match command {
        VhostCommand::Print => return Reply::ok(print(state, draft)),
        VhostCommand::Act { vhost, action } => (vhost, action),
    };
    let action = match action {
        VhostAction::Pause => {
            draft.paused_vhosts.insert(vhost.clone());
            SessionAction::Pause
        }
        VhostAction::Unpause => {
            draft.paused_vhosts.remove(&vhost);
            SessionAction::Unpause
        }
        VhostAction::BackendDisconnect => SessionAction::End(Ending::BackendDisconnect),
        VhostAction::ForceDisconnect => SessionAction::End(Ending::Force),
    };
    state.touched_vhosts.insert(vhost.clone());
    // Publish the pause flag before touching live sessions, so a session
    // reaching Open meanwhile sees one or the other.
    state.publish(draft);
    let _ = state.ask_shards(|reply| ShardCommand::Act {
        target: SessionTarget::Vhost(vhost.clone()),
        action,
        reply,
    });
    Reply::empty()
}

fn print(state: &ControlState, config: &Config) -> String {
    let mut vhosts = state.touched_vhosts.clone();
    vhosts.extend(
        state
            .sessions()
            .into_iter()
            .map(|s| s.vhost)
            .filter(|v| !v.is_empty()),
    );
    vhosts
        .iter()
        .map(|v| {
            let status = if config.paused_vhosts.contains(v) {
                "PAUSED"
            } else {
                "UNPAUSED"
            };
            format!("{v} = {status}\n")
        })
        .collect()
}
