//! Where the terminal's MBMS keys live and are processed (TS 33.246 §6.1; TS 33.220 §4, §5):
//! an [`MbmsKeyHolder`].
//!
//! | GBA | holder | Ks | SMK (MUK), SEK/PEKs (MSKs) | Ub AKA |
//! |---|---|---|---|---|
//! | GBA_U ("UICC-based key management") | the [`Card`] itself (every `C: Card`) | in the UICC | in the UICC; LTKMs and STKMs go to it as AUTHENTICATE, MBMS context | AUTHENTICATE, GBA context |
//! | GBA_ME ("ME-based key management") | [`GbaMeKeyHolder`]: the USIM and a [`GbaMeStore`] | in the ME (`GbaMeStore`, Ks = CK ‖ IK) | in the ME (`GbaMeStore`: SMK = Ks_NAF, the same checks as on the card) | AUTHENTICATE, 3G context on the USIM |
//!
//! Either way the SRK (MRK) leaves the holder for HTTP Digest toward the BSM, and the SMK stays
//! where the LTKMs are processed. The AKA run and the NAF key derivation are keycast-gba's
//! (`client::http::bootstrap`, `client::naf_keys`), which take the card and, for GBA_ME, the
//! store: [`MbmsKeyHolder::gba_parts`] hands both over, [`bootstrap`] and
//! [`MbmsKeyHolder::naf_keys`] call them. MSK update, MTK generation and MSK deletion answer in
//! the card's terms ([`Card`]'s types and refusals: a GBA_ME store refuses with the same
//! [`CardError`](keycast_card::CardError) status words), so the LTKM intake's decisions are one
//! table for both.
//!
//! A `C: Card` is a holder through a blanket implementation; when both [`Card`] and
//! [`MbmsKeyHolder`] are in scope, name the trait (`MbmsKeyHolder::msk_update(&mut card, …)`),
//! as the method names are the same.

use core::fmt;

use keycast_card::card::{Card, CardOpError};
use keycast_card::gba_me::GbaMeStore;
use keycast_card::mbms::TekOut;
use keycast_crypto::gba::{GbaType, UA_PROTOCOL_MBMS};
use keycast_gba::bsf::RandomSource;
use keycast_gba::client::http::{Outcome, RetryPolicy, RunError, UbTransport};
use keycast_gba::client::{BootstrapConfig, BootstrapState, GbaMode, NafCredentials, NafKeyError, naf_keys};
use keycast_mikey::KeyDomainId;
use keycast_provisioning::time::UtcTime;

/// Where a terminal's MBMS keys live and are processed: Ks after bootstrapping, the SMK (MUK)
/// per BSM, the SEK/PEKs (MSKs); see the module documentation.
pub trait MbmsKeyHolder {
    /// The card that runs AKA on Ub (the UICC for GBA_U, the USIM for GBA_ME).
    type Card: Card;

    /// The GBA the holder bootstraps with: [`GbaType::GbaU`] for a card, [`GbaType::GbaMe`] for
    /// a [`GbaMeKeyHolder`].
    fn gba_type(&self) -> GbaType;

    /// Whether bootstrapping in `mode` leaves the keys in this holder: GBA_U modes for
    /// [`GbaType::GbaU`], [`GbaMode::GbaMe`] for [`GbaType::GbaMe`].
    ///
    /// ([`GbaMode::GbaUNonMbmsCard`] is accepted for a card as before, but no holder here keeps
    /// its SMK = Ks_ext_NAF yet: such a terminal authenticates toward the BSM, and its LTKMs find
    /// no MUK.)
    fn accepts_mode(&self, mode: GbaMode) -> bool {
        match self.gba_type() {
            GbaType::GbaU => matches!(mode, GbaMode::GbaU | GbaMode::GbaUNonMbmsCard),
            GbaType::GbaMe => mode == GbaMode::GbaMe,
        }
    }

    /// The card and (GBA_ME) the ME's key store, as keycast-gba's client takes them
    /// (`client::http::bootstrap`, `Bootstrapper::handle`, `client::naf_keys`).
    fn gba_parts(&mut self) -> (&mut Self::Card, Option<&mut GbaMeStore>);

    /// The Ua credentials toward the BSM `bsm_fqdn` (NAF_Id with the MBMS Ua protocol,
    /// profile P-7): the SRK comes out, the SMK is installed where LTKMs are processed (the
    /// card's NAF derivation for GBA_U, [`GbaMeStore::mbms_naf_keys`] for GBA_ME). keycast-gba's
    /// `naf_keys`.
    ///
    /// # Errors
    /// [`NafKeyError`], e.g. [`NafKeyError::StoreMismatch`] when the GBA_ME store holds another
    /// bootstrap than `state`.
    fn naf_keys(&mut self, state: &BootstrapState, bsm_fqdn: &str, impi: &str) -> Result<NafCredentials, NafKeyError> {
        let (card, store) = self.gba_parts();
        naf_keys(state, card, store, bsm_fqdn, impi, UA_PROTOCOL_MBMS)
    }

    /// MSK update (TS 31.102 §7.1.1.6, TS 33.246 §6.3.2): checks an LTKM and stores what it
    /// carries; the verification message when the LTKM asked for one (V = 1).
    ///
    /// # Errors
    /// The card's refusal (or a GBA_ME store's, with the same status words), or a failed link.
    fn msk_update(&mut self, ltkm: &[u8]) -> Result<Option<Vec<u8>>, CardOpError>;

    /// MTK generation (TS 31.102 §7.1.1.7): the TEK (and salt) of an STKM, in the form the holder
    /// may release.
    ///
    /// # Errors
    /// As [`MbmsKeyHolder::msk_update`].
    fn mtk_generation(&mut self, stkm: &[u8]) -> Result<TekOut, CardOpError>;

    /// MSK deletion (TS 31.102 §7.1.1.9): every key of a Key Group.
    ///
    /// # Errors
    /// As [`MbmsKeyHolder::msk_update`]; 6A88 when no key of the group is held.
    fn msk_deletion(&mut self, key_domain_id: KeyDomainId, key_group: u16) -> Result<(), CardOpError>;
}

/// GBA_U: the card holds Ks, the SMK and the SEK/PEKs; every operation is its AUTHENTICATE.
impl<C: Card> MbmsKeyHolder for C {
    type Card = C;

    fn gba_type(&self) -> GbaType {
        GbaType::GbaU
    }

    fn gba_parts(&mut self) -> (&mut C, Option<&mut GbaMeStore>) {
        (self, None)
    }

    fn msk_update(&mut self, ltkm: &[u8]) -> Result<Option<Vec<u8>>, CardOpError> {
        Card::msk_update(self, ltkm)
    }

    fn mtk_generation(&mut self, stkm: &[u8]) -> Result<TekOut, CardOpError> {
        Card::mtk_generation(self, stkm)
    }

    fn msk_deletion(&mut self, key_domain_id: KeyDomainId, key_group: u16) -> Result<(), CardOpError> {
        Card::msk_deletion(self, key_domain_id, key_group)
    }
}

/// A GBA_ME terminal's keys: the USIM (AKA in the 3G context only) and the ME's
/// [`GbaMeStore`], which holds Ks, the SMKs and the SEK/PEKs and processes LTKMs and STKMs.
pub struct GbaMeKeyHolder<C> {
    card: C,
    store: GbaMeStore,
}

impl<C> fmt::Debug for GbaMeKeyHolder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store prints its B-TID and the key records' own redacted form; the card nothing.
        f.debug_struct("GbaMeKeyHolder").field("store", &self.store).finish_non_exhaustive()
    }
}

impl<C: Card> GbaMeKeyHolder<C> {
    /// The USIM `card` with an empty store (nothing bootstrapped).
    #[must_use]
    pub fn new(card: C) -> Self {
        GbaMeKeyHolder { card, store: GbaMeStore::default() }
    }

    /// The USIM `card` with a store kept from before (e.g. restored after a restart with the
    /// same card).
    #[must_use]
    pub fn with_store(card: C, store: GbaMeStore) -> Self {
        GbaMeKeyHolder { card, store }
    }

    /// The USIM.
    pub fn card(&self) -> &C {
        &self.card
    }

    /// The USIM, mutably.
    pub fn card_mut(&mut self) -> &mut C {
        &mut self.card
    }

    /// The ME's key store.
    pub fn store(&self) -> &GbaMeStore {
        &self.store
    }

    /// The ME's key store, mutably.
    pub fn store_mut(&mut self) -> &mut GbaMeStore {
        &mut self.store
    }

    /// Another card was inserted: every MBMS key in the ME goes (TS 33.246 §6.1) and the old card
    /// is handed back. The terminal must bootstrap again (clear its bootstrap record).
    pub fn replace_card(&mut self, card: C) -> C {
        self.store.forget_all();
        core::mem::replace(&mut self.card, card)
    }

    /// The card and the store.
    pub fn into_parts(self) -> (C, GbaMeStore) {
        (self.card, self.store)
    }
}

/// GBA_ME: AKA on the USIM, everything else in the ME's store.
impl<C: Card> MbmsKeyHolder for GbaMeKeyHolder<C> {
    type Card = C;

    fn gba_type(&self) -> GbaType {
        GbaType::GbaMe
    }

    fn gba_parts(&mut self) -> (&mut C, Option<&mut GbaMeStore>) {
        (&mut self.card, Some(&mut self.store))
    }

    fn msk_update(&mut self, ltkm: &[u8]) -> Result<Option<Vec<u8>>, CardOpError> {
        Ok(self.store.msk_update(ltkm)?.verification)
    }

    fn mtk_generation(&mut self, stkm: &[u8]) -> Result<TekOut, CardOpError> {
        Ok(self.store.mtk_generation(stkm)?.tek)
    }

    fn msk_deletion(&mut self, key_domain_id: KeyDomainId, key_group: u16) -> Result<(), CardOpError> {
        Ok(self.store.msk_deletion(key_domain_id, key_group)?)
    }
}

/// Bootstraps `holder` over `transport` (keycast-gba's `client::http::bootstrap`, retries
/// included): AUTHENTICATE in the GBA context on the card (GBA_U; Ks stays there) or in the 3G
/// context with Ks = CK ‖ IK kept in the ME's store (GBA_ME). `config.mode` must suit the holder
/// ([`MbmsKeyHolder::accepts_mode`]; keycast-gba refuses GBA_ME without a store).
///
/// # Errors
/// The last run's [`RunError`].
pub async fn bootstrap<T, K>(
    transport: &mut T,
    config: &BootstrapConfig,
    holder: &mut K,
    clock: &(dyn Fn() -> UtcTime + Send + Sync),
    rng: &mut (dyn RandomSource + Send),
    policy: RetryPolicy,
) -> Result<Outcome, RunError>
where
    T: UbTransport + Send,
    K: MbmsKeyHolder + ?Sized,
    K::Card: Send,
{
    let (card, store) = holder.gba_parts();
    keycast_gba::client::http::bootstrap(transport, config, card, store, clock, rng, policy).await
}
