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
