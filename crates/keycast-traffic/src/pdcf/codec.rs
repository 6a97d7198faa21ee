//! A bounded ISO base media file format (ISO/IEC 14496-12) box codec: a cursor over a byte
//! slice, a box writer that fills in each size once its body is written, and a box-tree parser
//! that checks every size against its parent and bounds the nesting depth.
//!
//! Box header (ISO/IEC 14496-12 §4.2): `size (4) ‖ type (4) [‖ largesize (8) when size = 1]`;
//! size 0 means "to the end of the enclosing data". A FullBox adds `version (1) ‖ flags (3)`.

use core::fmt;

use super::PdcfError;

/// Deepest box nesting the parser follows. Keycast's deepest path (`moov/trak/mdia/minf/stbl/
/// stsd/enca/sinf/schi/odkm/ohdr/obki`) is 12 levels. \[chosen\]
pub const MAX_DEPTH: usize = 16;

/// A four-character code: a box type, brand, handler type or original format.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FourCc(pub [u8; 4]);

impl FourCc {
    /// The code from its four bytes.
    #[must_use]
    pub const fn new(code: &[u8; 4]) -> Self {
        Self(*code)
    }
}

impl fmt::Debug for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            // All four bytes are printable ASCII, checked just above.
            f.write_str(core::str::from_utf8(&self.0).unwrap_or("????"))
        } else {
            write!(f, "0x{:08x}", u32::from_be_bytes(self.0))
        }
    }
}

/// A cursor over a byte slice that remembers its offset in the whole input (for errors).
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, whose first byte is at `offset` in the whole input.
    pub(crate) fn new(buf: &'a [u8], offset: usize) -> Self {
        Self { buf, offset }
    }

    pub(crate) fn offset(&self) -> usize {
        self.offset
    }

    pub(crate) fn left(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        self.offset += self.buf.len();
        core::mem::take(&mut self.buf)
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], PdcfError> {
        if n > self.buf.len() {
            return Err(PdcfError::Truncated { offset: self.offset, field, needed: n, left: self.buf.len() });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        self.offset += n;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], PdcfError> {
        let b = self.take(N, field)?;
        // `take` returned exactly N bytes.
        Ok(b.try_into().expect("N bytes"))
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, PdcfError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, PdcfError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, PdcfError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, PdcfError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// FullBox `version (1) ‖ flags (3)`.
    pub(crate) fn full_header(&mut self) -> Result<(u8, u32), PdcfError> {
        let v = self.u32("FullBox version/flags")?;
        // The top byte is the version, the rest the flags.
        Ok(((v >> 24) as u8, v & 0x00ff_ffff))
    }

    /// A length-prefixed (u16) UTF-8 string.
    pub(crate) fn string_u16(&mut self, field: &'static str) -> Result<String, PdcfError> {
        let len = self.u16(field)?;
        self.string(usize::from(len), field)
    }

    pub(crate) fn string(&mut self, len: usize, field: &'static str) -> Result<String, PdcfError> {
        let at = self.offset;
        let b = self.take(len, field)?;
        String::from_utf8(b.to_vec()).map_err(|_| PdcfError::BadValue { offset: at, field })
    }

    /// Refuses bytes left over at the end of a structure.
    pub(crate) fn expect_empty(&self, field: &'static str) -> Result<(), PdcfError> {
        if self.buf.is_empty() { Ok(()) } else { Err(PdcfError::TrailingData { offset: self.offset, field }) }
    }
}

/// One box as found in the input: its type, where it starts, and its body (after the header).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawBox<'a> {
    pub(crate) kind: FourCc,
    /// Offset of the box's first byte in the whole input.
    pub(crate) start: usize,
    /// Header length (8 or 16).
    pub(crate) header_len: usize,
    pub(crate) body: &'a [u8],
    /// The whole box, header included.
    pub(crate) whole: &'a [u8],
}

impl<'a> RawBox<'a> {
    /// Total length of the box, header included.
    pub(crate) fn len(&self) -> usize {
        self.header_len + self.body.len()
    }

    /// A reader over the body.
    pub(crate) fn reader(&self) -> Reader<'a> {
        Reader::new(self.body, self.start + self.header_len)
    }
}

/// What happened when reading the next box of a sequence.
pub(crate) enum Next<'a> {
    Box(RawBox<'a>),
    /// The input ended cleanly.
    End,
}

/// Reads the next box of `r`. A header or body that does not fit in `r` is
/// [`PdcfError::Truncated`]; a size smaller than its own header is [`PdcfError::BadBoxSize`].
pub(crate) fn next_box<'a>(r: &mut Reader<'a>) -> Result<Next<'a>, PdcfError> {
    if r.left() == 0 {
        return Ok(Next::End);
    }
    let start = r.offset();
    let from = r.buf;
    let size32 = r.u32("box size")?;
    let kind = FourCc(r.array("box type")?);
    let (size, header_len) = match size32 {
        // ISO/IEC 14496-12 §4.2: size 1 means a 64-bit largesize follows.
        1 => (r.u64("box largesize")?, 16usize),
        // Size 0: the box runs to the end of the enclosing data.
        0 => ((r.left() + 8) as u64, 8usize),
        n => (u64::from(n), 8usize),
    };
    let Some(body_len) = size.checked_sub(header_len as u64) else {
        return Err(PdcfError::BadBoxSize { offset: start, kind, size });
    };
    let body_len = usize::try_from(body_len).unwrap_or(usize::MAX);
    if body_len > r.left() {
        return Err(PdcfError::Truncated { offset: r.offset(), field: "box body", needed: body_len, left: r.left() });
    }
    let body = r.take(body_len, "box body")?;
    let whole = &from[..header_len + body_len];
    Ok(Next::Box(RawBox { kind, start, header_len, body, whole }))
}

/// Every box of a box sequence (e.g. a container's body after its own fields).
pub(crate) fn boxes<'a>(mut r: Reader<'a>) -> Result<Vec<RawBox<'a>>, PdcfError> {
    let mut out = Vec::new();
    while let Next::Box(b) = next_box(&mut r)? {
        out.push(b);
    }
    Ok(out)
}

/// A parsed box with the children of the container types Keycast reads.
#[derive(Clone, Debug)]
pub(crate) struct Node<'a> {
    pub(crate) raw: RawBox<'a>,
    /// Bytes of the body before the children (a FullBox's version/flags, a sample entry's
    /// fields); the whole body for a leaf.
    pub(crate) fields: &'a [u8],
    pub(crate) children: Vec<Node<'a>>,
}

impl<'a> Node<'a> {
    pub(crate) fn kind(&self) -> FourCc {
        self.raw.kind
    }

    /// A reader over the box's own fields.
    pub(crate) fn fields(&self) -> Reader<'a> {
        Reader::new(self.fields, self.raw.start + self.raw.header_len)
    }

    /// The first child of this type.
    pub(crate) fn child(&self, kind: &[u8; 4]) -> Result<&Node<'a>, PdcfError> {
        self.children
            .iter()
            .find(|c| c.raw.kind.0 == *kind)
            .ok_or(PdcfError::MissingBox { parent: self.raw.kind, kind: FourCc(*kind) })
    }

    pub(crate) fn children_of<'s>(&'s self, kind: &'s [u8; 4]) -> impl Iterator<Item = &'s Node<'a>> + 's {
        self.children.iter().filter(move |c| c.raw.kind.0 == *kind)
    }
}

/// Where the children of a container box start in its body, or `None` for a leaf.
/// Sources: ISO/IEC 14496-12 §8 for the ISO boxes, facts-ietf-oma.md §8.1 for the OMA ones.
fn children_at(kind: &[u8; 4], body: &[u8]) -> Option<usize> {
    match kind {
        // Plain containers (ISO/IEC 14496-12 §8.2–8.8; OMA DRM `mdri`).
        b"moov" | b"trak" | b"mdia" | b"minf" | b"dinf" | b"stbl" | b"mvex" | b"moof" | b"traf" | b"sinf" | b"schi"
        | b"mfra" | b"edts" | b"mdri" => Some(0),
        // FullBox containers: version/flags first (`odkm`, `odrm` OMA; `dref`, `stsd` add a count).
        b"odkm" | b"odrm" => Some(4),
        b"stsd" | b"dref" => Some(8),
        // AudioSampleEntry: SampleEntry (8) + 20 bytes of audio fields (§8.5.2.2).
        b"enca" => Some(28),
        // VisualSampleEntry: SampleEntry (8) + 70 bytes of visual fields (§8.5.2.2).
        b"encv" => Some(78),
        // ohdr: FullBox (4), 2 + 8 bytes, three u16 lengths, then the three strings.
        b"ohdr" => {
            let lens = body.get(14..20)?;
            let sum = usize::from(u16::from_be_bytes([lens[0], lens[1]]))
                + usize::from(u16::from_be_bytes([lens[2], lens[3]]))
                + usize::from(u16::from_be_bytes([lens[4], lens[5]]));
            Some(20 + sum)
        }
        // odhe: FullBox (4), ContentTypeLength (1), ContentType, then boxes.
        b"odhe" => Some(5 + usize::from(*body.get(4)?)),
        _ => None,
    }
}

/// Parses one box's children (if it is a container) recursively, at nesting depth `depth`.
pub(crate) fn node<'a>(raw: RawBox<'a>, depth: usize) -> Result<Node<'a>, PdcfError> {
    if depth > MAX_DEPTH {
        return Err(PdcfError::TooDeep { offset: raw.start, depth });
    }
    let Some(at) = children_at(&raw.kind.0, raw.body) else {
        return Ok(Node { raw, fields: raw.body, children: Vec::new() });
    };
    if at > raw.body.len() {
        let offset = raw.start + raw.header_len;
        return Err(PdcfError::Truncated { offset, field: "box fields", needed: at, left: raw.body.len() });
    }
    let (fields, rest) = raw.body.split_at(at);
    let children = boxes(Reader::new(rest, raw.start + raw.header_len + at))?
        .into_iter()
        .map(|c| node(c, depth + 1))
        .collect::<Result<_, _>>()?;
    Ok(Node { raw, fields, children })
}

/// Writes boxes: each size is written once, after the body, through [`BoxWriter::close`].
pub(crate) struct BoxWriter<'o> {
    out: &'o mut Vec<u8>,
    start: usize,
}

impl<'o> BoxWriter<'o> {
    /// Starts a box: a placeholder size of `ff ff ff ff` (so a body left half-written never
    /// reads as a valid size) and the type.
    pub(crate) fn open(out: &'o mut Vec<u8>, kind: &[u8; 4]) -> Self {
        let start = out.len();
        out.extend_from_slice(&[0xff; 4]);
        out.extend_from_slice(kind);
        Self { out, start }
    }

    /// Starts a FullBox.
    pub(crate) fn open_full(out: &'o mut Vec<u8>, kind: &[u8; 4], version: u8, flags: u32) -> Self {
        let w = Self::open(out, kind);
        w.out.extend_from_slice(&((u32::from(version) << 24) | (flags & 0x00ff_ffff)).to_be_bytes());
        w
    }

    pub(crate) fn out(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Writes the real size.
    pub(crate) fn close(self) {
        let size = self.out.len() - self.start;
        // Callers keep every box below 4 GiB (the writer limits fragment and header sizes).
        let size = u32::try_from(size).expect("box below 4 GiB");
        self.out[self.start..self.start + 4].copy_from_slice(&size.to_be_bytes());
    }
}

/// A box written by `body`.
pub(crate) fn put_box(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let mut w = BoxWriter::open(out, kind);
    body(w.out());
    w.close();
}

/// A FullBox written by `body`.
pub(crate) fn put_full(out: &mut Vec<u8>, kind: &[u8; 4], version: u8, flags: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let mut w = BoxWriter::open_full(out, kind, version, flags);
    body(w.out());
    w.close();
}

/// Appends a big-endian integer.
pub(crate) trait PutBe {
    fn put(self, out: &mut Vec<u8>);
}

macro_rules! put_be {
    ($($t:ty),*) => {$(
        impl PutBe for $t {
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
        }
    )*};
}
put_be!(u8, u16, u32, u64, i32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_filled_in_after_body() {
        let mut out = Vec::new();
        put_box(&mut out, b"moov", |o| put_full(o, b"mvhd", 1, 2, |o| 7u8.put(o)));
        assert_eq!(hex::encode(&out), "000000156d6f6f760000000d6d76686401000002".to_owned() + "07");
    }

    #[test]
    fn rejects_size_smaller_than_header() {
        let data = [0, 0, 0, 4, b'f', b'r', b'e', b'e'];
        let err = next_box(&mut Reader::new(&data, 0)).err().unwrap();
        assert_eq!(err, PdcfError::BadBoxSize { offset: 0, kind: FourCc(*b"free"), size: 4 });
    }

    #[test]
    fn size_zero_runs_to_end() {
        let data = [0, 0, 0, 0, b'm', b'd', b'a', b't', 1, 2, 3];
        let Next::Box(b) = next_box(&mut Reader::new(&data, 0)).unwrap() else { panic!() };
        assert_eq!(b.body, [1, 2, 3]);
    }

    #[test]
    fn rejects_deep_nesting() {
        let mut data = Vec::new();
        for _ in 0..40 {
            let mut outer = Vec::new();
            put_box(&mut outer, b"moov", |o| o.extend_from_slice(&data));
            data = outer;
        }
        let Next::Box(b) = next_box(&mut Reader::new(&data, 0)).unwrap() else { panic!() };
        assert!(matches!(node(b, 0), Err(PdcfError::TooDeep { .. })));
    }
}
