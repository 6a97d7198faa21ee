//! MIKEY key derivation (RFC 3830 §4.1.2–4.1.4) and the keys that protect one MIKEY message
//! (§4.2.3, profile P-2).

use core::fmt;

use ::hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use zeroize::Zeroizing;

use crate::aes_cm::AesCm128;

type HmacSha1 = Hmac<Sha1>;

/// Label constant: TEK from TGK (RFC 3830 §4.1.3).
pub const TEK_CONST: u32 = 0x2AD0_1C64;
/// Label constant: authentication key from TGK (RFC 3830 §4.1.3).
pub const TGK_AUTH: u32 = 0x1B5C_7973;
/// Label constant: encryption key from TGK (RFC 3830 §4.1.3).
pub const TGK_ENCR: u32 = 0x1579_8CEF;
/// Label constant: salting key from TGK (RFC 3830 §4.1.3).
pub const TGK_SALT: u32 = 0x39A2_C14B;
/// Label constant: KEMAC encryption key from the pre-shared key (RFC 3830 §4.1.4).
pub const PSK_ENCR: u32 = 0x1505_33E1;
/// Label constant: KEMAC/V authentication key from the pre-shared key (RFC 3830 §4.1.4).
pub const PSK_AUTH: u32 = 0x2D22_AC75;
/// Label constant: KEMAC salting key from the pre-shared key (RFC 3830 §4.1.4).
pub const PSK_SALT: u32 = 0x29B8_8916;
/// cs_id octet of the pre-shared-key labels (RFC 3830 §4.1.4).
pub const CS_ID_PSK: u8 = 0xFF;

/// Encryption key length for AES-CM-128 (RFC 3830 §4.1.4).
pub const ENCR_KEY_LEN: usize = 16;
/// Authentication key length for HMAC-SHA-1-160 (RFC 3830 §4.1.4).
pub const AUTH_KEY_LEN: usize = 20;
/// Salting key length (RFC 3830 §4.2.3).
pub const SALT_LEN: usize = 14;
/// HMAC-SHA-1-160 MAC length (RFC 3830 §6.2).
pub const MAC_LEN: usize = 20;

/// inkey is cut into pieces of 256 bits; the last piece may be shorter (RFC 3830 §4.1.2).
const PIECE: usize = 32;
const SHA1_LEN: usize = 20;

/// label = constant ‖ cs_id ‖ CSB ID ‖ RAND (RFC 3830 §4.1.3).
#[must_use]
pub fn label(constant: u32, cs_id: u8, csb_id: u32, rand: &[u8]) -> Vec<u8> {
    let mut l = Vec::with_capacity(9 + rand.len());
    l.extend_from_slice(&constant.to_be_bytes());
    l.push(cs_id);
    l.extend_from_slice(&csb_id.to_be_bytes());
    l.extend_from_slice(rand);
    l
}

fn hmac_parts(key: &HmacSha1, first: &[u8], label: &[&[u8]]) -> Zeroizing<[u8; SHA1_LEN]> {
    let mut mac = key.clone();
    mac.update(first);
    label.iter().for_each(|p| mac.update(p));
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// XORs P(s, label, m) into `out`, with `s` given as a pre-keyed HMAC (RFC 3830 §4.1.2):
/// A_0 = label, A_i = HMAC(s, A_(i-1)), block i = HMAC(s, A_i ‖ label).
fn p_xor(s: &HmacSha1, label: &[&[u8]], out: &mut [u8]) {
    let mut a = hmac_parts(s, &[], label);
    let mut chunks = out.chunks_mut(SHA1_LEN).peekable();
    while let Some(chunk) = chunks.next() {
        let block = hmac_parts(s, &a[..], label);
        chunk.iter_mut().zip(block.iter()).for_each(|(o, b)| *o ^= b);
        if chunks.peek().is_some() {
            a = hmac_parts(s, &a[..], &[]);
        }
    }
}

/// The 256-bit pieces s_1..s_n of inkey, each as a pre-keyed HMAC. An empty inkey is one
/// empty piece.
fn pieces(inkey: &[u8]) -> impl Iterator<Item = HmacSha1> + '_ {
    let empty: &[u8] = &[];
    inkey
        .chunks(PIECE)
        .chain(inkey.is_empty().then_some(empty))
        // HMAC accepts keys of any length; `new_from_slice` cannot fail.
        .map(|piece| HmacSha1::new_from_slice(piece).expect("HMAC takes any key length"))
}

fn prf_parts(inkey: &[u8], label: &[&[u8]], out: &mut [u8]) {
    out.fill(0);
    for s in pieces(inkey) {
        p_xor(&s, label, out);
    }
}

/// PRF(inkey, label) of RFC 3830 §4.1.2, filling `out`: inkey is cut into 256-bit pieces
/// (a 32-byte key is one piece, a 64-byte key two) and the P() outputs are XOR-ed.
pub fn prf(inkey: &[u8], label: &[u8], out: &mut [u8]) {
    prf_parts(inkey, &[label], out);
}

/// Derives a key from a TGK (or any inkey) for one crypto session (RFC 3830 §4.1.3), e.g.
/// `constant` = [`TEK_CONST`] for a TEK, [`TGK_SALT`] for its salt.
pub fn derive_tgk_key(tgk: &[u8], constant: u32, cs_id: u8, csb_id: u32, rand: &[u8], out: &mut [u8]) {
    prf_parts(tgk, &[&constant.to_be_bytes(), &[cs_id], &csb_id.to_be_bytes(), rand], out);
}

/// Keys that protect one MIKEY message (RFC 3830 §4.1.4, pre-shared key case, cs_id 0xFF),
/// pre-keyed for speed: AES-128 key schedule expanded, HMAC-SHA-1 state pre-keyed.
#[derive(Clone)]
pub struct MessageKeys {
    cm: AesCm128,
    mac: HmacSha1,
    salt: Zeroizing<[u8; SALT_LEN]>,
}

impl fmt::Debug for MessageKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageKeys(…)")
    }
}

impl MessageKeys {
    /// Derives the encryption (16), authentication (20) and salt (14) keys from PSK, CSB ID, RAND.
    #[must_use]
    pub fn derive(psk: &[u8], csb_id: u32, rand: &[u8]) -> Self {
        let csb = csb_id.to_be_bytes();
        let (encr_c, auth_c, salt_c) = (PSK_ENCR.to_be_bytes(), PSK_AUTH.to_be_bytes(), PSK_SALT.to_be_bytes());
        let mut encr = Zeroizing::new([0u8; ENCR_KEY_LEN]);
        let mut auth = Zeroizing::new([0u8; AUTH_KEY_LEN]);
        let mut salt = Zeroizing::new([0u8; SALT_LEN]);
        // One HMAC key setup per piece, shared by the three labels.
        for s in pieces(psk) {
            p_xor(&s, &[&encr_c, &[CS_ID_PSK], &csb, rand], &mut encr[..]);
            p_xor(&s, &[&auth_c, &[CS_ID_PSK], &csb, rand], &mut auth[..]);
            p_xor(&s, &[&salt_c, &[CS_ID_PSK], &csb, rand], &mut salt[..]);
        }
        Self {
            cm: AesCm128::new(&encr),
            // HMAC accepts keys of any length; `new_from_slice` cannot fail.
            mac: HmacSha1::new_from_slice(&auth[..]).expect("HMAC takes any key length"),
            salt,
        }
    }

    /// KEMAC IV (RFC 3830 §4.2.3): (salt XOR (0x0000 ‖ CSB ID ‖ T64)) ‖ 0x0000, T64 = timestamp as u64.
    #[must_use]
    pub fn kemac_iv(&self, csb_id: u32, t64: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..SALT_LEN].copy_from_slice(&self.salt[..]);
        iv[2..6].iter_mut().zip(csb_id.to_be_bytes()).for_each(|(v, c)| *v ^= c);
        iv[6..14].iter_mut().zip(t64.to_be_bytes()).for_each(|(v, t)| *v ^= t);
        iv
    }

    /// AES-CM-128 keystream applied in place from the given IV (encrypt = decrypt).
    pub fn apply_keystream(&self, iv: &[u8; 16], data: &mut [u8]) {
        self.cm.apply_keystream(iv, data);
    }

    /// HMAC-SHA-1-160 over the concatenation of `parts`.
    #[must_use]
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 20] {
        let mut mac = self.mac.clone();
        parts.iter().for_each(|p| mac.update(p));
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check of a 20-byte HMAC-SHA-1 tag over the concatenation of `parts`.
    #[must_use]
    pub fn verify_mac(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        parts.iter().for_each(|p| mac.update(p));
        mac.verify_slice(tag).is_ok()
    }
}
