//! The adapted PDCF the terminal records protected streams in (profile P-9, seed §6.7.1): the
//! ISMACryp-encrypted access units as they arrived, plus an STKM track holding every STKM with
//! its reception time, so that play-back can ask the card (or, through the RightsIssuerURL, the
//! BSM) for each TEK again. profile: P-9
//!
//! Written as a **fragmented** ISO base media file (ISO/IEC 14496-12 §8.8) \[chosen\]: an init
//! part (`ftyp` + `moov` with empty sample tables) written first, then one `moof` + `mdat`
//! fragment each time the recorder flushes, and an `mfra` at the end. A recording cut short
//! (power loss, full disk) is readable up to its last complete fragment with
//! [`Recording::parse_interrupted`]; [`Recording::parse`] accepts only finished files.
//!
//! Everything here is sans-IO: the writer returns byte chunks to append to the file, and the
//! reader works on a byte slice. Nothing reads a clock: reception times come in as
//! [`Duration`]s on the caller's monotonic clock.
//!
//! # Recording and play-back
//!
//! ```
//! use core::time::Duration;
//! use keycast_crypto::keys::Tek;
//! use keycast_traffic::ismacryp::{IsmacrypKey, IsmacrypReceiver, IsmacrypSender};
//! use keycast_traffic::pdcf::{Event, MediaTrack, PdcfHeader, PdcfWriter, Recording};
//! use keycast_traffic::srtp::Mki;
//!
//! let key = IsmacrypKey::new(Mki::new(0x0001_0002, 1), Tek::from_bytes([7; 16]), [9; 8]);
//! let header = PdcfHeader::new(MediaTrack::audio(*b"mp4a", 48_000, 2));
//! let (mut rec, mut file) = PdcfWriter::new(&header).unwrap();
//!
//! // Recording: STKMs and encrypted samples as they arrive.
//! rec.push_stkm(Duration::from_millis(0), b"an STKM").unwrap();
//! let mut tx = IsmacrypSender::new(&key);
//! for i in 0..3u32 {
//!     let mut au = vec![i as u8; 100];
//!     tx.protect(&mut au).unwrap();
//!     rec.push_media(Duration::from_millis(20 * u64::from(i)), 1000 + 960 * i, &au).unwrap();
//! }
//! file.extend(rec.flush_fragment());
//! file.extend(rec.finish());
//!
//! // Play-back: STKMs and samples in time order.
//! let recording = Recording::parse(&file).unwrap();
//! let mut rx = IsmacrypReceiver::new();
//! let mut plain = Vec::new();
//! for event in recording.events() {
//!     match event {
//!         Event::Stkm(s) => { assert_eq!(s.stkm, b"an STKM"); rx.add_key(&key); } // the card gives the TEK
//!         Event::Media(m) => { let mut s = m.sample.to_vec(); rx.unprotect(&mut s).unwrap(); plain.push(s); }
//!     }
//! }
//! assert_eq!(plain, [vec![0; 100], vec![1; 100], vec![2; 100]]);
//! ```
//!
//! # File layout
//!
//! Box layouts are ISO/IEC 14496-12 (§ given) unless marked; the OMA boxes follow
//! facts-ietf-oma.md §8.1; every field not named there is \[chosen\].
//!
//! ```text
//! ftyp  major 'opf2' [chosen: OMA DRM PDCF brand], minor 0, compatible 'opf2' 'isom' 'iso6'   §4.3
//! moov
//!   mvhd v0  timescale 1000, durations 0, next_track_ID 3 (times 0: no clock) [chosen]        §8.2.2
//!   trak  (media, track_ID 1)
//!     tkhd v0 flags 3 (enabled, in movie), width/height from the video entry                  §8.3.2
//!     mdia
//!       mdhd v0  timescale = RTP clock rate, language 'und'                                    §8.4.2
//!       hdlr 'soun' | 'vide'                                                                   §8.4.3
//!       minf  smhd | vmhd, dinf/dref/'url ' (self-contained)                                  §8.4.5
//!         stbl  stsd (1 entry), empty stts, stsc, stsz, stco                                  §8.5, §8.7
//!           stsd entry 'enca' (AudioSampleEntry) | 'encv' (VisualSampleEntry)                 §8.5.2, §8.12
//!             the original entry's child boxes (e.g. 'esds', 'avcC'), given by the caller
//!             sinf                                                                            §8.12.1
//!               frma  original format (e.g. 'mp4a', 'avc1')                                   §8.12.2
//!               schm  v0  scheme 'odkm', version 0x00000300          facts §8.1 [code NexStreaming]
//!               schi                                                                          §8.12.6
//!                 odkm  FullBox v0, children: [chosen: odkm holds all three]
//!                   ohdr  EncryptionMethod 2 (AES-128-CTR), PaddingScheme 0, PlaintextLength 0,
//!                         ContentID, RightsIssuerURL, TextualHeaders            facts §8.1 [code Bento4]
//!                     obki  FullBox v0 [chosen] · key_infos_number · key entries (KeyInfo)    facts §8.1
//!                   odaf  FullBox v0 · 0x00 (no selective encryption) · key_indicator_length 6
//!                         · IV_length 8                          facts §8.1 [code Bento4], profile P-9
//!                   oslt  FullBox v0 [chosen] · salt length in bits (1) = 64 · salt (8)      facts §8.1
//!   trak  (STKM track, track_ID 2)
//!     tkhd v0 flags 1 (enabled, not in the presentation) [chosen]
//!     mdia  mdhd timescale 1000 (milliseconds) [chosen] · hdlr 'meta' [chosen] · minf/nmhd
//!       stsd entry 'oksd': SampleEntry base [chosen] · sample_version · sample_type
//!                          · terminal_binding_key_ID · rights_issuer_URI         facts §8.1 [code NexStreaming]
//!   mvex  trex for tracks 1 and 2 (description 1, other defaults 0)                          §8.8.3
//! then per fragment:
//! moof                                                                                         §8.8.4
//!   mfhd  sequence_number (1, 2, …)
//!   traf (media, when it has samples) then traf (STKMs, when there are any)
//!     tfhd  flags 0x020000 (default-base-is-moof), track_ID                                   §8.8.7
//!     tfdt  v1  baseMediaDecodeTime (64-bit, exact)                                           §8.8.12
//!     trun  v0 flags 0x301 (data offset, duration, size per sample); v1 flags 0xb01 when a
//!           sample of the fragment has a composition offset                                  §8.8.8
//! mdat  the media samples, then the STKM samples                                               §8.1.1
//! and at the end:
//! mfra  tfra v1 per track (time, moof offset, traf/trun/sample number 1 byte each) · mfro    §8.8.9–11
//! ```
//!
//! # Samples and timing \[chosen\]
//!
//! - **Media samples** are stored exactly as received (one RTP payload = one sample): the
//!   ISMACryp sample `IV (8) ‖ key indicator (6) ‖ encrypted AU` of
//!   [`crate::ismacryp`], which is the OMA PDCF sample format for the `odaf` above.
//! - **Media time**: the media timescale is the RTP clock rate. The first media sample's decode
//!   time is its reception time since the recording's start (the first push of anything); each
//!   later sample's target time adds its RTP timestamp's distance from the first (32-bit
//!   wrap-around unrolled), held at 0 if that falls before the start. Decode times never go
//!   back: a sample whose RTP timestamp is earlier than its predecessor's keeps its
//!   predecessor's decode time and carries the difference as a (negative) composition offset,
//!   so [`MediaSample::presentation_time`] gives back the RTP timing exactly (offsets are
//!   clamped to the i32 range).
//! - **STKM samples**: every STKM (never empty) in arrival order; its decode time is its
//!   reception time since the recording's start in milliseconds (a clock going back is held
//!   at the last time).
//! - **Durations**: each sample's duration is the distance to the next sample of its track;
//!   the last sample of a fragment repeats the one before it (0 when alone). Times stay exact
//!   because every fragment carries its `tfdt`.
//! - **Play-back order** ([`Recording::events`]): all samples by decode time on the common
//!   clock; an STKM before a media sample at the same time, since the TEK must come first.

mod codec;
mod oma;
mod reader;
mod writer;

use core::time::Duration;

use thiserror::Error;

pub use codec::{FourCc, MAX_DEPTH};
pub use oma::{
    CommonHeaders, ENCRYPTION_AES_128_CBC, ENCRYPTION_AES_128_CTR, HEADER_GLOBAL_PURCHASE_ITEM_ID,
    HEADER_PURCHASE_DATA_ID, KEY_ID_TYPE_MBMS, KeyInfo, PADDING_NONE, PADDING_RFC2630, StkmTrackInfo,
};
pub use reader::{Event, MediaSample, Recording, StkmSample};
pub use writer::PdcfWriter;

pub(crate) use codec::{Next, RawBox};
pub(crate) use codec::{Node, PutBe, Reader, next_box, node, put_box, put_full};
pub(crate) use oma::full_v0;

use crate::ismacryp::IsmacrypError;

/// `schm` scheme type of the adapted PDCF: OMA DRM key management. facts-ietf-oma.md §8.1
pub const SCHEME_ODKM: FourCc = FourCc(*b"odkm");
/// `schm` scheme version written for `odkm`. facts-ietf-oma.md §8.1 \[code NexStreaming\]
pub const SCHEME_VERSION: u32 = 0x0000_0300;
/// Major brand of a Keycast recording (OMA DRM v2 PDCF brand). \[chosen\]
pub const BRAND_PDCF: FourCc = FourCc(*b"opf2");
/// Timescale of the STKM track: milliseconds. \[chosen\]
pub const STKM_TIMESCALE: u32 = 1000;
/// Track ID of the media track. \[chosen\]
pub const MEDIA_TRACK_ID: u32 = 1;
/// Track ID of the STKM track. \[chosen\]
pub const STKM_TRACK_ID: u32 = 2;
/// The writer closes a fragment by itself once its media data reaches this size, so that every
/// box stays far below 4 GiB. \[chosen\]
pub const MAX_FRAGMENT_BYTES: usize = 64 << 20;

/// Why a PDCF or DCF was not written or not read. Carries no key bytes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PdcfError {
    /// The input ends inside a field or a box.
    #[error("truncated at byte {offset}: {field} needs {needed} bytes, {left} left")]
    Truncated {
        /// Offset in the input.
        offset: usize,
        /// What was being read.
        field: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes left.
        left: usize,
    },
    /// A box size smaller than its own header.
    #[error("box '{kind}' at byte {offset} has impossible size {size}")]
    BadBoxSize {
        /// Offset of the box.
        offset: usize,
        /// Box type.
        kind: FourCc,
        /// The size field.
        size: u64,
    },
    /// Boxes nested deeper than [`MAX_DEPTH`].
    #[error("boxes nested too deep ({depth}) at byte {offset}")]
    TooDeep {
        /// Offset of the box too deep.
        offset: usize,
        /// Its depth.
        depth: usize,
    },
    /// A required box is missing.
    #[error("'{parent}' has no '{kind}' box")]
    MissingBox {
        /// The container searched (`file` for the top level).
        parent: FourCc,
        /// The box looked for.
        kind: FourCc,
    },
    /// A box appears where it is not allowed (or twice where once is allowed).
    #[error("unexpected '{kind}' box at byte {offset}")]
    UnexpectedBox {
        /// Offset of the box.
        offset: usize,
        /// Its type.
        kind: FourCc,
    },
    /// A field has a value that cannot be right (bad UTF-8, offset outside the data, …).
    #[error("bad {field} at byte {offset}")]
    BadValue {
        /// Offset of the field.
        offset: usize,
        /// Which field.
        field: &'static str,
    },
    /// A well-formed value Keycast does not handle (other encryption, other IV length, …).
    #[error("unsupported {field} = {value} at byte {offset}")]
    Unsupported {
        /// Offset of the field.
        offset: usize,
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// Bytes left over after a structure.
    #[error("trailing data after {field} at byte {offset}")]
    TrailingData {
        /// Offset of the first extra byte.
        offset: usize,
        /// The structure.
        field: &'static str,
    },
    /// The recording has no `mfra`: it was not finished (use [`Recording::parse_interrupted`]).
    #[error("recording not finished (no 'mfra' at the end)")]
    Unfinished,
    /// A media sample's ISMACryp header does not fit.
    #[error("media sample {index}: {source}")]
    Sample {
        /// Index of the sample in the media track.
        index: usize,
        /// Why.
        source: IsmacrypError,
    },
    /// A value given to the writer does not fit its length field (caller error).
    #[error("{field} is {len} bytes, at most {max} fit")]
    TooLong {
        /// Which value.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value given to the writer is not allowed (caller error).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}

/// Audio or video, which decides the protected sample entry and the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaKind {
    /// `enca` sample entry, `soun` handler.
    Audio {
        /// AudioSampleEntry channelcount.
        channel_count: u16,
    },
    /// `encv` sample entry, `vide` handler.
    Video {
        /// VisualSampleEntry width in pixels.
        width: u16,
        /// VisualSampleEntry height in pixels.
        height: u16,
    },
}

/// The media track of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTrack {
    /// Audio or video.
    pub kind: MediaKind,
    /// The original (unprotected) sample entry type, written in `frma` (e.g. `mp4a`, `avc1`).
    pub original_format: FourCc,
    /// The RTP clock rate; the media timescale. Not 0.
    pub clock_rate: u32,
    /// The original sample entry's child boxes (e.g. `esds`, `avcC`), encoded; may be empty.
    pub codec_config: Vec<u8>,
}

impl MediaTrack {
    /// An audio track with no codec configuration boxes.
    #[must_use]
    pub fn audio(original_format: [u8; 4], clock_rate: u32, channel_count: u16) -> Self {
        Self {
            kind: MediaKind::Audio { channel_count },
            original_format: FourCc(original_format),
            clock_rate,
            codec_config: Vec::new(),
        }
    }

    /// A video track with no codec configuration boxes.
    #[must_use]
    pub fn video(original_format: [u8; 4], clock_rate: u32, width: u16, height: u16) -> Self {
        Self {
            kind: MediaKind::Video { width, height },
            original_format: FourCc(original_format),
            clock_rate,
            codec_config: Vec::new(),
        }
    }
}

/// Everything in a recording besides its samples: what the recorder knows when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdcfHeader {
    /// The media track.
    pub media: MediaTrack,
    /// The `ohdr` headers (ContentID, RightsIssuerURL, textual headers, `obki`).
    pub headers: CommonHeaders,
    /// The `oksd` fields of the STKM track.
    pub stkm_track: StkmTrackInfo,
    /// The `oslt` salt. Under P-9 each TEK's ISMACryp salt comes with the TEK from the STKM,
    /// so Keycast writes zeros \[chosen\] and play-back ignores this value.
    pub salt: [u8; 8],
}

impl PdcfHeader {
    /// A header with empty OMA headers, `oksd` version 1, and a zero salt.
    #[must_use]
    pub fn new(media: MediaTrack) -> Self {
        Self {
            media,
            headers: CommonHeaders::default(),
            stkm_track: StkmTrackInfo { sample_version: 1, ..StkmTrackInfo::default() },
            salt: [0; 8],
        }
    }
}

/// Reception time to a track time in `timescale` units (rounded down).
fn to_ticks(t: Duration, timescale: u32) -> u64 {
    let ticks = t.as_nanos() * u128::from(timescale) / 1_000_000_000;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// Track time in `timescale` units to a [`Duration`] (rounded down).
fn from_ticks(ticks: u64, timescale: u32) -> Duration {
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(timescale.max(1));
    let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it fits a u32.
    Duration::new(secs, (ns % 1_000_000_000) as u32)
}

/// Entry point of the `pdcf_read` fuzz target (not a stable API).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use super::Recording;

    /// Parses `data` strictly and as an interrupted recording: never a panic; a strictly
    /// parsed file also parses as interrupted with the same samples, and every sample parsed
    /// lies inside the input.
    pub fn read(data: &[u8]) {
        let strict = Recording::parse(data);
        let partial = Recording::parse_interrupted(data);
        if let Ok(s) = &strict {
            let p = partial.as_ref().expect("a finished file is also readable as interrupted");
            assert_eq!(s.media.len(), p.media.len());
            assert_eq!(s.stkms.len(), p.stkms.len());
        }
        if let Ok(p) = &partial {
            assert!(p.complete_len <= data.len());
            assert_eq!(p.events().count(), p.media.len() + p.stkms.len());
        }
    }
}
