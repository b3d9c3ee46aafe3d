//! `VHOST PAUSE | UNPAUSE | BACKEND_DISCONNECT | FORCE_DISCONNECT vhost`
//! and `VHOST PRINT` (behaviour.md §2.17, §4.7).
//!
//! Pausing is recorded in the configuration snapshot, so sessions that
//! reach `Open` later are held too, and sent to every shard for the live
//! sessions. Unpause resumes both sessions held at `Open` and established
//! ones (the original force-disconnects the latter; DECISIONS Fix 8).

use super::subcommand;
use crate::config::Config;
use crate::control::{ControlState, Reply};
use crate::session::control::Ending;
use crate::shard::{SessionAction, SessionTarget, ShardCommand};

pub fn run(state: &mut ControlState, draft: &mut Config, args: &[&str]) -> Reply {
    let sub = subcommand(args);
    if sub == "PRINT" {
        return Reply::ok(print(state, draft));
    }
    let Some(vhost) = args.get(1).map(|v| v.to_string()) else {
        return Reply::error("Session not found.\n");
    };
    let action = match sub.as_str() {
        "PAUSE" => SessionAction::Pause,
        "UNPAUSE" => SessionAction::Unpause,
        "BACKEND_DISCONNECT" => SessionAction::End(Ending::BackendDisconnect),
        "FORCE_DISCONNECT" => SessionAction::End(Ending::Force),
        _ => return Reply::error("Subcommand not recognised.\n"),
    };
    match action {
        SessionAction::Pause => {
            draft.paused_vhosts.insert(vhost.clone());
        }
        SessionAction::Unpause => {
            draft.paused_vhosts.remove(&vhost);
        }
        SessionAction::End(_) => {}
    }
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
        super::conn::sessions(state)
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
