//! TLS end to end: lapin over TLS to a `LISTEN START_SECURE` port, the proxy
//! over TLS to RabbitMQ's TLS listener with verification on (the extra node
//! of `ci/ensure-rabbitmq-extra.sh`), wrong CA and wrong host name refused
//! with the reason and failed over, client certificates required and
//! checked, TLS 1.3 and 1.2 with `openssl s_client`, the `TLS` command's
//! texts, SIGHUP reloads, and IPv6 on both legs.
//!
//! Owns the TLS contract seen from outside; never inspects the proxy's
//! internals, never skips: without RabbitMQ's extra nodes or openssl, the
//! tests fail and say what to run.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use certs::{BrokerCerts, Pki, P12_PASSWORD, TLS_NODE, TLS_NODE_TLS_PORT};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use support::control::ctl;
use support::proxy::{ProxyBuilder, ProxyProcess};
use support::{blocking, unique_name};

const LIMIT: Duration = Duration::from_secs(60);

fn builder() -> ProxyBuilder {
    ProxyProcess::builder("127.0.0.1", 5672)
        .without_simple_mode()
        .shards(2)
        .verbosity(4)
}

/// Runs control lines that must all succeed: an empty reply, or the note
/// that a half-given side waits for the rest.
fn setup(proxy: &ProxyProcess, lines: &[String]) {
    for line in lines {
        let reply = ctl(&proxy.control_socket, line);
        assert!(
            reply.is_empty() || reply.contains("changes are not in force yet"),
            "reply to {line:?}: {reply:?}"
        );
    }
}

/// INGRESS with the rcgen PKI's server certificate; EGRESS verifying the
/// broker against the script's CA and presenting its client certificate.
fn tls_lines(ingress: &Pki, broker: &BrokerCerts) -> Vec<String> {
    vec![
        format!("TLS INGRESS KEY_FILE {}", ingress.path("server.key")),
        format!("TLS INGRESS CERT_CHAIN_FILE {}", ingress.path("server.pem")),
        format!("TLS EGRESS CA_CERT_FILE {}", broker.path("ca.pem")),
        "TLS EGRESS VERIFY_MODE PEER".to_string(),
        format!("TLS EGRESS CERT_CHAIN_FILE {}", broker.path("client.pem")),
        format!("TLS EGRESS KEY_FILE {}", broker.path("client.key")),
    ]
}

async fn lapin_tls(
    port: u16,
    ca_pem: &str,
    identity: Option<Vec<u8>>,
    name: &str,
) -> lapin::Result<Connection> {
    let uri = format!("amqps://guest:guest@localhost:{port}/%2f");
    let tls = OwnedTLSConfig {
        identity: identity.map(|der| OwnedIdentity {
            der,
            password: P12_PASSWORD.to_string(),
        }),
        cert_chain: Some(ca_pem.to_string()),
    };
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect_with_config(&uri, props, tls).await
}

/// Declare, publish, consume one message and check it came back whole.
async fn round_trip(connection: &Connection, body: &[u8]) {
    let channel = connection.create_channel().await.expect("channel");
    let queue = unique_name("tls-queue");
    channel
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    channel
        .basic_publish(
            "",
            &queue,
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    let mut consumer = channel
        .basic_consume(
            &queue,
            "c",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery within 10 s")
        .expect("a delivery")
        .expect("a good delivery");
    assert_eq!(delivery.data, body);
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
    // Closed here rather than on drop: lapin refuses to close the
    // connection (`InvalidChannelState(Closing)`) while a dropped channel
    // is still closing.
    channel.close(200, "done").await.expect("close the channel");
}

#[tokio::test(flavor = "multi_thread")]
async fn lapin_over_tls_on_both_legs_with_verification() {
    certs::require_extra_nodes();
    let broker = BrokerCerts::get();
    let proxy = builder().start();
    let pki = Pki::generate(proxy.dir(), "ingress");
    let mut lines = tls_lines(&pki, &broker);
    lines.extend([
        format!("BACKEND ADD tlsb dc localhost {TLS_NODE_TLS_PORT} TLS"),
        "FARM ADD f round-robin tlsb".to_string(),
        "MAP DEFAULT f".to_string(),
        format!("LISTEN START_SECURE {}", proxy.port),
    ]);
    setup(&proxy, &lines);

    let name = unique_name("lapin-tls");
    let connection = tokio::time::timeout(LIMIT, lapin_tls(proxy.port, &pki.ca_pem(), None, &name))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("lapin over TLS through the proxy: {e:?}"));
    round_trip(&connection, &vec![7u8; 4 * 1024 * 1024]).await;

    let wanted = name.clone();
    let seen = blocking(move || certs::wait_node_connection(TLS_NODE, &wanted, LIMIT)).await;
    let client = seen
        .property("amqpprox_client")
        .unwrap_or_default()
        .to_string();
    assert!(
        client.starts_with("127.0.0.1:") && client.ends_with(" TLS"),
        "amqpprox_client = {client:?}"
    );
    let line = certs::wait_log(&proxy, &format!("connectionName=\"{name}\""), LIMIT);
    assert!(line.contains("tlsEnabled=secured"), "{line}");
    connection.close(200, "done").await.expect("close");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_host_name_and_wrong_ca_are_refused_and_failed_over() {
    certs::require_extra_nodes();
    let broker = BrokerCerts::get();
    let proxy = builder().start();
    let pki = Pki::generate(proxy.dir(), "ingress");
    // 127.0.0.1 is not in the broker certificate's names (localhost, ::1).
    let mut lines = tls_lines(&pki, &broker);
    lines.extend([
        format!("BACKEND ADD wrongname dc 127.0.0.1 {TLS_NODE_TLS_PORT} TLS"),
        format!("BACKEND ADD good dc localhost {TLS_NODE_TLS_PORT} TLS"),
        "FARM ADD f round-robin wrongname good".to_string(),
        "MAP DEFAULT f".to_string(),
        format!("LISTEN START_SECURE {}", proxy.port),
    ]);
    setup(&proxy, &lines);
    for i in 0..2 {
        let name = unique_name(&format!("failover-{i}"));
        let c = lapin_tls(proxy.port, &pki.ca_pem(), None, &name)
            .await
            .unwrap_or_else(|e| panic!("session {i} must fail over to 'good': {e:?}"));
        round_trip(&c, b"after failover").await;
        c.close(200, "done").await.expect("close");
    }
    let line = certs::wait_log(&proxy, "Backend 'wrongname'", LIMIT);
    assert!(
        line.contains("certificate not valid for name \"127.0.0.1\"")
            && line.contains("trying the next one"),
        "{line}"
    );
    assert!(
        line.contains("ERROR"),
        "a refused broker certificate is an error: {line}"
    );

    // A CA that did not sign the broker: refused, then the plain main node.
    let other = Pki::generate(proxy.dir(), "other");
    setup(
        &proxy,
        &[
            format!("TLS EGRESS CA_CERT_FILE {}", other.path("ca.pem")),
            "BACKEND ADD plain dc 127.0.0.1 5672".to_string(),
            "FARM ADD f round-robin good plain".to_string(),
        ],
    );
    for i in 0..2 {
        let c = lapin_tls(proxy.port, &pki.ca_pem(), None, &unique_name("wrong-ca"))
            .await
            .unwrap_or_else(|e| panic!("session {i} must fail over to 'plain': {e:?}"));
        round_trip(&c, b"plain after a bad CA").await;
        c.close(200, "done").await.expect("close");
    }
    let line = certs::wait_log(&proxy, "UnknownIssuer", LIMIT);
    assert!(line.contains("Backend 'good'"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_are_required_and_checked() {
    certs::require_extra_nodes();
    certs::require_openssl();
    let broker = BrokerCerts::get();
    let proxy = builder().start();
    let pki = Pki::generate(proxy.dir(), "ingress");
    let stranger = Pki::generate(proxy.dir(), "stranger");
    let mut lines = tls_lines(&pki, &broker);
    lines.extend([
        // Clients must present a certificate signed by the broker tests' CA.
        format!("TLS INGRESS CA_CERT_FILE {}", broker.path("ca.pem")),
        "TLS INGRESS VERIFY_MODE PEER FAIL_IF_NO_PEER_CERT".to_string(),
        format!("BACKEND ADD tlsb dc localhost {TLS_NODE_TLS_PORT} TLS"),
        "FARM ADD f round-robin tlsb".to_string(),
        "MAP DEFAULT f".to_string(),
        format!("LISTEN START_SECURE {}", proxy.port),
    ]);
    setup(&proxy, &lines);

    let without = lapin_tls(proxy.port, &pki.ca_pem(), None, &unique_name("no-cert")).await;
    assert!(
        without.is_err(),
        "a client without a certificate must be refused"
    );
    certs::wait_log(&proxy, "peer sent no certificates", LIMIT);

    let p12 = stranger.client_p12();
    let wrong = lapin_tls(
        proxy.port,
        &pki.ca_pem(),
        Some(p12),
        &unique_name("wrong-cert"),
    )
    .await;
    assert!(
        wrong.is_err(),
        "a client certificate from another CA must be refused"
    );
    let line = certs::wait_log(&proxy, "UnknownIssuer", LIMIT);
    assert!(line.contains("WARN"), "{line}");

    let good = std::fs::read(broker.path("client.p12")).expect("client.p12");
    let c = lapin_tls(
        proxy.port,
        &pki.ca_pem(),
        Some(good),
        &unique_name("good-cert"),
    )
    .await
    .unwrap_or_else(|e| panic!("a client with a good certificate: {e:?}"));
    round_trip(&c, b"with a client certificate").await;
    c.close(200, "done").await.expect("close");
}

/// `openssl s_client -<version>` against the port; its `-brief` output.
fn s_client(port: u16, version: &str, ca: &str) -> String {
    let out = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-brief", version])
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .args([
            "-servername",
            "localhost",
            "-CAfile",
            ca,
            "-verify_return_error",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn openssl_s_client_negotiates_tls13_and_tls12() {
    certs::require_openssl();
    let proxy = builder().start();
    let pki = Pki::generate(proxy.dir(), "ingress");
    setup(
        &proxy,
        &[
            format!("TLS INGRESS KEY_FILE {}", pki.path("server.key")),
            format!("TLS INGRESS CERT_CHAIN_FILE {}", pki.path("server.pem")),
            format!("LISTEN START_SECURE {}", proxy.port),
        ],
    );
    let ca = pki.path("ca.pem");
    let v13 = s_client(proxy.port, "-tls1_3", &ca);
    assert!(
        v13.contains("Protocol version: TLSv1.3") && v13.contains("Verification: OK"),
        "{v13}"
    );
    let v12 = s_client(proxy.port, "-tls1_2", &ca);
    assert!(
        v12.contains("Protocol version: TLSv1.2") && v12.contains("Verification: OK"),
        "{v12}"
    );
    assert!(
        v12.contains("Ciphersuite: ECDHE-ECDSA-AES256-GCM-SHA384"),
        "{v12}"
    );

    // CIPHERS SET reaches new handshakes: TLS 1.2 with one ChaCha20 suite.
    let reply = ctl(
        &proxy.control_socket,
        "TLS INGRESS CIPHERS SET ECDHE-ECDSA-CHACHA20-POLY1305:!TLS_AES_128_GCM_SHA256",
    );
    assert_eq!(
        reply,
        "Updated cipher list:\nTLS_AES_256_GCM_SHA384\nTLS_CHACHA20_POLY1305_SHA256\nECDHE-ECDSA-CHACHA20-POLY1305\n"
    );
    let v12 = s_client(proxy.port, "-tls1_2", &ca);
    assert!(
        v12.contains("Ciphersuite: ECDHE-ECDSA-CHACHA20-POLY1305"),
        "{v12}"
    );
}

#[test]
fn tls_command_texts() {
    certs::require_openssl();
    let proxy = builder().start();
    let pki = Pki::generate(proxy.dir(), "a");
    let other = Pki::generate(proxy.dir(), "b");
    let s = &proxy.control_socket;
    let dir = proxy.dir().display().to_string();
    assert_eq!(ctl(s, "TLS"), "Direction must be INGRESS or EGRESS\n");
    assert_eq!(
        ctl(s, "TLS SIDEWAYS KEY_FILE x"),
        "Direction must be INGRESS or EGRESS\n"
    );
    assert_eq!(ctl(s, "TLS INGRESS KEY_FILE"), "File must be specified\n");
    assert_eq!(ctl(s, "TLS ingress"), "File must be specified\n");
    assert_eq!(
        ctl(s, "TLS INGRESS VERIFY_MODE PEER sometimes"),
        "Unknown mode: SOMETIMES\n"
    );
    assert_eq!(ctl(s, "TLS INGRESS FROB x"), "Unknown TLS command: FROB\n");
    assert_eq!(
        ctl(s, &format!("TLS INGRESS KEY_FILE {dir}/missing.pem")),
        format!("Error: system:2 (No such file or directory) reading '{dir}/missing.pem'\n")
    );
    assert_eq!(
        ctl(
            s,
            &format!("TLS INGRESS CERT_CHAIN_FILE {}", pki.path("server.key"))
        ),
        format!(
            "Error: ssl: '{}': no certificate found (expected PEM 'BEGIN CERTIFICATE' blocks)\n",
            pki.path("server.key")
        )
    );
    assert!(ctl(
        s,
        &format!("TLS INGRESS RSA_KEY_FILE {}", pki.path("server.key"))
    )
    .contains("RSA_KEY_FILE needs an RSA key"));
    let broker_like = format!("{dir}/dh.pem");
    std::fs::write(
        &broker_like,
        "-----BEGIN DH PARAMETERS-----\nMAA=\n-----END DH PARAMETERS-----\n",
    )
    .expect("write dh");
    assert!(ctl(s, &format!("TLS INGRESS TMP_DH_FILE {broker_like}"))
        .starts_with("TMP_DH_FILE has no effect with rustls"));
    let print = ctl(s, "TLS EGRESS CIPHERS print");
    assert!(
        print.starts_with("Ciphers:\nTLS_AES_256_GCM_SHA384\n")
            && print.ends_with("ECDHE-RSA-CHACHA20-POLY1305\n"),
        "{print}"
    );
    let refused = ctl(
        s,
        "TLS EGRESS CIPHERS SET ECDHE-RSA-AES128-GCM-SHA256:DES-CBC3-SHA",
    );
    assert!(
        refused.starts_with("Failed to set cipher suite. Unknown cipher 'DES-CBC3-SHA'")
            && refused.contains("\nUpdated cipher list:\n")
            && refused.ends_with(&print["Ciphers:\n".len()..]),
        "{refused}"
    );

    // Not ready: START_SECURE says why, and nothing listens.
    let reply = ctl(s, &format!("LISTEN START_SECURE {}", proxy.port));
    assert!(
        reply.contains("TLS INGRESS is not ready (INGRESS needs both KEY_FILE"),
        "{reply}"
    );
    // Key then chain: silent; then a mismatching key keeps the good pair.
    assert_eq!(
        ctl(
            s,
            &format!("TLS INGRESS KEY_FILE {}", pki.path("server.key"))
        ),
        ""
    );
    assert_eq!(
        ctl(
            s,
            &format!("TLS INGRESS CERT_CHAIN_FILE {}", pki.path("server.pem"))
        ),
        ""
    );
    assert_eq!(ctl(s, &format!("LISTEN START_SECURE {}", proxy.port)), "");
    let note = ctl(
        s,
        &format!("TLS INGRESS KEY_FILE {}", other.path("server.key")),
    );
    assert!(
        note.starts_with("TLS INGRESS changes are not in force yet: the key"),
        "{note}"
    );
    let served = s_client(proxy.port, "-tls1_3", &pki.path("ca.pem"));
    assert!(
        served.contains("CN = a server"),
        "the previous pair still serves: {served}"
    );
    assert_eq!(
        ctl(s, &format!("LISTEN START {} FAST", proxy.port + 1)),
        "Unknown listener option 'FAST': expected PROXY.\n"
    );
    // The egress side warns while its client certificate is half given.
    let note = ctl(
        s,
        &format!("TLS EGRESS KEY_FILE {}", pki.path("client.key")),
    );
    assert!(note.contains("a client certificate needs both"), "{note}");
}

#[test]
fn sighup_reloads_the_key_material() {
    certs::require_openssl();
    let proxy = builder().start();
    let first = Pki::generate(proxy.dir(), "first");
    let second = Pki::generate(proxy.dir(), "second");
    let key = format!("{}/live.key", proxy.dir().display());
    let chain = format!("{}/live.pem", proxy.dir().display());
    std::fs::copy(first.file("server.key"), &key).expect("copy");
    std::fs::copy(first.file("server.pem"), &chain).expect("copy");
    setup(
        &proxy,
        &[
            format!("TLS INGRESS KEY_FILE {key}"),
            format!("TLS INGRESS CERT_CHAIN_FILE {chain}"),
            format!("LISTEN START_SECURE {}", proxy.port),
        ],
    );
    let before = s_client(proxy.port, "-tls1_3", &first.path("ca.pem"));
    assert!(before.contains("CN = first server"), "{before}");

    std::fs::copy(second.file("server.key"), &key).expect("copy");
    std::fs::copy(second.file("server.pem"), &chain).expect("copy");
    hup(&proxy);
    certs::wait_log(&proxy, "SIGHUP: TLS files reloaded", LIMIT);
    let after = s_client(proxy.port, "-tls1_3", &second.path("ca.pem"));
    assert!(
        after.contains("CN = second server") && after.contains("Verification: OK"),
        "{after}"
    );

    // A broken file on reload changes nothing.
    std::fs::write(&chain, "not a certificate").expect("write");
    hup(&proxy);
    certs::wait_log(&proxy, "SIGHUP: TLS reload failed, nothing changed", LIMIT);
    let still = s_client(proxy.port, "-tls1_3", &second.path("ca.pem"));
    assert!(still.contains("CN = second server"), "{still}");
}

fn hup(proxy: &ProxyProcess) {
    let status = Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

// lapin's connector signature fixes the closure's large error type.
#[allow(clippy::result_large_err)]
#[tokio::test(flavor = "multi_thread")]
async fn ipv6_listener_and_ipv6_tls_backend() {
    certs::require_extra_nodes();
    let broker = BrokerCerts::get();
    let proxy = builder().start();
    let pki = Pki::generate(proxy.dir(), "ingress");
    let mut lines = tls_lines(&pki, &broker);
    lines.extend([
        // Verified by the certificate's IP:::1 name.
        format!("BACKEND ADD v6 dc ::1 {TLS_NODE_TLS_PORT} TLS"),
        "FARM ADD f round-robin v6".to_string(),
        "MAP DEFAULT f".to_string(),
        format!("LISTEN START [::1]:{}", proxy.port),
    ]);
    setup(&proxy, &lines);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", proxy.port)).is_err(),
        "a listener bound to [::1] must not serve IPv4"
    );
    let socket = std::net::TcpStream::connect(("::1", proxy.port)).expect("connect to [::1]");
    let client_port = socket.local_addr().expect("local").port();
    socket.set_nonblocking(true).expect("non-blocking");
    let slot = Mutex::new(Some(lapin::tcp::TcpStream::from_std(socket).expect("wrap")));
    let name = unique_name("ipv6");
    let uri = format!("amqp://guest:guest@localhost:{}/%2f", proxy.port)
        .parse::<lapin::uri::AMQPUri>()
        .expect("uri");
    let props = ConnectionProperties::default().with_connection_name(name.as_str().into());
    let c = Connection::connector(
        uri,
        Box::new(move |_| {
            slot.lock()
                .expect("slot")
                .take()
                .ok_or_else(|| std::io::Error::other("socket used").into())
        }),
        props,
    )
    .await
    .unwrap_or_else(|e| panic!("lapin over [::1]: {e:?}"));
    round_trip(&c, b"over IPv6").await;
    let wanted = name.clone();
    let seen = blocking(move || certs::wait_node_connection(TLS_NODE, &wanted, LIMIT)).await;
    assert_eq!(
        seen.property("amqpprox_client"),
        Some(format!("[::1]:{client_port}").as_str())
    );
    // rabbitmqctl prints an IPv6 peer as the Erlang tuple {0,0,0,0,0,0,0,1}.
    assert!(
        ["::1", "0.0.0.0.0.0.0.1"].contains(&seen.peer_host.as_str()),
        "the proxy must reach the broker over IPv6, it came from {}",
        seen.peer_host
    );
    c.close(200, "done").await.expect("close");
}

/// `CONFIG DUMP` carries the TLS settings and the kind of each listener,
/// so a replayed dump serves AMQPS again, not plain AMQP.
#[test]
fn config_dump_keeps_tls_settings_and_secure_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path(), "dump");
    let proxy = builder().start();
    setup(
        &proxy,
        &[
            format!("TLS INGRESS KEY_FILE {}", pki.path("server.key")),
            format!("TLS INGRESS CERT_CHAIN_FILE {}", pki.path("server.pem")),
            "TLS EGRESS VERIFY_MODE PEER".to_string(),
            format!("TLS EGRESS CA_CERT_FILE {}", pki.path("ca.pem")),
            format!("LISTEN START_SECURE {} PROXY", proxy.port),
        ],
    );
    let expected = format!(
        "TLS INGRESS KEY_FILE {key}\nTLS INGRESS CERT_CHAIN_FILE {chain}\n\
         TLS EGRESS CA_CERT_FILE {ca}\nTLS EGRESS VERIFY_MODE PEER\n\
         LISTEN START_SECURE {port} PROXY\n",
        key = pki.path("server.key"),
        chain = pki.path("server.pem"),
        ca = pki.path("ca.pem"),
        port = proxy.port,
    );
    assert_eq!(ctl(&proxy.control_socket, "CONFIG DUMP"), expected);
}
