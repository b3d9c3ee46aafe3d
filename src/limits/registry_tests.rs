//! The registry as the shards and control commands use it: admission
//! through rate windows and the concurrent cap, live changes, sharing
//! across threads, the data shaper built from a slot, pruning.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::limits::bucket::Allowance;
use crate::limits::shaper::{Direction, SessionShaping};

fn at(ms: u64) -> Stamp {
    Stamp::from_nanos(ms * 1_000_000)
}

fn set(kind: LimitKind, scope: LimitScope, value: u64) -> LimitChange {
    LimitChange::Set { kind, scope, value }
}

fn vhost(v: &str) -> LimitScope {
    LimitScope::Vhost(v.to_owned())
}

fn limits(changes: &[LimitChange]) -> Limits {
    let l = Limits::default();
    for c in changes {
        l.apply(c).unwrap();
    }
    l
}

/// Admits at `ms`; the slot (if any) is kept alive in `keep`.
fn admit(l: &Limits, v: &str, ms: u64, keep: &mut Vec<ConnectionSlot>) -> Result<(), LimitRefusal> {
    let admission = l.admit(v, at(ms));
    admission.outcome.map(|slot| keep.push(slot))
}

#[test]
fn no_settings_admit_everything() {
    let l = Limits::default();
    let mut keep = Vec::new();
    for ms in 0..100 {
        let a = l.admit("v", at(ms));
        assert!(a.alarm.is_none());
        keep.push(a.outcome.unwrap());
    }
    assert_eq!(l.live_connections("v"), 100);
    drop(keep);
    assert_eq!(l.live_connections("v"), 0);
}

#[test]
fn default_rate_is_per_vhost() {
    let l = limits(&[set(LimitKind::ConnRate, LimitScope::Default, 2)]);
    let mut keep = Vec::new();
    for v in ["a", "b"] {
        assert!(admit(&l, v, 10, &mut keep).is_ok());
        assert!(admit(&l, v, 20, &mut keep).is_ok());
    }
    let refusal = admit(&l, "a", 30, &mut keep).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "AMQPPROX_CONNECTION_LIMIT: The connection request for a is limited by default Allow average 2 number of connections per 1 seconds"
    );
    assert_eq!(refusal.reply_code(), 506);
    assert_eq!(
        refusal.close_text(),
        "The connection for a, is limited by proxy."
    );
    assert_eq!(refusal.close_delay(), Duration::from_millis(750));
    assert_eq!(refusal.vhost(), "a");
    // The next window admits again.
    assert!(admit(&l, "a", 1010, &mut keep).is_ok());
}

#[test]
fn zero_refuses_everything() {
    let l = limits(&[set(LimitKind::ConnRate, vhost("v"), 0)]);
    let mut keep = Vec::new();
    for ms in [0, 1000, 5000] {
        let refusal = admit(&l, "v", ms, &mut keep).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "AMQPPROX_CONNECTION_LIMIT: The connection request for v is limited by Allow average 0 number of connections per 1 seconds"
        );
    }
    assert!(admit(&l, "other", 0, &mut keep).is_ok());
}

#[test]
fn alarm_only_logs_and_lets_the_session_in() {
    let l = limits(&[set(LimitKind::ConnRateAlarm, LimitScope::Default, 1)]);
    let first = l.admit("v", at(0));
    assert!(first.alarm.is_none());
    let second = l.admit("v", at(1));
    let alarm = second
        .alarm
        .expect("second connection in the window alarms");
    assert_eq!(
        alarm.to_string(),
        "AMQPPROX_CONNECTION_LIMIT: The connection request for v should be limited by default Allow average 1 number of connections per 1 seconds"
    );
    assert!(second.outcome.is_ok());
}

#[test]
fn vhost_limit_wins_and_disable_falls_back_to_a_fresh_default() {
    let l = limits(&[
        set(LimitKind::ConnRate, LimitScope::Default, 1),
        set(LimitKind::ConnRate, vhost("v"), 3),
    ]);
    let mut keep = Vec::new();
    for ms in 0..3 {
        assert!(admit(&l, "v", ms, &mut keep).is_ok());
    }
    assert!(admit(&l, "v", 3, &mut keep).is_err());
    l.apply(&LimitChange::Disable {
        kind: LimitKind::ConnRate,
        scope: vhost("v"),
    })
    .unwrap();
    // The default's limiter is new: one more in this same second.
    assert!(admit(&l, "v", 4, &mut keep).is_ok());
    assert!(admit(&l, "v", 5, &mut keep).is_err());
}

#[test]
fn changing_the_default_resets_default_limiters_only() {
    let l = limits(&[
        set(LimitKind::ConnRate, LimitScope::Default, 1),
        set(LimitKind::ConnRate, vhost("own"), 1),
    ]);
    let mut keep = Vec::new();
    assert!(admit(&l, "d", 0, &mut keep).is_ok());
    assert!(admit(&l, "own", 0, &mut keep).is_ok());
    l.apply(&set(LimitKind::ConnRate, LimitScope::Default, 1))
        .unwrap();
    assert!(
        admit(&l, "d", 1, &mut keep).is_ok(),
        "default limiter replaced"
    );
    assert!(admit(&l, "own", 1, &mut keep).is_err(), "own limiter kept");
    l.apply(&LimitChange::Disable {
        kind: LimitKind::ConnRate,
        scope: LimitScope::Default,
    })
    .unwrap();
    for ms in 2..10 {
        assert!(admit(&l, "d", ms, &mut keep).is_ok());
    }
}

#[test]
fn concurrent_cap_keeps_existing_sessions_when_lowered() {
    let l = limits(&[set(LimitKind::ConnCount, vhost("v"), 3)]);
    let mut keep = Vec::new();
    for ms in 0..3 {
        assert!(admit(&l, "v", ms, &mut keep).is_ok());
    }
    let refusal = admit(&l, "v", 3, &mut keep).unwrap_err();
    assert_eq!(
        refusal.close_text(),
        "The connection for v, is limited by proxy: at most 3 concurrent connections."
    );
    assert_eq!(
        refusal.to_string(),
        "AMQPPROX_CONNECTION_LIMIT: The connection request for v is limited by Allow at most 3 concurrent connections"
    );
    l.apply(&set(LimitKind::ConnCount, vhost("v"), 1)).unwrap();
    assert_eq!(l.live_connections("v"), 3, "existing sessions kept");
    keep.pop();
    assert!(admit(&l, "v", 4, &mut keep).is_err(), "2 live, cap 1");
    keep.clear();
    assert!(admit(&l, "v", 5, &mut keep).is_ok());
    assert!(admit(&l, "v", 6, &mut keep).is_err());
}

#[test]
fn default_cap_applies_to_each_vhost() {
    let l = limits(&[set(LimitKind::ConnCount, LimitScope::Default, 1)]);
    let mut keep = Vec::new();
    assert!(admit(&l, "a", 0, &mut keep).is_ok());
    assert!(admit(&l, "b", 0, &mut keep).is_ok());
    let refusal = admit(&l, "a", 0, &mut keep).unwrap_err();
    assert!(refusal
        .to_string()
        .ends_with("limited by default Allow at most 1 concurrent connections"));
}

#[test]
fn shards_together_admit_the_rate_and_the_cap() {
    let l = Arc::new(limits(&[
        set(LimitKind::ConnRate, vhost("rate"), 50),
        set(LimitKind::ConnCount, vhost("cap"), 10),
    ]));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                let mut rate_ok = 0;
                for _ in 0..100 {
                    rate_ok += usize::from(l.admit("rate", at(7)).outcome.is_ok());
                    if let Ok(slot) = l.admit("cap", at(7)).outcome {
                        kept.push(slot);
                    }
                }
                (rate_ok, kept)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let rate_ok: usize = results.iter().map(|(n, _)| n).sum();
    let capped: usize = results.iter().map(|(_, kept)| kept.len()).sum();
    assert_eq!(rate_ok, 50);
    assert_eq!(capped, 10);
    assert_eq!(l.live_connections("cap"), 10);
}

#[test]
fn data_limits_reach_live_sessions() {
    let l = Limits::default();
    let slot = l.admit("v", at(0)).outcome.unwrap();
    let session = Arc::new(SessionShaping::default());
    let shaper = slot.data_shaper(session.clone());
    let dir = Direction::ClientToBroker;
    assert!(!shaper.is_metered(dir));
    assert_eq!(shaper.allowance(dir, at(0), 4096), Allowance::Read(4096));

    l.apply(&set(LimitKind::DataRate, vhost("v"), 1_000_000))
        .unwrap();
    assert!(shaper.is_shaped(dir) && shaper.is_shaped(Direction::BrokerToClient));
    assert_eq!(
        shaper.allowance(dir, at(1000), 1 << 20),
        Allowance::Read(100_000)
    );

    // The session's own limit is stricter.
    session.set_rate(Some(10_000));
    assert_eq!(
        shaper.allowance(dir, at(1000), 1 << 20),
        Allowance::Read(1000)
    );

    session.set_rate(None);
    l.apply(&LimitChange::Disable {
        kind: LimitKind::DataRate,
        scope: vhost("v"),
    })
    .unwrap();
    assert!(!shaper.is_shaped_any());
}

#[test]
fn sessions_of_a_vhost_share_its_budget_per_direction() {
    let l = limits(&[set(LimitKind::DataRate, LimitScope::Default, 1_000_000)]);
    let a = l.admit("v", at(0)).outcome.unwrap();
    let b = l.admit("v", at(0)).outcome.unwrap();
    let other = l.admit("w", at(0)).outcome.unwrap();
    let (a, b, other) = (
        a.data_shaper(Arc::default()),
        b.data_shaper(Arc::default()),
        other.data_shaper(Arc::default()),
    );
    let up = Direction::ClientToBroker;
    assert_eq!(a.allowance(up, at(1000), 1 << 20), Allowance::Read(100_000));
    a.charge(up, at(1000), 100_000);
    assert!(matches!(
        b.allowance(up, at(1000), 1 << 20),
        Allowance::Wait(_)
    ));
    // The other direction and other vhosts have their own budgets.
    assert_eq!(
        b.allowance(Direction::BrokerToClient, at(1000), 1 << 20),
        Allowance::Read(100_000)
    );
    assert_eq!(
        other.allowance(up, at(1000), 1 << 20),
        Allowance::Read(100_000)
    );
}

#[test]
fn data_alarm_reports_once_a_second_without_shaping() {
    let l = limits(&[set(LimitKind::DataRateAlarm, vhost("v"), 1000)]);
    let slot = l.admit("v", at(0)).outcome.unwrap();
    let shaper = slot.data_shaper(Arc::default());
    let up = Direction::ClientToBroker;
    assert!(shaper.is_metered(up) && !shaper.is_shaped(up));
    assert_eq!(
        shaper.allowance(up, at(1000), 1 << 20),
        Allowance::Read(1 << 20)
    );
    let alarm = shaper.charge(up, at(1000), 5000).expect("over 1000 B/s");
    assert_eq!(
        alarm.to_string(),
        "Data Rate Alarm: Hit 1000 bytes/s (vhost v, client to broker)"
    );
    assert_eq!(shaper.charge(up, at(1100), 5000), None);
}

#[test]
fn print_says_whether_a_default_limiter_was_materialised() {
    let l = limits(&[set(LimitKind::ConnRate, LimitScope::Default, 4)]);
    assert_eq!(
        l.print(Some("v")),
        "For vhost v, allow average 4 number of connections per second.\n"
    );
    let _ = l.admit("v", at(0));
    assert_eq!(
        l.print(Some("v")),
        "For vhost v, Allow average 4 number of connections per 1 seconds.\n"
    );
    assert_eq!(
        l.print(None),
        "Default limit for any vhost, allow average 4 connections per second.\n"
    );
}

#[test]
fn configure_resets_only_the_limiters_whose_limit_changed() {
    let l = limits(&[
        set(LimitKind::ConnRate, vhost("v"), 1),
        set(LimitKind::ConnRate, vhost("w"), 1),
    ]);
    let mut keep = Vec::new();
    for v in ["v", "w"] {
        assert!(admit(&l, v, 0, &mut keep).is_ok());
        assert!(admit(&l, v, 1, &mut keep).is_err());
    }
    let same = l.settings();
    l.configure(same.clone());
    assert_eq!(l.settings(), same);
    assert!(
        admit(&l, "v", 2, &mut keep).is_err(),
        "unchanged: window kept"
    );

    let mut changed = same;
    changed
        .apply(&set(LimitKind::ConnRate, vhost("w"), 2))
        .unwrap();
    changed
        .apply(&set(LimitKind::DataRate, vhost("v"), 9))
        .unwrap();
    l.configure(changed);
    assert!(
        admit(&l, "v", 3, &mut keep).is_err(),
        "only its data rate changed"
    );
    assert!(
        admit(&l, "w", 3, &mut keep).is_ok(),
        "new limit, new window"
    );

    l.configure(LimitSettings::default());
    for ms in 4..10 {
        assert!(admit(&l, "v", ms, &mut keep).is_ok());
    }
}

#[test]
fn bad_values_change_nothing() {
    let l = Limits::default();
    assert!(l
        .apply(&set(LimitKind::ConnRate, LimitScope::Default, 1 << 40))
        .is_err());
    assert_eq!(l.settings(), LimitSettings::default());
}

#[test]
fn idle_limiters_are_pruned_when_many_vhosts_were_tried() {
    let l = limits(&[set(LimitKind::ConnCount, vhost("named"), 5)]);
    let held = l.admit("held", at(0)).outcome.unwrap();
    let _ = l.admit("named", at(0));
    for i in 0..2000 {
        let _ = l.admit(&format!("probe{i}"), at(0));
    }
    // Later, with every probe's window expired, a new vhost prunes.
    for i in 0..2000 {
        let _ = l.admit(&format!("late{i}"), at(5000));
    }
    let count = l.read().vhosts.len();
    assert!(count < 3000, "{count} limiters kept");
    let state = l.read();
    assert!(state.vhosts.contains_key("held"), "a live session pins it");
    assert!(state.vhosts.contains_key("named"), "a setting pins it");
    drop(state);
    assert_eq!(held.vhost(), "held");
    assert_eq!(l.live_connections("held"), 1);
}
