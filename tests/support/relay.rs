//! A TCP relay that stands in for one broker in routing tests: it listens
//! on 127.0.0.1 (an ephemeral port), forwards every accepted connection to
//! an upstream (the local RabbitMQ) byte for byte, and counts the
//! connections it accepted, so a test sees which "backend" a session went
//! to. [`Relay::cut`] turns it into a dead backend: it stops listening (new
//! connects are refused) and closes every relayed connection.
//!
//! Plain std threads, no AMQP knowledge; it never alters or inspects the
//! bytes it forwards.

use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long the relay waits for the upstream to accept.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the accept loop looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// One relay; cut (and its threads ended) when dropped.
pub struct Relay {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// Both ends of every relayed connection, to close them on `cut`.
    streams: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl Relay {
    /// Starts relaying 127.0.0.1:<ephemeral> to `upstream`.
    pub fn start(upstream: SocketAddr) -> Relay {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a relay on 127.0.0.1:0");
        let addr = listener.local_addr().expect("relay address");
        // Non-blocking accept so the loop can notice `cut` and close the
        // listener, which is what makes new connects fail with "refused".
        listener
            .set_nonblocking(true)
            .expect("make the relay listener non-blocking");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (accepted, stop, streams) = (
                Arc::clone(&accepted),
                Arc::clone(&stop),
                Arc::clone(&streams),
            );
            thread::Builder::new()
                .name(format!("relay-{}", addr.port()))
                .spawn(move || accept_loop(listener, upstream, &accepted, &stop, &streams))
                .expect("start the relay thread")
        };
        Relay {
            addr,
            accepted,
            stop,
            streams,
            acceptor: Mutex::new(Some(acceptor)),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far (a session routed to this backend).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops listening (connects are refused from when this returns) and
    /// closes every relayed connection.
    pub fn cut(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let acceptor = self.acceptor.lock().unwrap().take();
        if let Some(handle) = acceptor {
            // The listener is dropped when the loop returns.
            let _ = handle.join();
        }
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    accepted: &AtomicUsize,
    stop: &AtomicBool,
    streams: &Mutex<Vec<TcpStream>>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                accepted.fetch_add(1, Ordering::SeqCst);
                if let Err(e) = relay_one(client, upstream, streams) {
                    eprintln!("relay {}: {e}", listener.local_addr().unwrap());
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("relay accept failed: {e}");
                thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

/// Connects `client` to the upstream and pumps both ways on two threads.
fn relay_one(
    client: TcpStream,
    upstream: SocketAddr,
    streams: &Mutex<Vec<TcpStream>>,
) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let server = match TcpStream::connect_timeout(&upstream, UPSTREAM_CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            let _ = client.shutdown(Shutdown::Both);
            return Err(e);
        }
    };
    // The AMQP handshake is request/response: Nagle would add delays.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    {
        let mut all = streams.lock().unwrap();
        all.push(client.try_clone()?);
        all.push(server.try_clone()?);
    }
    pump(client.try_clone()?, server.try_clone()?)?;
    pump(server, client)?;
    Ok(())
}

/// Copies `from` into `to` until either ends, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) -> io::Result<()> {
    thread::Builder::new()
        .name("relay-pump".into())
        .spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        })
        .map(|_| ())
}
