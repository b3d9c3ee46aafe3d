//! Load: 5,000 concurrent sessions through one proxy (2 shards) to a fake
//! broker in this process (RabbitMQ's own socket limit is lower), all
//! established and listed by `CONN`, with the proxy's memory per session
//! printed (see `docs/reliability.md`).
//!
//! The test raises its own open-files limit to the hard limit (the proxy,
//! its child, inherits it) and fails, never skips, when the hard limit is
//! too low for 2 x 5,000 sockets. The fake broker and the clients speak
//! just enough AMQP for the transparent handshake; nothing here sleeps to
//! wait for a result, every wait is a bounded poll.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqpprox::codec::{
    decode_frame, str_field, ConnectionMethod, FieldTable, Open, StartOk, Tune, PROTOCOL_HEADER,
};
use amqpprox::handshake::client::{start_frame, tune_frame};
use support::control::ctl;
use support::proxy::ProxyProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

const SESSIONS: usize = 5_000;
/// Handshakes in flight at once: bounded so the listen backlogs never
/// overflow (a dropped SYN costs a one-second retransmit).
const CONCURRENT_HANDSHAKES: usize = 200;
/// Descriptors this process needs: a client and a broker socket per
/// session, plus slack for the harness.
const FDS_NEEDED: u64 = 2 * SESSIONS as u64 + 500;

fn frame(m: ConnectionMethod) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode_frame(&mut out);
    out
}

/// Reads whole frames until one that is a method with `method_id` of the
/// connection class arrives; returns the bytes read past it.
async fn expect_method(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    method_id: u16,
) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    loop {
        while let Ok(Some((f, used))) = decode_frame(buf, 1 << 20) {
            let ids = amqpprox::codec::method_ids(f.payload);
            buf.drain(..used);
            if ids == Some((10, method_id)) {
                return Ok(());
            }
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The fake broker's side of one connection: the handshake, then it holds
/// the connection until the peer closes.
async fn broker_conn(mut s: TcpStream, opened: Arc<AtomicUsize>) -> std::io::Result<()> {
    let mut header = [0u8; 8];
    s.read_exact(&mut header).await?;
    s.write_all(start_frame()).await?;
    let mut buf = Vec::new();
    expect_method(&mut s, &mut buf, 11).await?; // start-ok
    s.write_all(&tune_frame()).await?;
    expect_method(&mut s, &mut buf, 31).await?; // tune-ok
    expect_method(&mut s, &mut buf, 40).await?; // open
    s.write_all(&frame(ConnectionMethod::OpenOk {
        known_hosts: Vec::new(),
    }))
    .await?;
    opened.fetch_add(1, Ordering::SeqCst);
    let mut sink = [0u8; 256];
    while s.read(&mut sink).await? > 0 {}
    Ok(())
}

/// One client: the handshake through the proxy; returns the open stream.
async fn client(port: u16, n: usize) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(&PROTOCOL_HEADER).await?;
    let mut buf = Vec::new();
    expect_method(&mut s, &mut buf, 10).await?; // start
    let mut props = FieldTable::new();
    props.push("connection_name", str_field(&format!("load-{n}")));
    s.write_all(&frame(ConnectionMethod::StartOk(StartOk {
        client_properties: props,
        mechanism: b"PLAIN".to_vec(),
        response: b"\0guest\0guest".to_vec(),
        locale: b"en_US".to_vec(),
    })))
    .await?;
    expect_method(&mut s, &mut buf, 30).await?; // tune
    let mut out = frame(ConnectionMethod::TuneOk(Tune {
        channel_max: 2047,
        frame_max: 131_072,
        heartbeat: 0,
    }));
    out.extend(frame(ConnectionMethod::Open(Open {
        vhost: "/".into(),
        capabilities: Vec::new(),
        insist: false,
    })));
    s.write_all(&out).await?;
    expect_method(&mut s, &mut buf, 41).await?; // open-ok
    Ok(s)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proxy status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// `CONN` line count, off the async threads.
async fn conn_lines(socket: std::path::PathBuf) -> usize {
    tokio::task::spawn_blocking(move || ctl(&socket, "CONN").lines().count())
        .await
        .expect("CONN")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_concurrent_sessions_are_established_and_listed() {
    let started = Instant::now();
    let raise = amqpprox::fdlimit::raise_to_hard().expect("raise the open-files limit");
    let soft = amqpprox::fdlimit::current()
        .unwrap()
        .soft
        .unwrap_or(u64::MAX);
    assert!(
        soft >= FDS_NEEDED,
        "the open-files hard limit allows {soft} descriptors, the load test needs {FDS_NEEDED} \
         ({raise}); raise it (ulimit -Hn) for this test"
    );

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker_port = listener.local_addr().unwrap().port();
    let opened = Arc::new(AtomicUsize::new(0));
    let broker_opened = opened.clone();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(broker_conn(s, broker_opened.clone()));
                }
                // Out of descriptors would be a failure of the test setup;
                // it shows up as sessions that never open.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });

    let proxy = ProxyProcess::builder("127.0.0.1", broker_port)
        .shards(2)
        .start();
    let baseline = rss_kib(proxy.pid());

    let gate = Arc::new(Semaphore::new(CONCURRENT_HANDSHAKES));
    let tasks: Vec<_> = (0..SESSIONS)
        .map(|n| {
            let gate = gate.clone();
            let port = proxy.port;
            tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                tokio::time::timeout(Duration::from_secs(60), client(port, n)).await
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(SESSIONS);
    let mut failures = Vec::new();
    for (n, t) in tasks.into_iter().enumerate() {
        match t.await.expect("client task") {
            Ok(Ok(s)) => clients.push(s),
            Ok(Err(e)) => failures.push(format!("session {n}: {e}")),
            Err(_) => failures.push(format!("session {n}: no OpenOk within 60 s")),
        }
    }
    let established_after = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {SESSIONS} sessions failed, e.g. {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        proxy.output()
    );
    assert_eq!(opened.load(Ordering::SeqCst), SESSIONS);

    // The proxy counts a session once both sides are open; poll until all
    // are listed.
    let socket = proxy.control_socket.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut listed = conn_lines(socket.clone()).await;
    while listed != SESSIONS {
        assert!(
            Instant::now() < deadline,
            "CONN lists {listed} sessions, {SESSIONS} are open"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        listed = conn_lines(socket.clone()).await;
    }
    let loaded = rss_kib(proxy.pid());
    let per_session = (loaded.saturating_sub(baseline) * 1024) / SESSIONS as u64;
    eprintln!(
        "load: {SESSIONS} sessions established in {established_after:?} ({raise}); proxy RSS \
         {baseline} KiB idle, {loaded} KiB loaded: {per_session} bytes per session"
    );

    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(30);
    while conn_lines(socket.clone()).await != 0 {
        assert!(
            Instant::now() < deadline,
            "sessions left after every client closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
