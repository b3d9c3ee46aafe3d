//! `LIMIT` end to end: a proxy with two shards in front of the real
//! RabbitMQ, driven over its control socket like an operator would.
//! Connection rates and the concurrent cap hold for the whole process (both
//! shards together); a refused client reads 506 after about 750 ms and is
//! counted as limited in `STAT`; a vhost's data rate holds in each
//! direction (client to broker counted by the broker's queue, broker to
//! client by the client, and the broker's queue drains at that rate) while
//! a heartbeat-only client of the same vhost stays alive; `CONN` marks
//! shaped sessions.
//!
//! Clients are raw AMQP sockets (`tests/admission_support`), so every byte
//! and every delay the client sees is checked. Never skips without RabbitMQ.

mod support;

#[path = "admission_support/mod.rs"]
mod admission;
#[path = "stats_e2e/common.rs"]
mod stats_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use admission::{close_session, control, open_session, properties, start_ok, Answer, Closed};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use stats_common::{sum, StatStream};
use support::proxy::ProxyProcess;
use support::rabbit::{self, TempVhost};
use support::raw::{self, RawConn};
use support::unique_name;

/// The longest a refused client may wait for its Close: the 750 ms delay
/// plus a loaded machine's slack.
const CLOSE_DELAY_CEILING: Duration = Duration::from_secs(5);

fn guest(name: &str) -> Vec<u8> {
    start_ok(&properties(name, true), "guest", "guest")
}

/// Opens `n` sessions on `vhost` whose `Open`s leave together (a barrier
/// after each client's `Tune`), one thread each.
fn open_together(proxy: &ProxyProcess, vhost: &str, n: usize) -> Vec<Answer> {
    let barrier = Arc::new(Barrier::new(n));
    let port = proxy.port;
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, vhost) = (Arc::clone(&barrier), vhost.to_string());
            thread::spawn(move || {
                let mut conn = RawConn::connect_local(port);
                conn.send(raw::PROTOCOL_HEADER);
                conn.expect_method(10, 10);
                conn.send(&guest(&format!("together-{i}")));
                conn.expect_method(10, 30);
                let mut rest = raw::tune_ok(2047, 131_072, 0);
                rest.extend_from_slice(&raw::open(&vhost));
                barrier.wait();
                // Before the send, as the proxy's delay may start first.
                let sent = Instant::now();
                conn.send(&rest);
                admission::read_answer_from(conn, sent)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a client thread"))
        .collect()
}

fn limited_close(vhost: &str) -> Closed {
    Closed {
        code: 506,
        text: format!("The connection for {vhost}, is limited by proxy."),
        class: 0,
        method: 0,
    }
}

/// Sums `field` of `vhost` over the STAT records until it reaches `want`
/// (or panics after 15 s).
fn wait_for_stat(stream: &StatStream, vhost: &str, field: &str, want: u64) {
    let mut records = Vec::new();
    let found = support::wait_until(support::deadline_in(Duration::from_secs(15)), || {
        records.extend(stream.drain());
        sum(&records, &["vhosts", vhost, field]) >= want
    });
    let got = sum(&records, &["vhosts", vhost, field]);
    assert!(
        found && got == want,
        "{field} for {vhost}: {got}, want {want}"
    );
}

#[test]
fn conn_rate_admits_n_a_second_across_shards_and_refuses_with_506_after_750ms() {
    let proxy = admission::proxy(&[]);
    let vhost = TempVhost::create(&unique_name("rate"));
    let v = vhost.name.as_str();
    let stats = StatStream::open(&proxy, "STAT LISTEN json all");
    const N: usize = 4;
    let mut refused = 0;
    let mut rounds = Vec::new();
    // Six clients' Opens leave together; if the machine is so slow that
    // their admissions spread over more than the one-second window, the
    // round says nothing and is run again (setting the limit restarts its
    // window). Anything else than N open and the rest refused fails.
    for _ in 0..3 {
        assert_eq!(
            control(&proxy, &format!("LIMIT CONN_RATE VHOST {v} {N}")),
            format!("For vhost {v}, Allow average {N} number of connections per 1 seconds\n")
        );
        let answers = open_together(&proxy, v, N + 2);
        let opened = answers.iter().filter(|a| a.is_open()).count();
        let described: Vec<String> = answers.iter().map(Answer::describe).collect();
        for answer in answers {
            match answer {
                Answer::Open(conn) => close_session(conn),
                Answer::Closed(close, after) => {
                    assert_eq!(close, limited_close(v), "{}", proxy.output());
                    assert!(
                        after >= Duration::from_millis(750) && after < CLOSE_DELAY_CEILING,
                        "the 506 came {after:?} after Open"
                    );
                    refused += 1;
                }
                Answer::Dropped(after) => {
                    panic!("dropped after {after:?}: {described:?}\n{}", proxy.output())
                }
            }
        }
        rounds.push(described);
        if opened == N {
            break;
        }
        assert!(
            opened > N,
            "fewer than {N} admitted: {rounds:?}\n{}",
            proxy.output()
        );
    }
    assert_eq!(
        refused,
        2,
        "no round admitted exactly {N} of {}: {rounds:?}",
        N + 2
    );
    wait_for_stat(&stats, v, "limitedConnectionCount", 2);

    // LIMIT PRINT shows it; DISABLE lifts it.
    assert_eq!(
        control(&proxy, &format!("LIMIT PRINT {v}")),
        format!("For vhost {v}, Allow average {N} number of connections per 1 seconds.\n")
    );
    assert_eq!(
        control(&proxy, &format!("LIMIT DISABLE CONN_RATE VHOST {v}")),
        format!("Successfully disabled specific connection rate limit for vhost {v}\n")
    );
    let answers = open_together(&proxy, v, N + 2);
    assert!(answers.iter().all(Answer::is_open));
    answers.into_iter().for_each(|a| {
        if let Answer::Open(c) = a {
            close_session(c)
        }
    });
}

#[test]
fn a_rate_of_zero_refuses_everyone_and_an_alarm_only_logs() {
    let proxy = admission::proxy(&[]);
    let vhost = TempVhost::create(&unique_name("alarm"));
    let v = vhost.name.as_str();
    let reply = control(&proxy, &format!("LIMIT CONN_RATE_ALARM VHOST {v} 1"));
    assert!(
        reply.starts_with(&format!(
            "For vhost {v}, Allow average 1 number of connections per 1 seconds in alarm only mode.\n"
        )),
        "{reply:?}"
    );
    for answer in open_together(&proxy, v, 3) {
        match answer {
            Answer::Open(conn) => close_session(conn),
            other => panic!("an alarm refused a client: {}", other.describe()),
        }
    }
    assert!(
        proxy.log_contains_within(
            &format!("AMQPPROX_CONNECTION_LIMIT: The connection request for {v} should be limited by Allow average 1 number of connections per 1 seconds"),
            Duration::from_secs(10)
        ),
        "{}",
        proxy.output()
    );

    control(&proxy, "LIMIT CONN_RATE DEFAULT 0");
    let other = TempVhost::create(&unique_name("zero"));
    for vhost in [v, other.name.as_str()] {
        let answer = open_session(&proxy, vhost, &guest("zero"), 0);
        assert_eq!(
            answer.closed(),
            Some(&limited_close(vhost)),
            "{}",
            answer.describe()
        );
    }
}

#[test]
fn a_concurrent_cap_holds_across_shards_and_lowering_it_keeps_sessions() {
    let proxy = admission::proxy(&[]);
    let vhost = TempVhost::create(&unique_name("cap"));
    let v = vhost.name.as_str();
    assert_eq!(
        control(&proxy, &format!("LIMIT CONN_COUNT VHOST {v} 3")),
        format!("For vhost {v}, allow at most 3 concurrent connections.\n")
    );
    let cap_text = |cap: u32| Closed {
        code: 506,
        text: format!(
            "The connection for {v}, is limited by proxy: at most {cap} concurrent connections."
        ),
        class: 0,
        method: 0,
    };
    // Eight clients at once land on both shards; three get in.
    let answers = open_together(&proxy, v, 8);
    let mut open = Vec::new();
    for answer in answers {
        match answer {
            Answer::Open(conn) => open.push(conn),
            Answer::Closed(close, _) => assert_eq!(close, cap_text(3)),
            Answer::Dropped(after) => panic!("dropped after {after:?}\n{}", proxy.output()),
        }
    }
    assert_eq!(open.len(), 3, "{}", proxy.output());

    // One leaves: one more may come.
    close_session(open.pop().unwrap());
    let admitted =
        support::poll_until(
            support::deadline_in(Duration::from_secs(10)),
            || match open_session(&proxy, v, &guest("after-leave"), 0) {
                Answer::Open(conn) => Some(conn),
                Answer::Closed(close, _) if close == cap_text(3) => None,
                other => panic!("unexpected answer: {}", other.describe()),
            },
        );
    open.push(admitted.expect("a place freed by a closed session"));

    // Lowered below the sessions it has: they stay, new ones are refused.
    control(&proxy, &format!("LIMIT CONN_COUNT VHOST {v} 1"));
    let refused = open_session(&proxy, v, &guest("over"), 0);
    assert_eq!(
        refused.closed(),
        Some(&cap_text(1)),
        "{}",
        refused.describe()
    );
    for conn in &mut open {
        // Still open: a channel opens through the proxy.
        conn.send(&raw::channel_open(1));
        assert!(conn.expect_frame().is_method(1, 20, 11));
    }
    control(&proxy, &format!("LIMIT DISABLE CONN_COUNT VHOST {v}"));
    let answer = open_session(&proxy, v, &guest("uncapped"), 0);
    assert!(answer.is_open(), "{}", answer.describe());
    open.into_iter().for_each(close_session);
    if let Answer::Open(conn) = answer {
        close_session(conn);
    }
}

/// The shard of the proxy's session whose client is `conn`, from `CONN
/// json`.
fn shard_of(proxy: &ProxyProcess, conn: &RawConn) -> u64 {
    let local = conn.local_addr().to_string();
    let views: serde_json::Value =
        serde_json::from_str(&control(proxy, "CONN json")).expect("CONN json parses");
    views
        .as_array()
        .expect("an array")
        .iter()
        .find(|v| v["ingress_remote"].as_str() == Some(local.as_str()))
        .and_then(|v| v["shard"].as_u64())
        .unwrap_or_else(|| panic!("no session from {local}: {views}"))
}

#[test]
fn the_cap_counts_the_sessions_of_both_shards() {
    let proxy = admission::proxy(&[]);
    let vhost = TempVhost::create(&unique_name("cap-shards"));
    let v = vhost.name.as_str();
    // Any limit makes sessions proxied, hence admitted and counted.
    control(&proxy, &format!("LIMIT CONN_COUNT VHOST {v} 1000"));
    // One session on each shard (the kernel spreads connections).
    let mut by_shard: [Option<RawConn>; 2] = [None, None];
    for attempt in 0..40 {
        if by_shard.iter().all(Option::is_some) {
            break;
        }
        let conn = raw_session(&proxy, v, &format!("spread-{attempt}"), 0);
        let shard = shard_of(&proxy, &conn) as usize;
        match &by_shard[shard] {
            None => by_shard[shard] = Some(conn),
            Some(_) => close_session(conn),
        }
    }
    let [Some(a), Some(b)] = by_shard else {
        panic!("40 connections all landed on one shard");
    };
    // Two live, one on each shard: a cap of 2 is full for both shards, so
    // every new session is refused whichever shard takes it. A count kept
    // per shard would admit them.
    control(&proxy, &format!("LIMIT CONN_COUNT VHOST {v} 2"));
    for answer in open_together(&proxy, v, 6) {
        let close = answer
            .closed()
            .unwrap_or_else(|| panic!("admitted over the cap: {}", answer.describe()))
            .clone();
        assert_eq!(close.code, 506);
    }
    close_session(a);
    let answer =
        support::poll_until(
            support::deadline_in(Duration::from_secs(10)),
            || match open_session(&proxy, v, &guest("freed"), 0) {
                Answer::Open(conn) => Some(conn),
                _ => None,
            },
        )
        .expect("a place freed on the other shard is taken");
    close_session(answer);
    close_session(b);
}

/// A lapin connection straight to RabbitMQ (not through the proxy), on its
/// own runtime: the broker's side of the measurements.
struct Direct {
    rt: tokio::runtime::Runtime,
    channel: lapin::Channel,
    _connection: Connection,
}

impl Direct {
    fn open(vhost: &str) -> Direct {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let url = support::amqp_url(
            rabbit::RABBITMQ_HOST,
            rabbit::RABBITMQ_PORT,
            "guest",
            "guest",
            vhost,
        );
        let (connection, channel) = rt.block_on(async {
            let c = Connection::connect(&url, ConnectionProperties::default())
                .await
                .expect("connect to RabbitMQ directly");
            let ch = c.create_channel().await.unwrap();
            (c, ch)
        });
        Direct {
            rt,
            channel,
            _connection: connection,
        }
    }

    fn declare(&self, queue: &str) {
        self.rt
            .block_on(self.channel.queue_declare(
                queue,
                QueueDeclareOptions::default(),
                FieldTable::default(),
            ))
            .expect("declare a queue");
    }

    /// Messages in `queue` now, as the broker counts them.
    fn depth(&self, queue: &str) -> u64 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        u64::from(
            self.rt
                .block_on(
                    self.channel
                        .queue_declare(queue, passive, FieldTable::default()),
                )
                .expect("passive declare")
                .message_count(),
        )
    }

    /// Fills `queue` with `count` bodies of `size` bytes, confirmed.
    fn fill(&self, queue: &str, count: usize, size: usize) {
        self.rt.block_on(async {
            self.channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            let body = vec![b'o'; size];
            let mut confirms = Vec::with_capacity(count);
            for _ in 0..count {
                confirms.push(
                    self.channel
                        .basic_publish(
                            "",
                            queue,
                            BasicPublishOptions::default(),
                            &body,
                            BasicProperties::default(),
                        )
                        .await
                        .unwrap(),
                );
            }
            for confirm in confirms {
                assert!(confirm.await.unwrap().is_ack());
            }
        });
    }
}

/// Establishes a raw session on `vhost` and opens channel 1.
fn raw_session(proxy: &ProxyProcess, vhost: &str, name: &str, heartbeat: u16) -> RawConn {
    let answer = open_session(proxy, vhost, &guest(name), heartbeat);
    let Answer::Open(mut conn) = answer else {
        panic!("{name}: {}\n{}", answer.describe(), proxy.output());
    };
    if heartbeat == 0 {
        conn.send(&raw::channel_open(1));
        assert!(conn.expect_frame().is_method(1, 20, 11));
    }
    conn
}

/// `basic.consume` on channel 1 with no-ack, no wait.
fn consume_no_ack(queue: &str) -> Vec<u8> {
    let mut args = vec![0, 0];
    args.extend_from_slice(&raw::shortstr(queue));
    args.extend_from_slice(&raw::shortstr("limits-e2e"));
    args.push(0b0000_1010); // no-ack, no-wait
    args.extend_from_slice(&0u32.to_be_bytes());
    raw::method_frame(1, 60, 20, &args)
}

#[test]
fn a_vhost_data_rate_holds_at_the_broker_both_ways_and_heartbeats_flow() {
    const RATE: u64 = 1_000_000;
    const BODY: usize = 16 * 1024;
    let proxy = admission::proxy(&[]);
    let vhost = TempVhost::create(&unique_name("data"));
    let v = vhost.name.as_str();
    let direct = Direct::open(v);
    let (inbound, outbound) = ("limits-in", "limits-out");
    direct.declare(inbound);
    direct.declare(outbound);
    // Enough for three windows toward the client (49 MB at 1 MB/s), with
    // RabbitMQ's and the sockets' buffers filled first.
    direct.fill(outbound, 3000, BODY);

    assert_eq!(
        control(&proxy, &format!("LIMIT DATA_RATE VHOST {v} {RATE}")),
        ""
    );
    let stop = Arc::new(AtomicBool::new(false));

    // A client with a 2 s heartbeat that only sends heartbeats: RabbitMQ
    // drops it unless they get through, and it counts the broker's.
    let mut beating = raw_session(&proxy, v, "heartbeat-only", 2);
    let heartbeats = Arc::new(AtomicU64::new(0));
    let beater = {
        let (stop, heartbeats) = (Arc::clone(&stop), Arc::clone(&heartbeats));
        thread::spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    beating.send(raw::HEARTBEAT);
                    next += Duration::from_secs(1);
                }
                match beating.read_frame_within(Duration::from_millis(200)) {
                    Ok(f) if f.kind == raw::FRAME_HEARTBEAT => {
                        heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(f) => panic!("heartbeat-only client got {}", f.describe()),
                    Err(e) if raw::is_closed(&e) => panic!("heartbeat-only client dropped: {e}"),
                    Err(_) => {}
                }
            }
            beating
        })
    };

    // Client to broker: publish without end; the broker counts messages.
    let mut publisher = raw_session(&proxy, v, "publisher", 0);
    let publish_one = {
        let mut m = raw::basic_publish(1, inbound);
        m.extend_from_slice(&raw::content_header(1, BODY as u64));
        m.extend_from_slice(&raw::body_frames(1, &vec![b'i'; BODY], 131_064));
        m
    };
    let per_message_in = publish_one.len() as f64;
    let pub_thread = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && publisher.try_send(&publish_one).is_ok() {}
            publisher
        })
    };

    // Broker to client: consume without acks; the client counts bytes.
    let mut consumer = raw_session(&proxy, v, "consumer", 0);
    consumer.send(&consume_no_ack(outbound));
    let received = Arc::new(AtomicU64::new(0));
    let con_thread = {
        let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let stream = consumer.stream().try_clone().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut stream = stream;
            while !stop.load(Ordering::Relaxed) {
                match std::io::Read::read(&mut stream, &mut buf) {
                    Ok(0) => panic!("the consumer's session ended"),
                    Ok(n) => {
                        received.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
            }
            consumer
        })
    };

    // Warm up (buffers fill), then measure windows of 10 s, each long
    // enough that RabbitMQ's own lag in counting what arrived is small
    // beside it. No window may exceed the limit. A machine loaded enough to
    // starve the proxy or RabbitMQ can make a window fall short, so up to
    // three are measured and one must reach the limit in every direction.
    let warm_until = Instant::now() + Duration::from_millis(2000);
    support::wait_until(warm_until + Duration::from_secs(1), || {
        Instant::now() >= warm_until
    });
    // A delivery on the wire: basic.deliver, the content header, the body.
    let deliver = 8 + 4 + (1 + "limits-e2e".len()) + 8 + 1 + 1 + (1 + outbound.len());
    let per_message_out = (deliver + 8 + 14 + 8 + BODY) as f64;
    let ceiling = 1.1 * RATE as f64;
    let mut windows = Vec::new();
    for _ in 0..3 {
        let (in0, out0, got0, t0) = (
            direct.depth(inbound),
            direct.depth(outbound),
            received.load(Ordering::Relaxed),
            Instant::now(),
        );
        let window_end = t0 + Duration::from_secs(10);
        support::wait_until(window_end + Duration::from_secs(1), || {
            Instant::now() >= window_end
        });
        let (in1, out1, got1, secs) = (
            direct.depth(inbound),
            direct.depth(outbound),
            received.load(Ordering::Relaxed),
            t0.elapsed().as_secs_f64(),
        );
        let into_broker = (in1 - in0) as f64 * per_message_in / secs;
        let to_client = (got1 - got0) as f64 / secs;
        let out_of_queue = (out0 - out1) as f64 * per_message_out / secs;
        let window = format!(
            "client to broker {into_broker:.0} B/s, broker to client {to_client:.0} B/s \
             (the queue drained {out_of_queue:.0} B/s) over {secs:.2} s"
        );
        println!("{window}");
        // Never above the limit: the client's count is exact, the broker's
        // counts lag a little behind (hence the queue's looser bound).
        assert!(
            into_broker <= ceiling && to_client <= ceiling && out_of_queue <= 1.2 * RATE as f64,
            "over the limit of {RATE}: {window}"
        );
        windows.push(window);
        // At the limit: client to broker counted by the broker's queue,
        // broker to client by the client; the queue drained about as fast
        // (RabbitMQ's buffers between the queue and its socket fill at the
        // start, so that bound is looser).
        if into_broker >= 0.9 * RATE as f64
            && to_client >= 0.9 * RATE as f64
            && out_of_queue >= 0.8 * RATE as f64
        {
            break;
        }
        assert!(
            windows.len() < 3,
            "no window reached the limit of {RATE}: {windows:#?}"
        );
    }
    stop.store(true, Ordering::Relaxed);

    let beating = beater.join().expect("the heartbeat client stayed up");
    assert!(
        heartbeats.load(Ordering::Relaxed) >= 2,
        "the broker's heartbeats did not reach the heartbeat-only client"
    );
    let _ = (pub_thread.join(), con_thread.join());
    close_session(beating);
}

#[test]
fn conn_marks_shaped_sessions_and_a_session_limit_applies() {
    let proxy = admission::proxy(&[]);
    let vhost = TempVhost::create(&unique_name("shaped"));
    let v = vhost.name.as_str();
    // A limit on another vhost makes sessions proxied (and admitted).
    control(&proxy, "LIMIT CONN_RATE VHOST some-other-vhost 100");
    let conn = raw_session(&proxy, v, "shaped-session", 0);
    let line = |proxy: &ProxyProcess| control(proxy, "CONN");
    assert!(!line(&proxy).contains(" shaped=Y"), "{}", line(&proxy));
    let id: u64 = line(&proxy)
        .strip_prefix("id=")
        .and_then(|r| r.split(' ').next())
        .and_then(|i| i.parse().ok())
        .expect("a CONN line");
    assert_eq!(
        control(&proxy, &format!("SESSION {id} LIMIT DATA_RATE 65536")),
        ""
    );
    assert!(line(&proxy).contains(" shaped=Y"), "{}", line(&proxy));
    control(&proxy, &format!("SESSION {id} LIMIT DISABLE DATA_RATE"));
    assert!(!line(&proxy).contains(" shaped=Y"), "{}", line(&proxy));
    control(&proxy, "LIMIT DATA_RATE DEFAULT 1000000");
    assert!(line(&proxy).contains(" shaped=Y"), "{}", line(&proxy));
    assert_eq!(
        control(&proxy, "SESSION 999999 LIMIT DATA_RATE 1"),
        "Session not found.\n"
    );
    close_session(conn);
}
