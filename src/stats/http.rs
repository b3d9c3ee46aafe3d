//! The `--metricsPort` HTTP server: `GET /metrics` answers the Prometheus
//! exposition of the last snapshot; anything else gets 404 or 405.
//!
//! A deliberately small HTTP/1.1 exchange on one std thread (a scrape is a
//! few requests a minute): read the request head with a timeout, answer
//! with `Connection: close`, close. Never runs on a shard, so a slow
//! scraper can delay only other scrapes, never traffic.

use super::StatsHub;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// How long a scraper may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest request head read.
const MAX_HEAD: u64 = 16 * 1024;

/// Binds the port on every address (IPv6 and IPv4, or IPv4 alone where
/// IPv6 is unavailable) and serves it on its own thread.
pub fn serve(port: u16, hub: Arc<StatsHub>) -> io::Result<()> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
        .or_else(|_| TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))))?;
    log::info!("Serving Prometheus metrics on port {port} at /metrics");
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            // At the open-files limit: back off and log only some failures
            // (docs/reliability.md#resource-limits).
            let mut backoff = crate::fdlimit::AcceptBackoff::default();
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        backoff.on_success();
                        if let Err(e) = answer(stream, &hub) {
                            log::debug!("Metrics request failed: {e}");
                        }
                    }
                    Err(e) => {
                        let step = backoff.on_failure();
                        if step.log {
                            log::warn!(
                                "Metrics port accept failed: {e} ({} in a row)",
                                step.failures
                            );
                        }
                        std::thread::sleep(step.delay);
                    }
                }
            }
        })?;
    Ok(())
}

/// Reads one request head and answers it.
fn answer(stream: TcpStream, hub: &StatsHub) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?).take(MAX_HEAD);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers; nothing in them changes the answer.
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let (status, body) = route(&request_line, hub);
    let head_only = request_line.starts_with("HEAD ");
    let content_type = if status == "200 OK" {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if !head_only {
        out.write_all(body.as_bytes())?;
    }
    out.flush()?;
    let _ = out.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// The status line and body for a request line.
fn route(request_line: &str, hub: &StatsHub) -> (&'static str, String) {
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let snapshot = hub.latest();
            let mut body =
                super::prometheus::render(snapshot.as_deref(), hub.buffer_size(), &hub.backends());
            if let Some(health) = hub.health() {
                body.push_str(&crate::health::metrics::render_prometheus(health));
            }
            ("200 OK", body)
        }
        ("GET" | "HEAD", _) => ("404 Not Found", "Not found: try /metrics\n".into()),
        _ => ("405 Method Not Allowed", "Only GET and HEAD\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_served_and_other_paths_are_not() {
        let hub = Arc::new(StatsHub::default());
        assert_eq!(
            route("POST /metrics HTTP/1.1\r\n", &hub).0,
            "405 Method Not Allowed"
        );
        assert_eq!(route("GET / HTTP/1.1\r\n", &hub).0, "404 Not Found");

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server_hub = Arc::clone(&hub);
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            answer(stream, &server_hub).unwrap();
        });
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .write_all(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        server.join().unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("# TYPE amqpprox_bytes_sent_total counter"));
    }
}
