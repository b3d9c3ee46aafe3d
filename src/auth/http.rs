//! The one HTTP/1.1 exchange the auth service needs, as pure functions: the
//! POST request's bytes, and the response read from bytes received so far
//! (see `docs/commands.md#auth-and-limit`).
//!
//! Owns the request head (`Host`, `User-Agent`, `Content-Type`,
//! `Content-Length`, `Connection: close`: one connection per request, as the
//! original does) and the response framing: `Content-Length`, chunked, or
//! the body running to the end of the connection. The head is parsed by
//! `httparse`. Never does I/O, never keeps a connection, never follows
//! redirects, caps the response at [`MAX_RESPONSE`] so a broken service
//! cannot make the proxy buffer without bound.

/// The largest response accepted, head and body. Real answers are a few
/// hundred bytes.
pub const MAX_RESPONSE: usize = 64 * 1024;

const MAX_HEADERS: usize = 32;

/// The request for `target` on `host:port` carrying `body`.
pub fn encode_request(host: &str, port: u16, target: &str, body: &[u8]) -> Vec<u8> {
    // An IPv6 literal needs brackets in the Host header.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let head = format!(
        "POST {target} HTTP/1.1\r\n\
         Host: {host}:{port}\r\n\
         User-Agent: amqpprox/{}\r\n\
         Content-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    out
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why the bytes received are not an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("malformed HTTP response head: {0}")]
    Malformed(httparse::Error),
    #[error("HTTP response larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("invalid Content-Length header")]
    BadContentLength,
    #[error("invalid chunked body")]
    BadChunk,
    #[error("connection closed after {received} bytes, before the response was complete")]
    Truncated { received: usize },
}

/// How the body's end is known.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads a response from `buf`, everything received so far; `closed` says
/// the peer has ended the connection. `Ok(None)`: read more. Interim 1xx
/// responses (e.g. an unasked-for `100 Continue`) are skipped.
pub fn parse_response(buf: &[u8], closed: bool) -> Result<Option<HttpResponse>, HttpError> {
    if buf.len() > MAX_RESPONSE {
        return Err(HttpError::TooLarge {
            limit: MAX_RESPONSE,
        });
    }
    let mut at = 0;
    loop {
        let parsed = parse_one(&buf[at..], closed).map_err(|e| match e {
            HttpError::Truncated { received } => HttpError::Truncated {
                received: at + received,
            },
            other => other,
        })?;
        match parsed {
            Parsed::Final(response) => return Ok(Some(response)),
            Parsed::Interim { head_len } => at += head_len,
            Parsed::Incomplete => return Ok(None),
        }
    }
}

enum Parsed {
    Final(HttpResponse),
    Interim { head_len: usize },
    Incomplete,
}

fn parse_one(buf: &[u8], closed: bool) -> Result<Parsed, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf).map_err(HttpError::Malformed)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial if closed => {
            return Err(HttpError::Truncated {
                received: buf.len(),
            })
        }
        httparse::Status::Partial => return Ok(Parsed::Incomplete),
    };
    // httparse only completes a head with a status code.
    let status = response.code.unwrap_or_default();
    if (100..200).contains(&status) {
        return Ok(Parsed::Interim { head_len });
    }
    let framing = framing(status, response.headers)?;
    let rest = &buf[head_len..];
    let body = match framing {
        Framing::Length(n) if rest.len() >= n => rest[..n].to_vec(),
        Framing::Length(_) => return incomplete(buf, closed),
        Framing::Chunked => match dechunk(rest)? {
            Some(body) => body,
            None => return incomplete(buf, closed),
        },
        Framing::UntilClose if closed => rest.to_vec(),
        Framing::UntilClose => return Ok(Parsed::Incomplete),
    };
    Ok(Parsed::Final(HttpResponse { status, body }))
}

fn incomplete(buf: &[u8], closed: bool) -> Result<Parsed, HttpError> {
    if closed {
        Err(HttpError::Truncated {
            received: buf.len(),
        })
    } else {
        Ok(Parsed::Incomplete)
    }
}

fn framing(status: u16, headers: &[httparse::Header<'_>]) -> Result<Framing, HttpError> {
    // RFC 9112 §6.3: these never have a body.
    if status == 204 || status == 304 {
        return Ok(Framing::Length(0));
    }
    let mut length = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let chunked = std::str::from_utf8(h.value)
                .map(|v| {
                    v.rsplit(',')
                        .next()
                        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
                })
                .unwrap_or(false);
            if chunked {
                return Ok(Framing::Chunked);
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or(HttpError::BadContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::BadContentLength);
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// The body of a complete chunked encoding at the start of `buf`, or `None`
/// if more bytes are needed. Chunk extensions and trailers are skipped.
fn dechunk(buf: &[u8]) -> Result<Option<Vec<u8>>, HttpError> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = find_crlf(&buf[at..]) else {
            return Ok(None);
        };
        let line = &buf[at..at + line_end];
        let size_text = line.split(|b| *b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .ok_or(HttpError::BadChunk)?;
        at += line_end + 2;
        if size == 0 {
            // Trailer lines, then an empty line.
            loop {
                let Some(end) = find_crlf(&buf[at..]) else {
                    return Ok(None);
                };
                at += end + 2;
                if end == 0 {
                    return Ok(Some(body));
                }
            }
        }
        if size > MAX_RESPONSE {
            return Err(HttpError::TooLarge {
                limit: MAX_RESPONSE,
            });
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(HttpError::BadChunk);
        }
        at += size + 2;
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(status: u16, body: &[u8]) -> Result<Option<HttpResponse>, HttpError> {
        Ok(Some(HttpResponse {
            status,
            body: body.to_vec(),
        }))
    }

    #[test]
    fn request_head_and_body() {
        let bytes = encode_request("auth.example", 8080, "/auth?tier=dev", b"\x0a\x01v");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("POST /auth?tier=dev HTTP/1.1\r\nHost: auth.example:8080\r\n"));
        assert!(text.contains("\r\nContent-Type: application/octet-stream\r\n"));
        assert!(text.contains("\r\nContent-Length: 3\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(bytes.ends_with(b"\r\n\r\n\x0a\x01v"));
        let v6 = encode_request("::1", 80, "/", b"");
        assert!(String::from_utf8_lossy(&v6).contains("Host: [::1]:80\r\n"));
    }

    #[test]
    fn content_length_body_arrives_in_pieces() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd";
        for cut in 0..full.len() {
            assert_eq!(parse_response(&full[..cut], false), Ok(None), "cut {cut}");
        }
        assert_eq!(parse_response(full, false), ok(200, b"abcd"));
        assert_eq!(
            parse_response(&full[..full.len() - 1], true),
            Err(HttpError::Truncated {
                received: full.len() - 1
            })
        );
    }

    #[test]
    fn body_until_close_and_empty_bodies() {
        let raw = b"HTTP/1.0 200 OK\r\nServer: stub\r\n\r\nxyz";
        assert_eq!(parse_response(raw, false), Ok(None));
        assert_eq!(parse_response(raw, true), ok(200, b"xyz"));
        let empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_response(empty, false), ok(200, b""));
        let no_content = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(no_content, false), ok(204, b""));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(parse_response(&raw[..30], false), Ok(None));
        assert_eq!(parse_response(raw, false), ok(200, b"ok"));
        assert_eq!(
            parse_response(b"HTTP/1.1 100 Continue\r\n\r\n", true),
            Err(HttpError::Truncated { received: 25 })
        );
    }

    #[test]
    fn chunked_body() {
        let raw = b"HTTP/1.1 500 Internal\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for cut in 0..raw.len() {
            assert_eq!(parse_response(&raw[..cut], false), Ok(None), "cut {cut}");
        }
        assert_eq!(parse_response(raw, false), ok(500, b"abcde"));
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(parse_response(bad, false), Err(HttpError::BadChunk));
    }

    #[test]
    fn garbage_and_oversize_are_errors() {
        assert!(matches!(
            parse_response(b"\x08\x01garbage\r\n\r\n", false),
            Err(HttpError::Malformed(_))
        ));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            Err(HttpError::BadContentLength)
        );
        let big = vec![b'a'; MAX_RESPONSE + 1];
        assert_eq!(
            parse_response(&big, false),
            Err(HttpError::TooLarge {
                limit: MAX_RESPONSE
            })
        );
        assert_eq!(
            parse_response(b"", true),
            Err(HttpError::Truncated { received: 0 })
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512), closed: bool) {
                let _ = parse_response(&bytes, closed);
            }

            /// A response cut anywhere before its end is "read more", and
            /// whole it is the same response, however it is framed.
            #[test]
            fn any_prefix_asks_for_more(
                body in proptest::collection::vec(any::<u8>(), 0..300),
                chunked: bool,
                status in 200u16..600,
            ) {
                prop_assume!(status != 204 && status != 304);
                let mut raw = format!("HTTP/1.1 {status} X\r\n").into_bytes();
                if chunked {
                    raw.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    for part in body.chunks(7) {
                        raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                        raw.extend_from_slice(part);
                        raw.extend_from_slice(b"\r\n");
                    }
                    raw.extend_from_slice(b"0\r\n\r\n");
                } else {
                    raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                    raw.extend_from_slice(&body);
                }
                for cut in 0..raw.len() {
                    prop_assert_eq!(parse_response(&raw[..cut], false), Ok(None));
                }
                prop_assert_eq!(
                    parse_response(&raw, false),
                    Ok(Some(HttpResponse { status, body }))
                );
            }
        }
    }
}
