//! A real HTTP/1.1 auth service for the tests: a std thread on a loopback
//! port that reads each POST, records it (method, target, headers, body)
//! and answers as the test scripted: a protobuf verdict, an HTTP error,
//! garbage, a chunked body, silence until the stub is dropped, or a bare
//! close.
//!
//! It owns no assertions; the tests inspect what it recorded. It never
//! sleeps for a fixed time: a held connection waits on a condition the
//! stub's drop sets.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use amqpprox::auth::proto::{AuthRequest, AuthResponse, AuthResult, Sasl};
use prost::Message;

/// How the stub answers every request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A status line, `Content-Length` and this body.
    Http { status: u16, body: Vec<u8> },
    /// The same, with `Transfer-Encoding: chunked` in two chunks.
    Chunked { status: u16, body: Vec<u8> },
    /// These bytes instead of an HTTP response, then close.
    Raw(Vec<u8>),
    /// Read the request, answer nothing until the stub is dropped.
    Hold,
    /// Read the request, then close without a byte.
    Close,
}

impl Reply {
    /// HTTP 200 with an encoded `AuthResponse`.
    pub fn verdict(result: AuthResult, reason: &str, auth_data: Option<Sasl>) -> Reply {
        Reply::Http {
            status: 200,
            body: AuthResponse {
                result: result as i32,
                reason: reason.into(),
                auth_data,
            }
            .encode_to_vec(),
        }
    }
}

/// One request as the stub received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub version: u8,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn auth_request(&self) -> AuthRequest {
        AuthRequest::decode(self.body.as_slice()).expect("body is an AuthRequest")
    }
}

/// A running stub; dropping it releases held connections and stops it.
pub struct AuthStub {
    addr: SocketAddr,
    requests: Receiver<Recorded>,
    released: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl AuthStub {
    pub fn start(reply: Reply) -> AuthStub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stub");
        let addr = listener.local_addr().unwrap();
        let (tx, requests) = channel();
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = released.clone();
        let thread = std::thread::spawn(move || serve(listener, reply, tx, flag));
        AuthStub {
            addr,
            requests,
            released,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The next request received, waiting up to 10 s for it.
    pub fn next_request(&self) -> Recorded {
        self.requests
            .recv_timeout(Duration::from_secs(10))
            .expect("the stub received a request")
    }

    /// Requests received so far and not yet taken.
    pub fn pending_requests(&self) -> usize {
        self.requests.try_iter().count()
    }
}

impl Drop for AuthStub {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.released;
        *lock.lock().unwrap() = true;
        cvar.notify_all();
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn released(flag: &(Mutex<bool>, Condvar)) -> bool {
    *flag.0.lock().unwrap()
}

fn serve(
    listener: TcpListener,
    reply: Reply,
    tx: Sender<Recorded>,
    flag: Arc<(Mutex<bool>, Condvar)>,
) {
    let mut workers = Vec::new();
    for conn in listener.incoming() {
        if released(&flag) {
            break;
        }
        let Ok(conn) = conn else { continue };
        let (reply, tx, flag) = (reply.clone(), tx.clone(), flag.clone());
        workers.push(std::thread::spawn(move || answer(conn, &reply, &tx, &flag)));
    }
    for w in workers {
        let _ = w.join();
    }
}

fn answer(
    mut conn: TcpStream,
    reply: &Reply,
    tx: &Sender<Recorded>,
    flag: &(Mutex<bool>, Condvar),
) {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let Some(recorded) = read_request(&mut conn) else {
        return;
    };
    let _ = tx.send(recorded);
    let bytes = match reply {
        Reply::Http { status, body } => {
            let mut out = format!(
                "HTTP/1.1 {status} Stub\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(body);
            out
        }
        Reply::Chunked { status, body } => {
            let (a, b) = body.split_at(body.len() / 2);
            let mut out = format!("HTTP/1.1 {status} Stub\r\nTransfer-Encoding: chunked\r\n\r\n")
                .into_bytes();
            for part in [a, b] {
                out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                out.extend_from_slice(part);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            out
        }
        Reply::Raw(bytes) => bytes.clone(),
        Reply::Hold => {
            let (lock, cvar) = flag;
            let guard = lock.lock().unwrap();
            let _ = cvar
                .wait_timeout_while(guard, Duration::from_secs(60), |released| !*released)
                .unwrap();
            return;
        }
        Reply::Close => return,
    };
    let _ = conn.write_all(&bytes);
}

/// Reads one request: the head, then `Content-Length` bytes of body.
fn read_request(conn: &mut TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(head) = req.parse(&buf).ok()? else {
            continue;
        };
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        if buf.len() < head + length {
            continue;
        }
        return Some(Recorded {
            method: req.method?.to_owned(),
            target: req.path?.to_owned(),
            version: req.version?,
            headers,
            body: buf[head..head + length].to_vec(),
        });
    }
}
