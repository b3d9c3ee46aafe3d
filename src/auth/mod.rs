//! The auth service: who may reach which vhost, decided per session by an
//! HTTP service speaking the original amqpprox's protobuf messages (see
//! `docs/commands.md#auth-and-limit` and `docs/differences.md#fixed`).
//!
//! Owns the setting (`AUTH SERVICE` / `AUTH ALWAYS_ALLOW`) and its reply
//! texts, the messages ([`proto`], `proto/amqpprox_auth.proto`), the HTTP
//! exchange as pure functions ([`http`]), the typed verdict ([`decision`]),
//! the client that runs on a shard ([`client`], the only part that does
//! I/O) and the handshake changes a verdict makes ([`rewrite`]). Never
//! blocks a shard, never logs credentials.

pub mod client;
pub mod decision;
pub mod http;
pub mod proto;
pub mod rewrite;

use serde::{Deserialize, Serialize};

pub use client::{authorise, AuthTimeouts};
pub use decision::{AuthDecision, Credentials, DenyReason};

/// Where the auth service is: `http://host:port` + `target`, the
/// request-target used verbatim (e.g. `/auth?tier=dev`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthService {
    pub host: String,
    pub port: u16,
    pub target: String,
}

/// Which interceptor new sessions use. A session keeps the one in force
/// when it was accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthSettings {
    #[default]
    AlwaysAllow,
    Service(AuthService),
}

impl AuthSettings {
    /// The reply to `AUTH SERVICE ...`, `AUTH ALWAYS_ALLOW` and `AUTH PRINT`,
    /// as the original words it.
    pub fn describe(&self) -> String {
        match self {
            AuthSettings::AlwaysAllow => "All connections are authorised to route to any vhost. No auth service requests will be made.\n".to_owned(),
            AuthSettings::Service(s) => format!(
                "HTTP Auth service will be used to authn/authz client connections: http://{}:{}{}\n",
                s.host, s.port, s.target
            ),
        }
    }

    /// The command that restores this setting (`CONFIG DUMP`).
    pub fn command(&self) -> String {
        match self {
            AuthSettings::AlwaysAllow => "AUTH ALWAYS_ALLOW".to_owned(),
            AuthSettings::Service(s) => format!("AUTH SERVICE {} {} {}", s.host, s.port, s.target),
        }
    }
}

/// The original's error replies to a malformed `AUTH` line, for the control
/// grammar to return. Display is the exact reply text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthUsageError {
    #[error("No subcommand provided.\n")]
    NoSubcommand,
    #[error("No hostname specified.\n")]
    NoHostname,
    #[error("Invalid port provided.\n")]
    InvalidPort,
    #[error("No http target specified.\n")]
    NoTarget,
    #[error("Unknown subcommand.\n")]
    UnknownSubcommand,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> AuthSettings {
        AuthSettings::Service(AuthService {
            host: "auth.local".into(),
            port: 8080,
            target: "/auth?tier=dev".into(),
        })
    }

    #[test]
    fn replies_are_the_originals() {
        assert_eq!(
            AuthSettings::AlwaysAllow.describe(),
            "All connections are authorised to route to any vhost. No auth service requests will be made.\n"
        );
        assert_eq!(
            service().describe(),
            "HTTP Auth service will be used to authn/authz client connections: http://auth.local:8080/auth?tier=dev\n"
        );
        let errors = [
            (AuthUsageError::NoSubcommand, "No subcommand provided.\n"),
            (AuthUsageError::NoHostname, "No hostname specified.\n"),
            (AuthUsageError::InvalidPort, "Invalid port provided.\n"),
            (AuthUsageError::NoTarget, "No http target specified.\n"),
            (AuthUsageError::UnknownSubcommand, "Unknown subcommand.\n"),
        ];
        for (error, text) in errors {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn commands_for_config_dump_and_serde() {
        assert_eq!(AuthSettings::AlwaysAllow.command(), "AUTH ALWAYS_ALLOW");
        assert_eq!(
            service().command(),
            "AUTH SERVICE auth.local 8080 /auth?tier=dev"
        );
        let json = serde_json::to_string(&service()).unwrap();
        assert_eq!(
            serde_json::from_str::<AuthSettings>(&json).unwrap(),
            service()
        );
        assert_eq!(AuthSettings::default(), AuthSettings::AlwaysAllow);
    }
}
