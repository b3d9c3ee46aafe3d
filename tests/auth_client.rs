//! The auth service client against a real HTTP server (tests/auth_stub),
//! run on a glommio executor as a shard runs it: every request field the
//! service sees, and the verdict for ALLOW, DENY, replacement credentials,
//! HTTP 500, an empty 200, garbage, a chunked answer, a silent service past
//! the timeout (while other work on the same executor goes on), a bare
//! close, a refused connection, and a service named by host name.

mod auth_stub;

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use amqpprox::auth::decision::{AuthDecision, DenyReason};
use amqpprox::auth::proto::{AuthResult, Sasl};
use amqpprox::auth::rewrite::apply_replacement;
use amqpprox::auth::{authorise, AuthService, AuthSettings, AuthTimeouts};
use amqpprox::codec::{str_field, FieldTable, StartOk};
use amqpprox::net::Resolver;
use auth_stub::{AuthStub, Reply};
use glommio::{LocalExecutorBuilder, Placement};

/// Runs `make()`'s future on a fresh glommio executor (a shard's stand-in)
/// and returns its output.
fn on_executor<G, F, T>(make: G) -> T
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .ring_depth(64)
        .spawn(make)
        .expect("start a glommio executor")
        .join()
        .expect("executor ran to the end")
}

fn start_ok() -> StartOk {
    let mut props = FieldTable::new();
    props.push("product", str_field("test"));
    props.push("connection_name", str_field("orders-7"));
    StartOk {
        client_properties: props,
        mechanism: b"PLAIN".to_vec(),
        response: b"\0alice\0secret".to_vec(),
        locale: b"en_US".to_vec(),
    }
}

fn service(port: u16) -> AuthSettings {
    AuthSettings::Service(AuthService {
        host: "127.0.0.1".into(),
        port,
        target: "/auth?tier=dev".into(),
    })
}

fn timeouts(response_ms: u64) -> AuthTimeouts {
    AuthTimeouts {
        connect: Duration::from_secs(5),
        response: Duration::from_millis(response_ms),
    }
}

/// One session's verdict from the service on `port`.
fn ask(port: u16, response_ms: u64) -> AuthDecision {
    on_executor(move || async move {
        let resolver = Resolver::default();
        authorise(
            &service(port),
            "/prod",
            &start_ok(),
            "10.1.2.3",
            &resolver,
            timeouts(response_ms),
        )
        .await
    })
}

fn deny_text(decision: AuthDecision) -> (DenyReason, String) {
    match decision {
        AuthDecision::Deny(reason) => {
            let text = reason.to_string();
            (reason, text)
        }
        allow => panic!("expected a DENY, got {allow:?}"),
    }
}

#[test]
fn allow_and_every_request_field() {
    let stub = AuthStub::start(Reply::verdict(AuthResult::Allow, "welcome", None));
    let decision = ask(stub.port(), 10_000);
    match decision {
        AuthDecision::Allow {
            reason,
            replacement: None,
        } => assert_eq!(reason, "welcome"),
        other => panic!("{other:?}"),
    }
    let request = stub.next_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/auth?tier=dev");
    assert_eq!(request.version, 1);
    let host = format!("127.0.0.1:{}", stub.port());
    assert_eq!(request.header("Host"), Some(host.as_str()));
    assert_eq!(
        request.header("Content-Type"),
        Some("application/octet-stream")
    );
    let length = request.body.len().to_string();
    assert_eq!(request.header("Content-Length"), Some(length.as_str()));
    assert!(request
        .header("User-Agent")
        .is_some_and(|ua| ua.starts_with("amqpprox/")));
    let body = request.auth_request();
    assert_eq!(body.vhost_name, "/prod");
    assert_eq!(body.client_hostname, "10.1.2.3");
    assert_eq!(body.connection_name, "orders-7");
    let sasl = body.auth_data.expect("authData");
    assert_eq!(sasl.auth_mechanism, "PLAIN");
    assert_eq!(sasl.credentials, b"\0alice\0secret");
}

#[test]
fn always_allow_makes_no_request() {
    let stub = AuthStub::start(Reply::verdict(AuthResult::Deny, "never asked", None));
    let decision = on_executor(|| async {
        authorise(
            &AuthSettings::AlwaysAllow,
            "v",
            &start_ok(),
            "h",
            &Resolver::default(),
            AuthTimeouts::default(),
        )
        .await
    });
    assert!(decision.is_allow());
    assert_eq!(stub.pending_requests(), 0);
}

#[test]
fn deny_carries_the_services_reason() {
    let stub = AuthStub::start(Reply::verdict(AuthResult::Deny, "vhost not yours", None));
    let (reason, text) = deny_text(ask(stub.port(), 10_000));
    assert!(matches!(reason, DenyReason::Denied { .. }));
    assert_eq!(text, "vhost not yours");
}

#[test]
fn allow_with_replacement_credentials_rewrites_the_start_ok() {
    let sasl = Sasl {
        auth_mechanism: "PLAIN".into(),
        credentials: b"\0guest\0guest".to_vec(),
    };
    let stub = AuthStub::start(Reply::verdict(AuthResult::Allow, "mapped", Some(sasl)));
    let AuthDecision::Allow {
        reason,
        replacement: Some(creds),
    } = ask(stub.port(), 10_000)
    else {
        panic!("expected ALLOW with credentials")
    };
    let mut rewritten = start_ok();
    apply_replacement(&mut rewritten, &creds, &reason);
    assert_eq!(rewritten.response, b"\0guest\0guest");
    assert_eq!(
        rewritten.client_properties.get("amqpprox_auth"),
        Some(&str_field("mapped"))
    );
}

#[test]
fn chunked_answer_is_read() {
    let Reply::Http { body, .. } = Reply::verdict(AuthResult::Allow, "chunks", None) else {
        unreachable!()
    };
    let stub = AuthStub::start(Reply::Chunked { status: 200, body });
    assert!(ask(stub.port(), 10_000).is_allow());
}

#[test]
fn http_500_is_a_deny_even_with_an_allow_body() {
    let Reply::Http { body, .. } = Reply::verdict(AuthResult::Allow, "", None) else {
        unreachable!()
    };
    for body in [body, Vec::new()] {
        let stub = AuthStub::start(Reply::Http { status: 500, body });
        let (reason, text) = deny_text(ask(stub.port(), 10_000));
        assert!(
            matches!(reason, DenyReason::Status { status: 500, .. }),
            "{text}"
        );
        assert!(text.contains("HTTP status 500"), "{text}");
    }
}

#[test]
fn empty_200_is_a_deny() {
    let stub = AuthStub::start(Reply::Http {
        status: 200,
        body: Vec::new(),
    });
    let (reason, text) = deny_text(ask(stub.port(), 10_000));
    assert!(matches!(reason, DenyReason::EmptyBody { .. }), "{text}");
}

#[test]
fn garbage_body_and_garbage_http_are_denies() {
    let stub = AuthStub::start(Reply::Http {
        status: 200,
        body: b"\xff\xff\xff\xff not protobuf".to_vec(),
    });
    let (reason, text) = deny_text(ask(stub.port(), 10_000));
    assert!(matches!(reason, DenyReason::Unparsable { .. }), "{text}");
    assert!(text.starts_with("Unable to deserialize auth response data"));

    let stub = AuthStub::start(Reply::Raw(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()));
    let (reason, text) = deny_text(ask(stub.port(), 10_000));
    assert!(matches!(reason, DenyReason::Http { .. }), "{text}");
    assert!(text.starts_with("Unable to receive http response from hostname 127.0.0.1"));
}

#[test]
fn bare_close_is_a_deny() {
    let stub = AuthStub::start(Reply::Close);
    let (reason, text) = deny_text(ask(stub.port(), 10_000));
    assert!(matches!(reason, DenyReason::Http { .. }), "{text}");
}

#[test]
fn refused_connection_is_a_deny() {
    // A port that was just free: nothing listens on it now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (reason, text) = deny_text(ask(port, 10_000));
    assert!(matches!(reason, DenyReason::Connect { .. }), "{text}");
    assert!(
        text.starts_with(&format!(
            "Unable to connect hostname 127.0.0.1 on port {port}, Error:"
        )),
        "{text}"
    );
}

#[test]
fn silent_service_times_out_without_holding_up_the_executor() {
    let slow = AuthStub::start(Reply::Hold);
    let fast = AuthStub::start(Reply::verdict(AuthResult::Allow, "quick", None));
    let (slow_port, fast_port) = (slow.port(), fast.port());
    let limit = Duration::from_millis(1500);
    let (slow_decision, slow_elapsed, fast_done_at, ticks) = on_executor(move || async move {
        let started = Instant::now();
        let ticks = Rc::new(Cell::new(0u32));
        let ticker = {
            let ticks = ticks.clone();
            glommio::spawn_local(async move {
                loop {
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    ticks.set(ticks.get() + 1);
                }
            })
        };
        let slow_task = glommio::spawn_local(async move {
            let resolver = Resolver::default();
            let d = authorise(
                &service(slow_port),
                "v",
                &start_ok(),
                "h",
                &resolver,
                timeouts(limit.as_millis() as u64),
            )
            .await;
            (d, started.elapsed())
        });
        // Another session's request on the same executor completes while
        // the slow one is still waiting.
        let resolver = Resolver::default();
        let fast = authorise(
            &service(fast_port),
            "v",
            &start_ok(),
            "h",
            &resolver,
            timeouts(10_000),
        )
        .await;
        assert!(fast.is_allow(), "{fast:?}");
        let fast_done_at = started.elapsed();
        let (slow_decision, slow_elapsed) = slow_task.await;
        let ticks_seen = ticks.get();
        drop(ticker);
        (slow_decision, slow_elapsed, fast_done_at, ticks_seen)
    });
    let (reason, text) = deny_text(slow_decision);
    assert!(
        matches!(reason, DenyReason::ResponseTimeout { .. }),
        "{text}"
    );
    assert!(slow_elapsed >= limit, "timed out after {slow_elapsed:?}");
    assert!(
        slow_elapsed < limit * 20,
        "timed out after {slow_elapsed:?}"
    );
    assert!(
        fast_done_at < slow_elapsed,
        "fast answer at {fast_done_at:?}, slow timeout at {slow_elapsed:?}"
    );
    // The timer task ran throughout the wait (about 150 ticks in 1.5 s;
    // a loaded machine gets fewer, a blocked executor none).
    assert!(ticks >= 5, "{ticks} ticks");
    // The slow service did receive the request.
    let _ = slow.next_request();
}

#[test]
fn service_named_by_host_name_is_resolved_and_reached() {
    let stub = AuthStub::start(Reply::verdict(AuthResult::Allow, "by name", None));
    let port = stub.port();
    let decision = on_executor(move || async move {
        let settings = AuthSettings::Service(AuthService {
            host: "localhost".into(),
            port,
            target: "/".into(),
        });
        authorise(
            &settings,
            "v",
            &start_ok(),
            "h",
            &Resolver::default(),
            timeouts(10_000),
        )
        .await
    });
    assert!(decision.is_allow(), "{decision:?}");
    let request = stub.next_request();
    let host = format!("localhost:{port}");
    assert_eq!(request.header("Host"), Some(host.as_str()));
}
