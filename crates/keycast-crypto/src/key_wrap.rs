//! AES key wrap with a 128-bit KEK (RFC 3394), for TBK delivery and the card–terminal secure
//! channel (profile P-6, P-10).

use aes_kw::{KeyInit, KwAes128};
use zeroize::Zeroizing;

use crate::KeyWrapError;

/// RFC 3394 works on 64-bit blocks.
const SEMIBLOCK: usize = 8;

fn kw(kek: &[u8; 16]) -> KwAes128 {
    KwAes128::new(kek.into())
}

/// Wraps a 16-byte key into 24 bytes.
#[must_use]
pub fn wrap_16(kek: &[u8; 16], key: &[u8; 16]) -> [u8; 24] {
    let mut out = [0u8; 24];
    // 16 bytes is two semiblocks and the buffer is 24 bytes, so wrapping cannot fail.
    kw(kek).wrap_key(key, &mut out).expect("16-byte key into a 24-byte buffer");
    out
}

/// Unwraps 24 bytes into a 16-byte key, checking the integrity value.
pub fn unwrap_16(kek: &[u8; 16], wrapped: &[u8; 24]) -> Result<Zeroizing<[u8; 16]>, KeyWrapError> {
    let mut out = Zeroizing::new([0u8; 16]);
    kw(kek).unwrap_key(wrapped, &mut out[..]).map_err(|_| KeyWrapError::IntegrityCheckFailed)?;
    Ok(out)
}

/// Wraps key data of n ≥ 2 semiblocks (a multiple of 8 bytes, at least 16) into n + 1 semiblocks.
pub fn wrap(kek: &[u8; 16], data: &[u8]) -> Result<Vec<u8>, KeyWrapError> {
    if data.len() < 2 * SEMIBLOCK || !data.len().is_multiple_of(SEMIBLOCK) {
        return Err(KeyWrapError::InvalidLength { len: data.len() });
    }
    let mut out = vec![0u8; data.len() + SEMIBLOCK];
    kw(kek).wrap_key(data, &mut out).map_err(|_| KeyWrapError::InvalidLength { len: data.len() })?;
    Ok(out)
}

/// Unwraps n + 1 semiblocks (n ≥ 2) into n, checking the integrity value.
pub fn unwrap(kek: &[u8; 16], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyWrapError> {
    if wrapped.len() < 3 * SEMIBLOCK || !wrapped.len().is_multiple_of(SEMIBLOCK) {
        return Err(KeyWrapError::InvalidLength { len: wrapped.len() });
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len() - SEMIBLOCK]);
    kw(kek).unwrap_key(wrapped, &mut out).map_err(|_| KeyWrapError::IntegrityCheckFailed)?;
    Ok(out)
}
