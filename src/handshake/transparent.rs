//! Transparent handshake: when the route does not depend on the vhost, the
//! broker is known before the client says anything, so the broker answers
//! the client itself (issue "transparent handshake").
//!
//! The broker's `Start`, `Secure`, `Tune`, `OpenOk` and `Close` reach the
//! client unchanged; the client's `StartOk` gains `amqpprox_client` and
//! `amqpprox_host` (its own properties untouched, in order), and its
//! `SecureOk`, `TuneOk` and `Open` pass unchanged. The client's `Open` is
//! held until the driver releases it, so a paused vhost still holds the
//! session at `Open`. Heartbeats pass through. Sans-I/O: no sockets, no
//! clock.

use super::client::{ClientHandshakeError, ClientHello};
use super::{HangUp, HANDSHAKE_MAX_FRAME};
use crate::codec::{
    decode_frame, method_id, method_ids, method_name, put_longstr_entry, start_ok_with_entries,
    Close, ConnectionMethod, Frame, Open, StartOkRef, Tune, CONNECTION_CLASS, FRAME_HEARTBEAT,
    FRAME_METHOD,
};
use std::borrow::Cow;

/// Who the handshake waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Broker,
}

/// Where the handshake stands after a read.
#[derive(Debug, Clone, PartialEq)]
pub enum TransparentProgress {
    /// Read more from [`TransparentHandshake::waiting_for`].
    NeedMore,
    /// The client sent `Open` for this vhost; it is held until
    /// [`TransparentHandshake::release_open`].
    OpenReceived { vhost: String },
    /// The broker sent `OpenOk`; it (and what followed) is in the client
    /// output. Pass-through starts.
    Open,
    /// The broker refused; its `Close` is in the client output, unchanged.
    BrokerClosed(Close),
    /// The client closed; its `Close` is in the broker output.
    ClientClosed,
}

/// Why the handshake failed. Client-side errors carry the `Close` the
/// client gets; broker-side ones are reported to the client as 541.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransparentError {
    #[error("client: {0}")]
    Client(#[from] ClientHandshakeError),
    #[error("broker sent {received} while {expected} was expected")]
    Broker {
        expected: &'static str,
        received: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    StartOk,
    SecureOrTune,
    SecureOk,
    TuneOk,
    Open,
    OpenHeld,
    OpenOk,
    Done,
}

impl State {
    fn side(self) -> Side {
        match self {
            State::Start | State::SecureOrTune | State::OpenOk | State::OpenHeld | State::Done => {
                Side::Broker
            }
            State::StartOk | State::SecureOk | State::TuneOk | State::Open => Side::Client,
        }
    }

    fn expected(self) -> &'static str {
        match self {
            State::Start => "connection.start",
            State::StartOk => "connection.start-ok",
            State::SecureOrTune => "connection.secure or connection.tune",
            State::SecureOk => "connection.secure-ok",
            State::TuneOk => "connection.tune-ok",
            State::Open | State::OpenHeld => "connection.open",
            State::OpenOk | State::Done => "connection.open-ok",
        }
    }
}

/// The transparent handshake of one session.
#[derive(Debug)]
pub struct TransparentHandshake {
    state: State,
    client_in: Vec<u8>,
    broker_in: Vec<u8>,
    /// The proxy's client properties, encoded as table entries.
    additions: Vec<u8>,
    /// The client's own `StartOk` payload (empty until it arrives): checked
    /// but not decoded, since only a replay after a pause needs it decoded.
    start_ok: Vec<u8>,
    tune_ok: Option<Tune>,
    open: Option<Open>,
    held_open: Vec<u8>,
}

/// A frame is part of the connection handshake when it is a class-10
/// method on channel 0: its method id then, else `None`.
fn connection_method_id(frame: &Frame<'_>) -> Option<u16> {
    if frame.frame_type != FRAME_METHOD || frame.channel != 0 {
        return None;
    }
    match method_ids(frame.payload) {
        Some((CONNECTION_CLASS, method)) => Some(method),
        _ => None,
    }
}

impl TransparentHandshake {
    /// A handshake that will add `additions` (names and long-string values)
    /// to the client's properties. The caller sends the client's protocol
    /// header to the broker.
    pub fn new(additions: &[(&str, &str)]) -> Self {
        // A key's and a value's length prefixes and the type tag: 6 bytes.
        let size = additions.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
        let mut encoded = Vec::with_capacity(size);
        for (key, value) in additions {
            put_longstr_entry(&mut encoded, key, value.as_bytes());
        }
        TransparentHandshake {
            state: State::Start,
            client_in: Vec::new(),
            broker_in: Vec::new(),
            additions: encoded,
            start_ok: Vec::new(),
            tune_ok: None,
            open: None,
            held_open: Vec::new(),
        }
    }

    /// What the broker closing its socket now most likely means: after the
    /// client's `StartOk` or `SecureOk` went to it (waiting for `Secure` or
    /// `Tune`) it is a probable refused login.
    pub fn hang_up(&self) -> HangUp {
        match self.state {
            State::SecureOrTune => HangUp::AfterLogin,
            state => HangUp::Before {
                expected: state.expected(),
            },
        }
    }

    /// Which side to read from next.
    pub fn waiting_for(&self) -> Side {
        self.state.side()
    }

    /// What the client said, for a replay to another broker after a pause:
    /// its own `StartOk` (without the proxy's additions), `TuneOk`, `Open`
    /// and what followed the `Open`. `None` before the `Open`.
    pub fn take_hello(&mut self) -> Option<ClientHello> {
        let start_ok = match ConnectionMethod::decode(&self.start_ok) {
            Ok(ConnectionMethod::StartOk(start_ok)) => start_ok,
            _ => return None,
        };
        Some(ClientHello {
            start_ok,
            tune_ok: self.tune_ok?,
            open: self.open.take()?,
            pipelined: std::mem::take(&mut self.client_in),
            legacy_header: false,
        })
    }

    /// The `TuneOk` the client agreed with the broker.
    pub fn tune_ok(&self) -> Option<Tune> {
        self.tune_ok
    }

    /// The client's `connection_name` property, or "" (for the log line
    /// operators grep for).
    pub fn connection_name(&self) -> Cow<'_, str> {
        StartOkRef::of_checked(&self.start_ok)
            .and_then(|s| s.longstr_property("connection_name"))
            .map_or(Cow::Borrowed(""), String::from_utf8_lossy)
    }

    /// Forwards the held `Open` and anything the client sent after it.
    pub fn release_open(&mut self, to_broker: &mut Vec<u8>) {
        to_broker.append(&mut self.held_open);
        to_broker.append(&mut self.client_in);
        self.state = State::OpenOk;
    }

    /// Feeds bytes read from `side`; appends what goes to each peer.
    pub fn receive(
        &mut self,
        side: Side,
        data: &[u8],
        to_client: &mut Vec<u8>,
        to_broker: &mut Vec<u8>,
    ) -> Result<TransparentProgress, TransparentError> {
        // Each handshake step usually arrives whole, so frames are read
        // straight from `data` and only what is left (an unfinished frame,
        // or what the client sent behind its Open) is kept; bytes kept from
        // an earlier read come first.
        let mut kept = std::mem::take(self.kept(side));
        let from_kept = !kept.is_empty();
        if from_kept {
            kept.extend_from_slice(data);
        }
        let input: &[u8] = if from_kept { &kept } else { data };
        let (progress, consumed) = match side {
            Side::Client => self.on_client_bytes(input, to_broker)?,
            Side::Broker => self.on_broker_bytes(input, to_client)?,
        };
        if from_kept {
            kept.drain(..consumed);
        } else {
            kept.extend_from_slice(&data[consumed..]);
        }
        *self.kept(side) = kept;
        Ok(progress)
    }

    /// What is kept of `side`'s bytes for its next read.
    fn kept(&mut self, side: Side) -> &mut Vec<u8> {
        match side {
            Side::Client => &mut self.client_in,
            Side::Broker => &mut self.broker_in,
        }
    }

    /// Reads the client's frames from `input`: the progress, and how many
    /// bytes of it were used (the rest is kept for later).
    fn on_client_bytes(
        &mut self,
        input: &[u8],
        to_broker: &mut Vec<u8>,
    ) -> Result<(TransparentProgress, usize), TransparentError> {
        let mut consumed = 0;
        let progress = loop {
            if self.state.side() != Side::Client {
                break TransparentProgress::NeedMore;
            }
            let (frame, used) = match decode_frame(&input[consumed..], HANDSHAKE_MAX_FRAME) {
                Ok(Some(f)) => f,
                Ok(None) => break TransparentProgress::NeedMore,
                Err(e) => return Err(ClientHandshakeError::Frame(e).into()),
            };
            let raw = &input[consumed..consumed + used];
            consumed += used;
            let expected = self.state.expected();
            if frame.frame_type == FRAME_HEARTBEAT {
                to_broker.extend_from_slice(raw);
                continue;
            }
            let Some(id) = connection_method_id(&frame) else {
                return Err(ClientHandshakeError::UnexpectedFrame {
                    expected,
                    frame_type: frame.frame_type,
                    channel: frame.channel,
                }
                .into());
            };
            let undecodable = |error| ClientHandshakeError::UndecodableMethod {
                expected_context: expected,
                error,
            };
            if id == method_id::START_OK {
                // Checked, not decoded: its bytes go on as they came, with
                // the additions spliced in, and only a replay after a pause
                // needs the decoded method.
                let start_ok = StartOkRef::check(frame.payload).map_err(undecodable)?;
                if self.state != State::StartOk {
                    return Err(ClientHandshakeError::UnexpectedMethod {
                        expected,
                        received: "connection.start-ok",
                    }
                    .into());
                }
                start_ok_with_entries(raw, &self.additions, to_broker)
                    .expect("a checked StartOk is a whole frame");
                self.start_ok = start_ok.payload().to_vec();
                self.state = State::SecureOrTune;
                continue;
            }
            let method = ConnectionMethod::decode(frame.payload).map_err(undecodable)?;
            match (self.state, method) {
                (_, ConnectionMethod::Close(_)) => {
                    to_broker.extend_from_slice(raw);
                    self.state = State::Done;
                    break TransparentProgress::ClientClosed;
                }
                (State::SecureOk, ConnectionMethod::SecureOk { .. }) => {
                    to_broker.extend_from_slice(raw);
                    self.state = State::SecureOrTune;
                }
                (State::TuneOk, ConnectionMethod::TuneOk(tune_ok)) => {
                    to_broker.extend_from_slice(raw);
                    self.tune_ok = Some(tune_ok);
                    self.state = State::Open;
                }
                (State::Open, ConnectionMethod::Open(open)) => {
                    // What follows the Open stays unread (kept) until the
                    // Open is released.
                    self.held_open = raw.to_vec();
                    self.state = State::OpenHeld;
                    let vhost = open.vhost.clone();
                    self.open = Some(open);
                    break TransparentProgress::OpenReceived { vhost };
                }
                (_, other) => {
                    return Err(ClientHandshakeError::UnexpectedMethod {
                        expected,
                        received: other.name(),
                    }
                    .into())
                }
            }
        };
        Ok((progress, consumed))
    }

    /// Reads the broker's frames from `input`: the progress, and how many
    /// bytes of it were used.
    fn on_broker_bytes(
        &mut self,
        input: &[u8],
        to_client: &mut Vec<u8>,
    ) -> Result<(TransparentProgress, usize), TransparentError> {
        let mut consumed = 0;
        let progress = loop {
            let (frame, used) = match decode_frame(&input[consumed..], HANDSHAKE_MAX_FRAME) {
                Ok(Some(f)) => f,
                Ok(None) => break TransparentProgress::NeedMore,
                Err(e) => {
                    return Err(TransparentError::Broker {
                        expected: self.state.expected(),
                        received: format!("a bad frame ({e})"),
                    })
                }
            };
            let start = consumed;
            let raw = &input[start..start + used];
            consumed += used;
            let expected = self.state.expected();
            // What the broker says reaches the client unchanged, so only its
            // method id is read; a Close alone is decoded, for its code and
            // text. (Decoding RabbitMQ's Start would build a table of
            // thirty-odd entries per session, only to drop it.)
            let Some(method) = connection_method_id(&frame) else {
                // Heartbeats (and anything a broker sends outside the
                // handshake) reach the client as they are.
                to_client.extend_from_slice(raw);
                continue;
            };
            match (self.state, method) {
                (_, method_id::CLOSE) => {
                    let close = match ConnectionMethod::decode(frame.payload) {
                        Ok(ConnectionMethod::Close(close)) => close,
                        Ok(_) => unreachable!("method id checked above"),
                        Err(e) => {
                            return Err(TransparentError::Broker {
                                expected,
                                received: format!("an undecodable method ({e})"),
                            })
                        }
                    };
                    to_client.extend_from_slice(raw);
                    self.state = State::Done;
                    break TransparentProgress::BrokerClosed(close);
                }
                (State::Start, method_id::START) => {
                    to_client.extend_from_slice(raw);
                    self.state = State::StartOk;
                }
                (State::SecureOrTune, method_id::SECURE) => {
                    to_client.extend_from_slice(raw);
                    self.state = State::SecureOk;
                }
                (State::SecureOrTune, method_id::TUNE) => {
                    to_client.extend_from_slice(raw);
                    self.state = State::TuneOk;
                }
                (State::OpenOk, method_id::OPEN_OK) => {
                    // The OpenOk and whatever came behind it: pass-through
                    // takes over from here.
                    to_client.extend_from_slice(&input[start..]);
                    self.state = State::Done;
                    return Ok((TransparentProgress::Open, input.len()));
                }
                (_, other) => {
                    return Err(TransparentError::Broker {
                        expected,
                        received: method_name(other)
                            .map_or_else(|| format!("connection method {other}"), str::to_string),
                    })
                }
            }
        };
        Ok((progress, consumed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_frame, str_field, FieldTable, Start, StartOk};
    use crate::handshake::frame_of;

    fn broker_start() -> Vec<u8> {
        let mut props = FieldTable::new();
        props.push("product", str_field("RabbitMQ"));
        frame_of(ConnectionMethod::Start(Start {
            version_major: 0,
            version_minor: 9,
            server_properties: props,
            mechanisms: b"PLAIN AMQPLAIN".to_vec(),
            locales: b"en_US".to_vec(),
        }))
    }

    fn client_start_ok() -> Vec<u8> {
        let mut props = FieldTable::new();
        props.push("product", str_field("client"));
        frame_of(ConnectionMethod::StartOk(StartOk {
            client_properties: props,
            mechanism: b"PLAIN".to_vec(),
            response: b"\0guest\0guest".to_vec(),
            locale: b"en_US".to_vec(),
        }))
    }

    /// A handshake that has relayed the broker's Start and the client's
    /// StartOk, with both outputs.
    fn past_start_ok() -> (TransparentHandshake, Vec<u8>, Vec<u8>) {
        let mut hs = TransparentHandshake::new(&[]);
        let (mut to_client, mut to_broker) = (Vec::new(), Vec::new());
        hs.receive(
            Side::Broker,
            &broker_start(),
            &mut to_client,
            &mut to_broker,
        )
        .unwrap();
        hs.receive(
            Side::Client,
            &client_start_ok(),
            &mut to_client,
            &mut to_broker,
        )
        .unwrap();
        (hs, to_client, to_broker)
    }

    #[test]
    fn hang_up_is_a_probable_refused_login_only_after_the_start_ok() {
        let fresh = TransparentHandshake::new(&[]);
        assert_eq!(
            fresh.hang_up(),
            HangUp::Before {
                expected: "connection.start"
            }
        );
        let (hs, _, _) = past_start_ok();
        assert_eq!(hs.hang_up(), HangUp::AfterLogin);
        let (hs, _, _) = up_to_open();
        assert!(!hs.hang_up().is_probable_refused_login());
    }

    const BROKER_TUNE: Tune = Tune {
        channel_max: 4000,
        frame_max: 262_144,
        heartbeat: 30,
    };

    /// Runs the handshake up to the held Open; returns it with both outputs.
    fn up_to_open() -> (TransparentHandshake, Vec<u8>, Vec<u8>) {
        let mut hs = TransparentHandshake::new(&[("amqpprox_client", "127.0.0.1:1")]);
        let (mut to_client, mut to_broker) = (Vec::new(), Vec::new());
        assert_eq!(hs.waiting_for(), Side::Broker);
        hs.receive(
            Side::Broker,
            &broker_start(),
            &mut to_client,
            &mut to_broker,
        )
        .unwrap();
        assert_eq!(
            to_client,
            broker_start(),
            "the broker's Start reaches the client unchanged"
        );
        assert_eq!(hs.waiting_for(), Side::Client);
        hs.receive(
            Side::Client,
            &client_start_ok(),
            &mut to_client,
            &mut to_broker,
        )
        .unwrap();
        let (frame, _) = decode_frame(&to_broker, HANDSHAKE_MAX_FRAME)
            .unwrap()
            .unwrap();
        let ConnectionMethod::StartOk(sent) = ConnectionMethod::decode(frame.payload).unwrap()
        else {
            panic!()
        };
        assert_eq!(sent.client_properties.0.len(), 2);
        assert_eq!(sent.client_properties.0[1].0, b"amqpprox_client");
        to_client.clear();
        to_broker.clear();
        let tune = frame_of(ConnectionMethod::Tune(BROKER_TUNE));
        hs.receive(Side::Broker, &tune, &mut to_client, &mut to_broker)
            .unwrap();
        assert_eq!(
            to_client, tune,
            "the broker's Tune reaches the client unchanged"
        );
        let mut bytes = frame_of(ConnectionMethod::TuneOk(BROKER_TUNE));
        bytes.extend(frame_of(ConnectionMethod::Open(Open {
            vhost: "prod".into(),
            capabilities: Vec::new(),
            insist: true,
        })));
        bytes.extend_from_slice(&[1, 0, 1, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xCE]);
        to_client.clear();
        let progress = hs
            .receive(Side::Client, &bytes, &mut to_client, &mut to_broker)
            .unwrap();
        assert_eq!(
            progress,
            TransparentProgress::OpenReceived {
                vhost: "prod".into()
            }
        );
        assert_eq!(
            to_broker,
            frame_of(ConnectionMethod::TuneOk(BROKER_TUNE)),
            "Open is held"
        );
        assert_eq!(hs.tune_ok(), Some(BROKER_TUNE));
        (hs, to_client, bytes)
    }

    /// Plays a whole handshake (with a heartbeat from each side and a
    /// ChannelOpen behind the client's Open and the broker's OpenOk) as
    /// the relay does: each read takes up to `chunk` bytes of what the side
    /// the handshake waits for has sent so far (a step: what a peer sends
    /// before it waits for an answer); once open, the rest passes through.
    /// Returns what reached each peer and the progress seen.
    fn relayed_in_chunks(chunk: usize) -> (Vec<u8>, Vec<u8>, Vec<TransparentProgress>) {
        let heartbeat = [FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, 0xCE];
        let channel_open = [1, 0, 1, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xCE];
        let open = frame_of(ConnectionMethod::Open(Open {
            vhost: "prod".into(),
            capabilities: Vec::new(),
            insist: true,
        }));
        let open_ok = frame_of(ConnectionMethod::OpenOk {
            known_hosts: Vec::new(),
        });
        let broker_steps = [
            [&broker_start()[..], &heartbeat].concat(),
            frame_of(ConnectionMethod::Tune(BROKER_TUNE)),
            [&open_ok[..], &channel_open].concat(),
        ];
        let client_steps = [
            [&heartbeat[..], &client_start_ok()].concat(),
            [
                &frame_of(ConnectionMethod::TuneOk(BROKER_TUNE))[..],
                &open,
                &channel_open,
            ]
            .concat(),
        ];

        let mut hs = TransparentHandshake::new(&[("amqpprox_client", "127.0.0.1:1")]);
        let (mut to_client, mut to_broker) = (Vec::new(), Vec::new());
        let mut seen = Vec::new();
        // Per side: the step being read, and how far.
        let (mut client_at, mut broker_at) = ((0, 0), (0, 0));
        while hs.state != State::Done {
            let side = hs.waiting_for();
            let (steps, (step, at)) = match side {
                Side::Client => (&client_steps[..], &mut client_at),
                Side::Broker => (&broker_steps[..], &mut broker_at),
            };
            if *at == steps[*step].len() {
                (*step, *at) = (*step + 1, 0);
            }
            let sent = steps
                .get(*step)
                .expect("the handshake waits for more than was sent");
            let read = &sent[*at..sent.len().min(at.saturating_add(chunk))];
            *at += read.len();
            let progress = hs
                .receive(side, read, &mut to_client, &mut to_broker)
                .unwrap();
            if let TransparentProgress::OpenReceived { .. } = progress {
                hs.release_open(&mut to_broker);
            }
            if progress != TransparentProgress::NeedMore {
                seen.push(progress);
            }
        }
        let rest =
            |steps: &[Vec<u8>], (step, at): (usize, usize)| steps[step..].concat()[at..].to_vec();
        to_broker.extend(rest(&client_steps, client_at));
        to_client.extend(rest(&broker_steps, broker_at));
        (to_client, to_broker, seen)
    }

    #[test]
    fn a_handshake_cut_into_any_reads_relays_the_same_bytes() {
        let whole = relayed_in_chunks(usize::MAX);
        assert_eq!(
            whole.2,
            vec![
                TransparentProgress::OpenReceived {
                    vhost: "prod".into()
                },
                TransparentProgress::Open
            ]
        );
        // The client's ChannelOpen behind its Open reaches the broker after
        // the Open; the broker's behind its OpenOk reaches the client.
        assert!(whole
            .1
            .ends_with(&[1, 0, 1, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xCE]));
        assert!(whole
            .0
            .ends_with(&[1, 0, 1, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xCE]));
        for chunk in [1, 2, 3, 7, 8, 13, 64] {
            assert_eq!(relayed_in_chunks(chunk), whole, "{chunk}-byte reads");
        }
    }

    #[test]
    fn the_kept_start_ok_is_the_clients_own_without_the_additions() {
        let (mut hs, _, _) = up_to_open();
        let hello = hs.take_hello().expect("past Open");
        let props = &hello.start_ok.client_properties;
        assert_eq!(props.len(), 1, "only the client's own property: {props:?}");
        assert_eq!(props.0[0].0, b"product");
    }

    #[test]
    fn relays_the_broker_and_holds_open_until_released() {
        let (mut hs, _, client_bytes) = up_to_open();
        let mut to_broker = Vec::new();
        hs.release_open(&mut to_broker);
        let tune_ok_len = frame_of(ConnectionMethod::TuneOk(BROKER_TUNE)).len();
        assert_eq!(
            to_broker,
            client_bytes[tune_ok_len..],
            "Open and the pipelined frame, unchanged"
        );
        let mut open_ok = frame_of(ConnectionMethod::OpenOk {
            known_hosts: Vec::new(),
        });
        open_ok.extend_from_slice(&crate::codec::HEARTBEAT_FRAME);
        let mut to_client = Vec::new();
        let p = hs
            .receive(Side::Broker, &open_ok, &mut to_client, &mut Vec::new())
            .unwrap();
        assert_eq!(p, TransparentProgress::Open);
        assert_eq!(to_client, open_ok);
    }

    #[test]
    fn broker_close_after_start_ok_goes_to_the_client_unchanged() {
        let (mut hs, mut to_client, mut to_broker) = past_start_ok();
        to_client.clear();
        let mut refusal = Close::new(403, "ACCESS_REFUSED - Login was refused");
        refusal.class_id = 10;
        refusal.method_id = 11;
        let close = frame_of(ConnectionMethod::Close(refusal.clone()));
        let p = hs
            .receive(Side::Broker, &close, &mut to_client, &mut to_broker)
            .unwrap();
        assert_eq!(p, TransparentProgress::BrokerClosed(refusal));
        assert_eq!(to_client, close);
    }

    /// A `Connection.Start` whose server-properties table holds a field
    /// type this codec does not know ('?'): a client may, so it is not the
    /// proxy's to judge.
    fn start_with_an_unknown_field_type() -> Vec<u8> {
        let mut payload = vec![0, 10, 0, 10, 0, 9];
        let table = [&[1u8, b'x', b'?'][..], &[7u8; 4]].concat();
        payload.extend_from_slice(&(table.len() as u32).to_be_bytes());
        payload.extend_from_slice(&table);
        payload.extend_from_slice(&[0, 0, 0, 5]);
        payload.extend_from_slice(b"PLAIN");
        payload.extend_from_slice(&[0, 0, 0, 5]);
        payload.extend_from_slice(b"en_US");
        let mut frame = Vec::new();
        encode_frame(FRAME_METHOD, 0, &payload, &mut frame);
        frame
    }

    #[test]
    fn the_brokers_start_reaches_the_client_byte_for_byte_undecoded() {
        let start = start_with_an_unknown_field_type();
        assert!(
            ConnectionMethod::decode(&start[7..start.len() - 1]).is_err(),
            "the codec must not know the field type this test relies on"
        );
        let mut hs = TransparentHandshake::new(&[]);
        let (mut to_client, mut to_broker) = (Vec::new(), Vec::new());
        let p = hs
            .receive(Side::Broker, &start, &mut to_client, &mut to_broker)
            .unwrap();
        assert_eq!(p, TransparentProgress::NeedMore);
        assert_eq!(to_client, start);
        assert_eq!(hs.waiting_for(), Side::Client);
    }

    #[test]
    fn an_undecodable_broker_close_is_a_broker_error() {
        let (mut hs, mut to_client, mut to_broker) = past_start_ok();
        // Close (10, 50), reply code 403, and a reply text of 9 bytes that
        // are not there.
        let mut close = Vec::new();
        encode_frame(FRAME_METHOD, 0, &[0, 10, 0, 50, 1, 147, 9], &mut close);
        let err = hs
            .receive(Side::Broker, &close, &mut to_client, &mut to_broker)
            .unwrap_err();
        assert!(
            matches!(&err, TransparentError::Broker { received, .. } if received.starts_with("an undecodable method")),
            "{err:?}"
        );
    }

    #[test]
    fn an_unexpected_broker_method_is_named_in_the_error() {
        let (mut hs, mut to_client, mut to_broker) = past_start_ok();
        let open_ok = frame_of(ConnectionMethod::OpenOk {
            known_hosts: Vec::new(),
        });
        let err = hs
            .receive(Side::Broker, &open_ok, &mut to_client, &mut to_broker)
            .unwrap_err();
        assert_eq!(
            err,
            TransparentError::Broker {
                expected: "connection.secure or connection.tune",
                received: "connection.open-ok".into(),
            }
        );
    }

    #[test]
    fn secure_round_trips_pass_through() {
        let (mut hs, mut to_client, mut to_broker) = past_start_ok();
        let secure = frame_of(ConnectionMethod::Secure {
            challenge: b"c".to_vec(),
        });
        hs.receive(Side::Broker, &secure, &mut to_client, &mut to_broker)
            .unwrap();
        assert_eq!(hs.waiting_for(), Side::Client);
        to_broker.clear();
        let secure_ok = frame_of(ConnectionMethod::SecureOk {
            response: b"r".to_vec(),
        });
        hs.receive(Side::Client, &secure_ok, &mut to_client, &mut to_broker)
            .unwrap();
        assert_eq!(to_broker, secure_ok);
        assert_eq!(hs.waiting_for(), Side::Broker);
    }

    #[test]
    fn out_of_order_client_method_is_refused_with_503() {
        let mut hs = TransparentHandshake::new(&[]);
        let (mut to_client, mut to_broker) = (Vec::new(), Vec::new());
        hs.receive(
            Side::Broker,
            &broker_start(),
            &mut to_client,
            &mut to_broker,
        )
        .unwrap();
        let open = frame_of(ConnectionMethod::Open(Open {
            vhost: "/".into(),
            capabilities: Vec::new(),
            insist: false,
        }));
        match hs.receive(Side::Client, &open, &mut to_client, &mut to_broker) {
            Err(TransparentError::Client(e)) => assert_eq!(e.reply_code(), Some(503)),
            other => panic!("{other:?}"),
        }
    }
}
