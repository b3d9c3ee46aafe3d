//! `AUTH` end to end: a proxy in front of the real RabbitMQ asks a real HTTP
//! auth service (the stub in `tests/auth_stub`, a thread with its own
//! socket) about every new session. The stub records each request, so every
//! field is checked; its scripted answers drive ALLOW, DENY with and without
//! the client's `authentication_failure_close` capability, replacement
//! credentials RabbitMQ accepts, an HTTP 500, an empty 200, garbage, a
//! closed connection, a service that is not listening, and a slow one past
//! the timeout while another session of the same shard keeps publishing.
//!
//! Clients are raw AMQP sockets (`tests/admission_support`), and lapin for
//! the session that publishes. Never skips without RabbitMQ.

mod support;

#[path = "admission_support/mod.rs"]
mod admission;
#[path = "auth_stub/mod.rs"]
mod auth_stub;
#[path = "stats_e2e/common.rs"]
mod stats_common;

use std::time::{Duration, Instant};

use admission::{close_session, control, open_session, properties, start_ok, Answer};
use amqpprox::auth::proto::{AuthResult, Sasl};
use auth_stub::{AuthStub, Reply};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use stats_common::{sum, StatStream};
use support::proxy::ProxyProcess;
use support::rabbit::{self, TempVhost};
use support::unique_name;

fn service(proxy: &ProxyProcess, stub: &AuthStub, target: &str) {
    assert_eq!(
        control(proxy, &format!("AUTH SERVICE 127.0.0.1 {} {target}", stub.port())),
        format!(
            "HTTP Auth service will be used to authn/authz client connections: http://127.0.0.1:{}{target}\n",
            stub.port()
        )
    );
}

fn client(name: &str, failure_close: bool, password: &str) -> Vec<u8> {
    start_ok(&properties(name, failure_close), "guest", password)
}

#[test]
fn allow_sends_every_field_and_always_allow_sends_nothing() {
    let proxy = admission::proxy(&[]);
    let vhost = TempVhost::create(&unique_name("auth-allow"));
    let stub = AuthStub::start(Reply::verdict(AuthResult::Allow, "welcome", None));
    service(&proxy, &stub, "/auth?tier=dev");
    assert!(control(&proxy, "AUTH PRINT").contains("/auth?tier=dev"));

    let name = unique_name("allowed");
    let answer = open_session(&proxy, &vhost.name, &client(&name, true, "guest"), 0);
    let Answer::Open(conn) = answer else {
        panic!("{}\n{}", answer.describe(), proxy.output());
    };
    let request = stub.next_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/auth?tier=dev");
    assert_eq!(request.version, 1);
    assert_eq!(
        request.header("Host"),
        Some(format!("127.0.0.1:{}", stub.port()).as_str())
    );
    assert_eq!(
        request.header("Content-Type"),
        Some("application/octet-stream")
    );
    assert_eq!(
        request.header("Content-Length"),
        Some(request.body.len().to_string().as_str())
    );
    let body = request.auth_request();
    assert_eq!(body.vhost_name, vhost.name);
    assert_eq!(
        body.auth_data,
        Some(Sasl {
            auth_mechanism: "PLAIN".into(),
            credentials: b"\0guest\0guest".to_vec(),
        })
    );
    assert_eq!(body.client_hostname, "127.0.0.1");
    assert_eq!(body.connection_name, name);
    // No replacement: the broker sees no amqpprox_auth.
    let seen = rabbit::wait_for_connection(&name, Duration::from_secs(10));
    assert_eq!(seen.property("amqpprox_auth"), None);
    close_session(conn);

    assert_eq!(
        control(&proxy, "AUTH ALWAYS_ALLOW"),
        "All connections are authorised to route to any vhost. No auth service requests will be made.\n"
    );
    let answer = open_session(&proxy, &vhost.name, &client("free", true, "guest"), 0);
    assert!(answer.is_open(), "{}", answer.describe());
    assert_eq!(stub.pending_requests(), 0, "a request under ALWAYS_ALLOW");
    if let Answer::Open(conn) = answer {
        close_session(conn);
    }
}

#[test]
fn deny_is_a_403_for_clients_that_take_it_and_a_disconnect_for_others() {
    let proxy = admission::proxy(&[]);
    let vhost = TempVhost::create(&unique_name("auth-deny"));
    let v = vhost.name.as_str();
    let stats = StatStream::open(&proxy, "STAT LISTEN json all");
    let stub = AuthStub::start(Reply::verdict(AuthResult::Deny, "not on the list", None));
    service(&proxy, &stub, "/auth");

    let answer = open_session(&proxy, v, &client("denied-able", true, "guest"), 0);
    let close = answer
        .closed()
        .unwrap_or_else(|| panic!("{}", answer.describe()));
    assert_eq!(
        (close.code, close.text.as_str(), close.class, close.method),
        (403, "not on the list", 10, 11)
    );
    let answer = open_session(&proxy, v, &client("denied-unable", false, "guest"), 0);
    assert!(
        matches!(answer, Answer::Dropped(_)),
        "{}",
        answer.describe()
    );
    assert!(proxy.log_contains_within(
        "Disconnecting unauthenticated/unauthorized client, reason: not on the list",
        Duration::from_secs(10)
    ));
    let mut records = Vec::new();
    let counted = support::wait_until(support::deadline_in(Duration::from_secs(15)), || {
        records.extend(stats.drain());
        sum(&records, &["vhosts", v, "authDeniedConnectionCount"]) >= 2
    });
    assert!(counted, "authDeniedConnectionCount for {v}: {records:?}");
    assert_eq!(
        sum(&records, &["vhosts", v, "authDeniedConnectionCount"]),
        2
    );
    assert_eq!(sum(&records, &["vhosts", v, "limitedConnectionCount"]), 0);
    // Nobody reached the broker.
    assert!(rabbit::find_connection("denied-able").is_none());
}

#[test]
fn replacement_credentials_reach_rabbitmq_with_the_reason() {
    let proxy = admission::proxy(&[]);
    let vhost = TempVhost::create(&unique_name("auth-replace"));
    let replacing = AuthStub::start(Reply::verdict(
        AuthResult::Allow,
        "tenant=orders",
        Some(Sasl {
            auth_mechanism: "PLAIN".into(),
            credentials: b"\0guest\0guest".to_vec(),
        }),
    ));
    service(&proxy, &replacing, "/auth");
    // The client's own password is wrong: only the service's works.
    let name = unique_name("replaced");
    let answer = open_session(&proxy, &vhost.name, &client(&name, true, "wrong"), 0);
    let Answer::Open(conn) = answer else {
        panic!("{}\n{}", answer.describe(), proxy.output());
    };
    let request = replacing.next_request().auth_request();
    assert_eq!(
        request.auth_data.map(|s| s.credentials),
        Some(b"\0guest\0wrong".to_vec())
    );
    let seen = rabbit::wait_for_connection(&name, Duration::from_secs(10));
    assert_eq!(seen.property("amqpprox_auth"), Some("tenant=orders"));
    close_session(conn);

    // Without a replacement the same client is refused by RabbitMQ itself.
    let plain = AuthStub::start(Reply::verdict(AuthResult::Allow, "", None));
    service(&proxy, &plain, "/auth");
    let answer = open_session(&proxy, &vhost.name, &client("wrong", true, "wrong"), 0);
    assert_eq!(
        answer.closed().map(|c| c.code),
        Some(403),
        "{}",
        answer.describe()
    );
}

#[test]
fn every_failure_of_the_service_is_a_deny_with_its_reason() {
    let proxy = admission::proxy(&["--authResponseTimeoutMs", "3000"]);
    let vhost = TempVhost::create(&unique_name("auth-fail"));
    let allow = Reply::verdict(AuthResult::Allow, "fine", None);
    let Reply::Http {
        body: allow_body, ..
    } = allow
    else {
        unreachable!()
    };
    let cases = [
        (
            Reply::Http {
                status: 500,
                body: allow_body,
            },
            "answered with HTTP status 500",
        ),
        (
            Reply::Http {
                status: 200,
                body: Vec::new(),
            },
            "answered with an empty body",
        ),
        (
            Reply::Raw(b"this is not http\r\n\r\n".to_vec()),
            "Unable to receive http response",
        ),
        (
            Reply::Http {
                status: 200,
                body: vec![0xff; 16],
            },
            "Unable to deserialize auth response data",
        ),
        (Reply::Close, "Unable to receive http response"),
    ];
    for (reply, reason) in cases {
        let stub = AuthStub::start(reply.clone());
        service(&proxy, &stub, "/auth");
        let answer = open_session(&proxy, &vhost.name, &client("failing", true, "guest"), 0);
        let close = answer
            .closed()
            .unwrap_or_else(|| panic!("{reply:?}: {}", answer.describe()));
        assert_eq!(close.code, 403, "{reply:?}");
        assert!(
            close.text.contains(reason),
            "{reply:?}: {:?} does not say {reason:?}",
            close.text
        );
        stub.next_request();
    }

    // Nobody listening.
    let port = support::proxy::free_port();
    control(&proxy, &format!("AUTH SERVICE 127.0.0.1 {port} /auth"));
    let answer = open_session(&proxy, &vhost.name, &client("refused", true, "guest"), 0);
    let close = answer
        .closed()
        .unwrap_or_else(|| panic!("{}", answer.describe()));
    assert_eq!(close.code, 403);
    assert!(
        close.text.starts_with(&format!(
            "Unable to connect hostname 127.0.0.1 on port {port}"
        )),
        "{:?}",
        close.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_service_times_out_while_another_session_keeps_publishing() {
    // One shard: the publishing session and the waiting one share it.
    rabbit::require_rabbitmq();
    let proxy = ProxyProcess::builder(rabbit::RABBITMQ_HOST, rabbit::RABBITMQ_PORT)
        .shards(1)
        .arg("--authResponseTimeoutMs")
        .arg("2000")
        .start();
    let vhost = TempVhost::create(&unique_name("auth-slow"));
    let url = format!(
        "{}?heartbeat=0",
        proxy.amqp_url("guest", "guest", &vhost.name)
    );
    let publisher = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("connect: {e:?}\n{}", proxy.output()));
    let channel = publisher.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let queue = support::declare_private_queue(&channel, "auth-slow").await;
    let confirmed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let publishing = {
        let (channel, queue, confirmed) = (channel.clone(), queue.clone(), confirmed.clone());
        tokio::spawn(async move {
            loop {
                let confirm = channel
                    .basic_publish(
                        "",
                        &queue,
                        BasicPublishOptions::default(),
                        b"tick",
                        BasicProperties::default(),
                    )
                    .await;
                let Ok(confirm) = confirm else { return };
                if !matches!(confirm.await, Ok(c) if c.is_ack()) {
                    return;
                }
                confirmed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };

    let stub = AuthStub::start(Reply::Hold);
    let (socket, port) = (proxy.control_socket.clone(), stub.port());
    support::blocking(move || {
        support::control::ctl(&socket, &format!("AUTH SERVICE 127.0.0.1 {port} /auth"))
    })
    .await;
    let before = confirmed.load(std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let start = client("slow", true, "guest");
    let answer = tokio::task::block_in_place(|| open_session(&proxy, &vhost.name, &start, 0));
    let waited = started.elapsed();
    let during = confirmed.load(std::sync::atomic::Ordering::Relaxed) - before;
    let close = answer
        .closed()
        .unwrap_or_else(|| panic!("{}\n{}", answer.describe(), proxy.output()));
    assert_eq!(close.code, 403);
    assert!(close.text.contains("timed out after"), "{:?}", close.text);
    assert!(
        waited >= Duration::from_millis(2000) && waited < Duration::from_secs(15),
        "denied after {waited:?}"
    );
    assert!(
        during >= 10,
        "only {during} confirmed publishes while a session waited {waited:?} for the service"
    );
    assert_eq!(stub.pending_requests(), 1);
    publishing.abort();
    let _ = publisher.close(200, "done").await;
}
