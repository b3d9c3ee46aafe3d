//! The process-wide registry of per-vhost limiters: one [`Limits`] behind an
//! `Arc`, shared by the control thread and every shard (see
//! `docs/commands.md#auth-and-limit`).
//!
//! Owns the settings in force and one [`VhostLimiter`] per vhost seen, made
//! the first time a session of that vhost is admitted (so a DEFAULT limit is
//! N per second for *each* vhost, as in the original) and dropped again once
//! idle if the map grows large. A change applies at once to live sessions:
//! limiters are refreshed in place and sessions hold them by `Arc`.
//!
//! The map's lock is held only for a lookup, an insert or a control change,
//! never across an await and never by the pump. Never logs, never reads a
//! clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use super::admission::{Admission, ConnRateAlarm, ConnectionSlot, LimitRefusal};
use super::bucket::{AlarmBucket, TokenBucket};
use super::render;
use super::settings::{
    LimitChange, LimitKind, LimitScope, LimitSettings, LimitSource, LimitValueError, PerVhost,
};
use super::window::RateWindow;
use super::Stamp;

/// Above this many vhost limiters, idle ones are dropped when a new one is
/// made; the threshold doubles if most are busy, so pruning stays amortised.
const PRUNE_THRESHOLD: usize = 1024;

/// An effective connection limit in one atomic word: the value, a bit for
/// "from the default", or [`NO_LIMIT`].
const NO_LIMIT: u64 = u64::MAX;
const FROM_DEFAULT: u64 = 1 << 32;

fn encode(effective: Option<(u32, LimitSource)>) -> u64 {
    match effective {
        None => NO_LIMIT,
        Some((n, LimitSource::Vhost)) => u64::from(n),
        Some((n, LimitSource::Default)) => u64::from(n) | FROM_DEFAULT,
    }
}

fn decode(word: u64) -> Option<(u32, LimitSource)> {
    if word == NO_LIMIT {
        return None;
    }
    let source = if word & FROM_DEFAULT != 0 {
        LimitSource::Default
    } else {
        LimitSource::Vhost
    };
    Some((word as u32, source))
}

/// A connection-rate limiter slot: the limit in force and its window.
#[derive(Debug)]
struct RateRule {
    limit: AtomicU64,
    window: RateWindow,
}

impl RateRule {
    fn new(effective: Option<(u32, LimitSource)>) -> RateRule {
        RateRule {
            limit: AtomicU64::new(encode(effective)),
            window: RateWindow::new(),
        }
    }

    fn limit(&self) -> Option<(u32, LimitSource)> {
        decode(self.limit.load(Ordering::Acquire))
    }

    /// Installs the limit as a new limiter would be: counters start afresh.
    fn replace(&self, effective: Option<(u32, LimitSource)>) {
        self.limit.store(encode(effective), Ordering::Release);
        self.window.reset();
    }
}

/// One direction's data limits of a vhost: the shaping bucket all its
/// sessions share, and the alarm bucket.
#[derive(Debug)]
pub struct DirectionLimits {
    pub shaping: TokenBucket,
    pub alarm: AlarmBucket,
}

impl DirectionLimits {
    fn new(settings: &LimitSettings, vhost: &str) -> DirectionLimits {
        DirectionLimits {
            shaping: TokenBucket::shaping(rate(&settings.data_rate, vhost)),
            alarm: AlarmBucket::new(rate(&settings.data_rate_alarm, vhost)),
        }
    }

    fn refresh(&self, settings: &LimitSettings, vhost: &str) {
        self.shaping.set_rate(rate(&settings.data_rate, vhost));
        self.alarm.set_rate(rate(&settings.data_rate_alarm, vhost));
    }
}

fn rate(p: &PerVhost<u64>, vhost: &str) -> Option<u64> {
    p.effective(vhost).map(|(r, _)| r)
}

/// The live limiters of one vhost, shared by all its sessions on all shards.
#[derive(Debug)]
pub struct VhostLimiter {
    vhost: Arc<str>,
    conn_rate: RateRule,
    conn_rate_alarm: RateRule,
    conn_count: AtomicU64,
    live: AtomicU32,
    pub(crate) to_broker: DirectionLimits,
    pub(crate) to_client: DirectionLimits,
}

impl VhostLimiter {
    fn new(vhost: &str, settings: &LimitSettings) -> VhostLimiter {
        VhostLimiter {
            vhost: Arc::from(vhost),
            conn_rate: RateRule::new(settings.conn_rate.effective(vhost)),
            conn_rate_alarm: RateRule::new(settings.conn_rate_alarm.effective(vhost)),
            conn_count: AtomicU64::new(encode(settings.conn_count.effective(vhost))),
            live: AtomicU32::new(0),
            to_broker: DirectionLimits::new(settings, vhost),
            to_client: DirectionLimits::new(settings, vhost),
        }
    }

    pub fn vhost(&self) -> &Arc<str> {
        &self.vhost
    }

    /// Sessions of this vhost admitted and not yet ended.
    pub fn live(&self) -> u32 {
        self.live.load(Ordering::Acquire)
    }

    pub(crate) fn release(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    /// Re-reads every effective value; with `reset`, the connection-rate
    /// limiters of `kinds` start afresh (a replaced limiter).
    fn refresh(&self, settings: &LimitSettings, reset: &[LimitKind]) {
        let v = &*self.vhost;
        for (kind, rule, per) in [
            (LimitKind::ConnRate, &self.conn_rate, &settings.conn_rate),
            (
                LimitKind::ConnRateAlarm,
                &self.conn_rate_alarm,
                &settings.conn_rate_alarm,
            ),
        ] {
            let effective = per.effective(v);
            if reset.contains(&kind) {
                rule.replace(effective);
            } else {
                rule.limit.store(encode(effective), Ordering::Release);
            }
        }
        self.conn_count
            .store(encode(settings.conn_count.effective(v)), Ordering::Release);
        self.to_broker.refresh(settings, v);
        self.to_client.refresh(settings, v);
    }

    fn is_idle(&self, now: Stamp) -> bool {
        self.live() == 0 && self.conn_rate.window.is_idle(now) && {
            self.conn_rate_alarm.window.is_idle(now)
        }
    }

    /// The admission checks in the original's order: the alarm rate (logs
    /// only), the enforced rate, then the concurrent cap (this project's
    /// addition). A request refused by the cap has used its place in the
    /// rate window, as any request the rate limiter admitted has.
    fn admit(self: &Arc<Self>, now: Stamp) -> Admission {
        let alarm = self.conn_rate_alarm.limit().and_then(|(limit, source)| {
            (!self.conn_rate_alarm.window.try_admit(limit, now)).then(|| ConnRateAlarm {
                vhost: self.vhost.clone(),
                limit,
                origin: source,
            })
        });
        if let Some((limit, source)) = self.conn_rate.limit() {
            if !self.conn_rate.window.try_admit(limit, now) {
                let refusal = LimitRefusal::ConnRate {
                    vhost: self.vhost.clone(),
                    limit,
                    origin: source,
                };
                return Admission {
                    alarm,
                    outcome: Err(refusal),
                };
            }
        }
        let outcome = self.take_slot();
        Admission { alarm, outcome }
    }

    fn take_slot(self: &Arc<Self>) -> Result<ConnectionSlot, LimitRefusal> {
        let mut live = self.live.load(Ordering::Acquire);
        loop {
            if let Some((cap, source)) = decode(self.conn_count.load(Ordering::Acquire)) {
                if live >= cap {
                    return Err(LimitRefusal::ConnCount {
                        vhost: self.vhost.clone(),
                        cap,
                        origin: source,
                    });
                }
            }
            match self.live.compare_exchange_weak(
                live,
                live + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(ConnectionSlot::new(self.clone())),
                Err(seen) => live = seen,
            }
        }
    }
}

#[derive(Debug)]
struct State {
    settings: LimitSettings,
    vhosts: HashMap<String, Arc<VhostLimiter>>,
    prune_at: usize,
}

/// Every limit of the process. Make one, share it by `Arc`.
#[derive(Debug)]
pub struct Limits {
    state: RwLock<State>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(LimitSettings::default())
    }
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Limits {
        // Fix the time line's origin before any session stamps a time.
        Stamp::origin();
        Limits {
            state: RwLock::new(State {
                settings,
                vhosts: HashMap::new(),
                prune_at: PRUNE_THRESHOLD,
            }),
        }
    }

    pub fn settings(&self) -> LimitSettings {
        self.read().settings.clone()
    }

    /// Whether any limit is set, for any vhost (without copying them).
    pub fn is_configured(&self) -> bool {
        !self.read().settings.is_empty()
    }

    /// Replaces every setting (`--config`, or a whole new configuration
    /// published by the control thread). Idempotent: a connection-rate
    /// limiter starts afresh only where its effective limit changed, so
    /// calling this after every unrelated change disturbs nothing.
    pub fn configure(&self, settings: LimitSettings) {
        let mut state = self.write();
        let old = std::mem::replace(&mut state.settings, settings);
        let State {
            settings, vhosts, ..
        } = &mut *state;
        for (vhost, limiter) in vhosts.iter() {
            let reset: Vec<LimitKind> = [LimitKind::ConnRate, LimitKind::ConnRateAlarm]
                .into_iter()
                .filter(|kind| {
                    settings_rate(&old, *kind).effective(vhost)
                        != settings_rate(settings, *kind).effective(vhost)
                })
                .collect();
            limiter.refresh(settings, &reset);
        }
    }

    /// Applies one `LIMIT` change to the settings and to live sessions. As
    /// in the original, setting or disabling a connection rate replaces the
    /// limiters it affects (their counters start afresh): a vhost's own for
    /// a VHOST change, every limiter now using the default for a DEFAULT
    /// change. Disabling a vhost's own rate falls back to the default at
    /// once.
    pub fn apply(&self, change: &LimitChange) -> Result<(), LimitValueError> {
        let mut state = self.write();
        state.settings.apply(change)?;
        let kind = change.kind();
        let is_rate = matches!(kind, LimitKind::ConnRate | LimitKind::ConnRateAlarm);
        let State {
            settings, vhosts, ..
        } = &mut *state;
        match change.scope() {
            LimitScope::Vhost(vhost) => {
                if let Some(limiter) = vhosts.get(vhost) {
                    let reset = if is_rate { vec![kind] } else { Vec::new() };
                    limiter.refresh(settings, &reset);
                } else if is_rate && settings_rate(settings, kind).effective(vhost).is_some() {
                    // A vhost's rate limiter exists from the moment it is
                    // set (and `LIMIT PRINT` says so).
                    vhosts.insert(vhost.clone(), Arc::new(VhostLimiter::new(vhost, settings)));
                }
            }
            LimitScope::Default => {
                for (vhost, limiter) in vhosts.iter() {
                    let uses_default = is_rate
                        && !settings_rate(settings, kind)
                            .vhosts
                            .contains_key(vhost.as_str());
                    let reset = if uses_default { vec![kind] } else { Vec::new() };
                    limiter.refresh(settings, &reset);
                }
            }
        }
        Ok(())
    }

    /// Admits one session of `vhost` at `now`, or says why not. The slot it
    /// returns counts the session until dropped.
    pub fn admit(&self, vhost: &str, now: Stamp) -> Admission {
        self.limiter(vhost, now).admit(now)
    }

    /// The `LIMIT PRINT [vhost]` reply.
    pub fn print(&self, vhost: Option<&str>) -> String {
        let state = self.read();
        match vhost {
            None => render::print_defaults(&state.settings),
            Some(v) => render::print_vhost(&state.settings, v, state.vhosts.contains_key(v)),
        }
    }

    /// Live sessions of `vhost` across all shards.
    pub fn live_connections(&self, vhost: &str) -> u32 {
        self.read().vhosts.get(vhost).map_or(0, |l| l.live())
    }

    /// The vhost's limiter, made (from the settings in force) if it is new.
    fn limiter(&self, vhost: &str, now: Stamp) -> Arc<VhostLimiter> {
        if let Some(limiter) = self.read().vhosts.get(vhost) {
            return limiter.clone();
        }
        let mut state = self.write();
        if let Some(limiter) = state.vhosts.get(vhost) {
            return limiter.clone();
        }
        if state.vhosts.len() >= state.prune_at {
            prune(&mut state, now);
        }
        let limiter = Arc::new(VhostLimiter::new(vhost, &state.settings));
        state.vhosts.insert(vhost.to_owned(), limiter.clone());
        limiter
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn settings_rate(settings: &LimitSettings, kind: LimitKind) -> &PerVhost<u32> {
    match kind {
        LimitKind::ConnRateAlarm => &settings.conn_rate_alarm,
        _ => &settings.conn_rate,
    }
}

/// Drops limiters no session holds, whose windows have expired and that no
/// setting names: a fresh one would behave the same. Clients choose vhost
/// names, so without this the map would grow with every name tried.
fn prune(state: &mut State, now: Stamp) {
    let State {
        settings, vhosts, ..
    } = &mut *state;
    vhosts.retain(|vhost, limiter| {
        Arc::strong_count(limiter) > 1 || !limiter.is_idle(now) || settings.names_vhost(vhost)
    });
    state.prune_at = (state.vhosts.len() * 2).max(PRUNE_THRESHOLD);
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
