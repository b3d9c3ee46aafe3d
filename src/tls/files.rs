//! Reading key material named by `TLS ... <X>_FILE`: PEM certificates, private
//! keys (PKCS#8, PKCS#1 RSA, SEC1 EC) and DH parameters, each checked before it
//! is accepted, so a bad file is an error reply and changes nothing
//! (docs/tls-and-proxy-protocol.md#tls-settings,
//! docs/commands.md#replies-and-errors,
//! docs/tls-and-proxy-protocol.md#tls-to-brokers-egress).
//!
//! Runs on the control thread (commands, SIGHUP reload), never on a shard:
//! these are blocking file reads. Errors read as the reply the operator
//! gets, `Error: <category>:<value> ...` as in the original.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::SignatureAlgorithm;
use std::io;
use std::path::{Path, PathBuf};

/// Why a file was refused; `Display` is the control reply.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The original's `system:<errno>` category, with the reason spelled out.
    #[error("Error: system:{errno} ({reason}) reading '{}'", path.display())]
    Io {
        path: PathBuf,
        errno: i32,
        reason: String,
    },
    #[error("Error: ssl: '{}': {what}", path.display())]
    Content { path: PathBuf, what: String },
}

fn content(path: &Path, what: impl Into<String>) -> FileError {
    FileError::Content {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|e: io::Error| FileError::Io {
        path: path.to_path_buf(),
        errno: e.raw_os_error().unwrap_or(0),
        reason: match e.raw_os_error() {
            // The text without Rust's " (os error N)" suffix.
            Some(code) => io::Error::from_raw_os_error(code)
                .to_string()
                .split(" (os error")
                .next()
                .unwrap_or_default()
                .to_string(),
            None => e.to_string(),
        },
    })
}

/// Every certificate of a PEM file (a chain: leaf first; or CA roots).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let bytes = read(path)?;
    let certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(path, format!("unreadable PEM: {e}")))?;
    if certs.is_empty() {
        return Err(content(
            path,
            "no certificate found (expected PEM 'BEGIN CERTIFICATE' blocks)",
        ));
    }
    Ok(certs)
}

/// Which private-key command loaded a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `KEY_FILE`: any key rustls can sign with.
    Any,
    /// `RSA_KEY_FILE`: must be an RSA key.
    Rsa,
}

/// The first private key of a PEM file, checked to be usable for signing.
pub fn private_key(path: &Path, kind: KeyKind) -> Result<PrivateKeyDer<'static>, FileError> {
    let bytes = read(path)?;
    let key = rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| content(path, format!("unreadable PEM: {e}")))?
        .ok_or_else(|| {
            content(
                path,
                "no private key found (expected PEM PKCS#8, PKCS#1 RSA or SEC1 EC; \
                 encrypted keys are not supported)",
            )
        })?;
    let signing = super::provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| content(path, format!("unusable private key: {e}")))?;
    if kind == KeyKind::Rsa && signing.algorithm() != SignatureAlgorithm::RSA {
        return Err(content(
            path,
            format!(
                "RSA_KEY_FILE needs an RSA key, this one is {:?} (use KEY_FILE)",
                signing.algorithm()
            ),
        ));
    }
    Ok(key)
}

/// Checks a `TMP_DH_FILE` holds DH parameters. rustls negotiates (EC)DHE
/// groups itself, so the parameters are never used.
pub fn dh_params(path: &Path) -> Result<(), FileError> {
    let bytes = read(path)?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN DH PARAMETERS-----") {
        return Err(content(
            path,
            "no DH parameters found (expected PEM 'BEGIN DH PARAMETERS')",
        ));
    }
    Ok(())
}
