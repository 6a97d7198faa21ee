//! The secure authenticated channel between card and terminal (profile P-10): TEKs that need
//! content protection leave the card only wrapped under a key derived from Ks_local.

use core::fmt;

use keycast_crypto::hmac::hmac_sha256;
use keycast_crypto::key_wrap;
use keycast_crypto::keys::{KsLocal, Tek, TekSalt};
use zeroize::Zeroizing;

use crate::error::CardError;

/// Label of the TEK-wrapping key derived from Ks_local (profile P-10, chosen).
const SAC_TEK_LABEL: &[u8] = b"keycast-sac-tek";

/// An established channel: the wrapping key and how often it may still be used.
#[derive(Clone, PartialEq, Eq)]
pub struct SecureChannel {
    k_sac: Zeroizing<[u8; 16]>,
    /// Counter Limit from the key establishment (16 bytes, big-endian).
    pub counter_limit: u128,
    /// TEKs released over the channel so far.
    pub used: u128,
}

impl fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureChannel")
            .field("counter_limit", &self.counter_limit)
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

/// K_sac = the first 16 bytes of HMAC-SHA-256(Ks_local, "keycast-sac-tek") (profile P-10).
pub fn k_sac(ks_local: &KsLocal) -> Zeroizing<[u8; 16]> {
    let full = Zeroizing::new(hmac_sha256(ks_local.expose_secret(), &[SAC_TEK_LABEL]));
    let mut k = Zeroizing::new([0u8; 16]);
    k.copy_from_slice(&full[..16]);
    k
}

impl SecureChannel {
    /// A channel keyed from Ks_local, usable `counter_limit` times.
    pub fn new(ks_local: &KsLocal, counter_limit: [u8; 16]) -> Self {
        Self { k_sac: k_sac(ks_local), counter_limit: u128::from_be_bytes(counter_limit), used: 0 }
    }

    /// Restores a channel from its stored parts (card file).
    pub fn from_parts(k_sac: [u8; 16], counter_limit: u128, used: u128) -> Self {
        Self { k_sac: Zeroizing::new(k_sac), counter_limit, used }
    }

    /// The wrapping key, for persistence.
    pub fn expose_k_sac(&self) -> &[u8; 16] {
        &self.k_sac
    }

    /// `AES-KW(K_sac, TEK ‖ salt ‖ 00 00)` (40 bytes; a missing salt is 14 zero bytes).
    pub fn wrap_tek(&self, tek: &Tek, salt: Option<&TekSalt>) -> Result<[u8; 40], CardError> {
        if self.used >= self.counter_limit {
            return Err(CardError::SecurityStatus("secure channel counter limit reached"));
        }
        let mut plain = Zeroizing::new([0u8; 32]);
        plain[..16].copy_from_slice(tek.expose_secret());
        if let Some(salt) = salt {
            plain[16..30].copy_from_slice(salt.expose_secret());
        }
        let wrapped =
            key_wrap::wrap(&self.k_sac, &plain[..]).map_err(|_| CardError::SecurityStatus("TEK wrap failed"))?;
        let mut out = [0u8; 40];
        out.copy_from_slice(&wrapped);
        Ok(out)
    }

    /// Counts one TEK released over the channel.
    pub fn count_use(&mut self) {
        self.used = self.used.saturating_add(1);
    }
}
