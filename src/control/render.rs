//! How the configuration is shown: the `PRINT json` documents, the
//! backend line of `BACKEND PRINT`, and `CONFIG DUMP`'s commands (see
//! `docs/commands.md`). A leaf: it reads a [`Config`] and imports no verb,
//! so every verb can use it without the verbs importing each other. It
//! never changes the configuration and never touches a shard.
//!
//! `CONFIG DUMP` prints, one command a line, in an order that replays:
//! `DATACENTER SET` (when set), `BACKEND ADD`/`ADD_DNS` (sorted by name),
//! `BACKEND DRAIN`s, per farm (sorted by name) `FARM ADD` then its `FARM PARTITION`s in the
//! order applied, the `MAP BACKEND`/`MAP FARM` lines (sorted by vhost),
//! `MAP DEFAULT`, the `TLS` settings, `VHOST PAUSE`s, and last the
//! `LISTEN`s, so that a replay serves clients only once routing and TLS are
//! in place. `--config FILE` applies such a file at start and builds the
//! same configuration again.
//!
//! `BACKEND HEALTH` (when not the default policy) follows the backends.
//!
//! What it cannot keep: a `BACKEND ADD` host is written as given, so a
//! replay resolves it again; a farm member deleted with `BACKEND DELETE` is
//! left out of `FARM ADD` (naming it would fail the replay), and a farm none
//! of whose members exist is written as a `#` comment only.

use crate::config::{Backend, Config, Farm, Mapping, PartitionPolicy, ProxyHeader};
use crate::control::grammar::{
    BackendCommand, Command, DatacenterCommand, FarmCommand, HealthCommand, HealthSettings,
    ListenCommand, MapCommand, NewBackend, VhostAction, VhostCommand,
};
use crate::health::{HealthPolicy, HealthRegistry, HealthSnapshot, HealthState};
use crate::routing::partitions;
use crate::shard::ListenerKind;
use serde::Serialize;

/// One JSON document on one line, newline-terminated.
pub fn to_json_line(doc: &impl Serialize) -> String {
    // Serializing these plain structs of strings cannot fail.
    let mut text = serde_json::to_string(doc).unwrap_or_else(|e| {
        log::error!("JSON output failed: {e}");
        "{}".to_string()
    });
    text.push('\n');
    text
}

/// The datacenter label, or `None` when unset (empty is the same as none).
pub fn datacenter(config: &Config) -> Option<&str> {
    Some(config.datacenter.as_str()).filter(|d| !d.is_empty())
}

/// The `BACKEND PRINT` line of one backend (also in the duplicate-name
/// error): `<name> (<dc>): <host> <ip>:<port>[ PROXY PROTOCOL V1 ENABLED |
/// PROXY PROTOCOL V2 ENABLED][ TLS][ STREAM-PORT=<port>]`.
pub fn describe(b: &Backend) -> String {
    let ip = b.address.map(|a| a.to_string()).unwrap_or_default();
    let mut line = format!(
        "{} ({}): {} {}:{}",
        b.name, b.datacenter, b.host, ip, b.port
    );
    match b.proxy_header {
        ProxyHeader::None => {}
        ProxyHeader::V1 => line.push_str(" PROXY PROTOCOL V1 ENABLED"),
        ProxyHeader::V2 => line.push_str(" PROXY PROTOCOL V2 ENABLED"),
    }
    if b.tls {
        line.push_str(" TLS");
    }
    if b.stream_port != crate::config::DEFAULT_STREAM_PORT {
        line.push_str(&format!(" STREAM-PORT={}", b.stream_port));
    }
    line
}

/// One backend in `BACKEND PRINT json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendJson<'a> {
    name: &'a str,
    datacenter: &'a str,
    host: &'a str,
    ip: Option<String>,
    port: u16,
    dns: bool,
    proxy_protocol: Option<&'static str>,
    tls: bool,
    stream_port: u16,
    /// `BACKEND DRAIN`: left out of routing, its sessions moved.
    drained: bool,
    /// Shown by `BACKEND PRINT json`, not by `CONFIG DUMP json` (state,
    /// not configuration).
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<HealthJson>,
}

/// A backend's health in JSON: its state, for how long, its consecutive
/// failures and its last error (`null` when none).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthJson {
    state: &'static str,
    /// How long it has been in this state; `null` while unknown.
    since_ms: Option<u64>,
    consecutive_failures: u32,
    last_error: Option<LastErrorJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastErrorJson {
    /// `probe` or `session`.
    by: String,
    ago_ms: u64,
    reason: String,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `name`'s health as JSON (unknown when the registry does not have it).
pub fn health_json(registry: &HealthRegistry, name: &str) -> HealthJson {
    let now = registry.now();
    let snapshot = registry
        .entry(name)
        .map(|e| e.health.snapshot())
        .unwrap_or(HealthSnapshot {
            counters: crate::health::Counters::INITIAL,
            last_error: None,
            since: now,
        });
    HealthJson {
        state: snapshot.counters.state.as_str(),
        since_ms: (snapshot.counters.state != HealthState::Unknown)
            .then(|| millis(now.saturating_sub(snapshot.since))),
        consecutive_failures: snapshot.counters.consecutive_failures,
        last_error: snapshot.last_error.map(|e| LastErrorJson {
            by: e.observer.to_string(),
            ago_ms: millis(now.saturating_sub(e.at)),
            reason: e.reason,
        }),
    }
}

/// The end of a `BACKEND PRINT` line: nothing while no check has seen the
/// backend, else ` HEALTH UP` or ` HEALTH DOWN`, then the last error if
/// any: ` (last error 12 s ago by probe: <reason>)`.
pub fn describe_health(registry: &HealthRegistry, name: &str) -> String {
    let Some(entry) = registry.entry(name) else {
        return String::new();
    };
    let snapshot = entry.health.snapshot();
    let state = match snapshot.counters.state {
        HealthState::Unknown => return String::new(),
        HealthState::Up => "UP",
        HealthState::Down => "DOWN",
    };
    let mut text = format!(" HEALTH {state}");
    if let Some(e) = snapshot.last_error {
        let ago = registry.now().saturating_sub(e.at).as_secs();
        text.push_str(&format!(
            " (last error {ago} s ago by {}: {})",
            e.observer, e.reason
        ));
    }
    text
}

/// The `BACKEND HEALTH` line that sets `policy` (every setting named).
pub fn health_command(policy: &HealthPolicy) -> Command {
    Command::Backend(BackendCommand::Health(HealthCommand::Set(HealthSettings {
        interval_ms: Some(policy.interval.map_or(0, millis)),
        timeout_ms: Some(millis(policy.timeout)),
        rise: Some(policy.rise),
        fall: Some(policy.fall),
        passive_fall: Some(policy.passive_fall),
        down_hold_ms: Some(millis(policy.down_hold)),
    })))
}

/// Every backend, sorted by name, in their JSON shape; with `health`,
/// each backend's health too.
pub fn backends_json<'a>(
    config: &'a Config,
    health: Option<&HealthRegistry>,
) -> Vec<BackendJson<'a>> {
    config
        .backends
        .values()
        .map(|b| BackendJson {
            name: &b.name,
            datacenter: &b.datacenter,
            host: &b.host,
            ip: b.address.map(|a| a.to_string()),
            port: b.port,
            dns: b.is_dns(),
            proxy_protocol: match b.proxy_header {
                ProxyHeader::None => None,
                ProxyHeader::V1 => Some("v1"),
                ProxyHeader::V2 => Some("v2"),
            },
            tls: b.tls,
            stream_port: b.stream_port,
            drained: config.drained.contains(&b.name),
            health: health.map(|r| health_json(r, &b.name)),
        })
        .collect()
}

/// One farm in `FARM PRINT json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FarmJson<'a> {
    name: &'a str,
    selector: &'static str,
    members: &'a [String],
    policies: Vec<&'static str>,
    partitions: Vec<Vec<&'a str>>,
}

/// Every farm, sorted by name, in their JSON shape; `partitions` are the
/// ones routing uses now (existing backends only).
pub fn farms_json(config: &Config) -> Vec<FarmJson<'_>> {
    config
        .farms
        .values()
        .map(|f| FarmJson {
            name: &f.name,
            selector: f.selector.name(),
            members: &f.members,
            policies: f.policies.iter().map(PartitionPolicy::name).collect(),
            partitions: partitions(config, f)
                .into_iter()
                .map(|p| {
                    p.into_iter()
                        .filter(|m| config.backends.contains_key(*m))
                        .collect::<Vec<_>>()
                })
                .filter(|p| !p.is_empty())
                .collect(),
        })
        .collect()
}

/// One vhost mapping in `MAP PRINT json`.
#[derive(Serialize)]
pub struct MappingJson<'a> {
    vhost: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
}

/// Every mapping, sorted by vhost, in their JSON shape.
pub fn mappings_json(config: &Config) -> Vec<MappingJson<'_>> {
    config
        .mappings
        .iter()
        .map(|(vhost, m)| {
            let (kind, name) = match m {
                Mapping::Farm(f) => ("farm", f),
                Mapping::Backend(b) => ("backend", b),
            };
            MappingJson { vhost, kind, name }
        })
        .collect()
}

/// The `CONFIG DUMP json` document; field order is the output order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DumpDoc<'a> {
    datacenter: Option<&'a str>,
    backends: Vec<BackendJson<'a>>,
    farms: Vec<FarmJson<'a>>,
    mappings: Vec<MappingJson<'a>>,
    default_farm: Option<&'a str>,
}

pub fn dump_json(config: &Config) -> DumpDoc<'_> {
    DumpDoc {
        datacenter: datacenter(config),
        backends: backends_json(config, None),
        farms: farms_json(config),
        mappings: mappings_json(config),
        default_farm: config.default_farm.as_deref(),
    }
}

/// The command that recreates `b`. The host is written as the operator
/// gave it, so a replay resolves it again rather than pinning the address
/// it had when it was dumped.
pub fn backend_command(b: &Backend) -> Command {
    Command::Backend(BackendCommand::Add(NewBackend {
        name: b.name.clone(),
        datacenter: b.datacenter.clone(),
        host: b.host.clone(),
        port: b.port,
        dns: b.is_dns(),
        proxy_header: b.proxy_header,
        tls: b.tls,
        stream_port: b.stream_port,
    }))
}

/// The commands that recreate `farm`: `FARM ADD` with the members that
/// still exist, then one `FARM PARTITION` per policy, in order. `None` when
/// no member exists any more: such a farm cannot be expressed as commands.
pub fn farm_commands(config: &Config, farm: &Farm) -> Option<Vec<Command>> {
    let members: Vec<String> = farm
        .members
        .iter()
        .filter(|m| config.backends.contains_key(*m))
        .cloned()
        .collect();
    if members.is_empty() {
        return None;
    }
    let mut commands = vec![Command::Farm(FarmCommand::Add {
        name: farm.name.clone(),
        selector: farm.selector,
        members,
        manual: false,
    })];
    commands.extend(farm.policies.iter().map(|p| {
        Command::Farm(FarmCommand::Partition {
            name: farm.name.clone(),
            policy: *p,
        })
    }));
    Some(commands)
}

/// The configuration as control commands, one a line (`CONFIG DUMP`).
pub fn dump(config: &Config) -> String {
    let mut lines: Vec<String> = Vec::new();
    // First: FARM ADD partitions by the datacenter current when it runs.
    if let Some(name) = datacenter(config) {
        lines.push(
            Command::Datacenter(DatacenterCommand::Set {
                name: name.to_string(),
            })
            .to_string(),
        );
    }
    lines.extend(
        config
            .backends
            .values()
            .map(|b| backend_command(b).to_string()),
    );
    lines.extend(
        config
            .drained
            .iter()
            .map(|name| Command::Backend(BackendCommand::Drain { name: name.clone() }).to_string()),
    );
    if config.health != HealthPolicy::default() {
        lines.push(health_command(&config.health).to_string());
    }
    for f in config.farms.values() {
        match farm_commands(config, f) {
            Some(commands) => lines.extend(commands.iter().map(Command::to_string)),
            None => lines.push(format!(
                "# FARM {} not dumped: none of its backends ({}) exists",
                f.name,
                f.members.join(" ")
            )),
        }
    }
    lines.extend(config.mappings.iter().map(|(vhost, m)| {
        Command::Map(match m {
            Mapping::Farm(farm) => MapCommand::Farm {
                vhost: vhost.clone(),
                farm: farm.clone(),
            },
            Mapping::Backend(backend) => MapCommand::Backend {
                vhost: vhost.clone(),
                backend: backend.clone(),
            },
        })
        .to_string()
    }));
    if let Some(farm) = &config.default_farm {
        lines.push(Command::Map(MapCommand::Default { farm: farm.clone() }).to_string());
    }
    lines.extend(config.tls.dump_commands());
    // Limits and the auth service are in place before any listener opens.
    lines.extend(crate::limits::render::dump(&config.limits));
    if config.auth != crate::auth::AuthSettings::AlwaysAllow {
        lines.push(config.auth.command());
    }
    lines.extend(config.paused_vhosts.iter().map(|vhost| {
        Command::Vhost(VhostCommand::Act {
            vhost: vhost.clone(),
            action: VhostAction::Pause,
        })
        .to_string()
    }));
    lines.extend(config.listeners.values().map(|listener| {
        let kind = ListenerKind {
            tls: listener.tls,
            proxy: listener.proxy,
            stream: listener.stream.is_some(),
        };
        Command::Listen(match &listener.stream {
            None => ListenCommand::Start {
                addr: listener.addr,
                kind,
            },
            Some(endpoint) => ListenCommand::StartStream {
                addr: listener.addr,
                kind,
                endpoint: endpoint.clone(),
            },
        })
        .to_string()
    }));
    lines.into_iter().map(|l| l + "\n").collect()
}
