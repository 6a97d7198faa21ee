//! The GBA_ME terminal's secure store: the same MBMS key checks as the card, with keys from a
//! GBA_ME bootstrap (profile P-7: SMK = Ks_NAF, SRK = MRK(Ks_NAF)). The terminal ran AKA through
//! the card's 3G context and holds Ks itself.

use core::fmt;

use keycast_crypto::gba::{self, NafId, UA_PROTOCOL_MBMS};
use keycast_crypto::keys::{Ck, Ik, Ks, Smk, Srk};
use keycast_mikey::KeyDomainId;

use crate::error::CardError;
use crate::mbms::{MbmsStore, MskUpdate, MtkAnswer};

/// The bootstrapped set of a GBA_ME terminal.
#[derive(Clone, PartialEq, Eq)]
struct Bootstrap {
    ks: Ks,
    rand: [u8; 16],
    b_tid: String,
}

/// A GBA_ME terminal's key store.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct GbaMeStore {
    bootstrap: Option<Bootstrap>,
    /// The MBMS security context, with the same rules as on the card.
    pub mbms: MbmsStore,
}

impl fmt::Debug for GbaMeStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GbaMeStore")
            .field("b_tid", &self.bootstrap.as_ref().map(|b| &b.b_tid))
            .field("mbms", &self.mbms)
            .finish()
    }
}

impl GbaMeStore {
    /// Keeps Ks = CK ‖ IK of a GBA_ME bootstrap (3G AUTHENTICATE on the card) and its B-TID.
    /// A new bootstrap replaces the old one.
    pub fn bootstrap(&mut self, ck: &Ck, ik: &Ik, rand: [u8; 16], b_tid: &str) {
        self.bootstrap = Some(Bootstrap { ks: gba::ks_from_ck_ik(ck, ik), rand, b_tid: b_tid.to_owned() });
    }

    /// The bootstrapped set (Ks, RAND, B-TID), for the key store file
    /// ([`crate::persist::gba_me`]).
    pub(crate) fn bootstrap_parts(&self) -> Option<(&Ks, &[u8; 16], &str)> {
        self.bootstrap.as_ref().map(|b| (&b.ks, &b.rand, b.b_tid.as_str()))
    }

    /// A store as the key store file holds it.
    pub(crate) fn from_parts(bootstrap: Option<(Ks, [u8; 16], String)>, mbms: MbmsStore) -> Self {
        Self { bootstrap: bootstrap.map(|(ks, rand, b_tid)| Bootstrap { ks, rand, b_tid }), mbms }
    }

    /// The B-TID of the current bootstrap.
    pub fn b_tid(&self) -> Option<&str> {
        self.bootstrap.as_ref().map(|b| b.b_tid.as_str())
    }

    /// Derives the keys for a BSM (P-7, GBA_ME): installs SMK = Ks_NAF as the BSM's MUK and
    /// returns SRK = MRK(Ks_NAF) for HTTP Digest toward it.
    pub fn mbms_naf_keys(&mut self, bsm_fqdn: &str, impi: &str) -> Result<Srk, CardError> {
        let b = self.bootstrap.as_ref().ok_or(CardError::ConditionsOfUse("no bootstrapped key"))?;
        let naf = NafId::new(bsm_fqdn, UA_PROTOCOL_MBMS);
        let ks_naf = gba::ks_naf(&b.ks, &b.rand, impi, &naf)
            .map_err(|_| CardError::ConditionsOfUse("IMPI or NAF_ID too long for the KDF"))?;
        let srk = gba::mrk(ks_naf.expose_secret());
        let b_tid = b.b_tid.clone();
        self.mbms.install_muk(bsm_fqdn, &b_tid, Smk::from_bytes(*ks_naf.expose_secret()))?;
        Ok(srk)
    }

    /// MSK update, exactly as on the card.
    pub fn msk_update(&mut self, ltkm: &[u8]) -> Result<MskUpdate, CardError> {
        self.mbms.msk_update(ltkm)
    }

    /// MTK generation, exactly as on the card.
    pub fn mtk_generation(&mut self, stkm: &[u8]) -> Result<MtkAnswer, CardError> {
        self.mbms.mtk_generation(stkm)
    }

    /// MSK deletion.
    pub fn msk_deletion(&mut self, key_domain_id: KeyDomainId, key_group: u16) -> Result<(), CardError> {
        self.mbms.delete_msks(key_domain_id, key_group)
    }

    /// Every MBMS key must go when a different card is inserted (TS 33.246 §6.1).
    pub fn forget_all(&mut self) {
        *self = Self::default();
    }
}
