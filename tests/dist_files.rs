//! The files under `dist/` that the Debian package installs, checked
//! against the proxy they ship with: the example `--config` file applies
//! line by line and is what `CONFIG DUMP` prints back (so an operator can
//! save a running configuration over it), and the systemd unit starts the
//! proxy with flags the proxy accepts.
//!
//! Needs no broker: the example's backends are never contacted.

mod support;

use std::time::Duration;

use support::control::ctl;
use support::proxy::{free_port, ProxyProcess};

const EXAMPLE: &str = include_str!("../dist/amqpprox.conf");
const UNIT: &str = include_str!("../dist/amqpprox.service");

/// The example's commands, with its listening port replaced by `port`.
fn example_commands(port: u16) -> Vec<String> {
    EXAMPLE
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.replace("LISTEN START 5672", &format!("LISTEN START {port}")))
        .collect()
}

#[test]
fn the_example_config_applies_and_is_what_config_dump_prints() {
    let port = free_port();
    let commands = example_commands(port);
    assert!(
        commands.contains(&format!("LISTEN START {port}")),
        "the example listens on 5672: {commands:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("amqpprox.conf");
    std::fs::write(&file, commands.join("\n") + "\n").unwrap();
    let proxy = ProxyProcess::builder("127.0.0.1", 5672)
        .without_simple_mode()
        .shards(1)
        .arg("--config")
        .arg(file.display().to_string())
        .start();
    // The control socket answers while the file is still being applied;
    // its last line is the LISTEN, so a listening port means all applied.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}:\n{}",
            proxy.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let dump = ctl(&proxy.control_socket, "CONFIG DUMP");
    assert_eq!(dump, commands.join("\n") + "\n");
}

#[test]
fn the_unit_starts_the_proxy_with_flags_it_accepts() {
    let exec = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(args[0], "/usr/bin/amqpprox");
    let parsed = amqpprox::cli::parse(args.iter().copied())
        .unwrap_or_else(|e| panic!("the proxy refuses the unit's flags: {}", e.message));
    assert_eq!(
        parsed.config_file.as_deref(),
        Some(std::path::Path::new("/etc/amqpprox/amqpprox.conf"))
    );
    assert_eq!(
        parsed.control_socket,
        std::path::Path::new("/run/amqpprox/control")
    );
    for line in ["Type=notify", "ExecReload=/bin/kill -HUP $MAINPID"] {
        assert!(UNIT.lines().any(|l| l == line), "the unit lacks {line:?}");
    }
}
