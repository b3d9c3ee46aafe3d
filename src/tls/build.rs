//! Turns one side's settings into a rustls configuration: protocol versions
//! from the cipher list (TLS 1.2 and 1.3 by default), the certificate and key,
//! and verification as `VERIFY_MODE` asks
//! (docs/tls-and-proxy-protocol.md#tls-to-brokers-egress: the broker's host
//! name is checked with its chain).
//!
//! Session resumption is off on both sides: AMQP connections live long, so
//! it saves little, and rustls' session caches are process-wide mutexes
//! that the shards' data path would share. Runs on the control thread only.

use super::{Direction, NotReady};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};
use std::sync::Arc;

fn provider(d: &Direction) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: d.ciphers(),
        ..(*super::provider()).clone()
    })
}

/// TLS 1.3 and/or 1.2, as the cipher list leaves suites for them.
fn versions(d: &Direction) -> Vec<&'static SupportedProtocolVersion> {
    let suites = d.ciphers();
    let mut out = Vec::new();
    if suites
        .iter()
        .any(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)))
    {
        out.push(&rustls::version::TLS13);
    }
    if suites
        .iter()
        .any(|s| matches!(s, rustls::SupportedCipherSuite::Tls12(_)))
    {
        out.push(&rustls::version::TLS12);
    }
    out
}

fn roots(d: &Direction) -> Result<RootCertStore, NotReady> {
    let Some(ca) = &d.ca else {
        return Err(NotReady::Incomplete(
            "VERIFY_MODE PEER needs a CA_CERT_FILE".into(),
        ));
    };
    let mut roots = RootCertStore::empty();
    for cert in &ca.value {
        roots.add(cert.clone()).map_err(|e| {
            NotReady::Inconsistent(format!(
                "a certificate in CA_CERT_FILE '{}' cannot be a trust anchor: {e}",
                ca.path.display()
            ))
        })?;
    }
    Ok(roots)
}

fn inconsistent(what: &str) -> impl Fn(rustls::Error) -> NotReady + '_ {
    move |e| NotReady::Inconsistent(format!("{what}: {e}"))
}

/// The INGRESS (server) configuration.
pub(super) fn server(d: &Direction) -> Result<Arc<ServerConfig>, NotReady> {
    let (Some(key), Some(chain)) = (&d.key, &d.chain) else {
        return Err(NotReady::Incomplete(
            "INGRESS needs both KEY_FILE (or RSA_KEY_FILE) and CERT_CHAIN_FILE".into(),
        ));
    };
    let provider = provider(d);
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions(d))
        .map_err(inconsistent("the cipher list"))?;
    let builder = if d.verify.peer {
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(d)?), provider);
        let verifier = if d.verify.fail_if_no_peer_cert {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        builder.with_client_cert_verifier(
            verifier
                .build()
                .map_err(|e| NotReady::Inconsistent(format!("client verification: {e}")))?,
        )
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(chain.value.clone(), key.der.clone_key())
        .map_err(|e| {
            NotReady::Inconsistent(format!(
                "the key '{}' does not go with the certificate chain '{}' ({e})",
                key.path.display(),
                chain.path.display()
            ))
        })?;
    // The original prefers the server's cipher order.
    config.ignore_client_order = true;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The EGRESS (client) configuration.
pub(super) fn client(d: &Direction) -> Result<Arc<ClientConfig>, NotReady> {
    let provider = provider(d);
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions(d))
        .map_err(inconsistent("the cipher list"))?;
    let builder = if d.verify.peer {
        builder.dangerous().with_custom_certificate_verifier(
            super::verify::BrokerVerifier::new(
                roots(d)?,
                d.ca.as_ref().map_or(&[][..], |ca| &ca.value[..]),
                Arc::clone(&provider),
            )
            .map_err(|e| NotReady::Inconsistent(e.to_string()))?,
        )
    } else {
        // The original's default: encrypt, but take any certificate.
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    };
    let mut config =
        match (&d.key, &d.chain) {
            (Some(key), Some(chain)) => builder
                .with_client_auth_cert(chain.value.clone(), key.der.clone_key())
                .map_err(|e| {
                    NotReady::Inconsistent(format!(
                        "the key '{}' does not go with the certificate chain '{}' ({e})",
                        key.path.display(),
                        chain.path.display()
                    ))
                })?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(NotReady::Incomplete(
                "a client certificate needs both KEY_FILE (or RSA_KEY_FILE) and CERT_CHAIN_FILE"
                    .into(),
            )),
        };
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// EGRESS without `VERIFY_MODE PEER`: any certificate is taken, but the
/// handshake signatures are still checked, so the session keys are the
/// ones of whoever holds that certificate.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
