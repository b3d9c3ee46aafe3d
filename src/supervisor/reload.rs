//! SIGHUP re-applies the start-up configuration (`--config FILE`, then the
//! simple-mode options) to the running proxy (docs/deployment.md#reloading).
//! It owns three steps: building the target [`Config`] by running the file
//! against an empty configuration with no shards ([`target`]), listing the
//! commands that turn the current configuration into it ([`plan`], pure),
//! and running them on the live control state ([`apply`]).
//!
//! It never changes anything when the file cannot be read or one of its
//! lines fails: the target is built completely before the live state is
//! touched. It never recreates what did not change, so an unchanged farm
//! keeps its round-robin position and an unchanged listener its sockets.
//! Lines that are not configuration (`LOG`, `STAT`, `TRACE`, `SESSION`,
//! `VHOST FORCE_DISCONNECT`, ...) did their work at start and are not run
//! again: a reload converges on a state, it does not replay actions.

use crate::config::{Config, ConfigSnapshot, Listener};
use crate::control::grammar::{
    self, BackendCommand, Command, DatacenterCommand, FarmCommand, ListenCommand, MapCommand,
    StatCommand, TraceCommand, VhostAction, VhostCommand,
};
use crate::control::render::{backend_command, farm_commands};
use crate::control::{commands, ControlState};
use crate::shard::{ListenerKind, Shared};
use crate::tls::{NotReady, Side};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Why the file was not applied; the running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot read the config file '{file}': {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{origin}:{line}: '{text}': {reason}")]
    Invalid {
        /// The file's path, or `simple mode` for the command-line options.
        origin: String,
        line: usize,
        text: String,
        reason: String,
    },
}

/// What a control line is to a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Part of [`Config`]: reconciled.
    Configuration,
    /// Answers a question and changes nothing.
    Query,
    /// Acts once (on sessions, logging, statistics): not run again.
    Action,
}

/// Exhaustive on purpose: a new verb must be classified here before it
/// compiles, so a reload never silently ignores new configuration.
fn role(command: &Command) -> Role {
    match command {
        Command::Backend(BackendCommand::Print { .. })
        | Command::Datacenter(DatacenterCommand::Print { .. })
        | Command::Farm(FarmCommand::Print { .. })
        | Command::Map(MapCommand::Print { .. })
        | Command::Vhost(VhostCommand::Print)
        | Command::Trace(TraceCommand::Print)
        | Command::Tls {
            setting: grammar::TlsCommand::CiphersPrint,
            ..
        }
        | Command::ConfigDump { .. }
        | Command::Conn { .. }
        | Command::Help => Role::Query,
        Command::Backend(_)
        | Command::Datacenter(_)
        | Command::Farm(_)
        | Command::Map(_)
        | Command::Listen(_)
        | Command::Tls { .. }
        | Command::Vhost(VhostCommand::Act {
            action: VhostAction::Pause | VhostAction::Unpause,
            ..
        }) => Role::Configuration,
        Command::Vhost(VhostCommand::Act { .. })
        | Command::Exit
        | Command::Log { .. }
        | Command::MapHostnameDns
        | Command::Session { .. }
        | Command::Stat(
            StatCommand::Listen { .. }
            | StatCommand::Send { .. }
            | StatCommand::StopSend
            | StatCommand::PerSource(_),
        )
        | Command::Trace(_)
        | Command::Upgrade(_) => Role::Action,
    }
}

/// The configuration the start-up recipe builds now: `file`'s lines (blank
/// lines and `#` comments skipped) and then `simple` (the simple-mode
/// commands), run against an empty configuration. The verbs run for real
/// (hosts resolve, TLS files are read) on a control state of their own with
/// no shards; listeners are only recorded, since the live proxy already
/// holds the ports the file names. Also returns the lines that are not
/// configuration, which the caller logs as not run again.
pub fn target(file: &Path, simple: &[String]) -> Result<(Config, Vec<String>), ReloadError> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|error| ReloadError::Read {
        file: name.clone(),
        error,
    })?;
    let mut scratch = ControlState::new(
        Arc::new(Shared::new(
            ConfigSnapshot::new(Config::default()),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )),
        Vec::new(),
    );
    let mut skipped = Vec::new();
    let lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (name.as_str(), i + 1, l.trim()))
        .chain(
            simple
                .iter()
                .enumerate()
                .map(|(i, l)| ("simple mode", i + 1, l.trim())),
        );
    for (origin, line, text) in lines {
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let invalid = |reason: String| ReloadError::Invalid {
            origin: origin.to_string(),
            line,
            text: text.to_string(),
            reason,
        };
        let command = grammar::parse(text).map_err(|e| invalid(e.to_string()))?;
        match role(&command) {
            Role::Query => {}
            Role::Action => skipped.push(text.to_string()),
            Role::Configuration => {
                let mut draft = scratch.config.clone();
                let reply = match command {
                    Command::Listen(listen) => record_listener(&scratch, &mut draft, listen),
                    other => commands::dispatch(&mut scratch, &mut draft, other),
                };
                if reply.error {
                    return Err(invalid(reply.text.trim_end().to_string()));
                }
                scratch.publish(&draft);
            }
        }
    }
    Ok((scratch.config, skipped))
}

/// `LISTEN` on the scratch state: recorded as `LISTEN` records it, with the
/// one check that does not need the port (a secure listener needs TLS
/// INGRESS ready). Whether the port can be opened is known only when the
/// live proxy opens it.
fn record_listener(
    scratch: &ControlState,
    draft: &mut Config,
    listen: ListenCommand,
) -> crate::control::Reply {
    use crate::control::Reply;
    match listen {
        ListenCommand::Start { addr, kind } => {
            if kind.tls && scratch.shared.tls.load().ingress.is_none() {
                return Reply::error(format!(
                    "Cannot listen securely on port {}: TLS INGRESS is not ready ({}).",
                    addr.port(),
                    crate::tls::build_reason(&draft.tls.ingress)
                ));
            }
            // As LISTEN does: a second START of a port keeps the first.
            draft.listeners.entry(addr.port()).or_insert(Listener {
                addr,
                tls: kind.tls,
                proxy: kind.proxy,
            });
        }
        ListenCommand::Stop { port: Some(port) } => {
            draft.listeners.remove(&port);
        }
        ListenCommand::Stop { port: None } => draft.listeners.clear(),
    }
    Reply::empty()
}

/// One step of a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A control command, run as an operator's would be.
    Run(Command),
    /// Put the target's TLS settings (their files read again) in force.
    Tls,
}

/// The steps that turn `current` into `target`: first what goes away
/// (listeners, pauses, mappings, the default farm, farms, backends,
/// drains), then
/// what comes or changes, in the order `CONFIG DUMP` uses so routing and
/// TLS are in place before a new listener accepts. Something that changed
/// is removed and added again (so the sessions of a changed backend move,
/// as on `BACKEND DELETE`), but a farm that stays is replaced in place by
/// `FARM ADD`, which overwrites, so only sessions whose backend left it
/// move; a farm is also replaced when one of its members changed, since
/// its partitions depend on them. Each command is published on its own, so
/// the order is chosen such that no intermediate state moves a session the
/// final one would keep.
pub fn plan(current: &Config, target: &Config) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut run = |c: Command| steps.push(Step::Run(c));

    let listener_changed =
        |port: &u16, l: &Listener| target.listeners.get(port).is_none_or(|t| t != l);
    for (port, _) in current
        .listeners
        .iter()
        .filter(|(p, l)| listener_changed(p, l))
    {
        run(Command::Listen(ListenCommand::Stop { port: Some(*port) }));
    }
    for vhost in current.paused_vhosts.difference(&target.paused_vhosts) {
        run(vhost_act(vhost, VhostAction::Unpause));
    }
    for vhost in current.mappings.keys() {
        if !target.mappings.contains_key(vhost) {
            run(Command::Map(MapCommand::Unmap {
                vhost: vhost.clone(),
            }));
        }
    }
    if current.default_farm.is_some() && target.default_farm.is_none() {
        run(Command::Map(MapCommand::RemoveDefault));
    }
    let backend_changed: BTreeSet<&String> = current
        .backends
        .keys()
        .chain(target.backends.keys())
        .filter(|name| current.backends.get(*name) != target.backends.get(*name))
        .collect();
    let farm_changed = |name: &String| {
        let (now, then) = (current.farms.get(name), target.farms.get(name));
        now != then
            || now
                .into_iter()
                .flat_map(|f| f.members.iter())
                .any(|m| backend_changed.contains(m))
    };
    // A farm that stays is replaced by its `FARM ADD` below, never deleted
    // first: every session it routed would be moved off in between.
    for name in current.farms.keys() {
        if !target.farms.contains_key(name) {
            run(Command::Farm(FarmCommand::Delete { name: name.clone() }));
        }
    }
    for name in current
        .backends
        .keys()
        .filter(|n| backend_changed.contains(n))
    {
        run(Command::Backend(BackendCommand::Delete {
            name: name.clone(),
        }));
    }
    // A deleted backend is no longer drained; one that stays is undrained.
    for name in current.drained.difference(&target.drained) {
        if current.backends.contains_key(name) && !backend_changed.contains(name) {
            run(Command::Backend(BackendCommand::Undrain {
                name: name.clone(),
            }));
        }
    }

    if current.datacenter != target.datacenter {
        run(Command::Datacenter(DatacenterCommand::Set {
            name: target.datacenter.clone(),
        }));
    }
    for (name, backend) in &target.backends {
        if backend_changed.contains(name) {
            run(backend_command(backend));
        }
    }
    // Drained again after a re-add, or newly drained.
    for name in &target.drained {
        if !current.drained.contains(name) || backend_changed.contains(name) {
            run(Command::Backend(BackendCommand::Drain {
                name: name.clone(),
            }));
        }
    }
    for (name, farm) in &target.farms {
        if !current.farms.contains_key(name) || farm_changed(name) {
            // A farm none of whose members exists cannot be added; the
            // file that built it deleted its backends after adding it.
            for command in farm_commands(target, farm).unwrap_or_default() {
                run(command);
            }
        }
    }
    for (vhost, mapping) in &target.mappings {
        if current.mappings.get(vhost) != Some(mapping) {
            run(Command::Map(match mapping {
                crate::config::Mapping::Farm(farm) => MapCommand::Farm {
                    vhost: vhost.clone(),
                    farm: farm.clone(),
                },
                crate::config::Mapping::Backend(backend) => MapCommand::Backend {
                    vhost: vhost.clone(),
                    backend: backend.clone(),
                },
            }));
        }
    }
    if let Some(farm) = &target.default_farm {
        if current.default_farm.as_ref() != Some(farm) {
            run(Command::Map(MapCommand::Default { farm: farm.clone() }));
        }
    }
    steps.push(Step::Tls);
    let mut run = |c: Command| steps.push(Step::Run(c));
    for vhost in target.paused_vhosts.difference(&current.paused_vhosts) {
        run(vhost_act(vhost, VhostAction::Pause));
    }
    for (port, listener) in &target.listeners {
        if current.listeners.get(port) != Some(listener) {
            run(Command::Listen(ListenCommand::Start {
                addr: listener.addr,
                kind: ListenerKind {
                    tls: listener.tls,
                    proxy: listener.proxy,
                },
            }));
        }
    }
    steps
}

fn vhost_act(vhost: &str, action: VhostAction) -> Command {
    Command::Vhost(VhostCommand::Act {
        vhost: vhost.to_string(),
        action,
    })
}

/// What [`apply`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Commands run, the TLS step not counted.
    pub changes: usize,
    /// Each command that failed (its line and reply); the steps after it
    /// still ran, so the running configuration is as close to the file as
    /// the proxy could make it.
    pub failures: Vec<(String, String)>,
}

/// Runs `steps` on the live state, as control commands (each logged like an
/// operator's), and puts `target`'s TLS settings in force at the TLS step.
pub fn apply(state: &mut ControlState, target: &Config, steps: Vec<Step>) -> Outcome {
    let mut outcome = Outcome::default();
    for step in steps {
        match step {
            Step::Run(command) => {
                let line = command.to_string();
                outcome.changes += 1;
                let reply = state.execute(&line);
                if reply.error {
                    outcome
                        .failures
                        .push((line, reply.text.trim_end().to_string()));
                }
            }
            Step::Tls => {
                let mut draft = state.config.clone();
                draft.tls = target.tls.clone();
                for side in [Side::Ingress, Side::Egress] {
                    match draft.tls.publish(side, &state.shared.tls) {
                        // Nothing (or not everything) configured on that
                        // side: whatever is in force stays.
                        Ok(()) | Err(NotReady::Incomplete(_)) => {}
                        Err(NotReady::Inconsistent(why)) => outcome.failures.push((
                            format!("TLS {}", side.name()),
                            format!("{why}; new connections keep the previous settings"),
                        )),
                    }
                }
                state.publish(&draft);
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration `lines` build (no file, no shards).
    fn built(lines: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("amqpprox.conf");
        std::fs::write(&file, lines).unwrap();
        target(&file, &[]).unwrap().0
    }

    fn lines(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Run(c) => c.to_string(),
                Step::Tls => "<tls>".to_string(),
            })
            .collect()
    }

    const BASE: &str = "BACKEND ADD b1 dc1 127.0.0.1 5672\n\
                        BACKEND ADD b2 dc1 127.0.0.1 5673\n\
                        FARM ADD f round-robin b1 b2\n\
                        MAP FARM v1 f\n\
                        MAP DEFAULT f\n\
                        VHOST PAUSE held\n";

    #[test]
    fn the_same_file_changes_nothing_but_tls() {
        let c = built(BASE);
        assert_eq!(lines(&plan(&c, &built(BASE))), ["<tls>"]);
    }

    #[test]
    fn an_empty_file_removes_everything() {
        let current = built(&format!(
            "{BASE}DATACENTER SET dc1\nBACKEND DRAIN b1\nLISTEN START 1\n"
        ));
        assert_eq!(
            lines(&plan(&current, &Config::default())),
            [
                "LISTEN STOP 1",
                "VHOST UNPAUSE held",
                "MAP UNMAP v1",
                "MAP REMOVE_DEFAULT",
                "FARM DELETE f",
                "BACKEND DELETE b1",
                "BACKEND DELETE b2",
                "DATACENTER SET",
                "<tls>",
            ]
        );
    }

    #[test]
    fn changes_are_removed_then_added_and_the_rest_is_kept() {
        let current = built(&format!("{BASE}BACKEND ADD b3 dc2 127.0.0.1 5674\nFARM ADD g round-robin b3\nLISTEN START 1\nLISTEN START 2\n"));
        let target = built(
            "BACKEND ADD b1 dc1 127.0.0.1 5672\n\
             BACKEND ADD b2 dc1 127.0.0.1 5699\n\
             BACKEND ADD b3 dc2 127.0.0.1 5674\n\
             FARM ADD f round-robin b1 b2\n\
             FARM ADD g round-robin b3\n\
             MAP BACKEND v1 b1\n\
             MAP FARM v2 g\n\
             MAP DEFAULT g\n\
             VHOST PAUSE other\n\
             LISTEN START 1 PROXY\n\
             LISTEN START 2\n",
        );
        assert_eq!(
            lines(&plan(&current, &target)),
            [
                // Port 1 changed kind, port 2 is kept open.
                "LISTEN STOP 1",
                "VHOST UNPAUSE held",
                // b2 changed, so the farm holding it is replaced; g is kept.
                "BACKEND DELETE b2",
                "BACKEND ADD b2 dc1 127.0.0.1 5699",
                "FARM ADD f round-robin b1 b2",
                "MAP BACKEND v1 b1",
                "MAP FARM v2 g",
                "MAP DEFAULT g",
                "<tls>",
                "VHOST PAUSE other",
                "LISTEN START 1 PROXY",
            ]
        );
    }

    #[test]
    fn drains_follow_the_file() {
        let current = built(&format!("{BASE}BACKEND DRAIN b1\nBACKEND DRAIN b2\n"));
        let target = built(
            "BACKEND ADD b1 dc1 127.0.0.1 5672\n\
             BACKEND ADD b2 dc1 127.0.0.1 5699\n\
             BACKEND ADD b3 dc1 127.0.0.1 5674\n\
             BACKEND DRAIN b2\n\
             BACKEND DRAIN b3\n",
        );
        assert_eq!(
            lines(&plan(&current, &target)),
            [
                "VHOST UNPAUSE held",
                "MAP UNMAP v1",
                "MAP REMOVE_DEFAULT",
                "FARM DELETE f",
                "BACKEND DELETE b2",
                // b1 stays, undrained; b2 is re-added, so drained again.
                "BACKEND UNDRAIN b1",
                "BACKEND ADD b2 dc1 127.0.0.1 5699",
                "BACKEND ADD b3 dc1 127.0.0.1 5674",
                "BACKEND DRAIN b2",
                "BACKEND DRAIN b3",
                "<tls>",
            ]
        );
    }

    #[test]
    fn applying_the_plan_reaches_the_target() {
        let shared = Arc::new(Shared::new(
            ConfigSnapshot::new(Config::default()),
            Duration::from_secs(1),
            Duration::from_secs(1),
        ));
        let mut state = ControlState::new(shared, Vec::new());
        for line in BASE.lines() {
            assert!(!state.execute(line).error, "{line}");
        }
        let target = built(
            "DATACENTER SET dc2\n\
             BACKEND ADD b1 dc2 127.0.0.1 5672\n\
             BACKEND ADD b4 dc2 127.0.0.1 5675\n\
             BACKEND DRAIN b4\n\
             FARM ADD f round-robin b1 b4\n\
             FARM PARTITION f datacenter-affinity\n\
             MAP FARM v3 f\n",
        );
        let steps = plan(&state.config, &target);
        let outcome = apply(&mut state, &target, steps);
        assert_eq!(outcome.failures, []);
        assert_eq!(state.config, target);
        assert_eq!(state.shared.config.load().config, target, "published");
        assert_eq!(lines(&plan(&state.config, &target)), ["<tls>"]);
    }

    #[test]
    fn a_failing_line_or_a_missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("amqpprox.conf");
        std::fs::write(
            &file,
            "BACKEND ADD b1 dc1 127.0.0.1 5672\n\nFARM ADD f round-robin b1 nope\n",
        )
        .unwrap();
        match target(&file, &[]) {
            Err(ReloadError::Invalid {
                line, text, reason, ..
            }) => {
                assert_eq!(line, 3);
                assert_eq!(text, "FARM ADD f round-robin b1 nope");
                assert!(reason.contains("Backend 'nope' not found"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&file, "BACKEND ADD b1 dc1 127.0.0.1 5672 TSL\n").unwrap();
        assert!(matches!(
            target(&file, &[]),
            Err(ReloadError::Invalid { line: 1, .. })
        ));
        std::fs::write(&file, "LISTEN START_SECURE 5671\n").unwrap();
        assert!(matches!(
            target(&file, &[]),
            Err(ReloadError::Invalid { .. })
        ));
        assert!(matches!(
            target(&dir.path().join("absent"), &[]),
            Err(ReloadError::Read { .. })
        ));
    }

    #[test]
    fn simple_mode_follows_the_file_and_actions_are_not_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("amqpprox.conf");
        std::fs::write(
            &file,
            "# comment\nLOG CONSOLE 2\nMAP FARM v1 default\nBACKEND PRINT\n",
        )
        .unwrap();
        let simple = [
            "BACKEND ADD_DNS default-backend none localhost 5672".to_string(),
            "FARM ADD default round-robin default-backend".to_string(),
            "MAP DEFAULT default".to_string(),
            "LISTEN START 1".to_string(),
        ];
        let (config, skipped) = target(&file, &simple).unwrap();
        assert_eq!(skipped, ["LOG CONSOLE 2"]);
        assert_eq!(config.default_farm.as_deref(), Some("default"));
        assert!(config.mappings.contains_key("v1"));
        assert!(config.listeners.contains_key(&1));
    }
}
