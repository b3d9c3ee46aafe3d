//! Verification of a broker's certificate under `TLS EGRESS VERIFY_MODE
//! PEER`, as users of the OpenSSL-based original have it
//! (docs/tls-and-proxy-protocol.md#tls-to-brokers-egress): the usual chain to a `CA_CERT_FILE`
//! anchor, plus one more rule, that a broker certificate which is byte for
//! byte one of the configured anchors is trusted as itself. That is what a
//! self-signed certificate made by `openssl req -x509` (basic constraints
//! `CA:TRUE`) given as the CA file needs; WebPKI alone refuses it as a CA
//! used as an end entity.
//!
//! The extra rule only turns that one refusal into an admission, and only
//! after checking the certificate's validity period and the broker's host
//! name itself; every other failure (unknown issuer, expired, wrong name, a
//! different self-signed certificate) stays the chain's failure. Each
//! admission logs the rule that admitted it. Runs inside the TLS handshake
//! on a shard: no I/O, no blocking.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};
use std::sync::Arc;

/// Which rule admitted a broker certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It chains to a `CA_CERT_FILE` anchor (the WebPKI rules).
    Chain,
    /// It is itself one of the `CA_CERT_FILE` certificates, within its
    /// validity period and valid for the host name (the OpenSSL rule).
    TrustAnchorItself,
}

impl Admission {
    pub fn describe(self) -> &'static str {
        match self {
            Admission::Chain => "it chains to a CA_CERT_FILE certificate",
            Admission::TrustAnchorItself => {
                "it is itself a CA_CERT_FILE certificate (self-signed, trusted as given)"
            }
        }
    }
}

/// Why the broker verifier cannot be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error("broker verification: {0}")]
    Build(#[from] rustls::client::VerifierBuilderError),
}

/// The `ServerCertVerifier` for EGRESS with `VERIFY_MODE PEER`.
#[derive(Debug)]
pub struct BrokerVerifier {
    chain: Arc<WebPkiServerVerifier>,
    /// The `CA_CERT_FILE` certificates as read, for the byte comparison.
    anchors: Vec<CertificateDer<'static>>,
}

impl BrokerVerifier {
    /// A verifier trusting `roots` (built from `anchors`, the certificates
    /// of `CA_CERT_FILE`).
    pub fn new(
        roots: RootCertStore,
        anchors: &[CertificateDer<'static>],
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<BrokerVerifier>, VerifierError> {
        let chain =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
        Ok(Arc::new(BrokerVerifier {
            chain,
            anchors: anchors.to_vec(),
        }))
    }

    /// Checks `end_entity` for `server_name` at `now`; on success, says
    /// which rule admitted it.
    pub fn admit(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<Admission, Error> {
        match self
            .chain
            .verify_server_cert(end_entity, intermediates, server_name, &[], now)
        {
            Ok(_) => Ok(Admission::Chain),
            Err(chain_error) => {
                if !is_ca_used_as_end_entity(&chain_error)
                    || !self
                        .anchors
                        .iter()
                        .any(|a| a.as_ref() == end_entity.as_ref())
                {
                    return Err(chain_error);
                }
                check_itself(end_entity, server_name, now)?;
                Ok(Admission::TrustAnchorItself)
            }
        }
    }
}

/// The one chain failure the anchor rule may overturn.
fn is_ca_used_as_end_entity(e: &Error) -> bool {
    match e {
        Error::InvalidCertificate(CertificateError::Other(other)) => matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::CaUsedAsEndEntity)
        ),
        _ => false,
    }
}

/// The checks the chain rules make of an end entity that still apply to a
/// certificate trusted as itself: its validity period and the host name.
/// (WebPKI checks the period before the basic constraints, so it has passed
/// when the failure is `CaUsedAsEndEntity`; it is checked again here so the
/// rule never depends on that order.)
fn check_itself(
    end_entity: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(end_entity.as_ref())
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = cert.validity();
    if now_secs < validity.not_before.timestamp() {
        return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
    }
    if now_secs > validity.not_after.timestamp() {
        return Err(Error::InvalidCertificate(CertificateError::Expired));
    }
    let parsed = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    parsed
        .verify_is_valid_for_subject_name(server_name)
        .map_err(|_| Error::InvalidCertificate(CertificateError::NotValidForName))
}

impl ServerCertVerifier for BrokerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let admission = self.admit(end_entity, intermediates, server_name, now)?;
        let name = server_name.to_str();
        match admission {
            // The usual case: worth a line only when debugging.
            Admission::Chain => log::debug!(
                "Broker certificate for {name} accepted: {}",
                admission.describe()
            ),
            Admission::TrustAnchorItself => log::info!(
                "Broker certificate for {name} accepted: {}",
                admission.describe()
            ),
        }
        Ok(ServerCertVerified::assertion())
    }

    // The handshake signatures are checked with the certificate's key
    // whichever rule admitted it.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.chain.root_hint_subjects()
    }
}
