//! Routing: from a vhost to the ordered list of backends a session will try
//! (see `docs/routing.md`).
//!
//! A farm's members are split into priority partitions (datacenter
//! affinity); the round-robin selector picks the starting member of each
//! partition and advances its marker exactly once per session, and the
//! session then tries every member at most once, partition by partition.
//! Plain functions over a [`ConfigSnapshot`]: no I/O, no locks (the markers
//! are atomics shared by snapshots).

use crate::config::{Backend, Config, ConfigSnapshot, Farm, Mapping, PartitionPolicy};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Where a vhost's sessions are sent, and in which order to try backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `farm <name>` or `backend <name>`, for logs.
    pub via: Mapping,
    pub candidates: Vec<Backend>,
}

/// Why there is no route: every case is refused with 506 "No known broker
/// mapping for vhost ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no mapping and no default farm")]
    NoFarm,
    #[error("mapped farm '{0}' does not exist")]
    MissingFarm(String),
    #[error("mapped backend '{0}' does not exist")]
    MissingBackend(String),
    #[error("farm '{0}' has no backends")]
    EmptyFarm(String),
}

/// Splits a farm's members into priority partitions by its policies.
pub fn partitions(config: &Config, farm: &Farm) -> Vec<Vec<String>> {
    let mut parts = vec![farm.members.clone()];
    for policy in &farm.policies {
        match policy {
            PartitionPolicy::DatacenterAffinity => {
                parts = parts
                    .into_iter()
                    .flat_map(|part| {
                        let (near, far): (Vec<String>, Vec<String>) =
                            part.into_iter().partition(|name| {
                                config
                                    .backends
                                    .get(name)
                                    .is_some_and(|b| b.datacenter == config.datacenter)
                            });
                        [near, far]
                    })
                    .filter(|p| !p.is_empty())
                    .collect();
            }
        }
    }
    parts
}

/// Fresh round-robin markers for a farm, one per partition.
pub fn new_markers(config: &Config, farm: &Farm) -> Arc<Vec<AtomicUsize>> {
    Arc::new(
        partitions(config, farm)
            .iter()
            .map(|_| AtomicUsize::new(0))
            .collect(),
    )
}

/// Recomputes every farm's partitions (after `DATACENTER SET`), which
/// resets their round-robin markers as in the original.
pub fn repartition_all(config: &mut Config) {
    let names: Vec<String> = config.farms.keys().cloned().collect();
    for name in names {
        if let Some(mut farm) = config.farms.get(&name).cloned() {
            farm.markers = new_markers(config, &farm);
            config.farms.insert(name, farm);
        }
    }
}

/// Whether every vhost goes the same way, so the broker can be chosen
/// before the client names its vhost: no vhost mappings, and a default farm
/// that exists. (Limits and an auth service, when they come, will need the
/// vhost first too.)
pub fn vhost_independent(config: &Config) -> bool {
    config.mappings.is_empty()
        && config
            .default_farm
            .as_ref()
            .is_some_and(|f| config.farms.contains_key(f))
}

/// Resolves the route for `vhost`: its own mapping, else the default farm.
/// Advances the chosen farm's round-robin markers once.
pub fn route(snapshot: &ConfigSnapshot, vhost: &str) -> Result<Route, RouteError> {
    let config = &snapshot.config;
    let farm_name = match config.mappings.get(vhost) {
        Some(Mapping::Backend(name)) => {
            let backend = config
                .backends
                .get(name)
                .ok_or_else(|| RouteError::MissingBackend(name.clone()))?;
            return Ok(Route {
                via: Mapping::Backend(name.clone()),
                candidates: vec![backend.clone()],
            });
        }
        Some(Mapping::Farm(name)) => name,
        None => config.default_farm.as_ref().ok_or(RouteError::NoFarm)?,
    };
    let farm = config
        .farms
        .get(farm_name)
        .ok_or_else(|| RouteError::MissingFarm(farm_name.clone()))?;
    let candidates = farm_order(config, farm);
    if candidates.is_empty() {
        return Err(RouteError::EmptyFarm(farm_name.clone()));
    }
    Ok(Route {
        via: Mapping::Farm(farm_name.clone()),
        candidates,
    })
}

/// Every member of `farm` once: partition by partition, each partition
/// rotated to start at its marker. Members deleted since the farm was made
/// are skipped.
fn farm_order(config: &Config, farm: &Farm) -> Vec<Backend> {
    let parts = partitions(config, farm);
    let mut order = Vec::with_capacity(farm.members.len());
    for (i, part) in parts.iter().enumerate() {
        // Every partition's marker moves once per session, so a fallback
        // partition shares the load evenly too when the preferred one is down.
        let start = farm
            .markers
            .get(i)
            .map_or(0, |m| m.fetch_add(1, Ordering::Relaxed));
        for k in 0..part.len() {
            if let Some(b) = config.backends.get(&part[(start + k) % part.len()]) {
                order.push(b.clone());
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendSelector, ProxyHeader};

    fn backend(name: &str, dc: &str) -> Backend {
        Backend {
            name: name.into(),
            datacenter: dc.into(),
            host: "localhost".into(),
            address: Some([127, 0, 0, 1].into()),
            port: 5672,
            proxy_header: ProxyHeader::None,
            tls: false,
            stream_port: crate::config::DEFAULT_STREAM_PORT,
        }
    }

    fn config_with_farm(
        members: &[(&str, &str)],
        policies: Vec<PartitionPolicy>,
        dc: &str,
    ) -> ConfigSnapshot {
        let mut config = Config {
            datacenter: dc.into(),
            ..Config::default()
        };
        for (n, d) in members {
            config.backends.insert(n.to_string(), backend(n, d));
        }
        let mut farm = Farm {
            name: "f".into(),
            selector: BackendSelector::RoundRobin,
            members: members.iter().map(|(n, _)| n.to_string()).collect(),
            policies,
            markers: Arc::new(Vec::new()),
        };
        farm.markers = new_markers(&config, &farm);
        config.farms.insert("f".into(), farm);
        config.default_farm = Some("f".into());
        ConfigSnapshot { config }
    }

    fn names(r: &Route) -> Vec<&str> {
        r.candidates.iter().map(|b| b.name.as_str()).collect()
    }

    #[test]
    fn round_robin_advances_once_per_session() {
        let snap = config_with_farm(&[("b1", ""), ("b2", ""), ("b3", "")], vec![], "");
        let firsts: Vec<String> = (0..30)
            .map(|_| route(&snap, "/").unwrap().candidates[0].name.clone())
            .collect();
        for b in ["b1", "b2", "b3"] {
            assert_eq!(firsts.iter().filter(|f| *f == b).count(), 10, "{firsts:?}");
        }
        assert_eq!(names(&route(&snap, "/").unwrap()), ["b1", "b2", "b3"]);
        assert_eq!(names(&route(&snap, "/").unwrap()), ["b2", "b3", "b1"]);
    }

    #[test]
    fn affinity_prefers_own_datacenter_then_the_rest() {
        let snap = config_with_farm(
            &[
                ("a1", "dc-a"),
                ("b1", "dc-b"),
                ("a2", "dc-a"),
                ("b2", "dc-b"),
            ],
            vec![PartitionPolicy::DatacenterAffinity],
            "dc-b",
        );
        assert_eq!(names(&route(&snap, "/").unwrap()), ["b1", "b2", "a1", "a2"]);
        assert_eq!(names(&route(&snap, "/").unwrap()), ["b2", "b1", "a2", "a1"]);
    }

    #[test]
    fn explicit_mappings_win_and_broken_ones_do_not_fall_back() {
        let mut snap = config_with_farm(&[("b1", "")], vec![], "");
        snap.config
            .mappings
            .insert("direct".into(), Mapping::Backend("b1".into()));
        snap.config
            .mappings
            .insert("gone".into(), Mapping::Backend("nope".into()));
        snap.config
            .mappings
            .insert("nofarm".into(), Mapping::Farm("nope".into()));
        assert_eq!(
            route(&snap, "direct").unwrap().via,
            Mapping::Backend("b1".into())
        );
        assert_eq!(
            route(&snap, "gone"),
            Err(RouteError::MissingBackend("nope".into()))
        );
        assert_eq!(
            route(&snap, "nofarm"),
            Err(RouteError::MissingFarm("nope".into()))
        );
        snap.config.default_farm = None;
        assert_eq!(route(&snap, "other"), Err(RouteError::NoFarm));
    }

    #[test]
    fn only_a_lone_default_farm_is_vhost_independent() {
        let mut snap = config_with_farm(&[("b1", "")], vec![], "");
        assert!(vhost_independent(&snap.config));
        snap.config
            .mappings
            .insert("v".into(), Mapping::Farm("f".into()));
        assert!(!vhost_independent(&snap.config));
        snap.config.mappings.clear();
        snap.config.default_farm = Some("missing".into());
        assert!(!vhost_independent(&snap.config));
    }

    #[test]
    fn deleted_members_are_skipped() {
        let mut snap = config_with_farm(&[("b1", ""), ("b2", "")], vec![], "");
        snap.config.backends.remove("b1");
        assert_eq!(names(&route(&snap, "/").unwrap()), ["b2"]);
    }
}
