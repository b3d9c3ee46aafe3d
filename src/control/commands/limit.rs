//! `LIMIT ...`, executed (see `docs/commands.md#limit`): a change goes into
//! the draft configuration (so `CONFIG DUMP` and `--config` keep it) and at
//! once into the process-wide limiters every shard admits through; `PRINT`
//! reads them. The texts are `crate::limits::render`'s.

use crate::config::Config;
use crate::control::grammar::LimitCommand;
use crate::control::{ControlState, Reply};
use crate::limits::render::change_reply;

pub fn run(state: &ControlState, draft: &mut Config, command: LimitCommand) -> Reply {
    match command {
        LimitCommand::Change(change) => {
            if let Err(e) = draft.limits.apply(&change) {
                return Reply::error(e.to_string());
            }
            // Applied now rather than when the draft is published: setting
            // a connection rate restarts its window even when the value is
            // the one in force, as in the original. Publishing the draft
            // then changes nothing more.
            if let Err(e) = state.shared.limits.apply(&change) {
                return Reply::error(e.to_string());
            }
            Reply::ok(change_reply(&change))
        }
        LimitCommand::Print { vhost } => Reply::ok(state.shared.limits.print(vhost.as_deref())),
    }
}
