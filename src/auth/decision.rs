//! What the auth service decided for one session, and how a request is
//! built and a response read (see `docs/commands.md#auth-and-limit` and
//! `docs/differences.md#fixed`).
//!
//! Owns the typed verdict: ALLOW, maybe with credentials to present to the
//! broker instead of the client's, or DENY with a reason that says exactly
//! what went wrong. Unlike the original, every failure is a DENY: a
//! transport error, a timeout, a non-2xx status, an empty or unparsable
//! body, an unknown result value. Pure: never does I/O, never logs, and
//! never shows credentials in `Debug`.

use std::fmt;
use std::io;
use std::time::Duration;

use prost::Message;

use super::http::{HttpError, HttpResponse};
use super::proto::{AuthRequest, AuthResponse, AuthResult, Sasl};
use crate::codec::{FieldValue, StartOk};

/// The reason the always-allow interceptor gives, as in the original.
pub const ALWAYS_ALLOW_REASON: &str = "Default route auth used - always allow";

/// Credentials the service wants the broker to see instead of the client's.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub mechanism: String,
    /// The SASL response (for PLAIN, `\0user\0password`). Never printed.
    pub response: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("mechanism", &self.mechanism)
            .field("response", &format_args!("<{} bytes>", self.response.len()))
            .finish()
    }
}

/// The verdict for one session.
#[derive(Debug)]
pub enum AuthDecision {
    Allow {
        /// The service's reason; with replacement credentials, a non-empty
        /// one is passed to the broker as client property `amqpprox_auth`.
        reason: String,
        replacement: Option<Credentials>,
    },
    Deny(DenyReason),
}

impl AuthDecision {
    /// The always-allow interceptor's verdict.
    pub fn always_allow() -> AuthDecision {
        AuthDecision::Allow {
            reason: ALWAYS_ALLOW_REASON.to_owned(),
            replacement: None,
        }
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, AuthDecision::Allow { .. })
    }
}

/// Why a session was denied. Display is the reason logged (and, when the
/// client can take it, sent in the 403 Close). The transport texts begin as
/// the original's do.
#[derive(Debug, thiserror::Error)]
pub enum DenyReason {
    /// The service answered DENY; its own words.
    #[error("{reason}")]
    Denied { reason: String },
    #[error("Auth service answered with an unknown result {value}: {reason}")]
    UnknownResult { value: i32, reason: String },
    #[error("Unable to resolve hostname {host}, Error: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("Unable to connect hostname {host} on port {port}, Error: {source}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("Unable to connect hostname {host} on port {port}, Error: timed out after {after:?}")]
    ConnectTimeout {
        host: String,
        port: u16,
        after: Duration,
    },
    #[error("Unable to send http request to hostname {host} on port {port}, Error: {source}")]
    Write {
        host: String,
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error(
        "Unable to receive http response from hostname {host} on port {port}, Error: {source}"
    )]
    Read {
        host: String,
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("Unable to receive http response from hostname {host} on port {port}, Error: timed out after {after:?}")]
    ResponseTimeout {
        host: String,
        port: u16,
        after: Duration,
    },
    #[error(
        "Unable to receive http response from hostname {host} on port {port}, Error: {source}"
    )]
    Http {
        host: String,
        port: u16,
        #[source]
        source: HttpError,
    },
    #[error("Auth service at hostname {host} on port {port} answered with HTTP status {status}")]
    Status {
        host: String,
        port: u16,
        status: u16,
    },
    #[error("Auth service at hostname {host} on port {port} answered with an empty body")]
    EmptyBody { host: String, port: u16 },
    #[error("Unable to deserialize auth response data received from http service: {source}")]
    Unparsable {
        #[source]
        source: prost::DecodeError,
    },
}

impl DenyReason {
    /// The ERROR line logged for a denied client, as the original words it.
    pub fn log_line(&self) -> String {
        format!("Disconnecting unauthenticated/unauthorized client, reason: {self}")
    }
}

/// The request for a session: its vhost, the client's mechanism and
/// response, the client's host (IP text, or its name under `MAPHOSTNAME
/// DNS`), and the client property `connection_name` if it is a long string.
pub fn build_request(vhost: &str, start_ok: &StartOk, client_hostname: &str) -> AuthRequest {
    let connection_name = match start_ok.client_properties.get("connection_name") {
        Some(FieldValue::LongString(name)) => String::from_utf8_lossy(name).into_owned(),
        _ => String::new(),
    };
    AuthRequest {
        vhost_name: vhost.to_owned(),
        auth_data: Some(Sasl {
            auth_mechanism: String::from_utf8_lossy(&start_ok.mechanism).into_owned(),
            credentials: start_ok.response.clone(),
        }),
        client_hostname: client_hostname.to_owned(),
        connection_name,
    }
}

/// Reads the service's answer. Only a 2xx status with a non-empty body that
/// decodes to ALLOW allows (the original took an empty body, e.g. an HTTP
/// 500 without content, as ALLOW).
pub fn decide(host: &str, port: u16, response: &HttpResponse) -> AuthDecision {
    let deny = AuthDecision::Deny;
    if !(200..300).contains(&response.status) {
        return deny(DenyReason::Status {
            host: host.to_owned(),
            port,
            status: response.status,
        });
    }
    if response.body.is_empty() {
        return deny(DenyReason::EmptyBody {
            host: host.to_owned(),
            port,
        });
    }
    let answer = match AuthResponse::decode(response.body.as_slice()) {
        Ok(answer) => answer,
        Err(source) => return deny(DenyReason::Unparsable { source }),
    };
    match AuthResult::try_from(answer.result) {
        Ok(AuthResult::Allow) => AuthDecision::Allow {
            reason: answer.reason,
            replacement: answer.auth_data.map(|sasl| Credentials {
                mechanism: sasl.auth_mechanism,
                response: sasl.credentials,
            }),
        },
        Ok(AuthResult::Deny) => deny(DenyReason::Denied {
            reason: answer.reason,
        }),
        Err(_) => deny(DenyReason::UnknownResult {
            value: answer.result,
            reason: answer.reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{str_field, FieldTable};

    fn http(status: u16, body: Vec<u8>) -> HttpResponse {
        HttpResponse { status, body }
    }

    fn answer(result: i32, reason: &str, auth_data: Option<Sasl>) -> Vec<u8> {
        AuthResponse {
            result,
            reason: reason.into(),
            auth_data,
        }
        .encode_to_vec()
    }

    #[test]
    fn allow_without_and_with_replacement() {
        let d = decide("h", 1, &http(200, answer(0, "fine", None)));
        assert!(matches!(
            d,
            AuthDecision::Allow { ref reason, replacement: None } if reason == "fine"
        ));
        let sasl = Sasl {
            auth_mechanism: "PLAIN".into(),
            credentials: b"\0svc\0secret".to_vec(),
        };
        let d = decide("h", 1, &http(201, answer(0, "mapped", Some(sasl))));
        let AuthDecision::Allow {
            reason,
            replacement: Some(creds),
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(reason, "mapped");
        assert_eq!(creds.mechanism, "PLAIN");
        assert_eq!(creds.response, b"\0svc\0secret");
        assert!(!format!("{creds:?}").contains("secret"));
    }

    #[test]
    fn every_failure_is_a_deny_with_its_reason() {
        let cases: Vec<(HttpResponse, &str)> = vec![
            (http(200, answer(1, "go away", None)), "go away"),
            (
                http(500, answer(0, "", None)),
                "Auth service at hostname h on port 1 answered with HTTP status 500",
            ),
            (
                http(200, Vec::new()),
                "Auth service at hostname h on port 1 answered with an empty body",
            ),
            (
                http(200, answer(7, "odd", None)),
                "Auth service answered with an unknown result 7: odd",
            ),
        ];
        for (response, text) in cases {
            match decide("h", 1, &response) {
                AuthDecision::Deny(reason) => assert_eq!(reason.to_string(), text),
                allow => panic!("{response:?} gave {allow:?}"),
            }
        }
        let denied = DenyReason::Denied {
            reason: "go away".into(),
        };
        assert_eq!(
            denied.log_line(),
            "Disconnecting unauthenticated/unauthorized client, reason: go away"
        );
        match decide("h", 1, &http(200, b"\xff\xff\xff".to_vec())) {
            AuthDecision::Deny(DenyReason::Unparsable { .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn request_from_the_client_handshake() {
        let mut props = FieldTable::new();
        props.push("product", str_field("lapin"));
        props.push("connection_name", str_field("orders-7"));
        let start_ok = StartOk {
            client_properties: props,
            mechanism: b"PLAIN".to_vec(),
            response: b"\0guest\0guest".to_vec(),
            locale: b"en_US".to_vec(),
        };
        let request = build_request("/prod", &start_ok, "10.1.2.3");
        assert_eq!(request.vhost_name, "/prod");
        assert_eq!(request.client_hostname, "10.1.2.3");
        assert_eq!(request.connection_name, "orders-7");
        let sasl = request.auth_data.unwrap();
        assert_eq!(sasl.auth_mechanism, "PLAIN");
        assert_eq!(sasl.credentials, b"\0guest\0guest");

        // A connection_name that is not a long string is left out.
        let mut other = start_ok.clone();
        other.client_properties = FieldTable::new();
        other
            .client_properties
            .push("connection_name", FieldValue::I32(5));
        assert_eq!(build_request("v", &other, "h").connection_name, "");
    }

    #[test]
    fn always_allow_reason() {
        let AuthDecision::Allow {
            reason,
            replacement,
        } = AuthDecision::always_allow()
        else {
            unreachable!()
        };
        assert_eq!(reason, "Default route auth used - always allow");
        assert!(replacement.is_none());
    }
}
