//! `AUTH ...`, executed (see `docs/commands.md#auth`): the interceptor is
//! part of the configuration; sessions accepted after the draft is
//! published use it, sessions accepted before keep theirs.

use crate::auth::AuthSettings;
use crate::config::Config;
use crate::control::grammar::AuthCommand;
use crate::control::Reply;

pub fn run(draft: &mut Config, command: AuthCommand) -> Reply {
    match command {
        AuthCommand::Service(service) => draft.auth = AuthSettings::Service(service),
        AuthCommand::AlwaysAllow => draft.auth = AuthSettings::AlwaysAllow,
        AuthCommand::Print => {}
    }
    Reply::ok(draft.auth.describe())
}
