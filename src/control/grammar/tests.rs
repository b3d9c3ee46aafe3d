//! Unit tests of the grammar: one group per verb, typo errors, and the
//! properties the fuzz target also checks (never panics; printing a
//! command parses back to it).

use super::*;
use proptest::prelude::*;

fn ok(line: &str) -> Command {
    parse(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

fn err(line: &str) -> String {
    match parse(line) {
        Ok(c) => panic!("{line} parsed as {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn upgrade() {
    assert_eq!(
        ok("UPGRADE HANDOFF"),
        Command::Upgrade(UpgradeStep::Handoff)
    );
    assert_eq!(
        ok("upgrade release"),
        Command::Upgrade(UpgradeStep::Release)
    );
    assert_eq!(ok("UPGRADE RELEASE").to_string(), "UPGRADE RELEASE");
    assert_eq!(err("UPGRADE"), "No subcommand provided.");
    assert_eq!(err("UPGRADE HANDOF"), "Unknown subcommand.");
    assert!(err("UPGRADE HANDOFF now").contains("'now'"));
    // The exchange's own lines are these commands.
    assert_eq!(
        ok(crate::handoff::wire::REQUEST),
        Command::Upgrade(UpgradeStep::Handoff)
    );
    assert_eq!(
        ok(crate::handoff::wire::RELEASE),
        Command::Upgrade(UpgradeStep::Release)
    );
}

#[test]
fn configuration_changes_are_told_apart_from_reads() {
    for line in [
        "BACKEND ADD b dc h 1",
        "BACKEND DELETE b",
        "DATACENTER SET x",
        "FARM ADD f round-robin b",
        "FARM DELETE f",
        "LISTEN START 5672",
        "LISTEN STOP",
        "MAP DEFAULT f",
        "TLS INGRESS KEY_FILE k",
        "VHOST PAUSE v",
        "VHOST UNPAUSE v",
    ] {
        assert!(ok(line).changes_configuration(), "{line}");
    }
    for line in [
        "BACKEND PRINT",
        "CONFIG DUMP",
        "CONN",
        "DATACENTER PRINT",
        "EXIT",
        "FARM PRINT",
        "HELP",
        "MAP PRINT",
        "SESSION 1 PAUSE",
        "TLS INGRESS CIPHERS PRINT",
        "UPGRADE RELEASE",
        "VHOST PRINT",
        "VHOST FORCE_DISCONNECT v",
    ] {
        assert!(!ok(line).changes_configuration(), "{line}");
    }
}

#[test]
fn backend() {
    assert_eq!(
        ok("backend add b1 dc1 h 5672 tls send-proxy send-proxy-v2"),
        Command::Backend(BackendCommand::Add(NewBackend {
            name: "b1".into(),
            datacenter: "dc1".into(),
            host: "h".into(),
            port: 5672,
            dns: false,
            proxy_header: ProxyHeader::V2,
            tls: true,
        }))
    );
    assert_eq!(
        ok("BACKEND ADD_DNS b h 1 2").to_string(),
        "BACKEND ADD_DNS b h 1 2"
    );
    assert_eq!(
        err("BACKEND ADD x dc host 5671 TSL"),
        "Unknown backend option 'TSL': expected SEND-PROXY, SEND-PROXY-V2 or TLS."
    );
    assert_eq!(
        err("BACKEND ADD x dc host 5671 SEND-PROXY-V3"),
        "Unknown backend option 'SEND-PROXY-V3': expected SEND-PROXY, SEND-PROXY-V2 or TLS."
    );
    for line in [
        "BACKEND ADD a b c",
        "BACKEND ADD a b c 0",
        "BACKEND ADD a b c x",
    ] {
        assert_eq!(err(line), "Arguments not correctly provided");
    }
    assert_eq!(err("BACKEND DELETE"), "DELETE requires a name argument");
    assert_eq!(
        err("BACKEND DELETE a b"),
        "Unexpected argument 'b' after BACKEND DELETE."
    );
    assert_eq!(
        ok("backend drain b1"),
        Command::Backend(BackendCommand::Drain { name: "b1".into() })
    );
    assert_eq!(ok("BACKEND UNDRAIN b1").to_string(), "BACKEND UNDRAIN b1");
    assert_eq!(err("BACKEND DRAIN"), "DRAIN requires a name argument");
    assert_eq!(
        err("BACKEND UNDRAIN a b"),
        "Unexpected argument 'b' after BACKEND UNDRAIN."
    );
    assert_eq!(err("BACKEND frob"), "Subcommand 'FROB' not recognized.");
    assert_eq!(err("BACKEND"), "Subcommand '' not recognized.");
    assert_eq!(
        ok("BACKEND PRINT JSON"),
        Command::Backend(BackendCommand::Print { json: true })
    );
    assert_eq!(
        err("BACKEND PRINT jsno"),
        "Unexpected argument 'jsno' after BACKEND PRINT."
    );
}

#[test]
fn farm() {
    assert_eq!(
        ok("farm add_manual f round-robin b1 b1").to_string(),
        "FARM ADD_MANUAL f round-robin b1 b1"
    );
    assert_eq!(
        err("FARM ADD f round-robin"),
        "Farm name and selector must be provided."
    );
    assert_eq!(err("FARM ADD f rr b"), "Selector 'rr' not found");
    assert_eq!(
        err("FARM PARTITION f"),
        "Farm name and policy must be provided."
    );
    assert_eq!(err("FARM PARTITION f x"), "Partition policy 'x' not found");
    assert_eq!(
        err("FARM PARTITION f datacenter-affinity x"),
        "Unexpected argument 'x' after FARM PARTITION."
    );
    assert_eq!(err("FARM DELETE"), "Farm name not provided.");
    assert_eq!(err("FARM x"), "Subcommand 'X' not recognized.");
}

#[test]
fn listen() {
    assert_eq!(
        ok("LISTEN START 5672"),
        Command::Listen(ListenCommand::Start {
            addr: "[::]:5672".parse().unwrap(),
            kind: ListenerKind::default(),
        })
    );
    assert_eq!(
        ok("listen start_secure 127.0.0.1:5671 proxy").to_string(),
        "LISTEN START_SECURE 127.0.0.1:5671 PROXY"
    );
    assert_eq!(err("LISTEN START 0"), "Invalid port provided.");
    assert_eq!(
        err("LISTEN START 1 PROXI"),
        "Unknown listener option 'PROXI': expected PROXY."
    );
    assert_eq!(err("LISTEN STOP 56x2"), "Invalid port provided.");
    assert_eq!(
        ok("LISTEN STOP"),
        Command::Listen(ListenCommand::Stop { port: None })
    );
    assert_eq!(err("LISTEN"), "No subcommand provided.");
    assert_eq!(err("LISTEN GO"), "Unknown subcommand.");
}

#[test]
fn config_conn_datacenter_log_help_exit() {
    assert_eq!(ok("config dump Json"), Command::ConfigDump { json: true });
    assert_eq!(err("CONFIG"), "No subcommand provided.");
    assert_eq!(err("CONFIG LOAD"), "Unknown subcommand.");
    assert_eq!(ok("CONN"), Command::Conn { json: false });
    assert_eq!(err("CONN x"), "Unexpected argument 'x' after CONN.");
    assert_eq!(ok("DATACENTER SET").to_string(), "DATACENTER SET");
    assert_eq!(
        err("DATACENTER SET a b"),
        "Unexpected argument 'b' after DATACENTER SET."
    );
    assert_eq!(err("DATACENTER GET"), "Unknown subcommand.");
    assert_eq!(
        ok("LOG file -3"),
        Command::Log {
            target: LogTarget::File,
            level: 0
        }
    );
    assert_eq!(ok("LOG CONSOLE 9").to_string(), "LOG CONSOLE 5");
    assert_eq!(err("LOG CONSOLE"), "Command or verbosity not found.");
    assert_eq!(err("LOG DISK 1"), "Type to verb is not known.");
    assert_eq!(ok("HELP"), Command::Help);
    assert_eq!(ok("FROBNICATE all"), Command::Help);
    assert_eq!(ok("exit\r\n"), Command::Exit);
    assert_eq!(
        err("AUTH PRINT"),
        "AUTH is not available in this version of amqpprox yet."
    );
}

#[test]
fn map_and_maphostname() {
    assert_eq!(ok("map farm / f").to_string(), "MAP FARM / f");
    assert_eq!(err("MAP BACKEND v"), "Vhost and backend must be provided");
    assert_eq!(err("MAP FARM v"), "Vhost and farm name must be provided");
    assert_eq!(err("MAP UNMAP"), "Vhost not provided.");
    assert_eq!(err("MAP DEFAULT"), "Farm name for default must be provided");
    assert_eq!(err("MAP"), "Unrecognized subcommand.");
    assert_eq!(
        err("MAP FARM v f g"),
        "Unexpected argument 'g' after MAP FARM."
    );
    assert_eq!(ok("MAPHOSTNAME dns"), Command::MapHostnameDns);
    assert_eq!(err("MAPHOSTNAME"), "No subcommand specified.");
    assert_eq!(err("MAPHOSTNAME ip"), "Only DNS subcommand is supported.");
}

#[test]
fn session_stat_trace_vhost() {
    assert_eq!(
        ok("SESSION 7 force_disconnect"),
        Command::Session {
            id: 7,
            action: SessionVerb::ForceDisconnect
        }
    );
    assert_eq!(err("SESSION x PAUSE"), "Session not found.");
    assert_eq!(
        parse("SESSION 7 NAP"),
        Err(ParseError::SessionSubcommand {
            id: 7,
            word: "NAP".into()
        })
    );
    assert_eq!(
        err("SESSION 7 PAUSE now"),
        "Unexpected argument 'now' after SESSION."
    );
    assert_eq!(
        ok("STAT LISTEN JSON vhost=x").to_string(),
        "STAT LISTEN json vhost=x"
    );
    assert_eq!(
        err("STAT LISTEN json a=b=c"),
        "Filter specified incorrectly."
    );
    assert_eq!(
        err("STAT STOP send"),
        "Unrecognized argument for STOP: \"send\"."
    );
    assert_eq!(
        err("STAT SEND h 1 all"),
        "Filters aren't supported when sending metrics."
    );
    assert_eq!(err("STAT SEND h x"), "Invalid port 'x' for sending stats.");
    assert_eq!(
        err("STAT ENABLE per-host"),
        "Only LISTEN, SEND, STOP, ENABLE, and DISABLE subcommands are supported."
    );
    assert_eq!(
        ok("TRACE SOURCE 10.0.0.1"),
        Command::Trace(TraceCommand::Source("10.0.0.1".parse().unwrap()))
    );
    assert_eq!(err("TRACE SESSION x"), "Invalid session id 'x'.");
    assert_eq!(
        err("TRACE"),
        "Usage: TRACE (VHOST vhost | SOURCE ip | SESSION id | OFF | PRINT)"
    );
    assert_eq!(
        err("TRACE OFF now"),
        "Unexpected argument 'now' after TRACE OFF."
    );
    assert_eq!(err("VHOST PAUSE"), "Session not found.");
    assert_eq!(err("VHOST NAP v"), "Subcommand not recognised.");
    assert_eq!(ok("vhost pause v").to_string(), "VHOST PAUSE v");
}

#[test]
fn tls() {
    assert_eq!(
        ok("tls ingress verify_mode peer fail_if_no_peer_cert").to_string(),
        "TLS INGRESS VERIFY_MODE PEER FAIL_IF_NO_PEER_CERT"
    );
    assert_eq!(
        ok("TLS EGRESS CIPHERS SET A B:C").to_string(),
        "TLS EGRESS CIPHERS SET A:B:C"
    );
    assert_eq!(
        err("TLS SIDEWAYS KEY_FILE f"),
        "Direction must be INGRESS or EGRESS"
    );
    assert_eq!(err("TLS INGRESS"), "File must be specified");
    assert_eq!(err("TLS INGRESS KEY_FILE"), "File must be specified");
    assert_eq!(
        err("TLS INGRESS KEY_FILE a b"),
        "Unexpected argument 'b' after TLS file."
    );
    assert_eq!(err("TLS INGRESS VERIFY_MODE PEAR"), "Unknown mode: PEAR");
    assert_eq!(
        err("TLS INGRESS CIPHERS"),
        "CIPHERS needs PRINT or SET followed by a cipher list"
    );
    assert_eq!(err("TLS INGRESS PEM x"), "Unknown TLS command: PEM");
}

/// Printing a parsed command parses back to the same command, and the
/// parser never panics, whatever the line.
fn check_line(line: &str) {
    if let Ok(command) = parse(line) {
        let printed = command.to_string();
        assert_eq!(
            parse(&printed),
            Ok(command),
            "{line:?} printed as {printed:?}"
        );
    }
}

const WORDS: &[&str] = &[
    "BACKEND",
    "ADD",
    "ADD_DNS",
    "DELETE",
    "PRINT",
    "json",
    "FARM",
    "ADD_MANUAL",
    "PARTITION",
    "round-robin",
    "datacenter-affinity",
    "MAP",
    "FARM",
    "UNMAP",
    "DEFAULT",
    "REMOVE_DEFAULT",
    "LISTEN",
    "START",
    "START_SECURE",
    "STOP",
    "PROXY",
    "TLS",
    "SEND-PROXY",
    "SEND-PROXY-V2",
    "INGRESS",
    "EGRESS",
    "KEY_FILE",
    "VERIFY_MODE",
    "PEER",
    "CIPHERS",
    "SET",
    "STAT",
    "SEND",
    "vhost=a",
    "all",
    "human",
    "TRACE",
    "SOURCE",
    "::1",
    "SESSION",
    "VHOST",
    "PAUSE",
    "LOG",
    "CONSOLE",
    "-4",
    "5672",
    "0",
    "[::1]:5",
    "1.2.3.4:9",
    "x",
    "DATACENTER",
    "CONN",
    "CONFIG",
    "DUMP",
    "ENABLE",
    "per-source",
    "MAPHOSTNAME",
    "DNS",
    "OFF",
    "HELP",
    "EXIT",
    "=",
    "a=",
];

proptest! {
    #[test]
    fn arbitrary_lines(line in "\\PC{0,40}") {
        check_line(&line);
    }

    #[test]
    fn lines_of_grammar_words(words in proptest::collection::vec(0..WORDS.len(), 1..7)) {
        let line: Vec<&str> = words.into_iter().map(|i| WORDS[i]).collect();
        check_line(&line.join(" "));
    }
}
