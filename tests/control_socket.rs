//! The control socket and `amqpprox_ctl` as processes
//! (docs/commands.md#amqpprox_ctl, docs/commands.md#sending-a-command,
//! docs/commands.md#exit, docs/commands.md#replies-and-errors): a line without
//! a newline is not run, the ctl's exit codes, EXIT, the socket file's mode and
//! replacement, two proxies side by side, a silent client that blocks nobody,
//! and `MAPHOSTNAME DNS` names in `CONN`. Command texts are in
//! `control_golden.rs`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::control::{
    amqpprox_ctl, bare, check, ctl, ctl_bin, ctl_bytes, spawn_proxy, transcript, wait_for_control,
};
use support::proxy::ProxyProcess;

#[test]
fn a_line_without_newline_is_not_executed() {
    let p = bare();
    let reply = ctl_bytes(&p.control_socket, b"BACKEND ADD b1 dc1 127.0.0.1 5672");
    assert_eq!(reply, b"");
    assert_eq!(ctl(&p.control_socket, "BACKEND PRINT"), "");
}

#[test]
fn amqpprox_ctl_exit_codes() {
    let p = bare();
    let socket = p.control_socket.to_str().unwrap();
    let usage = "Usage: amqpprox_ctl <control_socket> ARGS\n";
    for args in [&[][..], &[socket][..]] {
        let run = amqpprox_ctl(args);
        assert_eq!(
            (run.code, run.stderr.as_str(), run.stdout.as_str()),
            (Some(1), usage, "")
        );
    }
    let missing = p.dir().join("no-such.sock");
    let run = amqpprox_ctl(&[missing.to_str().unwrap(), "HELP"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.starts_with("Exception: "), "{run:?}");
    assert_eq!(run.stdout, "");
    // Success, with and without output; an error reply.
    assert_eq!(
        ctl_bin(&p.control_socket, "DATACENTER SET dc1"),
        (String::new(), 0)
    );
    assert_eq!(
        ctl_bin(&p.control_socket, "DATACENTER PRINT"),
        ("dc1\n".into(), 0)
    );
    assert_eq!(
        ctl_bin(&p.control_socket, "DATACENTER FROB"),
        ("Unknown subcommand.\n".into(), 3)
    );
    // The plain protocol never sees the status trailer.
    assert_eq!(
        ctl(&p.control_socket, "DATACENTER FROB"),
        "Unknown subcommand.\n"
    );
}

#[test]
fn exit_replies_then_exits_and_removes_the_socket() {
    let mut p = bare();
    assert_eq!(ctl_bin(&p.control_socket, "EXIT"), ("Exiting.\n".into(), 0));
    let status = support::poll_for(
        Duration::from_secs(15),
        "the proxy to exit after EXIT",
        || p.try_exit_status(),
    );
    assert_eq!(status.code(), Some(0), "{}", p.output());
    assert!(!p.control_socket.exists(), "socket file left behind");
    assert!(p.stdout().contains(&format!(
        "Stopping amqpprox, instance: '{}'",
        p.control_socket.display()
    )));
}

#[test]
fn control_socket_is_private_and_replaces_a_stale_file() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    std::fs::write(&socket, "stale").unwrap();
    let mut child = spawn_proxy(&socket, &[]);
    let answered = wait_for_control(&socket, &mut child);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    let help = ctl(&socket, "HELP");
    let _ = child.kill();
    let _ = child.wait();
    assert!(answered, "the proxy never answered on {}", socket.display());
    assert_eq!(help, amqpprox::control::commands::HELP);
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");
}

#[test]
fn two_proxies_do_not_interfere() {
    let a = bare();
    let b = bare();
    check(&a, "BACKEND ADD only-a dc-a 127.0.0.1 5672", "", true);
    check(&b, "BACKEND ADD only-b dc-b 127.0.0.1 5673", "", true);
    check(&a, "DATACENTER SET dc-a", "", true);
    check(&b, "DATACENTER SET dc-b", "", true);
    assert_eq!(
        ctl(&a.control_socket, "BACKEND PRINT"),
        "only-a (dc-a): 127.0.0.1 127.0.0.1:5672\n"
    );
    assert_eq!(
        ctl(&b.control_socket, "BACKEND PRINT"),
        "only-b (dc-b): 127.0.0.1 127.0.0.1:5673\n"
    );
    assert_eq!(ctl(&a.control_socket, "DATACENTER PRINT"), "dc-a\n");
    assert_eq!(ctl(&b.control_socket, "DATACENTER PRINT"), "dc-b\n");
}

/// A control client that connects and says nothing (or half a line) holds
/// no lock: other clients are served meanwhile.
#[test]
fn a_silent_control_client_blocks_nobody() {
    let p = bare();
    let mut silent = std::os::unix::net::UnixStream::connect(&p.control_socket).unwrap();
    std::io::Write::write_all(&mut silent, b"BACKEND AD").unwrap();
    let started = std::time::Instant::now();
    transcript(&p, "> BACKEND ADD b1 dc1 127.0.0.1 5672\n");
    assert_eq!(
        ctl(&p.control_socket, "BACKEND PRINT"),
        "b1 (dc1): 127.0.0.1 127.0.0.1:5672\n"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

/// After `MAPHOSTNAME DNS`, `CONN` shows host names once the background
/// resolver has them (127.0.0.1 is `localhost` here), never waiting for it.
#[test]
fn maphostname_shows_names_in_conn() {
    let broker = support::dummy_broker::DummyBroker::start(support::dummy_broker::Script::new(
        support::dummy_broker::AfterOpen::Hold,
    ));
    let p = ProxyProcess::builder("127.0.0.1", broker.port())
        .shards(1)
        .start();
    let mut client = support::raw::RawConn::connect_local(p.port);
    support::raw::client_handshake(&mut client, "named", "/");
    let before = ctl(&p.control_socket, "CONN");
    assert!(before.contains("ingressRemote=127.0.0.1:"), "{before}");
    assert_eq!(
        ctl(&p.control_socket, "MAPHOSTNAME DNS"),
        "Hostname mapper set for all current sessions.\n"
    );
    let named = support::wait_until(support::deadline_in(Duration::from_secs(5)), || {
        ctl(&p.control_socket, "CONN").contains("ingressRemote=localhost:")
    });
    assert!(named, "{}", ctl(&p.control_socket, "CONN"));
}
