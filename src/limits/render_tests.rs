//! Golden texts of the `LIMIT` replies: the original's, byte for byte
//! (including the replies without a newline and the two ending in a
//! newline and a space), and this project's `CONN_COUNT` lines.

use super::*;
use crate::limits::settings::{LimitChange, LimitKind, LimitScope, LimitSettings};

fn set(kind: LimitKind, scope: LimitScope, value: u64) -> LimitChange {
    LimitChange::Set { kind, scope, value }
}

fn disable(kind: LimitKind, scope: LimitScope) -> LimitChange {
    LimitChange::Disable { kind, scope }
}

fn vhost(v: &str) -> LimitScope {
    LimitScope::Vhost(v.to_owned())
}

fn settings(changes: &[LimitChange]) -> LimitSettings {
    let mut s = LimitSettings::default();
    for c in changes {
        s.apply(c).unwrap();
    }
    s
}

#[test]
fn print_defaults_when_nothing_is_set() {
    assert_eq!(
        print_defaults(&LimitSettings::default()),
        "No default limit configured for any vhost.\n"
    );
}

#[test]
fn print_defaults_lists_every_default_in_order() {
    let s = settings(&[
        set(LimitKind::DataRate, LimitScope::Default, 2000),
        set(LimitKind::ConnRate, LimitScope::Default, 10),
        set(LimitKind::ConnCount, LimitScope::Default, 100),
        set(LimitKind::DataRateAlarm, LimitScope::Default, 1000),
        set(LimitKind::ConnRateAlarm, LimitScope::Default, 5),
        set(LimitKind::ConnRate, vhost("ignored"), 1),
    ]);
    assert_eq!(
        print_defaults(&s),
        "Default limit for any vhost, allow average 5 connections per second in alarm only mode.\n\
         Default limit for any vhost, allow average 10 connections per second.\n\
         Default data limit for any vhost, allow max 1000 bytes per second in alarm only mode.\n\
         Default data limit for any vhost, allow max 2000 bytes per second.\n\
         Default limit for any vhost, allow at most 100 concurrent connections.\n"
    );
}

#[test]
fn print_vhost_without_limits() {
    assert_eq!(
        print_vhost(&LimitSettings::default(), "v1", true),
        "No limit configured for vhost v1.\n"
    );
}

#[test]
fn print_vhost_with_defaults_not_yet_materialised() {
    let s = settings(&[
        set(LimitKind::ConnRateAlarm, LimitScope::Default, 5),
        set(LimitKind::ConnRate, LimitScope::Default, 10),
        set(LimitKind::DataRateAlarm, LimitScope::Default, 1000),
        set(LimitKind::DataRate, LimitScope::Default, 2000),
    ]);
    assert_eq!(
        print_vhost(&s, "v1", false),
        "Alarm only limit, for vhost v1, allow average 5 number of connections per second.\n\
         For vhost v1, allow average 10 number of connections per second.\n\
         Alarm only data limit, for vhost v1, allow max 1000 bytes per second.\n\
         For vhost v1, allow max 2000 bytes per second.\n"
    );
}

#[test]
fn print_vhost_with_materialised_limiters_and_overrides() {
    let s = settings(&[
        set(LimitKind::ConnRateAlarm, LimitScope::Default, 5),
        set(LimitKind::ConnRate, vhost("v1"), 3),
        set(LimitKind::DataRate, LimitScope::Default, 2000),
        set(LimitKind::DataRate, vhost("v1"), 500),
        set(LimitKind::ConnCount, vhost("v1"), 7),
    ]);
    // The vhost's own rate limiter exists from the moment it is set; the
    // default alarm's once a connection was seen.
    assert_eq!(
        print_vhost(&s, "v1", false),
        "Alarm only limit, for vhost v1, allow average 5 number of connections per second.\n\
         For vhost v1, Allow average 3 number of connections per 1 seconds.\n\
         For vhost v1, allow max 500 bytes per second.\n\
         For vhost v1, allow at most 7 concurrent connections.\n"
    );
    assert_eq!(
        print_vhost(&s, "v1", true),
        "Alarm only limit, for vhost v1, Allow average 5 number of connections per 1 seconds.\n\
         For vhost v1, Allow average 3 number of connections per 1 seconds.\n\
         For vhost v1, allow max 500 bytes per second.\n\
         For vhost v1, allow at most 7 concurrent connections.\n"
    );
}

#[test]
fn set_replies() {
    let cases = [
        (
            set(LimitKind::ConnRateAlarm, LimitScope::Default, 10),
            "Default connection rate limit is set to 10 connections per second in alarm only mode.\n\
             The limiter will only log at warning level with AMQPPROX_CONNECTION_LIMIT as a substring and the relevant limit details, when the new incoming connection violates the default limit for all vhosts.\n",
        ),
        (
            set(LimitKind::ConnRateAlarm, vhost("v"), 3),
            "For vhost v, Allow average 3 number of connections per 1 seconds in alarm only mode.\n\
             The limiter will only log at warning level with AMQPPROX_CONNECTION_LIMIT as a substring and the relevant limit details, when the new incoming connection violates the specified limit.\n",
        ),
        (
            set(LimitKind::ConnRate, LimitScope::Default, 0),
            "Default connection rate limit is set to 0 connections per second.\n",
        ),
        (
            set(LimitKind::ConnRate, vhost("v"), 4),
            "For vhost v, Allow average 4 number of connections per 1 seconds\n",
        ),
        (
            set(LimitKind::ConnCount, LimitScope::Default, 100),
            "Default concurrent connection limit is set to 100 connections for each vhost.\n",
        ),
        (
            set(LimitKind::ConnCount, vhost("v"), 2),
            "For vhost v, allow at most 2 concurrent connections.\n",
        ),
        (set(LimitKind::DataRate, LimitScope::Default, 1), ""),
        (set(LimitKind::DataRate, vhost("v"), 1), ""),
        (set(LimitKind::DataRateAlarm, LimitScope::Default, 1), ""),
        (set(LimitKind::DataRateAlarm, vhost("v"), 1), ""),
    ];
    for (change, reply) in cases {
        assert_eq!(change_reply(&change), reply, "{change:?}");
    }
}

#[test]
fn disable_replies() {
    let cases = [
        (
            disable(LimitKind::ConnRateAlarm, LimitScope::Default),
            "Successfully disabled default alarm only connection rate limit\n ",
        ),
        (
            disable(LimitKind::ConnRateAlarm, vhost("v")),
            "Successfully disabled specific alarm only connection rate limit for vhost v\n",
        ),
        (
            disable(LimitKind::ConnRate, LimitScope::Default),
            "Successfully disabled default connection rate limit\n ",
        ),
        (
            disable(LimitKind::ConnRate, vhost("v")),
            "Successfully disabled specific connection rate limit for vhost v\n",
        ),
        (
            disable(LimitKind::ConnCount, LimitScope::Default),
            "Successfully disabled default concurrent connection limit\n",
        ),
        (
            disable(LimitKind::ConnCount, vhost("v")),
            "Successfully disabled specific concurrent connection limit for vhost v\n",
        ),
        (disable(LimitKind::DataRate, LimitScope::Default), ""),
        (disable(LimitKind::DataRate, vhost("v")), ""),
        (disable(LimitKind::DataRateAlarm, LimitScope::Default), ""),
        (disable(LimitKind::DataRateAlarm, vhost("v")), ""),
    ];
    for (change, reply) in cases {
        assert_eq!(change_reply(&change), reply, "{change:?}");
    }
}

#[test]
fn usage_errors() {
    let cases = [
        (
            LimitUsageError::NoSubcommand,
            "No subcommand provided for LIMIT command.\n",
        ),
        (
            LimitUsageError::NoDisableSubcommand,
            "No subcommand provided for LIMIT DISABLE command.\n",
        ),
        (
            LimitUsageError::InvalidSubcommand,
            "Invalid subcommand provided for LIMIT command.\n",
        ),
        (
            LimitUsageError::NoScope {
                sub: "CONN_RATE".into(),
            },
            "Failed to read (VHOST vhostName | DEFAULT) for CONN_RATE",
        ),
        (
            LimitUsageError::InvalidConnectionCount,
            "Invalid numberOfConnections provided.\n",
        ),
        (
            LimitUsageError::InvalidBytesPerSecond,
            "Failed to read bytesPerSecond",
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
}

#[test]
fn change_commands_for_config_dump() {
    assert_eq!(
        change_command(&set(LimitKind::ConnRateAlarm, vhost("a b"), 3)),
        "LIMIT CONN_RATE_ALARM VHOST a b 3"
    );
    assert_eq!(
        change_command(&set(LimitKind::DataRate, LimitScope::Default, 1_000_000)),
        "LIMIT DATA_RATE DEFAULT 1000000"
    );
    assert_eq!(
        change_command(&disable(LimitKind::ConnCount, LimitScope::Default)),
        "LIMIT DISABLE CONN_COUNT DEFAULT"
    );
}

#[test]
fn dump_lists_every_setting_in_a_stable_order() {
    let s = settings(&[
        set(LimitKind::DataRate, vhost("b"), 2),
        set(LimitKind::ConnCount, LimitScope::Default, 9),
        set(LimitKind::ConnRate, vhost("a"), 1),
    ]);
    assert_eq!(
        dump(&s),
        [
            "LIMIT CONN_RATE VHOST a 1",
            "LIMIT CONN_COUNT DEFAULT 9",
            "LIMIT DATA_RATE VHOST b 2",
        ]
    );
    assert!(dump(&LimitSettings::default()).is_empty());
}
