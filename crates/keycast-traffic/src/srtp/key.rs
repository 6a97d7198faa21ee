//! Master keys and their identifiers.

use core::fmt;

use keycast_crypto::aes_cm::AesCm128;
use keycast_crypto::hmac::HmacSha1Key;
use keycast_crypto::keys::{Tek, TekSalt};
use keycast_crypto::srtp_kdf::SrtpSessionKeys;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of the MKI in bytes. profile: P-9
pub const MKI_LEN: usize = 6;

/// The SRTP/SRTCP master key identifier: SEK/PEK ID (4) ‖ TEK ID (2), carried in every packet.
/// profile: P-9 (TS 33.246 §6.6.2; P-1 for the two IDs).
///
/// Public (it is on the wire); `Display` and `Debug` print it in hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mki([u8; MKI_LEN]);

impl Mki {
    /// MKI of the TEK `tek_id` under the SEK/PEK `sek_pek_id` (Key Group ‖ Key Number).
    #[must_use]
    pub const fn new(sek_pek_id: u32, tek_id: u16) -> Self {
        let s = sek_pek_id.to_be_bytes();
        let t = tek_id.to_be_bytes();
        Self([s[0], s[1], s[2], s[3], t[0], t[1]])
    }

    /// MKI from its six wire bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; MKI_LEN]) -> Self {
        Self(bytes)
    }

    /// The six wire bytes.
    #[must_use]
    pub const fn to_bytes(self) -> [u8; MKI_LEN] {
        self.0
    }

    /// The SEK/PEK ID (first four bytes).
    #[must_use]
    pub const fn sek_pek_id(self) -> u32 {
        u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }

    /// The TEK ID (last two bytes).
    #[must_use]
    pub const fn tek_id(self) -> u16 {
        u16::from_be_bytes([self.0[4], self.0[5]])
    }
}

impl fmt::Display for Mki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Mki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mki({self})")
    }
}

/// One SRTP master key as an STKM delivers it: master key = TEK (16 bytes), master salt = the
/// STKM salt (14 bytes), named by its [`Mki`]. Key derivation rate 0. profile: P-9
///
/// The TEK and salt are wiped on drop; `Debug` prints only the MKI.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SrtpMasterKey {
    #[zeroize(skip)]
    mki: Mki,
    key: Tek,
    salt: TekSalt,
}

impl fmt::Debug for SrtpMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpMasterKey").field("mki", &self.mki).finish_non_exhaustive()
    }
}

impl SrtpMasterKey {
    /// Bundles a TEK and its salt under their MKI.
    #[must_use]
    pub fn new(mki: Mki, key: Tek, salt: TekSalt) -> Self {
        Self { mki, key, salt }
    }

    /// The key's MKI.
    #[must_use]
    pub fn mki(&self) -> Mki {
        self.mki
    }

    /// The master key (TEK).
    #[must_use]
    pub fn key(&self) -> &Tek {
        &self.key
    }

    /// The master salt.
    #[must_use]
    pub fn salt(&self) -> &TekSalt {
        &self.salt
    }
}

/// Session keys of one master key, expanded for use: AES key schedules and keyed HMAC states.
/// Every part wipes itself on drop.
pub(crate) struct KeySet {
    pub(crate) mki: Mki,
    session: SrtpSessionKeys,
    pub(crate) rtp_cm: AesCm128,
    pub(crate) rtp_mac: HmacSha1Key,
    pub(crate) rtcp_cm: AesCm128,
    pub(crate) rtcp_mac: HmacSha1Key,
}

impl KeySet {
    /// Derives the six session keys (RFC 3711 §4.3, rate 0) and expands them.
    pub(crate) fn new(master: &SrtpMasterKey) -> Self {
        let session = SrtpSessionKeys::derive(master.key.expose_secret(), master.salt.expose_secret());
        Self {
            mki: master.mki,
            rtp_cm: AesCm128::new(session.rtp_cipher_key()),
            rtp_mac: HmacSha1Key::new(session.rtp_auth_key()),
            rtcp_cm: AesCm128::new(session.rtcp_cipher_key()),
            rtcp_mac: HmacSha1Key::new(session.rtcp_auth_key()),
            session,
        }
    }

    /// AES-CM IV for SRTP (RFC 3711 §4.1.1).
    pub(crate) fn rtp_iv(&self, ssrc: u32, index: u64) -> [u8; 16] {
        iv(self.session.rtp_salt(), ssrc, index)
    }

    /// AES-CM IV for SRTCP: the SRTCP index takes the place of the packet index.
    pub(crate) fn rtcp_iv(&self, ssrc: u32, index: u32) -> [u8; 16] {
        iv(self.session.rtcp_salt(), ssrc, u64::from(index))
    }
}

/// IV = (k_s · 2^16) XOR (SSRC · 2^64) XOR (i · 2^16): salt in bytes 0..14, SSRC XORed into
/// bytes 4..8, the 48-bit index into bytes 8..14, bytes 14..16 zero.
fn iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *d ^= s;
    }
    iv
}
