//! IPsec ESP (RFC 4303) as a user-space transform on UDP payloads, with the Keycast profile's
//! choices (P-9 \[chosen\]): AES-128-CBC (RFC 3602) + HMAC-SHA1-96 (RFC 2404), encryption key =
//! TEK, SPI = Key Group (2) ‖ TEK ID (2). profile: P-9
//!
//! ```text
//! SPI (4) | sequence number (4) | IV (16) | AES-CBC( payload | padding 1,2,3… | pad length (1) | next header (1) ) | ICV (12)
//! ```
//!
//! - **Sequence numbers** (RFC 4303 §3.3.3): the sender's first packet carries 1; without
//!   extended sequence numbers it never wraps, so after 2^32 − 1 packets
//!   [`EspError::SequenceExhausted`] asks for a new TEK (a new SA).
//! - **IV**: a fresh random IV per packet (RFC 3602 §2.2); the caller passes the 16 bytes in, so
//!   the transform does no IO and tests are deterministic.
//! - **Padding** (RFC 4303 §2.4): the minimum that makes payload ‖ padding ‖ pad length ‖ next
//!   header a multiple of 16 bytes; pad byte i (from 1) is i. The receiver accepts any pad
//!   length whose bytes are 1, 2, 3 … and refuses other padding.
//! - **ICV**: the first 12 bytes of HMAC-SHA-1 over SPI ‖ sequence number ‖ IV ‖ ciphertext,
//!   compared in constant time.
//! - **Anti-replay** (RFC 4303 §3.4.3): a window of [`REPLAY_WINDOW`] = 64 sequence numbers per
//!   SA, checked before the ICV and updated only after the ICV verified. Sequence number 0 is
//!   never sent and is refused as a replay.
//! - **HMAC key \[chosen\]**: ESP needs a second key, and P-9 names only the TEK. Keycast derives
//!   the 20-byte HMAC-SHA1-96 key from the TEK with the MIKEY PRF of RFC 3830 §4.1.2 and the
//!   §4.1.3 label for an authentication key:
//!
//!   ```text
//!   auth key = PRF(TEK, 0x1B5C7973 ‖ cs_id 0x00 ‖ SPI (4) ‖ RAND = empty), 20 bytes
//!   ```
//!
//!   the same PRF and labels the DCF choice of P-9 uses ("keys from the TEK with the RFC 3830
//!   §4.1.3 labels, cs_id 0"), with the SPI in the CSB ID position so that it binds the key to
//!   its SA and needs nothing beyond what the SA already has (no salt, no RAND). See
//!   [`auth_key`].
//!
//! The SPI is never in the IANA-reserved range 0–255, because Key Group 0 is not allowed
//! (profile P-1). No input makes these functions panic.
//!
//! ```
//! use keycast_crypto::keys::Tek;
//! use keycast_traffic::esp::{EspKey, EspReceiver, EspSender, Spi};
//!
//! let key = EspKey::new(Spi::new(0x0001, 7), Tek::from_bytes([7; 16]));
//! let mut sender = EspSender::new(&key);
//! let mut receiver = EspReceiver::new();
//! receiver.add_key(&key);
//!
//! let mut packet = b"a UDP payload".to_vec();
//! sender.protect(&mut packet, 59, [0xa5; 16]).unwrap();
//! assert_eq!(packet.len(), 8 + 16 + 16 + 12);
//! let info = receiver.unprotect(&mut packet).unwrap();
//! assert_eq!((info.seq, info.next_header, &packet[..]), (1, 59, &b"a UDP payload"[..]));
//! assert!(receiver.unprotect(&mut packet).is_err());
//! ```

use core::fmt;
use core::ops::Range;

use aes::Aes128;
use cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use keycast_crypto::hmac::{HmacSha1Key, ct_eq};
use keycast_crypto::keys::Tek;
use keycast_crypto::mikey::{TGK_AUTH, derive_tgk_key};
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of the SPI.
pub const SPI_LEN: usize = 4;
/// Length of the sequence number field.
pub const SEQ_LEN: usize = 4;
/// AES block size: the IV length and the ciphertext alignment.
pub const BLOCK_LEN: usize = 16;
/// Length of the CBC IV carried in every packet (RFC 3602 §3).
pub const IV_LEN: usize = BLOCK_LEN;
/// Length of the HMAC-SHA1-96 ICV (RFC 2404). profile: P-9
pub const ICV_LEN: usize = 12;
/// Length of the HMAC-SHA1-96 key derived from the TEK.
pub const AUTH_KEY_LEN: usize = 20;
/// SPI ‖ sequence number ‖ IV.
pub const HEADER_LEN: usize = SPI_LEN + SEQ_LEN + IV_LEN;
/// Shortest valid packet: header, one cipher block, ICV.
pub const MIN_PACKET_LEN: usize = HEADER_LEN + BLOCK_LEN + ICV_LEN;
/// Width of the receive anti-replay window in packets (RFC 4303 §3.4.3 default).
pub const REPLAY_WINDOW: u32 = 64;
/// cs_id octet of the HMAC key label. \[chosen\]
pub const AUTH_KEY_CS_ID: u8 = 0;

/// The ESP SPI: Key Group (2) ‖ TEK ID (2). profile: P-9
///
/// Public (it is on the wire); `Display` and `Debug` print it in hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Spi(u32);

impl Spi {
    /// SPI of the TEK `tek_id` in Key Group `key_group` (the first two bytes of its SEK/PEK ID).
    #[must_use]
    pub const fn new(key_group: u16, tek_id: u16) -> Self {
        Self((key_group as u32) << 16 | tek_id as u32)
    }

    /// SPI from its 32-bit wire value.
    #[must_use]
    pub const fn from_u32(value: u32) -> Self {
        Self(value)
    }

    /// The 32-bit wire value.
    #[must_use]
    pub const fn to_u32(self) -> u32 {
        self.0
    }

    /// The Key Group (first two bytes).
    #[must_use]
    pub const fn key_group(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// The TEK ID (last two bytes).
    #[must_use]
    pub const fn tek_id(self) -> u16 {
        self.0 as u16
    }
}

impl fmt::Display for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Debug for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Spi({self})")
    }
}

/// Why a packet was not protected or not accepted. Carries no key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EspError {
    /// The packet is shorter than header + one block + ICV.
    #[error("ESP packet too short: needs at least {needed} bytes, has {len}")]
    TooShort {
        /// Bytes needed ([`MIN_PACKET_LEN`]).
        needed: usize,
        /// Bytes available.
        len: usize,
    },
    /// The ciphertext is not a whole number of AES blocks.
    #[error("ESP ciphertext of {len} bytes is not a multiple of 16")]
    BadLength {
        /// Ciphertext length.
        len: usize,
    },
    /// No SA with this SPI is installed.
    #[error("unknown SPI {0} (no TEK installed under it)")]
    UnknownSpi(Spi),
    /// The ICV does not match: the packet was altered or uses another key.
    #[error("ICV mismatch")]
    IcvMismatch,
    /// A packet with this sequence number was already accepted on this SA (or it is 0).
    #[error("replayed packet (sequence number {seq})")]
    Replayed {
        /// The sequence number.
        seq: u32,
    },
    /// The sequence number lies below the replay window.
    #[error("packet too old (sequence number {seq}, highest accepted {highest})")]
    TooOld {
        /// The sequence number.
        seq: u32,
        /// Highest sequence number accepted on this SA.
        highest: u32,
    },
    /// The decrypted padding is not 1, 2, 3 … or its length does not fit.
    #[error("bad ESP padding")]
    BadPadding,
    /// The sender used all 2^32 − 1 sequence numbers; install a new TEK.
    #[error("sequence numbers exhausted; rekey")]
    SequenceExhausted,
}

/// The HMAC-SHA1-96 key of an SA: `PRF(TEK, 0x1B5C7973 ‖ 0x00 ‖ SPI ‖ "")` (RFC 3830 §4.1.2,
/// §4.1.3 label), 20 bytes. \[chosen\] profile: P-9
#[must_use]
pub fn auth_key(tek: &Tek, spi: Spi) -> Zeroizing<[u8; AUTH_KEY_LEN]> {
    let mut out = Zeroizing::new([0u8; AUTH_KEY_LEN]);
    derive_tgk_key(tek.expose_secret(), TGK_AUTH, AUTH_KEY_CS_ID, spi.to_u32(), &[], &mut out[..]);
    out
}

/// One ESP SA key as an STKM delivers it: the TEK, named by its SPI. Wiped on drop; `Debug`
/// prints only the SPI. profile: P-9
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EspKey {
    #[zeroize(skip)]
    spi: Spi,
    tek: Tek,
}

impl fmt::Debug for EspKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EspKey").field("spi", &self.spi).finish_non_exhaustive()
    }
}

impl EspKey {
    /// Bundles a TEK with its SPI.
    #[must_use]
    pub fn new(spi: Spi, tek: Tek) -> Self {
        Self { spi, tek }
    }

    /// The SPI.
    #[must_use]
    pub fn spi(&self) -> Spi {
        self.spi
    }
}

/// An SA's keys expanded for use: the AES key schedule (wiped on drop by the `aes` crate) and
/// the keyed HMAC state.
#[derive(Clone)]
struct Sa {
    spi: Spi,
    aes: Aes128,
    mac: HmacSha1Key,
}

impl Sa {
    fn new(key: &EspKey) -> Self {
        Self {
            spi: key.spi,
            aes: Aes128::new(key.tek.expose_secret().into()),
            mac: HmacSha1Key::new(&auth_key(&key.tek, key.spi)[..]),
        }
    }

    fn icv(&self, covered: &[u8]) -> [u8; ICV_LEN] {
        let full = self.mac.mac(&[covered]);
        let mut icv = [0u8; ICV_LEN];
        icv.copy_from_slice(&full[..ICV_LEN]);
        icv
    }

    fn cbc_encrypt(&self, iv: &[u8; IV_LEN], data: &mut [u8]) {
        let mut prev = *iv;
        for chunk in data.chunks_exact_mut(BLOCK_LEN) {
            let mut block = [0u8; BLOCK_LEN];
            for ((b, c), p) in block.iter_mut().zip(chunk.iter()).zip(prev) {
                *b = c ^ p;
            }
            self.aes.encrypt_block((&mut block).into());
            chunk.copy_from_slice(&block);
            prev = block;
        }
    }

    fn cbc_decrypt(&self, iv: &[u8; IV_LEN], data: &mut [u8]) {
        let mut prev = *iv;
        for chunk in data.chunks_exact_mut(BLOCK_LEN) {
            let mut block = [0u8; BLOCK_LEN];
            block.copy_from_slice(chunk);
            let saved = block;
            self.aes.decrypt_block((&mut block).into());
            for ((c, b), p) in chunk.iter_mut().zip(block).zip(prev) {
                *c = b ^ p;
            }
            prev = saved;
        }
    }
}

/// What [`EspReceiver::unprotect`] learned from the packet besides the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspInfo {
    /// The SA's SPI.
    pub spi: Spi,
    /// The packet's sequence number.
    pub seq: u32,
    /// The next header field (e.g. 17 for a UDP datagram, 59 for no next header).
    pub next_header: u8,
    /// The number of padding bytes the packet carried.
    pub pad_len: u8,
}

/// The sending side of one ESP SA.
#[derive(Clone)]
pub struct EspSender {
    sa: Sa,
    seq: u32,
}

impl fmt::Debug for EspSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EspSender").field("spi", &self.sa.spi).field("seq", &self.seq).finish_non_exhaustive()
    }
}

impl EspSender {
    /// A sender whose first packet carries sequence number 1.
    #[must_use]
    pub fn new(key: &EspKey) -> Self {
        Self { sa: Sa::new(key), seq: 0 }
    }

    /// Switches to a new SA (a new TEK); its sequence numbers start again at 1.
    pub fn set_key(&mut self, key: &EspKey) {
        *self = Self::new(key);
    }

    /// The SPI of the current SA.
    #[must_use]
    pub fn spi(&self) -> Spi {
        self.sa.spi
    }

    /// The sequence number of the last packet sent (0 before the first).
    #[must_use]
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// Sets the sequence number of the last packet sent; the next packet carries `seq + 1`.
    pub fn set_seq(&mut self, seq: u32) {
        self.seq = seq;
    }

    /// Turns the payload in `packet` into an ESP packet in place, with the caller's fresh random
    /// `iv` and the `next_header` value; returns the sequence number used.
    pub fn protect(&mut self, packet: &mut Vec<u8>, next_header: u8, iv: [u8; IV_LEN]) -> Result<u32, EspError> {
        let seq = self.seq.checked_add(1).ok_or(EspError::SequenceExhausted)?;
        let pad_len = (BLOCK_LEN - (packet.len() + 2) % BLOCK_LEN) % BLOCK_LEN;
        packet.reserve(HEADER_LEN + pad_len + 2 + ICV_LEN);
        // pad_len < 16, so the bytes 1..=pad_len and the length itself fit in a u8.
        packet.extend((1..=pad_len).map(|i| i as u8));
        packet.push(pad_len as u8);
        packet.push(next_header);
        let mut header = [0u8; HEADER_LEN];
        header[..SPI_LEN].copy_from_slice(&self.sa.spi.to_u32().to_be_bytes());
        header[SPI_LEN..SPI_LEN + SEQ_LEN].copy_from_slice(&seq.to_be_bytes());
        header[SPI_LEN + SEQ_LEN..].copy_from_slice(&iv);
        packet.splice(0..0, header);
        self.sa.cbc_encrypt(&iv, &mut packet[HEADER_LEN..]);
        let icv = self.sa.icv(packet);
        packet.extend_from_slice(&icv);
        self.seq = seq;
        Ok(seq)
    }
}

/// Highest accepted sequence number plus a bitmap of the 64 below it (bit k = `highest − k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    highest: u32,
    seen: u64,
}

impl Window {
    /// Sequence number 0 counts as seen: it is never sent.
    const NEW: Self = Self { highest: 0, seen: 1 };

    fn check(&self, seq: u32) -> Result<(), EspError> {
        if seq > self.highest {
            return Ok(());
        }
        let delta = self.highest - seq;
        if delta >= REPLAY_WINDOW {
            return Err(EspError::TooOld { seq, highest: self.highest });
        }
        if self.seen >> delta & 1 == 1 {
            return Err(EspError::Replayed { seq });
        }
        Ok(())
    }

    fn accept(&mut self, seq: u32) {
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= REPLAY_WINDOW { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = seq;
        } else {
            // check() passed, so the shift is below 64.
            self.seen |= 1u64 << (self.highest - seq);
        }
    }
}

/// The receiving side: up to two SAs looked up by SPI (the current TEK and the next or
/// previous one around a key change), each with its own replay window.
#[derive(Clone, Default)]
pub struct EspReceiver {
    sas: [Option<(Sa, Window)>; 2],
}

impl fmt::Debug for EspReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.spis()).finish()
    }
}

impl EspReceiver {
    /// A receiver with no SAs.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs an SA. A key whose SPI is already present replaces it in place and keeps its
    /// replay window (a resent STKM); otherwise it becomes the newest and the oldest of two is
    /// dropped, whose SPI is returned.
    pub fn add_key(&mut self, key: &EspKey) -> Option<Spi> {
        let new = Sa::new(key);
        if let Some((sa, _)) = self.sas.iter_mut().flatten().find(|(sa, _)| sa.spi == new.spi) {
            *sa = new;
            return None;
        }
        let dropped = self.sas[1].take().map(|(sa, _)| sa.spi);
        self.sas[1] = self.sas[0].replace((new, Window::NEW));
        dropped
    }

    /// Removes the SA with this SPI; true if there was one.
    pub fn remove_key(&mut self, spi: Spi) -> bool {
        for slot in &mut self.sas {
            if slot.as_ref().is_some_and(|(sa, _)| sa.spi == spi) {
                *slot = None;
                return true;
            }
        }
        false
    }

    /// SPIs of the installed SAs, newest first.
    pub fn spis(&self) -> impl Iterator<Item = Spi> + '_ {
        self.sas.iter().flatten().map(|(sa, _)| sa.spi)
    }

    /// Highest sequence number accepted on the SA `spi` (0 before the first packet).
    #[must_use]
    pub fn highest_seq(&self, spi: Spi) -> Option<u32> {
        self.sas.iter().flatten().find(|(sa, _)| sa.spi == spi).map(|(_, w)| w.highest)
    }

    /// Checks and decrypts the ESP packet in `buf` in place; returns what it carried and where
    /// the payload now lies in `buf`. On an ICV, replay or SPI error `buf` is left unchanged.
    pub fn unprotect_in(&mut self, buf: &mut [u8]) -> Result<(EspInfo, Range<usize>), EspError> {
        let len = buf.len();
        if len < MIN_PACKET_LEN {
            return Err(EspError::TooShort { needed: MIN_PACKET_LEN, len });
        }
        let ct_len = len - HEADER_LEN - ICV_LEN;
        if !ct_len.is_multiple_of(BLOCK_LEN) {
            return Err(EspError::BadLength { len: ct_len });
        }
        let word = |at: usize| u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let spi = Spi::from_u32(word(0));
        let seq = word(SPI_LEN);
        let (sa, window) =
            self.sas.iter_mut().flatten().find(|(sa, _)| sa.spi == spi).ok_or(EspError::UnknownSpi(spi))?;
        window.check(seq)?;
        let (covered, icv) = buf.split_at_mut(len - ICV_LEN);
        if !ct_eq(&sa.icv(covered), icv) {
            return Err(EspError::IcvMismatch);
        }
        window.accept(seq);
        let (header, ct) = covered.split_at_mut(HEADER_LEN);
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&header[SPI_LEN + SEQ_LEN..]);
        sa.cbc_decrypt(&iv, ct);
        // ct is at least one block long, so the trailer's two bytes are there.
        let next_header = ct[ct_len - 1];
        let pad_len = ct[ct_len - 2];
        let pad = usize::from(pad_len);
        if pad + 2 > ct_len {
            return Err(EspError::BadPadding);
        }
        let payload_len = ct_len - 2 - pad;
        let padding = &ct[payload_len..ct_len - 2];
        // Padding is not secret (RFC 4303 §2.4), so a plain comparison is fine here.
        if !padding.iter().zip(1u8..).all(|(&b, i)| b == i) {
            return Err(EspError::BadPadding);
        }
        let info = EspInfo { spi, seq, next_header, pad_len };
        Ok((info, HEADER_LEN..HEADER_LEN + payload_len))
    }

    /// Checks and decrypts the ESP packet in `packet` and leaves only its payload there.
    pub fn unprotect(&mut self, packet: &mut Vec<u8>) -> Result<EspInfo, EspError> {
        let (info, range) = self.unprotect_in(packet)?;
        packet.truncate(range.end);
        packet.drain(..range.start);
        Ok(info)
    }
}

/// Entry point of the `esp_open` fuzz target (not a stable API).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use keycast_crypto::keys::Tek;

    use super::{EspKey, EspReceiver, EspSender, HEADER_LEN, IV_LEN, Spi};

    /// Keys of the fuzz receiver (and of the seed corpus): SPI 0001 0001 with TEK `[0x11; 16]`
    /// and SPI 0001 0002 with TEK `[0x33; 16]`.
    #[must_use]
    pub fn keys() -> [EspKey; 2] {
        [
            EspKey::new(Spi::new(1, 1), Tek::from_bytes([0x11; 16])),
            EspKey::new(Spi::new(1, 2), Tek::from_bytes([0x33; 16])),
        ]
    }

    /// Splits `data` into length-prefixed packets fed to one receiver holding both fuzz keys, so
    /// replay state carries over. What opens must seal again (same SA, sequence number and IV)
    /// to a packet that opens to the same payload; with minimal padding, to the same bytes.
    pub fn esp_open(data: &[u8]) {
        let keys = keys();
        let mut rx = EspReceiver::new();
        keys.iter().for_each(|k| _ = rx.add_key(k));
        let mut rest = data;
        while let Some((&len, tail)) = rest.split_first() {
            let (pkt, tail) = tail.split_at(usize::from(len).min(tail.len()));
            rest = tail;
            let mut p = pkt.to_vec();
            let Ok(info) = rx.unprotect(&mut p) else { continue };
            let key = keys.iter().find(|k| k.spi() == info.spi).expect("an accepted SPI is installed");
            let mut tx = EspSender::new(key);
            tx.set_seq(info.seq - 1);
            let mut iv = [0u8; IV_LEN];
            iv.copy_from_slice(&pkt[8..HEADER_LEN]);
            let payload = p.clone();
            tx.protect(&mut p, info.next_header, iv).expect("seq ≥ 1 leaves room");
            if info.pad_len < 16 && p.len() == pkt.len() {
                assert_eq!(p, pkt, "open then seal gives back the packet");
            }
            let mut fresh = EspReceiver::new();
            fresh.add_key(key);
            let again = fresh.unprotect(&mut p).expect("a sealed packet opens");
            assert_eq!((again.seq, again.next_header, &p[..]), (info.seq, info.next_header, &payload[..]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spi_is_key_group_and_tek_id() {
        let spi = Spi::new(0x1234, 0xabcd);
        assert_eq!((spi.to_u32(), spi.key_group(), spi.tek_id()), (0x1234_abcd, 0x1234, 0xabcd));
        assert_eq!(format!("{spi:?}"), "Spi(1234abcd)");
    }

    #[test]
    fn window_refuses_replays_and_old_packets() {
        let mut w = Window::NEW;
        assert_eq!(w.check(0), Err(EspError::Replayed { seq: 0 }));
        w.accept(100);
        assert_eq!(w.check(100), Err(EspError::Replayed { seq: 100 }));
        assert_eq!(w.check(37), Ok(()));
        assert_eq!(w.check(36), Err(EspError::TooOld { seq: 36, highest: 100 }));
        w.accept(37);
        assert_eq!(w.check(37), Err(EspError::Replayed { seq: 37 }));
        w.accept(1000);
        assert_eq!(w.check(999), Ok(()));
        assert_eq!(w.check(100), Err(EspError::TooOld { seq: 100, highest: 1000 }));
    }

    #[test]
    fn sender_refuses_to_wrap() {
        let mut tx = EspSender::new(&EspKey::new(Spi::new(1, 1), Tek::from_bytes([1; 16])));
        tx.set_seq(u32::MAX);
        assert_eq!(tx.protect(&mut vec![1, 2, 3], 59, [0; 16]), Err(EspError::SequenceExhausted));
    }

    #[test]
    fn padding_is_minimal_and_self_describing() {
        let key = EspKey::new(Spi::new(1, 1), Tek::from_bytes([1; 16]));
        for len in 0..40 {
            let mut tx = EspSender::new(&key);
            let mut rx = EspReceiver::new();
            rx.add_key(&key);
            let mut p = vec![0xee; len];
            tx.protect(&mut p, 17, [3; 16]).unwrap();
            assert_eq!((p.len() - HEADER_LEN - ICV_LEN) % 16, 0);
            let info = rx.unprotect(&mut p).unwrap();
            assert_eq!(usize::from(info.pad_len), (16 - (len + 2) % 16) % 16);
            assert_eq!(p, vec![0xee; len]);
        }
    }
}
