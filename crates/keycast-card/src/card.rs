//! The one `Card` interface a terminal drives, whatever is behind it: the emulator, a real USIM
//! over PC/SC, or the GBA_ME store. Its operations are the TS 31.102 AUTHENTICATE modes plus the
//! file reads a terminal may make.

use keycast_crypto::keys::KsExtNaf;
use keycast_mikey::{KeyDomainId, SekPekId};

use crate::error::CardError;
use crate::mbms::{AuditCounters, TekOut};
use crate::sac::LocalKeyStatus;
use crate::usim::{AkaAnswer, LocalKeyRequest};

/// Sends command APDUs to a card and returns its response APDUs.
pub trait Transport {
    /// Sends one command APDU; returns the response APDU (data ‖ SW1 ‖ SW2).
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError>;
}

/// The link to the card failed (not a refusal by the card: those are [`CardError`]s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The reader or the connection to it failed.
    #[error("card reader: {0}")]
    Reader(String),
    /// The card answered something that is not a valid response APDU.
    #[error("invalid response from the card: {0}")]
    BadResponse(String),
}

/// Either the link failed or the card refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CardOpError {
    /// The card refused the command (with a status word).
    #[error("card refused ({sw:04X}): {0}", sw = .0.status_word())]
    Card(#[from] CardError),
    /// The link to the card failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// The card operations of the Smartcard Profile.
pub trait Card {
    /// AUTHENTICATE, 3G context (GBA_ME bootstrapping): RES, CK, IK, or AUTS.
    fn authenticate_3g(&mut self, rand: &[u8; 16], autn: &[u8; 16]) -> Result<AkaAnswer, CardOpError>;
    /// AUTHENTICATE, GBA context, bootstrapping mode: RES (LSB flipped) or AUTS; Ks stays inside.
    fn gba_bootstrap(&mut self, rand: &[u8; 16], autn: &[u8; 16]) -> Result<AkaAnswer, CardOpError>;
    /// Writes B-TID and key lifetime into EF_GBABP after a successful bootstrap.
    fn write_gba_bp(&mut self, b_tid: &str, lifetime: &str) -> Result<(), CardOpError>;
    /// AUTHENTICATE, GBA context, NAF derivation mode: Ks_ext_NAF out, Ks_int_NAF kept.
    fn gba_naf_derivation(&mut self, naf_id: &[u8], impi: &str) -> Result<KsExtNaf, CardOpError>;
    /// AUTHENTICATE, MBMS context, MSK update: the verification message when the LTKM asked for
    /// one.
    fn msk_update(&mut self, ltkm: &[u8]) -> Result<Option<Vec<u8>>, CardOpError>;
    /// AUTHENTICATE, MBMS context, MTK generation: the TEK (and salt) in the form the card may
    /// release.
    fn mtk_generation(&mut self, stkm: &[u8]) -> Result<TekOut, CardOpError>;
    /// AUTHENTICATE, MBMS context, MSK deletion.
    fn msk_deletion(&mut self, key_domain_id: KeyDomainId, key_group: u16) -> Result<(), CardOpError>;
    /// AUTHENTICATE, MBMS context, MUK deletion.
    fn muk_deletion(&mut self, idi: &str, idr: &str) -> Result<(), CardOpError>;
    /// AUTHENTICATE, Local Key Establishment: the card's 16-byte verification value.
    fn local_key_establishment(&mut self, req: &LocalKeyRequest) -> Result<[u8; 16], CardOpError>;
    /// AUTHENTICATE, Local Key Establishment availability check (TS 33.110 Annex B): whether a
    /// Ks_local established for these identifiers is held and not used up; 6A88 when the card
    /// holds no Ks_int_NAF for `naf_id`.
    fn local_key_available(
        &mut self,
        naf_id: &[u8],
        terminal_id: &[u8],
        terminal_appli_id: &[u8],
        uicc_appli_id: &[u8],
    ) -> Result<LocalKeyStatus, CardOpError>;
    /// OMA BCAST SPE audit: the counters of a held SEK/PEK (profile P-4); 6A88 when absent.
    fn audit(&mut self, key_domain_id: KeyDomainId, sek_pek_id: SekPekId) -> Result<AuditCounters, CardOpError>;
    /// OMA BCAST parental control, read: the highest minimum age the holder may watch (`None`: no
    /// restriction).
    fn parental_limit(&mut self) -> Result<Option<u8>, CardOpError>;
    /// OMA BCAST parental control, set; refused with 6982 unless a secure channel (Local Key
    /// Establishment, profile P-10) is established and not used up.
    fn set_parental_limit(&mut self, limit: Option<u8>) -> Result<(), CardOpError>;
}
