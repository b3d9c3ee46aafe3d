//! Routing: from a vhost to the ordered list of backends a session will try
//! (see `docs/routing.md`).
//!
//! A farm's members are split into priority partitions (datacenter
//! affinity); the round-robin selector picks the starting member of each
//! partition and advances its marker exactly once per session, and the
//! session then tries every member at most once, partition by partition.
//! Drained members are left out while the farm has a member that is not
//! drained; [`misplaced`] says which live sessions must leave their
//! backend after a change (docs/routing.md#draining-a-backend).
//! Plain functions over a [`ConfigSnapshot`]: no I/O, no locks (the markers
//! are atomics shared by snapshots).

use crate::config::{Backend, Config, ConfigSnapshot, Farm, Mapping, PartitionPolicy};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Where a vhost's sessions are sent, and in which order to try backends.
/// The backends are borrowed from the snapshot the route was made from: a
/// session clones none of them (a farm member is three strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    /// `farm <name>` or `backend <name>`, for logs.
    pub via: Mapping,
    pub candidates: Vec<&'a Backend>,
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

/// Splits a farm's members into priority partitions by its policies
/// (borrowed from the farm: this runs for every session).
pub fn partitions<'a>(config: &Config, farm: &'a Farm) -> Vec<Vec<&'a str>> {
    let mut parts = vec![farm.members.iter().map(String::as_str).collect::<Vec<_>>()];
    for policy in &farm.policies {
        match policy {
            PartitionPolicy::DatacenterAffinity => {
                parts = parts
                    .into_iter()
                    .flat_map(|part| {
                        let (near, far): (Vec<&str>, Vec<&str>) =
                            part.into_iter().partition(|name| {
                                config
                                    .backends
                                    .get(*name)
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
/// Advances the chosen farm's round-robin markers once (those of its
/// partitions with more than one member to rotate).
pub fn route<'a>(snapshot: &'a ConfigSnapshot, vhost: &str) -> Result<Route<'a>, RouteError> {
    let config = &snapshot.config;
    let farm_name = match config.mappings.get(vhost) {
        Some(Mapping::Backend(name)) => {
            let backend = config
                .backends
                .get(name)
                .ok_or_else(|| RouteError::MissingBackend(name.clone()))?;
            return Ok(Route {
                via: Mapping::Backend(name.clone()),
                candidates: vec![backend],
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
/// are skipped, and so are drained members unless every member is drained.
fn farm_order<'a>(config: &'a Config, farm: &Farm) -> Vec<&'a Backend> {
    let skip_drained = has_undrained_member(config, farm);
    let mut order = Vec::with_capacity(farm.members.len());
    let mut add_partition = |i: usize, names: &mut dyn Iterator<Item = &str>| {
        // Drained members leave the rotation before it is applied, so the
        // rest share the load evenly.
        let begin = order.len();
        order.extend(
            names
                .filter_map(|name| config.backends.get(name))
                .filter(|b| !(skip_drained && config.drained.contains(&b.name))),
        );
        let part = &mut order[begin..];
        // Every partition's marker moves once per session, so a fallback
        // partition shares the load evenly too when the preferred one is down.
        // One member has no rotation: its marker is left alone, since every
        // shard writes it and its cache line would move between the cores
        // at each session for nothing.
        if part.len() > 1 {
            let start = farm
                .markers
                .get(i)
                .map_or(0, |m| m.fetch_add(1, Ordering::Relaxed));
            let len = part.len();
            part.rotate_left(start % len);
        }
    };
    if farm.policies.is_empty() {
        // One partition, the members in order: no per-session lists.
        add_partition(0, &mut farm.members.iter().map(String::as_str));
    } else {
        for (i, part) in partitions(config, farm).iter().enumerate() {
            add_partition(i, &mut part.iter().copied());
        }
    }
    order
}

/// Whether some existing member of `farm` is not drained.
fn has_undrained_member(config: &Config, farm: &Farm) -> bool {
    farm.members
        .iter()
        .any(|m| config.backends.contains_key(m) && !config.drained.contains(m))
}

/// Why a live session must leave its backend (the client is told 320 and
/// reconnects through the proxy).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misplaced {
    #[error("backend '{0}' is drained")]
    Drained(String),
    #[error("backend '{0}' was deleted")]
    Deleted(String),
    #[error("farm '{farm}' was deleted")]
    FarmDeleted { farm: String },
    #[error("backend '{backend}' is no longer a member of farm '{farm}'")]
    LeftFarm { farm: String, backend: String },
}

/// Whether a session of `vhost`, routed `via` a farm or a mapping onto
/// `backend`, must move under `config`. It must when its backend was
/// deleted, when the farm that chose it was deleted or no longer lists it,
/// or when it is drained while that farm has a member that is not; and
/// only if its vhost can be routed somewhere else now, since moving a
/// client that would be refused helps nobody. Mapping changes alone move
/// nothing (configuration applies to new sessions, as in the original),
/// and a session mapped straight to a backend moves only when that backend
/// is deleted.
pub fn misplaced(config: &Config, vhost: &str, via: &Mapping, backend: &str) -> Option<Misplaced> {
    let why = if !config.backends.contains_key(backend) {
        Misplaced::Deleted(backend.to_string())
    } else {
        let Mapping::Farm(farm_name) = via else {
            return None;
        };
        match config.farms.get(farm_name) {
            None => Misplaced::FarmDeleted {
                farm: farm_name.clone(),
            },
            Some(farm) if !farm.members.iter().any(|m| m == backend) => Misplaced::LeftFarm {
                farm: farm_name.clone(),
                backend: backend.to_string(),
            },
            Some(farm)
                if config.drained.contains(backend) && has_undrained_member(config, farm) =>
            {
                Misplaced::Drained(backend.to_string())
            }
            Some(_) => return None,
        }
    };
    destinations(config, vhost)
        .iter()
        .any(|d| *d != backend)
        .then_some(why)
}

/// The backends a new session of `vhost` could be sent to now, in no
/// particular order (no round-robin marker moves).
fn destinations<'a>(config: &'a Config, vhost: &str) -> Vec<&'a str> {
    let farm_name = match config.mappings.get(vhost) {
        Some(Mapping::Backend(name)) => {
            return config
                .backends
                .get_key_value(name)
                .map(|(k, _)| k.as_str())
                .into_iter()
                .collect();
        }
        Some(Mapping::Farm(name)) => Some(name),
        None => config.default_farm.as_ref(),
    };
    let Some(farm) = farm_name.and_then(|f| config.farms.get(f)) else {
        return Vec::new();
    };
    let skip_drained = has_undrained_member(config, farm);
    farm.members
        .iter()
        .filter(|m| config.backends.contains_key(*m))
        .filter(|m| !(skip_drained && config.drained.contains(*m)))
        .map(String::as_str)
        .collect()
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

    fn names<'a>(r: &Route<'a>) -> Vec<&'a str> {
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
    fn a_lone_member_leaves_its_marker_alone() {
        let snap = config_with_farm(&[("b1", "")], vec![], "");
        for _ in 0..3 {
            assert_eq!(names(&route(&snap, "/").unwrap()), ["b1"]);
        }
        let farm = &snap.config.farms["f"];
        assert_eq!(farm.markers[0].load(Ordering::Relaxed), 0);
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
    fn drained_members_leave_the_rotation_until_all_are_drained() {
        let mut snap = config_with_farm(&[("b1", ""), ("b2", ""), ("b3", "")], vec![], "");
        snap.config.drained.insert("b2".into());
        let firsts: Vec<String> = (0..30)
            .map(|_| route(&snap, "/").unwrap().candidates[0].name.clone())
            .collect();
        for b in ["b1", "b3"] {
            assert_eq!(firsts.iter().filter(|f| *f == b).count(), 15, "{firsts:?}");
        }
        assert_eq!(names(&route(&snap, "/").unwrap()), ["b1", "b3"]);
        // Nothing left undrained: every member is tried again, in rotation.
        snap.config.drained.extend(["b1".into(), "b3".into()]);
        assert_eq!(route(&snap, "/").unwrap().candidates.len(), 3);
    }

    #[test]
    fn a_drained_partition_falls_through_to_the_next() {
        let mut snap = config_with_farm(
            &[("a1", "dc-a"), ("b1", "dc-b"), ("b2", "dc-b")],
            vec![PartitionPolicy::DatacenterAffinity],
            "dc-b",
        );
        snap.config.drained.extend(["b1".into(), "b2".into()]);
        assert_eq!(names(&route(&snap, "/").unwrap()), ["a1"]);
    }

    #[test]
    fn what_moves_a_live_session() {
        let mut snap = config_with_farm(&[("b1", ""), ("b2", "")], vec![], "");
        let via = Mapping::Farm("f".into());
        let c = &mut snap.config;
        assert_eq!(misplaced(c, "/", &via, "b1"), None);
        c.drained.insert("b1".into());
        assert_eq!(
            misplaced(c, "/", &via, "b1"),
            Some(Misplaced::Drained("b1".into()))
        );
        // Mapped straight to it: nowhere else to go.
        assert_eq!(
            misplaced(c, "/", &Mapping::Backend("b1".into()), "b1"),
            None
        );
        // Every member drained: staying is as good as moving.
        c.drained.insert("b2".into());
        assert_eq!(misplaced(c, "/", &via, "b1"), None);
        c.drained.clear();
        c.farms.get_mut("f").unwrap().members.retain(|m| m != "b2");
        assert_eq!(
            misplaced(c, "/", &via, "b2"),
            Some(Misplaced::LeftFarm {
                farm: "f".into(),
                backend: "b2".into()
            })
        );
        c.backends.remove("b2");
        assert_eq!(
            misplaced(c, "/", &via, "b2"),
            Some(Misplaced::Deleted("b2".into()))
        );
    }

    #[test]
    fn a_session_with_nowhere_else_to_go_stays() {
        let mut snap = config_with_farm(&[("b1", ""), ("b2", "")], vec![], "");
        let via = Mapping::Farm("f".into());
        let c = &mut snap.config;
        // FARM DELETE then FARM ADD of the same name: nothing moves in the
        // gap (every vhost would be refused), then only what left moves.
        let farm = c.farms.remove("f").unwrap();
        assert_eq!(misplaced(c, "/", &via, "b1"), None);
        let mut smaller = farm.clone();
        smaller.members = vec!["b1".into()];
        c.farms.insert("f".into(), smaller);
        assert_eq!(misplaced(c, "/", &via, "b1"), None);
        assert!(matches!(
            misplaced(c, "/", &via, "b2"),
            Some(Misplaced::LeftFarm { .. })
        ));
        // The only member deleted: nothing else to reach.
        c.backends.remove("b2");
        c.farms.get_mut("f").unwrap().members = vec!["b2".into()];
        assert_eq!(misplaced(c, "/", &via, "b2"), None);
        // A deleted farm, and the vhost now goes to a farm without it.
        c.farms.insert("g".into(), farm);
        c.farms.remove("f");
        c.mappings.insert("v".into(), Mapping::Farm("g".into()));
        c.backends.insert("b2".into(), c.backends["b1"].clone());
        c.farms.get_mut("g").unwrap().members = vec!["b1".into()];
        assert_eq!(
            misplaced(c, "v", &via, "b2"),
            Some(Misplaced::FarmDeleted { farm: "f".into() })
        );
        // ... or to one that lists it: it stays.
        assert_eq!(misplaced(c, "v", &via, "b1"), None);
    }

    #[test]
    fn deleted_members_are_skipped() {
        let mut snap = config_with_farm(&[("b1", ""), ("b2", "")], vec![], "");
        snap.config.backends.remove("b1");
        assert_eq!(names(&route(&snap, "/").unwrap()), ["b2"]);
    }
}
