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

/// The identifiers a Ks_local was established for (TS 33.110 Annex B; profile P-10): the card
/// answers the availability check for exactly these.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalKeyIds {
    /// NAF_ID of the key center (the BSM).
    pub naf_id: Vec<u8>,
    /// Terminal_ID.
    pub terminal_id: Vec<u8>,
    /// Terminal_appli_ID.
    pub terminal_appli_id: Vec<u8>,
    /// UICC_appli_ID.
    pub uicc_appli_id: Vec<u8>,
}

/// The answer of the Local Key Establishment availability check (TS 33.110 Annex B; coding
/// Keycast's, see [`crate::apdu`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKeyStatus {
    /// No Ks_local is established for these identifiers: the terminal runs the key
    /// establishment (again).
    NotEstablished,
    /// A Ks_local for these identifiers is held and may still be used.
    Available,
    /// A Ks_local for these identifiers is held but its Counter Limit is used up.
    Exhausted,
}

/// An established channel: the wrapping key, how often it may still be used, and the identifiers
/// its Ks_local was established for.
#[derive(Clone, PartialEq, Eq)]
pub struct SecureChannel {
    k_sac: Zeroizing<[u8; 16]>,
    /// Counter Limit from the key establishment (16 bytes, big-endian).
    pub counter_limit: u128,
    /// TEKs released over the channel so far.
    pub used: u128,
    /// The identifiers of the key establishment; `None` for a channel restored from a version-1
    /// card file, which did not keep them (the availability check then answers "not
    /// established", and the terminal establishes the key again).
    pub ids: Option<LocalKeyIds>,
}

impl fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureChannel")
            .field("counter_limit", &self.counter_limit)
            .field("used", &self.used)
            .field("ids", &self.ids)
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
        Self { k_sac: k_sac(ks_local), counter_limit: u128::from_be_bytes(counter_limit), used: 0, ids: None }
    }

    /// Restores a channel from its stored parts (card file).
    pub fn from_parts(k_sac: [u8; 16], counter_limit: u128, used: u128) -> Self {
        Self { k_sac: Zeroizing::new(k_sac), counter_limit, used, ids: None }
    }

    /// With the identifiers its Ks_local was established for.
    #[must_use]
    pub fn with_ids(mut self, ids: LocalKeyIds) -> Self {
        self.ids = Some(ids);
        self
    }

    /// Whether the Counter Limit is used up (the channel wraps no more TEKs).
    pub fn is_exhausted(&self) -> bool {
        self.used >= self.counter_limit
    }

    /// The availability check for these identifiers (TS 33.110 Annex B): whether this channel's
    /// Ks_local was established for exactly them, and whether it may still be used.
    pub fn status_for(&self, ids: &LocalKeyIds) -> LocalKeyStatus {
        match &self.ids {
            Some(mine) if mine == ids && self.is_exhausted() => LocalKeyStatus::Exhausted,
            Some(mine) if mine == ids => LocalKeyStatus::Available,
            _ => LocalKeyStatus::NotEstablished,
        }
    }

    /// The wrapping key, for persistence.
    pub fn expose_k_sac(&self) -> &[u8; 16] {
        &self.k_sac
    }

    /// `AES-KW(K_sac, TEK ‖ salt ‖ 00 00)` (40 bytes; a missing salt is 14 zero bytes).
    pub fn wrap_tek(&self, tek: &Tek, salt: Option<&TekSalt>) -> Result<[u8; 40], CardError> {
        if self.is_exhausted() {
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
