//! Primitive types of the RabbitMQ Stream protocol: big-endian integers,
//! `string` (int16 length, -1 for null), `bytes` (int32 length, -1 for null)
//! and arrays (int32 count), as the protocol document defines them.
//!
//! The [`Reader`] never panics and never reads past its slice; a length
//! prefix is checked against the bytes present before anything is sliced or
//! allocated. The writers never fail: a string longer than its prefix allows
//! is a caller bug, written truncated (documented on each writer).

use super::StreamDecodeError;

/// A bounds-checked cursor over one complete frame body.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], StreamDecodeError> {
        if n > self.buf.len() {
            return Err(StreamDecodeError::Truncated {
                needed: n - self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StreamDecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, StreamDecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, StreamDecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A `string`: the bytes, or `None` for the null string (length -1).
    pub(crate) fn string(&mut self) -> Result<Option<&'a [u8]>, StreamDecodeError> {
        let len = i16::from_be_bytes(self.array()?);
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(StreamDecodeError::NegativeLength(i32::from(n))),
            // n >= 0 was checked just above.
            n => self.take(n as usize).map(Some),
        }
    }

    /// A non-null `string` as UTF-8; `field` names it in the error.
    pub(crate) fn text(&mut self, field: &'static str) -> Result<String, StreamDecodeError> {
        let bytes = self
            .string()?
            .ok_or(StreamDecodeError::NullString { field })?;
        String::from_utf8(bytes.to_vec()).map_err(|_| StreamDecodeError::InvalidUtf8 { field })
    }

    /// A `bytes` field: the bytes, or `None` for null (length -1).
    pub(crate) fn bytes(&mut self) -> Result<Option<&'a [u8]>, StreamDecodeError> {
        let len = i32::from_be_bytes(self.array()?);
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(StreamDecodeError::NegativeLength(n)),
            n => self.take(n as usize).map(Some),
        }
    }

    /// An array count. Each element takes at least `min_element` bytes, so a
    /// count the remaining bytes cannot hold is refused before any
    /// allocation sized by it.
    pub(crate) fn count(&mut self, min_element: usize) -> Result<usize, StreamDecodeError> {
        let n = i32::from_be_bytes(self.array()?);
        if n < 0 {
            return Err(StreamDecodeError::NegativeLength(n));
        }
        let n = n as usize;
        if n.saturating_mul(min_element) > self.buf.len() {
            return Err(StreamDecodeError::Truncated {
                needed: n.saturating_mul(min_element) - self.buf.len(),
            });
        }
        Ok(n)
    }

    /// A `[Key Value]` array of non-null UTF-8 strings, in wire order.
    pub(crate) fn properties(&mut self) -> Result<Vec<(String, String)>, StreamDecodeError> {
        let n = self.count(4)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let key = self.text("property key")?;
            let value = self.text("property value")?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// Fails unless every byte was consumed: trailing bytes mean the frame
    /// is not the command its key says.
    pub(crate) fn finish(&self) -> Result<(), StreamDecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(StreamDecodeError::TrailingBytes {
                count: self.buf.len(),
            })
        }
    }
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Writes a `string`. More than `i16::MAX` bytes cannot be expressed: the
/// string is truncated there (no command the proxy writes comes close).
pub(crate) fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len().min(i16::MAX as usize);
    put_u16(out, n as u16);
    out.extend_from_slice(&s[..n]);
}

/// Writes a `bytes` field, `None` as null. Truncated at `i32::MAX` bytes.
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(b) => {
            let n = b.len().min(i32::MAX as usize);
            put_u32(out, n as u32);
            out.extend_from_slice(&b[..n]);
        }
    }
}

pub(crate) fn put_count(out: &mut Vec<u8>, n: usize) {
    put_u32(out, u32::try_from(n.min(i32::MAX as usize)).unwrap_or(0));
}

pub(crate) fn put_properties(out: &mut Vec<u8>, props: &[(String, String)]) {
    put_count(out, props.len());
    for (k, v) in props {
        put_string(out, k.as_bytes());
        put_string(out, v.as_bytes());
    }
}
