//! Key material and the extra RabbitMQ nodes for the TLS and PROXY-protocol
//! tests: certificate authorities made at test time with rcgen (the
//! proxy's own certificates, a wrong CA), the broker-side certificates that
//! `ci/ensure-rabbitmq-extra.sh` made with openssl into `target/test-certs`,
//! and `rabbitmqctl -n <node>` views of those nodes.
//!
//! It never starts a node, never makes the broker certificates and never
//! skips: a missing node, file or `openssl` fails the test with what to
//! run. Included by the test crates with `#[path]`, beside `support`.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::support::rabbit::{parse_connections, BrokerConnection, RABBITMQCTL_PACE};
use crate::support::wait;

/// The node with the TLS listener (and a plain one) started by the script.
pub const TLS_NODE: &str = "amqpprox_tls@localhost";
pub const TLS_NODE_PLAIN_PORT: u16 = 5690;
pub const TLS_NODE_TLS_PORT: u16 = 5691;
/// The node with `proxy_protocol = true`.
pub const PROXY_NODE: &str = "amqpprox_proxy@localhost";
pub const PROXY_NODE_PORT: u16 = 5693;
/// The password of `client.p12`.
pub const P12_PASSWORD: &str = "amqpprox";

const SETUP_HINT: &str = "run `ci/ensure-rabbitmq-extra.sh` (ci/test.sh does) to make the test \
                          certificates and start the extra RabbitMQ nodes";

/// Panics unless both extra nodes accept TCP.
pub fn require_extra_nodes() {
    for (node, port) in [(TLS_NODE, TLS_NODE_TLS_PORT), (PROXY_NODE, PROXY_NODE_PORT)] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if let Err(err) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            panic!("RabbitMQ node {node} is not reachable at {addr} ({err}): {SETUP_HINT}");
        }
    }
}

/// Panics unless `openssl` runs.
pub fn require_openssl() {
    match Command::new("openssl").arg("version").output() {
        Ok(out) if out.status.success() => {}
        other => panic!("openssl is needed by these tests and does not run ({other:?})"),
    }
}

/// The files `ci/ensure-rabbitmq-extra.sh` made (CA, the broker's server
/// certificate for `localhost` and `::1`, a client certificate).
pub struct BrokerCerts {
    pub dir: PathBuf,
}

impl BrokerCerts {
    pub fn get() -> BrokerCerts {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-certs");
        for f in [
            "ca.pem",
            "server.pem",
            "server.key",
            "client.pem",
            "client.key",
            "client.p12",
        ] {
            assert!(
                dir.join(f).is_file(),
                "{} is missing: {SETUP_HINT}",
                dir.join(f).display()
            );
        }
        BrokerCerts { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// A CA made with rcgen, with a server certificate (localhost, 127.0.0.1,
/// ::1) and a client certificate it signed, written as PEM files.
pub struct Pki {
    pub dir: PathBuf,
    pub label: String,
}

impl Pki {
    /// Writes `<label>-ca.pem`, `<label>-server.pem/.key`,
    /// `<label>-client.pem/.key` into `dir`.
    pub fn generate(dir: &Path, label: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("amqpprox {label} CA"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).expect("self-sign the CA");

        let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("leaf key");
            let mut params = CertificateParams::new(names).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key).expect("sign the leaf");
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            &format!("{label} server"),
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client, client_key) = leaf(
            Vec::new(),
            &format!("{label} client"),
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let pki = Pki {
            dir: dir.to_path_buf(),
            label: label.to_string(),
        };
        for (name, text) in [
            ("ca.pem", ca.pem()),
            ("server.pem", server),
            ("server.key", server_key),
            ("client.pem", client),
            ("client.key", client_key),
        ] {
            std::fs::write(pki.file(name), text).expect("write a PEM file");
        }
        pki
    }

    /// `<dir>/<label>-<name>` as a string, for control commands.
    pub fn path(&self, name: &str) -> String {
        self.file(name).display().to_string()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}-{name}", self.label))
    }

    /// The CA certificate as PEM text (for a client's trust store).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.file("ca.pem")).expect("read the CA")
    }

    /// The client certificate and key as PKCS#12 (what lapin takes), made
    /// with openssl; password [`P12_PASSWORD`].
    pub fn client_p12(&self) -> Vec<u8> {
        let out = self.file("client.p12");
        let status = Command::new("openssl")
            .args(["pkcs12", "-export", "-in"])
            .arg(self.file("client.pem"))
            .arg("-inkey")
            .arg(self.file("client.key"))
            .arg("-out")
            .arg(&out)
            .arg("-passout")
            .arg(format!("pass:{P12_PASSWORD}"))
            .status()
            .expect("run openssl pkcs12");
        assert!(status.success(), "openssl pkcs12 failed: {status}");
        std::fs::read(out).expect("read the PKCS#12 file")
    }
}

/// `rabbitmqctl -n <node> list_connections ...` as parsed rows.
pub fn node_connections(node: &str) -> Vec<BrokerConnection> {
    let output = Command::new("rabbitmqctl")
        .args([
            "-n",
            node,
            "list_connections",
            "name",
            "peer_host",
            "peer_port",
        ])
        .args(["client_properties", "--formatter", "json", "--quiet"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run rabbitmqctl -n {node}: {e}"));
    assert!(
        output.status.success(),
        "rabbitmqctl -n {node} list_connections failed: {}\n{SETUP_HINT}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_connections(&String::from_utf8_lossy(&output.stdout))
}

/// Polls `node` until it lists a connection named `wanted` (its
/// `connection_name` client property).
pub fn wait_node_connection(node: &str, wanted: &str, limit: Duration) -> BrokerConnection {
    let mut all = Vec::new();
    let found = wait::poll_until_every(wait::deadline_in(limit), RABBITMQCTL_PACE, || {
        all = node_connections(node);
        all.iter()
            .find(|c| c.property("connection_name") == Some(wanted))
            .cloned()
    });
    found.unwrap_or_else(|| {
        let names: Vec<_> = all.iter().map(|c| c.name.clone()).collect();
        panic!("{node} lists no connection named {wanted:?} after {limit:?}: {names:?}");
    })
}

/// Polls the proxy's log files until `needle` appears.
pub fn wait_log(
    proxy: &crate::support::proxy::ProxyProcess,
    needle: &str,
    limit: Duration,
) -> String {
    wait::poll_until(wait::deadline_in(limit), || {
        let logs = proxy.log_files();
        logs.lines()
            .find(|l| l.contains(needle))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("the proxy logged no line with {needle:?} within {limit:?}"))
}
