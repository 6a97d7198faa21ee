//! AES-128 in counter mode, as SRTP (RFC 3711 §4.1.1) and MIKEY KEMAC (RFC 3830 §4.2.3) use
//! it: the 16-byte IV is the first counter block, and each next block adds one to the whole
//! 128-bit block, big-endian.

use core::fmt;

use aes::Aes128;
use cipher::{InnerIvInit, KeyInit, StreamCipher, StreamCipherCoreWrapper};
use ctr::CtrCore;
use ctr::flavors::Ctr128BE;

/// AES-CM-128 with its key schedule expanded once; wiped on drop.
#[derive(Clone)]
pub struct AesCm128 {
    aes: Aes128,
}

impl fmt::Debug for AesCm128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesCm128(…)")
    }
}

impl AesCm128 {
    /// Expands the 128-bit key.
    #[must_use]
    pub fn new(key: &[u8; 16]) -> Self {
        Self { aes: Aes128::new(key.into()) }
    }

    /// XORs the keystream starting at counter block `iv` into `data` (encrypt = decrypt).
    pub fn apply_keystream(&self, iv: &[u8; 16], data: &mut [u8]) {
        // Borrow the expanded key: no key setup per call.
        let core = CtrCore::<&Aes128, Ctr128BE>::inner_iv_init(&self.aes, iv.into());
        StreamCipherCoreWrapper::from_core(core).apply_keystream(data);
    }
}
