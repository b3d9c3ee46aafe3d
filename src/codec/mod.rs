//! AMQP 0-9-1 wire codec, sans I/O: frames (spec §2.3.5, §4.2.3), field
//! tables (§4.2.5.5, in RabbitMQ's field-type dialect), the connection-class
//! methods (class 10, §1.4.2 / amqp0-9-1.xml) and a pass-through frame scanner
//! for the established data path (§4.2.3).
//!
//! This module only turns bytes into values and values into bytes. It never
//! performs I/O, never blocks, never panics on input (truncated or malformed
//! bytes always become a [`DecodeError`] or [`ScanError`]), and never trusts a
//! length field before checking that the bytes it announces are present.

pub mod field;
pub mod frame;
pub mod fuzz_check;
pub mod method;
pub mod scanner;
mod wire;

pub use field::{str_field, FieldTable, FieldValue};
pub use frame::*;
pub use method::*;
pub use scanner::{FrameEvent, FrameScanner, ScanError};

/// Why a frame, method or field table could not be decoded.
///
/// `Truncated` means a payload that is already complete (a whole frame's
/// method arguments, or a table whose length prefix says where it ends) ran
/// out early. It is a hard error, not a request for more input: the frame
/// layer reports "need more bytes" as `Ok(None)` instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated input: needed {needed} more bytes")]
    Truncated { needed: usize },
    #[error("bad frame end octet 0x{found:02x}, expected 0xce")]
    BadFrameEnd { found: u8 },
    /// `size` is the whole frame length (header, payload and end octet),
    /// saturated at `u32::MAX`, so that it compares directly with `max`.
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    FrameTooLarge { size: u32, max: u32 },
    #[error("unknown field type {tag:?}")]
    UnknownFieldType { tag: char },
    #[error("not a connection-class method: class {class_id} method {method_id}")]
    NotConnectionMethod { class_id: u16, method_id: u16 },
    #[error("invalid UTF-8 in {field}")]
    InvalidUtf8 { field: &'static str },
    #[error("{0}")]
    Malformed(&'static str),
}
