//! A delayed link: bytes each way held for a fixed time after they arrive,
//! as over a network with that one-way latency (no loss, no bandwidth
//! limit). The load broker puts it in front of itself
//! (`dummy-broker --link-delay-us`), and [`run`] puts it in front of any
//! TCP server, such as a real RabbitMQ, for checks by hand
//! (`amqpprox-bench link`).
//!
//! Owns its listener and two tasks per connection. Never looks at the
//! bytes, never reorders them, and never holds a connection past either
//! side's end: a side's end of stream is passed on once what it sent
//! before has been delivered.

use anyhow::Result;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The resolution of tokio's timer.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Copies `from` to `to`, each read written `delay` after it arrived. The
/// reads go on while earlier ones wait, so bytes sent together arrive
/// together and a pipelined exchange pays the delay once. An allocation
/// per read: the link is for connection and handshake scenarios, not for
/// throughput.
pub async fn delayed<R, W>(mut from: R, mut to: W, delay: Duration)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (in_flight, mut arriving) =
        tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let carry = async move {
        let mut buf = vec![0u8; 64 * 1024];
        // End of stream or an error ends the link once the queue drains.
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            let due = tokio::time::Instant::now() + delay;
            if in_flight.send((due, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let deliver = async move {
        while let Some((due, bytes)) = arriving.recv().await {
            // tokio's timer fires on millisecond ticks: a read that arrived
            // just after the one before it (a reply of two writes) would
            // otherwise leave a tick later, as if sent apart.
            if due > tokio::time::Instant::now() + TIMER_TICK {
                tokio::time::sleep_until(due).await;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(carry, deliver);
}

/// Listens on 127.0.0.1:`port` until the process is killed and links each
/// connection to `to` with `delay` each way.
pub fn run(port: u16, to: SocketAddr, delay: Duration) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(super::serve_on_loopback(
        port,
        "link",
        move |near| async move {
            // A server that refuses is the client's to see: the link closes its
            // side at once.
            let Ok(far) = TcpStream::connect(to).await else {
                return;
            };
            if near.set_nodelay(true).is_err() || far.set_nodelay(true).is_err() {
                return;
            }
            let (from_client, to_client) = near.into_split();
            let (from_server, to_server) = far.into_split();
            tokio::join!(
                delayed(from_client, to_server, delay),
                delayed(from_server, to_client, delay)
            );
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_round_trip_through_the_link_takes_twice_its_delay() {
        let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        // Every connection echoed, the readiness probe's too.
        std::thread::spawn(move || {
            for mut s in echo.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let delay = Duration::from_millis(100);
        std::thread::spawn(move || run(port, echo_addr, delay));
        crate::wait::wait_for(Duration::from_secs(10), "the link to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = std::time::Instant::now();
        client.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).unwrap();
        let took = started.elapsed();
        assert_eq!(&back, b"ping");
        assert!(took >= 2 * delay, "{took:?}");
    }
}
