//! The RabbitMQ Stream scenario (`--rabbitmq --scenario stream`): one
//! Stream protocol connection publishes messages with confirms to a stream
//! of its own, then consumes them all from the first offset, straight to
//! the private stream node (`ci/ensure-rabbitmq-stream.sh`, 127.0.0.20:5552)
//! or through a target's `LISTEN START_STREAM` listener.
//!
//! Owns its connection and the stream it creates (deleted at the end).
//! The client is the smallest that measures throughput: the handshake
//! with the proxy crate's own encoders, publishes in batches with a
//! bounded window of unconfirmed messages, a subscription with a few
//! chunks of credit topped up per chunk. It never follows Metadata (the
//! node is the one it connected to) and never touches other streams.

use crate::rabbit::RabbitLoad;
use crate::scenarios::{Metrics, Probe};
use amqpprox::streamproto::{
    encode_frame, key, response_code, split_frame, OpenRequest, PeerPropertiesRequest,
    SaslAuthenticateRequest, SaslHandshakeRequest, Tune, RESPONSE_FLAG,
};
use anyhow::{bail, ensure, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The private stream node the scenario's broker is.
pub const STREAM_NODE: &str = "127.0.0.20";
pub const STREAM_NODE_PORT: u16 = 5552;
/// Its AMQP port, the backend's port in the proxy's configuration.
pub const STREAM_NODE_AMQP_PORT: u16 = 5700;

/// Messages per Publish frame.
const BATCH: usize = 100;
/// Unconfirmed messages in flight at most.
const WINDOW: u64 = 20_000;
/// Chunks of credit a subscription starts with.
const INITIAL_CREDIT: u16 = 10;
/// How long any one wait for the broker may take.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

const PUBLISHER: u8 = 1;
const SUBSCRIPTION: u8 = 1;

/// The node as the direct target reaches it.
pub fn node_addr() -> SocketAddr {
    SocketAddr::new(STREAM_NODE.parse().unwrap(), STREAM_NODE_PORT)
}

/// Publishes and consumes `load.clients * load.messages` messages of
/// `load.size` bytes through `addr`.
pub fn roundtrip(addr: SocketAddr, load: RabbitLoad, probe: Probe) -> Result<Metrics> {
    let total = (load.clients * load.messages) as u64;
    let mut c = Client::open(addr)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let stream = format!("amqpprox-bench-{}-{nanos}", std::process::id());
    c.create(&stream)?;
    let result = measure(&mut c, &stream, total, load.size, probe);
    // The stream goes whatever happened.
    let deleted = c.delete(&stream);
    let m = result?;
    deleted?;
    Ok(m)
}

fn measure(c: &mut Client, stream: &str, total: u64, size: usize, probe: Probe) -> Result<Metrics> {
    c.declare_publisher(stream).context("declare a publisher")?;
    let payload = vec![0xABu8; size];
    let cpu0 = probe.cpu();
    let t0 = Instant::now();
    c.publish_all(total, &payload).context("publish")?;
    let publish_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    c.consume_all(stream, total).context("consume")?;
    let consume_secs = t1.elapsed().as_secs_f64();
    let used = probe.cpu().since(&cpu0);
    let messages = total as f64;
    let mut m = Metrics::new();
    m.insert("secs".into(), publish_secs + consume_secs);
    m.insert("msgs_per_s".into(), messages / publish_secs);
    m.insert("consume_msgs_per_s".into(), messages / consume_secs);
    m.insert(
        "mb_per_s".into(),
        messages * size as f64 / 1e6 / publish_secs,
    );
    used.record(&mut m);
    used.record_per(&mut m, "us_per_msg", 2.0 * messages / 1e6);
    Ok(m)
}

/// One Stream protocol connection.
struct Client {
    socket: TcpStream,
    pending: Vec<u8>,
    buf: Vec<u8>,
    out: Vec<u8>,
    correlation: u32,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Client {
    fn open(addr: SocketAddr) -> Result<Client> {
        let socket = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .with_context(|| format!("connect to {addr}"))?;
        socket.set_nodelay(true)?;
        socket.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut c = Client {
            socket,
            pending: Vec::new(),
            buf: vec![0u8; 256 * 1024],
            out: Vec::with_capacity(256 * 1024),
            correlation: 0,
        };
        let corr = c.next_correlation();
        PeerPropertiesRequest {
            correlation_id: corr,
            properties: vec![("connection_name".into(), "amqpprox-bench".into())],
        }
        .encode(&mut c.out);
        c.call(key::PEER_PROPERTIES)?;
        let corr = c.next_correlation();
        SaslHandshakeRequest {
            correlation_id: corr,
        }
        .encode(&mut c.out);
        c.call(key::SASL_HANDSHAKE)?;
        let corr = c.next_correlation();
        SaslAuthenticateRequest {
            correlation_id: corr,
            mechanism: "PLAIN".into(),
            data: Some(b"\0guest\0guest".to_vec()),
        }
        .encode(&mut c.out);
        c.call(key::SASL_AUTHENTICATE)?;
        let tune = c.frame()?;
        ensure!(
            tune.0 == key::TUNE,
            "expected Tune, got key 0x{:04x}",
            tune.0
        );
        Tune {
            frame_max: 1_048_576,
            heartbeat: 0,
        }
        .encode_response(&mut c.out);
        let corr = c.next_correlation();
        OpenRequest {
            correlation_id: corr,
            vhost: "/".into(),
        }
        .encode(&mut c.out);
        c.call(key::OPEN)?;
        Ok(c)
    }

    fn next_correlation(&mut self) -> u32 {
        self.correlation += 1;
        self.correlation
    }

    fn flush(&mut self) -> Result<()> {
        self.socket.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// The next whole frame other than a heartbeat: key and body.
    fn frame(&mut self) -> Result<(u16, Vec<u8>)> {
        loop {
            if let Some((frame, used)) = split_frame(&self.pending, u32::MAX)? {
                let item = (frame.header.key, frame.body.to_vec());
                self.pending.drain(..used);
                if item.0 != key::HEARTBEAT {
                    return Ok(item);
                }
                continue;
            }
            let n = self
                .socket
                .read(&mut self.buf)
                .context("read from the target")?;
            if n == 0 {
                bail!("the connection closed");
            }
            self.pending.extend_from_slice(&self.buf[..n]);
        }
    }

    /// Sends what is buffered and waits for the response to `request`,
    /// which must say OK.
    fn call(&mut self, request: u16) -> Result<Vec<u8>> {
        self.flush()?;
        loop {
            let (k, body) = self.frame()?;
            if k == request | RESPONSE_FLAG {
                let code = u16::from_be_bytes([body[4], body[5]]);
                ensure!(
                    code == response_code::OK,
                    "{} refused with code 0x{code:02x}",
                    key::name(request)
                );
                return Ok(body);
            }
        }
    }

    fn create(&mut self, stream: &str) -> Result<()> {
        let corr = self.next_correlation();
        encode_frame(&mut self.out, key::CREATE, |o| {
            o.extend_from_slice(&corr.to_be_bytes());
            put_str(o, stream);
            o.extend_from_slice(&0i32.to_be_bytes());
        });
        self.call(key::CREATE).map(drop)
    }

    fn delete(&mut self, stream: &str) -> Result<()> {
        let corr = self.next_correlation();
        encode_frame(&mut self.out, key::DELETE, |o| {
            o.extend_from_slice(&corr.to_be_bytes());
            put_str(o, stream);
        });
        self.call(key::DELETE).map(drop)
    }

    fn declare_publisher(&mut self, stream: &str) -> Result<()> {
        let corr = self.next_correlation();
        encode_frame(&mut self.out, key::DECLARE_PUBLISHER, |o| {
            o.extend_from_slice(&corr.to_be_bytes());
            o.push(PUBLISHER);
            // No publisher reference (no deduplication): an empty one.
            put_str(o, "");
            put_str(o, stream);
        });
        self.call(key::DECLARE_PUBLISHER).map(drop)
    }

    /// Publishes `total` messages in batches, never more than [`WINDOW`]
    /// unconfirmed, and waits for every confirm.
    fn publish_all(&mut self, total: u64, payload: &[u8]) -> Result<()> {
        let (mut sent, mut confirmed) = (0u64, 0u64);
        while confirmed < total {
            while sent < total && sent - confirmed < WINDOW {
                let n = (total - sent).min(BATCH as u64);
                encode_frame(&mut self.out, key::PUBLISH, |o| {
                    o.push(PUBLISHER);
                    o.extend_from_slice(&(n as i32).to_be_bytes());
                    for id in sent..sent + n {
                        o.extend_from_slice(&id.to_be_bytes());
                        o.extend_from_slice(&(payload.len() as i32).to_be_bytes());
                        o.extend_from_slice(payload);
                    }
                });
                sent += n;
            }
            self.flush()?;
            let (k, body) = self.frame()?;
            match k {
                key::PUBLISH_CONFIRM => {
                    ensure!(body.len() >= 5, "short PublishConfirm");
                    let ids = i32::from_be_bytes([body[1], body[2], body[3], body[4]]);
                    confirmed += u64::try_from(ids).unwrap_or(0);
                }
                key::PUBLISH_ERROR => bail!("the broker refused a publish"),
                _ => {}
            }
        }
        Ok(())
    }

    /// Subscribes from the first offset and reads until `total` messages
    /// have been delivered, granting a chunk of credit per chunk.
    fn consume_all(&mut self, stream: &str, total: u64) -> Result<()> {
        let corr = self.next_correlation();
        encode_frame(&mut self.out, key::SUBSCRIBE, |o| {
            o.extend_from_slice(&corr.to_be_bytes());
            o.push(SUBSCRIPTION);
            put_str(o, stream);
            o.extend_from_slice(&1u16.to_be_bytes()); // first
            o.extend_from_slice(&INITIAL_CREDIT.to_be_bytes());
            o.extend_from_slice(&0i32.to_be_bytes());
        });
        self.flush()?;
        let mut received = 0u64;
        while received < total {
            let (k, body) = self.frame()?;
            match k {
                key::DELIVER => {
                    // Subscription id, magic/version, chunk type, entries,
                    // then the record count.
                    ensure!(body.len() >= 9, "short Deliver");
                    received += u64::from(u32::from_be_bytes([body[5], body[6], body[7], body[8]]));
                    encode_frame(&mut self.out, key::CREDIT, |o| {
                        o.push(SUBSCRIPTION);
                        o.extend_from_slice(&1u16.to_be_bytes());
                    });
                    self.flush()?;
                }
                k if k == key::SUBSCRIBE | RESPONSE_FLAG => {
                    let code = u16::from_be_bytes([body[4], body[5]]);
                    ensure!(code == response_code::OK, "subscribe refused: 0x{code:02x}");
                }
                _ => {}
            }
        }
        Ok(())
    }
}
