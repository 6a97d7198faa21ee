//! The MIKEY wire codec of Keycast: every RFC 3830 payload, the RFC 4563 Key ID extension and
//! the RFC 5410 OMA BCAST extension, and the typed messages of the OMA BCAST Smartcard Profile
//! (`Ltkm`, `Stkm`, `VerificationMessage`, `SolicitedPull`) with `seal` and `open`.
//!
//! This crate does no IO, reads no clock and starts no threads: bytes and keys in, values and
//! bytes out. Two layers:
//!
//! - the **syntax layer** ([`Message`], [`PayloadIter`], [`Payload`] and the payload views) walks
//!   the next-payload chain and decodes each payload without judging its meaning;
//! - the **typed layer** checks a message against the Keycast wire profile
//!   (`shared/reference/profile.md`, P-2 to P-11), verifies its MAC in constant time and only then
//!   decrypts its key data.
//!
//! Bad input is always an error value naming the payload and byte offset, never a panic.
//!
//! ```
//! use keycast_crypto::keys::{SekPek, Tek, TekSalt};
//! use keycast_mikey::{KeyDomainId, SekPekId, Stkm, StkmContent, TekField};
//!
//! let sek = SekPek::from_bytes([7; 16]);
//! let rand = [9u8; 16]; // the RAND of the LTKM that delivered the SEK
//! let content = StkmContent {
//!     csb_id: 0x0a0b0c0d,
//!     key_domain_id: KeyDomainId::from_mcc_mnc("001", "01").unwrap(),
//!     sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
//!     tek_id: 1,
//!     ts: 3_900_000_000,
//!     ext: None,
//!     tek: TekField::Clear(Tek::from_bytes([1; 16])),
//!     salt: Some(TekSalt::from_bytes([2; 14])),
//! };
//! let wire = content.seal(&sek, &rand).unwrap();
//! let stkm = Stkm::decode(&wire).unwrap();
//! assert_eq!(stkm.open(&sek, &rand).unwrap(), content);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
mod ext;
mod ltkm;
mod payload;
mod policy;
mod stkm;
mod typed;
mod verification;
pub mod wire;

pub use codec::{DecodeError, DecodeErrorDetail, DecodeErrorKind, EncodeError, MAX_MESSAGE_LEN, MAX_PAYLOADS};
pub use ext::{
    AccessDescriptor, KeyDomainId, KeyIdExt, LtkmExt, ProtectionAfterReception, SecurityPolicy, SecurityPolicyExt,
    SekPekId, StkmExt, TekId, TrafficProtectionProtocol, split_oma_bcast,
};
pub use ltkm::{KeyValidity, Ltkm, LtkmContent, OpenedLtkm, SolicitedPull};
pub use payload::{
    Cert, Chash, CsIdMap, Dh, ErrPayload, GeneralExt, Hdr, Id, Kemac, KeyData, KeyValidityData, Located, Message,
    Payload, PayloadIter, Pke, Sign, Sp, SrtpCs, Timestamp, Verification, encode_sp_params, encode_srtp_map,
};
pub use policy::SrtpPolicy;
pub use stkm::{Stkm, StkmContent, TekField, WRAPPED_TEK_LEN};
pub use typed::MikeyError;
pub use verification::VerificationMessage;

/// Entry points for the fuzz targets under `fuzz/` (not a stable API).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Syntax layer: decode, re-encode, decode again; the two decodes must agree.
    pub fn message(data: &[u8]) {
        if let Ok(m) = Message::decode(data) {
            let again = m.encode().expect("a decoded message re-encodes");
            assert_eq!(Message::decode(&again).expect("re-encoded message decodes").payloads.len(), m.payloads.len());
        }
    }

    /// Typed layer: every decoder, and opening with a fixed key (MAC failures are expected).
    pub fn typed(data: &[u8]) {
        let smk = keycast_crypto::keys::Smk::from_bytes([1; 32]);
        if let Ok(l) = Ltkm::decode(data) {
            let _ = l.open(&smk);
        }
        let sek = keycast_crypto::keys::SekPek::from_bytes([2; 16]);
        if let Ok(s) = Stkm::decode(data) {
            let _ = s.open(&sek, &[3; 16]);
        }
        let _ = VerificationMessage::decode(data);
    }

    /// Key data sub-payloads as found in a decrypted KEMAC.
    pub fn key_data(data: &[u8]) {
        let _ = KeyData::read_all(data, 0);
    }
}
