//! AMQP field tables and field arrays (spec §4.2.5.5) in RabbitMQ's
//! field-type dialect (the "AMQP 0-9-1 errata" table used by RabbitMQ,
//! which differs from the 0-9-1 PDF for `s`, `u`, `I`, `i`, `l`, `L`, `x`).
//!
//! Owns: decoding and encoding tables and arrays so that
//! `encode(decode(bytes)) == bytes` for every table whose booleans are 0 or 1
//! (other non-zero boolean octets are read as `true`, as RabbitMQ does, and
//! written back as 1), keeping key order and duplicate keys exactly as
//! received. Never sorts, dedupes or validates keys, never requires long
//! strings to be UTF-8, never panics on input, never allocates for a length
//! prefix before checking the announced bytes are present, and caps nesting
//! at [`MAX_DEPTH`] so hostile input cannot overflow the stack.

use std::fmt;

use super::wire::{begin_len32, end_len32, put_len32, put_longstr, put_shortstr, ByteStr, Reader};
use super::DecodeError;

/// Deepest nesting of tables/arrays accepted when decoding. Real clients
/// nest one level (`capabilities`); 64 leaves ample room while bounding the
/// decoder's recursion.
pub const MAX_DEPTH: usize = 64;

/// One field value, one variant per RabbitMQ field-type tag.
#[derive(Clone, PartialEq)]
pub enum FieldValue {
    /// `t`: boolean octet.
    Bool(bool),
    /// `b`: signed 8-bit.
    I8(i8),
    /// `B`: unsigned 8-bit.
    U8(u8),
    /// `s`: signed 16-bit (RabbitMQ's meaning; the 0-9-1 PDF says shortstr).
    I16(i16),
    /// `U`: signed 16-bit under the 0-9-1 PDF tag. Kept as its own variant so
    /// it is written back as `U` and the bytes round-trip.
    I16U(i16),
    /// `u`: unsigned 16-bit.
    U16(u16),
    /// `I`: signed 32-bit.
    I32(i32),
    /// `i`: unsigned 32-bit.
    U32(u32),
    /// `l`: signed 64-bit.
    I64(i64),
    /// `L`: unsigned 64-bit.
    U64(u64),
    /// `f`: IEEE-754 single.
    F32(f32),
    /// `d`: IEEE-754 double.
    F64(f64),
    /// `D`: decimal, `value * 10^-scale`.
    Decimal { scale: u8, value: u32 },
    /// `S`: long string; raw bytes, not necessarily UTF-8.
    LongString(Vec<u8>),
    /// `A`: field array.
    Array(Vec<FieldValue>),
    /// `T`: timestamp (POSIX seconds).
    Timestamp(u64),
    /// `F`: nested field table.
    Table(FieldTable),
    /// `V`: no value.
    Void,
    /// `x`: byte array.
    Bytes(Vec<u8>),
}

impl FieldValue {
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            FieldValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The raw bytes of a long string (`S`) or byte array (`x`).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            FieldValue::LongString(b) | FieldValue::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_table(&self) -> Option<&FieldTable> {
        match self {
            FieldValue::Table(t) => Some(t),
            _ => None,
        }
    }

    /// The type tag this value is written with.
    pub fn tag(&self) -> u8 {
        match self {
            FieldValue::Bool(_) => b't',
            FieldValue::I8(_) => b'b',
            FieldValue::U8(_) => b'B',
            FieldValue::I16(_) => b's',
            FieldValue::I16U(_) => b'U',
            FieldValue::U16(_) => b'u',
            FieldValue::I32(_) => b'I',
            FieldValue::U32(_) => b'i',
            FieldValue::I64(_) => b'l',
            FieldValue::U64(_) => b'L',
            FieldValue::F32(_) => b'f',
            FieldValue::F64(_) => b'd',
            FieldValue::Decimal { .. } => b'D',
            FieldValue::LongString(_) => b'S',
            FieldValue::Array(_) => b'A',
            FieldValue::Timestamp(_) => b'T',
            FieldValue::Table(_) => b'F',
            FieldValue::Void => b'V',
            FieldValue::Bytes(_) => b'x',
        }
    }

    /// Writes the tag and the value.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.tag());
        match self {
            FieldValue::Bool(b) => out.push(u8::from(*b)),
            FieldValue::I8(v) => out.extend_from_slice(&v.to_be_bytes()),
            FieldValue::U8(v) => out.push(*v),
            FieldValue::I16(v) | FieldValue::I16U(v) => out.extend_from_slice(&v.to_be_bytes()),
            FieldValue::U16(v) => out.extend_from_slice(&v.to_be_bytes()),
            FieldValue::I32(v) => out.extend_from_slice(&v.to_be_bytes()),
            FieldValue::U32(v) => out.extend_from_slice(&v.to_be_bytes()),
            FieldValue::I64(v) => out.extend_from_slice(&v.to_be_bytes()),
            FieldValue::U64(v) | FieldValue::Timestamp(v) => {
                out.extend_from_slice(&v.to_be_bytes())
            }
            // to_bits keeps NaN payloads, so even NaNs round-trip exactly.
            FieldValue::F32(v) => out.extend_from_slice(&v.to_bits().to_be_bytes()),
            FieldValue::F64(v) => out.extend_from_slice(&v.to_bits().to_be_bytes()),
            FieldValue::Decimal { scale, value } => {
                out.push(*scale);
                out.extend_from_slice(&value.to_be_bytes());
            }
            FieldValue::LongString(b) => put_longstr(out, b),
            FieldValue::Bytes(b) => {
                put_len32(out, b.len());
                out.extend_from_slice(b);
            }
            FieldValue::Array(values) => {
                let at = begin_len32(out);
                for v in values {
                    v.encode(out);
                }
                end_len32(out, at);
            }
            FieldValue::Table(t) => t.encode(out),
            FieldValue::Void => {}
        }
    }

    /// Reads one tagged value; `depth` is the nesting level of the
    /// enclosing table or array.
    fn decode(r: &mut Reader<'_>, depth: usize) -> Result<FieldValue, DecodeError> {
        let tag = r.u8()?;
        Ok(match tag {
            b't' => FieldValue::Bool(r.u8()? != 0),
            b'b' => FieldValue::I8(r.u8()? as i8),
            b'B' => FieldValue::U8(r.u8()?),
            b's' => FieldValue::I16(r.u16()? as i16),
            b'U' => FieldValue::I16U(r.u16()? as i16),
            b'u' => FieldValue::U16(r.u16()?),
            b'I' => FieldValue::I32(r.u32()? as i32),
            b'i' => FieldValue::U32(r.u32()?),
            b'l' => FieldValue::I64(r.u64()? as i64),
            b'L' => FieldValue::U64(r.u64()?),
            b'f' => FieldValue::F32(f32::from_bits(r.u32()?)),
            b'd' => FieldValue::F64(f64::from_bits(r.u64()?)),
            b'D' => FieldValue::Decimal {
                scale: r.u8()?,
                value: r.u32()?,
            },
            b'S' => FieldValue::LongString(r.longstr()?.to_vec()),
            b'x' => FieldValue::Bytes(r.longstr()?.to_vec()),
            b'T' => FieldValue::Timestamp(r.u64()?),
            b'V' => FieldValue::Void,
            b'A' => {
                let mut inner = Reader::new(r.longstr()?);
                let depth = nest(depth)?;
                let mut values = Vec::new();
                while !inner.is_empty() {
                    values.push(FieldValue::decode(&mut inner, depth)?);
                }
                FieldValue::Array(values)
            }
            b'F' => FieldValue::Table(FieldTable::decode_body(r.longstr()?, nest(depth)?)?),
            other => {
                return Err(DecodeError::UnknownFieldType {
                    tag: char::from(other),
                })
            }
        })
    }
}

fn nest(depth: usize) -> Result<usize, DecodeError> {
    if depth >= MAX_DEPTH {
        return Err(DecodeError::Malformed("field tables nested too deeply"));
    }
    Ok(depth + 1)
}

/// Checks the table whose u32 length prefix `r` is at, accepting and
/// refusing exactly what [`FieldTable::decode_from`] does (the same error,
/// found in the same order), without copying anything out; returns the
/// table's body (its entries, without the prefix).
pub(crate) fn check_table_from<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let body = r.longstr()?;
    check_body(body, 0)?;
    Ok(body)
}

/// [`FieldTable::decode_body`] that keeps nothing.
fn check_body(body: &[u8], depth: usize) -> Result<(), DecodeError> {
    let mut r = Reader::new(body);
    while !r.is_empty() {
        r.shortstr()?;
        check_value(&mut r, depth)?;
    }
    Ok(())
}

/// Steps over one tagged value as [`FieldValue::decode`] reads it: the
/// same reads in the same order, so a short input reports the same
/// shortfall.
fn check_value(r: &mut Reader<'_>, depth: usize) -> Result<(), DecodeError> {
    let width = match r.u8()? {
        b't' | b'b' | b'B' => 1,
        b's' | b'U' | b'u' => 2,
        b'I' | b'i' | b'f' => 4,
        b'l' | b'L' | b'd' | b'T' => 8,
        b'V' => 0,
        // Two reads, as decoding does: a lone scale octet is short by 4, not 5.
        b'D' => {
            r.u8()?;
            4
        }
        b'S' | b'x' => {
            r.longstr()?;
            0
        }
        b'A' => {
            let mut inner = Reader::new(r.longstr()?);
            let depth = nest(depth)?;
            while !inner.is_empty() {
                check_value(&mut inner, depth)?;
            }
            0
        }
        b'F' => {
            check_body(r.longstr()?, nest(depth)?)?;
            0
        }
        other => {
            return Err(DecodeError::UnknownFieldType {
                tag: char::from(other),
            })
        }
    };
    r.take(width)?;
    Ok(())
}

/// The value of the first entry named `key` in a table body that
/// [`check_table_from`] accepted, when that entry is a long string (`S`):
/// what `FieldTable::get(key)` gives as `LongString`, without decoding the
/// table.
pub fn checked_longstr_entry<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut r = Reader::new(body);
    while !r.is_empty() {
        let name = r.shortstr().ok()?;
        if name == key {
            return match r.u8().ok()? {
                b'S' => r.longstr().ok(),
                _ => None,
            };
        }
        check_value(&mut r, 0).ok()?;
    }
    None
}

/// Long-string field value from a `&str`.
pub fn str_field(s: &str) -> FieldValue {
    FieldValue::LongString(s.as_bytes().to_vec())
}

/// A field table as an ordered list of `(key, value)`; keys are the raw
/// shortstr bytes. Order and duplicates are kept because clients' tables
/// must reach the broker byte for byte.
#[derive(Clone, PartialEq, Default)]
pub struct FieldTable(pub Vec<(Vec<u8>, FieldValue)>);

impl FieldTable {
    pub fn new() -> Self {
        FieldTable(Vec::new())
    }

    /// Decodes a table whose u32 length prefix starts `buf`. Returns the table
    /// and the number of bytes consumed (prefix included); bytes after the
    /// table are left alone.
    pub fn decode(buf: &[u8]) -> Result<(FieldTable, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let body = r.longstr()?;
        let table = FieldTable::decode_body(body, 0)?;
        Ok((table, buf.len() - r.remaining()))
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<FieldTable, DecodeError> {
        FieldTable::decode_body(r.longstr()?, 0)
    }

    /// Decodes the entries filling `body` exactly; an entry running past the
    /// end of the announced table length is `Truncated`.
    fn decode_body(body: &[u8], depth: usize) -> Result<FieldTable, DecodeError> {
        let mut r = Reader::new(body);
        let mut entries = Vec::new();
        while !r.is_empty() {
            let key = r.shortstr()?.to_vec();
            let value = FieldValue::decode(&mut r, depth)?;
            entries.push((key, value));
        }
        Ok(FieldTable(entries))
    }

    /// Writes the u32 length, then the entries in order. Keys longer than 255
    /// bytes (only possible when built in code) are cut to 255.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let at = begin_len32(out);
        for (key, value) in &self.0 {
            put_shortstr(out, key);
            value.encode(out);
        }
        end_len32(out, at);
    }

    /// The value of the first entry named `key`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v)
    }

    /// Appends an entry at the end, even if `key` already exists.
    pub fn push(&mut self, key: &str, value: FieldValue) {
        self.0.push((key.as_bytes().to_vec(), value));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &FieldValue)> {
        self.0.iter().map(|(k, v)| (k.as_slice(), v))
    }
}

// Debug is written by hand so that keys and strings print as readable
// escaped byte strings (`b"product": S(b"pika")`), not as lists of numbers.
impl fmt::Debug for FieldTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (ByteStr(k), v)))
            .finish()
    }
}

impl fmt::Debug for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Bool(v) => f.debug_tuple("Bool").field(v).finish(),
            FieldValue::I8(v) => f.debug_tuple("I8").field(v).finish(),
            FieldValue::U8(v) => f.debug_tuple("U8").field(v).finish(),
            FieldValue::I16(v) => f.debug_tuple("I16").field(v).finish(),
            FieldValue::I16U(v) => f.debug_tuple("I16U").field(v).finish(),
            FieldValue::U16(v) => f.debug_tuple("U16").field(v).finish(),
            FieldValue::I32(v) => f.debug_tuple("I32").field(v).finish(),
            FieldValue::U32(v) => f.debug_tuple("U32").field(v).finish(),
            FieldValue::I64(v) => f.debug_tuple("I64").field(v).finish(),
            FieldValue::U64(v) => f.debug_tuple("U64").field(v).finish(),
            FieldValue::F32(v) => f.debug_tuple("F32").field(v).finish(),
            FieldValue::F64(v) => f.debug_tuple("F64").field(v).finish(),
            FieldValue::Decimal { scale, value } => f
                .debug_struct("Decimal")
                .field("scale", scale)
                .field("value", value)
                .finish(),
            FieldValue::LongString(b) => f.debug_tuple("LongString").field(&ByteStr(b)).finish(),
            FieldValue::Array(v) => f.debug_tuple("Array").field(v).finish(),
            FieldValue::Timestamp(v) => f.debug_tuple("Timestamp").field(v).finish(),
            FieldValue::Table(t) => f.debug_tuple("Table").field(t).finish(),
            FieldValue::Void => f.write_str("Void"),
            FieldValue::Bytes(b) => f.debug_tuple("Bytes").field(&ByteStr(b)).finish(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(t: &FieldTable) -> Vec<u8> {
        let mut out = Vec::new();
        t.encode(&mut out);
        out
    }

    fn leaf() -> impl Strategy<Value = FieldValue> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..24);
        prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            any::<i8>().prop_map(FieldValue::I8),
            any::<u8>().prop_map(FieldValue::U8),
            any::<i16>().prop_map(FieldValue::I16),
            any::<i16>().prop_map(FieldValue::I16U),
            any::<u16>().prop_map(FieldValue::U16),
            any::<i32>().prop_map(FieldValue::I32),
            any::<u32>().prop_map(FieldValue::U32),
            any::<i64>().prop_map(FieldValue::I64),
            any::<u64>().prop_map(FieldValue::U64),
            // From raw bits so NaNs (with payloads) and infinities appear.
            any::<u32>().prop_map(|b| FieldValue::F32(f32::from_bits(b))),
            any::<u64>().prop_map(|b| FieldValue::F64(f64::from_bits(b))),
            (any::<u8>(), any::<u32>())
                .prop_map(|(scale, value)| FieldValue::Decimal { scale, value }),
            bytes().prop_map(FieldValue::LongString),
            any::<u64>().prop_map(FieldValue::Timestamp),
            Just(FieldValue::Void),
            bytes().prop_map(FieldValue::Bytes),
        ]
    }

    pub(crate) fn key() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..=255),
            "[a-z_.]{1,12}".prop_map(String::into_bytes),
        ]
    }

    pub(crate) fn arb_table() -> impl Strategy<Value = FieldTable> {
        let value = leaf().prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(FieldValue::Array),
                proptest::collection::vec((key(), inner), 0..6)
                    .prop_map(|e| FieldValue::Table(FieldTable(e))),
            ]
        });
        proptest::collection::vec((key(), value), 0..8).prop_map(FieldTable)
    }

    #[test]
    fn every_tag_round_trips() {
        let mut t = FieldTable::new();
        t.push("t", FieldValue::Bool(true));
        t.push("b", FieldValue::I8(-2));
        t.push("B", FieldValue::U8(250));
        t.push("s", FieldValue::I16(-300));
        t.push("U", FieldValue::I16U(-301));
        t.push("u", FieldValue::U16(65000));
        t.push("I", FieldValue::I32(-70000));
        t.push("i", FieldValue::U32(4_000_000_000));
        t.push("l", FieldValue::I64(-1 << 40));
        t.push("L", FieldValue::U64(u64::MAX));
        t.push("f", FieldValue::F32(1.5));
        t.push("d", FieldValue::F64(-2.25));
        t.push(
            "D",
            FieldValue::Decimal {
                scale: 2,
                value: 12345,
            },
        );
        t.push("S", FieldValue::LongString(vec![0xff, 0xfe, b'x']));
        t.push(
            "A",
            FieldValue::Array(vec![FieldValue::Void, str_field("a")]),
        );
        t.push("T", FieldValue::Timestamp(1_700_000_000));
        t.push("F", FieldValue::Table(FieldTable::new()));
        t.push("V", FieldValue::Void);
        t.push("x", FieldValue::Bytes(vec![1, 2, 3]));
        t.push("t", FieldValue::Bool(false)); // duplicate key kept, in order
        let bytes = encoded(&t);
        let (back, used) = FieldTable::decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(back, t);
        assert_eq!(back.get("t"), Some(&FieldValue::Bool(true)));
        assert_eq!(
            back.get("S").and_then(FieldValue::as_bytes),
            Some(&[0xff, 0xfe, b'x'][..])
        );
        // `U` stays `U`; `s` stays `s`.
        let u_at = bytes.windows(3).position(|w| w == b"\x01UU").unwrap();
        assert_eq!(&bytes[u_at + 3..u_at + 5], &(-301i16).to_be_bytes());
    }

    #[test]
    fn known_bytes() {
        // {"a": true, "n": 'I' 1}
        let bytes = b"\x00\x00\x00\x0b\x01at\x01\x01nI\x00\x00\x00\x01rest";
        let (t, used) = FieldTable::decode(bytes).unwrap();
        assert_eq!(used, 15);
        assert_eq!(t.get("a").and_then(FieldValue::as_bool), Some(true));
        assert_eq!(t.get("n"), Some(&FieldValue::I32(1)));
        assert_eq!(encoded(&t), &bytes[..15]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            FieldTable::decode(b"\x00\x00"),
            Err(DecodeError::Truncated { needed: 2 })
        );
        assert_eq!(
            FieldTable::decode(b"\x00\x00\x00\x09"),
            Err(DecodeError::Truncated { needed: 9 })
        );
        assert_eq!(
            FieldTable::decode(b"\x00\x00\x00\x03\x01aQ"),
            Err(DecodeError::UnknownFieldType { tag: 'Q' })
        );
        // The value runs past the table's own length, though the buffer goes on.
        assert_eq!(
            FieldTable::decode(b"\x00\x00\x00\x04\x01aI\x00\x00\x00\x00\x01"),
            Err(DecodeError::Truncated { needed: 3 })
        );
        // A huge announced length with few bytes present does not allocate.
        assert!(matches!(
            FieldTable::decode(b"\xff\xff\xff\xff\x01aS\xff\xff\xff\xff"),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn debug_shows_strings_as_text() {
        let mut caps = FieldTable::new();
        caps.push("basic.nack", FieldValue::Bool(true));
        let mut t = FieldTable::new();
        t.push("product", str_field("pika"));
        t.push("capabilities", FieldValue::Table(caps));
        t.push("raw", FieldValue::Bytes(vec![0, 0xff]));
        assert_eq!(
            format!("{t:?}"),
            r#"{b"product": LongString(b"pika"), b"capabilities": Table({b"basic.nack": Bool(true)}), b"raw": Bytes(b"\x00\xff")}"#
        );
    }

    #[test]
    fn nonstandard_bool_octet_reads_true() {
        let (t, _) = FieldTable::decode(b"\x00\x00\x00\x04\x01at\x07").unwrap();
        assert_eq!(t.get("a"), Some(&FieldValue::Bool(true)));
    }

    fn nested(depth: usize, array: bool) -> Vec<u8> {
        // depth levels of F (or A) around an empty table.
        let mut value = FieldValue::Table(FieldTable::new());
        for _ in 1..depth {
            value = if array {
                FieldValue::Array(vec![value])
            } else {
                FieldValue::Table(FieldTable(vec![(b"k".to_vec(), value)]))
            };
        }
        let mut t = FieldTable::new();
        t.push("k", value);
        encoded(&t)
    }

    #[test]
    fn nesting_is_capped() {
        for array in [false, true] {
            assert!(FieldTable::decode(&nested(MAX_DEPTH, array)).is_ok());
            assert_eq!(
                FieldTable::decode(&nested(MAX_DEPTH + 1, array)),
                Err(DecodeError::Malformed("field tables nested too deeply"))
            );
        }
        // Far deeper than the cap: still an error, not a stack overflow.
        // Built by hand: encoding a value this deep would itself recurse.
        let mut deep = b"\x00\x00\x00\x00".to_vec();
        for _ in 0..2_000 {
            let mut outer = ((deep.len() + 3) as u32).to_be_bytes().to_vec();
            outer.extend_from_slice(b"\x01kF");
            outer.extend_from_slice(&deep);
            deep = outer;
        }
        assert_eq!(
            FieldTable::decode(&deep),
            Err(DecodeError::Malformed("field tables nested too deeply"))
        );
    }

    proptest! {
        #[test]
        fn table_round_trips(t in arb_table(), trailing in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut bytes = encoded(&t);
            let len = bytes.len();
            bytes.extend_from_slice(&trailing);
            let (back, used) = FieldTable::decode(&bytes).unwrap();
            prop_assert_eq!(used, len);
            // Compared as bytes: NaN != NaN as values.
            prop_assert_eq!(encoded(&back), &bytes[..len]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok((t, used)) = FieldTable::decode(&data) {
                prop_assert_eq!(encoded(&t).len(), used);
            }
        }

        #[test]
        fn truncated_tables_are_errors(t in arb_table(), cut in any::<prop::sample::Index>()) {
            let bytes = encoded(&t);
            let cut = cut.index(bytes.len());
            prop_assert!(FieldTable::decode(&bytes[..cut]).is_err());
        }
    }
}
