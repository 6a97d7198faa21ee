//! HMAC helpers (RFC 2104) over several input parts, and a constant-time compare.

use core::fmt;

use ::hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// HMAC-SHA-1 with the given key over the concatenation of `parts`.
#[must_use]
pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail here.
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    parts.iter().for_each(|p| mac.update(p));
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA-256 with the given key over the concatenation of `parts`.
#[must_use]
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail here.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    parts.iter().for_each(|p| mac.update(p));
    mac.finalize().into_bytes().into()
}

/// Constant-time equality of two byte strings. Lengths are public: slices of different lengths
/// are unequal at once.
#[must_use]
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// HMAC-SHA-1 with its key processed once (the inner and outer padded keys are hashed at
/// construction), for MACs computed many times under one key, such as SRTP tags. Each call
/// clones the keyed state, so computing a tag costs no key setup and no allocation.
#[derive(Clone)]
pub struct HmacSha1Key(Hmac<Sha1>);

impl fmt::Debug for HmacSha1Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacSha1Key(…)")
    }
}

impl HmacSha1Key {
    /// Processes `key` (any length).
    #[must_use]
    pub fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail here.
        Self(Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length"))
    }

    /// HMAC-SHA-1 over the concatenation of `parts`; equal to [`hmac_sha1`] with the same key.
    #[must_use]
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 20] {
        let mut mac = self.0.clone();
        parts.iter().for_each(|p| mac.update(p));
        mac.finalize().into_bytes().into()
    }
}
