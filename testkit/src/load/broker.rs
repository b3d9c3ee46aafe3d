//! The load broker: a load sink that completes the AMQP handshake (Start,
//! Tune, OpenOk), answers `Channel.Open`/`Channel.Close`/`Connection.Close`
//! with their `*Ok`, and then, by [`Mode`], discards every other frame
//! (throughput), echoes frames on non-zero channels back verbatim
//! (latency), or confirms each `Basic.Publish` with a `Basic.Ack` once the
//! channel has sent `Confirm.Select` (publisher confirms). The benchmark
//! harness runs it as a subprocess (`amqpprox-bench dummy-broker`) so its
//! CPU is its own; TLS only when given a server configuration. Given a
//! link delay it stands for a broker that far away: every byte each way is
//! held that long after it arrived, however many are in flight, as a
//! network's latency would (a link without loss or a bandwidth limit).
//!
//! Owns its listener and one task per connection on a small tokio runtime.
//! Never stores message bodies (body frames are skipped without being
//! buffered), never sends heartbeats, never resumes TLS sessions, and never
//! validates more than framing: it is a load sink, not a broker.

use crate::load::frames::{
    self, ids, BASIC_ACK, CONFIRM_SELECT, CONFIRM_SELECT_OK, FRAME_HEARTBEAT, FRAME_METHOD,
};
use crate::load::link;
use anyhow::Result;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// The highest channel number the broker's Tune allows.
const CHANNEL_MAX: usize = 2047;

/// What the broker does with frames that are not part of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Throughput: read and drop.
    Discard,
    /// Latency: send every data frame straight back.
    Echo,
    /// Publisher confirms: drop bodies, ack every publish on a channel in
    /// confirm mode (one `Basic.Ack` per message, delivery tags from 1).
    Confirm,
}

impl Mode {
    /// Every mode, for a command line's list of choices.
    pub const ALL: [Mode; 3] = [Mode::Discard, Mode::Echo, Mode::Confirm];

    /// The mode's name on a command line.
    pub fn as_arg(self) -> &'static str {
        match self {
            Mode::Discard => "discard",
            Mode::Echo => "echo",
            Mode::Confirm => "confirm",
        }
    }
}

/// A `--mode` value that names no [`Mode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMode(pub String);

impl std::fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown broker mode {:?} (expected discard, echo or confirm)",
            self.0
        )
    }
}

impl std::error::Error for UnknownMode {}

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(text: &str) -> Result<Mode, UnknownMode> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.as_arg() == text)
            .ok_or_else(|| UnknownMode(text.to_string()))
    }
}

/// Runs the broker on 127.0.0.1:`port` until the process is killed; TLS
/// only when `tls` is given; every byte each way held for `link_delay`
/// (the one-way latency of the link it stands behind) when that is not zero.
pub fn run(
    port: u16,
    mode: Mode,
    threads: usize,
    tls: Option<Arc<ServerConfig>>,
    link_delay: Duration,
) -> Result<()> {
    anyhow::ensure!(
        tls.is_none() || link_delay.is_zero(),
        "dummy broker: a delayed link is for a plain broker, not a TLS one"
    );
    let acceptor = tls.map(TlsAcceptor::from);
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(super::serve_on_loopback(
        port,
        "dummy broker",
        move |stream| {
            let acceptor = acceptor.clone();
            async move {
                // A client that vanishes mid-run (or a readiness probe that
                // never starts TLS) is the harness's problem to report, not
                // the broker's.
                if stream.set_nodelay(true).is_err() {
                    return;
                }
                if !link_delay.is_zero() {
                    // The far end of the in-process link is the broker.
                    let (near, far) = tokio::io::duplex(LINK_BUFFER);
                    let (from_peer, to_peer) = stream.into_split();
                    let (from_broker, to_broker) = tokio::io::split(far);
                    tokio::spawn(link::delayed(from_peer, to_broker, link_delay));
                    tokio::spawn(link::delayed(from_broker, to_peer, link_delay));
                    let _ = serve(near, mode).await;
                    return;
                }
                let _ = match acceptor {
                    None => serve(stream, mode).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => serve(tls, mode).await,
                        Err(_) => Ok(()),
                    },
                };
            }
        },
    ))
}

/// What the in-process link buffers between the delay and the broker.
const LINK_BUFFER: usize = 256 * 1024;

/// Static replies, encoded once per connection (they are tiny).
struct Replies {
    start: Vec<u8>,
    tune: Vec<u8>,
    open_ok: Vec<u8>,
    close_ok: Vec<u8>,
}

impl Replies {
    fn new() -> Self {
        Replies {
            start: frames::broker_start(),
            tune: frames::broker_tune(),
            open_ok: frames::reply(0, ids::CONNECTION_OPEN_OK, &[0]),
            close_ok: frames::reply(0, ids::CONNECTION_CLOSE_OK, &[]),
        }
    }
}

/// The per-connection frame walk over a plain or TLS stream. `skip` counts
/// bytes of a non-method frame still to pass over (and, in echo mode, to
/// send back). Every write is flushed (TLS buffers records until then).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, mode: Mode) -> Result<()> {
    let replies = Replies::new();
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await?;
    if &header[..4] != b"AMQP" {
        return Ok(());
    }
    stream.write_all(&replies.start).await?;
    stream.flush().await?;

    let echo = mode == Mode::Echo;
    let mut buf = vec![0u8; 256 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    let mut skip = 0usize;
    let mut skip_echo = false;
    let mut out: Vec<u8> = Vec::with_capacity(if echo { 256 * 1024 } else { 64 });
    // Per channel: 0 while not in confirm mode, else the next delivery tag.
    let mut confirms = if mode == Mode::Confirm {
        vec![0u64; CHANNEL_MAX + 1]
    } else {
        Vec::new()
    };
    loop {
        let n = stream.read(&mut buf[end..]).await?;
        if n == 0 {
            return Ok(());
        }
        end += n;
        let mut closing = false;
        while start < end {
            if skip > 0 {
                let k = skip.min(end - start);
                if skip_echo {
                    out.extend_from_slice(&buf[start..start + k]);
                }
                start += k;
                skip -= k;
                continue;
            }
            if end - start < 7 {
                break;
            }
            let (frame_type, channel, size) = frames::parse_header(&buf[start..]);
            let total = size + 8;
            if frame_type != FRAME_METHOD {
                skip = total;
                skip_echo = echo && channel != 0 && frame_type != FRAME_HEARTBEAT;
                continue;
            }
            if end - start < total {
                anyhow::ensure!(total <= buf.len(), "method frame of {total} bytes");
                break;
            }
            let frame = &buf[start..start + total];
            closing |= answer(frame, channel, echo, &mut confirms, &replies, &mut out);
            start += total;
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            stream.flush().await?;
            out.clear();
        }
        if closing {
            stream.shutdown().await.ok();
            return Ok(());
        }
        if start == end {
            start = 0;
            end = 0;
        } else if end == buf.len() || buf.len() - start < 64 * 1024 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
    }
}

/// Appends the answer to one whole method frame; true on `Connection.Close`.
/// `confirms` is empty unless the broker runs in [`Mode::Confirm`].
fn answer(
    frame: &[u8],
    channel: u16,
    echo: bool,
    confirms: &mut [u64],
    replies: &Replies,
    out: &mut Vec<u8>,
) -> bool {
    let Some(method) = frames::method_ids(&frame[7..frame.len() - 1]) else {
        return false;
    };
    let confirm_tag = confirms.get_mut(usize::from(channel));
    match method {
        ids::CONNECTION_START_OK => out.extend_from_slice(&replies.tune),
        ids::CONNECTION_OPEN => out.extend_from_slice(&replies.open_ok),
        ids::CHANNEL_OPEN => {
            out.extend_from_slice(&frames::reply(channel, ids::CHANNEL_OPEN_OK, &[0, 0, 0, 0]))
        }
        ids::CHANNEL_CLOSE => {
            if let Some(tag) = confirm_tag {
                *tag = 0;
            }
            out.extend_from_slice(&frames::reply(channel, ids::CHANNEL_CLOSE_OK, &[]))
        }
        ids::CONNECTION_CLOSE => {
            out.extend_from_slice(&replies.close_ok);
            return true;
        }
        CONFIRM_SELECT if confirm_tag.is_some() => {
            if let Some(tag) = confirm_tag {
                *tag = 1;
            }
            out.extend_from_slice(&frames::reply(channel, CONFIRM_SELECT_OK, &[]));
        }
        ids::BASIC_PUBLISH => match confirm_tag {
            Some(tag) if *tag > 0 => {
                append_ack(channel, *tag, out);
                *tag += 1;
            }
            _ if echo && channel != 0 => out.extend_from_slice(frame),
            _ => {}
        },
        _ if echo && channel != 0 => out.extend_from_slice(frame),
        _ => {}
    }
    false
}

/// Appends `Basic.Ack(tag, multiple = false)` on `channel` without an
/// intermediate buffer: one is written per published message.
fn append_ack(channel: u16, tag: u64, out: &mut Vec<u8>) {
    const ARGS_LEN: u32 = 4 + 8 + 1;
    out.push(FRAME_METHOD);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&ARGS_LEN.to_be_bytes());
    out.extend_from_slice(&BASIC_ACK.0.to_be_bytes());
    out.extend_from_slice(&BASIC_ACK.1.to_be_bytes());
    out.extend_from_slice(&tag.to_be_bytes());
    out.push(0);
    out.push(frames::FRAME_END);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, Frame};

    fn answers(mode: Mode, frames_in: &[Vec<u8>]) -> Vec<Frame> {
        let replies = Replies::new();
        let mut confirms = if mode == Mode::Confirm {
            vec![0u64; CHANNEL_MAX + 1]
        } else {
            Vec::new()
        };
        let mut out = Vec::new();
        for frame in frames_in {
            let (_, channel, _) = frames::parse_header(frame);
            answer(
                frame,
                channel,
                mode == Mode::Echo,
                &mut confirms,
                &replies,
                &mut out,
            );
        }
        wire::split_frames(&out)
    }

    #[test]
    fn confirm_mode_acks_each_publish_after_select() {
        let got = answers(
            Mode::Confirm,
            &[
                wire::basic_publish(1, "before-select"),
                wire::method_frame(1, 85, 10, &[0]),
                wire::basic_publish(1, "q"),
                wire::basic_publish(1, "q"),
            ],
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].is_method(1, 85, 11));
        for (frame, tag) in got[1..].iter().zip(1u64..) {
            assert!(frame.is_method(1, 60, 80), "{}", frame.describe());
            let mut expected = tag.to_be_bytes().to_vec();
            expected.push(0);
            assert_eq!(frame.args(), &expected[..]);
        }
    }

    #[test]
    fn discard_mode_never_answers_a_publish_or_a_select() {
        let got = answers(
            Mode::Discard,
            &[
                wire::method_frame(1, 85, 10, &[0]),
                wire::basic_publish(1, "q"),
            ],
        );
        assert!(got.is_empty(), "{got:?}");
    }

    /// A broker started on a free port, as the harness runs it.
    fn start_broker(mode: Mode, link_delay: Duration) -> u16 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The broker runs until the process ends, as in the harness.
        std::thread::spawn(move || run(port, mode, 1, None, link_delay));
        crate::wait::wait_for(
            std::time::Duration::from_secs(10),
            "the load broker to listen",
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        port
    }

    #[test]
    fn a_delayed_link_costs_each_round_trip_and_bytes_sent_together_pay_once() {
        let delay = Duration::from_millis(150);
        let port = start_broker(Mode::Discard, delay);

        // Header, StartOk, TuneOk and Open in one write: one round trip.
        let mut pipelined = crate::raw::RawConn::connect_local(port);
        let started = std::time::Instant::now();
        let mut replay = wire::PROTOCOL_HEADER.to_vec();
        replay.extend(wire::default_start_ok("pipelined"));
        replay.extend(wire::tune_ok(2047, 131_072, 0));
        replay.extend(wire::open("/"));
        pipelined.send(&replay);
        for expected in [(10, 10), (10, 30), (10, 41)] {
            let frame = pipelined.expect_frame();
            assert!(
                frame.is_method(0, expected.0, expected.1),
                "{}",
                frame.describe()
            );
        }
        let one_round_trip = started.elapsed();

        // Each message after the last answer: three round trips.
        let mut stepwise = crate::raw::RawConn::connect_local(port);
        let started = std::time::Instant::now();
        let open_ok = crate::raw::client_handshake(&mut stepwise, "stepwise", "/");
        assert!(open_ok.is_method(0, 10, 41), "{}", open_ok.describe());
        let three_round_trips = started.elapsed();

        assert!(one_round_trip >= 2 * delay, "{one_round_trip:?}");
        assert!(three_round_trips >= 6 * delay, "{three_round_trips:?}");
        assert!(
            one_round_trip + 2 * delay <= three_round_trips,
            "pipelined {one_round_trip:?}, stepwise {three_round_trips:?}"
        );
    }

    #[test]
    fn a_client_gets_one_ack_per_publish_over_tcp() {
        let port = start_broker(Mode::Confirm, Duration::ZERO);
        let mut client = crate::raw::RawConn::connect_local(port);
        let open_ok = crate::raw::client_handshake(&mut client, "load-confirm", "/");
        assert!(open_ok.is_method(0, 10, 41), "{}", open_ok.describe());
        client.send(&wire::channel_open(1));
        assert!(client.expect_frame().is_method(1, 20, 11));
        client.send(&wire::method_frame(1, 85, 10, &[0]));
        assert!(client.expect_frame().is_method(1, 85, 11));
        let (batch, _) = frames::message_batch(1000, 3);
        client.send(&batch);
        for tag in 1u64..=3 {
            let ack = client.expect_frame();
            assert!(ack.is_method(1, 60, 80), "{}", ack.describe());
            assert_eq!(&ack.args()[..8], &tag.to_be_bytes());
        }
    }

    #[test]
    fn modes_round_trip_through_their_names() {
        for mode in Mode::ALL {
            assert_eq!(mode.as_arg().parse::<Mode>(), Ok(mode));
        }
        assert!("loud".parse::<Mode>().is_err());
    }
}
