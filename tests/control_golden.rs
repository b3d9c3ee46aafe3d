//! Golden transcripts of the control protocol
//! (docs/commands.md#sending-a-command, docs/commands.md#replies-and-errors,
//! docs/commands.md#amqpprox_ctl, docs/commands.md#config,
//! docs/commands.md#json-output): control line in, exact reply bytes out,
//! against the real `amqpprox` binary started without simple mode.
//!
//! Each command goes through the built `amqpprox_ctl` (checking its exit
//! code: 0 for a success, 3 for an error reply); read-only commands are
//! also sent with the plain original protocol (no status opt-in), which
//! must see the same bytes. A failed command must change nothing. These
//! tests own the texts of BACKEND, FARM, MAP, DATACENTER, LISTEN, LOG,
//! HELP, CONFIG and MAPHOSTNAME; `control_socket.rs` owns the socket itself,
//! EXIT and the ctl's exit codes. They never talk AMQP beyond a TCP connect.

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use support::control::{bare, check, ctl, ctl_bin, spawn_proxy, transcript, wait_for_exit};
use support::proxy::ProxyProcess;
#[test]
fn backend_commands_and_errors() {
    let p = bare();
    transcript(
        &p,
        r#"
        > BACKEND PRINT
        > BACKEND PRINT json
        = {"backends":[]}
        > BACKEND ADD b1 dc1 127.0.0.1 5672
        > BACKEND ADD b2 dc2 127.0.0.1 5673 TLS SEND-PROXY
        > backend add b3 dc1 127.0.0.1 5674 send-proxy-v2
        > BACKEND ADD_DNS b4 dc2 rabbit.example.com 5672 SEND-PROXY
        > BACKEND PRINT
        = b1 (dc1): 127.0.0.1 127.0.0.1:5672
        = b2 (dc2): 127.0.0.1 127.0.0.1:5673 PROXY PROTOCOL V1 ENABLED TLS
        = b3 (dc1): 127.0.0.1 127.0.0.1:5674 PROXY PROTOCOL V2 ENABLED
        = b4 (dc2): rabbit.example.com :5672 PROXY PROTOCOL V1 ENABLED
        > BACKEND PRINT json
        = {"backends":[{"name":"b1","datacenter":"dc1","host":"127.0.0.1","ip":"127.0.0.1","port":5672,"dns":false,"proxyProtocol":null,"tls":false,"streamPort":5552,"drained":false,"health":{"state":"unknown","sinceMs":null,"consecutiveFailures":0,"lastError":null}},{"name":"b2","datacenter":"dc2","host":"127.0.0.1","ip":"127.0.0.1","port":5673,"dns":false,"proxyProtocol":"v1","tls":true,"streamPort":5552,"drained":false,"health":{"state":"unknown","sinceMs":null,"consecutiveFailures":0,"lastError":null}},{"name":"b3","datacenter":"dc1","host":"127.0.0.1","ip":"127.0.0.1","port":5674,"dns":false,"proxyProtocol":"v2","tls":false,"streamPort":5552,"drained":false,"health":{"state":"unknown","sinceMs":null,"consecutiveFailures":0,"lastError":null}},{"name":"b4","datacenter":"dc2","host":"rabbit.example.com","ip":null,"port":5672,"dns":true,"proxyProtocol":"v1","tls":false,"streamPort":5552,"drained":false,"health":{"state":"unknown","sinceMs":null,"consecutiveFailures":0,"lastError":null}}]}
        ! BACKEND ADD b1 dc9 127.0.0.1 1
        = Failed to insert backend: 'b1 (dc9): 127.0.0.1 127.0.0.1:1', error code: 1
        ! BACKEND ADD b5 dc1 127.0.0.1
        = Arguments not correctly provided
        ! BACKEND ADD b5 dc1 127.0.0.1 0
        = Arguments not correctly provided
        ! BACKEND ADD b5 dc1 127.0.0.1 port
        = Arguments not correctly provided
        ! BACKEND ADD_DNS b5
        = Arguments not correctly provided
        ! BACKEND DELETE
        = DELETE requires a name argument
        ! BACKEND DELETE nope
        = Delete failed to remove 'nope', rcode 1
        ! BACKEND
        = Subcommand '' not recognized.
        ! BACKEND frob
        = Subcommand 'FROB' not recognized.
        > BACKEND DELETE b3
        > BACKEND PRINT
        = b1 (dc1): 127.0.0.1 127.0.0.1:5672
        = b2 (dc2): 127.0.0.1 127.0.0.1:5673 PROXY PROTOCOL V1 ENABLED TLS
        = b4 (dc2): rabbit.example.com :5672 PROXY PROTOCOL V1 ENABLED
        > BACKEND DRAIN b2
        > BACKEND PRINT
        = b1 (dc1): 127.0.0.1 127.0.0.1:5672
        = b2 (dc2): 127.0.0.1 127.0.0.1:5673 PROXY PROTOCOL V1 ENABLED TLS DRAINED
        = b4 (dc2): rabbit.example.com :5672 PROXY PROTOCOL V1 ENABLED
        ! BACKEND DRAIN nope
        = Backend 'nope' not found.
        ! BACKEND UNDRAIN
        = UNDRAIN requires a name argument
        > BACKEND UNDRAIN b2
        > BACKEND PRINT
        = b1 (dc1): 127.0.0.1 127.0.0.1:5672
        = b2 (dc2): 127.0.0.1 127.0.0.1:5673 PROXY PROTOCOL V1 ENABLED TLS
        = b4 (dc2): rabbit.example.com :5672 PROXY PROTOCOL V1 ENABLED
        "#,
    );
    // The resolver's answer for an unknown name depends on the host's DNS
    // (no such name, or no server to ask): the original's Boost.Asio codes.
    let (reply, code) = ctl_bin(&p.control_socket, "BACKEND ADD b5 dc1 nohost.invalid 5672");
    assert!(
        [
            "Failed to resolve 'nohost.invalid', error code: asio.netdb:1\n",
            "Failed to resolve 'nohost.invalid', error code: asio.netdb:2\n",
        ]
        .contains(&reply.as_str()),
        "{reply:?}"
    );
    assert_eq!(code, 3);
    assert!(!ctl(&p.control_socket, "BACKEND PRINT").contains("b5"));
}

#[test]
fn farm_commands_and_errors() {
    let p = bare();
    transcript(
        &p,
        r#"
        > BACKEND ADD b1 dc1 127.0.0.1 5672
        > BACKEND ADD b2 dc2 127.0.0.1 5673
        > BACKEND ADD b3 dc2 127.0.0.1 5674
        > FARM PRINT
        > FARM ADD f round-robin b3 b1 b3
        > farm add_manual e round-robin b2
        > FARM PRINT
        = e: b2 $
        = f: b3 b1 $
        > FARM PRINT json
        = {"farms":[{"name":"e","selector":"round-robin","members":["b2"],"policies":[],"partitions":[["b2"]]},{"name":"f","selector":"round-robin","members":["b3","b1"],"policies":[],"partitions":[["b3","b1"]]}]}
        ! FARM ADD g
        = Farm name and selector must be provided.
        ! FARM ADD g round-robin
        = Farm name and selector must be provided.
        ! FARM ADD g bogus b1
        = Selector 'bogus' not found
        ! FARM ADD f round-robin b1 nope1 nope2
        = Backend 'nope1' not found
        = Backend 'nope2' not found
        = Farm not inserted due to at least one missing Backend
        > FARM PRINT
        = e: b2 $
        = f: b3 b1 $
        ! FARM PARTITION f
        = Farm name and policy must be provided.
        ! FARM PARTITION f bogus
        = Partition policy 'bogus' not found
        ! FARM PARTITION nope datacenter-affinity
        = Farm 'nope' not found
        > DATACENTER SET dc1
        > FARM PARTITION f datacenter-affinity
        > FARM PRINT JSON
        = {"farms":[{"name":"e","selector":"round-robin","members":["b2"],"policies":[],"partitions":[["b2"]]},{"name":"f","selector":"round-robin","members":["b3","b1"],"policies":["datacenter-affinity"],"partitions":[["b1"],["b3"]]}]}
        ! FARM DELETE
        = Farm name not provided.
        > FARM DELETE unknown
        > FARM DELETE e
        ! FARM
        = Subcommand '' not recognized.
        ! FARM x
        = Subcommand 'X' not recognized.
        > FARM ADD f round-robin b2
        > FARM PRINT
        = f: b2 $
        > FARM PRINT json
        = {"farms":[{"name":"f","selector":"round-robin","members":["b2"],"policies":[],"partitions":[["b2"]]}]}
        "#,
    );
}

#[test]
fn map_commands_and_errors() {
    let p = bare();
    transcript(
        &p,
        r#"
        > MAP PRINT
        > MAP PRINT json
        = {"mappings":[],"defaultFarm":null}
        > MAP FARM v2 f
        > MAP BACKEND v1 b
        > map backend v2 b2
        > MAP FARM / f
        > MAP DEFAULT f
        > MAP PRINT
        = "/" => Farm:f
        = "v1" => Backend:b
        = "v2" => Backend:b2
        > MAP PRINT json
        = {"mappings":[{"vhost":"/","type":"farm","name":"f"},{"vhost":"v1","type":"backend","name":"b"},{"vhost":"v2","type":"backend","name":"b2"}],"defaultFarm":"f"}
        ! MAP BACKEND v1
        = Vhost and backend must be provided
        ! MAP FARM v1
        = Vhost and farm name must be provided
        ! MAP UNMAP
        = Vhost not provided.
        ! MAP DEFAULT
        = Farm name for default must be provided
        ! MAP
        = Unrecognized subcommand.
        ! MAP FROB
        = Unrecognized subcommand.
        > MAP UNMAP unknown
        > MAP UNMAP v1
        > MAP REMOVE_DEFAULT
        > MAP PRINT
        = "/" => Farm:f
        = "v2" => Backend:b2
        > MAP PRINT json
        = {"mappings":[{"vhost":"/","type":"farm","name":"f"},{"vhost":"v2","type":"backend","name":"b2"}],"defaultFarm":null}
        "#,
    );
}

#[test]
fn datacenter_commands_and_errors() {
    let p = bare();
    transcript(
        &p,
        r#"
        > DATACENTER PRINT
        =
        > DATACENTER PRINT json
        = {"datacenter":null}
        > datacenter set london-az1
        > DATACENTER PRINT
        = london-az1
        > DATACENTER PRINT json
        = {"datacenter":"london-az1"}
        ! DATACENTER
        = No subcommand provided.
        ! DATACENTER GET
        = Unknown subcommand.
        > DATACENTER PRINT
        = london-az1
        > DATACENTER SET
        > DATACENTER PRINT
        =
        "#,
    );
}

#[test]
fn listen_commands_and_errors() {
    let p = bare();
    let port = p.port;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let busy = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind a busy port");
    let busy_port = busy.local_addr().unwrap().port();
    transcript(
        &p,
        &format!(
            "
            > LISTEN START {port}
            > listen start {port}
            ! LISTEN START {busy_port}
            = Cannot listen on port {busy_port}: Address already in use (os error 98)
            ! LISTEN START
            = Invalid port provided.
            ! LISTEN START 0
            = Invalid port provided.
            ! LISTEN START x
            = Invalid port provided.
            ! LISTEN START 70000
            = Invalid port provided.
            ! LISTEN
            = No subcommand provided.
            ! LISTEN FROB
            = Unknown subcommand.
            "
        ),
    );
    // The busy port did not stop the proxy: the first listener still serves
    // (starting it twice was harmless).
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("listener still accepts");
    check(&p, &format!("LISTEN STOP {port}"), "", true);
    assert_refused(addr);
    check(&p, &format!("LISTEN START {port}"), "", true);
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("listener accepts again");
    check(&p, "LISTEN STOP", "", true);
    assert_refused(addr);
    drop(busy);
}

fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => panic!("connect to {addr} after LISTEN STOP: {other:?}"),
    }
}

#[test]
fn log_commands_and_errors() {
    let p = bare();
    transcript(
        &p,
        "
        > LOG CONSOLE 2
        > log file 4
        > LOG CONSOLE 0
        ! LOG
        = Command or verbosity not found.
        ! LOG CONSOLE
        = Command or verbosity not found.
        ! LOG FILE x
        = Command or verbosity not found.
        ! LOG FROB 3
        = Type to verb is not known.
        ",
    );
}

#[test]
fn maphostname_commands_and_errors() {
    let p = bare();
    transcript(
        &p,
        "
        ! MAPHOSTNAME
        = No subcommand specified.
        ! MAPHOSTNAME IP
        = Only DNS subcommand is supported.
        > MAPHOSTNAME DNS
        = Hostname mapper set for all current sessions.
        > maphostname dns
        = Hostname mapper set for all current sessions.
        ",
    );
}

/// The original's HELP lines for verbs whose grammar this project keeps
/// unchanged (docs/commands.md#help).
const ORIGINAL_HELP_LINES: &[&str] = &[
    "AUTH (SERVICE hostname port target | ALWAYS_ALLOW | PRINT) - Change authentication mechanism for connecting clients",
    "CONN Print the connected sessions",
    "DATACENTER SET name | PRINT",
    "EXIT Exit the program gracefully.",
    "FARM (ADD name selector backend* | PARTITION name policy | DELETE name | PRINT) - Change farms",
    "HELP Print this help text.",
    "LIMIT (CONN_RATE_ALARM | CONN_RATE) (VHOST vhostName numberOfConnections | DEFAULT numberOfConnections) - Configure connection rate limits (normal or alarmonly) for incoming clients connections",
    "LIMIT PRINT [vhostName] - Print the configured default limits or specific vhost limits",
    "LOG CONSOLE verbosity | FILE verbosity",
    "MAP (BACKEND vhost backend | FARM vhost name | UNMAP vhost | DEFAULT farmName | REMOVE_DEFAULT | PRINT) - Change mappings of resources to servers",
    "MAPHOSTNAME DNS - Set up mapping of IPs to hostnames",
    "VHOST PAUSE vhost | UNPAUSE vhost | PRINT | BACKEND_DISCONNECT vhost | FORCE_DISCONNECT vhost",
];

#[test]
fn help_lists_every_verb_and_answers_unknown_verbs() {
    let p = bare();
    let help = ctl(&p.control_socket, "HELP");
    assert_eq!(help, amqpprox::control::commands::HELP);
    let mut verbs: Vec<&str> = help.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert!(verbs.windows(2).all(|w| w[0] <= w[1]), "sorted: {verbs:?}");
    verbs.dedup();
    assert_eq!(
        verbs,
        [
            "AUTH",
            "BACKEND",
            "CONFIG",
            "CONN",
            "DATACENTER",
            "EXIT",
            "FARM",
            "HELP",
            "LIMIT",
            "LISTEN",
            "LOG",
            "MAP",
            "MAPHOSTNAME",
            "SESSION",
            "STAT",
            "TLS",
            "TRACE",
            "UPGRADE",
            "VHOST"
        ]
    );
    for line in ORIGINAL_HELP_LINES {
        assert!(
            help.lines().any(|l| l == *line),
            "HELP lacks the original line {line:?}:\n{help}"
        );
    }
    // Verbs are case-insensitive; unknown verbs and an empty line get HELP.
    for line in ["help", "FROB", "frob x y", "", "   "] {
        assert_eq!(ctl(&p.control_socket, line), help, "reply to {line:?}");
    }
    assert_eq!(ctl_bin(&p.control_socket, "HeLp"), (help.clone(), 0));
    assert_eq!(ctl_bin(&p.control_socket, "NOSUCHVERB"), (help, 0));
}

/// Commands that exercise every kind of CONFIG DUMP line.
const CONFIGURE: &str = "
    > BACKEND ADD b2 dc2 127.0.0.1 5673 TLS SEND-PROXY
    > BACKEND ADD b1 dc1 localhost 5672
    > BACKEND ADD_DNS b3 dc1 localhost 5674 SEND-PROXY-V2
    > BACKEND ADD b4 dc2 127.0.0.1 5675
    > FARM ADD f round-robin b2 b1 b3
    > FARM ADD e round-robin b4
    > FARM PARTITION f datacenter-affinity
    > MAP FARM v1 f
    > MAP BACKEND / b4
    > MAP DEFAULT e
    > DATACENTER SET dc2
    ! CONFIG
    = No subcommand provided.
    ! CONFIG FROB
    = Unknown subcommand.
";

const DUMP: &str = "\
DATACENTER SET dc2
BACKEND ADD b1 dc1 localhost 5672
BACKEND ADD b2 dc2 127.0.0.1 5673 SEND-PROXY TLS
BACKEND ADD_DNS b3 dc1 localhost 5674 SEND-PROXY-V2
BACKEND ADD b4 dc2 127.0.0.1 5675
FARM ADD e round-robin b4
FARM ADD f round-robin b2 b1 b3
FARM PARTITION f datacenter-affinity
MAP BACKEND / b4
MAP FARM v1 f
MAP DEFAULT e
";

#[test]
fn config_dump_replays_through_a_config_file() {
    let first = bare();
    check(&first, "CONFIG DUMP", "", true);
    transcript(&first, CONFIGURE);
    check(&first, "CONFIG DUMP", DUMP, true);
    assert_eq!(ctl(&first.control_socket, "CONFIG DUMP"), DUMP);
    let (json, code) = ctl_bin(&first.control_socket, "CONFIG DUMP json");
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&json).expect("CONFIG DUMP json parses");
    assert!(
        json.ends_with("}\n") && json.lines().count() == 1,
        "{json:?}"
    );
    assert_eq!(doc["datacenter"], "dc2");
    assert_eq!(doc["defaultFarm"], "e");
    assert_eq!(doc["backends"].as_array().unwrap().len(), 4);
    assert_eq!(
        doc["farms"][1]["partitions"],
        serde_json::json!([["b2"], ["b1", "b3"]])
    );
    assert_eq!(
        doc["mappings"][0],
        serde_json::json!({"vhost": "/", "type": "backend", "name": "b4"})
    );

    let file = first.dir().join("amqpprox.conf");
    std::fs::write(&file, format!("# saved by the test\n\n{DUMP}")).unwrap();
    let second = ProxyProcess::builder("unused", 1)
        .without_simple_mode()
        .shards(1)
        .arg("--config")
        .arg(file.to_str().unwrap())
        .start();
    assert_eq!(ctl(&second.control_socket, "CONFIG DUMP"), DUMP);
    assert_eq!(ctl(&second.control_socket, "CONFIG DUMP json"), json);
}

#[test]
fn config_file_stops_start_at_the_first_failing_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.conf");
    std::fs::write(
        &file,
        "BACKEND ADD b1 dc1 127.0.0.1 5672\n# comment\nFARM ADD f round-robin b1 b9\nMAP DEFAULT f\n",
    )
    .unwrap();
    let socket = dir.path().join("control.sock");
    let child = spawn_proxy(&socket, &["--config", file.to_str().unwrap()]);
    let (code, _stdout, stderr) = wait_for_exit(child, Duration::from_secs(15));
    assert_eq!(code, Some(1), "stderr: {stderr}");
    let expected = format!(
        "{}:3: Backend 'b9' not found\nFarm not inserted due to at least one missing Backend",
        file.display()
    );
    assert!(
        stderr.contains(&expected),
        "stderr lacks {expected:?}:\n{stderr}"
    );
}

/// Typos are errors that name the token, and change nothing (this
/// proxy's difference from the original, which ignored them).
#[test]
fn typos_are_errors_that_name_the_token() {
    let p = bare();
    check(&p, "BACKEND ADD b1 dc1 127.0.0.1 5672", "", true);
    let before = ctl(&p.control_socket, "CONFIG DUMP");
    transcript(
        &p,
        r#"
        ! BACKEND ADD x dc 127.0.0.1 5671 TSL
        = Unknown backend option 'TSL': expected SEND-PROXY, SEND-PROXY-V2, TLS or STREAM-PORT=<port>.
        ! BACKEND ADD x dc 127.0.0.1 5671 TLS SEND-PROXY-V3
        = Unknown backend option 'SEND-PROXY-V3': expected SEND-PROXY, SEND-PROXY-V2, TLS or STREAM-PORT=<port>.
        ! BACKEND DELETE b1 b2
        = Unexpected argument 'b2' after BACKEND DELETE.
        ! BACKEND PRINT jsn
        = Unexpected argument 'jsn' after BACKEND PRINT.
        ! FARM PARTITION f datacenter-affinity now
        = Unexpected argument 'now' after FARM PARTITION.
        ! FARM DELETE f g
        = Unexpected argument 'g' after FARM DELETE.
        ! MAP DEFAULT f g
        = Unexpected argument 'g' after MAP DEFAULT.
        ! MAP BACKEND v b1 b2
        = Unexpected argument 'b2' after MAP BACKEND.
        ! MAP REMOVE_DEFAULT now
        = Unexpected argument 'now' after MAP REMOVE_DEFAULT.
        ! DATACENTER SET dc1 dc2
        = Unexpected argument 'dc2' after DATACENTER SET.
        ! DATACENTER PRINT yaml
        = Unexpected argument 'yaml' after DATACENTER PRINT.
        ! CONFIG DUMP yaml
        = Unexpected argument 'yaml' after CONFIG DUMP.
        ! CONN jsno
        = Unexpected argument 'jsno' after CONN.
        ! LISTEN START 5999 PROXI
        = Unknown listener option 'PROXI': expected PROXY.
        ! LISTEN STOP 56x2
        = Invalid port provided.
        ! LISTEN STOP 5999 6000
        = Unexpected argument '6000' after LISTEN STOP.
        ! LOG CONSOLE 3 4
        = Unexpected argument '4' after LOG.
        ! MAPHOSTNAME DNS now
        = Unexpected argument 'now' after MAPHOSTNAME DNS.
        ! SESSION 1 PAUSE now
        = Unexpected argument 'now' after SESSION.
        ! STAT STOP SEND now
        = Unexpected argument 'now' after STAT STOP SEND.
        ! STAT ENABLE per-source now
        = Unexpected argument 'now' after STAT ENABLE|DISABLE per-source.
        ! STAT LISTEN json all now
        = Unexpected argument 'now' after STAT LISTEN.
        ! TLS INGRESS CA_CERT_FILE a.pem b.pem
        = Unexpected argument 'b.pem' after TLS file.
        ! TLS INGRESS CIPHERS PRINT all
        = Unexpected argument 'all' after TLS CIPHERS PRINT.
        ! TRACE VHOST v w
        = Unexpected argument 'w' after TRACE.
        ! TRACE OFF now
        = Unexpected argument 'now' after TRACE OFF.
        ! VHOST PAUSE v w
        = Unexpected argument 'w' after VHOST.
        ! VHOST PRINT all
        = Unexpected argument 'all' after VHOST PRINT.
        ! EXIT now
        = Unexpected argument 'now' after EXIT.
        "#,
    );
    assert_eq!(ctl(&p.control_socket, "CONFIG DUMP"), before);
    assert_eq!(ctl(&p.control_socket, "VHOST PRINT"), "");
}

#[test]
fn failed_commands_change_nothing() {
    let p = bare();
    for line in [
        "BACKEND ADD b1 dc1 127.0.0.1 5672",
        "BACKEND ADD b2 dc1 127.0.0.1 5673",
        "FARM ADD f round-robin b1",
        "MAP DEFAULT f",
    ] {
        check(&p, line, "", true);
    }
    let before = ctl(&p.control_socket, "CONFIG DUMP");
    for line in [
        "FARM ADD f round-robin b2 missing",
        "FARM ADD g round-robin b1 missing",
        "BACKEND ADD b1 dc9 127.0.0.1 1",
        "FARM PARTITION g datacenter-affinity",
        "BACKEND ADD b3 dc1 127.0.0.1 0",
    ] {
        let (_, code) = ctl_bin(&p.control_socket, line);
        assert_eq!(code, 3, "{line:?} must be an error");
    }
    assert_eq!(ctl(&p.control_socket, "FARM PRINT"), "f: b1 \n");
    assert_eq!(ctl(&p.control_socket, "CONFIG DUMP"), before);
}

#[test]
fn config_dump_ends_with_paused_vhosts_and_listeners() {
    let p = bare();
    transcript(
        &p,
        "> BACKEND ADD b1 dc1 127.0.0.1 5672\n> FARM ADD f round-robin b1\n> MAP DEFAULT f\n",
    );
    check(&p, "VHOST PAUSE orders", "", true);
    check(&p, &format!("LISTEN START {}", p.port), "", true);
    let expected = format!(
        "BACKEND ADD b1 dc1 127.0.0.1 5672\nFARM ADD f round-robin b1\nMAP DEFAULT f\nVHOST PAUSE orders\nLISTEN START {}\n",
        p.port
    );
    assert_eq!(ctl(&p.control_socket, "CONFIG DUMP"), expected);
}
