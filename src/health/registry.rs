//! The health registry shared by every shard, the probe thread and the
//! control commands: one [`BackendHealth`] per configured backend, keyed by
//! backend name, with what the probe needs to reach it.
//!
//! Shards read it (one lock-free map load and a few atomic loads per routed
//! session, never per frame) and report their sessions' outcomes, which
//! store nothing while the backend stays settled up; the map is replaced as
//! a whole when the backend list changes ([`HealthRegistry::sync`]). It
//! never opens a socket and never decides a route: [`filter_up`] is the pure
//! helper routing uses.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::probe::ProbeTarget;
use super::state::{BackendHealth, HealthSnapshot, Observer, Outcome, Recorded};
use super::HealthPolicy;

/// One backend's entry: how to probe it and its health.
#[derive(Debug)]
pub struct Entry {
    pub target: ProbeTarget,
    pub health: BackendHealth,
}

/// Every backend's health; see the module documentation.
#[derive(Debug)]
pub struct HealthRegistry {
    epoch: Instant,
    policy: ArcSwap<HealthPolicy>,
    entries: ArcSwap<BTreeMap<String, Arc<Entry>>>,
}

impl HealthRegistry {
    pub fn new(policy: HealthPolicy) -> HealthRegistry {
        HealthRegistry {
            epoch: Instant::now(),
            policy: ArcSwap::from_pointee(policy),
            entries: ArcSwap::from_pointee(BTreeMap::new()),
        }
    }

    /// Time since the registry was created: the clock of every health
    /// record and snapshot.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub fn policy(&self) -> HealthPolicy {
        **self.policy.load()
    }

    /// Replaces the policy (a `BACKEND HEALTH` command); states are kept.
    pub fn set_policy(&self, policy: HealthPolicy) {
        self.policy.store(Arc::new(policy));
    }

    /// Makes the registry hold exactly `targets`: new backends start
    /// unknown, removed ones are forgotten, and a backend whose address,
    /// port, PROXY header or TLS setting changed starts over.
    pub fn sync(&self, targets: impl IntoIterator<Item = ProbeTarget>) {
        let old = self.entries.load();
        let mut next = BTreeMap::new();
        for target in targets {
            let entry = match old.get(&target.name) {
                Some(e) if e.target == target => Arc::clone(e),
                _ => Arc::new(Entry {
                    target,
                    health: BackendHealth::new(),
                }),
            };
            next.insert(entry.target.name.clone(), entry);
        }
        // Only the control thread calls this, so a plain store cannot lose
        // a concurrent sync.
        self.entries.store(Arc::new(next));
    }

    pub fn entry(&self, name: &str) -> Option<Arc<Entry>> {
        self.entries.load().get(name).cloned()
    }

    /// Every entry, in name order (for the probe and for display).
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.entries.load().values().cloned().collect()
    }

    /// Whether sessions may be sent to `name` now. A backend the registry
    /// does not know (added a moment ago) is routable.
    pub fn is_routable(&self, name: &str) -> bool {
        let entries = self.entries.load();
        match entries.get(name) {
            None => true,
            Some(e) => e.health.routable(self.now(), &self.policy.load()),
        }
    }

    /// Records an observation of `name`; `None` if it is not registered.
    pub fn record(
        &self,
        name: &str,
        outcome: Outcome,
        reason: Option<&dyn fmt::Display>,
    ) -> Option<Recorded> {
        // Borrowed from the map, not cloned: a clone would write the
        // entry's shared reference count at every session.
        let entries = self.entries.load();
        let entry = entries.get(name)?;
        Some(
            entry
                .health
                .record(outcome, reason, self.now(), &self.policy.load()),
        )
    }

    /// A session could not connect to `name`, or the broker failed before
    /// `Connection.Start` / `OpenOk` (passive checking).
    pub fn session_failed(&self, name: &str, reason: &dyn fmt::Display) -> Option<Recorded> {
        let outcome = Outcome {
            observer: Observer::Session,
            ok: false,
        };
        self.record(name, outcome, Some(reason))
    }

    /// A session completed its handshake with `name`.
    pub fn session_succeeded(&self, name: &str) -> Option<Recorded> {
        let outcome = Outcome {
            observer: Observer::Session,
            ok: true,
        };
        self.record(name, outcome, None)
    }

    /// Every backend's health, in name order.
    pub fn snapshot(&self) -> Vec<(String, HealthSnapshot)> {
        self.entries
            .load()
            .iter()
            .map(|(name, e)| (name.clone(), e.health.snapshot()))
            .collect()
    }
}

/// Something routing orders that has a backend name.
pub trait Named {
    fn backend_name(&self) -> &str;
}

impl Named for crate::config::Backend {
    fn backend_name(&self) -> &str {
        &self.name
    }
}

impl Named for String {
    fn backend_name(&self) -> &str {
        self
    }
}

impl Named for str {
    fn backend_name(&self) -> &str {
        self
    }
}

impl<T: Named + ?Sized> Named for &T {
    fn backend_name(&self) -> &str {
        (**self).backend_name()
    }
}

/// Removes the members that are down from a session's candidate list, in
/// place and keeping the order, as long as at least one member is
/// routable; when none is, all stay (a client is refused only after every
/// member was tried). Returns how many were skipped.
pub fn filter_up<T: Named>(members: &mut Vec<T>, registry: &HealthRegistry) -> usize {
    let entries = registry.entries.load();
    let now = registry.now();
    let policy = registry.policy.load();
    let routable = |m: &T| match entries.get(m.backend_name()) {
        None => true,
        Some(e) => e.health.routable(now, &policy),
    };
    if !members.iter().any(routable) {
        return 0;
    }
    let before = members.len();
    members.retain(routable);
    before - members.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyHeader;
    use crate::health::HealthState;

    fn target(name: &str, port: u16) -> ProbeTarget {
        ProbeTarget {
            name: name.into(),
            host: "127.0.0.1".into(),
            address: Some([127, 0, 0, 1].into()),
            port,
            proxy_header: ProxyHeader::None,
            tls: false,
        }
    }

    fn registry(names: &[&str]) -> HealthRegistry {
        let r = HealthRegistry::new(HealthPolicy {
            passive_fall: 1,
            interval: Some(Duration::from_secs(1)),
            ..HealthPolicy::default()
        });
        r.sync(names.iter().map(|n| target(n, 5672)));
        r
    }

    #[test]
    fn filter_up_skips_down_members_and_keeps_order() {
        let r = registry(&["a", "b", "c"]);
        r.session_failed("b", &"refused");
        let mut members = vec!["a", "b", "c", "unregistered"];
        assert_eq!(filter_up(&mut members, &r), 1);
        assert_eq!(members, ["a", "c", "unregistered"]);
    }

    #[test]
    fn filter_up_keeps_everyone_when_all_are_down() {
        let r = registry(&["a", "b"]);
        r.session_failed("a", &"refused");
        r.session_failed("b", &"refused");
        let mut members = vec!["b".to_string(), "a".to_string()];
        assert_eq!(filter_up(&mut members, &r), 0);
        assert_eq!(members, ["b", "a"]);
        assert!(!r.is_routable("a"));
        assert!(r.is_routable("nobody"));
    }

    #[test]
    fn sync_keeps_unchanged_backends_and_restarts_changed_ones() {
        let r = registry(&["a", "b", "c"]);
        for n in ["a", "b", "c"] {
            r.session_failed(n, &"refused");
        }
        r.sync([target("a", 5672), target("b", 5673), target("d", 5672)]);
        let states: Vec<(String, HealthState)> = r
            .snapshot()
            .into_iter()
            .map(|(n, s)| (n, s.counters.state))
            .collect();
        assert_eq!(
            states,
            [
                ("a".to_string(), HealthState::Down),
                ("b".to_string(), HealthState::Unknown),
                ("d".to_string(), HealthState::Unknown),
            ]
        );
        assert!(r.session_failed("c", &"gone").is_none());
    }

    #[test]
    fn a_session_success_brings_a_backend_back() {
        let r = registry(&["a"]);
        let rec = r.session_failed("a", &"refused").unwrap();
        assert!(rec.changed());
        let rec = r.session_succeeded("a").unwrap();
        assert_eq!(
            (rec.before, rec.after),
            (HealthState::Down, HealthState::Up)
        );
    }
}
