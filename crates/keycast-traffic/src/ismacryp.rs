//! ISMACryp 1.x sample encryption with the Keycast profile's choices (P-9 \[chosen\]):
//! AES-128-CTR, key = TEK, salt = the first 8 bytes of the STKM salt, IV length 8, key
//! indicator length 6 (= the SRTP MKI, SEK/PEK ID ‖ TEK ID), no selective encryption.
//! profile: P-9
//!
//! Each access unit (sample) is sent as
//!
//! ```text
//! IV = byte stream offset (BSO) of the sample (8) | key indicator (6) | encrypted sample
//! ```
//!
//! and the keystream is AES-128-CTR with the counter block `salt (8) ‖ (BSO DIV 16)` as a
//! 64-bit big-endian number, skipping the first `BSO mod 16` keystream bytes
//! (shared/reference/facts-ietf-oma.md §7, read from GPAC `src/isomedia/drm_sample.c` and
//! `src/filters/decrypt_cenc_isma.c`). So the samples of one stream, concatenated, are one
//! continuous CTR stream, and each sample can be decrypted on its own from its IV.
//!
//! ISMACryp has no integrity check: a wrong key or altered bytes decrypt to garbage. The only
//! errors are a header that does not fit ([`IsmacrypError::TooShort`]), a key indicator no key
//! is installed under ([`IsmacrypError::UnknownKeyIndicator`]) and, on the sending side, a byte
//! offset that would pass 2^64 ([`IsmacrypError::OffsetExhausted`]). No input panics.
//!
//! ```
//! use keycast_crypto::keys::{Tek, TekSalt};
//! use keycast_traffic::ismacryp::{HEADER_LEN, IsmacrypKey, IsmacrypReceiver, IsmacrypSender};
//! use keycast_traffic::srtp::Mki;
//!
//! let key = IsmacrypKey::from_stkm(Mki::new(0x0001_0002, 1), Tek::from_bytes([7; 16]), &TekSalt::from_bytes([9; 14]));
//! let mut sender = IsmacrypSender::new(&key);
//! let mut receiver = IsmacrypReceiver::new();
//! receiver.add_key(&key);
//!
//! let mut sample = b"one access unit".to_vec();
//! sender.protect(&mut sample).unwrap();
//! assert_eq!(sample.len(), HEADER_LEN + 15);
//! let header = receiver.unprotect(&mut sample).unwrap();
//! assert_eq!((header.iv, &sample[..]), (0, &b"one access unit"[..]));
//! assert_eq!(sender.offset(), 15);
//! ```

use core::fmt;

use keycast_crypto::aes_cm::AesCm128;
use keycast_crypto::keys::{Tek, TekSalt};
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::srtp::{MKI_LEN, Mki};

/// Length of the per-sample IV (the byte stream offset). profile: P-9
pub const IV_LEN: usize = 8;
/// Length of the per-sample key indicator (SEK/PEK ID ‖ TEK ID, as the SRTP MKI). profile: P-9
pub const KEY_INDICATOR_LEN: usize = MKI_LEN;
/// Length of the ISMACryp sample header: IV then key indicator (no selective-encryption octet).
pub const HEADER_LEN: usize = IV_LEN + KEY_INDICATOR_LEN;
/// Length of the ISMACryp salt: the first 8 bytes of the STKM salt. profile: P-9
pub const SALT_LEN: usize = 8;

/// Why a sample was not protected or not accepted. Carries no key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IsmacrypError {
    /// The sample is shorter than the ISMACryp header.
    #[error("sample too short: the ISMACryp header needs {needed} bytes, the sample has {len}")]
    TooShort {
        /// Bytes needed ([`HEADER_LEN`]).
        needed: usize,
        /// Bytes available.
        len: usize,
    },
    /// No key is installed under this key indicator.
    #[error("unknown key indicator {0} (no TEK installed under it)")]
    UnknownKeyIndicator(Mki),
    /// The byte stream offset would pass 2^64 − 1; the stream needs a new key and offset 0.
    #[error("byte stream offset exhausted; rekey")]
    OffsetExhausted,
}

/// The clear header in front of every encrypted sample. Public (it is on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SampleHeader {
    /// The IV: the byte stream offset of the sample's first byte.
    pub iv: u64,
    /// The key indicator: which TEK encrypted the sample.
    pub key_indicator: Mki,
}

impl SampleHeader {
    /// The [`HEADER_LEN`] wire bytes: IV (8, big-endian) ‖ key indicator (6).
    #[must_use]
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..IV_LEN].copy_from_slice(&self.iv.to_be_bytes());
        out[IV_LEN..].copy_from_slice(&self.key_indicator.to_bytes());
        out
    }

    /// Appends the wire bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    /// Splits a received sample into its header and the encrypted data after it.
    pub fn parse(sample: &[u8]) -> Result<(Self, &[u8]), IsmacrypError> {
        let Some((head, data)) = sample.split_first_chunk::<HEADER_LEN>() else {
            return Err(IsmacrypError::TooShort { needed: HEADER_LEN, len: sample.len() });
        };
        let (iv, ki) = head.split_at(IV_LEN);
        // Both conversions are of slices cut to exactly these lengths just above.
        let iv = u64::from_be_bytes(iv.try_into().expect("IV_LEN bytes"));
        let key_indicator = Mki::from_bytes(ki.try_into().expect("KEY_INDICATOR_LEN bytes"));
        Ok((Self { iv, key_indicator }, data))
    }
}

/// One ISMACryp key as an STKM delivers it: the TEK and the 8-byte salt, named by their key
/// indicator. Wiped on drop; `Debug` prints only the key indicator. profile: P-9
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct IsmacrypKey {
    #[zeroize(skip)]
    key_indicator: Mki,
    tek: Tek,
    salt: [u8; SALT_LEN],
}

impl fmt::Debug for IsmacrypKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsmacrypKey").field("key_indicator", &self.key_indicator).finish_non_exhaustive()
    }
}

impl IsmacrypKey {
    /// The key from an STKM's TEK and salt: the ISMACryp salt is the first 8 bytes of the
    /// 14-byte STKM salt. profile: P-9
    #[must_use]
    pub fn from_stkm(key_indicator: Mki, tek: Tek, stkm_salt: &TekSalt) -> Self {
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&stkm_salt.expose_secret()[..SALT_LEN]);
        Self { key_indicator, tek, salt }
    }

    /// The key from a TEK and an 8-byte ISMACryp salt given directly.
    #[must_use]
    pub fn new(key_indicator: Mki, tek: Tek, salt: [u8; SALT_LEN]) -> Self {
        Self { key_indicator, tek, salt }
    }

    /// The key indicator (SEK/PEK ID ‖ TEK ID).
    #[must_use]
    pub fn key_indicator(&self) -> Mki {
        self.key_indicator
    }
}

/// A TEK with its AES key schedule expanded, plus its salt; wiped on drop.
#[derive(Clone)]
struct SampleCipher {
    key_indicator: Mki,
    cm: AesCm128,
    salt: zeroize::Zeroizing<[u8; SALT_LEN]>,
}

impl SampleCipher {
    fn new(key: &IsmacrypKey) -> Self {
        Self {
            key_indicator: key.key_indicator,
            cm: AesCm128::new(key.tek.expose_secret()),
            salt: zeroize::Zeroizing::new(key.salt),
        }
    }

    fn apply(&self, iv: u64, data: &mut [u8]) {
        apply_with(&self.cm, &self.salt, iv, data);
    }
}

/// Counter block `salt ‖ block_number` (64-bit big-endian).
fn counter_block(salt: &[u8; SALT_LEN], block: u64) -> [u8; 16] {
    let mut cb = [0u8; 16];
    cb[..SALT_LEN].copy_from_slice(salt);
    cb[SALT_LEN..].copy_from_slice(&block.to_be_bytes());
    cb
}

fn apply_with(cm: &AesCm128, salt: &[u8; SALT_LEN], iv: u64, data: &mut [u8]) {
    let block = iv / 16;
    // Always < 16, so the cast and the slicing below stay in range.
    let skip = (iv % 16) as usize;
    let mut rest = data;
    let mut next = block;
    if skip != 0 {
        // The sample starts inside a keystream block: use its last 16 − skip bytes.
        let n = (16 - skip).min(rest.len());
        let mut tmp = zeroize::Zeroizing::new([0u8; 16]);
        tmp[skip..skip + n].copy_from_slice(&rest[..n]);
        cm.apply_keystream(&counter_block(salt, block), &mut tmp[..]);
        rest[..n].copy_from_slice(&tmp[skip..skip + n]);
        rest = &mut rest[n..];
        // iv ≤ 2^64 − 1, so iv / 16 + 1 ≤ 2^60 and cannot overflow.
        next = block + 1;
    }
    // The 128-bit counter increments cannot carry into the salt: the block number stays below
    // 2^60 + 2^60 for any slice length.
    cm.apply_keystream(&counter_block(salt, next), rest);
}

/// Encrypts or decrypts (the same operation) `data` in place as the sample at byte stream
/// offset `iv`, with AES-128-CTR under `tek` and the 8-byte ISMACryp `salt`. profile: P-9
pub fn apply_keystream(tek: &Tek, salt: &[u8; SALT_LEN], iv: u64, data: &mut [u8]) {
    apply_with(&AesCm128::new(tek.expose_secret()), salt, iv, data);
}

/// The sending side of an ISMACryp stream: one key and the running byte stream offset.
#[derive(Clone)]
pub struct IsmacrypSender {
    cipher: SampleCipher,
    offset: u64,
}

impl fmt::Debug for IsmacrypSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsmacrypSender")
            .field("key_indicator", &self.cipher.key_indicator)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl IsmacrypSender {
    /// A sender at byte stream offset 0.
    #[must_use]
    pub fn new(key: &IsmacrypKey) -> Self {
        Self { cipher: SampleCipher::new(key), offset: 0 }
    }

    /// Switches to another key (a new STKM); the byte stream offset carries on.
    pub fn set_key(&mut self, key: &IsmacrypKey) {
        self.cipher = SampleCipher::new(key);
    }

    /// Byte stream offset of the next sample.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Sets the byte stream offset of the next sample.
    pub fn set_offset(&mut self, offset: u64) {
        self.offset = offset;
    }

    /// The key indicator of the current key.
    #[must_use]
    pub fn key_indicator(&self) -> Mki {
        self.cipher.key_indicator
    }

    /// Encrypts the sample in `sample` in place and puts the header in front of it; the byte
    /// stream offset advances by the sample's length.
    pub fn protect(&mut self, sample: &mut Vec<u8>) -> Result<SampleHeader, IsmacrypError> {
        let len = u64::try_from(sample.len()).map_err(|_| IsmacrypError::OffsetExhausted)?;
        let next = self.offset.checked_add(len).ok_or(IsmacrypError::OffsetExhausted)?;
        let header = SampleHeader { iv: self.offset, key_indicator: self.cipher.key_indicator };
        self.cipher.apply(header.iv, sample);
        sample.splice(0..0, header.to_bytes());
        self.offset = next;
        Ok(header)
    }
}

/// The receiving side: up to two keys looked up by key indicator, like the SRTP receiver.
///
/// [`add_key`](Self::add_key) keeps the two most recently added TEKs (the current one and the
/// next or previous one around a key change).
#[derive(Clone, Default)]
pub struct IsmacrypReceiver {
    keys: [Option<SampleCipher>; 2],
}

impl fmt::Debug for IsmacrypReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.key_indicators()).finish()
    }
}

impl IsmacrypReceiver {
    /// A receiver with no keys.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs a key. A key whose key indicator is already present replaces it in place (a
    /// resent STKM); otherwise it becomes the newest and the oldest of two is dropped, whose key
    /// indicator is returned.
    pub fn add_key(&mut self, key: &IsmacrypKey) -> Option<Mki> {
        let new = SampleCipher::new(key);
        if let Some(slot) = self.keys.iter_mut().flatten().find(|k| k.key_indicator == new.key_indicator) {
            *slot = new;
            return None;
        }
        let dropped = self.keys[1].take().map(|k| k.key_indicator);
        self.keys[1] = self.keys[0].replace(new);
        dropped
    }

    /// Removes the key with this key indicator; true if there was one.
    pub fn remove_key(&mut self, key_indicator: Mki) -> bool {
        for slot in &mut self.keys {
            if slot.as_ref().is_some_and(|k| k.key_indicator == key_indicator) {
                *slot = None;
                return true;
            }
        }
        false
    }

    /// Key indicators of the installed keys, newest first.
    pub fn key_indicators(&self) -> impl Iterator<Item = Mki> + '_ {
        self.keys.iter().flatten().map(|k| k.key_indicator)
    }

    fn cipher(&self, key_indicator: Mki) -> Result<&SampleCipher, IsmacrypError> {
        self.keys
            .iter()
            .flatten()
            .find(|k| k.key_indicator == key_indicator)
            .ok_or(IsmacrypError::UnknownKeyIndicator(key_indicator))
    }

    /// Decrypts the sample in `sample` in place and returns its plaintext part (after the
    /// header), with the header.
    pub fn unprotect_in<'a>(&self, sample: &'a mut [u8]) -> Result<(SampleHeader, &'a mut [u8]), IsmacrypError> {
        let (header, _) = SampleHeader::parse(sample)?;
        let cipher = self.cipher(header.key_indicator)?;
        let data = &mut sample[HEADER_LEN..];
        cipher.apply(header.iv, data);
        Ok((header, data))
    }

    /// Decrypts the sample in `sample` and removes the header, leaving the plaintext.
    pub fn unprotect(&self, sample: &mut Vec<u8>) -> Result<SampleHeader, IsmacrypError> {
        let (header, _) = self.unprotect_in(sample)?;
        sample.drain(..HEADER_LEN);
        Ok(header)
    }
}

/// Entry point of the `ismacryp_header` fuzz target (not a stable API).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use keycast_crypto::keys::Tek;

    use super::{HEADER_LEN, IsmacrypKey, IsmacrypReceiver, IsmacrypSender, SampleHeader};
    use crate::srtp::Mki;

    /// Keys of the fuzz receiver: key indicator 00010001 0001 with TEK `[0x11; 16]`, salt
    /// `[0x22; 8]`, and 00010001 0002 with TEK `[0x33; 16]`, salt `[0x44; 8]`.
    #[must_use]
    pub fn keys() -> [IsmacrypKey; 2] {
        [
            IsmacrypKey::new(Mki::new(0x0001_0001, 1), Tek::from_bytes([0x11; 16]), [0x22; 8]),
            IsmacrypKey::new(Mki::new(0x0001_0001, 2), Tek::from_bytes([0x33; 16]), [0x44; 8]),
        ]
    }

    /// Parses `data` as a sample header; what parses must re-encode to the same bytes, and
    /// what a receiver with the fuzz keys decrypts must encrypt back to `data` at the same
    /// offset.
    pub fn header(data: &[u8]) {
        let Ok((header, rest)) = SampleHeader::parse(data) else {
            assert!(data.len() < HEADER_LEN, "only short input is refused");
            return;
        };
        assert_eq!(header.to_bytes()[..], data[..HEADER_LEN]);
        assert_eq!(rest.len(), data.len() - HEADER_LEN);
        let keys = keys();
        let mut rx = IsmacrypReceiver::new();
        keys.iter().for_each(|k| _ = rx.add_key(k));
        let mut sample = data.to_vec();
        if rx.unprotect(&mut sample).is_ok() {
            let key = keys.iter().find(|k| k.key_indicator() == header.key_indicator).expect("key was found");
            let mut tx = IsmacrypSender::new(key);
            tx.set_offset(header.iv);
            if tx.protect(&mut sample).is_ok() {
                assert_eq!(sample, data, "decrypt then encrypt is the identity");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tek_id: u16, fill: u8) -> IsmacrypKey {
        IsmacrypKey::new(Mki::new(0x0001_0001, tek_id), Tek::from_bytes([fill; 16]), [fill ^ 0x5a; 8])
    }

    #[test]
    fn rejects_short_header() {
        assert_eq!(SampleHeader::parse(&[0; 13]), Err(IsmacrypError::TooShort { needed: 14, len: 13 }));
    }

    #[test]
    fn rejects_unknown_key_indicator() {
        let mut tx = IsmacrypSender::new(&key(1, 1));
        let mut s = b"abc".to_vec();
        tx.protect(&mut s).unwrap();
        let rx = IsmacrypReceiver::new();
        assert_eq!(rx.unprotect(&mut s), Err(IsmacrypError::UnknownKeyIndicator(Mki::new(0x0001_0001, 1))));
    }

    #[test]
    fn rejects_offset_overflow() {
        let mut tx = IsmacrypSender::new(&key(1, 1));
        tx.set_offset(u64::MAX - 1);
        assert_eq!(tx.protect(&mut vec![0; 2]), Err(IsmacrypError::OffsetExhausted));
        assert!(tx.protect(&mut vec![0; 1]).is_ok());
    }

    #[test]
    fn keeps_two_newest_keys() {
        let mut rx = IsmacrypReceiver::new();
        assert_eq!(rx.add_key(&key(1, 1)), None);
        assert_eq!(rx.add_key(&key(2, 2)), None);
        assert_eq!(rx.add_key(&key(2, 2)), None);
        assert_eq!(rx.add_key(&key(3, 3)), Some(Mki::new(0x0001_0001, 1)));
        assert_eq!(rx.key_indicators().collect::<Vec<_>>(), [Mki::new(0x0001_0001, 3), Mki::new(0x0001_0001, 2)]);
        assert!(rx.remove_key(Mki::new(0x0001_0001, 2)));
        assert!(!rx.remove_key(Mki::new(0x0001_0001, 2)));
    }

    #[test]
    fn samples_split_anywhere_form_one_ctr_stream() {
        let k = key(1, 9);
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = data.clone();
        apply_keystream(&k.tek, &k.salt, 5, &mut whole);
        for cut in 0..data.len() {
            let (mut a, mut b) = (data[..cut].to_vec(), data[cut..].to_vec());
            apply_keystream(&k.tek, &k.salt, 5, &mut a);
            apply_keystream(&k.tek, &k.salt, 5 + cut as u64, &mut b);
            assert_eq!([a, b].concat(), whole, "cut at {cut}");
        }
    }
}
