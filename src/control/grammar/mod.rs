//! The control-line grammar: one line in, one typed [`Command`] or a
//! [`ParseError`] out (see `docs/commands.md`). Pure: it never resolves a
//! name, opens a socket, reads a file or looks at the proxy's state, so it
//! can be unit-tested and fuzzed alone. Running a command is
//! `control::commands`; printing one back is [`Command`]'s `Display`
//! (`display.rs`), which parses back to the same command.
//!
//! Verbs and sub-commands are matched in any case; names, hosts and paths
//! are kept as given. Every token the grammar does not expect is an error
//! that names it, so a typo changes nothing (`docs/differences.md`). The
//! error texts of the original's commands are kept byte for byte.

mod display;
mod error;
mod health;
mod limit;
#[cfg(test)]
mod tests;

pub use error::ParseError;
pub use health::{HealthCommand, HealthSetting, HealthSettings};
pub use limit::{AuthCommand, LimitCommand};

use crate::config::{
    BackendSelector, PartitionPolicy, ProxyHeader, StreamEndpoint, DEFAULT_STREAM_PORT,
};
use crate::shard::ListenerKind;
use crate::stats::{Filter, Format};
use crate::tls::Side;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

/// One control line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELP`, and any verb this proxy does not know.
    Help,
    Exit,
    Auth(AuthCommand),
    Backend(BackendCommand),
    /// `CONFIG DUMP [json]`.
    ConfigDump {
        json: bool,
    },
    /// `CONN [json]`.
    Conn {
        json: bool,
    },
    Datacenter(DatacenterCommand),
    Farm(FarmCommand),
    Listen(ListenCommand),
    Limit(LimitCommand),
    Log {
        target: LogTarget,
        level: u8,
    },
    Map(MapCommand),
    /// `MAPHOSTNAME DNS`.
    MapHostnameDns,
    Session {
        id: u64,
        action: SessionVerb,
    },
    Stat(StatCommand),
    Tls {
        side: Side,
        setting: TlsCommand,
    },
    Trace(TraceCommand),
    /// `UPGRADE HANDOFF` / `UPGRADE RELEASE`: the takeover exchange a new
    /// process started with `--takeover` speaks over the control socket
    /// (docs/deployment.md#upgrading-without-refusing-connections).
    Upgrade(UpgradeStep),
    Vhost(VhostCommand),
}

/// One step of a hitless upgrade, as the new process asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeStep {
    /// Send the listening sockets and the configuration.
    Handoff,
    /// Stop accepting on the handed-over sockets and drain.
    Release,
}

impl Command {
    /// Whether running the command changes the configuration `CONFIG DUMP`
    /// prints. A proxy that has handed its configuration over refuses these:
    /// the new process would never see the change.
    pub fn changes_configuration(&self) -> bool {
        match self {
            Command::Backend(c) => !matches!(c, BackendCommand::Print { .. }),
            Command::Datacenter(c) => matches!(c, DatacenterCommand::Set { .. }),
            Command::Farm(c) => !matches!(c, FarmCommand::Print { .. }),
            Command::Listen(_) => true,
            Command::Auth(c) => !matches!(c, AuthCommand::Print),
            Command::Limit(c) => !matches!(c, LimitCommand::Print { .. }),
            Command::Map(c) => !matches!(c, MapCommand::Print { .. }),
            Command::Tls { setting, .. } => !matches!(setting, TlsCommand::CiphersPrint),
            Command::Vhost(VhostCommand::Act { action, .. }) => {
                matches!(action, VhostAction::Pause | VhostAction::Unpause)
            }
            Command::Help
            | Command::Exit
            | Command::ConfigDump { .. }
            | Command::Conn { .. }
            | Command::Log { .. }
            | Command::MapHostnameDns
            | Command::Session { .. }
            | Command::Stat(_)
            | Command::Trace(_)
            | Command::Upgrade(_)
            | Command::Vhost(VhostCommand::Print) => false,
        }
    }
}

/// A backend to add, as `BACKEND ADD`/`ADD_DNS` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBackend {
    pub name: String,
    pub datacenter: String,
    pub host: String,
    pub port: u16,
    /// `ADD_DNS`: the host is resolved for every connection, not once.
    pub dns: bool,
    pub proxy_header: ProxyHeader,
    pub tls: bool,
    /// `STREAM-PORT=<port>`: the node's RabbitMQ Stream port.
    pub stream_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendCommand {
    Add(NewBackend),
    Delete {
        name: String,
    },
    /// `DRAIN`: new sessions avoid it, its sessions move to other members.
    Drain {
        name: String,
    },
    /// `UNDRAIN`: routed to again; sessions already moved stay where they are.
    Undrain {
        name: String,
    },
    Print {
        json: bool,
    },
    Health(HealthCommand),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatacenterCommand {
    /// An empty name clears the label.
    Set {
        name: String,
    },
    Print {
        json: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FarmCommand {
    /// `ADD` or `ADD_MANUAL` (`manual`); members as given, duplicates
    /// included (each missing one is reported).
    Add {
        name: String,
        selector: BackendSelector,
        members: Vec<String>,
        manual: bool,
    },
    Partition {
        name: String,
        policy: PartitionPolicy,
    },
    Delete {
        name: String,
    },
    Print {
        json: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenCommand {
    Start {
        addr: SocketAddr,
        kind: ListenerKind,
    },
    /// `START_STREAM` / `START_STREAM_SECURE`: a RabbitMQ Stream listener
    /// (`kind.stream` is set).
    StartStream {
        addr: SocketAddr,
        kind: ListenerKind,
        endpoint: StreamEndpoint,
    },
    /// One port, or every listener.
    Stop { port: Option<u16> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Console,
    File,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapCommand {
    Backend { vhost: String, backend: String },
    Farm { vhost: String, farm: String },
    Unmap { vhost: String },
    Default { farm: String },
    RemoveDefault,
    Print { json: bool },
}

/// What `SESSION id ...` does to one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionVerb {
    Pause,
    Unpause,
    DisconnectGraceful,
    ForceDisconnect,
    /// `LIMIT DATA_RATE n` (`Some`) or `LIMIT DISABLE DATA_RATE`: the
    /// session's own data rate.
    Limit(Option<u64>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatCommand {
    Listen {
        format: Format,
        filter: Filter,
    },
    /// The host is resolved when the command runs.
    Send {
        host: String,
        port: u16,
    },
    StopSend,
    /// `ENABLE per-source` (true) or `DISABLE per-source`.
    PerSource(bool),
}

/// One `TLS <side> ...` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsCommand {
    KeyFile(PathBuf),
    RsaKeyFile(PathBuf),
    CertChainFile(PathBuf),
    CaCertFile(PathBuf),
    TmpDhFile(PathBuf),
    VerifyMode(Vec<VerifyMode>),
    CiphersPrint,
    /// The list as given (tokens joined by `:`); checked against the
    /// provider's suites when the command runs.
    CiphersSet(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    Peer,
    None,
    FailIfNoPeerCert,
    ClientOnce,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceCommand {
    Vhost(String),
    Source(IpAddr),
    Session(u64),
    Off,
    Print,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VhostCommand {
    Print,
    Act { vhost: String, action: VhostAction },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhostAction {
    Pause,
    Unpause,
    BackendDisconnect,
    ForceDisconnect,
}

/// Parses one control line (a trailing CR/LF is ignored).
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let line = line.trim_end_matches(['\r', '\n']);
    // The verb ends at the first space, as in the original; the rest is
    // split on any whitespace.
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let args: Vec<&str> = rest.split_whitespace().collect();
    match verb.to_ascii_uppercase().as_str() {
        "BACKEND" => backend(&args).map(Command::Backend),
        "CONFIG" => config(&args),
        "CONN" => Ok(Command::Conn {
            json: json_flag(&args, "CONN")?,
        }),
        "DATACENTER" => datacenter(&args).map(Command::Datacenter),
        "EXIT" => end(&args, 0, "EXIT").map(|()| Command::Exit),
        "FARM" => farm(&args).map(Command::Farm),
        "LISTEN" => listen(&args).map(Command::Listen),
        "LOG" => log(&args),
        "MAP" => map(&args).map(Command::Map),
        "MAPHOSTNAME" => maphostname(&args),
        "SESSION" => session(&args),
        "STAT" => stat(&args).map(Command::Stat),
        "TLS" => tls(&args),
        "TRACE" => trace(&args).map(Command::Trace),
        "UPGRADE" => upgrade(&args).map(Command::Upgrade),
        "VHOST" => vhost(&args).map(Command::Vhost),
        "AUTH" => limit::auth(&args).map(Command::Auth),
        "LIMIT" => limit::limit(&args).map(Command::Limit),
        // HELP itself, and unknown verbs, answer with the help text.
        _ => Ok(Command::Help),
    }
}

/// The upper-cased word at `i`, or "" when missing.
fn word(args: &[&str], i: usize) -> String {
    args.get(i)
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default()
}

/// Fails on the first token at or after `from`: nothing may follow.
fn end(args: &[&str], from: usize, command: &'static str) -> Result<(), ParseError> {
    match args.get(from) {
        None => Ok(()),
        Some(token) => Err(ParseError::UnexpectedArgument {
            command,
            token: token.to_string(),
        }),
    }
}

/// `[json]` as the only, optional argument.
fn json_flag(args: &[&str], command: &'static str) -> Result<bool, ParseError> {
    json_at(args, 0, command)
}

/// `[json]` at `i`, last on the line.
fn json_at(args: &[&str], i: usize, command: &'static str) -> Result<bool, ParseError> {
    let json = match args.get(i) {
        None => false,
        Some(a) if a.eq_ignore_ascii_case("json") => true,
        Some(a) => {
            return Err(ParseError::UnexpectedArgument {
                command,
                token: a.to_string(),
            })
        }
    };
    end(args, i + 1, command)?;
    Ok(json)
}

fn backend(args: &[&str]) -> Result<BackendCommand, ParseError> {
    match word(args, 0).as_str() {
        sub @ ("ADD" | "ADD_DNS") => {
            let dns = sub == "ADD_DNS";
            let (Some(name), Some(datacenter), Some(host), Some(port)) =
                (args.get(1), args.get(2), args.get(3), args.get(4))
            else {
                return Err(ParseError::BackendArguments);
            };
            let port = match port.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(ParseError::BackendArguments),
            };
            let mut proxy_header = ProxyHeader::None;
            let mut tls = false;
            let mut stream_port = DEFAULT_STREAM_PORT;
            for option in &args[5..] {
                let upper = option.to_ascii_uppercase();
                if let Some(value) = upper.strip_prefix("STREAM-PORT=") {
                    stream_port = match value.parse::<u16>() {
                        Ok(p) if p != 0 => p,
                        _ => {
                            return Err(ParseError::InvalidStreamPort {
                                value: value.to_string(),
                            })
                        }
                    };
                    continue;
                }
                // The last PROXY flag given wins.
                match upper.as_str() {
                    "SEND-PROXY" => proxy_header = ProxyHeader::V1,
                    "SEND-PROXY-V2" => proxy_header = ProxyHeader::V2,
                    "TLS" => tls = true,
                    _ => {
                        return Err(ParseError::UnknownBackendOption {
                            option: option.to_string(),
                        })
                    }
                }
            }
            Ok(BackendCommand::Add(NewBackend {
                name: name.to_string(),
                datacenter: datacenter.to_string(),
                host: host.to_string(),
                port,
                dns,
                proxy_header,
                tls,
                stream_port,
            }))
        }
        "DELETE" => {
            let Some(name) = args.get(1) else {
                return Err(ParseError::BackendDeleteName);
            };
            end(args, 2, "BACKEND DELETE")?;
            Ok(BackendCommand::Delete {
                name: name.to_string(),
            })
        }
        sub @ ("DRAIN" | "UNDRAIN") => {
            let Some(name) = args.get(1) else {
                return Err(ParseError::BackendName {
                    sub: sub.to_string(),
                });
            };
            let name = name.to_string();
            if sub == "DRAIN" {
                end(args, 2, "BACKEND DRAIN")?;
                Ok(BackendCommand::Drain { name })
            } else {
                end(args, 2, "BACKEND UNDRAIN")?;
                Ok(BackendCommand::Undrain { name })
            }
        }
        "PRINT" => Ok(BackendCommand::Print {
            json: json_at(args, 1, "BACKEND PRINT")?,
        }),
        "HEALTH" => health::parse(&args[1..]).map(BackendCommand::Health),
        other => Err(ParseError::SubcommandNotRecognized {
            word: other.to_string(),
        }),
    }
}

fn config(args: &[&str]) -> Result<Command, ParseError> {
    match word(args, 0).as_str() {
        "DUMP" => Ok(Command::ConfigDump {
            json: json_at(args, 1, "CONFIG DUMP")?,
        }),
        "" => Err(ParseError::NoSubcommand),
        other => Err(ParseError::UnknownSubcommand {
            word: other.to_string(),
        }),
    }
}

fn datacenter(args: &[&str]) -> Result<DatacenterCommand, ParseError> {
    match word(args, 0).as_str() {
        "SET" => {
            end(args, 2, "DATACENTER SET")?;
            Ok(DatacenterCommand::Set {
                name: args.get(1).map(|s| s.to_string()).unwrap_or_default(),
            })
        }
        "PRINT" => Ok(DatacenterCommand::Print {
            json: json_at(args, 1, "DATACENTER PRINT")?,
        }),
        "" => Err(ParseError::NoSubcommand),
        other => Err(ParseError::UnknownSubcommand {
            word: other.to_string(),
        }),
    }
}

fn farm(args: &[&str]) -> Result<FarmCommand, ParseError> {
    match word(args, 0).as_str() {
        sub @ ("ADD" | "ADD_MANUAL") => {
            // The original reads name, selector and at least one backend
            // before it checks anything.
            let (Some(name), Some(selector), true) = (args.get(1), args.get(2), args.len() > 3)
            else {
                return Err(ParseError::FarmNameAndSelector);
            };
            let Some(selector) = BackendSelector::parse(selector) else {
                return Err(ParseError::UnknownSelector {
                    selector: selector.to_string(),
                });
            };
            Ok(FarmCommand::Add {
                name: name.to_string(),
                selector,
                members: args[3..].iter().map(|m| m.to_string()).collect(),
                manual: sub == "ADD_MANUAL",
            })
        }
        "PARTITION" => {
            let (Some(name), Some(policy)) = (args.get(1), args.get(2)) else {
                return Err(ParseError::FarmNameAndPolicy);
            };
            let Some(policy) = PartitionPolicy::parse(policy) else {
                return Err(ParseError::UnknownPartitionPolicy {
                    policy: policy.to_string(),
                });
            };
            end(args, 3, "FARM PARTITION")?;
            Ok(FarmCommand::Partition {
                name: name.to_string(),
                policy,
            })
        }
        "DELETE" => {
            let Some(name) = args.get(1) else {
                return Err(ParseError::FarmName);
            };
            end(args, 2, "FARM DELETE")?;
            Ok(FarmCommand::Delete {
                name: name.to_string(),
            })
        }
        "PRINT" => Ok(FarmCommand::Print {
            json: json_at(args, 1, "FARM PRINT")?,
        }),
        other => Err(ParseError::SubcommandNotRecognized {
            word: other.to_string(),
        }),
    }
}

/// `port`, `addr:port` or `[v6addr]:port`. A bare port listens on every
/// address, IPv4 and IPv6 (`[::]`).
pub fn parse_listen_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return (port != 0).then(|| SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
    }
    s.parse::<SocketAddr>().ok().filter(|a| a.port() != 0)
}

fn listen(args: &[&str]) -> Result<ListenCommand, ParseError> {
    match word(args, 0).as_str() {
        verb @ ("START" | "START_SECURE") => {
            let Some(addr) = args.get(1).and_then(|p| parse_listen_addr(p)) else {
                return Err(ParseError::InvalidPort);
            };
            let mut kind = ListenerKind {
                tls: verb == "START_SECURE",
                proxy: false,
                stream: false,
            };
            for option in &args[2..] {
                if option.eq_ignore_ascii_case("PROXY") {
                    kind.proxy = true;
                } else {
                    return Err(ParseError::UnknownListenerOption {
                        option: option.to_string(),
                    });
                }
            }
            Ok(ListenCommand::Start { addr, kind })
        }
        verb @ ("START_STREAM" | "START_STREAM_SECURE") => {
            let Some(addr) = args.get(1).and_then(|p| parse_listen_addr(p)) else {
                return Err(ParseError::InvalidPort);
            };
            let mut kind = ListenerKind {
                tls: verb == "START_STREAM_SECURE",
                proxy: false,
                stream: true,
            };
            let mut endpoint = StreamEndpoint::default();
            for option in &args[2..] {
                let upper = option.to_ascii_uppercase();
                // Names and hosts keep the case the operator gave them.
                let value = || option[option.find('=').map_or(0, |i| i + 1)..].to_string();
                if upper == "PROXY" {
                    kind.proxy = true;
                } else if upper.starts_with("BACKEND=") && option.len() > "BACKEND=".len() {
                    endpoint.backend = Some(value());
                } else if upper.starts_with("ADVERTISE=") && option.len() > "ADVERTISE=".len() {
                    endpoint.advertise = Some(value());
                } else {
                    return Err(ParseError::UnknownStreamListenerOption {
                        option: option.to_string(),
                    });
                }
            }
            Ok(ListenCommand::StartStream {
                addr,
                kind,
                endpoint,
            })
        }
        "STOP" => {
            let port = match args.get(1) {
                None => None,
                // A mistyped port must not stop every listener.
                Some(p) => Some(p.parse::<u16>().map_err(|_| ParseError::InvalidPort)?),
            };
            end(args, 2, "LISTEN STOP")?;
            Ok(ListenCommand::Stop { port })
        }
        "" => Err(ParseError::NoSubcommand),
        other => Err(ParseError::UnknownSubcommand {
            word: other.to_string(),
        }),
    }
}

fn log(args: &[&str]) -> Result<Command, ParseError> {
    // The level is checked first, as in the original.
    let Some(level) = args.get(1).and_then(|l| l.parse::<i64>().ok()) else {
        return Err(ParseError::LogVerbosity);
    };
    let target = match word(args, 0).as_str() {
        "CONSOLE" => LogTarget::Console,
        "FILE" => LogTarget::File,
        other => {
            return Err(ParseError::LogTarget {
                word: other.to_string(),
            })
        }
    };
    end(args, 2, "LOG")?;
    // Negative silences everything but FATAL; above 5 behaves as 5.
    Ok(Command::Log {
        target,
        level: level.clamp(0, 5) as u8,
    })
}

fn map(args: &[&str]) -> Result<MapCommand, ParseError> {
    let sub = word(args, 0);
    let pair = |error: ParseError, command| match (args.get(1), args.get(2)) {
        (Some(vhost), Some(name)) => {
            end(args, 3, command)?;
            Ok((vhost.to_string(), name.to_string()))
        }
        _ => Err(error),
    };
    match sub.as_str() {
        "BACKEND" => {
            let (vhost, backend) = pair(ParseError::MapVhostAndBackend, "MAP BACKEND")?;
            Ok(MapCommand::Backend { vhost, backend })
        }
        "FARM" => {
            let (vhost, farm) = pair(ParseError::MapVhostAndFarm, "MAP FARM")?;
            Ok(MapCommand::Farm { vhost, farm })
        }
        "UNMAP" => {
            let Some(vhost) = args.get(1) else {
                return Err(ParseError::MapVhost);
            };
            end(args, 2, "MAP UNMAP")?;
            Ok(MapCommand::Unmap {
                vhost: vhost.to_string(),
            })
        }
        "DEFAULT" => {
            let Some(farm) = args.get(1) else {
                return Err(ParseError::MapDefaultFarm);
            };
            end(args, 2, "MAP DEFAULT")?;
            Ok(MapCommand::Default {
                farm: farm.to_string(),
            })
        }
        "REMOVE_DEFAULT" => {
            end(args, 1, "MAP REMOVE_DEFAULT")?;
            Ok(MapCommand::RemoveDefault)
        }
        "PRINT" => Ok(MapCommand::Print {
            json: json_at(args, 1, "MAP PRINT")?,
        }),
        _ => Err(ParseError::MapSubcommand { word: sub }),
    }
}

fn maphostname(args: &[&str]) -> Result<Command, ParseError> {
    match word(args, 0).as_str() {
        "DNS" => {
            end(args, 1, "MAPHOSTNAME DNS")?;
            Ok(Command::MapHostnameDns)
        }
        "" => Err(ParseError::NoSubcommandSpecified),
        other => Err(ParseError::OnlyDns {
            word: other.to_string(),
        }),
    }
}

fn session(args: &[&str]) -> Result<Command, ParseError> {
    let Some(id) = args.first().and_then(|s| s.parse::<u64>().ok()) else {
        return Err(ParseError::SessionId {
            given: args.first().map(|s| s.to_string()),
        });
    };
    let action = match word(args, 1).as_str() {
        "PAUSE" => SessionVerb::Pause,
        "UNPAUSE" => SessionVerb::Unpause,
        "DISCONNECT_GRACEFUL" => SessionVerb::DisconnectGraceful,
        "FORCE_DISCONNECT" => SessionVerb::ForceDisconnect,
        "LIMIT" => {
            return Ok(Command::Session {
                id,
                action: SessionVerb::Limit(limit::session_limit(&args[2..])?),
            })
        }
        other => {
            return Err(ParseError::SessionSubcommand {
                id,
                word: other.to_string(),
            })
        }
    };
    end(args, 2, "SESSION")?;
    Ok(Command::Session { id, action })
}

fn stat(args: &[&str]) -> Result<StatCommand, ParseError> {
    match word(args, 0).as_str() {
        "LISTEN" => {
            let Some(kind) = args.get(1) else {
                return Err(ParseError::StatOutputType);
            };
            let Some(format) = Format::parse(kind) else {
                return Err(ParseError::StatFormat {
                    word: kind.to_string(),
                });
            };
            let Ok(filter) = Filter::parse(args.get(2).copied()) else {
                return Err(ParseError::StatFilter {
                    term: args.get(2).map(|s| s.to_string()).unwrap_or_default(),
                });
            };
            end(args, 3, "STAT LISTEN")?;
            Ok(StatCommand::Listen { format, filter })
        }
        "SEND" => {
            let Some(host) = args.get(1) else {
                return Err(ParseError::StatHost);
            };
            let Some(port) = args.get(2) else {
                return Err(ParseError::StatPort);
            };
            if args.len() > 3 {
                return Err(ParseError::StatSendFilter);
            }
            let Ok(port) = port.parse::<u16>() else {
                return Err(ParseError::StatInvalidPort {
                    port: port.to_string(),
                });
            };
            Ok(StatCommand::Send {
                host: host.to_string(),
                port,
            })
        }
        "STOP" => match args.get(1) {
            None => Err(ParseError::StatStopType),
            // Compared as given, as in the original (`STOP send` is refused).
            Some(&"SEND") => {
                end(args, 2, "STAT STOP SEND")?;
                Ok(StatCommand::StopSend)
            }
            Some(word) => Err(ParseError::StatStopArgument {
                word: word.to_string(),
            }),
        },
        sub @ ("ENABLE" | "DISABLE") => match args.get(1) {
            None => Err(ParseError::StatEnableType),
            Some(kind) if kind.eq_ignore_ascii_case("per-source") => {
                end(args, 2, "STAT ENABLE|DISABLE per-source")?;
                Ok(StatCommand::PerSource(sub == "ENABLE"))
            }
            Some(kind) => Err(ParseError::StatSubcommand {
                word: kind.to_string(),
            }),
        },
        other => Err(ParseError::StatSubcommand {
            word: other.to_string(),
        }),
    }
}

fn tls(args: &[&str]) -> Result<Command, ParseError> {
    let Some(side) = args.first().and_then(|d| Side::parse(d)) else {
        return Err(ParseError::TlsDirection);
    };
    let command = word(args, 1);
    let file = |make: fn(PathBuf) -> TlsCommand| {
        let Some(file) = args.get(2) else {
            return Err(ParseError::TlsFile);
        };
        end(args, 3, "TLS file")?;
        Ok(make(PathBuf::from(file)))
    };
    let setting = match command.as_str() {
        "VERIFY_MODE" => {
            let modes = args[2..]
                .iter()
                .map(|mode| match mode.to_ascii_uppercase().as_str() {
                    "PEER" => Ok(VerifyMode::Peer),
                    "NONE" => Ok(VerifyMode::None),
                    "FAIL_IF_NO_PEER_CERT" => Ok(VerifyMode::FailIfNoPeerCert),
                    "CLIENT_ONCE" => Ok(VerifyMode::ClientOnce),
                    other => Err(ParseError::TlsVerifyMode {
                        mode: other.to_string(),
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            TlsCommand::VerifyMode(modes)
        }
        "CIPHERS" => match word(args, 2).as_str() {
            "PRINT" => {
                end(args, 3, "TLS CIPHERS PRINT")?;
                TlsCommand::CiphersPrint
            }
            "SET" => TlsCommand::CiphersSet(args[3..].join(":")),
            _ => return Err(ParseError::TlsCiphers),
        },
        "KEY_FILE" => file(TlsCommand::KeyFile)?,
        "RSA_KEY_FILE" => file(TlsCommand::RsaKeyFile)?,
        "CERT_CHAIN_FILE" => file(TlsCommand::CertChainFile)?,
        "CA_CERT_FILE" => file(TlsCommand::CaCertFile)?,
        "TMP_DH_FILE" => file(TlsCommand::TmpDhFile)?,
        // No command at all: the original asks for the file.
        "" => return Err(ParseError::TlsFile),
        other => {
            return Err(ParseError::TlsCommand {
                word: other.to_string(),
            })
        }
    };
    Ok(Command::Tls { side, setting })
}

fn trace(args: &[&str]) -> Result<TraceCommand, ParseError> {
    let kind = word(args, 0);
    match kind.as_str() {
        "OFF" => {
            end(args, 1, "TRACE OFF")?;
            return Ok(TraceCommand::Off);
        }
        "PRINT" => {
            end(args, 1, "TRACE PRINT")?;
            return Ok(TraceCommand::Print);
        }
        _ => {}
    }
    let Some(value) = args.get(1) else {
        return Err(ParseError::TraceUsage);
    };
    let command = match kind.as_str() {
        "VHOST" => TraceCommand::Vhost(value.to_string()),
        "SOURCE" => TraceCommand::Source(value.parse().map_err(|_| ParseError::TraceAddress {
            value: value.to_string(),
        })?),
        "SESSION" => {
            TraceCommand::Session(value.parse().map_err(|_| ParseError::TraceSessionId {
                value: value.to_string(),
            })?)
        }
        _ => return Err(ParseError::TraceUsage),
    };
    end(args, 2, "TRACE")?;
    Ok(command)
}

fn upgrade(args: &[&str]) -> Result<UpgradeStep, ParseError> {
    let step = match word(args, 0).as_str() {
        "HANDOFF" => UpgradeStep::Handoff,
        "RELEASE" => UpgradeStep::Release,
        "" => return Err(ParseError::NoSubcommand),
        other => {
            return Err(ParseError::UnknownSubcommand {
                word: other.to_string(),
            })
        }
    };
    end(args, 1, "UPGRADE")?;
    Ok(step)
}

fn vhost(args: &[&str]) -> Result<VhostCommand, ParseError> {
    let sub = word(args, 0);
    if sub == "PRINT" {
        end(args, 1, "VHOST PRINT")?;
        return Ok(VhostCommand::Print);
    }
    // The original asks for the vhost before it looks at the sub-command.
    let Some(vhost) = args.get(1) else {
        return Err(ParseError::VhostMissing);
    };
    let action = match sub.as_str() {
        "PAUSE" => VhostAction::Pause,
        "UNPAUSE" => VhostAction::Unpause,
        "BACKEND_DISCONNECT" => VhostAction::BackendDisconnect,
        "FORCE_DISCONNECT" => VhostAction::ForceDisconnect,
        _ => return Err(ParseError::VhostSubcommand { word: sub }),
    };
    end(args, 2, "VHOST")?;
    Ok(VhostCommand::Act {
        vhost: vhost.to_string(),
        action,
    })
}

/// The invariants the `control_grammar` fuzz target checks on any bytes
/// (as text, invalid UTF-8 replaced): parsing never panics, and a parsed
/// command prints as a line that parses back to the same command. Panics
/// when one is broken.
pub fn fuzz_check(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    if let Ok(command) = parse(&line) {
        let printed = command.to_string();
        assert_eq!(
            parse(&printed),
            Ok(command),
            "{line:?} printed as {printed:?}"
        );
    }
}
