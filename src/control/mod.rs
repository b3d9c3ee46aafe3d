//! The control plane: the state the control thread owns, the grammar of
//! control lines, the verbs that run them, and the Unix-socket server
//! `amqpprox_ctl` talks to (see `docs/commands.md`).
//!
//! A line is parsed first (`grammar`, pure); a line that does not parse
//! changes nothing. Every command then runs against a draft copy of the
//! configuration; only a command that succeeds has its draft published to
//! the shards as one new immutable snapshot, so a failing command changes
//! nothing. Commands that touch live sessions or listeners go through the
//! shards' inboxes and wait for their replies. Runs on std threads, never
//! on a shard.

pub mod commands;
pub mod grammar;
pub mod render;
mod server;
pub mod upgrade;

pub use server::{serve, ControlEvent, ControlServer};

use crate::config::{Config, ConfigSnapshot};
use crate::shard::SessionView;
use crate::shard::{ShardCommand, ShardHandle, Shared};
use std::sync::Arc;
use std::time::Duration;

/// What a command answers: the reply text, whether it is an error (for
/// `amqpprox_ctl`'s exit code), whether the process should exit, and for a
/// streaming command (`STAT LISTEN`) the chunks that follow the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub error: bool,
    pub exit: bool,
    pub stream: Option<ReplyStream>,
}

/// Chunks written after a reply's text, in order, until the sender is
/// dropped or the control client goes away (`docs/commands.md#stat`).
#[derive(Debug, Clone)]
pub struct ReplyStream(pub flume::Receiver<String>);

impl PartialEq for ReplyStream {
    fn eq(&self, other: &Self) -> bool {
        self.0.same_channel(&other.0)
    }
}

impl Eq for ReplyStream {}

impl Reply {
    pub fn ok(text: impl Into<String>) -> Reply {
        Reply {
            text: text.into(),
            error: false,
            exit: false,
            stream: None,
        }
    }
    /// No text now; then every chunk `chunks` yields.
    pub fn stream(chunks: flume::Receiver<String>) -> Reply {
        Reply {
            stream: Some(ReplyStream(chunks)),
            ..Reply::empty()
        }
    }
    pub fn empty() -> Reply {
        Reply::ok(String::new())
    }
    pub fn error(text: impl Into<String>) -> Reply {
        Reply {
            text: text.into(),
            error: true,
            exit: false,
            stream: None,
        }
    }
}

/// Everything the control thread owns.
pub struct ControlState {
    /// Everything the operator set (`CONFIG DUMP` prints it).
    pub config: Config,
    pub shared: Arc<Shared>,
    pub shards: Vec<ShardHandle>,
    /// Vhosts an operator paused or unpaused, for `VHOST PRINT` (what it
    /// lists, not configuration).
    pub touched_vhosts: std::collections::BTreeSet<String>,
    /// Statistics listeners, publishers and switches (`STAT`, `TRACE`),
    /// shared with the stats thread the supervisor starts.
    pub stats: Arc<crate::stats::StatsHub>,
    /// As the old process of a hitless upgrade: handed over or released.
    pub upgrade: upgrade::UpgradeState,
    /// As the new process: the received sockets not yet adopted by a
    /// replayed `LISTEN START`.
    pub adoption: Option<upgrade::Adoption>,
}

/// How long the control thread waits for a shard to answer.
pub const SHARD_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

impl ControlState {
    pub fn new(shared: Arc<Shared>, shards: Vec<ShardHandle>) -> ControlState {
        ControlState {
            config: Config::default(),
            shared,
            shards,
            touched_vhosts: Default::default(),
            stats: Default::default(),
            upgrade: Default::default(),
            adoption: None,
        }
    }

    /// Sends a command to every shard and collects their replies in shard
    /// order. A shard that does not answer in time yields `None`.
    pub fn ask_shards<T>(&self, make: impl Fn(flume::Sender<T>) -> ShardCommand) -> Vec<Option<T>> {
        let receivers: Vec<_> = self
            .shards
            .iter()
            .map(|shard| {
                let (tx, rx) = flume::bounded(1);
                let _ = shard.inbox.send(make(tx));
                rx
            })
            .collect();
        receivers
            .into_iter()
            .map(|rx| rx.recv_timeout(SHARD_REPLY_TIMEOUT).ok())
            .collect()
    }

    /// Runs one control line. A command that changes the configuration
    /// works on a draft; the draft is published only if the command succeeds.
    pub fn execute(&mut self, line: &str) -> Reply {
        let line = line.trim_end_matches(['\r', '\n']);
        let reply = match grammar::parse(line) {
            Ok(command) if self.upgrade.handed_off() && command.changes_configuration() => {
                upgrade::refuse_change()
            }
            Ok(command) => {
                let mut draft = self.config.clone();
                let reply = commands::dispatch(self, &mut draft, command);
                if self.upgrade.handed_off() && draft != self.config {
                    // A change the grammar did not flag; the new process
                    // would never see it either.
                    return upgrade::refuse_change();
                }
                if !reply.error {
                    self.commit(draft);
                }
                reply
            }
            Err(error) => commands::refuse(self, error),
        };
        log::info!(
            "Control '{line}' Output (finish={}): {}",
            u8::from(reply.stream.is_none()),
            reply.text.trim_end()
        );
        reply
    }

    /// Every session of every shard, by id.
    pub fn sessions(&self) -> Vec<SessionView> {
        let mut all: Vec<SessionView> = self
            .ask_shards(|reply| ShardCommand::Sessions { reply })
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        all.sort_by_key(|s| s.id);
        all
    }

    /// Whether a session with this `CONN` id exists on any shard.
    pub fn session_exists(&self, id: u64) -> bool {
        self.sessions().iter().any(|s| s.id.0 == id)
    }

    /// Makes `draft` the configuration and publishes it to the shards.
    /// When routing changed, the shards then move the sessions it no longer
    /// places on their backend (`BACKEND DRAIN`, `DELETE`, `FARM DELETE`;
    /// `docs/routing.md#draining-a-backend`), before the command's reply
    /// goes out.
    fn commit(&mut self, draft: Config) {
        let routing_changed = routing_differs(&self.config, &draft);
        self.config = draft;
        self.shared
            .config
            .store(ConfigSnapshot::new(self.config.clone()));
        // The live limiters follow the settings (idempotent: only what
        // changed is touched), and new sessions take the auth setting.
        self.shared.limits.configure(self.config.limits.clone());
        if **self.shared.auth.load() != self.config.auth {
            self.shared.auth.store(Arc::new(self.config.auth.clone()));
        }
        // The registry follows every committed configuration: new backends
        // start unknown, changed ones start over, removed ones are gone.
        let health = &self.shared.health;
        if health.policy() != self.config.health {
            health.set_policy(self.config.health);
        }
        health.sync(
            self.config
                .backends
                .values()
                .map(crate::health::ProbeTarget::from),
        );
        if routing_changed {
            self.stats.set_backends(
                self.config
                    .backends
                    .keys()
                    .map(|name| crate::stats::BackendState {
                        name: name.clone(),
                        drained: self.config.drained.contains(name),
                    })
                    .collect(),
            );
            let moved: usize = self
                .ask_shards(|reply| ShardCommand::MoveMisplaced { reply })
                .into_iter()
                .flatten()
                .sum();
            if moved > 0 {
                log::info!("Asked {moved} sessions to move to another backend");
            }
        }
    }

    /// Publishes `draft` now, for a command that must have the shards see
    /// it before it acts on live sessions.
    pub fn publish(&mut self, draft: &Config) {
        self.commit(draft.clone());
    }

    /// Stops every shard's executor (the process is exiting).
    pub fn shutdown_shards(&self) {
        for shard in &self.shards {
            let _ = shard.inbox.send(ShardCommand::Shutdown);
        }
    }
}

/// Whether a change can move live sessions: what `routing::misplaced`
/// reads differs.
fn routing_differs(before: &Config, after: &Config) -> bool {
    before.backends != after.backends
        || before.farms != after.farms
        || before.drained != after.drained
        || before.mappings != after.mappings
        || before.default_farm != after.default_farm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigSnapshot;

    /// A control state with no shards: commands that ask shards get no
    /// answers, which is enough to check parsing, texts and drafts.
    fn state() -> ControlState {
        let shared = Arc::new(Shared::new(
            ConfigSnapshot::new(Config::default()),
            Duration::from_secs(1),
            Duration::from_secs(1),
        ));
        ControlState::new(shared, Vec::new())
    }

    #[test]
    fn a_refused_line_changes_nothing() {
        let mut s = state();
        assert!(!s.execute("BACKEND ADD b1 dc1 127.0.0.1 5672").error);
        let before = s.config.clone();
        for line in [
            "BACKEND ADD b2 dc1 127.0.0.1 5672 TSL",
            "BACKEND DELETE b1 b2",
            "MAP DEFAULT f extra",
            "VHOST PAUSE v extra",
            "DATACENTER SET a b",
        ] {
            let reply = s.execute(line);
            assert!(
                reply.error && reply.text.ends_with('\n'),
                "{line}: {reply:?}"
            );
        }
        assert_eq!(s.config, before);
        assert_eq!(
            s.shared.config.load().config,
            before,
            "the published snapshot is unchanged too"
        );
    }

    #[test]
    fn session_replies_keep_the_original_texts() {
        let mut s = state();
        for line in [
            "SESSION",
            "SESSION x PAUSE",
            "SESSION 1 PAUSE",
            "SESSION 1 NAP",
        ] {
            assert_eq!(
                s.execute(line),
                Reply::error("Session not found.\n"),
                "{line}"
            );
        }
    }

    #[test]
    fn pauses_and_listeners_are_configuration() {
        let mut s = state();
        assert_eq!(s.execute("VHOST PAUSE v1"), Reply::empty());
        assert_eq!(s.execute("VHOST PRINT").text, "v1 = PAUSED\n");
        assert!(s.shared.config.load().config.paused_vhosts.contains("v1"));
        assert_eq!(s.execute("VHOST UNPAUSE v1"), Reply::empty());
        assert_eq!(s.execute("VHOST PRINT").text, "v1 = UNPAUSED\n");
        assert!(s.config.paused_vhosts.is_empty());
        assert_eq!(
            s.execute("LISTEN STOP 56x2"),
            Reply::error("Invalid port provided.\n")
        );
        assert!(s.execute("EXIT").exit);
    }

    #[test]
    fn routing_changes_ask_the_shards_to_move_sessions_and_others_do_not() {
        let shared = Arc::new(Shared::new(
            ConfigSnapshot::new(Config::default()),
            Duration::from_secs(1),
            Duration::from_secs(1),
        ));
        let (inbox, commands) = flume::unbounded();
        // A stand-in shard: answers every move request and notes whether
        // the snapshot it sees then already has b1 drained, which shows
        // the change was published before the shards were asked.
        let seen = Arc::clone(&shared);
        let shard = std::thread::spawn(move || {
            let mut asked = Vec::new();
            for command in commands.iter() {
                if let ShardCommand::MoveMisplaced { reply } = command {
                    asked.push(seen.config.load().config.drained.contains("b1"));
                    let _ = reply.send(0);
                }
            }
            asked
        });
        let mut s = ControlState::new(shared, vec![crate::shard::ShardHandle { index: 0, inbox }]);
        for line in [
            "BACKEND ADD b1 dc1 127.0.0.1 5672",
            "BACKEND ADD b2 dc1 127.0.0.1 5673",
            "FARM ADD f round-robin b1 b2",
            "BACKEND DRAIN b1",
            "BACKEND DRAIN b1",
            "MAP DEFAULT f",
        ] {
            assert_eq!(s.execute(line), Reply::empty(), "{line}");
        }
        for line in ["VHOST PAUSE v", "DATACENTER SET dc1", "BACKEND PRINT"] {
            assert!(!s.execute(line).error, "{line}");
        }
        assert!(s.shared.config.load().config.drained.contains("b1"));
        assert_eq!(
            s.stats.backends(),
            [
                crate::stats::BackendState {
                    name: "b1".into(),
                    drained: true
                },
                crate::stats::BackendState {
                    name: "b2".into(),
                    drained: false
                }
            ]
        );
        drop(s);
        // Five lines changed routing; the repeated DRAIN and the others did not.
        assert_eq!(shard.join().unwrap(), [false, false, false, true, true]);
    }
}
