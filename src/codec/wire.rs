//! Primitive AMQP 0-9-1 data types (spec §4.2.5: octets, big-endian integers,
//! short and long strings) shared by the field-table and method codecs.
//!
//! The [`Reader`] never panics and never reads past its slice: every accessor
//! checks the remaining length first and reports a shortfall as
//! [`DecodeError::Truncated`]. The writers never fail; a string too long for
//! its length prefix is a caller bug, handled as documented on each writer.

use std::fmt;

use super::DecodeError;

/// A bounds-checked cursor over a complete payload.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes exactly `n` bytes. The length is checked before anything is
    /// sliced, so a hostile length prefix cannot cause an out-of-bounds read
    /// or an allocation.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated {
                needed: n - self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// shortstr: one length octet, then that many bytes (§4.2.5.3).
    pub(crate) fn shortstr(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// longstr: a u32 length, then that many bytes (§4.2.5.3).
    pub(crate) fn longstr(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        // On 16-bit targets a length that does not fit usize cannot be
        // present in memory either, so it is simply "truncated".
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.take(len)
    }
}

/// Writes a shortstr. The wire format cannot carry more than 255 bytes, so a
/// longer value (only possible for values built in code, never for decoded
/// ones) is cut at 255 bytes rather than corrupting the stream.
pub(crate) fn put_shortstr(out: &mut Vec<u8>, s: &[u8]) {
    let s = &s[..s.len().min(255)];
    // The min() above makes the cast lossless.
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// Writes a u32 length prefix for `len` bytes of content.
pub(crate) fn put_len32(out: &mut Vec<u8>, len: usize) {
    // Frames are bounded far below 4 GiB (frame-max is a u32 and the proxy
    // caps it at 150000), so a longer value can only come from a caller bug.
    let len = u32::try_from(len).expect("AMQP long string or table exceeds 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
}

/// Writes a longstr.
pub(crate) fn put_longstr(out: &mut Vec<u8>, s: &[u8]) {
    put_len32(out, s.len());
    out.extend_from_slice(s);
}

/// Reserves a u32 length slot and returns its position, for content whose
/// size is only known after encoding it (tables, arrays, frames).
pub(crate) fn begin_len32(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

/// Fills the slot from [`begin_len32`] with the number of bytes written since.
pub(crate) fn end_len32(out: &mut [u8], at: usize) {
    let len = out.len() - at - 4;
    let len = u32::try_from(len).expect("AMQP table or frame exceeds 4 GiB");
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Debug-prints protocol strings as escaped byte literals: readable for
/// ASCII, exact for anything else (a derived `Vec<u8>` Debug would print a
/// list of numbers).
pub(crate) struct ByteStr<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for ByteStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}
