//! The player's side: [`Recording`] reads a recording back, sample for sample.

use core::cmp::Ordering;
use core::time::Duration;

use super::codec::{FourCc, Next, Node, Reader, next_box, node};
use super::oma::{CommonHeaders, StkmTrackInfo, full_v0};
use super::writer::{TRUN_CTO, TRUN_DATA_OFFSET, TRUN_DURATION, TRUN_FIRST_FLAGS, TRUN_FLAGS, TRUN_SIZE};
use super::{
    BRAND_PDCF, ENCRYPTION_AES_128_CTR, MediaKind, MediaTrack, PADDING_NONE, PdcfError, PdcfHeader, SCHEME_ODKM,
    from_ticks,
};
use crate::ismacryp::{IV_LEN, KEY_INDICATOR_LEN, SampleHeader};

const FILE: FourCc = FourCc(*b"file");

/// One recorded media sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaSample<'a> {
    /// Decode time in media timescale units (the RTP clock rate) since the recording's start.
    pub decode_time: u64,
    /// Composition (presentation − decode) offset in the same units.
    pub composition_offset: i64,
    /// The ISMACryp header (IV, key indicator) at the start of [`Self::sample`].
    pub header: SampleHeader,
    /// The whole stored sample: `IV ‖ key indicator ‖ encrypted AU`, as
    /// [`crate::ismacryp::IsmacrypReceiver::unprotect`] takes it.
    pub sample: &'a [u8],
    timescale: u32,
}

impl MediaSample<'_> {
    /// Presentation time in timescale units (the RTP timing as recorded), never below 0.
    #[must_use]
    pub fn presentation_time(&self) -> u64 {
        let t = i128::from(self.decode_time) + i128::from(self.composition_offset);
        u64::try_from(t.max(0)).unwrap_or(u64::MAX)
    }

    /// Decode time since the recording's start.
    #[must_use]
    pub fn time(&self) -> Duration {
        from_ticks(self.decode_time, self.timescale)
    }
}

/// One recorded STKM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StkmSample<'a> {
    /// Reception time in STKM-track timescale units (milliseconds in Keycast files).
    pub decode_time: u64,
    /// The STKM as received.
    pub stkm: &'a [u8],
    timescale: u32,
}

impl StkmSample<'_> {
    /// Reception time since the recording's start.
    #[must_use]
    pub fn time(&self) -> Duration {
        from_ticks(self.decode_time, self.timescale)
    }
}

/// A sample in play-back order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'r, 'a> {
    /// Hand this STKM to the card to get its TEK.
    Stkm(&'r StkmSample<'a>),
    /// Decrypt and play this sample.
    Media(&'r MediaSample<'a>),
}

impl Event<'_, '_> {
    /// Time since the recording's start.
    #[must_use]
    pub fn time(&self) -> Duration {
        match self {
            Self::Stkm(s) => s.time(),
            Self::Media(m) => m.time(),
        }
    }
}

/// A recording read back: its header and its samples, borrowed from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording<'a> {
    /// The header as written (media track, OMA headers, `oksd` fields, salt).
    pub header: PdcfHeader,
    /// The `schm` scheme version (0x00000300 in Keycast files).
    pub scheme_version: u32,
    /// Timescale of the STKM track (1000 in Keycast files).
    pub stkm_timescale: u32,
    /// Media samples in file order.
    pub media: Vec<MediaSample<'a>>,
    /// STKMs in arrival order.
    pub stkms: Vec<StkmSample<'a>>,
    /// Whether the recording was finished (ends with its `mfra`).
    pub finished: bool,
    /// How many bytes of the input were read: all of it for a finished file, up to the end of
    /// the last complete fragment for an interrupted one.
    pub complete_len: usize,
}

#[derive(Clone, Copy, Default)]
struct TrackDefaults {
    duration: u32,
    size: u32,
}

struct Track {
    id: u32,
    timescale: u32,
    defaults: TrackDefaults,
    /// Decode time after the last sample read (used when a fragment has no `tfdt`).
    end: u64,
}

impl<'a> Recording<'a> {
    /// Reads a finished recording; anything else, including any prefix of one, is an error.
    pub fn parse(data: &'a [u8]) -> Result<Self, PdcfError> {
        Self::read(data, false)
    }

    /// Reads a recording that may have been cut short: everything up to its last complete
    /// fragment (`moof` + `mdat`). The header (`ftyp` + `moov`) must be complete; damage inside
    /// a complete fragment is still an error.
    pub fn parse_interrupted(data: &'a [u8]) -> Result<Self, PdcfError> {
        Self::read(data, true)
    }

    /// Media samples and STKMs merged in time order (an STKM first on a tie), as play-back
    /// needs them.
    pub fn events(&self) -> impl Iterator<Item = Event<'_, 'a>> + '_ {
        let (mut m, mut s) = (self.media.iter().peekable(), self.stkms.iter().peekable());
        core::iter::from_fn(move || match (m.peek(), s.peek()) {
            (Some(a), Some(b)) => {
                // a.decode/a.timescale vs b.decode/b.timescale, compared exactly.
                let lhs = u128::from(a.decode_time) * u128::from(b.timescale);
                let rhs = u128::from(b.decode_time) * u128::from(a.timescale);
                if rhs.cmp(&lhs) != Ordering::Greater { s.next().map(Event::Stkm) } else { m.next().map(Event::Media) }
            }
            (Some(_), None) => m.next().map(Event::Media),
            (None, _) => s.next().map(Event::Stkm),
        })
    }

    fn read(data: &'a [u8], interrupted: bool) -> Result<Self, PdcfError> {
        let mut r = Reader::new(data, 0);
        let mut top = Vec::new();
        loop {
            match next_box(&mut r) {
                Ok(Next::Box(b)) => top.push(b),
                Ok(Next::End) => break,
                // A cut-off tail: keep what came before it.
                Err(_) if interrupted => break,
                Err(e) => return Err(e),
            }
        }
        let mut it = top.iter().peekable();
        let ftyp = it.next().ok_or(PdcfError::MissingBox { parent: FILE, kind: FourCc(*b"ftyp") })?;
        if ftyp.kind.0 != *b"ftyp" {
            return Err(PdcfError::UnexpectedBox { offset: ftyp.start, kind: ftyp.kind });
        }
        check_brand(ftyp)?;
        let moov = loop {
            match it.next() {
                Some(b) if b.kind.0 == *b"moov" => break b,
                Some(b) if is_skippable(b.kind) => {}
                Some(b) => return Err(PdcfError::UnexpectedBox { offset: b.start, kind: b.kind }),
                None => return Err(PdcfError::MissingBox { parent: FILE, kind: FourCc(*b"moov") }),
            }
        };
        let moov = node(*moov, 0)?;
        let mut rec = read_moov(&moov)?;
        let (mut media_track, mut stkm_track) = tracks(&moov, rec.header.media.clock_rate, rec.stkm_timescale)?;
        rec.complete_len = moov.raw.start + moov.raw.len();
        let mut moofs = Vec::new();
        let mut last_seq = 0u32;
        while let Some(b) = it.next() {
            match &b.kind.0 {
                b"moof" => {
                    let Some(mdat) = it.next_if(|n| n.kind.0 == *b"mdat") else {
                        if interrupted && it.peek().is_none() {
                            break;
                        }
                        return Err(PdcfError::MissingBox { parent: FourCc(*b"moof"), kind: FourCc(*b"mdat") });
                    };
                    let moof = node(*b, 0)?;
                    last_seq = read_moof(&moof, mdat, last_seq, &mut media_track, &mut stkm_track, &mut rec)?;
                    moofs.push(b.start as u64);
                    rec.complete_len = mdat.start + mdat.len();
                }
                b"mfra" if it.peek().is_none() => {
                    read_mfra(&node(*b, 0)?, &moofs)?;
                    rec.finished = true;
                    rec.complete_len = data.len();
                }
                _ if is_skippable(b.kind) => rec.complete_len = b.start + b.len(),
                _ => return Err(PdcfError::UnexpectedBox { offset: b.start, kind: b.kind }),
            }
        }
        if !rec.finished && !interrupted {
            return Err(PdcfError::Unfinished);
        }
        Ok(rec)
    }
}

/// Top-level boxes a reader skips (ISO/IEC 14496-12 §8.1.2 free space, user data).
fn is_skippable(kind: FourCc) -> bool {
    matches!(&kind.0, b"free" | b"skip" | b"udta")
}

fn check_brand(ftyp: &super::codec::RawBox<'_>) -> Result<(), PdcfError> {
    let mut r = ftyp.reader();
    let major = FourCc(r.array("ftyp major_brand")?);
    r.u32("ftyp minor_version")?;
    let mut ok = major == BRAND_PDCF;
    while r.left() >= 4 {
        ok |= FourCc(r.array("ftyp compatible_brands")?) == BRAND_PDCF;
    }
    r.expect_empty("ftyp")?;
    if ok { Ok(()) } else { Err(PdcfError::BadValue { offset: ftyp.start + 8, field: "ftyp brands (no 'opf2')" }) }
}

/// Track ID and timescale of a `trak`, and its first sample entry.
fn trak_basics<'n, 'a>(trak: &'n Node<'a>) -> Result<(u32, u32, &'n Node<'a>), PdcfError> {
    let tkhd = trak.child(b"tkhd")?;
    let mut r = tkhd.fields();
    let (v, _) = r.full_header()?;
    r.take(if v == 1 { 16 } else { 8 }, "tkhd times")?;
    let id = r.u32("tkhd track_ID")?;
    let mdia = trak.child(b"mdia")?;
    let mdhd = mdia.child(b"mdhd")?;
    let mut r = mdhd.fields();
    let (v, _) = r.full_header()?;
    r.take(if v == 1 { 16 } else { 8 }, "mdhd times")?;
    let at = r.offset();
    let timescale = r.u32("mdhd timescale")?;
    if timescale == 0 {
        return Err(PdcfError::BadValue { offset: at, field: "mdhd timescale" });
    }
    let stsd = mdia.child(b"minf")?.child(b"stbl")?.child(b"stsd")?;
    let entry = stsd.children.first().ok_or(PdcfError::MissingBox { parent: stsd.kind(), kind: FourCc(*b"enca") })?;
    Ok((id, timescale, entry))
}

/// The header out of `moov`: the media track's entry and protection boxes, the STKM track's
/// `oksd`.
fn read_moov(moov: &Node<'_>) -> Result<Recording<'static>, PdcfError> {
    let mut media = None;
    let mut stkm = None;
    for trak in moov.children_of(b"trak") {
        let (_, timescale, entry) = trak_basics(trak)?;
        let slot_taken = |taken: bool| {
            if taken { Err(PdcfError::UnexpectedBox { offset: trak.raw.start, kind: trak.kind() }) } else { Ok(()) }
        };
        match &entry.kind().0 {
            b"enca" | b"encv" => {
                slot_taken(media.is_some())?;
                media = Some(read_media_entry(entry, timescale)?);
            }
            b"oksd" => {
                slot_taken(stkm.is_some())?;
                let mut r = entry.fields();
                r.take(8, "oksd SampleEntry")?;
                stkm = Some((StkmTrackInfo::read_fields(&mut r)?, timescale));
            }
            // Other tracks are not part of a Keycast recording but do no harm.
            _ => {}
        }
    }
    let (media, headers, salt, scheme_version) =
        media.ok_or(PdcfError::MissingBox { parent: moov.kind(), kind: FourCc(*b"enca") })?;
    let (stkm_track, stkm_timescale) =
        stkm.ok_or(PdcfError::MissingBox { parent: moov.kind(), kind: FourCc(*b"oksd") })?;
    Ok(Recording {
        header: PdcfHeader { media, headers, stkm_track, salt },
        scheme_version,
        stkm_timescale,
        media: Vec::new(),
        stkms: Vec::new(),
        finished: false,
        complete_len: 0,
    })
}

type MediaEntry = (MediaTrack, CommonHeaders, [u8; 8], u32);

fn read_media_entry(entry: &Node<'_>, clock_rate: u32) -> Result<MediaEntry, PdcfError> {
    let mut r = entry.fields();
    r.take(8, "SampleEntry")?;
    let kind = if entry.kind().0 == *b"enca" {
        r.take(8, "AudioSampleEntry reserved")?;
        MediaKind::Audio { channel_count: r.u16("channelcount")? }
    } else {
        r.take(16, "VisualSampleEntry reserved")?;
        MediaKind::Video { width: r.u16("width")?, height: r.u16("height")? }
    };
    let mut codec_config = Vec::new();
    for c in entry.children.iter().filter(|c| c.kind().0 != *b"sinf") {
        codec_config.extend_from_slice(c.raw.whole);
    }
    let sinf = entry.child(b"sinf")?;
    let original_format = FourCc(sinf.child(b"frma")?.fields().array("frma data_format")?);
    let schm = sinf.child(b"schm")?;
    let mut r = schm.fields();
    full_v0(&mut r, "schm version")?;
    let at = r.offset();
    let scheme = FourCc(r.array("schm scheme_type")?);
    if scheme != SCHEME_ODKM {
        return Err(PdcfError::Unsupported {
            offset: at,
            field: "schm scheme_type",
            value: u32::from_be_bytes(scheme.0).into(),
        });
    }
    let scheme_version = r.u32("schm scheme_version")?;
    let odkm = sinf.child(b"schi")?.child(b"odkm")?;
    full_v0(&mut odkm.fields(), "odkm version")?;
    let ohdr = odkm.child(b"ohdr")?;
    let (headers, method, padding, _) = CommonHeaders::read_ohdr(ohdr)?;
    let at = ohdr.raw.start + ohdr.raw.header_len + 4;
    if method != ENCRYPTION_AES_128_CTR {
        return Err(PdcfError::Unsupported { offset: at, field: "ohdr EncryptionMethod", value: method.into() });
    }
    if padding != PADDING_NONE {
        return Err(PdcfError::Unsupported { offset: at + 1, field: "ohdr PaddingScheme", value: padding.into() });
    }
    let odaf = odkm.child(b"odaf")?;
    let mut r = odaf.fields();
    full_v0(&mut r, "odaf version")?;
    let at = r.offset();
    let (sel, kil, ivl) = (r.u8("odaf flags")?, r.u8("odaf key_indicator_length")?, r.u8("odaf IV_length")?);
    r.expect_empty("odaf")?;
    // The sample layout P-9 fixes: no selective encryption, key indicator 6, IV 8.
    if sel & 0x80 != 0 || usize::from(kil) != KEY_INDICATOR_LEN || usize::from(ivl) != IV_LEN {
        let value = u64::from(u32::from_be_bytes([0, sel, kil, ivl]));
        return Err(PdcfError::Unsupported { offset: at, field: "odaf sample format", value });
    }
    let oslt = odkm.child(b"oslt")?;
    let mut r = oslt.fields();
    full_v0(&mut r, "oslt version")?;
    let at = r.offset();
    let bits = r.u8("oslt salt length")?;
    if bits != 64 {
        return Err(PdcfError::Unsupported { offset: at, field: "oslt salt length", value: bits.into() });
    }
    let salt = r.array("oslt salt")?;
    r.expect_empty("oslt")?;
    let media = MediaTrack { kind, original_format, clock_rate, codec_config };
    Ok((media, headers, salt, scheme_version))
}

/// The two tracks with their `trex` defaults.
fn tracks(moov: &Node<'_>, media_ts: u32, stkm_ts: u32) -> Result<(Track, Track), PdcfError> {
    let mut media = Track { id: 0, timescale: media_ts, defaults: TrackDefaults::default(), end: 0 };
    let mut stkm = Track { id: 0, timescale: stkm_ts, defaults: TrackDefaults::default(), end: 0 };
    for trak in moov.children_of(b"trak") {
        let (id, _, entry) = trak_basics(trak)?;
        match &entry.kind().0 {
            b"enca" | b"encv" => media.id = id,
            b"oksd" => stkm.id = id,
            _ => {}
        }
    }
    if media.id == stkm.id {
        return Err(PdcfError::BadValue { offset: moov.raw.start, field: "track_ID (media = STKM)" });
    }
    if let Ok(mvex) = moov.child(b"mvex") {
        for trex in mvex.children_of(b"trex") {
            let mut r = trex.fields();
            full_v0(&mut r, "trex version")?;
            let id = r.u32("trex track_ID")?;
            r.u32("trex default_sample_description_index")?;
            let d = TrackDefaults {
                duration: r.u32("trex default_sample_duration")?,
                size: r.u32("trex default_sample_size")?,
            };
            r.u32("trex default_sample_flags")?;
            r.expect_empty("trex")?;
            for t in [&mut media, &mut stkm] {
                if t.id == id {
                    t.defaults = d;
                }
            }
        }
    }
    Ok((media, stkm))
}

/// Reads one fragment's samples into `rec`; returns its sequence number.
fn read_moof<'a>(
    moof: &Node<'a>,
    mdat: &super::codec::RawBox<'a>,
    last_seq: u32,
    media: &mut Track,
    stkm: &mut Track,
    rec: &mut Recording<'a>,
) -> Result<u32, PdcfError> {
    let mfhd = moof.child(b"mfhd")?;
    let mut r = mfhd.fields();
    full_v0(&mut r, "mfhd version")?;
    let at = r.offset();
    let seq = r.u32("mfhd sequence_number")?;
    r.expect_empty("mfhd")?;
    if seq <= last_seq {
        return Err(PdcfError::BadValue { offset: at, field: "mfhd sequence_number (not increasing)" });
    }
    let mdat_body = mdat.start + mdat.header_len;
    let mdat_end = mdat.start + mdat.len();
    for traf in moof.children_of(b"traf") {
        let tfhd = traf.child(b"tfhd")?;
        let mut r = tfhd.fields();
        let flags = full_v0(&mut r, "tfhd version")?;
        let id = r.u32("tfhd track_ID")?;
        let is_media = id == media.id;
        let track = if is_media {
            &mut *media
        } else if id == stkm.id {
            &mut *stkm
        } else {
            // A track this reader does not know: skip it.
            continue;
        };
        // The base is the moof's first byte (default-base-is-moof, which Keycast writes) unless
        // an explicit base_data_offset is given. [chosen: no implicit chaining between trafs]
        let mut base = moof.raw.start as u64;
        let mut defaults = track.defaults;
        if flags & 0x01 != 0 {
            base = r.u64("tfhd base_data_offset")?;
        }
        if flags & 0x02 != 0 {
            r.u32("tfhd sample_description_index")?;
        }
        if flags & 0x08 != 0 {
            defaults.duration = r.u32("tfhd default_sample_duration")?;
        }
        if flags & 0x10 != 0 {
            defaults.size = r.u32("tfhd default_sample_size")?;
        }
        if flags & 0x20 != 0 {
            r.u32("tfhd default_sample_flags")?;
        }
        r.expect_empty("tfhd")?;
        let mut time = track.end;
        if let Ok(tfdt) = traf.child(b"tfdt") {
            let mut r = tfdt.fields();
            let (v, _) = r.full_header()?;
            time = if v == 1 { r.u64("tfdt baseMediaDecodeTime")? } else { r.u32("tfdt baseMediaDecodeTime")?.into() };
            r.expect_empty("tfdt")?;
        }
        let mut next_data = base;
        for trun in traf.children_of(b"trun") {
            let mut r = trun.fields();
            let (version, flags) = r.full_header()?;
            let count = r.u32("trun sample_count")?;
            if flags & TRUN_DATA_OFFSET != 0 {
                let off = i64::from(r.u32("trun data_offset")?.cast_signed());
                next_data = base
                    .checked_add_signed(off)
                    .ok_or(PdcfError::BadValue { offset: r.offset() - 4, field: "trun data_offset" })?;
            }
            if flags & TRUN_FIRST_FLAGS != 0 {
                r.u32("trun first_sample_flags")?;
            }
            let per = 4 * [TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_CTO].iter().filter(|f| flags & **f != 0).count();
            // Refuse a count the box cannot hold before allocating anything for it.
            let needed = (count as usize).saturating_mul(per);
            if needed > r.left() || (per == 0 && count as usize > mdat.body.len()) {
                return Err(PdcfError::Truncated { offset: r.offset(), field: "trun samples", needed, left: r.left() });
            }
            for _ in 0..count {
                let duration =
                    if flags & TRUN_DURATION != 0 { r.u32("trun sample_duration")? } else { defaults.duration };
                let size = if flags & TRUN_SIZE != 0 { r.u32("trun sample_size")? } else { defaults.size };
                if flags & TRUN_FLAGS != 0 {
                    r.u32("trun sample_flags")?;
                }
                let cto = if flags & TRUN_CTO != 0 {
                    let raw = r.u32("trun sample_composition_time_offset")?;
                    if version == 0 { i64::from(raw) } else { i64::from(raw.cast_signed()) }
                } else {
                    0
                };
                let at = r.offset();
                let start = usize::try_from(next_data).unwrap_or(usize::MAX);
                let end = start.saturating_add(size as usize);
                if start < mdat_body || end > mdat_end {
                    return Err(PdcfError::BadValue { offset: at, field: "sample data outside the fragment's mdat" });
                }
                let bytes = &mdat.whole[start - mdat.start..end - mdat.start];
                next_data = end as u64;
                if is_media {
                    let index = rec.media.len();
                    let (header, _) =
                        SampleHeader::parse(bytes).map_err(|source| PdcfError::Sample { index, source })?;
                    let timescale = track.timescale;
                    rec.media.push(MediaSample {
                        decode_time: time,
                        composition_offset: cto,
                        header,
                        sample: bytes,
                        timescale,
                    });
                } else {
                    // Every STKM takes at least one byte of the mdat, which bounds the sample
                    // count by the input length.
                    if bytes.is_empty() {
                        return Err(PdcfError::BadValue { offset: at, field: "empty STKM sample" });
                    }
                    rec.stkms.push(StkmSample { decode_time: time, stkm: bytes, timescale: track.timescale });
                }
                time = time.saturating_add(duration.into());
            }
            r.expect_empty("trun")?;
        }
        track.end = time;
    }
    Ok(seq)
}

/// Checks the `mfra`: each `tfra` entry points at a fragment read, and `mfro` gives its size.
fn read_mfra(mfra: &Node<'_>, moofs: &[u64]) -> Result<(), PdcfError> {
    for tfra in mfra.children_of(b"tfra") {
        let mut r = tfra.fields();
        let (v, _) = r.full_header()?;
        r.u32("tfra track_ID")?;
        let sizes = r.u32("tfra length sizes")?;
        let n = r.u32("tfra number_of_entry")?;
        let lens = [(sizes >> 4) & 3, (sizes >> 2) & 3, sizes & 3].map(|l| l as usize + 1);
        let per = if v == 1 { 16 } else { 8 } + lens.iter().sum::<usize>();
        let needed = (n as usize).saturating_mul(per);
        if needed != r.left() {
            return Err(PdcfError::BadValue { offset: r.offset(), field: "tfra entries" });
        }
        for _ in 0..n {
            let moof = if v == 1 {
                r.u64("tfra time")?;
                r.u64("tfra moof_offset")?
            } else {
                r.u32("tfra time")?;
                r.u32("tfra moof_offset")?.into()
            };
            if moofs.binary_search(&moof).is_err() {
                return Err(PdcfError::BadValue { offset: r.offset(), field: "tfra moof_offset" });
            }
            for l in lens {
                r.take(l, "tfra numbers")?;
            }
        }
    }
    let mfro = mfra.child(b"mfro")?;
    let mut r = mfro.fields();
    full_v0(&mut r, "mfro version")?;
    let at = r.offset();
    let size = r.u32("mfro size")?;
    r.expect_empty("mfro")?;
    if size as usize != mfra.raw.len() {
        return Err(PdcfError::BadValue { offset: at, field: "mfro size" });
    }
    Ok(())
}
