//! A [`Command`] written back as the control line that parses to it: verbs
//! upper-case, names as given. `CONFIG DUMP` prints the configuration
//! through this, so what it prints replays. Never parses and never looks
//! at the proxy's state.

use super::{
    BackendCommand, Command, DatacenterCommand, FarmCommand, ListenCommand, LogTarget, MapCommand,
    SessionVerb, StatCommand, TlsCommand, TraceCommand, UpgradeStep, VerifyMode, VhostAction,
    VhostCommand,
};
use crate::config::{ProxyHeader, DEFAULT_STREAM_PORT};
use crate::shard::ListenerKind;
use crate::stats::{Filter, Format};
use std::fmt::{self, Display, Formatter};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// ` json` when asked for, else nothing.
fn json(json: bool) -> &'static str {
    if json {
        " json"
    } else {
        ""
    }
}

impl Display for Command {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Command::Help => f.write_str("HELP"),
            Command::Exit => f.write_str("EXIT"),
            Command::Upgrade(UpgradeStep::Handoff) => f.write_str("UPGRADE HANDOFF"),
            Command::Upgrade(UpgradeStep::Release) => f.write_str("UPGRADE RELEASE"),
            Command::Auth(c) => c.fmt(f),
            Command::Limit(c) => c.fmt(f),
            Command::Backend(c) => c.fmt(f),
            Command::ConfigDump { json: j } => write!(f, "CONFIG DUMP{}", json(*j)),
            Command::Conn { json: j } => write!(f, "CONN{}", json(*j)),
            Command::Datacenter(DatacenterCommand::Set { name }) if name.is_empty() => {
                f.write_str("DATACENTER SET")
            }
            Command::Datacenter(DatacenterCommand::Set { name }) => {
                write!(f, "DATACENTER SET {name}")
            }
            Command::Datacenter(DatacenterCommand::Print { json: j }) => {
                write!(f, "DATACENTER PRINT{}", json(*j))
            }
            Command::Farm(c) => c.fmt(f),
            Command::Listen(c) => c.fmt(f),
            Command::Log { target, level } => {
                let target = match target {
                    LogTarget::Console => "CONSOLE",
                    LogTarget::File => "FILE",
                };
                write!(f, "LOG {target} {level}")
            }
            Command::Map(c) => c.fmt(f),
            Command::MapHostnameDns => f.write_str("MAPHOSTNAME DNS"),
            Command::Session { id, action } => {
                let action = match action {
                    SessionVerb::Pause => "PAUSE",
                    SessionVerb::Unpause => "UNPAUSE",
                    SessionVerb::DisconnectGraceful => "DISCONNECT_GRACEFUL",
                    SessionVerb::ForceDisconnect => "FORCE_DISCONNECT",
                    SessionVerb::Limit(Some(rate)) => {
                        return write!(f, "SESSION {id} LIMIT DATA_RATE {rate}")
                    }
                    SessionVerb::Limit(None) => "LIMIT DISABLE DATA_RATE",
                };
                write!(f, "SESSION {id} {action}")
            }
            Command::Stat(c) => c.fmt(f),
            Command::Tls { side, setting } => write!(f, "TLS {} {setting}", side.name()),
            Command::Trace(c) => c.fmt(f),
            Command::Vhost(c) => c.fmt(f),
        }
    }
}

impl Display for BackendCommand {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            BackendCommand::Add(b) => {
                let verb = if b.dns { "ADD_DNS" } else { "ADD" };
                write!(
                    f,
                    "BACKEND {verb} {} {} {} {}",
                    b.name, b.datacenter, b.host, b.port
                )?;
                match b.proxy_header {
                    ProxyHeader::None => {}
                    ProxyHeader::V1 => f.write_str(" SEND-PROXY")?,
                    ProxyHeader::V2 => f.write_str(" SEND-PROXY-V2")?,
                }
                if b.tls {
                    f.write_str(" TLS")?;
                }
                if b.stream_port != DEFAULT_STREAM_PORT {
                    write!(f, " STREAM-PORT={}", b.stream_port)?;
                }
                Ok(())
            }
            BackendCommand::Delete { name } => write!(f, "BACKEND DELETE {name}"),
            BackendCommand::Drain { name } => write!(f, "BACKEND DRAIN {name}"),
            BackendCommand::Undrain { name } => write!(f, "BACKEND UNDRAIN {name}"),
            BackendCommand::Print { json: j } => write!(f, "BACKEND PRINT{}", json(*j)),
            BackendCommand::Health(c) => c.fmt(f),
        }
    }
}

impl Display for FarmCommand {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            FarmCommand::Add {
                name,
                selector,
                members,
                manual,
            } => {
                let verb = if *manual { "ADD_MANUAL" } else { "ADD" };
                write!(f, "FARM {verb} {name} {}", selector.name())?;
                for m in members {
                    write!(f, " {m}")?;
                }
                Ok(())
            }
            FarmCommand::Partition { name, policy } => {
                write!(f, "FARM PARTITION {name} {}", policy.name())
            }
            FarmCommand::Delete { name } => write!(f, "FARM DELETE {name}"),
            FarmCommand::Print { json: j } => write!(f, "FARM PRINT{}", json(*j)),
        }
    }
}

/// `LISTEN <verb> <addr>[ PROXY]`.
fn listen_start(
    f: &mut Formatter<'_>,
    verb: &str,
    addr: SocketAddr,
    kind: ListenerKind,
) -> fmt::Result {
    // A bare port is what parses to every address.
    if addr == SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), addr.port()) {
        write!(f, "LISTEN {verb} {}", addr.port())?;
    } else {
        write!(f, "LISTEN {verb} {addr}")?;
    }
    if kind.proxy {
        f.write_str(" PROXY")?;
    }
    Ok(())
}

impl Display for ListenCommand {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            ListenCommand::Start { addr, kind } => {
                let verb = if kind.tls { "START_SECURE" } else { "START" };
                listen_start(f, verb, *addr, *kind)
            }
            ListenCommand::StartStream {
                addr,
                kind,
                endpoint,
            } => {
                let verb = if kind.tls {
                    "START_STREAM_SECURE"
                } else {
                    "START_STREAM"
                };
                listen_start(f, verb, *addr, *kind)?;
                if let Some(backend) = &endpoint.backend {
                    write!(f, " BACKEND={backend}")?;
                }
                if let Some(host) = &endpoint.advertise {
                    write!(f, " ADVERTISE={host}")?;
                }
                Ok(())
            }
            ListenCommand::Stop { port: Some(port) } => write!(f, "LISTEN STOP {port}"),
            ListenCommand::Stop { port: None } => f.write_str("LISTEN STOP"),
        }
    }
}

impl Display for MapCommand {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            MapCommand::Backend { vhost, backend } => write!(f, "MAP BACKEND {vhost} {backend}"),
            MapCommand::Farm { vhost, farm } => write!(f, "MAP FARM {vhost} {farm}"),
            MapCommand::Unmap { vhost } => write!(f, "MAP UNMAP {vhost}"),
            MapCommand::Default { farm } => write!(f, "MAP DEFAULT {farm}"),
            MapCommand::RemoveDefault => f.write_str("MAP REMOVE_DEFAULT"),
            MapCommand::Print { json: j } => write!(f, "MAP PRINT{}", json(*j)),
        }
    }
}

impl Display for StatCommand {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            StatCommand::Listen { format, filter } => {
                let format = match format {
                    Format::Json => "json",
                    Format::Human => "human",
                };
                write!(f, "STAT LISTEN {format} ")?;
                match filter {
                    Filter::All => f.write_str("all"),
                    Filter::Overall => f.write_str("overall"),
                    Filter::Process => f.write_str("process"),
                    Filter::BufferPool => f.write_str("bufferpool"),
                    Filter::Vhost(v) => write!(f, "vhost={v}"),
                    Filter::Backend(b) => write!(f, "backend={b}"),
                    Filter::Source(s) => write!(f, "source={s}"),
                    // The value of an unknown type is not kept, and not used.
                    Filter::Unknown(kind) => write!(f, "{kind}="),
                }
            }
            StatCommand::Send { host, port } => write!(f, "STAT SEND {host} {port}"),
            StatCommand::StopSend => f.write_str("STAT STOP SEND"),
            StatCommand::PerSource(true) => f.write_str("STAT ENABLE per-source"),
            StatCommand::PerSource(false) => f.write_str("STAT DISABLE per-source"),
        }
    }
}

impl Display for TlsCommand {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let file = |f: &mut Formatter<'_>, verb: &str, path: &std::path::Path| {
            write!(f, "{verb} {}", path.display())
        };
        match self {
            TlsCommand::KeyFile(p) => file(f, "KEY_FILE", p),
            TlsCommand::RsaKeyFile(p) => file(f, "RSA_KEY_FILE", p),
            TlsCommand::CertChainFile(p) => file(f, "CERT_CHAIN_FILE", p),
            TlsCommand::CaCertFile(p) => file(f, "CA_CERT_FILE", p),
            TlsCommand::TmpDhFile(p) => file(f, "TMP_DH_FILE", p),
            TlsCommand::VerifyMode(modes) => {
                f.write_str("VERIFY_MODE")?;
                for mode in modes {
                    f.write_str(match mode {
                        VerifyMode::Peer => " PEER",
                        VerifyMode::None => " NONE",
                        VerifyMode::FailIfNoPeerCert => " FAIL_IF_NO_PEER_CERT",
                        VerifyMode::ClientOnce => " CLIENT_ONCE",
                    })?;
                }
                Ok(())
            }
            TlsCommand::CiphersPrint => f.write_str("CIPHERS PRINT"),
            TlsCommand::CiphersSet(list) if list.is_empty() => f.write_str("CIPHERS SET"),
            TlsCommand::CiphersSet(list) => write!(f, "CIPHERS SET {list}"),
        }
    }
}

impl Display for TraceCommand {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            TraceCommand::Vhost(v) => write!(f, "TRACE VHOST {v}"),
            TraceCommand::Source(ip) => write!(f, "TRACE SOURCE {ip}"),
            TraceCommand::Session(id) => write!(f, "TRACE SESSION {id}"),
            TraceCommand::Off => f.write_str("TRACE OFF"),
            TraceCommand::Print => f.write_str("TRACE PRINT"),
        }
    }
}

impl Display for VhostCommand {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            VhostCommand::Print => f.write_str("VHOST PRINT"),
            VhostCommand::Act { vhost, action } => {
                let action = match action {
                    VhostAction::Pause => "PAUSE",
                    VhostAction::Unpause => "UNPAUSE",
                    VhostAction::BackendDisconnect => "BACKEND_DISCONNECT",
                    VhostAction::ForceDisconnect => "FORCE_DISCONNECT",
                };
                write!(f, "VHOST {action} {vhost}")
            }
        }
    }
}
