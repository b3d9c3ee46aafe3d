//! The transparent handshake (docs/routing.md#handshake-modes): in simple mode,
//! or with only a default farm, the broker answers the client through the
//! proxy; a vhost mapping brings back the proxied handshake for new sessions
//! only.
//!
//! Byte-level tests use the scriptable dummy broker and golden bytes; the
//! rest use the real RabbitMQ with lapin, a raw client, Python's pika (found
//! through `AMQPPROX_TEST_PYTHON`, which `ci/test.sh` sets up, or `python3`)
//! and Node's amqplib (`AMQPPROX_TEST_NODE_PATH`, likewise). They fail,
//! never skip, when RabbitMQ, pika or amqplib is missing.

mod support;

use lapin::{Connection, ConnectionProperties};
use std::time::Duration;
use support::control::ctl;
use support::dummy_broker::{broker_start, AfterOpen, DummyBroker, Script};
use support::proxy::ProxyProcess;
use support::rabbit::{self, rabbitmqctl, RABBITMQ_HOST, RABBITMQ_PORT};
use support::raw::{self, RawConn};

const WAIT: Duration = Duration::from_secs(5);
const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

fn simple(port: u16) -> ProxyProcess {
    ProxyProcess::builder("127.0.0.1", port).shards(1).start()
}

/// The value of a long-string server property in a `Connection.Start`.
fn server_property(start: &raw::Frame, key: &str) -> Option<String> {
    let mut cur = raw::Cursor::new(start.args());
    cur.take(2).unwrap(); // version
    let (fields, _) = cur.table().unwrap();
    fields
        .iter()
        .find(|f| f.key == key)
        .and_then(|f| f.as_longstr())
}

#[test]
fn simple_mode_relays_the_brokers_handshake_and_the_clients_open() {
    let broker = DummyBroker::start(Script::new(AfterOpen::Hold));
    let proxy = simple(broker.port());
    let mut client = RawConn::connect_local(proxy.port);
    client.send(PROTOCOL_HEADER);
    assert_eq!(
        client.expect_frame().to_bytes(),
        broker_start(),
        "the broker's Start, byte for byte"
    );
    client.send(&raw::default_start_ok("transparent-bytes"));
    assert_eq!(
        client.expect_frame().to_bytes(),
        raw::tune(2047, 131_072, 60)
    );
    // Reserved fields as the client set them: passed on unchanged, where
    // the proxied handshake normalises them.
    let open = raw::open_with("/", "x", true);
    let mut bytes = raw::tune_ok(2047, 131_072, 30);
    bytes.extend_from_slice(&open);
    client.send(&bytes);
    assert_eq!(client.expect_frame().to_bytes(), raw::open_ok());
    let conn = broker.wait_conn(0, WAIT, |c| c.open_ok_sent);
    assert_eq!(conn.open.as_ref().unwrap().to_bytes(), open);
    assert_eq!(
        conn.tune_ok.as_ref().unwrap().to_bytes(),
        raw::tune_ok(2047, 131_072, 30)
    );
    let start_ok = conn.start_ok_method();
    let keys: Vec<&str> = start_ok.properties.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(keys.last(), Some(&"amqpprox_host"), "{keys:?}");
    assert!(keys.contains(&"amqpprox_client"), "{keys:?}");

    let conns = ctl(&proxy.control_socket, "CONN json");
    assert!(conns.contains("\"handshake\":\"transparent\""), "{conns}");
    assert!(
        proxy.log_contains_within("handshake=transparent", Duration::from_secs(3)),
        "{}",
        proxy.log_files()
    );
}

#[test]
fn a_vhost_mapping_switches_only_new_sessions_to_the_proxied_handshake() {
    let broker = DummyBroker::start(Script::new(AfterOpen::Hold));
    let proxy = simple(broker.port());

    // Session A is past its header before the mapping appears.
    let mut a = RawConn::connect_local(proxy.port);
    a.send(PROTOCOL_HEADER);
    assert_eq!(a.expect_frame().to_bytes(), broker_start());

    assert_eq!(ctl(&proxy.control_socket, "MAP FARM elsewhere default"), "");
    let mut b = RawConn::connect_local(proxy.port);
    b.send(PROTOCOL_HEADER);
    let b_start = b.expect_frame();
    assert_eq!(
        server_property(&b_start, "product").as_deref(),
        Some("amqpprox"),
        "B gets the proxy's Start"
    );

    // A keeps its transparent handshake: the broker sees its StartOk at once.
    a.send(&raw::default_start_ok("session-a"));
    assert_eq!(a.expect_frame().to_bytes(), raw::tune(2047, 131_072, 60));
    broker.wait_conn(0, WAIT, |c| c.start_ok.is_some());
    assert_eq!(
        broker.accepted(),
        1,
        "B has no broker connection before its Open"
    );

    assert_eq!(ctl(&proxy.control_socket, "MAP UNMAP elsewhere"), "");
    let mut c = RawConn::connect_local(proxy.port);
    c.send(PROTOCOL_HEADER);
    assert_eq!(
        c.expect_frame().to_bytes(),
        broker_start(),
        "C is transparent again"
    );
}

#[test]
fn no_reachable_broker_still_gets_a_close_naming_the_vhost() {
    let dead = support::proxy::free_port();
    let proxy = ProxyProcess::builder("127.0.0.1", dead)
        .shards(1)
        .connect_timeout_ms(1000)
        .start();
    let mut client = RawConn::connect_local(proxy.port);
    client.send(PROTOCOL_HEADER);
    let start = client.expect_frame();
    assert_eq!(
        server_property(&start, "product").as_deref(),
        Some("amqpprox")
    );
    client.send(&raw::default_start_ok("nobody-home"));
    client.expect_method(10, 30);
    let mut rest = raw::tune_ok(2047, 131_072, 60);
    rest.extend_from_slice(&raw::open("orders-vhost"));
    client.send(&rest);
    let reply = client.expect_frame();
    assert!(reply.is_method(0, 10, 50), "{}", reply.describe());
    let mut cur = raw::Cursor::new(reply.args());
    assert_eq!(cur.u16().unwrap(), 320);
    let text = cur.shortstr().unwrap();
    assert!(text.contains("orders-vhost"), "{text}");
}

#[test]
fn a_paused_vhost_holds_a_transparent_session_at_open() {
    let broker = DummyBroker::start(Script::new(AfterOpen::Hold));
    let proxy = simple(broker.port());
    assert_eq!(ctl(&proxy.control_socket, "VHOST PAUSE /"), "");
    let mut client = RawConn::connect_local(proxy.port);
    client.send(PROTOCOL_HEADER);
    assert_eq!(client.expect_frame().to_bytes(), broker_start());
    client.send(&raw::default_start_ok("held"));
    client.expect_frame(); // Tune
    let mut bytes = raw::tune_ok(2047, 131_072, 60);
    bytes.extend_from_slice(&raw::open("/"));
    client.send(&bytes);
    client.expect_silence(Duration::from_millis(800));
    assert_eq!(ctl(&proxy.control_socket, "VHOST UNPAUSE /"), "");
    assert_eq!(client.expect_frame().to_bytes(), raw::open_ok());
    // Replayed to a broker connection made at unpause.
    let replay = broker.wait_conn(1, WAIT, |c| c.open_ok_sent);
    assert_eq!(replay.start_ok_method().mechanism, "PLAIN");
}

/// Sets RabbitMQ's offered Tune values for the life of the guard. The
/// values are above RabbitMQ's defaults, so proxied sessions (which accept
/// 2047/131072/60 themselves) are not disturbed meanwhile.
struct BrokerTune;

impl BrokerTune {
    fn set(channel_max: u16, frame_max: u32, heartbeat: u16) -> BrokerTune {
        rabbitmqctl(&[
            "eval",
            &format!(
                "application:set_env(rabbit, channel_max, {channel_max}), \
                 application:set_env(rabbit, frame_max, {frame_max}), \
                 application:set_env(rabbit, heartbeat, {heartbeat})."
            ),
        ]);
        BrokerTune
    }
}

impl Drop for BrokerTune {
    fn drop(&mut self) {
        rabbitmqctl(&[
            "eval",
            "application:set_env(rabbit, channel_max, 2047), \
             application:set_env(rabbit, frame_max, 131072), \
             application:set_env(rabbit, heartbeat, 60).",
        ]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_negotiates_with_the_broker_and_sees_its_product() {
    rabbit::require_rabbitmq();
    let _tune = BrokerTune::set(4000, 262_144, 30);
    let transparent = ProxyProcess::simple(RABBITMQ_HOST, RABBITMQ_PORT);
    let proxied = ProxyProcess::builder(RABBITMQ_HOST, RABBITMQ_PORT)
        .proxied_handshake()
        .start();

    let connection = Connection::connect(
        &transparent.amqp_url("guest", "guest", "/"),
        ConnectionProperties::default(),
    )
    .await
    .expect("lapin connects through the transparent proxy");
    let c = connection.configuration();
    assert_eq!(
        (c.channel_max(), c.frame_max(), c.heartbeat()),
        (4000, 262_144, 30)
    );
    // A frame above the proxy's own 131072 passes: the limit follows the
    // negotiated frame-max.
    let channel = connection.create_channel().await.unwrap();
    let queue = support::unique_name("big-frames");
    let options = lapin::options::QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    channel
        .queue_declare(&queue, options, Default::default())
        .await
        .unwrap();
    let body = vec![7u8; 600_000];
    channel
        .basic_publish("", &queue, Default::default(), &body, Default::default())
        .await
        .unwrap();
    let got = channel
        .basic_get(&queue, lapin::options::BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let got = match got {
        Some(m) => m,
        None => loop {
            assert!(started.elapsed() < WAIT, "the large message never arrived");
            if let Some(m) = channel
                .basic_get(&queue, lapin::options::BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                break m;
            }
        },
    };
    assert_eq!(got.delivery.data, body);
    connection.close(200, "bye").await.unwrap();

    let connection = Connection::connect(
        &proxied.amqp_url("guest", "guest", "/"),
        ConnectionProperties::default(),
    )
    .await
    .expect("lapin connects through the proxied handshake");
    let c = connection.configuration();
    assert_eq!(
        (c.channel_max(), c.frame_max(), c.heartbeat()),
        (2047, 131_072, 60)
    );
    connection.close(200, "bye").await.unwrap();

    for (proxy, product) in [(&transparent, "RabbitMQ"), (&proxied, "amqpprox")] {
        let mut raw_client = RawConn::connect_local(proxy.port);
        raw_client.send(PROTOCOL_HEADER);
        let start = raw_client.expect_frame();
        assert_eq!(server_property(&start, "product").as_deref(), Some(product));
        if product == "RabbitMQ" {
            assert!(server_property(&start, "version").is_some_and(|v| !v.is_empty()));
        }
    }
}

async fn lapin_error(url: &str) -> (u16, String) {
    match Connection::connect(url, ConnectionProperties::default()).await {
        Ok(_) => panic!("connecting to {url} must fail"),
        Err(lapin::Error::ProtocolError(e)) => (e.get_id(), e.get_message().to_string()),
        Err(other) => panic!("expected an AMQP refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_refused_as_by_the_broker_itself() {
    rabbit::require_rabbitmq();
    let proxy = ProxyProcess::simple(RABBITMQ_HOST, RABBITMQ_PORT);
    let direct = support::amqp_url(
        RABBITMQ_HOST,
        RABBITMQ_PORT,
        "guest",
        "not-the-password",
        "/",
    );
    let through = proxy.amqp_url("guest", "not-the-password", "/");
    let expected = lapin_error(&direct).await;
    assert_eq!(expected.0, 403);
    assert_eq!(lapin_error(&through).await, expected);

    // On the wire: the broker's Close answers the StartOk itself.
    let mut client = RawConn::connect_local(proxy.port);
    client.send(PROTOCOL_HEADER);
    client.expect_frame();
    let props = raw::client_properties("raw-wrong-password").encode();
    let start_ok = raw::start_ok(&props, "PLAIN", b"\0guest\0not-the-password", "en_US");
    client.send(&start_ok);
    let reply = client.expect_frame();
    assert!(
        reply.is_method(0, 10, 50),
        "expected Close after StartOk, got {}",
        reply.describe()
    );
    let mut cur = raw::Cursor::new(reply.args());
    assert_eq!(cur.u16().unwrap(), 403);
}

/// Runs a pika connection attempt and returns the exception's class name.
fn pika_error(port: u16, password: &str) -> String {
    let python = std::env::var("AMQPPROX_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = format!(
        "import pika\n\
         try:\n    pika.BlockingConnection(pika.URLParameters('amqp://guest:{password}@127.0.0.1:{port}/%2F'))\n    print('connected')\n\
         except Exception as e:\n    print(type(e).__name__)\n"
    );
    let out = std::process::Command::new(&python)
        .args(["-c", &script])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python}: {e} (ci/test.sh sets AMQPPROX_TEST_PYTHON)")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'pika'"),
        "pika is missing for {python}: run ci/test.sh, which installs it, or pip install pika"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn pika_reports_a_wrong_password_as_an_authentication_error() {
    rabbit::require_rabbitmq();
    assert_eq!(
        pika_error(RABBITMQ_PORT, "wrong"),
        "ProbableAuthenticationError",
        "direct"
    );
    let transparent = ProxyProcess::simple(RABBITMQ_HOST, RABBITMQ_PORT);
    assert_eq!(
        pika_error(transparent.port, "wrong"),
        "ProbableAuthenticationError",
        "transparent"
    );
    let proxied = ProxyProcess::builder(RABBITMQ_HOST, RABBITMQ_PORT)
        .proxied_handshake()
        .start();
    // The original's behaviour, kept when the route needs the vhost: the
    // refusal comes after Open, which pika reads as a vhost denial.
    assert_eq!(
        pika_error(proxied.port, "wrong"),
        "ProbableAccessDeniedError",
        "proxied"
    );
}

/// Runs an amqplib connection attempt and returns its first error line (or
/// `connected`). amqplib is found through `AMQPPROX_TEST_NODE_PATH`, which
/// `ci/test.sh` sets up.
fn amqplib_error(port: u16, password: &str) -> String {
    // ci/test.sh installs amqplib there and says so in the variable.
    let modules = std::env::var("AMQPPROX_TEST_NODE_PATH").unwrap_or_else(|_| {
        format!(
            "{}/target/test-node/node_modules",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    assert!(
        std::path::Path::new(&modules).join("amqplib").is_dir(),
        "amqplib is not in {modules}: run ci/test.sh, which installs it"
    );
    let script = format!(
        "require('{modules}/amqplib').connect('amqp://guest:{password}@127.0.0.1:{port}')\
         .then(c => {{ console.log('connected'); return c.close(); }})\
         .catch(e => console.log(e.message.split('\\n')[0]));"
    );
    let out = std::process::Command::new("node")
        .args(["-e", &script])
        .output()
        .expect("node runs (Node.js is needed for this test)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn amqplib_reports_a_wrong_password_as_when_connected_directly() {
    rabbit::require_rabbitmq();
    let direct = amqplib_error(RABBITMQ_PORT, "wrong");
    assert!(direct.contains("403 (ACCESS-REFUSED)"), "{direct}");
    let transparent = ProxyProcess::simple(RABBITMQ_HOST, RABBITMQ_PORT);
    assert_eq!(amqplib_error(transparent.port, "wrong"), direct);
    assert_eq!(amqplib_error(transparent.port, "guest"), "connected");
    // With a vhost mapping the refusal comes after Open, as with the original.
    let proxied = ProxyProcess::builder(RABBITMQ_HOST, RABBITMQ_PORT)
        .proxied_handshake()
        .start();
    let late = amqplib_error(proxied.port, "wrong");
    assert!(late.contains("Expected ConnectionOpenOk"), "{late}");
}
