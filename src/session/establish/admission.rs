//! The two checks a proxied session passes at `Connection.Open`, before any
//! broker is reached: the limits (connection rate, rate alarm, concurrent
//! cap) and then, once the vhost is routed, the auth service (see
//! `docs/commands.md#auth-and-limit` and `docs/sessions.md#refusals`).
//!
//! Owns turning the limits' and the auth service's verdicts into a session's
//! slot, its rewritten `StartOk`, or a [`Refusal`] with the right bytes,
//! delay and log text. Never decides a limit or an auth verdict itself
//! (`crate::limits`, `crate::auth` do), never marks the session's counters
//! (the driver does, once the refused session leaves). Runs on the
//! session's shard; the only waits are the limited client's delay and the
//! auth service's bounded request.

use super::refusal::{Reason, Refusal};
use crate::auth::{self, rewrite, AuthDecision, AuthSettings};
use crate::codec::ConnectionMethod;
use crate::handshake::{close_frame, ClientHello};
use crate::limits::{LimitRefusal, Stamp};
use crate::session::{SessionInfo, ShardContext};
use crate::session_log;
use log::Level;
use std::time::Instant;

/// Admits the session to its vhost's limits, keeping its slot on the
/// session until it ends; or refuses it, after the original's delay, with
/// a 506 Close. An alarm-only limit logs at WARN and lets it through.
pub async fn admit(shard: &ShardContext, info: &SessionInfo, vhost: &str) -> Result<(), Refusal> {
    let admission = shard
        .shared
        .limits
        .admit(vhost, Stamp::from_instant(Instant::now()));
    if let Some(alarm) = &admission.alarm {
        session_log!(Level::Warn, info, "{alarm}");
    }
    match admission.outcome {
        Ok(slot) => {
            *info.admission.slot.borrow_mut() = Some(slot);
            Ok(())
        }
        Err(refusal) => {
            // The delay slows a client that reconnects in a loop; it holds
            // no slot and no broker connection meanwhile.
            glommio::timer::sleep(refusal.close_delay()).await;
            Err(limited(refusal))
        }
    }
}

/// The refusal of a limited session: 506 and the limit's text, logged at
/// DEBUG with the `AMQPPROX_CONNECTION_LIMIT` line as in the original.
pub fn limited(refusal: LimitRefusal) -> Refusal {
    Refusal::Reply {
        bytes: close_frame(refusal.reply_code(), &refusal.close_text()),
        level: Level::Debug,
        reason: Reason::Limited(refusal),
    }
}

/// Asks the session's auth interceptor (the one in force when it was
/// accepted). ALLOW with credentials rewrites the `StartOk` the broker is
/// sent; DENY refuses the session.
pub async fn authorise(
    shard: &ShardContext,
    info: &SessionInfo,
    hello: &mut ClientHello,
) -> Result<(), Refusal> {
    let settings = info.admission.auth.borrow().clone();
    let settings = match settings {
        Some(settings) if !matches!(**settings, AuthSettings::AlwaysAllow) => settings,
        // No request, no log line per session: the common case.
        _ => return Ok(()),
    };
    let client_hostname = crate::hostnames::hostname_for(info.ingress_remote.ip())
        .unwrap_or_else(|| info.ingress_remote.ip().to_string());
    let vhost = hello.open.vhost.clone();
    // Boxed: the HTTP exchange's state is kilobytes, and inline it would
    // be copied into every session's handshake, auth service or not.
    let decision = Box::pin(auth::authorise(
        &settings,
        &vhost,
        &hello.start_ok,
        &client_hostname,
        &shard.resolver,
        shard.shared.auth_timeouts,
    ))
    .await;
    match decision {
        AuthDecision::Allow {
            reason,
            replacement,
        } => {
            session_log!(
                Level::Debug,
                info,
                "Auth service allowed the connection{}: {reason}",
                if replacement.is_some() {
                    " with replacement credentials"
                } else {
                    ""
                }
            );
            if let Some(credentials) = replacement {
                rewrite::apply_replacement(&mut hello.start_ok, &credentials, &reason);
            }
            Ok(())
        }
        AuthDecision::Deny(why) => Err(denied(hello, why)),
    }
}

/// The refusal of a denied session: a 403 Close if the client can take
/// one, else nothing before the socket closes; logged at ERROR.
pub fn denied(hello: &ClientHello, why: auth::DenyReason) -> Refusal {
    let bytes = match rewrite::deny_close(&hello.start_ok, &why.to_string()) {
        Some(close) => {
            let mut bytes = Vec::with_capacity(64);
            ConnectionMethod::Close(close).encode_frame(&mut bytes);
            bytes
        }
        None => Vec::new(),
    };
    Refusal::Reply {
        bytes,
        level: Level::Error,
        reason: Reason::AuthDenied(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::DenyReason;
    use crate::codec::{
        decode_frame, str_field, Close, FieldTable, FieldValue, Open, StartOk, Tune,
    };
    use crate::limits::LimitSource;
    use std::sync::Arc;

    fn hello(failure_close: bool) -> ClientHello {
        let mut props = FieldTable::new();
        if failure_close {
            let mut caps = FieldTable::new();
            caps.push("authentication_failure_close", FieldValue::Bool(true));
            props.push("capabilities", FieldValue::Table(caps));
        }
        props.push("connection_name", str_field("c1"));
        let tune = Tune {
            channel_max: 2047,
            frame_max: 131072,
            heartbeat: 60,
        };
        ClientHello {
            start_ok: StartOk {
                client_properties: props,
                mechanism: b"PLAIN".to_vec(),
                response: b"\0u\0p".to_vec(),
                locale: b"en_US".to_vec(),
            },
            tune_ok: tune,
            open: Open {
                vhost: "orders".into(),
                capabilities: Vec::new(),
                insist: false,
            },
            pipelined: Vec::new(),
            legacy_header: false,
        }
    }

    /// The one `Connection.Close` in `bytes`.
    fn close_in(bytes: &[u8]) -> Close {
        let (frame, used) = decode_frame(bytes, 4096).unwrap().expect("a whole frame");
        assert_eq!(used, bytes.len());
        match ConnectionMethod::decode(frame.payload).unwrap() {
            ConnectionMethod::Close(close) => close,
            other => panic!("not a Close: {other:?}"),
        }
    }

    #[test]
    fn a_limited_session_gets_506_naming_its_vhost_and_logs_the_limiter() {
        let refusal = limited(LimitRefusal::ConnRate {
            vhost: Arc::from("orders"),
            limit: 3,
            origin: LimitSource::Default,
        });
        let Refusal::Reply {
            bytes,
            level,
            reason,
        } = refusal
        else {
            panic!("a limited session is told why");
        };
        let close = close_in(&bytes);
        assert_eq!(close.reply_code, 506);
        assert_eq!(
            close.reply_text_lossy(),
            "The connection for orders, is limited by proxy."
        );
        assert_eq!(level, Level::Debug);
        assert_eq!(
            reason.to_string(),
            "AMQPPROX_CONNECTION_LIMIT: The connection request for orders is limited by default Allow average 3 number of connections per 1 seconds"
        );

        let capped = limited(LimitRefusal::ConnCount {
            vhost: Arc::from("orders"),
            cap: 2,
            origin: LimitSource::Vhost,
        });
        let Refusal::Reply { bytes, .. } = capped else {
            panic!("a capped session is told why");
        };
        assert_eq!(
            close_in(&bytes).reply_text_lossy(),
            "The connection for orders, is limited by proxy: at most 2 concurrent connections."
        );
    }

    #[test]
    fn a_denied_session_gets_403_only_if_it_can_take_it() {
        let why = || DenyReason::Denied {
            reason: "not on the list".into(),
        };
        let Refusal::Reply {
            bytes,
            level,
            reason,
        } = denied(&hello(true), why())
        else {
            panic!("a denied session is refused");
        };
        let close = close_in(&bytes);
        assert_eq!(close.reply_code, 403);
        assert_eq!(close.reply_text_lossy(), "not on the list");
        assert_eq!((close.class_id, close.method_id), (10, 11));
        assert_eq!(level, Level::Error);
        assert_eq!(
            reason.to_string(),
            "Disconnecting unauthenticated/unauthorized client, reason: not on the list"
        );

        let Refusal::Reply { bytes, .. } = denied(&hello(false), why()) else {
            panic!("a denied session is refused");
        };
        assert!(
            bytes.is_empty(),
            "no Close for a client without the capability"
        );
    }

    #[test]
    fn a_limit_or_an_auth_service_makes_sessions_proxied() {
        use crate::auth::AuthService;
        use crate::config::{Config, ConfigSnapshot};
        use crate::limits::{LimitChange, LimitKind, LimitScope};
        use crate::session::Shared;
        use std::time::Duration;

        let shared = Shared::new(
            ConfigSnapshot::new(Config::default()),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert!(!shared.admission_needs_vhost());
        let scope = LimitScope::Vhost("v".into());
        let set = LimitChange::Set {
            kind: LimitKind::DataRate,
            scope: scope.clone(),
            value: 10,
        };
        shared.limits.apply(&set).unwrap();
        assert!(shared.admission_needs_vhost());
        shared
            .limits
            .apply(&LimitChange::Disable {
                kind: LimitKind::DataRate,
                scope,
            })
            .unwrap();
        assert!(!shared.admission_needs_vhost());
        shared
            .auth
            .store(Arc::new(AuthSettings::Service(AuthService {
                host: "h".into(),
                port: 1,
                target: "/".into(),
            })));
        assert!(shared.admission_needs_vhost());
    }

    #[test]
    fn a_session_is_shaped_by_its_vhost_or_its_own_limit() {
        use crate::limits::{LimitChange, LimitKind, LimitScope, Limits};
        use crate::session::SessionAdmission;

        let limits = Limits::default();
        let admission = SessionAdmission::default();
        assert!(!admission.is_shaped());
        assert!(admission.data_shaper().is_none(), "not admitted yet");
        let slot = limits.admit("v", Stamp::from_nanos(0)).outcome.unwrap();
        *admission.slot.borrow_mut() = Some(slot);
        assert!(!admission.is_shaped());
        admission.shaping.set_rate(Some(100));
        assert!(admission.is_shaped());
        admission.shaping.set_rate(None);
        limits
            .apply(&LimitChange::Set {
                kind: LimitKind::DataRate,
                scope: LimitScope::Default,
                value: 5,
            })
            .unwrap();
        assert!(admission.is_shaped(), "a live change reaches the session");
        assert!(admission.data_shaper().is_some());
        assert_eq!(limits.live_connections("v"), 1);
        admission.slot.borrow_mut().take();
        assert_eq!(limits.live_connections("v"), 0, "the slot ends the count");
    }
}
