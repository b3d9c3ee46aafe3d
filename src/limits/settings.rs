//! The limits an operator configures, as plain values: what `LIMIT` sets,
//! what `CONFIG DUMP` prints and what `--config` restores (see
//! `docs/commands.md#auth-and-limit` and `docs/commands.md#config`).
//!
//! Owns the typed form of every limit setting ([`LimitSettings`]), the
//! changes a `LIMIT` command makes ([`LimitChange`]) and how one is applied.
//! Never parses command lines (the control grammar does), never touches a
//! clock or a counter: the live limiters in [`super::Limits`] are built from
//! these values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which limit a `LIMIT` command names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LimitKind {
    /// New connections per second, enforced (506 Close after 750 ms).
    ConnRate,
    /// New connections per second, only logged and counted.
    ConnRateAlarm,
    /// Concurrent connections, enforced; existing sessions are kept.
    ConnCount,
    /// Bytes per second, per direction, shaped.
    DataRate,
    /// Bytes per second, per direction, only logged and counted.
    DataRateAlarm,
}

impl LimitKind {
    pub const ALL: [LimitKind; 5] = [
        LimitKind::ConnRate,
        LimitKind::ConnRateAlarm,
        LimitKind::ConnCount,
        LimitKind::DataRate,
        LimitKind::DataRateAlarm,
    ];

    /// The command keyword, e.g. `CONN_RATE_ALARM`.
    pub fn keyword(self) -> &'static str {
        match self {
            LimitKind::ConnRate => "CONN_RATE",
            LimitKind::ConnRateAlarm => "CONN_RATE_ALARM",
            LimitKind::ConnCount => "CONN_COUNT",
            LimitKind::DataRate => "DATA_RATE",
            LimitKind::DataRateAlarm => "DATA_RATE_ALARM",
        }
    }

    /// The kind named by an exact keyword. Case is the caller's business:
    /// the original upper-cases it except after `DISABLE`.
    pub fn from_keyword(word: &str) -> Option<LimitKind> {
        LimitKind::ALL.into_iter().find(|k| k.keyword() == word)
    }

    /// Connection limits count in `u32`; byte rates in `u64`.
    pub fn max_value(self) -> u64 {
        match self {
            LimitKind::ConnRate | LimitKind::ConnRateAlarm | LimitKind::ConnCount => {
                u64::from(u32::MAX)
            }
            LimitKind::DataRate | LimitKind::DataRateAlarm => u64::MAX,
        }
    }
}

/// Whether a setting is the default for every vhost or one vhost's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LimitScope {
    Default,
    Vhost(String),
}

/// One `LIMIT` command's effect on the settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitChange {
    Set {
        kind: LimitKind,
        scope: LimitScope,
        value: u64,
    },
    Disable {
        kind: LimitKind,
        scope: LimitScope,
    },
}

impl LimitChange {
    pub fn kind(&self) -> LimitKind {
        match self {
            LimitChange::Set { kind, .. } | LimitChange::Disable { kind, .. } => *kind,
        }
    }

    pub fn scope(&self) -> &LimitScope {
        match self {
            LimitChange::Set { scope, .. } | LimitChange::Disable { scope, .. } => scope,
        }
    }
}

/// A value too large for the limit it was given to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value} is too large for {}: at most {}", .kind.keyword(), .kind.max_value())]
pub struct LimitValueError {
    pub kind: LimitKind,
    pub value: u64,
}

/// Where an effective limit comes from; log lines say `default ` for the
/// default's limiters, as the original does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    Default,
    Vhost,
}

/// A default and per-vhost overrides of one limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PerVhost<T> {
    pub default: Option<T>,
    pub vhosts: BTreeMap<String, T>,
}

impl<T> Default for PerVhost<T> {
    fn default() -> Self {
        PerVhost {
            default: None,
            vhosts: BTreeMap::new(),
        }
    }
}

impl<T: Copy> PerVhost<T> {
    /// The vhost's own value, else the default.
    pub fn effective(&self, vhost: &str) -> Option<(T, LimitSource)> {
        match self.vhosts.get(vhost) {
            Some(v) => Some((*v, LimitSource::Vhost)),
            None => self.default.map(|d| (d, LimitSource::Default)),
        }
    }

    fn set(&mut self, scope: &LimitScope, value: Option<T>) {
        match (scope, value) {
            (LimitScope::Default, value) => self.default = value,
            (LimitScope::Vhost(v), Some(value)) => {
                self.vhosts.insert(v.clone(), value);
            }
            (LimitScope::Vhost(v), None) => {
                self.vhosts.remove(v);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.vhosts.is_empty()
    }
}

/// Every limit setting of the proxy. An empty value limits nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitSettings {
    pub conn_rate: PerVhost<u32>,
    pub conn_rate_alarm: PerVhost<u32>,
    pub conn_count: PerVhost<u32>,
    /// Bytes per second for each direction of a vhost's sessions together.
    pub data_rate: PerVhost<u64>,
    pub data_rate_alarm: PerVhost<u64>,
}

impl LimitSettings {
    /// Applies one change; a value out of range changes nothing.
    pub fn apply(&mut self, change: &LimitChange) -> Result<(), LimitValueError> {
        let (kind, scope, value) = match change {
            LimitChange::Set { kind, scope, value } => (*kind, scope, Some(*value)),
            LimitChange::Disable { kind, scope } => (*kind, scope, None),
        };
        if let Some(value) = value {
            if value > kind.max_value() {
                return Err(LimitValueError { kind, value });
            }
        }
        // In range, checked above.
        let narrow = value.map(|v| v as u32);
        match kind {
            LimitKind::ConnRate => self.conn_rate.set(scope, narrow),
            LimitKind::ConnRateAlarm => self.conn_rate_alarm.set(scope, narrow),
            LimitKind::ConnCount => self.conn_count.set(scope, narrow),
            LimitKind::DataRate => self.data_rate.set(scope, value),
            LimitKind::DataRateAlarm => self.data_rate_alarm.set(scope, value),
        }
        Ok(())
    }

    /// Whether nothing is limited, for any vhost.
    pub fn is_empty(&self) -> bool {
        self.conn_rate.is_empty()
            && self.conn_rate_alarm.is_empty()
            && self.conn_count.is_empty()
            && self.data_rate.is_empty()
            && self.data_rate_alarm.is_empty()
    }

    /// Whether any setting names this vhost itself.
    pub fn names_vhost(&self, vhost: &str) -> bool {
        self.conn_rate.vhosts.contains_key(vhost)
            || self.conn_rate_alarm.vhosts.contains_key(vhost)
            || self.conn_count.vhosts.contains_key(vhost)
            || self.data_rate.vhosts.contains_key(vhost)
            || self.data_rate_alarm.vhosts.contains_key(vhost)
    }

    /// The changes that rebuild these settings from nothing, in a stable
    /// order (kind, then default before vhosts by name): what `CONFIG DUMP`
    /// prints as `LIMIT` lines.
    pub fn changes(&self) -> Vec<LimitChange> {
        let mut out = Vec::new();
        for kind in LimitKind::ALL {
            let (default, vhosts): (Option<u64>, Vec<(&String, u64)>) = match kind {
                LimitKind::ConnRate => widen(&self.conn_rate),
                LimitKind::ConnRateAlarm => widen(&self.conn_rate_alarm),
                LimitKind::ConnCount => widen(&self.conn_count),
                LimitKind::DataRate => (
                    self.data_rate.default,
                    self.data_rate.vhosts.iter().map(|(k, v)| (k, *v)).collect(),
                ),
                LimitKind::DataRateAlarm => (
                    self.data_rate_alarm.default,
                    self.data_rate_alarm
                        .vhosts
                        .iter()
                        .map(|(k, v)| (k, *v))
                        .collect(),
                ),
            };
            if let Some(value) = default {
                out.push(LimitChange::Set {
                    kind,
                    scope: LimitScope::Default,
                    value,
                });
            }
            for (vhost, value) in vhosts {
                out.push(LimitChange::Set {
                    kind,
                    scope: LimitScope::Vhost(vhost.clone()),
                    value,
                });
            }
        }
        out
    }
}

fn widen(p: &PerVhost<u32>) -> (Option<u64>, Vec<(&String, u64)>) {
    (
        p.default.map(u64::from),
        p.vhosts.iter().map(|(k, v)| (k, u64::from(*v))).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(kind: LimitKind, scope: LimitScope, value: u64) -> LimitChange {
        LimitChange::Set { kind, scope, value }
    }

    #[test]
    fn vhost_value_wins_over_default_and_disable_falls_back() {
        let mut s = LimitSettings::default();
        s.apply(&set(LimitKind::ConnRate, LimitScope::Default, 10))
            .unwrap();
        s.apply(&set(LimitKind::ConnRate, LimitScope::Vhost("a".into()), 3))
            .unwrap();
        assert_eq!(s.conn_rate.effective("a"), Some((3, LimitSource::Vhost)));
        assert_eq!(s.conn_rate.effective("b"), Some((10, LimitSource::Default)));
        s.apply(&LimitChange::Disable {
            kind: LimitKind::ConnRate,
            scope: LimitScope::Vhost("a".into()),
        })
        .unwrap();
        assert_eq!(s.conn_rate.effective("a"), Some((10, LimitSource::Default)));
        assert!(!s.names_vhost("a"));
    }

    #[test]
    fn connection_limits_are_32_bit_and_a_bad_value_changes_nothing() {
        let mut s = LimitSettings::default();
        let too_big = u64::from(u32::MAX) + 1;
        let err = s
            .apply(&set(LimitKind::ConnCount, LimitScope::Default, too_big))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "4294967296 is too large for CONN_COUNT: at most 4294967295"
        );
        assert_eq!(s, LimitSettings::default());
        s.apply(&set(LimitKind::DataRate, LimitScope::Default, u64::MAX))
            .unwrap();
        assert_eq!(s.data_rate.default, Some(u64::MAX));
    }

    #[test]
    fn changes_rebuild_the_same_settings() {
        let mut s = LimitSettings::default();
        for change in [
            set(LimitKind::DataRateAlarm, LimitScope::Vhost("z".into()), 7),
            set(LimitKind::ConnRate, LimitScope::Vhost("b".into()), 0),
            set(LimitKind::ConnRate, LimitScope::Default, 5),
            set(LimitKind::ConnRateAlarm, LimitScope::Default, 50),
            set(LimitKind::ConnCount, LimitScope::Vhost("a".into()), 2),
            set(LimitKind::DataRate, LimitScope::Default, 1_000_000),
        ] {
            s.apply(&change).unwrap();
        }
        let changes = s.changes();
        assert_eq!(
            changes[0],
            set(LimitKind::ConnRate, LimitScope::Default, 5),
            "kinds in order, default first"
        );
        let mut rebuilt = LimitSettings::default();
        for c in &changes {
            rebuilt.apply(c).unwrap();
        }
        assert_eq!(rebuilt, s);
    }

    #[test]
    fn settings_round_trip_through_serde_json() {
        let mut s = LimitSettings::default();
        s.apply(&set(LimitKind::DataRate, LimitScope::Vhost("v".into()), 9))
            .unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<LimitSettings>(&json).unwrap(), s);
        assert_eq!(
            serde_json::from_str::<LimitSettings>("{}").unwrap(),
            LimitSettings::default()
        );
    }

    #[test]
    fn keywords_round_trip() {
        for kind in LimitKind::ALL {
            assert_eq!(LimitKind::from_keyword(kind.keyword()), Some(kind));
        }
        assert_eq!(LimitKind::from_keyword("conn_rate"), None);
    }
}
