//! What the auth verdict changes on the wire: the `StartOk` replayed to the
//! broker after an ALLOW with replacement credentials, and the 403 Close a
//! denied client gets if it can take one (see `docs/sessions.md#refusals` and
//! `docs/commands.md#auth-and-limit`; AMQP 0-9-1 §1.4.2.2).
//!
//! Pure functions over the codec's types. Never sends anything, and never
//! touches a client property other than appending `amqpprox_auth`, so the
//! client's own properties reach the broker byte for byte and in order.

use super::decision::Credentials;
use crate::codec::{method_id, reply_code, Close, FieldValue, StartOk, CONNECTION_CLASS};

/// Client property added for an ALLOW with credentials and a reason.
pub const AUTH_PROPERTY: &str = "amqpprox_auth";

/// The client capability saying it understands a Close in reply to a failed
/// authentication (RabbitMQ's `authentication_failure_close`).
pub const FAILURE_CLOSE_CAPABILITY: &str = "authentication_failure_close";

/// Puts the service's credentials in place of the client's and, if the
/// reason is not empty, appends `amqpprox_auth` = reason after the client's
/// own properties (before `amqpprox_client` and `amqpprox_host`, which the
/// broker handshake appends next, as in the original).
pub fn apply_replacement(start_ok: &mut StartOk, replacement: &Credentials, reason: &str) {
    start_ok.mechanism = replacement.mechanism.as_bytes().to_vec();
    start_ok.response = replacement.response.clone();
    if !reason.is_empty() {
        start_ok.client_properties.push(
            AUTH_PROPERTY,
            FieldValue::LongString(reason.as_bytes().to_vec()),
        );
    }
}

/// Whether the client's `capabilities` table has
/// `authentication_failure_close` = true.
pub fn takes_failure_close(start_ok: &StartOk) -> bool {
    start_ok
        .client_properties
        .get("capabilities")
        .and_then(FieldValue::as_table)
        .and_then(|caps| caps.get(FAILURE_CLOSE_CAPABILITY))
        .and_then(FieldValue::as_bool)
        .unwrap_or(false)
}

/// The Close for a denied client: 403 ACCESS_REFUSED with the reason (cut
/// to the 255 bytes a short string holds), naming `connection.start-ok` as
/// the failing method. `None` when the client did not advertise that it
/// can take one: it is then only disconnected, as the original does.
pub fn deny_close(start_ok: &StartOk, reason: &str) -> Option<Close> {
    takes_failure_close(start_ok).then(|| Close {
        class_id: CONNECTION_CLASS,
        method_id: method_id::START_OK,
        ..Close::new(reply_code::ACCESS_REFUSED, reason)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{str_field, ConnectionMethod, FieldTable};

    fn start_ok(capabilities: Option<FieldTable>) -> StartOk {
        let mut props = FieldTable::new();
        props.push("product", str_field("amqprs"));
        if let Some(caps) = capabilities {
            props.push("capabilities", FieldValue::Table(caps));
        }
        props.push("connection_name", str_field("c1"));
        StartOk {
            client_properties: props,
            mechanism: b"PLAIN".to_vec(),
            response: b"\0alice\0pw".to_vec(),
            locale: b"en_US".to_vec(),
        }
    }

    fn creds() -> Credentials {
        Credentials {
            mechanism: "AMQPLAIN".into(),
            response: b"\0svc\0secret".to_vec(),
        }
    }

    #[test]
    fn replacement_swaps_credentials_and_appends_the_reason_last() {
        let original = start_ok(None);
        let mut s = original.clone();
        apply_replacement(&mut s, &creds(), "tenant=orders");
        assert_eq!(s.mechanism, b"AMQPLAIN");
        assert_eq!(s.response, b"\0svc\0secret");
        assert_eq!(s.locale, original.locale);
        let keys: Vec<&[u8]> = s.client_properties.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [&b"product"[..], b"connection_name", b"amqpprox_auth"]
        );
        assert_eq!(
            s.client_properties.get("amqpprox_auth"),
            Some(&str_field("tenant=orders"))
        );
        // The client's own properties encode exactly as before.
        let mut before = Vec::new();
        original.client_properties.encode(&mut before);
        let mut after_table = FieldTable(s.client_properties.0[..2].to_vec());
        let mut after = Vec::new();
        after_table.encode(&mut after);
        assert_eq!(before, after);
        after_table.0.clear();
    }

    #[test]
    fn empty_reason_adds_no_property() {
        let mut s = start_ok(None);
        apply_replacement(&mut s, &creds(), "");
        assert!(s.client_properties.get(AUTH_PROPERTY).is_none());
        assert_eq!(s.client_properties.len(), 2);
    }

    #[test]
    fn rewritten_start_ok_encodes_and_decodes() {
        let mut s = start_ok(None);
        apply_replacement(&mut s, &creds(), "why");
        let method = ConnectionMethod::StartOk(s.clone());
        let mut payload = Vec::new();
        method.encode_payload(&mut payload);
        assert_eq!(ConnectionMethod::decode(&payload).unwrap(), method);
    }

    #[test]
    fn deny_close_only_for_clients_that_take_it() {
        let mut caps = FieldTable::new();
        caps.push("publisher_confirms", FieldValue::Bool(true));
        caps.push(FAILURE_CLOSE_CAPABILITY, FieldValue::Bool(true));
        let able = start_ok(Some(caps.clone()));
        let close = deny_close(&able, &"x".repeat(300)).expect("capability set");
        assert_eq!(close.reply_code, 403);
        assert_eq!(close.reply_text.len(), 255);
        assert_eq!((close.class_id, close.method_id), (10, 11));

        assert!(deny_close(&start_ok(None), "no").is_none());
        let mut off = FieldTable::new();
        off.push(FAILURE_CLOSE_CAPABILITY, FieldValue::Bool(false));
        assert!(deny_close(&start_ok(Some(off)), "no").is_none());
        let mut wrong_type = FieldTable::new();
        wrong_type.push(FAILURE_CLOSE_CAPABILITY, str_field("true"));
        assert!(deny_close(&start_ok(Some(wrong_type)), "no").is_none());
    }
}
