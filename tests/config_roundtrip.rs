//! `CONFIG DUMP` is a rendering of the one configuration value, and
//! replaying it (as `--config FILE` does: blank lines and `#` comments
//! skipped, every other line a control command) builds the same value
//! again. Covers every kind of setting: the datacenter, backends with every
//! option, farms with partitions, vhost mappings and the default farm, TLS
//! settings of both sides, paused vhosts, limits, the auth service and
//! listeners of every kind (RabbitMQ Stream listeners with their node and
//! advertised host, and backends' stream ports, included).
//!
//! Runs the control state in-process with no shards (listeners are then
//! only probed and recorded), so it needs no proxy process and no broker.

use amqpprox::config::{Config, ConfigSnapshot};
use amqpprox::control::ControlState;
use amqpprox::shard::Shared;
use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn control_state() -> ControlState {
    let shared = Arc::new(Shared::new(
        ConfigSnapshot::new(Config::default()),
        Duration::from_secs(5),
        Duration::from_secs(5),
    ));
    ControlState::new(shared, Vec::new())
}

/// Runs each line as `--config` would, failing on the first error reply.
fn apply(state: &mut ControlState, text: &str) {
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let reply = state.execute(line);
        assert!(!reply.error, "{line:?} failed: {}", reply.text);
    }
}

/// Ports free on every address right now (the listeners are only probed,
/// so they are released again before the commands run).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| {
            TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
                .or_else(|_| TcpListener::bind("0.0.0.0:0"))
                .expect("bind an ephemeral port")
        })
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// A self-signed server certificate and its key, and DH parameters (only
/// checked for their PEM label), written into `dir`.
fn write_tls_files(dir: &Path) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("self-sign");
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join("dh.pem"),
        "-----BEGIN DH PARAMETERS-----\nMAgCAQICAQI=\n-----END DH PARAMETERS-----\n",
    )
    .unwrap();
}

#[test]
fn dump_replays_to_the_same_configuration() {
    let dir = tempfile::tempdir().unwrap();
    write_tls_files(dir.path());
    let d = dir.path().display();
    let ports = free_ports(7);
    let mut first = control_state();
    apply(
        &mut first,
        &format!(
            "
            BACKEND ADD plain dc1 127.0.0.1 5672
            BACKEND ADD v1 dc1 localhost 5673 SEND-PROXY
            BACKEND ADD v2tls dc2 127.0.0.1 5674 tls send-proxy-v2
            BACKEND ADD_DNS dns dc2 localhost 5675 SEND-PROXY TLS
            BACKEND ADD gone dc2 127.0.0.1 5676
            BACKEND ADD node1 dc1 127.0.0.1 5677 STREAM-PORT=5553
            BACKEND ADD node2 dc1 127.0.0.1 5678 stream-port=5552
            BACKEND HEALTH INTERVAL 1500 RISE 3
            backend health passive_fall 0 down_hold 2500
            FARM ADD f round-robin v2tls plain dns gone
            FARM PARTITION f datacenter-affinity
            FARM PARTITION f datacenter-affinity
            FARM ADD_MANUAL e round-robin v1
            BACKEND DELETE gone
            BACKEND DRAIN v1
            BACKEND DRAIN dns
            BACKEND UNDRAIN dns
            MAP FARM orders f
            MAP BACKEND / plain
            MAP FARM elsewhere nosuchfarm
            MAP DEFAULT e
            DATACENTER SET dc2
            TLS INGRESS KEY_FILE {d}/server.key
            TLS INGRESS CERT_CHAIN_FILE {d}/server.pem
            TLS INGRESS CA_CERT_FILE {d}/server.pem
            TLS INGRESS VERIFY_MODE PEER FAIL_IF_NO_PEER_CERT
            TLS INGRESS CIPHERS SET TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256
            TLS EGRESS CA_CERT_FILE {d}/server.pem
            TLS EGRESS TMP_DH_FILE {d}/dh.pem
            TLS EGRESS VERIFY_MODE PEER
            VHOST PAUSE orders
            VHOST PAUSE /
            VHOST PAUSE unpaused-again
            VHOST UNPAUSE unpaused-again
            LIMIT CONN_RATE DEFAULT 50
            LIMIT CONN_RATE_ALARM VHOST orders 9
            LIMIT CONN_COUNT VHOST orders 200
            LIMIT DATA_RATE DEFAULT 1048576
            LIMIT DATA_RATE_ALARM VHOST / 65536
            LIMIT DATA_RATE VHOST gone 1
            LIMIT DISABLE DATA_RATE VHOST gone
            AUTH SERVICE auth.local 8080 /auth?tier=dev
            LISTEN START {}
            LISTEN START_SECURE {} PROXY
            LISTEN START 127.0.0.1:{}
            LISTEN START 0.0.0.0:{}
            LISTEN START_STREAM {}
            LISTEN START_STREAM 127.0.0.1:{} BACKEND=node1 ADVERTISE=proxy.example
            LISTEN START_STREAM_SECURE 127.0.0.1:{} PROXY BACKEND=node2
            ",
            ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6]
        ),
    );
    let dump = first.execute("CONFIG DUMP").text;
    // Every kind of setting is in the dump, so equality below means
    // something.
    for prefix in [
        "DATACENTER SET dc2\n",
        "BACKEND ADD plain dc1 127.0.0.1 5672\n",
        "BACKEND ADD v1 dc1 localhost 5673 SEND-PROXY\n",
        "BACKEND ADD v2tls dc2 127.0.0.1 5674 SEND-PROXY-V2 TLS\n",
        "BACKEND ADD_DNS dns dc2 localhost 5675 SEND-PROXY TLS\n",
        "BACKEND ADD v2tls dc2 127.0.0.1 5674 SEND-PROXY-V2 TLS\nBACKEND DRAIN v1\nBACKEND HEALTH INTERVAL 1500 TIMEOUT 2000 RISE 3 FALL 3 PASSIVE_FALL 0 DOWN_HOLD 2500\nFARM",
        "FARM ADD e round-robin v1\n",
        "FARM ADD f round-robin v2tls plain dns\n",
        "FARM PARTITION f datacenter-affinity\nFARM PARTITION f datacenter-affinity\n",
        "MAP BACKEND / plain\n",
        "MAP FARM elsewhere nosuchfarm\n",
        "MAP DEFAULT e\n",
        "TLS INGRESS KEY_FILE ",
        "TLS INGRESS CERT_CHAIN_FILE ",
        "TLS INGRESS CA_CERT_FILE ",
        "TLS INGRESS VERIFY_MODE PEER FAIL_IF_NO_PEER_CERT\n",
        "TLS INGRESS CIPHERS SET ",
        "TLS EGRESS TMP_DH_FILE ",
        "TLS EGRESS VERIFY_MODE PEER\n",
        "VHOST PAUSE /\nVHOST PAUSE orders\n",
        "LIMIT CONN_RATE DEFAULT 50\nLIMIT CONN_RATE_ALARM VHOST orders 9\nLIMIT CONN_COUNT VHOST orders 200\n\
         LIMIT DATA_RATE DEFAULT 1048576\nLIMIT DATA_RATE_ALARM VHOST / 65536\n",
        "AUTH SERVICE auth.local 8080 /auth?tier=dev\n",
        &format!("LISTEN START {}\n", ports[0]),
        &format!("LISTEN START_SECURE {} PROXY\n", ports[1]),
        &format!("LISTEN START 127.0.0.1:{}\n", ports[2]),
        &format!("LISTEN START 0.0.0.0:{}\n", ports[3]),
        "BACKEND ADD node1 dc1 127.0.0.1 5677 STREAM-PORT=5553\n",
        // The default stream port is implied.
        "BACKEND ADD node2 dc1 127.0.0.1 5678\n",
        &format!("LISTEN START_STREAM {}\n", ports[4]),
        &format!(
            "LISTEN START_STREAM 127.0.0.1:{} BACKEND=node1 ADVERTISE=proxy.example\n",
            ports[5]
        ),
        &format!(
            "LISTEN START_STREAM_SECURE 127.0.0.1:{} PROXY BACKEND=node2\n",
            ports[6]
        ),
    ] {
        assert!(
            dump.contains(prefix),
            "CONFIG DUMP lacks {prefix:?}:\n{dump}"
        );
    }
    assert!(!dump.contains("unpaused-again"), "{dump}");
    assert!(!dump.contains("gone 1"), "{dump}");

    let mut second = control_state();
    apply(&mut second, &format!("# saved\n\n{dump}"));
    // The deleted member is the one thing a dump cannot carry.
    let mut expected = first.config.clone();
    expected
        .farms
        .get_mut("f")
        .unwrap()
        .members
        .retain(|m| m != "gone");
    assert_eq!(second.config, expected);
    assert_eq!(second.execute("CONFIG DUMP").text, dump);
    // The health registry follows the replayed configuration.
    assert_eq!(second.shared.health.policy(), second.config.health);
    let registered: Vec<String> = second
        .shared
        .health
        .snapshot()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        registered,
        ["dns", "node1", "node2", "plain", "v1", "v2tls"]
    );
}

#[test]
fn an_empty_configuration_dumps_nothing() {
    let mut state = control_state();
    assert_eq!(state.execute("CONFIG DUMP").text, "");
    assert_eq!(state.config, Config::default());
}

#[test]
fn a_stream_listener_for_an_unknown_backend_is_refused() {
    let mut state = control_state();
    let port = free_ports(1)[0];
    let reply = state.execute(&format!(
        "LISTEN START_STREAM 127.0.0.1:{port} BACKEND=nosuch"
    ));
    assert!(reply.error);
    assert_eq!(
        reply.text,
        format!("Cannot listen for streams on port {port}: no backend 'nosuch'.\n")
    );
    assert!(state.config.listeners.is_empty());
}
