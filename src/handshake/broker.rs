//! Broker-side handshake: the proxy replays the client's handshake toward the
//! chosen broker (docs/sessions.md#broker-handshake, AMQP 0-9-1 §4.2.3).
//!
//! It sends, in one write, the protocol header, the client's `StartOk` with
//! its properties untouched plus `amqpprox_client` and `amqpprox_host`
//! appended, the client's `TuneOk` and an `Open` for the client's vhost: none
//! of them depends on what the broker says first, so the broker is one round
//! trip away instead of three. It then reads the broker's `Start`, `Tune` and
//! `OpenOk` in order. A broker `Connection.Close` at any step is handed back
//! so the client can be told the broker's own code and text
//! (docs/sessions.md#broker-handshake). After `OpenOk` the `OpenOk` frame and
//! whatever followed it are returned raw for the client. Sans-I/O: no
//! sockets, no clock.

use super::{ClientHello, HangUp, HANDSHAKE_MAX_FRAME};
use crate::codec::{
    decode_frame, method_ids, Close, ConnectionMethod, DecodeError, FieldValue, Open,
    CONNECTION_CLASS, FRAME_METHOD, PROTOCOL_HEADER,
};

/// Where the broker handshake stands after a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerProgress {
    NeedMore,
    /// The broker sent `OpenOk`: these bytes (the `OpenOk` frame and all
    /// that followed it) go to the client as they are.
    Open {
        to_client: Vec<u8>,
    },
}

/// Why the broker handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerHandshakeError {
    /// The broker refused (wrong password, unknown vhost, ...): the client
    /// gets this Close's code and text.
    #[error("broker closed the connection: {} {}", .0.reply_code, .0.reply_text_lossy())]
    Closed(Close),
    #[error("broker sent a bad frame: {0}")]
    Frame(DecodeError),
    #[error("broker sent an undecodable method while {expected} was expected: {error}")]
    Undecodable {
        expected: &'static str,
        error: DecodeError,
    },
    #[error("broker sent {received} while {expected} was expected")]
    Unexpected {
        expected: &'static str,
        received: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the broker's `Connection.Start`; likewise below. The
    /// whole replay was sent before any of them.
    Start,
    Tune,
    OpenOk,
}

impl State {
    fn expected(self) -> &'static str {
        match self {
            State::Start => "connection.start",
            State::Tune => "connection.tune",
            State::OpenOk => "connection.open-ok",
        }
    }
}

/// The broker-side handshake of one session.
#[derive(Debug)]
pub struct BrokerHandshake {
    state: State,
    input: Vec<u8>,
}

impl BrokerHandshake {
    /// Writes the whole replay of `hello` to `out`: the protocol header, the
    /// `StartOk` with `additions` appended to the client properties (in
    /// order), the `TuneOk` and the `Open`. The broker reads them in order
    /// and answers each when it comes to it (RabbitMQ keeps the bytes that
    /// follow the header), so nothing waits for its `Start` or `Tune`.
    pub fn start(
        hello: &ClientHello,
        additions: &[(&str, &str)],
        out: &mut Vec<u8>,
    ) -> BrokerHandshake {
        let mut start_ok = hello.start_ok.clone();
        for (key, value) in additions {
            start_ok
                .client_properties
                .push(key, FieldValue::LongString(value.as_bytes().to_vec()));
        }
        out.extend_from_slice(&PROTOCOL_HEADER);
        ConnectionMethod::StartOk(start_ok).encode_frame(out);
        // The client's own TuneOk: it negotiated with the proxy's Tune, and
        // the broker's does not change it (docs/sessions.md#broker-handshake).
        ConnectionMethod::TuneOk(hello.tune_ok).encode_frame(out);
        let open = Open {
            vhost: hello.open.vhost.clone(),
            capabilities: Vec::new(),
            insist: false,
        };
        ConnectionMethod::Open(open).encode_frame(out);
        BrokerHandshake {
            state: State::Start,
            input: Vec::new(),
        }
    }

    /// What the broker closing its socket now most likely means: after its
    /// `Start` and before its `Tune` (it has the `StartOk` by then) it is a
    /// probable refused login.
    pub fn hang_up(&self) -> HangUp {
        match self.state {
            State::Tune => HangUp::AfterLogin,
            state => HangUp::Before {
                expected: state.expected(),
            },
        }
    }

    /// Feeds the next bytes read from the broker; appends what to send to
    /// the broker to `out` (only the `CloseOk` that answers its `Close`).
    pub fn receive(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<BrokerProgress, BrokerHandshakeError> {
        self.input.extend_from_slice(data);
        let mut consumed = 0;
        loop {
            let (frame, used) = match decode_frame(&self.input[consumed..], HANDSHAKE_MAX_FRAME) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(BrokerHandshakeError::Frame(e)),
            };
            let frame_start = consumed;
            consumed += used;
            // Heartbeats and anything outside channel 0's connection class
            // are not part of the handshake.
            let is_connection_method = frame.frame_type == FRAME_METHOD
                && frame.channel == 0
                && method_ids(frame.payload).is_some_and(|(class, _)| class == CONNECTION_CLASS);
            if !is_connection_method {
                continue;
            }
            let expected = self.state.expected();
            let method = ConnectionMethod::decode(frame.payload)
                .map_err(|error| BrokerHandshakeError::Undecodable { expected, error })?;
            match (self.state, method) {
                (_, ConnectionMethod::Close(close)) => {
                    // Acknowledge, so the broker logs a clean close.
                    ConnectionMethod::CloseOk.encode_frame(out);
                    return Err(BrokerHandshakeError::Closed(close));
                }
                // Its mechanisms and limits are not inspected: the replay
                // already went out.
                (State::Start, ConnectionMethod::Start(_)) => {
                    self.state = State::Tune;
                }
                (State::Tune, ConnectionMethod::Tune(_)) => {
                    self.state = State::OpenOk;
                }
                (State::OpenOk, ConnectionMethod::OpenOk { .. }) => {
                    let to_client = self.input.split_off(frame_start);
                    self.input.clear();
                    return Ok(BrokerProgress::Open { to_client });
                }
                (_, other) => {
                    return Err(BrokerHandshakeError::Unexpected {
                        expected,
                        received: other.name(),
                    })
                }
            }
        }
        self.input.drain(..consumed);
        Ok(BrokerProgress::NeedMore)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{str_field, FieldTable, StartOk, Tune};
    use crate::handshake::frame_of;

    fn hello() -> ClientHello {
        let mut props = FieldTable::new();
        props.push("product", str_field("test"));
        ClientHello {
            start_ok: StartOk {
                client_properties: props,
                mechanism: b"PLAIN".to_vec(),
                response: b"\0guest\0guest".to_vec(),
                locale: b"en_US".to_vec(),
            },
            tune_ok: Tune {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60,
            },
            open: Open {
                vhost: "prod".into(),
                capabilities: b"x".to_vec(),
                insist: true,
            },
            pipelined: Vec::new(),
            legacy_header: false,
        }
    }

    fn broker_start() -> Vec<u8> {
        frame_of(ConnectionMethod::Start(crate::codec::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: FieldTable::new(),
            mechanisms: b"PLAIN".to_vec(),
            locales: b"en_US".to_vec(),
        }))
    }

    #[test]
    fn the_whole_replay_goes_out_before_the_broker_says_anything() {
        let mut out = Vec::new();
        let mut hs =
            BrokerHandshake::start(&hello(), &[("amqpprox_client", "127.0.0.1:5000")], &mut out);
        assert_eq!(out[..8], PROTOCOL_HEADER);
        let (frame, used) = decode_frame(&out[8..], HANDSHAKE_MAX_FRAME)
            .unwrap()
            .unwrap();
        let ConnectionMethod::StartOk(sent) = ConnectionMethod::decode(frame.payload).unwrap()
        else {
            panic!("the first frame is not a StartOk")
        };
        let keys: Vec<&[u8]> = sent
            .client_properties
            .0
            .iter()
            .map(|(k, _)| k.as_slice())
            .collect();
        assert_eq!(keys, [&b"product"[..], b"amqpprox_client"]);
        assert_eq!(sent.response, b"\0guest\0guest");
        // Then the client's TuneOk unchanged and an Open without the
        // client's reserved fields, and nothing else.
        let mut expected = frame_of(ConnectionMethod::TuneOk(hello().tune_ok));
        expected.extend(frame_of(ConnectionMethod::Open(Open {
            vhost: "prod".into(),
            capabilities: Vec::new(),
            insist: false,
        })));
        assert_eq!(out[8 + used..], expected);

        // The broker's Start and Tune are read and answered by nothing.
        out.clear();
        assert_eq!(
            hs.receive(&broker_start(), &mut out).unwrap(),
            BrokerProgress::NeedMore
        );
        let tune = frame_of(ConnectionMethod::Tune(Tune {
            channel_max: 0,
            frame_max: 131_072,
            heartbeat: 60,
        }));
        assert_eq!(
            hs.receive(&tune, &mut out).unwrap(),
            BrokerProgress::NeedMore
        );
        assert!(out.is_empty(), "nothing is sent after the replay");
        let mut open_ok = frame_of(ConnectionMethod::OpenOk {
            known_hosts: Vec::new(),
        });
        open_ok.extend_from_slice(&crate::codec::HEARTBEAT_FRAME);
        // Split the OpenOk across two reads.
        assert_eq!(
            hs.receive(&open_ok[..3], &mut out).unwrap(),
            BrokerProgress::NeedMore
        );
        assert_eq!(
            hs.receive(&open_ok[3..], &mut out).unwrap(),
            BrokerProgress::Open {
                to_client: open_ok.clone()
            }
        );
    }

    #[test]
    fn broker_close_is_returned_with_close_ok_sent() {
        let mut out = Vec::new();
        let mut hs = BrokerHandshake::start(&hello(), &[], &mut out);
        hs.receive(&broker_start(), &mut out).unwrap();
        out.clear();
        let close = frame_of(ConnectionMethod::Close(Close::new(
            403,
            "ACCESS_REFUSED - Login was refused",
        )));
        let err = hs.receive(&close, &mut out).unwrap_err();
        match err {
            BrokerHandshakeError::Closed(c) => assert_eq!(c.reply_code, 403),
            other => panic!("{other:?}"),
        }
        assert_eq!(out, frame_of(ConnectionMethod::CloseOk));
    }

    #[test]
    fn hang_up_is_a_probable_refused_login_only_between_the_start_and_the_tune() {
        let mut out = Vec::new();
        let mut hs = BrokerHandshake::start(&hello(), &[], &mut out);
        assert_eq!(
            hs.hang_up(),
            HangUp::Before {
                expected: "connection.start"
            }
        );
        hs.receive(&broker_start(), &mut out).unwrap();
        assert_eq!(hs.hang_up(), HangUp::AfterLogin);
        let tune = frame_of(ConnectionMethod::Tune(Tune {
            channel_max: 0,
            frame_max: 131_072,
            heartbeat: 60,
        }));
        hs.receive(&tune, &mut out).unwrap();
        assert_eq!(
            hs.hang_up(),
            HangUp::Before {
                expected: "connection.open-ok"
            }
        );
    }

    #[test]
    fn open_ok_before_tune_is_unexpected() {
        let mut out = Vec::new();
        let mut hs = BrokerHandshake::start(&hello(), &[], &mut out);
        hs.receive(&broker_start(), &mut out).unwrap();
        let err = hs
            .receive(
                &frame_of(ConnectionMethod::OpenOk {
                    known_hosts: Vec::new(),
                }),
                &mut out,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            BrokerHandshakeError::Unexpected {
                received: "connection.open-ok",
                ..
            }
        ));
    }
}
