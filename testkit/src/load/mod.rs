//! The load side of the benchmark harness: the load-sink broker
//! ([`broker`]), the frames the load clients send, pre-encoded once
//! ([`frames`]), a delayed link that stands for a network ([`link`]), and
//! the loopback accept loop the broker and the link share.
//!
//! The broker and the frames are built on [`crate::wire`], the same
//! encoder the byte-level tests use. Nothing here measures or reports;
//! that stays in `benches/`.

pub mod broker;
pub mod frames;
pub mod link;

use anyhow::{Context, Result};
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

/// Listens on 127.0.0.1:`port` and runs `serve` on a task of its own for
/// every connection, until the process is killed; `who` names the server
/// in its errors. A failed accept (out of descriptors, a reset before
/// accept) is reported and serving goes on.
pub(crate) async fn serve_on_loopback<F, Fut>(port: u16, who: &str, serve: F) -> Result<()>
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("{who}: bind {addr}"))?;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream));
            }
            Err(e) => {
                eprintln!("{who}: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}
