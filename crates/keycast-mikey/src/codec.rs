//! The byte cursor every MIKEY decoder reads through, the error it reports, and the
//! length-prefix guard every encoder writes through.

use core::fmt;

/// Upper bound on the size of one MIKEY message this crate decodes. LTKMs and STKMs are a few
/// hundred bytes; a UDP datagram cannot exceed 65 535. The bound caps the work per datagram.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;

/// Upper bound on the payloads of one message (each payload is at least two bytes, so this also
/// bounds the allocation a hostile message can cause).
pub const MAX_PAYLOADS: usize = 64;

/// Why a message could not be decoded: where (payload and byte offset), which field, and what.
///
/// The details sit behind a box so that every `Result` on the decoding hot path stays two words
/// wide; read them through `Deref` (`err.offset`, `err.kind`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(Box<DecodeErrorDetail>);

/// The details of a [`DecodeError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{payload} payload at offset {offset}, field `{field}`: {kind}")]
pub struct DecodeErrorDetail {
    /// The payload being read (its spec name, e.g. "KEMAC").
    pub payload: &'static str,
    /// The field being read.
    pub field: &'static str,
    /// Byte offset from the start of the message.
    pub offset: usize,
    /// What went wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// A decoding error at `offset` in `payload`, field `field`.
    #[cold]
    #[inline(never)]
    pub fn new(payload: &'static str, field: &'static str, offset: usize, kind: DecodeErrorKind) -> Self {
        Self(Box::new(DecodeErrorDetail { payload, field, offset, kind }))
    }
}

impl core::ops::Deref for DecodeError {
    type Target = DecodeErrorDetail;

    fn deref(&self) -> &DecodeErrorDetail {
        &self.0
    }
}

/// The kinds of decoding failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The field runs past the end of its enclosing data.
    #[error("truncated: needs {needed} bytes, {left} left")]
    Truncated {
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        left: usize,
    },
    /// Bytes follow the last payload or the end of a length-delimited body.
    #[error("{len} unexpected trailing bytes")]
    TrailingData {
        /// Number of extra bytes.
        len: usize,
    },
    /// A payload type that cannot be stepped over (MIKEY payloads carry no common length).
    #[error("unknown payload type {0}")]
    UnknownPayload(u8),
    /// A value outside what the field allows.
    #[error("invalid value {value:#x} ({why})")]
    BadValue {
        /// The value read.
        value: u64,
        /// What the field allows.
        why: &'static str,
    },
    /// A length field that does not fit the data it describes.
    #[error("invalid length {len} ({why})")]
    BadLength {
        /// The length read.
        len: usize,
        /// What the length must be.
        why: &'static str,
    },
    /// A message larger than [`MAX_MESSAGE_LEN`].
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    Oversize {
        /// Message length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More payloads than [`MAX_PAYLOADS`].
    #[error("more than {0} payloads")]
    TooManyPayloads(usize),
}

/// A cursor over a borrowed slice that knows its absolute offset within the message, so every
/// error names where it happened.
#[derive(Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    /// Offset of `buf[0]` within the whole message.
    base: usize,
    /// Offset where the most recent read started, so a value judged bad after reading is
    /// reported where it sits.
    last: usize,
    /// The payload being read, for error messages.
    payload: &'static str,
}

impl fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reader {{ offset: {}, left: {} }}", self.base, self.buf.len())
    }
}

impl<'a> Reader<'a> {
    /// A reader over a whole message.
    pub(crate) fn new(buf: &'a [u8], payload: &'static str) -> Self {
        Self { buf, base: 0, last: 0, payload }
    }

    /// A reader over `buf`, which starts at `base` in the message.
    pub(crate) fn at(buf: &'a [u8], base: usize, payload: &'static str) -> Self {
        Self { buf, base, last: base, payload }
    }

    /// Names the payload that following reads belong to.
    pub(crate) fn enter(&mut self, payload: &'static str) {
        self.payload = payload;
    }

    /// Absolute offset of the next unread byte.
    pub(crate) fn offset(&self) -> usize {
        self.base
    }

    /// Bytes left.
    pub(crate) fn left(&self) -> usize {
        self.buf.len()
    }

    /// The unread bytes, without consuming them.
    pub(crate) fn peek_rest(&self) -> &'a [u8] {
        self.buf
    }

    /// An error at the current offset.
    pub(crate) fn error(&self, field: &'static str, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(self.payload, field, self.base, kind)
    }

    /// An error for a bad value, at the offset where the value was read.
    pub(crate) fn bad_value(&self, field: &'static str, value: u64, why: &'static str) -> DecodeError {
        DecodeError::new(self.payload, field, self.last, DecodeErrorKind::BadValue { value, why })
    }

    /// Takes `n` bytes.
    #[inline(always)]
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(self.error(field, DecodeErrorKind::Truncated { needed: n, left: self.buf.len() }));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        self.last = self.base;
        self.base += n;
        Ok(head)
    }

    /// Takes exactly `N` bytes as an array.
    #[inline(always)]
    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    #[inline(always)]
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    #[inline(always)]
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    #[inline(always)]
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// A child reader over the next `n` bytes (a length-delimited region).
    #[inline(always)]
    pub(crate) fn sub(&mut self, n: usize, field: &'static str) -> Result<Reader<'a>, DecodeError> {
        let base = self.base;
        let buf = self.take(n, field)?;
        Ok(Reader { buf, base, last: base, payload: self.payload })
    }

    /// Fails when bytes are left over.
    #[inline(always)]
    pub(crate) fn expect_empty(&self, field: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.error(field, DecodeErrorKind::TrailingData { len: self.buf.len() }))
        }
    }
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A variable-length field is longer than its length field can say.
    #[error("field `{field}` is {len} bytes, more than its length field allows ({max})")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The largest length allowed.
        max: usize,
    },
    /// A value the profile does not allow (e.g. a wrong key length).
    #[error("cannot encode {field}: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        why: &'static str,
    },
}

/// Writes a big-endian length of `width` bytes (1 or 2) in front of what `body` appends.
///
/// The placeholder is all ones, so a body abandoned halfway (an early `?`) leaves a length no
/// reader can mistake for a complete field.
pub(crate) fn with_len_prefix(
    out: &mut Vec<u8>,
    width: usize,
    field: &'static str,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    debug_assert!(width == 1 || width == 2);
    let at = out.len();
    out.extend(core::iter::repeat_n(0xff, width));
    body(out)?;
    let len = out.len() - at - width;
    let max = if width == 1 { 0xff } else { 0xffff };
    if len > max {
        return Err(EncodeError::TooLong { field, len, max });
    }
    let be = (len as u16).to_be_bytes();
    out[at..at + width].copy_from_slice(&be[2 - width..]);
    Ok(())
}

/// Appends a length-prefixed byte string.
pub(crate) fn put_prefixed(
    out: &mut Vec<u8>,
    width: usize,
    field: &'static str,
    data: &[u8],
) -> Result<(), EncodeError> {
    with_len_prefix(out, width, field, |out| {
        out.extend_from_slice(data);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_names_field_and_offset() {
        let mut r = Reader::new(&[1, 2, 3], "T");
        r.take(2, "a").unwrap();
        let e = r.u16("b").unwrap_err();
        assert_eq!(r.bad_value("a", 1, "test").offset, 0, "a bad value is reported where it was read");
        assert_eq!(e.offset, 2);
        assert_eq!(e.field, "b");
        assert_eq!(e.kind, DecodeErrorKind::Truncated { needed: 2, left: 1 });
        assert_eq!(e.to_string(), "T payload at offset 2, field `b`: truncated: needs 2 bytes, 1 left");
    }

    #[test]
    fn sub_reader_keeps_absolute_offsets() {
        let mut r = Reader::new(&[0, 0, 0, 9, 9], "X");
        r.take(1, "a").unwrap();
        let mut s = r.sub(3, "b").unwrap();
        assert_eq!(s.offset(), 1);
        s.take(3, "c").unwrap();
        assert!(s.expect_empty("c").is_ok());
        assert_eq!(r.offset(), 4);
    }

    #[test]
    fn length_prefix_is_written_back() {
        let mut out = vec![];
        put_prefixed(&mut out, 2, "x", &[7; 3]).unwrap();
        assert_eq!(out, [0, 3, 7, 7, 7]);
        let mut out = vec![];
        assert!(matches!(put_prefixed(&mut out, 1, "x", &[0; 256]), Err(EncodeError::TooLong { .. })));
    }

    #[test]
    fn abandoned_length_prefix_stays_at_maximum() {
        let mut out = vec![];
        let r = with_len_prefix(&mut out, 2, "x", |out| {
            out.push(1);
            Err(EncodeError::Invalid { field: "x", why: "test" })
        });
        assert!(r.is_err());
        assert_eq!(&out[..2], &[0xff, 0xff]);
    }
}
