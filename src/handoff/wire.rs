//! The text of the takeover exchange, pure: the request lines a new process
//! sends over the old one's control socket, the marker bytes that carry the
//! listening sockets, and the description that follows them (which socket is
//! which listener, then the `CONFIG DUMP` text). Formatting and parsing
//! only; this module never touches a socket or a file descriptor (see
//! `super::fds` for that) and never decides what a listener is used for.
//!
//! The exchange, in order (see
//! docs/deployment.md#upgrading-without-refusing-connections):
//!
//! 1. new → old: [`REQUEST`] and a newline;
//! 2. old → new: one or more one-byte messages, [`BATCH_MORE`] or
//!    [`BATCH_LAST`], each carrying up to [`MAX_FDS_PER_BATCH`] listening
//!    sockets as `SCM_RIGHTS`; the last is [`BATCH_LAST`];
//! 3. old → new: the description ([`Handoff::to_text`]), then the old
//!    process closes the connection;
//! 4. once serving, new → old on a fresh control connection: [`RELEASE`].
//!
//! The sockets travel before any text so the receiver reads them one byte
//! at a time with `recvmsg` and can never swallow a socket with an ordinary
//! read. A process that does not know [`REQUEST`] answers with text, whose
//! first byte is neither marker: the receiver reports that answer.

use crate::tls::ingress::ListenerKind;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// The line a new process sends to ask for the listening sockets and the
/// configuration.
pub const REQUEST: &str = "UPGRADE HANDOFF";

/// The line a new process sends once it serves on the sockets: the old one
/// stops accepting (without cancelling an accept in flight) and drains.
pub const RELEASE: &str = "UPGRADE RELEASE";

/// The first line of the description; the number is the format's version.
pub const HEADER: &str = "AMQPPROX HANDOFF 1";

/// Marker byte of a socket batch that more batches follow.
pub const BATCH_MORE: u8 = b'+';

/// Marker byte of the last socket batch (also sent alone, without sockets,
/// when there is no listener).
pub const BATCH_LAST: u8 = b'.';

/// Sockets per message: well below the kernel's `SCM_MAX_FD` (253), so the
/// receiver's control buffer is small and fixed.
pub const MAX_FDS_PER_BATCH: usize = 64;

/// One handed-over listening socket, described. The socket itself is the
/// `fd`-th one received, counting from zero across batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandedListener {
    /// The address the old process bound (`[::]:port` for a bare port).
    pub addr: SocketAddr,
    /// What the listener does before the AMQP handshake.
    pub kind: ListenerKind,
    /// The old process's shard that accepted on it: every shard has its own
    /// SO_REUSEPORT socket per port, so a port comes as several sockets.
    pub shard: usize,
}

/// Everything the old process hands over besides the sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    /// In the order the sockets are sent.
    pub listeners: Vec<HandedListener>,
    /// The old process's `CONFIG DUMP` text, replayed by the new one.
    pub config: String,
}

/// Why a description could not be read. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptionError {
    #[error("the handoff description does not start with '{HEADER}' (it starts with '{found}')")]
    Header { found: String },
    #[error("handoff description line {line}: expected {expected}, found '{found}'")]
    Unexpected {
        line: usize,
        expected: &'static str,
        found: String,
    },
    #[error("handoff description line {line}: listener fd={found} where fd={expected} belongs")]
    FdOrder {
        line: usize,
        expected: usize,
        found: usize,
    },
    #[error("handoff description line {line}: unknown listener kind '{kind}'")]
    Kind { line: usize, kind: String },
    #[error("handoff description: CONFIG announces {declared} bytes but {available} follow")]
    ConfigLength { declared: usize, available: usize },
    #[error("handoff description: {found} listener lines where LISTENERS announced {declared}")]
    ListenerCount { declared: usize, found: usize },
    #[error("handoff description ends before its END line (truncated)")]
    Truncated,
}

/// The kind as the description spells it.
pub fn kind_name(kind: ListenerKind) -> &'static str {
    match (kind.tls, kind.proxy) {
        (false, false) => "plain",
        (true, false) => "tls",
        (false, true) => "proxy",
        (true, true) => "tls+proxy",
    }
}

/// The kind named by [`kind_name`].
pub fn parse_kind(name: &str) -> Option<ListenerKind> {
    let (tls, proxy) = match name {
        "plain" => (false, false),
        "tls" => (true, false),
        "proxy" => (false, true),
        "tls+proxy" => (true, true),
        _ => return None,
    };
    Some(ListenerKind { tls, proxy })
}

impl Handoff {
    /// The description as sent after the sockets:
    ///
    /// ```text
    /// AMQPPROX HANDOFF 1
    /// LISTENERS 2
    /// LISTENER fd=0 addr=[::]:5672 kind=plain shard=0
    /// LISTENER fd=1 addr=[::]:5672 kind=plain shard=1
    /// CONFIG 18
    /// LISTEN START 5672
    /// END
    /// ```
    ///
    /// `CONFIG` counts the bytes of the dump that follow its line, so the
    /// dump may hold any text; `END` shows the description arrived whole.
    pub fn to_text(&self) -> String {
        let mut text = String::with_capacity(64 * (self.listeners.len() + 2) + self.config.len());
        // Writing into a String cannot fail.
        let _ = writeln!(text, "{HEADER}");
        let _ = writeln!(text, "LISTENERS {}", self.listeners.len());
        for (fd, l) in self.listeners.iter().enumerate() {
            let _ = writeln!(
                text,
                "LISTENER fd={fd} addr={} kind={} shard={}",
                l.addr,
                kind_name(l.kind),
                l.shard
            );
        }
        let _ = writeln!(text, "CONFIG {}", self.config.len());
        text.push_str(&self.config);
        text.push_str("END\n");
        text
    }

    /// Reads a description made by [`Handoff::to_text`]. Strict: any
    /// deviation is an error, since a half-understood handover would serve
    /// clients on the wrong listener.
    pub fn parse(text: &str) -> Result<Handoff, DescriptionError> {
        let mut cursor = Cursor {
            text,
            pos: 0,
            line: 0,
        };
        let header = cursor.line().ok_or(DescriptionError::Truncated)?;
        if header != HEADER {
            return Err(DescriptionError::Header {
                found: header.chars().take(80).collect(),
            });
        }
        let declared = cursor.counted("LISTENERS ", "LISTENERS <count>")?;
        let mut listeners = Vec::with_capacity(declared.min(4096));
        loop {
            let line_no = cursor.line + 1;
            let line = cursor.line().ok_or(DescriptionError::Truncated)?;
            if let Some(rest) = line.strip_prefix("LISTENER ") {
                listeners.push(parse_listener(rest, line_no, listeners.len())?);
                continue;
            }
            if listeners.len() != declared {
                return Err(DescriptionError::ListenerCount {
                    declared,
                    found: listeners.len(),
                });
            }
            let Some(length) = line.strip_prefix("CONFIG ").and_then(|n| n.parse().ok()) else {
                return Err(unexpected(line_no, "LISTENER ... or CONFIG <bytes>", line));
            };
            let config = cursor.take(length)?;
            let line_no = cursor.line + 1;
            return match cursor.line() {
                Some("END") if cursor.rest().is_empty() => Ok(Handoff {
                    listeners,
                    config: config.to_string(),
                }),
                Some(other) => Err(unexpected(line_no, "END as the last line", other)),
                None => Err(DescriptionError::Truncated),
            };
        }
    }
}

/// `fd=N addr=A kind=K shard=S`, exactly in that order.
fn parse_listener(
    rest: &str,
    line: usize,
    expected_fd: usize,
) -> Result<HandedListener, DescriptionError> {
    const SHAPE: &str = "LISTENER fd=<n> addr=<address> kind=<kind> shard=<n>";
    let mut fields = rest.split(' ');
    let mut field = |key: &str| {
        fields
            .next()
            .and_then(|f| f.strip_prefix(key))
            .ok_or_else(|| unexpected(line, SHAPE, rest))
    };
    let fd: usize = field("fd=")?
        .parse()
        .map_err(|_| unexpected(line, SHAPE, rest))?;
    let addr: SocketAddr = field("addr=")?
        .parse()
        .map_err(|_| unexpected(line, SHAPE, rest))?;
    let kind_text = field("kind=")?;
    let kind = parse_kind(kind_text).ok_or_else(|| DescriptionError::Kind {
        line,
        kind: kind_text.to_string(),
    })?;
    let shard: usize = field("shard=")?
        .parse()
        .map_err(|_| unexpected(line, SHAPE, rest))?;
    if fields.next().is_some() {
        return Err(unexpected(line, SHAPE, rest));
    }
    if fd != expected_fd {
        return Err(DescriptionError::FdOrder {
            line,
            expected: expected_fd,
            found: fd,
        });
    }
    Ok(HandedListener { addr, kind, shard })
}

fn unexpected(line: usize, expected: &'static str, found: &str) -> DescriptionError {
    DescriptionError::Unexpected {
        line,
        expected,
        found: found.chars().take(120).collect(),
    }
}

/// Walks the description line by line, or by a byte count for the dump.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
    /// Lines consumed so far.
    line: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    /// The next newline-terminated line, without its newline; `None` when
    /// no complete line is left.
    fn line(&mut self) -> Option<&'a str> {
        let rest = self.rest();
        let end = rest.find('\n')?;
        self.pos += end + 1;
        self.line += 1;
        Some(&rest[..end])
    }

    /// A line `<prefix><number>`.
    fn counted(&mut self, prefix: &str, expected: &'static str) -> Result<usize, DescriptionError> {
        let line_no = self.line + 1;
        let line = self.line().ok_or(DescriptionError::Truncated)?;
        line.strip_prefix(prefix)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| unexpected(line_no, expected, line))
    }

    /// The next `length` bytes, which must end on a character boundary.
    fn take(&mut self, length: usize) -> Result<&'a str, DescriptionError> {
        let rest = self.rest();
        let taken = rest.get(..length).ok_or(DescriptionError::ConfigLength {
            declared: length,
            available: rest.len(),
        })?;
        self.pos += length;
        self.line += taken.matches('\n').count();
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Handoff {
        Handoff {
            listeners: vec![
                HandedListener {
                    addr: "[::]:5672".parse().unwrap(),
                    kind: ListenerKind::default(),
                    shard: 0,
                },
                HandedListener {
                    addr: "10.1.2.3:5671".parse().unwrap(),
                    kind: ListenerKind {
                        tls: true,
                        proxy: true,
                    },
                    shard: 1,
                },
            ],
            config: "VHOST PAUSE /\nLISTEN START 5672\n".into(),
        }
    }

    #[test]
    fn the_description_reads_as_documented() {
        assert_eq!(
            sample().to_text(),
            "AMQPPROX HANDOFF 1\n\
             LISTENERS 2\n\
             LISTENER fd=0 addr=[::]:5672 kind=plain shard=0\n\
             LISTENER fd=1 addr=10.1.2.3:5671 kind=tls+proxy shard=1\n\
             CONFIG 32\n\
             VHOST PAUSE /\nLISTEN START 5672\n\
             END\n"
        );
    }

    #[test]
    fn the_example_in_the_deployment_page_parses() {
        // The page indents the block inside a numbered list item.
        let page = include_str!("../../docs/deployment.md");
        let start = page.find(HEADER).expect("the page shows a description");
        let block = &page[start..];
        let block = block[..block.find("```").expect("the block ends")].trim_end();
        let text: String = block
            .lines()
            .map(|l| l.trim_start().to_string() + "\n")
            .collect();
        let handoff = Handoff::parse(&text).expect("the documented example is valid");
        assert_eq!(handoff.listeners.len(), 2);
        assert_eq!(handoff.config, "LISTEN START 5672\n");
    }

    #[test]
    fn a_description_parses_back() {
        assert_eq!(Handoff::parse(&sample().to_text()), Ok(sample()));
    }

    #[test]
    fn no_listeners_and_an_empty_configuration_parse() {
        let empty = Handoff {
            listeners: vec![],
            config: String::new(),
        };
        assert_eq!(Handoff::parse(&empty.to_text()), Ok(empty));
    }

    #[test]
    fn every_kind_has_a_name_that_parses_back() {
        for tls in [false, true] {
            for proxy in [false, true] {
                let kind = ListenerKind { tls, proxy };
                assert_eq!(parse_kind(kind_name(kind)), Some(kind));
            }
        }
        assert_eq!(parse_kind("TLS"), None);
    }

    #[test]
    fn an_answer_that_is_not_a_description_is_refused_with_its_text() {
        assert_eq!(
            Handoff::parse("Unknown command.\n"),
            Err(DescriptionError::Header {
                found: "Unknown command.".into()
            })
        );
    }

    #[test]
    fn every_cut_of_a_description_is_refused() {
        let text = sample().to_text();
        for end in 0..text.len() {
            assert!(
                Handoff::parse(&text[..end]).is_err(),
                "a description cut at byte {end} was accepted"
            );
        }
    }

    #[test]
    fn trailing_bytes_after_end_are_refused() {
        let text = sample().to_text() + "x";
        assert!(matches!(
            Handoff::parse(&text),
            Err(DescriptionError::Unexpected { line: 8, .. })
        ));
    }

    #[test]
    fn listeners_out_of_order_are_refused() {
        let text = sample().to_text().replace("fd=1", "fd=2");
        assert_eq!(
            Handoff::parse(&text),
            Err(DescriptionError::FdOrder {
                line: 4,
                expected: 1,
                found: 2
            })
        );
    }

    #[test]
    fn a_listener_count_that_disagrees_is_refused() {
        let text = sample().to_text().replace("LISTENERS 2", "LISTENERS 3");
        assert_eq!(
            Handoff::parse(&text),
            Err(DescriptionError::ListenerCount {
                declared: 3,
                found: 2
            })
        );
    }

    #[test]
    fn an_unknown_kind_is_named() {
        let text = sample().to_text().replace("kind=plain", "kind=quic");
        assert_eq!(
            Handoff::parse(&text),
            Err(DescriptionError::Kind {
                line: 3,
                kind: "quic".into()
            })
        );
    }

    #[test]
    fn a_listener_line_with_an_extra_field_is_refused() {
        let text = sample().to_text().replace("shard=0", "shard=0 extra=1");
        assert!(matches!(
            Handoff::parse(&text),
            Err(DescriptionError::Unexpected { line: 3, .. })
        ));
    }

    #[test]
    fn a_config_length_past_the_end_is_refused() {
        let text = sample().to_text().replace("CONFIG 32", "CONFIG 300");
        assert!(matches!(
            Handoff::parse(&text),
            Err(DescriptionError::ConfigLength { declared: 300, .. })
        ));
    }

    #[test]
    fn a_config_length_inside_a_character_is_refused() {
        let handoff = Handoff {
            listeners: vec![],
            config: "BACKEND ADD é\n".into(),
        };
        let text = handoff.to_text().replace("CONFIG 15", "CONFIG 13");
        assert!(Handoff::parse(&text).is_err());
    }

    fn any_listener() -> impl Strategy<Value = HandedListener> {
        (
            any::<std::net::IpAddr>(),
            1u16..,
            any::<bool>(),
            any::<bool>(),
            0usize..512,
        )
            .prop_map(|(ip, port, tls, proxy, shard)| HandedListener {
                addr: SocketAddr::new(ip, port),
                kind: ListenerKind { tls, proxy },
                shard,
            })
    }

    proptest! {
        #[test]
        fn any_description_round_trips(
            listeners in proptest::collection::vec(any_listener(), 0..40),
            config in "(?s).*",
        ) {
            let handoff = Handoff { listeners, config };
            prop_assert_eq!(Handoff::parse(&handoff.to_text()), Ok(handoff));
        }
    }
}
