//! TLS key material and configurations of the `connections-tls` scenario:
//! the dummy broker makes a fresh CA and a server certificate for
//! `localhost` and `127.0.0.1` with rcgen when it starts (ECDSA P-256, as
//! rcgen makes by default), writes them as PEM into its TLS directory
//! (`ca.pem`, `broker.pem`, `broker.key`) so that the proxy can be told
//! `TLS EGRESS CA_CERT_FILE <dir>/ca.pem`, and serves with them; the
//! harness's `direct` clients trust that CA file.
//!
//! Owns the rustls configurations of both ends (ring provider, TLS 1.3 and
//! 1.2 offered). Session resumption is off on both: the broker issues no
//! tickets and keeps no session cache (as RabbitMQ does with TLS 1.3 by
//! default, and amqpprox never resumes toward brokers), so every connection
//! pays a full handshake whoever makes it. Never reads key material it did
//! not write, and never touches files outside the directory it is given.

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name the proxy's backend uses (and sends as SNI); the certificate
/// names it and `127.0.0.1`.
pub const BROKER_HOST: &str = "localhost";

/// The CA file in a broker's TLS directory.
pub fn ca_file(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes a CA and a broker certificate signed by it, writes both (and the
/// broker's key) into `dir`, and returns the broker's server configuration.
pub fn broker_config(dir: &Path) -> Result<Arc<ServerConfig>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "amqpprox-bench CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    // A string that parses as an IP address becomes an IP SAN.
    let mut params = CertificateParams::new(vec![BROKER_HOST.to_string(), "127.0.0.1".into()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "amqpprox-bench dummy broker");
    let leaf = params.signed_by(&key, &ca, &ca_key)?;

    for (name, text) in [
        ("ca.pem", ca.pem()),
        ("broker.pem", leaf.pem()),
        ("broker.key", key.serialize_pem()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)?;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client configuration that trusts the CAs in `ca_pem` and never
/// resumes (the `direct` target of `connections-tls`).
pub fn client_config(ca_pem: &Path) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)
        .with_context(|| format!("read {}", ca_pem.display()))?
    {
        roots.add(cert.with_context(|| format!("parse {}", ca_pem.display()))?)?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files written are the ones the proxy and the client read back.
    #[test]
    fn broker_files_make_a_client_that_trusts_them() {
        let dir = std::env::temp_dir().join(format!("amqpprox-bench-tls-{}", std::process::id()));
        broker_config(&dir).unwrap();
        for f in ["ca.pem", "broker.pem", "broker.key"] {
            assert!(dir.join(f).is_file(), "{f}");
        }
        client_config(&ca_file(&dir)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
