//! The configuration model: everything an operator set with control
//! commands and `CONFIG DUMP` prints (see `docs/commands.md`): backends,
//! farms, vhost mappings, the default farm, the proxy's datacenter, paused
//! vhosts, listeners and TLS settings; and the immutable [`ConfigSnapshot`]
//! the shards read.
//!
//! Only the control thread mutates a [`Config`]; each successful change is
//! published as a whole new snapshot, so a session sees one consistent view.
//! Nothing here does I/O or touches a socket: opening listeners and
//! reading TLS files is the control verbs' work, which records the result
//! here.
//!
//! A leaf: it imports nothing of the proxy but the TLS settings type
//! (`crate::tls::TlsSettings`), and no shard, session or control type.

mod health_policy;

pub use health_policy::HealthPolicy;

use crate::tls::TlsSettings;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// Which PROXY protocol header, if any, is written to a backend first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyHeader {
    #[default]
    None,
    V1,
    V2,
}

/// One broker endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub name: String,
    pub datacenter: String,
    /// The host as the operator gave it.
    pub host: String,
    /// Resolved once when added (`BACKEND ADD`); `None` for `ADD_DNS`
    /// backends, whose host is resolved for every connection.
    pub address: Option<IpAddr>,
    pub port: u16,
    pub proxy_header: ProxyHeader,
    pub tls: bool,
    /// The node's RabbitMQ Stream port (`STREAM-PORT=`), where stream
    /// sessions routed to this backend connect (docs/routing.md#rabbitmq-streams).
    pub stream_port: u16,
}

/// The stream plugin's own default port.
pub const DEFAULT_STREAM_PORT: u16 = 5552;

impl Backend {
    pub fn is_dns(&self) -> bool {
        self.address.is_none()
    }
}

/// How a farm picks among its members. `round-robin` is the only selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendSelector {
    RoundRobin,
}

impl BackendSelector {
    pub fn parse(s: &str) -> Option<Self> {
        (s == "round-robin").then_some(BackendSelector::RoundRobin)
    }
    pub fn name(&self) -> &'static str {
        "round-robin"
    }
}

/// How a farm's members are split into priority partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionPolicy {
    DatacenterAffinity,
}

impl PartitionPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        (s == "datacenter-affinity").then_some(PartitionPolicy::DatacenterAffinity)
    }
    pub fn name(&self) -> &'static str {
        "datacenter-affinity"
    }
}

/// A named group of backends behind one selector.
#[derive(Debug, Clone)]
pub struct Farm {
    pub name: String,
    pub selector: BackendSelector,
    /// Member backend names in the order they were given (duplicates removed).
    pub members: Vec<String>,
    pub policies: Vec<PartitionPolicy>,
    /// One round-robin marker per partition. Shared by every snapshot until
    /// the farm is repartitioned, so rotation survives unrelated changes.
    pub markers: Arc<Vec<AtomicUsize>>,
}

/// Two farms are the same configuration whatever their rotation state.
impl PartialEq for Farm {
    fn eq(&self, other: &Farm) -> bool {
        self.name == other.name
            && self.selector == other.selector
            && self.members == other.members
            && self.policies == other.policies
    }
}

/// Where a vhost goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    Farm(String),
    Backend(String),
}

/// One port every shard listens on (`LISTEN START`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The address asked for (`[::]:port` for a bare port, also where a
    /// host without IPv6 made the shards bind `0.0.0.0` instead), so that
    /// the dump asks for the same again.
    pub addr: SocketAddr,
    /// AMQPS with the TLS INGRESS context (`START_SECURE`).
    pub tls: bool,
    /// A PROXY protocol header comes first (`... PROXY`).
    pub proxy: bool,
    /// A RabbitMQ Stream listener (`START_STREAM`), and which node it
    /// stands for; `None` for AMQP 0-9-1.
    pub stream: Option<StreamEndpoint>,
}

/// What a stream listener stands for (docs/routing.md#one-endpoint-per-node): the entry point
/// that routes by vhost (no backend), or one broker node's endpoint, the
/// address the proxy gives clients for that node in Open and Metadata
/// responses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamEndpoint {
    /// `BACKEND=name`: sessions here go to this backend only.
    pub backend: Option<String>,
    /// `ADVERTISE=host`: the host clients are told to connect to for this
    /// node; by default the listener's address, or the proxy's host name
    /// when it listens on every address.
    pub advertise: Option<String>,
}

/// The files and flags of `TLS ...` commands. What they build is published
/// to the shards separately (`Shared::tls`); this is what the operator set.
#[derive(Clone, Default)]
pub struct TlsConfig(pub TlsSettings);

impl std::ops::Deref for TlsConfig {
    type Target = TlsSettings;
    fn deref(&self) -> &TlsSettings {
        &self.0
    }
}

impl std::ops::DerefMut for TlsConfig {
    fn deref_mut(&mut self) -> &mut TlsSettings {
        &mut self.0
    }
}

/// Settings are the same when they recreate the same way: same files,
/// flags and cipher list (the key material itself is not compared).
impl PartialEq for TlsConfig {
    fn eq(&self, other: &TlsConfig) -> bool {
        self.0.dump_commands() == other.0.dump_commands()
    }
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.dump_commands()).finish()
    }
}

/// The whole configuration: what `CONFIG DUMP` prints, and what replaying
/// that dump builds again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub backends: BTreeMap<String, Backend>,
    pub farms: BTreeMap<String, Farm>,
    pub mappings: BTreeMap<String, Mapping>,
    pub default_farm: Option<String>,
    pub datacenter: String,
    /// Vhosts whose new sessions are held at `Open` (`VHOST PAUSE`).
    pub paused_vhosts: BTreeSet<String>,
    /// Backends new sessions avoid and live sessions leave
    /// (`BACKEND DRAIN`); a deleted backend leaves this set too.
    pub drained: BTreeSet<String>,
    /// Listeners by port.
    pub listeners: BTreeMap<u16, Listener>,
    pub tls: TlsConfig,
    /// `LIMIT` settings; the shards' live limiters follow them.
    pub limits: crate::limits::LimitSettings,
    /// `AUTH`: the interceptor sessions accepted from now on use.
    pub auth: crate::auth::AuthSettings,
    /// How backends are health-checked (`BACKEND HEALTH`).
    pub health: HealthPolicy,
}

/// The view of the configuration a session takes when its vhost is known.
#[derive(Debug, Clone, Default)]
pub struct ConfigSnapshot {
    pub config: Config,
}

impl ConfigSnapshot {
    pub fn new(config: Config) -> Arc<ConfigSnapshot> {
        Arc::new(ConfigSnapshot { config })
    }
}
