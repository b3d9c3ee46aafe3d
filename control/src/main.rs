//! `amqpprox_ctl <control_socket> ARGS...`: joins ARGS with spaces, sends
//! them as one line over the proxy's Unix control socket and copies the
//! reply to stdout until the proxy closes the connection
//! (docs/commands.md#amqpprox_ctl). `amqpprox_ctl --version` prints its
//! version.
//!
//! Exit codes: 1 for usage, 2 when the proxy cannot be reached, 3 when the
//! proxy's reply is an error, else 0. std only; no runtime, no retries.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

/// Sent before the command to ask the proxy for a status trailer (a NUL
/// byte then `ok` or `error` after the reply). Must match the proxy's
/// `control::server::STATUS_HELLO`.
const STATUS_HELLO: &[u8] = b"\0amqpprox_ctl status\n";

/// Splits a reply into its text and whether the proxy flagged it an error.
/// A reply without a trailer (an older proxy, or a stream cut short) counts
/// as success, as the original's `amqpprox_ctl` would.
fn split_status(reply: &[u8]) -> (&[u8], bool) {
    match reply.iter().rposition(|b| *b == 0) {
        Some(i) => (&reply[..i], &reply[i + 1..] == b"error"),
        None => (reply, false),
    }
}

fn run(socket: &str, line: &str) -> io::Result<bool> {
    let mut stream = UnixStream::connect(socket)?;
    let mut request = STATUS_HELLO.to_vec();
    request.extend_from_slice(line.as_bytes());
    request.push(b'\n');
    stream.write_all(&request)?;

    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut chunk = [0u8; 1024];
    // Hold back from a NUL onward: it may be the start of the trailer.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        pending.extend_from_slice(&chunk[..n]);
        // Streaming replies (STAT LISTEN) never end: print as they come.
        let printable = pending
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(pending.len());
        out.write_all(&pending[..printable])?;
        out.flush()?;
        pending.drain(..printable);
    }
    let (text, error) = split_status(&pending);
    out.write_all(text)?;
    out.flush()?;
    Ok(error)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 2 && args[1] == "--version" {
        println!("amqpprox_ctl {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if args.len() < 3 {
        eprintln!("Usage: amqpprox_ctl <control_socket> ARGS");
        return ExitCode::from(1);
    }
    match run(&args[1], &args[2..].join(" ")) {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(3),
        Err(e) => {
            eprintln!("Exception: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_status;

    #[test]
    fn trailer_sets_the_status_and_is_not_printed() {
        assert_eq!(
            split_status(b"Invalid port provided.\n\0error"),
            (&b"Invalid port provided.\n"[..], true)
        );
        assert_eq!(split_status(b"\0ok"), (&b""[..], false));
        assert_eq!(split_status(b"no trailer\n"), (&b"no trailer\n"[..], false));
    }
}
