//! The card of the OMA BCAST Smartcard Profile: a USIM with the GBA and MBMS security contexts,
//! the OMA BCAST rights, and the TS 31.102 AUTHENTICATE commands that drive it.
//!
//! This crate does no IO, reads no clock and starts no threads in its core: the emulator takes
//! command bytes (or typed requests) and returns answers; persistence and PC/SC live at the edge.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apdu;
pub mod apdu_card;
pub mod card;
pub mod emulator;
pub mod error;
pub mod gba_me;
pub mod mbms;
#[cfg(feature = "pcsc")]
pub mod pcsc_backend;
pub mod persist;
pub mod sac;
pub mod usim;
pub mod vpcd;

pub use apdu::{CommandApdu, ResponseApdu, StatusWord};
pub use apdu_card::ApduCard;
pub use card::{Card, CardOpError, Transport, TransportError};
pub use emulator::Emulator;
pub use error::CardError;

/// Entry points for the fuzz targets under `fuzz/` (not a stable API).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use keycast_crypto::keys::{Opc, SubscriberKey};

    use crate::usim::{Usim, UsimIdentity};

    /// A session of command APDUs: the input is split into length-prefixed commands and fed to
    /// one emulator, so chaining and file state are exercised; every command gets an answer.
    pub fn apdu_session(data: &[u8]) {
        let id = UsimIdentity { imsi: "001010000000001".into(), impi: "user@ims".into(), iccid: "89001".into() };
        let mut emulator =
            crate::Emulator::new(Usim::new(id, SubscriberKey::from_bytes([1; 16]), Opc::from_bytes([2; 16])));
        let mut rest = data;
        while let Some((&len, tail)) = rest.split_first() {
            let (cmd, tail) = tail.split_at(usize::from(len).min(tail.len()));
            let answer = emulator.transmit_bytes(cmd);
            assert!(answer.len() >= 2, "every command gets a status word");
            rest = tail;
        }
    }

    /// The GBA_ME key store decoder; whatever decodes must encode back to the same store.
    pub fn gba_me_file(data: &[u8]) {
        use crate::persist::gba_me::{decode, encode};
        if let Ok(store) = decode(data) {
            assert_eq!(decode(&encode(&store)).expect("re-encoded GBA_ME store decodes"), store);
        }
    }

    /// The card-file decoder; whatever decodes must encode back to the same bytes' meaning.
    pub fn card_file(data: &[u8]) {
        if let Ok(usim) = crate::persist::decode(data) {
            let again = crate::persist::encode(&usim);
            assert_eq!(crate::persist::decode(&again).expect("re-encoded card file decodes"), usim);
        }
    }
}
