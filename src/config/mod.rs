//! The configuration model: backends, farms, vhost mappings, the default farm
//! and the proxy's datacenter (behaviour.md §3.1), and the immutable
//! [`ConfigSnapshot`] the shards read.
//!
//! Only the control thread mutates a [`Config`]; each successful change is
//! published as a whole new snapshot, so a session sees one consistent view.
//! Nothing here does I/O or touches a socket.

use std::collections::BTreeMap;
use std::net::IpAddr;
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
}

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

/// Where a vhost goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    Farm(String),
    Backend(String),
}

/// The whole routing configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub backends: BTreeMap<String, Backend>,
    pub farms: BTreeMap<String, Farm>,
    pub mappings: BTreeMap<String, Mapping>,
    pub default_farm: Option<String>,
    pub datacenter: String,
    /// Vhosts whose new sessions are held at `Open` (`VHOST PAUSE`).
    pub paused_vhosts: std::collections::BTreeSet<String>,
    /// Backends new sessions avoid and live sessions leave
    /// (`BACKEND DRAIN`); a deleted backend leaves this set too.
    pub drained: std::collections::BTreeSet<String>,
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
