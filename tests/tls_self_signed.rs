//! A self-signed broker certificate given as `TLS EGRESS CA_CERT_FILE`, as
//! users of the OpenSSL-based original configure it: accepted when it is
//! byte for byte one of the trust anchors and valid now for the broker's
//! name, refused otherwise.
//!
//! The verifier is checked directly with rcgen-made certificates (every
//! rule, no network), and once end to end: a proxy with `VERIFY_MODE PEER`
//! reaching a TLS broker (a few lines of rustls in front of a hand-written
//! `Connection.Start`) whose certificate `openssl req -x509` made. Never
//! needs RabbitMQ; never skips (openssl missing fails the test).

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use amqpprox::tls::verify::{Admission, BrokerVerifier};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, Error, RootCertStore};
use support::control::ctl;
use support::dummy_broker::broker_start;
use support::proxy::ProxyProcess;
use support::raw::{self, RawConn};

const LIMIT: Duration = Duration::from_secs(30);

/// A self-signed certificate, as `openssl req -x509` makes them: CA:TRUE.
struct SelfSigned {
    der: CertificateDer<'static>,
    key: KeyPair,
}

fn self_signed(names: &[&str], ca: bool, expired: bool) -> SelfSigned {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    }
    if expired {
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2001, 1, 1);
    }
    let cert = params.self_signed(&key).expect("self-sign");
    SelfSigned {
        der: cert.der().clone(),
        key,
    }
}

fn verifier(anchors: &[&CertificateDer<'static>]) -> Arc<BrokerVerifier> {
    let anchors: Vec<CertificateDer<'static>> = anchors.iter().map(|c| (*c).clone()).collect();
    let mut roots = RootCertStore::empty();
    for a in &anchors {
        roots.add(a.clone()).expect("an anchor");
    }
    BrokerVerifier::new(
        roots,
        &anchors,
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .expect("verifier")
}

fn name(n: &str) -> ServerName<'static> {
    ServerName::try_from(n.to_string()).expect("server name")
}

#[test]
fn a_self_signed_ca_given_as_the_ca_file_is_trusted_as_itself() {
    let cert = self_signed(&["localhost"], true, false);
    let v = verifier(&[&cert.der]);
    assert_eq!(
        v.admit(&cert.der, &[], &name("localhost"), UnixTime::now()),
        Ok(Admission::TrustAnchorItself)
    );
}

#[test]
fn an_expired_self_signed_anchor_is_refused() {
    let cert = self_signed(&["localhost"], true, true);
    let v = verifier(&[&cert.der]);
    let refused = v
        .admit(&cert.der, &[], &name("localhost"), UnixTime::now())
        .expect_err("expired");
    assert!(
        matches!(
            refused,
            Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{refused:?}"
    );
}

#[test]
fn a_self_signed_anchor_for_another_name_is_refused() {
    let cert = self_signed(&["localhost"], true, false);
    let v = verifier(&[&cert.der]);
    for other in ["broker.example.com", "127.0.0.1"] {
        let refused = v
            .admit(&cert.der, &[], &name(other), UnixTime::now())
            .expect_err(other);
        assert_eq!(
            refused,
            Error::InvalidCertificate(CertificateError::NotValidForName),
            "{other}"
        );
    }
}

#[test]
fn a_different_self_signed_certificate_is_refused() {
    let trusted = self_signed(&["localhost"], true, false);
    let stranger = self_signed(&["localhost"], true, false);
    let v = verifier(&[&trusted.der]);
    // WebPKI's own refusal stands (here CaUsedAsEndEntity, as it checks the
    // end entity before looking for its issuer): the bytes differ.
    let refused = v
        .admit(&stranger.der, &[], &name("localhost"), UnixTime::now())
        .expect_err("not an anchor");
    assert!(
        matches!(refused, Error::InvalidCertificate(_)),
        "{refused:?}"
    );
}

#[test]
fn a_self_signed_end_entity_and_a_ca_signed_leaf_pass_by_the_chain_rule() {
    // CA:FALSE self-signed: WebPKI takes it as its own issuer.
    let leaf = self_signed(&["localhost"], false, false);
    assert_eq!(
        verifier(&[&leaf.der]).admit(&leaf.der, &[], &name("localhost"), UnixTime::now()),
        Ok(Admission::Chain)
    );
    // A CA and a leaf it signed, the CA given as the CA file.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let v = verifier(&[ca.der()]);
    assert_eq!(
        v.admit(leaf.der(), &[], &name("localhost"), UnixTime::now()),
        Ok(Admission::Chain)
    );
    // The CA itself, presented by a broker, is not valid for localhost.
    assert!(v
        .admit(ca.der(), &[], &name("localhost"), UnixTime::now())
        .is_err());
}

#[test]
fn one_of_several_anchors_is_enough() {
    let other = self_signed(&["other"], true, false);
    let cert = self_signed(&["localhost"], true, false);
    let v = verifier(&[&other.der, &cert.der]);
    assert_eq!(
        v.admit(&cert.der, &[], &name("localhost"), UnixTime::now()),
        Ok(Admission::TrustAnchorItself)
    );
    let _ = (&other.key, &cert.key);
}

// ---------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------

/// `openssl req -x509` for `localhost` (CA:TRUE, as openssl makes it);
/// returns (certificate path, key path).
fn openssl_self_signed(dir: &std::path::Path, label: &str) -> (String, String) {
    certs::require_openssl();
    let cert = dir.join(format!("{label}.pem"));
    let key = dir.join(format!("{label}.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl req -x509: {out:?}");
    (cert.display().to_string(), key.display().to_string())
}

/// A TLS "broker" on 127.0.0.1: for each connection, the TLS handshake with
/// `cert`/`key`, then the protocol header read and a `Connection.Start`
/// sent; then it holds until the peer leaves. Threads end with their
/// connections (every read has a timeout).
fn tls_broker(cert: &str, key: &str) -> u16 {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).unwrap(),
    ))
    .collect::<Result<_, _>>()
    .unwrap();
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).unwrap(),
    ))
    .unwrap()
    .expect("a key");
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let config = Arc::clone(&config);
            thread::spawn(move || {
                tcp.set_read_timeout(Some(LIMIT)).unwrap();
                tcp.set_write_timeout(Some(LIMIT)).unwrap();
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut header = [0u8; 8];
                if tls.read_exact(&mut header).is_err() {
                    return;
                }
                if tls.write_all(&broker_start()).is_err() || tls.flush().is_err() {
                    return;
                }
                let mut sink = [0u8; 1024];
                while matches!(tls.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    port
}

fn proxy_to_tls_broker(broker_port: u16, ca_file: &str) -> ProxyProcess {
    let proxy = ProxyProcess::builder("127.0.0.1", 5672)
        .without_simple_mode()
        .shards(1)
        .verbosity(4)
        .start();
    for line in [
        format!("TLS EGRESS CA_CERT_FILE {ca_file}"),
        "TLS EGRESS VERIFY_MODE PEER".to_string(),
        format!("BACKEND ADD selfsigned dc localhost {broker_port} TLS"),
        "FARM ADD f round-robin selfsigned".to_string(),
        "MAP DEFAULT f".to_string(),
        format!("LISTEN START {}", proxy.port),
    ] {
        let reply = ctl(&proxy.control_socket, &line);
        assert!(reply.is_empty(), "reply to {line:?}: {reply:?}");
    }
    proxy
}

#[test]
fn the_proxy_reaches_a_broker_whose_openssl_self_signed_certificate_is_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_self_signed(dir.path(), "broker");
    let broker_port = tls_broker(&cert, &key);
    let proxy = proxy_to_tls_broker(broker_port, &cert);
    // The route does not need the vhost: the broker's own Start reaches
    // the client through the verified TLS leg.
    let mut client = RawConn::connect_local(proxy.port);
    client.send(raw::PROTOCOL_HEADER);
    let start = broker_start();
    assert_eq!(client.expect_bytes(start.len()), start);
    let line = certs::wait_log(&proxy, "Broker certificate for localhost accepted", LIMIT);
    assert!(
        line.contains("itself a CA_CERT_FILE certificate"),
        "the log names the rule: {line}"
    );
}

#[test]
fn the_proxy_refuses_a_broker_with_another_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (trusted, _) = openssl_self_signed(dir.path(), "trusted");
    let (cert, key) = openssl_self_signed(dir.path(), "broker");
    let broker_port = tls_broker(&cert, &key);
    let proxy = proxy_to_tls_broker(broker_port, &trusted);
    let mut client = RawConn::connect_local(proxy.port);
    client.send(raw::PROTOCOL_HEADER);
    // No broker reachable: whatever the proxy answers itself, never the
    // broker's Start.
    let first = client
        .read_frame_within(LIMIT)
        .unwrap_or_else(|why| panic!("the proxy must answer: {why}"));
    assert_ne!(
        first.to_bytes(),
        broker_start(),
        "the refused broker's Start reached the client"
    );
    let line = certs::wait_log(&proxy, "Backend 'selfsigned'", LIMIT);
    assert!(
        line.contains("invalid peer certificate") && line.contains("ERROR"),
        "{line}"
    );
}
