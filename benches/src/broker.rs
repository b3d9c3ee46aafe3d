//! The dummy broker: a subprocess of this binary (`amqpprox-bench
//! dummy-broker --port P --mode discard|echo [--tls-dir DIR]`) so that its
//! CPU is its own, not the load clients'. It completes the AMQP handshake
//! (Start, Tune, OpenOk), answers `Channel.Open`/`Channel.Close`/
//! `Connection.Close` with their `*Ok`, and then either discards every
//! other frame (throughput) or echoes frames on non-zero channels back
//! verbatim (latency). With `--tls-dir` it speaks TLS only: it makes its
//! certificate and CA at start and writes them there (see `tls`) before it
//! listens, so once its port accepts, `DIR/ca.pem` is the one in force.
//!
//! Owns its listener and one task per connection on a small tokio runtime.
//! Never stores message bodies (discard mode skips body frames without
//! buffering them), never sends heartbeats, never resumes TLS sessions, and
//! never validates more than framing: it is a load sink, not a broker.

use crate::tls;
use crate::wire::{self, ids, FRAME_HEARTBEAT, FRAME_METHOD};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::Path;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// What the broker does with frames that are not part of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Throughput: read and drop.
    Discard,
    /// Latency: send every data frame straight back.
    Echo,
}

impl Mode {
    pub fn as_arg(self) -> &'static str {
        match self {
            Mode::Discard => "discard",
            Mode::Echo => "echo",
        }
    }
}

/// Runs the broker until the process is killed; TLS only when `tls_dir`
/// is given (its key material is written there first).
pub fn run(port: u16, mode: Mode, threads: usize, tls_dir: Option<&Path>) -> Result<()> {
    let acceptor = match tls_dir {
        Some(dir) => Some(TlsAcceptor::from(tls::broker_config(dir)?)),
        None => None,
    };
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
    runtime.block_on(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("dummy broker: bind {addr}"))?;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                // Out of descriptors or a reset before accept: keep serving.
                Err(e) => {
                    eprintln!("dummy broker: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that vanishes mid-run (or a readiness probe that
                // never starts TLS) is the harness's problem to report, not
                // the broker's.
                if stream.set_nodelay(true).is_err() {
                    return;
                }
                let _ = match acceptor {
                    None => serve(stream, mode).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => serve(tls, mode).await,
                        Err(_) => Ok(()),
                    },
                };
            });
        }
    })
}

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
            start: wire::broker_start(),
            tune: wire::broker_tune(),
            open_ok: wire::reply(0, ids::CONNECTION_OPEN_OK, &[0]),
            close_ok: wire::reply(0, ids::CONNECTION_CLOSE_OK, &[]),
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
            let (frame_type, channel, size) = wire::parse_header(&buf[start..]);
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
            closing |= answer(frame, channel, echo, &replies, &mut out);
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
fn answer(frame: &[u8], channel: u16, echo: bool, replies: &Replies, out: &mut Vec<u8>) -> bool {
    let Some(method) = wire::method_ids(&frame[7..frame.len() - 1]) else {
        return false;
    };
    match method {
        ids::CONNECTION_START_OK => out.extend_from_slice(&replies.tune),
        ids::CONNECTION_OPEN => out.extend_from_slice(&replies.open_ok),
        ids::CHANNEL_OPEN => {
            out.extend_from_slice(&wire::reply(channel, ids::CHANNEL_OPEN_OK, &[0, 0, 0, 0]))
        }
        ids::CHANNEL_CLOSE => {
            out.extend_from_slice(&wire::reply(channel, ids::CHANNEL_CLOSE_OK, &[]))
        }
        ids::CONNECTION_CLOSE => {
            out.extend_from_slice(&replies.close_ok);
            return true;
        }
        _ if echo && channel != 0 => out.extend_from_slice(frame),
        _ => {}
    }
    false
}
