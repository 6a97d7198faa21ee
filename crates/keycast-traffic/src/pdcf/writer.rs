//! The recorder's side: [`PdcfWriter`] turns pushed samples into byte chunks to append.

use core::time::Duration;

use super::codec::{BoxWriter, PutBe, Reader, boxes, put_box, put_full};
use super::oma::too_long;
use super::{
    BRAND_PDCF, ENCRYPTION_AES_128_CTR, MAX_FRAGMENT_BYTES, MEDIA_TRACK_ID, MediaKind, PADDING_NONE, PdcfError,
    PdcfHeader, SCHEME_ODKM, SCHEME_VERSION, STKM_TIMESCALE, STKM_TRACK_ID, to_ticks,
};
use crate::ismacryp::{IV_LEN, KEY_INDICATOR_LEN, SampleHeader};

/// The unity matrix of `mvhd`/`tkhd` (ISO/IEC 14496-12 §8.2.2).
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];
/// `tfhd` flag default-base-is-moof (§8.8.7).
pub(super) const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun` flags (§8.8.8).
pub(super) const TRUN_DATA_OFFSET: u32 = 0x001;
pub(super) const TRUN_FIRST_FLAGS: u32 = 0x004;
pub(super) const TRUN_DURATION: u32 = 0x100;
pub(super) const TRUN_SIZE: u32 = 0x200;
pub(super) const TRUN_FLAGS: u32 = 0x400;
pub(super) const TRUN_CTO: u32 = 0x800;

#[derive(Clone, Copy)]
struct Pending {
    decode: u64,
    cto: i32,
    size: u32,
}

/// One track's samples of the fragment being built.
#[derive(Default)]
struct TrackBuf {
    samples: Vec<Pending>,
    data: Vec<u8>,
    /// tfra entries: (time, moof offset, traf number).
    tfra: Vec<(u64, u64, u8)>,
}

/// Media timing state (see the module docs).
struct MediaClock {
    base_rtp: i64,
    first_offset: i64,
    last_rtp: u32,
    last_ext: i64,
}

/// Writes an adapted PDCF recording as it happens, in byte chunks the caller appends to the
/// file in order: the init chunk from [`new`](Self::new), then whatever
/// [`flush_fragment`](Self::flush_fragment) returns (call it every second or so; each call
/// makes the recording readable up to there), and last the chunk from
/// [`finish`](Self::finish).
pub struct PdcfWriter {
    clock_rate: u32,
    epoch: Option<Duration>,
    media_clock: Option<MediaClock>,
    last_media_decode: u64,
    last_stkm_time: u64,
    media: TrackBuf,
    stkm: TrackBuf,
    seq: u32,
    /// Bytes handed out so far (file offset of the next chunk's start).
    written: u64,
    /// Fragments closed but not yet handed out.
    out: Vec<u8>,
    media_count: usize,
}

impl core::fmt::Debug for PdcfWriter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PdcfWriter")
            .field("fragments", &self.seq)
            .field("pending_media", &self.media.samples.len())
            .field("pending_stkms", &self.stkm.samples.len())
            .finish_non_exhaustive()
    }
}

impl PdcfWriter {
    /// Starts a recording: the writer and the init chunk (`ftyp` + `moov`) that begins the
    /// file. Fails on a header that cannot be written (clock rate 0, a string too long for
    /// its length field, codec configuration that is not a box sequence).
    pub fn new(header: &PdcfHeader) -> Result<(Self, Vec<u8>), PdcfError> {
        if header.media.clock_rate == 0 {
            return Err(PdcfError::InvalidArgument("clock rate 0"));
        }
        header.headers.check()?;
        header.stkm_track.check()?;
        too_long(header.media.codec_config.len(), 1 << 20, "codec configuration")?;
        let cfg = boxes(Reader::new(&header.media.codec_config, 0))?;
        if cfg.iter().any(|b| b.kind.0 == *b"sinf") {
            return Err(PdcfError::InvalidArgument("codec configuration holds a 'sinf'"));
        }
        let init = init_segment(header);
        let writer = Self {
            clock_rate: header.media.clock_rate,
            epoch: None,
            media_clock: None,
            last_media_decode: 0,
            last_stkm_time: 0,
            media: TrackBuf::default(),
            stkm: TrackBuf::default(),
            seq: 0,
            written: init.len() as u64,
            out: Vec::new(),
            media_count: 0,
        };
        Ok((writer, init))
    }

    fn since_epoch(&mut self, now: Duration) -> Duration {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_sub(epoch)
    }

    /// Adds one ISMACryp-encrypted media sample as received: `sample` is `IV (8) ‖ key
    /// indicator (6) ‖ encrypted AU` (what [`crate::ismacryp::IsmacrypSender::protect`]
    /// makes), `rtp_timestamp` its RTP timestamp, `now` its reception time on the caller's
    /// monotonic clock.
    pub fn push_media(&mut self, now: Duration, rtp_timestamp: u32, sample: &[u8]) -> Result<(), PdcfError> {
        SampleHeader::parse(sample).map_err(|source| PdcfError::Sample { index: self.media_count, source })?;
        let size = self.check_size(sample.len())?;
        let since = self.since_epoch(now);
        let clock_rate = self.clock_rate;
        let clock = self.media_clock.get_or_insert_with(|| MediaClock {
            base_rtp: i64::from(rtp_timestamp),
            // Reception time in media ticks; far below i64::MAX for any real recording.
            first_offset: i64::try_from(to_ticks(since, clock_rate)).unwrap_or(i64::MAX / 2),
            last_rtp: rtp_timestamp,
            last_ext: i64::from(rtp_timestamp),
        });
        // Unroll the 32-bit wrap: the step from the last timestamp, taken as signed.
        let step = i64::from(rtp_timestamp.wrapping_sub(clock.last_rtp).cast_signed());
        clock.last_ext = clock.last_ext.saturating_add(step);
        clock.last_rtp = rtp_timestamp;
        let target = clock.first_offset.saturating_add(clock.last_ext - clock.base_rtp).max(0).cast_unsigned();
        let decode = target.max(self.last_media_decode);
        let cto = i32::try_from(i128::from(target) - i128::from(decode)).unwrap_or(i32::MIN);
        self.make_room(&TrackKind::Media, decode, sample.len());
        self.last_media_decode = decode;
        self.media.samples.push(Pending { decode, cto, size });
        self.media.data.extend_from_slice(sample);
        self.media_count += 1;
        Ok(())
    }

    /// Adds one STKM (the whole MIKEY message, not empty) as received at `now` on the caller's
    /// monotonic clock.
    pub fn push_stkm(&mut self, now: Duration, stkm: &[u8]) -> Result<(), PdcfError> {
        if stkm.is_empty() {
            return Err(PdcfError::InvalidArgument("empty STKM"));
        }
        let size = self.check_size(stkm.len())?;
        let since = self.since_epoch(now);
        let t = to_ticks(since, STKM_TIMESCALE).max(self.last_stkm_time);
        self.make_room(&TrackKind::Stkm, t, stkm.len());
        self.last_stkm_time = t;
        self.stkm.samples.push(Pending { decode: t, cto: 0, size });
        self.stkm.data.extend_from_slice(stkm);
        Ok(())
    }

    fn check_size(&self, len: usize) -> Result<u32, PdcfError> {
        too_long(len, MAX_FRAGMENT_BYTES, "sample")?;
        // At most MAX_FRAGMENT_BYTES, checked just above.
        Ok(u32::try_from(len).expect("below MAX_FRAGMENT_BYTES"))
    }

    /// Closes the current fragment first when this sample would not fit it: a duration that
    /// does not fit 32 bits, or the fragment growing past [`MAX_FRAGMENT_BYTES`].
    fn make_room(&mut self, track: &TrackKind, decode: u64, len: usize) {
        let buf = match track {
            TrackKind::Media => &self.media,
            TrackKind::Stkm => &self.stkm,
        };
        let gap = buf.samples.last().is_some_and(|p| decode - p.decode > u64::from(u32::MAX));
        let full = self.media.data.len() + self.stkm.data.len() + len > MAX_FRAGMENT_BYTES;
        if gap || full {
            self.close_fragment();
        }
    }

    /// Samples pushed but not yet in a closed fragment.
    #[must_use]
    pub fn pending_samples(&self) -> usize {
        self.media.samples.len() + self.stkm.samples.len()
    }

    /// Closes the fragment being built (if it has samples) and returns every byte to append
    /// since the last call. Empty when there is nothing new.
    #[must_use]
    pub fn flush_fragment(&mut self) -> Vec<u8> {
        self.close_fragment();
        let out = core::mem::take(&mut self.out);
        self.written += out.len() as u64;
        out
    }

    /// Ends the recording: the last bytes to append (the last fragment and the `mfra`).
    #[must_use]
    pub fn finish(mut self) -> Vec<u8> {
        self.close_fragment();
        let mut out = core::mem::take(&mut self.out);
        let start = out.len();
        put_box(&mut out, b"mfra", |o| {
            for (track_id, buf) in [(MEDIA_TRACK_ID, &self.media), (STKM_TRACK_ID, &self.stkm)] {
                // tfra v1: 64-bit time and offset; traf/trun/sample numbers one byte each.
                put_full(o, b"tfra", 1, 0, |o| {
                    track_id.put(o);
                    0u32.put(o);
                    (buf.tfra.len() as u32).put(o);
                    for &(time, moof, traf) in &buf.tfra {
                        time.put(o);
                        moof.put(o);
                        traf.put(o);
                        1u8.put(o);
                        1u8.put(o);
                    }
                });
            }
            put_full(o, b"mfro", 0, 0, |o| 0u32.put(o));
        });
        let mfra_len = out.len() - start;
        let at = out.len() - 4;
        // The mfra is a few bytes per fragment, far below 4 GiB.
        out[at..].copy_from_slice(&u32::try_from(mfra_len).unwrap_or(u32::MAX).to_be_bytes());
        out
    }

    fn close_fragment(&mut self) {
        if self.media.samples.is_empty() && self.stkm.samples.is_empty() {
            return;
        }
        self.seq += 1;
        let moof_offset = self.written + self.out.len() as u64;
        let mut moof = Vec::new();
        let mut offsets = Vec::new();
        let mut traf_no = 0u8;
        {
            let mut w = BoxWriter::open(&mut moof, b"moof");
            put_full(w.out(), b"mfhd", 0, 0, |o| self.seq.put(o));
            for (track_id, buf) in [(MEDIA_TRACK_ID, &mut self.media), (STKM_TRACK_ID, &mut self.stkm)] {
                if buf.samples.is_empty() {
                    continue;
                }
                traf_no += 1;
                buf.tfra.push((buf.samples[0].decode, moof_offset, traf_no));
                let o = w.out();
                put_box(o, b"traf", |o| {
                    put_full(o, b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, |o| track_id.put(o));
                    put_full(o, b"tfdt", 1, 0, |o| buf.samples[0].decode.put(o));
                    let with_cto = buf.samples.iter().any(|s| s.cto != 0);
                    let (version, flags) = if with_cto {
                        (1, TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_CTO)
                    } else {
                        (0, TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE)
                    };
                    put_full(o, b"trun", version, flags, |o| {
                        (buf.samples.len() as u32).put(o);
                        offsets.push(o.len());
                        0i32.put(o);
                        let mut last = 0u32;
                        for (i, s) in buf.samples.iter().enumerate() {
                            // make_room keeps every gap inside a fragment below 2^32.
                            let d = buf.samples.get(i + 1).map_or(last, |n| (n.decode - s.decode) as u32);
                            last = d;
                            d.put(o);
                            s.size.put(o);
                            if with_cto {
                                s.cto.put(o);
                            }
                        }
                    });
                });
            }
            w.close();
        }
        // Data offsets from the moof's first byte: media data first, then the STKMs.
        let mut data_at = moof.len() + 8;
        let mut sizes = Vec::new();
        for buf in [&self.media, &self.stkm] {
            if !buf.samples.is_empty() {
                sizes.push(data_at);
                data_at += buf.data.len();
            }
        }
        for (&pos, &off) in offsets.iter().zip(&sizes) {
            // Fragments stay below MAX_FRAGMENT_BYTES plus one moof: far below 2^31.
            moof[pos..pos + 4].copy_from_slice(&(off as i32).to_be_bytes());
        }
        self.out.extend_from_slice(&moof);
        let mut w = BoxWriter::open(&mut self.out, b"mdat");
        for buf in [&mut self.media, &mut self.stkm] {
            w.out().extend_from_slice(&buf.data);
            buf.data.clear();
            buf.samples.clear();
        }
        w.close();
    }
}

enum TrackKind {
    Media,
    Stkm,
}

/// `ftyp` + `moov` (layout in the module docs).
fn init_segment(h: &PdcfHeader) -> Vec<u8> {
    let mut out = Vec::new();
    put_box(&mut out, b"ftyp", |o| {
        o.extend_from_slice(&BRAND_PDCF.0);
        0u32.put(o);
        for b in [&BRAND_PDCF.0, b"isom", b"iso6"] {
            o.extend_from_slice(b);
        }
    });
    put_box(&mut out, b"moov", |o| {
        put_full(o, b"mvhd", 0, 0, |o| {
            [0u32, 0, STKM_TIMESCALE, 0, 0x0001_0000].iter().for_each(|v| v.put(o));
            0x0100u16.put(o);
            o.extend_from_slice(&[0; 10]);
            MATRIX.iter().for_each(|v| v.put(o));
            o.extend_from_slice(&[0; 24]);
            3u32.put(o);
        });
        media_trak(o, h);
        stkm_trak(o, h);
        put_box(o, b"mvex", |o| {
            for id in [MEDIA_TRACK_ID, STKM_TRACK_ID] {
                put_full(o, b"trex", 0, 0, |o| [id, 1, 0, 0, 0].iter().for_each(|v| v.put(o)));
            }
        });
    });
    out
}

fn tkhd(o: &mut Vec<u8>, flags: u32, track_id: u32, volume: u16, width: u16, height: u16) {
    put_full(o, b"tkhd", 0, flags, |o| {
        [0u32, 0, track_id, 0, 0].iter().for_each(|v| v.put(o));
        o.extend_from_slice(&[0; 8]);
        0u16.put(o);
        0u16.put(o);
        volume.put(o);
        0u16.put(o);
        MATRIX.iter().for_each(|v| v.put(o));
        (u32::from(width) << 16).put(o);
        (u32::from(height) << 16).put(o);
    });
}

fn mdhd_hdlr(o: &mut Vec<u8>, timescale: u32, handler: &[u8; 4], name: &str) {
    put_full(o, b"mdhd", 0, 0, |o| {
        [0u32, 0, timescale, 0].iter().for_each(|v| v.put(o));
        // 'und' as three 5-bit letters (ISO 639-2/T, §8.4.2).
        0x55c4u16.put(o);
        0u16.put(o);
    });
    put_full(o, b"hdlr", 0, 0, |o| {
        0u32.put(o);
        o.extend_from_slice(handler);
        o.extend_from_slice(&[0; 12]);
        o.extend_from_slice(name.as_bytes());
        o.push(0);
    });
}

/// `dinf` + the start of `stbl` around the sample entry, with empty sample tables.
fn minf_tail(o: &mut Vec<u8>, entry: impl FnOnce(&mut Vec<u8>)) {
    put_box(o, b"dinf", |o| {
        put_full(o, b"dref", 0, 0, |o| {
            1u32.put(o);
            // Flag 1: the media data is in this file.
            put_full(o, b"url ", 0, 1, |_| {});
        });
    });
    put_box(o, b"stbl", |o| {
        put_full(o, b"stsd", 0, 0, |o| {
            1u32.put(o);
            entry(o);
        });
        put_full(o, b"stts", 0, 0, |o| 0u32.put(o));
        put_full(o, b"stsc", 0, 0, |o| 0u32.put(o));
        put_full(o, b"stsz", 0, 0, |o| [0u32, 0].iter().for_each(|v| v.put(o)));
        put_full(o, b"stco", 0, 0, |o| 0u32.put(o));
    });
}

fn media_trak(o: &mut Vec<u8>, h: &PdcfHeader) {
    let m = &h.media;
    put_box(o, b"trak", |o| {
        let (volume, width, height) = match m.kind {
            MediaKind::Audio { .. } => (0x0100, 0, 0),
            MediaKind::Video { width, height } => (0, width, height),
        };
        tkhd(o, 3, MEDIA_TRACK_ID, volume, width, height);
        put_box(o, b"mdia", |o| {
            let (handler, name) = match m.kind {
                MediaKind::Audio { .. } => (b"soun", "Keycast recorded audio"),
                MediaKind::Video { .. } => (b"vide", "Keycast recorded video"),
            };
            mdhd_hdlr(o, m.clock_rate, handler, name);
            put_box(o, b"minf", |o| {
                match m.kind {
                    MediaKind::Audio { .. } => put_full(o, b"smhd", 0, 0, |o| 0u32.put(o)),
                    MediaKind::Video { .. } => put_full(o, b"vmhd", 0, 1, |o| o.extend_from_slice(&[0; 8])),
                }
                minf_tail(o, |o| sample_entry(o, h));
            });
        });
    });
}

/// The protected sample entry: `enca`/`encv` fields, the codec boxes, then `sinf`.
fn sample_entry(o: &mut Vec<u8>, h: &PdcfHeader) {
    let m = &h.media;
    let kind = match m.kind {
        MediaKind::Audio { .. } => b"enca",
        MediaKind::Video { .. } => b"encv",
    };
    put_box(o, kind, |o| {
        o.extend_from_slice(&[0; 6]);
        1u16.put(o);
        match m.kind {
            MediaKind::Audio { channel_count } => {
                o.extend_from_slice(&[0; 8]);
                channel_count.put(o);
                16u16.put(o);
                0u32.put(o);
                // samplerate is 16.16; a clock rate above 65535 does not fit and is left 0.
                (u16::try_from(m.clock_rate).map_or(0, |r| u32::from(r) << 16)).put(o);
            }
            MediaKind::Video { width, height } => {
                o.extend_from_slice(&[0; 16]);
                width.put(o);
                height.put(o);
                [0x0048_0000u32, 0x0048_0000, 0].iter().for_each(|v| v.put(o));
                1u16.put(o);
                o.extend_from_slice(&[0; 32]);
                0x0018u16.put(o);
                0xffffu16.put(o);
            }
        }
        o.extend_from_slice(&m.codec_config);
        put_box(o, b"sinf", |o| {
            put_box(o, b"frma", |o| o.extend_from_slice(&m.original_format.0));
            put_full(o, b"schm", 0, 0, |o| {
                o.extend_from_slice(&SCHEME_ODKM.0);
                SCHEME_VERSION.put(o);
            });
            put_box(o, b"schi", |o| {
                put_full(o, b"odkm", 0, 0, |o| {
                    h.headers.encode_ohdr(o, ENCRYPTION_AES_128_CTR, PADDING_NONE, 0);
                    put_full(o, b"odaf", 0, 0, |o| {
                        0u8.put(o);
                        // Both lengths are small constants (6 and 8).
                        (KEY_INDICATOR_LEN as u8).put(o);
                        (IV_LEN as u8).put(o);
                    });
                    put_full(o, b"oslt", 0, 0, |o| {
                        64u8.put(o);
                        o.extend_from_slice(&h.salt);
                    });
                });
            });
        });
    });
}

fn stkm_trak(o: &mut Vec<u8>, h: &PdcfHeader) {
    put_box(o, b"trak", |o| {
        tkhd(o, 1, STKM_TRACK_ID, 0, 0, 0);
        put_box(o, b"mdia", |o| {
            mdhd_hdlr(o, STKM_TIMESCALE, b"meta", "Keycast STKM track");
            put_box(o, b"minf", |o| {
                put_full(o, b"nmhd", 0, 0, |_| {});
                minf_tail(o, |o| {
                    put_box(o, b"oksd", |o| {
                        o.extend_from_slice(&[0; 6]);
                        1u16.put(o);
                        h.stkm_track.encode_fields(o);
                    });
                });
            });
        });
    });
}
