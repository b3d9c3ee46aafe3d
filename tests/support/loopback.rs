//! Loopback pieces for tests that drive the pump directly on one glommio
//! executor: a connected socket pair and a body frame of a given size.
//! Owns no test logic; included by path (`#[path]`) so that such a test
//! needs none of the rest of the harness.

use glommio::net::{TcpListener, TcpStream};

/// One body frame of `payload` bytes on channel 1, filled with `fill`, as
/// a client publishes.
pub fn body_frame(payload: usize, fill: u8) -> Vec<u8> {
    let mut f = vec![3u8, 0, 1];
    f.extend_from_slice(&(payload as u32).to_be_bytes());
    f.resize(7 + payload, fill);
    f.push(0xCE);
    f
}

/// A connected pair: (the end the test drives, the end given to the pump).
pub async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("listener address");
    let connect = glommio::spawn_local(async move { TcpStream::connect(addr).await });
    let accepted = listener.accept().await.expect("accept");
    (connect.await.expect("connect"), accepted)
}
