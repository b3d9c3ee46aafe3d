//! The auth service's protobuf messages (`proto/amqpprox_auth.proto`,
//! package `Bloomberg.amqpprox.authproto`), derived with prost by hand so the
//! build needs no protoc.
//!
//! Owns the wire shape only; field numbers and types must match the .proto
//! file, which existing auth services are built from. `Debug` never shows
//! credentials.

use std::fmt;

/// `SASL`: a mechanism and its response (for PLAIN, `\0user\0password`).
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct Sasl {
    #[prost(string, tag = "1")]
    pub auth_mechanism: String,
    #[prost(bytes = "vec", tag = "2")]
    pub credentials: Vec<u8>,
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sasl")
            .field("auth_mechanism", &self.auth_mechanism)
            .field(
                "credentials",
                &format_args!("<{} bytes>", self.credentials.len()),
            )
            .finish()
    }
}

/// `AuthRequest`: one client connection asking to reach a vhost.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthRequest {
    #[prost(string, tag = "1")]
    pub vhost_name: String,
    #[prost(message, optional, tag = "2")]
    pub auth_data: Option<Sasl>,
    #[prost(string, tag = "3")]
    pub client_hostname: String,
    #[prost(string, tag = "4")]
    pub connection_name: String,
}

/// `AuthResponse.AuthResult`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum AuthResult {
    Allow = 0,
    Deny = 1,
}

/// `AuthResponse`: the service's verdict, and maybe the credentials to
/// present to the broker instead of the client's.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthResponse {
    #[prost(enumeration = "AuthResult", tag = "1")]
    pub result: i32,
    #[prost(string, tag = "2")]
    pub reason: String,
    #[prost(message, optional, tag = "3")]
    pub auth_data: Option<Sasl>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn plain() -> Sasl {
        Sasl {
            auth_mechanism: "PLAIN".into(),
            credentials: b"\0guest\0guest".to_vec(),
        }
    }

    #[test]
    fn request_bytes_follow_the_proto_file() {
        let request = AuthRequest {
            vhost_name: "v".into(),
            auth_data: Some(plain()),
            client_hostname: "10.0.0.1".into(),
            connection_name: "app".into(),
        };
        let bytes = request.encode_to_vec();
        let mut expected = vec![0x0a, 1, b'v'];
        // field 2, a nested message: field 1 "PLAIN", field 2 the bytes.
        expected.extend_from_slice(&[0x12, 21, 0x0a, 5]);
        expected.extend_from_slice(b"PLAIN");
        expected.extend_from_slice(&[0x12, 12]);
        expected.extend_from_slice(b"\0guest\0guest");
        expected.extend_from_slice(&[0x1a, 8]);
        expected.extend_from_slice(b"10.0.0.1");
        expected.extend_from_slice(&[0x22, 3]);
        expected.extend_from_slice(b"app");
        assert_eq!(bytes, expected);
        assert_eq!(AuthRequest::decode(bytes.as_slice()).unwrap(), request);
    }

    #[test]
    fn response_decodes_with_defaults_for_missing_fields() {
        // DENY with a reason.
        let bytes = [0x08, 0x01, 0x12, 0x02, b'n', b'o'];
        let response = AuthResponse::decode(&bytes[..]).unwrap();
        assert_eq!(response.result(), AuthResult::Deny);
        assert_eq!(response.reason, "no");
        assert_eq!(response.auth_data, None);
        // proto3: an empty message is ALLOW with nothing else.
        let empty = AuthResponse::decode(&[][..]).unwrap();
        assert_eq!(empty.result, AuthResult::Allow as i32);
    }

    #[test]
    fn response_with_replacement_credentials_round_trips() {
        let response = AuthResponse {
            result: AuthResult::Allow as i32,
            reason: "mapped".into(),
            auth_data: Some(plain()),
        };
        let bytes = response.encode_to_vec();
        assert_eq!(AuthResponse::decode(bytes.as_slice()).unwrap(), response);
    }

    #[test]
    fn debug_hides_credentials() {
        let shown = format!(
            "{:?}",
            AuthRequest {
                auth_data: Some(plain()),
                ..Default::default()
            }
        );
        assert!(!shown.contains("guest"), "{shown}");
        assert!(shown.contains("<12 bytes>"), "{shown}");
    }
}
