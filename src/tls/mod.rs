//! TLS on both legs with rustls and its `ring` provider
//! (docs/tls-and-proxy-protocol.md#tls-settings,
//! docs/tls-and-proxy-protocol.md#tls-to-brokers-egress): the two process-wide
//! contexts, INGRESS (server role, for `LISTEN START_SECURE`) and EGRESS
//! (client role, for backends flagged `TLS`), as the operator configures them
//! with `TLS ...`.
//!
//! The control thread owns [`TlsSettings`]: the files named so far, already
//! read and checked, the verify flags and the cipher list. Each change
//! builds new rustls configurations there and publishes them as one
//! immutable [`Contexts`] through an `ArcSwap` in the shards' `Shared`
//! state, so new connections use new key material at once and connections
//! already up keep theirs. A side whose settings do not make a usable
//! configuration yet (a key without its chain, `VERIFY_MODE PEER` without a
//! CA, a key that does not match the new chain during a rotation) keeps its
//! last good configuration. SIGHUP re-reads every file ([`TlsSettings::
//! reload`]). Nothing here runs on a shard except [`handshake`] and
//! [`ingress`], which never block.

mod build;
pub mod ciphers;
pub mod files;
pub mod handshake;
pub mod ingress;
pub mod verify;

use arc_swap::ArcSwap;
use files::{FileError, KeyKind};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ServerConfig, SupportedCipherSuite};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The `ring` provider with every suite: the base of every configuration.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// What the shards use for new connections.
pub struct Contexts {
    /// `None` until INGRESS has a key and a certificate chain.
    pub ingress: Option<Arc<ServerConfig>>,
    pub egress: Arc<ClientConfig>,
}

impl Default for Contexts {
    fn default() -> Self {
        Contexts {
            ingress: None,
            // Invariant: the default settings (no files, no verification,
            // every suite) always build.
            egress: build::client(&Direction::default())
                .expect("the default EGRESS settings always build"),
        }
    }
}

/// Which context a command configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Ingress,
    Egress,
}

impl Side {
    pub fn parse(s: &str) -> Option<Side> {
        match s.to_ascii_uppercase().as_str() {
            "INGRESS" => Some(Side::Ingress),
            "EGRESS" => Some(Side::Egress),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::Ingress => "INGRESS",
            Side::Egress => "EGRESS",
        }
    }
}

/// `VERIFY_MODE` flags (OpenSSL's names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyFlags {
    /// INGRESS: ask for and check client certificates. EGRESS: check the
    /// broker's chain and host name.
    pub peer: bool,
    /// INGRESS with `peer`: refuse clients without a certificate.
    pub fail_if_no_peer_cert: bool,
    /// Accepted for compatibility; rustls never renegotiates.
    pub client_once: bool,
}

/// A file read and checked, with its path for SIGHUP reloads.
#[derive(Clone)]
struct Loaded<T> {
    path: PathBuf,
    value: T,
}

/// A private key and the command that loaded it.
#[derive(Clone)]
struct LoadedKey {
    path: PathBuf,
    kind: KeyKind,
    der: Arc<PrivateKeyDer<'static>>,
}

/// The settings of one side.
#[derive(Clone, Default)]
pub struct Direction {
    key: Option<LoadedKey>,
    chain: Option<Loaded<Vec<CertificateDer<'static>>>>,
    ca: Option<Loaded<Vec<CertificateDer<'static>>>>,
    dh: Option<PathBuf>,
    pub verify: VerifyFlags,
    /// `None`: every suite of the provider.
    ciphers: Option<Vec<SupportedCipherSuite>>,
}

impl Direction {
    pub fn set_key(&mut self, path: &Path, kind: KeyKind) -> Result<(), FileError> {
        let der = files::private_key(path, kind)?;
        self.key = Some(LoadedKey {
            path: path.to_path_buf(),
            kind,
            der: Arc::new(der),
        });
        Ok(())
    }

    pub fn set_chain(&mut self, path: &Path) -> Result<(), FileError> {
        self.chain = Some(Loaded {
            path: path.to_path_buf(),
            value: files::certificates(path)?,
        });
        Ok(())
    }

    pub fn set_ca(&mut self, path: &Path) -> Result<(), FileError> {
        self.ca = Some(Loaded {
            path: path.to_path_buf(),
            value: files::certificates(path)?,
        });
        Ok(())
    }

    pub fn set_dh(&mut self, path: &Path) -> Result<(), FileError> {
        files::dh_params(path)?;
        self.dh = Some(path.to_path_buf());
        Ok(())
    }

    pub fn set_ciphers(&mut self, suites: Vec<SupportedCipherSuite>) {
        self.ciphers = Some(suites);
    }

    /// The suites offered, in preference order.
    pub fn ciphers(&self) -> Vec<SupportedCipherSuite> {
        self.ciphers.clone().unwrap_or_else(ciphers::default_suites)
    }

    /// The `TLS <side> ...` commands that recreate these settings (for
    /// `CONFIG DUMP`): files by path, verify flags, then an explicit cipher
    /// list.
    pub fn dump_commands(&self, side: Side) -> Vec<String> {
        let side = side.name();
        let mut lines = Vec::new();
        if let Some(k) = &self.key {
            let verb = match k.kind {
                KeyKind::Any => "KEY_FILE",
                KeyKind::Rsa => "RSA_KEY_FILE",
            };
            lines.push(format!("TLS {side} {verb} {}", k.path.display()));
        }
        if let Some(c) = &self.chain {
            lines.push(format!("TLS {side} CERT_CHAIN_FILE {}", c.path.display()));
        }
        if let Some(c) = &self.ca {
            lines.push(format!("TLS {side} CA_CERT_FILE {}", c.path.display()));
        }
        if let Some(d) = &self.dh {
            lines.push(format!("TLS {side} TMP_DH_FILE {}", d.display()));
        }
        let v = self.verify;
        if v != VerifyFlags::default() {
            let mut modes = vec![if v.peer { "PEER" } else { "NONE" }];
            if v.fail_if_no_peer_cert {
                modes.push("FAIL_IF_NO_PEER_CERT");
            }
            if v.client_once {
                modes.push("CLIENT_ONCE");
            }
            lines.push(format!("TLS {side} VERIFY_MODE {}", modes.join(" ")));
        }
        if let Some(suites) = &self.ciphers {
            let names: Vec<String> = suites.iter().map(|s| ciphers::openssl_name(*s)).collect();
            lines.push(format!("TLS {side} CIPHERS SET {}", names.join(":")));
        }
        lines
    }

    /// The same settings with every file read again from its path.
    fn reread(&self) -> Result<Direction, FileError> {
        let mut fresh = self.clone();
        if let Some(k) = &self.key {
            fresh.set_key(&k.path, k.kind)?;
        }
        if let Some(c) = &self.chain {
            fresh.set_chain(&c.path)?;
        }
        if let Some(c) = &self.ca {
            fresh.set_ca(&c.path)?;
        }
        if let Some(d) = &self.dh {
            fresh.set_dh(d)?;
        }
        Ok(fresh)
    }
}

/// Why INGRESS settings make no server configuration, in words (for a
/// refused `LISTEN START_SECURE`).
pub fn build_reason(ingress: &Direction) -> String {
    match build::server(ingress) {
        Ok(_) => "its settings were never published".into(),
        Err(e) => e.reason().to_string(),
    }
}

/// Why a side's settings do not make a configuration (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// Something is still to be given (the usual state mid-setup).
    Incomplete(String),
    /// What was given does not fit together.
    Inconsistent(String),
}

impl NotReady {
    pub fn reason(&self) -> &str {
        match self {
            NotReady::Incomplete(r) | NotReady::Inconsistent(r) => r,
        }
    }
}

/// Both sides' settings, owned by the control thread.
#[derive(Clone, Default)]
pub struct TlsSettings {
    pub ingress: Direction,
    pub egress: Direction,
}

impl TlsSettings {
    pub fn side(&self, side: Side) -> &Direction {
        match side {
            Side::Ingress => &self.ingress,
            Side::Egress => &self.egress,
        }
    }

    /// `CONFIG DUMP` lines for both sides.
    pub fn dump_commands(&self) -> Vec<String> {
        let mut lines = self.side(Side::Ingress).dump_commands(Side::Ingress);
        lines.extend(self.side(Side::Egress).dump_commands(Side::Egress));
        lines
    }

    pub fn side_mut(&mut self, side: Side) -> &mut Direction {
        match side {
            Side::Ingress => &mut self.ingress,
            Side::Egress => &mut self.egress,
        }
    }

    /// Builds `side` and, if it makes a usable configuration, publishes it
    /// for new connections; otherwise the last good one stays.
    pub fn publish(&self, side: Side, contexts: &ArcSwap<Contexts>) -> Result<(), NotReady> {
        let current = contexts.load_full();
        let next = match side {
            Side::Ingress => Contexts {
                ingress: Some(build::server(&self.ingress)?),
                egress: Arc::clone(&current.egress),
            },
            Side::Egress => Contexts {
                ingress: current.ingress.clone(),
                egress: build::client(&self.egress)?,
            },
        };
        contexts.store(Arc::new(next));
        log::info!("TLS {} settings in force for new connections", side.name());
        Ok(())
    }

    /// SIGHUP: reads every configured file again and publishes both sides.
    /// One unreadable file changes nothing at all.
    pub fn reload(&mut self, contexts: &ArcSwap<Contexts>) -> Result<(), FileError> {
        let fresh = TlsSettings {
            ingress: self.ingress.reread()?,
            egress: self.egress.reread()?,
        };
        *self = fresh;
        for side in [Side::Ingress, Side::Egress] {
            match self.publish(side, contexts) {
                Ok(()) => {}
                // Nothing configured on that side: nothing to reload.
                Err(NotReady::Incomplete(_)) => {}
                Err(NotReady::Inconsistent(why)) => log::error!(
                    "TLS {} reload: {why}; new connections keep the previous settings",
                    side.name()
                ),
            }
        }
        Ok(())
    }
}
