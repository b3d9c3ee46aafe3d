//! Golden transcripts of `LIMIT`, `AUTH` and `SESSION id LIMIT`: control
//! line in, exact reply bytes out (the original's texts, with the final
//! newline every reply gets), against the real `amqpprox` binary; and the
//! `LIMIT` and `AUTH` lines of `CONFIG DUMP` restoring the same settings
//! through `--config`. Needs no broker: these tests never talk AMQP.

mod support;

use support::control::{bare, check, ctl, transcript};
use support::proxy::ProxyProcess;

#[test]
fn limit_replies_are_the_originals() {
    let p = bare();
    transcript(
        &p,
        r#"
        > LIMIT PRINT
        = No default limit configured for any vhost.
        > LIMIT PRINT orders
        = No limit configured for vhost orders.
        > LIMIT CONN_RATE_ALARM DEFAULT 20
        = Default connection rate limit is set to 20 connections per second in alarm only mode.
        = The limiter will only log at warning level with AMQPPROX_CONNECTION_LIMIT as a substring and the relevant limit details, when the new incoming connection violates the default limit for all vhosts.
        > LIMIT CONN_RATE_ALARM VHOST orders 10
        = For vhost orders, Allow average 10 number of connections per 1 seconds in alarm only mode.
        = The limiter will only log at warning level with AMQPPROX_CONNECTION_LIMIT as a substring and the relevant limit details, when the new incoming connection violates the specified limit.
        > LIMIT CONN_RATE DEFAULT 5
        = Default connection rate limit is set to 5 connections per second.
        > limit conn_rate vhost orders 3
        = For vhost orders, Allow average 3 number of connections per 1 seconds
        > LIMIT DATA_RATE DEFAULT 1000000
        > LIMIT DATA_RATE_ALARM VHOST orders 500000
        > LIMIT CONN_COUNT DEFAULT 100
        = Default concurrent connection limit is set to 100 connections for each vhost.
        > LIMIT CONN_COUNT VHOST orders 7
        = For vhost orders, allow at most 7 concurrent connections.
        > LIMIT PRINT
        = Default limit for any vhost, allow average 20 connections per second in alarm only mode.
        = Default limit for any vhost, allow average 5 connections per second.
        = Default data limit for any vhost, allow max 1000000 bytes per second.
        = Default limit for any vhost, allow at most 100 concurrent connections.
        > LIMIT PRINT orders
        = Alarm only limit, for vhost orders, Allow average 10 number of connections per 1 seconds.
        = For vhost orders, Allow average 3 number of connections per 1 seconds.
        = Alarm only data limit, for vhost orders, allow max 500000 bytes per second.
        = For vhost orders, allow max 1000000 bytes per second.
        = For vhost orders, allow at most 7 concurrent connections.
        > LIMIT PRINT billing
        = Alarm only limit, for vhost billing, allow average 20 number of connections per second.
        = For vhost billing, allow average 5 number of connections per second.
        = For vhost billing, allow max 1000000 bytes per second.
        = For vhost billing, allow at most 100 concurrent connections.
        > LIMIT DISABLE CONN_RATE_ALARM VHOST orders
        = Successfully disabled specific alarm only connection rate limit for vhost orders
        > LIMIT DISABLE CONN_RATE VHOST orders
        = Successfully disabled specific connection rate limit for vhost orders
        > LIMIT DISABLE CONN_COUNT VHOST orders
        = Successfully disabled specific concurrent connection limit for vhost orders
        > LIMIT DISABLE CONN_COUNT DEFAULT
        = Successfully disabled default concurrent connection limit
        > LIMIT DISABLE DATA_RATE DEFAULT
        > LIMIT DISABLE DATA_RATE_ALARM VHOST orders
        ! LIMIT
        = No subcommand provided for LIMIT command.
        ! LIMIT DISABLE
        = No subcommand provided for LIMIT DISABLE command.
        ! LIMIT DISABLE conn_rate DEFAULT
        = Invalid subcommand provided for LIMIT command.
        ! LIMIT DISABLE CONN_RATE
        = Failed to read (VHOST vhostName | DEFAULT) for CONN_RATE
        ! LIMIT CONN_RATE VHOST orders
        = Invalid numberOfConnections provided.
        ! LIMIT CONN_RATE DEFAULT many
        = Invalid numberOfConnections provided.
        ! LIMIT DATA_RATE VHOST orders
        = Failed to read bytesPerSecond
        ! LIMIT FROB DEFAULT 1
        = Invalid subcommand provided for LIMIT command.
        ! LIMIT FROB
        = Failed to read (VHOST vhostName | DEFAULT) for FROB
        > LIMIT PRINT orders
        = Alarm only limit, for vhost orders, Allow average 20 number of connections per 1 seconds.
        = For vhost orders, Allow average 5 number of connections per 1 seconds.
        "#,
    );
    // The original ends these two with a newline and a space.
    check(
        &p,
        "LIMIT DISABLE CONN_RATE_ALARM DEFAULT",
        "Successfully disabled default alarm only connection rate limit\n \n",
        true,
    );
    check(
        &p,
        "LIMIT DISABLE CONN_RATE DEFAULT",
        "Successfully disabled default connection rate limit\n \n",
        true,
    );
    check(
        &p,
        "LIMIT PRINT",
        "No default limit configured for any vhost.\n",
        true,
    );
}

#[test]
fn auth_replies_are_the_originals() {
    let p = bare();
    transcript(
        &p,
        r#"
        > AUTH PRINT
        = All connections are authorised to route to any vhost. No auth service requests will be made.
        > AUTH SERVICE auth.local 8080 /auth?tier=dev
        = HTTP Auth service will be used to authn/authz client connections: http://auth.local:8080/auth?tier=dev
        > auth print
        = HTTP Auth service will be used to authn/authz client connections: http://auth.local:8080/auth?tier=dev
        > AUTH ALWAYS_ALLOW
        = All connections are authorised to route to any vhost. No auth service requests will be made.
        ! AUTH
        = No subcommand provided.
        ! AUTH SERVICE
        = No hostname specified.
        ! AUTH SERVICE auth.local
        = Invalid port provided.
        ! AUTH SERVICE auth.local 0 /auth
        = Invalid port provided.
        ! AUTH SERVICE auth.local 65536 /auth
        = Invalid port provided.
        ! AUTH SERVICE auth.local http /auth
        = Invalid port provided.
        ! AUTH SERVICE auth.local 8080
        = No http target specified.
        ! AUTH FROB
        = Unknown subcommand.
        > AUTH PRINT
        = All connections are authorised to route to any vhost. No auth service requests will be made.
        "#,
    );
}

#[test]
fn session_limit_needs_a_session() {
    let p = bare();
    transcript(
        &p,
        r#"
        ! SESSION 12 LIMIT DATA_RATE 1000
        = Session not found.
        ! SESSION 12 LIMIT
        = Usage: SESSION id LIMIT (DATA_RATE bytesPerSecond | DISABLE DATA_RATE)
        ! SESSION 12 LIMIT DATA_RATE lots
        = Failed to read bytesPerSecond
        "#,
    );
}

const CONFIGURE: &str = r#"
    > LIMIT CONN_RATE DEFAULT 50
    = Default connection rate limit is set to 50 connections per second.
    > LIMIT CONN_RATE VHOST orders 5
    = For vhost orders, Allow average 5 number of connections per 1 seconds
    > LIMIT CONN_RATE_ALARM VHOST billing 9
    = For vhost billing, Allow average 9 number of connections per 1 seconds in alarm only mode.
    = The limiter will only log at warning level with AMQPPROX_CONNECTION_LIMIT as a substring and the relevant limit details, when the new incoming connection violates the specified limit.
    > LIMIT CONN_COUNT VHOST orders 200
    = For vhost orders, allow at most 200 concurrent connections.
    > LIMIT DATA_RATE DEFAULT 1048576
    > LIMIT DATA_RATE_ALARM VHOST orders 65536
    > AUTH SERVICE auth.local 8080 /auth?tier=dev
    = HTTP Auth service will be used to authn/authz client connections: http://auth.local:8080/auth?tier=dev
"#;

const DUMP: &str = "\
LIMIT CONN_RATE DEFAULT 50
LIMIT CONN_RATE VHOST orders 5
LIMIT CONN_RATE_ALARM VHOST billing 9
LIMIT CONN_COUNT VHOST orders 200
LIMIT DATA_RATE DEFAULT 1048576
LIMIT DATA_RATE_ALARM VHOST orders 65536
AUTH SERVICE auth.local 8080 /auth?tier=dev
";

#[test]
fn config_dump_keeps_limits_and_auth_and_config_restores_them() {
    let first = bare();
    transcript(&first, CONFIGURE);
    assert_eq!(ctl(&first.control_socket, "CONFIG DUMP"), DUMP);

    let file = first.dir().join("limits.conf");
    std::fs::write(&file, DUMP).unwrap();
    let second = ProxyProcess::builder("unused", 1)
        .without_simple_mode()
        .shards(2)
        .arg("--config")
        .arg(file.to_str().unwrap())
        .start();
    assert_eq!(ctl(&second.control_socket, "CONFIG DUMP"), DUMP);
    for line in [
        "LIMIT PRINT",
        "LIMIT PRINT orders",
        "LIMIT PRINT billing",
        "AUTH PRINT",
    ] {
        assert_eq!(
            ctl(&second.control_socket, line),
            ctl(&first.control_socket, line),
            "{line}"
        );
    }
}
