//! SRTP/SRTCP key derivation (RFC 3711 §4.3) with key derivation rate 0, the only rate
//! TS 33.246 allows in its SRTP policy ("0 or absent").

use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::aes_cm::AesCm128;

/// Labels of RFC 3711 §4.3.1 (SRTP) and §4.3.2 (SRTCP).
pub mod label {
    /// SRTP encryption key.
    pub const RTP_CIPHER: u8 = 0x00;
    /// SRTP authentication key.
    pub const RTP_AUTH: u8 = 0x01;
    /// SRTP salting key.
    pub const RTP_SALT: u8 = 0x02;
    /// SRTCP encryption key.
    pub const RTCP_CIPHER: u8 = 0x03;
    /// SRTCP authentication key.
    pub const RTCP_AUTH: u8 = 0x04;
    /// SRTCP salting key.
    pub const RTCP_SALT: u8 = 0x05;
}

/// x = (label ‖ r) XOR master salt, with r = 0 (48 bits); the label lands on salt byte 7.
/// The AES-CM IV is x · 2^16 (RFC 3711 §4.3.1, §4.3.3).
fn iv(master_salt: &[u8; 14], label: u8) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(master_salt);
    iv[7] ^= label;
    iv
}

fn derive_with(cm: &AesCm128, master_salt: &[u8; 14], label: u8, out: &mut [u8]) {
    out.fill(0);
    cm.apply_keystream(&iv(master_salt, label), out);
}

/// Derives `out.len()` bytes for `label` from the master key and salt (PRF = AES-CM).
pub fn derive(master_key: &[u8; 16], master_salt: &[u8; 14], label: u8, out: &mut [u8]) {
    derive_with(&AesCm128::new(master_key), master_salt, label, out);
}

/// The six session keys of an AES-CM-128 / HMAC-SHA-1 SRTP crypto context; wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SrtpSessionKeys {
    rtp_cipher_key: [u8; 16],
    rtp_auth_key: [u8; 20],
    rtp_salt: [u8; 14],
    rtcp_cipher_key: [u8; 16],
    rtcp_auth_key: [u8; 20],
    rtcp_salt: [u8; 14],
}

impl fmt::Debug for SrtpSessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SrtpSessionKeys(…)")
    }
}

impl SrtpSessionKeys {
    /// Derives all six session keys (labels 0–5) with one key schedule.
    #[must_use]
    pub fn derive(master_key: &[u8; 16], master_salt: &[u8; 14]) -> Self {
        let cm = AesCm128::new(master_key);
        let mut keys = Self {
            rtp_cipher_key: [0; 16],
            rtp_auth_key: [0; 20],
            rtp_salt: [0; 14],
            rtcp_cipher_key: [0; 16],
            rtcp_auth_key: [0; 20],
            rtcp_salt: [0; 14],
        };
        derive_with(&cm, master_salt, label::RTP_CIPHER, &mut keys.rtp_cipher_key);
        derive_with(&cm, master_salt, label::RTP_AUTH, &mut keys.rtp_auth_key);
        derive_with(&cm, master_salt, label::RTP_SALT, &mut keys.rtp_salt);
        derive_with(&cm, master_salt, label::RTCP_CIPHER, &mut keys.rtcp_cipher_key);
        derive_with(&cm, master_salt, label::RTCP_AUTH, &mut keys.rtcp_auth_key);
        derive_with(&cm, master_salt, label::RTCP_SALT, &mut keys.rtcp_salt);
        keys
    }

    /// SRTP encryption key k_e (label 0).
    #[must_use]
    pub fn rtp_cipher_key(&self) -> &[u8; 16] {
        &self.rtp_cipher_key
    }

    /// SRTP authentication key k_a (label 1).
    #[must_use]
    pub fn rtp_auth_key(&self) -> &[u8; 20] {
        &self.rtp_auth_key
    }

    /// SRTP salting key k_s (label 2).
    #[must_use]
    pub fn rtp_salt(&self) -> &[u8; 14] {
        &self.rtp_salt
    }

    /// SRTCP encryption key (label 3).
    #[must_use]
    pub fn rtcp_cipher_key(&self) -> &[u8; 16] {
        &self.rtcp_cipher_key
    }

    /// SRTCP authentication key (label 4).
    #[must_use]
    pub fn rtcp_auth_key(&self) -> &[u8; 20] {
        &self.rtcp_auth_key
    }

    /// SRTCP salting key (label 5).
    #[must_use]
    pub fn rtcp_salt(&self) -> &[u8; 14] {
        &self.rtcp_salt
    }
}
