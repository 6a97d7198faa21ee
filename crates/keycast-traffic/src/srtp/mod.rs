//! SRTP and SRTCP (RFC 3711) with the Keycast profile's choices (P-9, P-11.2):
//! AES-CM-128 encryption, HMAC-SHA-1 80-bit tags (or none when the STKM's
//! traffic_authentication_flag is 0), master key = TEK, master salt = the 14-byte STKM salt,
//! key derivation rate 0, and a 6-byte MKI = SEK/PEK ID ‖ TEK ID in every packet. SRTP
//! packets may use the RFC 4771 integrity transform that carries the ROC every R packets.
//!
//! Sans-IO and in place: [`SrtpSender::protect`] encrypts an RTP packet held in the caller's
//! buffer and appends MKI and tag; [`SrtpReceiver::unprotect`] checks and decrypts one and cuts
//! them off again. Nothing is allocated per packet (only the first packet of a new SSRC adds a
//! map entry; a `Vec` grows only if it lacks [`SRTP_MAX_OVERHEAD`] / [`SRTCP_OVERHEAD`] spare
//! capacity). No input makes these functions panic.
//!
//! ```text
//! SRTP:  RTP header | encrypted payload | MKI (6) | tag (0, 4 or 10)
//! SRTCP: RTCP header (8) | encrypted part | E‖index (4) | MKI (6) | tag (10)
//! ```
//!
//! ```
//! use keycast_crypto::keys::{Tek, TekSalt};
//! use keycast_traffic::srtp::{Mki, SrtpMasterKey, SrtpPolicy, SrtpReceiver, SrtpSender};
//!
//! let key = SrtpMasterKey::new(Mki::new(0x0001_0002, 1), Tek::from_bytes([7; 16]), TekSalt::from_bytes([9; 14]));
//! let mut sender = SrtpSender::new(SrtpPolicy::rfc3711(), &key);
//! let mut receiver = SrtpReceiver::new(SrtpPolicy::rfc3711());
//! receiver.add_key(&key);
//!
//! let rtp = [&[0x80, 96, 0, 1, 0, 0, 0, 160, 0xca, 0xfe, 0xba, 0xbe][..], b"media"].concat();
//! let mut packet = rtp.clone();
//! sender.protect(&mut packet).unwrap();
//! assert_eq!(packet.len(), rtp.len() + 6 + 10);
//! receiver.unprotect(&mut packet).unwrap();
//! assert_eq!(packet, rtp);
//! ```

mod error;
mod key;
mod replay;

use std::collections::HashMap;
use std::num::NonZeroU16;

use subtle::ConstantTimeEq;

pub use error::SrtpError;
pub use key::{MKI_LEN, Mki, SrtpMasterKey};
pub use replay::REPLAY_WINDOW;

use key::KeySet;
use replay::{ReplayWindow, estimate_index};

/// Length of a full HMAC-SHA-1 tag on the wire (80 bits). profile: P-9, P-11.1
pub const TAG_LEN: usize = 10;
/// Length of the ROC that RFC 4771 puts at the front of the tag.
pub const ROC_LEN: usize = 4;
/// Fixed RTP header length (before CSRCs and extension).
pub const RTP_HEADER_LEN: usize = 12;
/// Fixed RTCP header length covered in the clear (V/P/count, PT, length, SSRC).
pub const RTCP_HEADER_LEN: usize = 8;
/// Length of the SRTCP E bit ‖ index word.
pub const SRTCP_INDEX_LEN: usize = 4;
/// Most bytes [`SrtpSender::protect`] appends to an RTP packet (MKI + tag).
pub const SRTP_MAX_OVERHEAD: usize = MKI_LEN + TAG_LEN;
/// Bytes [`SrtpSender::protect_rtcp`] appends to an RTCP packet (E‖index + MKI + tag).
pub const SRTCP_OVERHEAD: usize = SRTCP_INDEX_LEN + MKI_LEN + TAG_LEN;
/// Default maximum number of SSRCs a receiver tracks.
pub const DEFAULT_MAX_STREAMS: usize = 64;

/// Largest SRTCP index (31 bits).
const SRTCP_INDEX_MAX: u32 = 0x7fff_ffff;
/// The E bit of the SRTCP index word: the packet is encrypted.
const SRTCP_E_BIT: u32 = 0x8000_0000;

/// RFC 4771 modes (SP authentication algorithm 2, 3, 4). profile: P-11.2
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RccMode {
    /// RCCm1: ROC packets carry ROC ‖ MAC; other packets carry no tag (no integrity).
    Rccm1,
    /// RCCm2 (Keycast's default): ROC packets carry ROC ‖ MAC; other packets the normal tag.
    Rccm2,
    /// RCCm3: ROC packets carry only the ROC; no packet has integrity.
    Rccm3,
}

/// How SRTP packets are authenticated. SRTCP always uses HMAC-SHA-1-80 (integrity is
/// mandatory there, and RFC 4771 does not apply to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SrtpAuth {
    /// No tag: the STKM's traffic_authentication_flag is 0. profile: P-9
    None,
    /// Plain RFC 3711: every packet carries the first 80 bits of HMAC-SHA-1.
    HmacSha1_80,
    /// RFC 4771 with ROC transmission rate R: packets with SEQ mod R = 0 carry the ROC.
    Rcc {
        /// Which of the three modes.
        mode: RccMode,
        /// R (SP parameter 13), never zero.
        rate: NonZeroU16,
    },
}

/// What the tag field of one SRTP packet holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagKind {
    /// Nothing.
    Empty,
    /// HMAC-SHA-1 truncated to 10 bytes.
    Mac,
    /// ROC (4) ‖ HMAC-SHA-1 truncated to 6 bytes.
    RocMac,
    /// ROC (4) alone.
    Roc,
}

impl TagKind {
    const fn len(self) -> usize {
        match self {
            Self::Empty => 0,
            Self::Mac | Self::RocMac => TAG_LEN,
            Self::Roc => ROC_LEN,
        }
    }

    const fn carries_roc(self) -> bool {
        matches!(self, Self::RocMac | Self::Roc)
    }
}

impl SrtpAuth {
    /// The tag layout of the packet with sequence number `seq`. profile: P-11.2
    fn tag_kind(self, seq: u16) -> TagKind {
        match self {
            Self::None => TagKind::Empty,
            Self::HmacSha1_80 => TagKind::Mac,
            Self::Rcc { mode, rate } => match (seq.is_multiple_of(rate.get()), mode) {
                (true, RccMode::Rccm1 | RccMode::Rccm2) => TagKind::RocMac,
                (true, RccMode::Rccm3) => TagKind::Roc,
                (false, RccMode::Rccm2) => TagKind::Mac,
                (false, RccMode::Rccm1 | RccMode::Rccm3) => TagKind::Empty,
            },
        }
    }
}

/// Settings shared by the sender and receiver of one SRTP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SrtpPolicy {
    /// SRTP authentication.
    pub auth: SrtpAuth,
    /// Most SSRCs a receiver keeps state for (a new SSRC beyond it is refused).
    pub max_streams: usize,
}

impl SrtpPolicy {
    /// Plain RFC 3711: AES_CM_128_HMAC_SHA1_80 with MKI.
    #[must_use]
    pub const fn rfc3711() -> Self {
        Self { auth: SrtpAuth::HmacSha1_80, max_streams: DEFAULT_MAX_STREAMS }
    }

    /// RFC 4771 in `mode` with ROC transmission rate `rate`.
    #[must_use]
    pub const fn rcc(mode: RccMode, rate: NonZeroU16) -> Self {
        Self { auth: SrtpAuth::Rcc { mode, rate }, max_streams: DEFAULT_MAX_STREAMS }
    }

    /// Encryption without SRTP tags (SRTCP keeps its tag).
    #[must_use]
    pub const fn unauthenticated() -> Self {
        Self { auth: SrtpAuth::None, max_streams: DEFAULT_MAX_STREAMS }
    }

    /// The policy the profile prescribes for an STKM's traffic_authentication_flag and the
    /// LTKM SP's ROC transmission rate: no tag when the flag is 0; otherwise RCCm2 with R
    /// when the SP has R, and plain RFC 3711 when it has not. profile: P-9, P-11.2
    #[must_use]
    pub const fn from_profile(traffic_authentication: bool, roc_rate: Option<NonZeroU16>) -> Self {
        match (traffic_authentication, roc_rate) {
            (false, _) => Self::unauthenticated(),
            (true, Some(rate)) => Self::rcc(RccMode::Rccm2, rate),
            (true, None) => Self::rfc3711(),
        }
    }
}

fn too_short(what: &'static str, needed: usize, len: usize) -> SrtpError {
    SrtpError::TooShort { what, needed, len }
}

fn check_version(first: u8) -> Result<(), SrtpError> {
    match first >> 6 {
        2 => Ok(()),
        v => Err(SrtpError::BadVersion(v)),
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Length of the RTP header at the start of `pkt`: 12 bytes, the CSRC list and the header
/// extension (RFC 3550 §5.1, §5.3.1); all of it must lie inside `pkt`.
fn rtp_header_len(pkt: &[u8]) -> Result<usize, SrtpError> {
    if pkt.len() < RTP_HEADER_LEN {
        return Err(too_short("RTP header", RTP_HEADER_LEN, pkt.len()));
    }
    check_version(pkt[0])?;
    let mut len = RTP_HEADER_LEN + 4 * usize::from(pkt[0] & 0x0f);
    if pkt.len() < len {
        return Err(too_short("CSRC list", len, pkt.len()));
    }
    if pkt[0] & 0x10 != 0 {
        if pkt.len() < len + 4 {
            return Err(too_short("header extension", len + 4, pkt.len()));
        }
        len += 4 + 4 * usize::from(be16(pkt, len + 2));
        if pkt.len() < len {
            return Err(too_short("header extension", len, pkt.len()));
        }
    }
    Ok(len)
}

/// HMAC-SHA-1 over the authenticated portion ‖ ROC (RFC 3711 §4.2; RFC 4771 §3 with ROC_sender).
fn rtp_mac(keys: &KeySet, authenticated: &[u8], roc: u32) -> [u8; 20] {
    keys.rtp_mac.mac(&[authenticated, &roc.to_be_bytes()])
}

/// Per-SSRC state of a sender.
#[derive(Debug, Clone, Copy, Default)]
struct SendStream {
    /// Highest SRTP index sent, once a packet was sent.
    highest: Option<u64>,
    /// ROC to start from (set by [`SrtpSender::set_roc`] before the first packet).
    initial_roc: u32,
    /// Next SRTCP index.
    rtcp_next: u32,
}

/// The sending side of an SRTP session: one current master key, ROC and SRTCP index per SSRC.
///
/// Sender index tracking uses the same estimation as a receiver, so RTP packets handed over
/// slightly out of order keep their right index; a sequence number jump of more than 2^15
/// counts as a wrap.
pub struct SrtpSender {
    policy: SrtpPolicy,
    keys: KeySet,
    streams: HashMap<u32, SendStream>,
}

impl core::fmt::Debug for SrtpSender {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SrtpSender")
            .field("policy", &self.policy)
            .field("mki", &self.keys.mki)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl SrtpSender {
    /// A sender protecting with `key` (session keys are derived here, once).
    #[must_use]
    pub fn new(policy: SrtpPolicy, key: &SrtpMasterKey) -> Self {
        Self { policy, keys: KeySet::new(key), streams: HashMap::new() }
    }

    /// Switches to a new master key (a new TEK): later packets carry its MKI. Indices, ROCs and
    /// SRTCP indices continue.
    pub fn set_key(&mut self, key: &SrtpMasterKey) {
        self.keys = KeySet::new(key);
    }

    /// MKI of the current master key.
    #[must_use]
    pub fn mki(&self) -> Mki {
        self.keys.mki
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> SrtpPolicy {
        self.policy
    }

    /// Sets the ROC of `ssrc` (e.g. a stream that started before this sender, or a test near
    /// rollover); s_l is kept once packets were sent.
    pub fn set_roc(&mut self, ssrc: u32, roc: u32) {
        let st = self.streams.entry(ssrc).or_default();
        st.initial_roc = roc;
        if let Some(h) = st.highest.as_mut() {
            *h = u64::from(roc) << 16 | (*h & 0xffff);
        }
    }

    /// ROC of the highest packet sent on `ssrc`.
    #[must_use]
    pub fn roc(&self, ssrc: u32) -> Option<u32> {
        self.streams.get(&ssrc).and_then(|s| s.highest).map(|h| (h >> 16) as u32)
    }

    /// Sets the next SRTCP index of `ssrc` (31 bits).
    pub fn set_srtcp_index(&mut self, ssrc: u32, index: u32) {
        self.streams.entry(ssrc).or_default().rtcp_next = index;
    }

    /// Protects the RTP packet in `packet` in place: encrypts the payload and appends MKI and
    /// tag. Reserve [`SRTP_MAX_OVERHEAD`] bytes of capacity to avoid a reallocation. On error
    /// the packet is left unchanged.
    pub fn protect(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        grown(packet, SRTP_MAX_OVERHEAD, |buf, len| self.protect_in(buf, len))
    }

    /// Protects the RTP packet in `buf[..len]`, writing MKI and tag after it; returns the
    /// protected length. `buf` needs room for them ([`SRTP_MAX_OVERHEAD`] is always enough).
    pub fn protect_in(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let len = len.min(buf.len());
        let hdr = rtp_header_len(&buf[..len])?;
        let seq = be16(buf, 2);
        let ssrc = be32(buf, 8);
        let kind = self.policy.auth.tag_kind(seq);
        let out = len + MKI_LEN + kind.len();
        if buf.len() < out {
            return Err(SrtpError::BufferTooSmall { needed: out, capacity: buf.len() });
        }
        let st = self.streams.get(&ssrc).copied().unwrap_or_default();
        let index = match st.highest {
            None => u64::from(st.initial_roc) << 16 | u64::from(seq),
            Some(h) => estimate_index(h, seq)?,
        };
        // An index is 48 bits, so its ROC fits in 32.
        let roc = (index >> 16) as u32;
        let keys = &self.keys;
        keys.rtp_cm.apply_keystream(&keys.rtp_iv(ssrc, index), &mut buf[hdr..len]);
        buf[len..len + MKI_LEN].copy_from_slice(&keys.mki.to_bytes());
        let tag_at = len + MKI_LEN;
        match kind {
            TagKind::Empty => {}
            TagKind::Mac => {
                let mac = rtp_mac(keys, &buf[..len], roc);
                buf[tag_at..out].copy_from_slice(&mac[..TAG_LEN]);
            }
            TagKind::RocMac => {
                let mac = rtp_mac(keys, &buf[..len], roc);
                buf[tag_at..tag_at + ROC_LEN].copy_from_slice(&roc.to_be_bytes());
                buf[tag_at + ROC_LEN..out].copy_from_slice(&mac[..TAG_LEN - ROC_LEN]);
            }
            TagKind::Roc => buf[tag_at..out].copy_from_slice(&roc.to_be_bytes()),
        }
        let st = self.streams.entry(ssrc).or_default();
        st.highest = Some(st.highest.map_or(index, |h| h.max(index)));
        Ok(out)
    }

    /// Protects the RTCP packet (or compound packet) in `packet` in place: encrypts all but
    /// the first 8 bytes and appends E‖index, MKI and tag. Reserve [`SRTCP_OVERHEAD`] bytes of
    /// capacity to avoid a reallocation. On error the packet is left unchanged.
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        grown(packet, SRTCP_OVERHEAD, |buf, len| self.protect_rtcp_in(buf, len))
    }

    /// Protects the RTCP packet in `buf[..len]`, writing the SRTCP trailer after it; returns
    /// the protected length (`len + SRTCP_OVERHEAD`).
    pub fn protect_rtcp_in(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let len = len.min(buf.len());
        if len < RTCP_HEADER_LEN {
            return Err(too_short("RTCP header", RTCP_HEADER_LEN, len));
        }
        check_version(buf[0])?;
        let out = len + SRTCP_OVERHEAD;
        if buf.len() < out {
            return Err(SrtpError::BufferTooSmall { needed: out, capacity: buf.len() });
        }
        let ssrc = be32(buf, 4);
        let index = self.streams.get(&ssrc).map_or(0, |s| s.rtcp_next);
        if index > SRTCP_INDEX_MAX {
            return Err(SrtpError::IndexExhausted);
        }
        let keys = &self.keys;
        keys.rtcp_cm.apply_keystream(&keys.rtcp_iv(ssrc, index), &mut buf[RTCP_HEADER_LEN..len]);
        let auth_end = len + SRTCP_INDEX_LEN;
        buf[len..auth_end].copy_from_slice(&(SRTCP_E_BIT | index).to_be_bytes());
        buf[auth_end..auth_end + MKI_LEN].copy_from_slice(&keys.mki.to_bytes());
        let mac = keys.rtcp_mac.mac(&[&buf[..auth_end]]);
        buf[auth_end + MKI_LEN..out].copy_from_slice(&mac[..TAG_LEN]);
        self.streams.entry(ssrc).or_default().rtcp_next = index + 1;
        Ok(out)
    }
}

/// Per-SSRC state of a receiver; each window is created by the first accepted packet.
#[derive(Debug, Clone, Copy, Default)]
struct RecvStream {
    rtp: Option<ReplayWindow>,
    rtcp: Option<ReplayWindow>,
    /// ROC signalled out of band for the first packet ([`SrtpReceiver::set_roc`]).
    initial_roc: Option<u32>,
    /// Highest SRTP index accepted from a packet with a verified tag.
    authenticated_highest: Option<u64>,
}

/// The receiving side of an SRTP session: up to two master keys looked up by MKI, and per
/// SSRC the highest index (ROC and s_l) with a [`REPLAY_WINDOW`]-packet replay window for
/// SRTP and for SRTCP.
///
/// Keys: [`add_key`](Self::add_key) keeps the two most recently added TEKs (the current one
/// and the one before, so packets in flight across a TEK change still decrypt); adding a third
/// drops and wipes the oldest. profile: P-9
///
/// Index: RFC 3711 §3.3.1 estimation from the highest accepted index (a new stream starts at
/// ROC 0); with RFC 4771 a ROC-carrying packet gives its index directly. The highest index
/// only moves forward, except that a ROC-carrying packet below the replay window resynchronises
/// the stream when it cannot be a replay of an authenticated packet (verified and newer than
/// every authenticated packet, or RCCm3, which has no integrity at all). In RCCm1/RCCm3,
/// a packet without ROC on a stream not yet synchronised is refused
/// ([`SrtpError::RocNotSynchronised`]).
pub struct SrtpReceiver {
    policy: SrtpPolicy,
    /// `keys[0]` is the newest.
    keys: [Option<KeySet>; 2],
    streams: HashMap<u32, RecvStream>,
}

impl core::fmt::Debug for SrtpReceiver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SrtpReceiver")
            .field("policy", &self.policy)
            .field("mkis", &self.mkis().collect::<Vec<_>>())
            .field("streams", &self.streams.len())
            .finish()
    }
}

impl SrtpReceiver {
    /// A receiver with no key yet.
    #[must_use]
    pub fn new(policy: SrtpPolicy) -> Self {
        Self { policy, keys: [None, None], streams: HashMap::new() }
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> SrtpPolicy {
        self.policy
    }

    /// Installs a master key. A key with an MKI already present replaces it in place (a resent
    /// STKM); otherwise it becomes the newest and the oldest of two is dropped, whose MKI is
    /// returned.
    pub fn add_key(&mut self, key: &SrtpMasterKey) -> Option<Mki> {
        let new = KeySet::new(key);
        if let Some(slot) = self.keys.iter_mut().flatten().find(|k| k.mki == new.mki) {
            *slot = new;
            return None;
        }
        let dropped = self.keys[1].take().map(|k| k.mki);
        self.keys[1] = self.keys[0].replace(new);
        dropped
    }

    /// Removes the key with this MKI; true if there was one.
    pub fn remove_key(&mut self, mki: Mki) -> bool {
        for slot in &mut self.keys {
            if slot.as_ref().is_some_and(|k| k.mki == mki) {
                *slot = None;
                return true;
            }
        }
        false
    }

    /// MKIs of the installed keys, newest first.
    pub fn mkis(&self) -> impl Iterator<Item = Mki> + '_ {
        self.keys.iter().flatten().map(|k| k.mki)
    }

    /// ROC of the highest SRTP packet accepted on `ssrc`.
    #[must_use]
    pub fn roc(&self, ssrc: u32) -> Option<u32> {
        self.streams.get(&ssrc).and_then(|s| s.rtp).map(|w| (w.highest() >> 16) as u32)
    }

    /// Sets the ROC of `ssrc` as signalled out of band (e.g. a receiver joining a running
    /// stream): before the first packet it gives that packet's ROC (and counts as synchronised
    /// for RFC 4771); afterwards it replaces the ROC of the highest index, keeping s_l.
    pub fn set_roc(&mut self, ssrc: u32, roc: u32) -> Result<(), SrtpError> {
        self.check_room(ssrc)?;
        let st = self.streams.entry(ssrc).or_default();
        st.initial_roc = Some(roc);
        if let Some(w) = st.rtp.as_mut() {
            w.set_roc(roc);
        }
        Ok(())
    }

    fn key(&self, mki: &[u8]) -> Result<&KeySet, SrtpError> {
        let mki = Mki::from_bytes(mki.try_into().map_err(|_| too_short("MKI", MKI_LEN, mki.len()))?);
        self.keys.iter().flatten().find(|k| k.mki == mki).ok_or(SrtpError::UnknownMki(mki))
    }

    fn check_room(&self, ssrc: u32) -> Result<(), SrtpError> {
        if !self.streams.contains_key(&ssrc) && self.streams.len() >= self.policy.max_streams {
            return Err(SrtpError::TooManyStreams { max: self.policy.max_streams });
        }
        Ok(())
    }

    /// Checks and decrypts the SRTP packet in `packet` in place and removes MKI and tag,
    /// leaving the RTP packet. On error the packet is left unchanged.
    pub fn unprotect(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let n = self.unprotect_in(packet)?;
        packet.truncate(n);
        Ok(())
    }

    /// Checks and decrypts the SRTP packet that fills `buf`; returns the length of the RTP
    /// packet now in `buf[..n]`. Steps (RFC 3711 §3.3): header, MKI → key, index, replay
    /// check, tag, decrypt, update ROC and window. On error `buf` is unchanged.
    pub fn unprotect_in(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let len = buf.len();
        if len < RTP_HEADER_LEN {
            return Err(too_short("RTP header", RTP_HEADER_LEN, len));
        }
        check_version(buf[0])?;
        let seq = be16(buf, 2);
        let ssrc = be32(buf, 8);
        let kind = self.policy.auth.tag_kind(seq);
        let trailer = MKI_LEN + kind.len();
        if len < RTP_HEADER_LEN + trailer {
            return Err(too_short("SRTP packet with MKI and tag", RTP_HEADER_LEN + trailer, len));
        }
        let auth_end = len - trailer;
        let hdr = rtp_header_len(&buf[..auth_end])?;
        let keys = self.key(&buf[auth_end..auth_end + MKI_LEN])?;
        let tag = &buf[auth_end + MKI_LEN..];
        let stream = self.streams.get(&ssrc).copied().unwrap_or_default();
        let window = stream.rtp;
        let index = if kind.carries_roc() {
            u64::from(be32(tag, 0)) << 16 | u64::from(seq)
        } else {
            match (window, stream.initial_roc) {
                (Some(w), _) => estimate_index(w.highest(), seq)?,
                (None, Some(roc)) => u64::from(roc) << 16 | u64::from(seq),
                (None, None) if kind == TagKind::Empty && matches!(self.policy.auth, SrtpAuth::Rcc { .. }) => {
                    return Err(SrtpError::RocNotSynchronised);
                }
                (None, None) => u64::from(seq),
            }
        };
        // RFC 4771 resynchronisation: a ROC-carrying packet below the window whose ROC is
        // lower than ours moves the ROC back (instead of being refused as too old) when it
        // cannot be a replay of an authenticated packet: its own tag is verified and it is newer
        // than every authenticated packet, or (RCCm3) no packet has integrity at all. So
        // unauthenticated RCCm1/RCCm3 packets that pushed the ROC ahead cannot lock the stream
        // out. With R ≤ REPLAY_WINDOW a late packet of the previous ROC never triggers this,
        // since the ROC packet at SEQ 0 of the new ROC is authenticated.
        let mut resync = false;
        if let Some(w) = window {
            match w.check(index) {
                Err(SrtpError::TooOld { highest })
                    if index >> 16 != highest >> 16
                        && (kind == TagKind::Roc
                            || (kind == TagKind::RocMac && stream.authenticated_highest.is_none_or(|h| index > h))) =>
                {
                    resync = true;
                }
                r => r?,
            }
        }
        let roc = (index >> 16) as u32;
        let ok = match kind {
            TagKind::Empty | TagKind::Roc => true,
            TagKind::Mac => bool::from(rtp_mac(keys, &buf[..auth_end], roc)[..TAG_LEN].ct_eq(tag)),
            TagKind::RocMac => {
                bool::from(rtp_mac(keys, &buf[..auth_end], roc)[..TAG_LEN - ROC_LEN].ct_eq(&tag[ROC_LEN..]))
            }
        };
        if !ok {
            return Err(SrtpError::AuthFailed);
        }
        self.check_room(ssrc)?;
        let iv = keys.rtp_iv(ssrc, index);
        keys.rtp_cm.apply_keystream(&iv, &mut buf[hdr..auth_end]);
        let st = self.streams.entry(ssrc).or_default();
        match st.rtp.as_mut() {
            Some(w) if !resync => w.accept(index),
            _ => st.rtp = Some(ReplayWindow::new(index)),
        }
        if matches!(kind, TagKind::Mac | TagKind::RocMac) {
            st.authenticated_highest = Some(st.authenticated_highest.map_or(index, |h| h.max(index)));
        }
        Ok(auth_end)
    }

    /// Checks and decrypts the SRTCP packet in `packet` in place and removes its trailer,
    /// leaving the RTCP packet. On error the packet is left unchanged.
    pub fn unprotect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let n = self.unprotect_rtcp_in(packet)?;
        packet.truncate(n);
        Ok(())
    }

    /// Checks and (when the E bit is set) decrypts the SRTCP packet that fills `buf`; returns
    /// the length of the RTCP packet now in `buf[..n]`. On error `buf` is unchanged.
    pub fn unprotect_rtcp_in(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let len = buf.len();
        let min = RTCP_HEADER_LEN + SRTCP_OVERHEAD;
        if len < min {
            return Err(too_short("SRTCP packet", min, len));
        }
        check_version(buf[0])?;
        let ssrc = be32(buf, 4);
        let auth_end = len - MKI_LEN - TAG_LEN;
        let rtcp_end = auth_end - SRTCP_INDEX_LEN;
        let keys = self.key(&buf[auth_end..auth_end + MKI_LEN])?;
        let word = be32(buf, rtcp_end);
        let index = word & SRTCP_INDEX_MAX;
        let window = self.streams.get(&ssrc).and_then(|s| s.rtcp);
        if let Some(w) = window {
            w.check(u64::from(index))?;
        }
        let mac = keys.rtcp_mac.mac(&[&buf[..auth_end]]);
        if !bool::from(mac[..TAG_LEN].ct_eq(&buf[auth_end + MKI_LEN..])) {
            return Err(SrtpError::AuthFailed);
        }
        self.check_room(ssrc)?;
        if word & SRTCP_E_BIT != 0 {
            let iv = keys.rtcp_iv(ssrc, index);
            keys.rtcp_cm.apply_keystream(&iv, &mut buf[RTCP_HEADER_LEN..rtcp_end]);
        }
        let st = self.streams.entry(ssrc).or_default();
        match st.rtcp.as_mut() {
            Some(w) => w.accept(u64::from(index)),
            None => st.rtcp = Some(ReplayWindow::new(u64::from(index))),
        }
        Ok(rtcp_end)
    }
}

/// Runs an in-place protect on `packet` grown by `extra` bytes, then cuts it to the protected
/// length, or back to what it was when the protect fails.
fn grown(
    packet: &mut Vec<u8>,
    extra: usize,
    protect: impl FnOnce(&mut [u8], usize) -> Result<usize, SrtpError>,
) -> Result<(), SrtpError> {
    let len = packet.len();
    packet.resize(len + extra, 0);
    match protect(packet, len) {
        Ok(n) => {
            packet.truncate(n);
            Ok(())
        }
        Err(e) => {
            packet.truncate(len);
            Err(e)
        }
    }
}
