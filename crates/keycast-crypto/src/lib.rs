//! Keycast crypto core: the cryptographic functions of the OMA BCAST Smartcard Profile and
//! the 3GPP MBMS security it builds on.
//!
//! This crate does **no IO, reads no clock and starts no threads**. Every function is a pure
//! computation over its arguments; timestamps, randomness and storage come from the caller.
//!
//! | module | what | governing text |
//! |---|---|---|
//! | [`keys`] | secret key newtypes (zeroized on drop, constant-time equality, no `Display`) | — |
//! | [`milenage`] | f1–f5*, OPc, AUTN/AUTS build and check, GBA_U MAC* and RES flip | TS 35.206, TS 33.102, TS 33.220 §5.3.2 |
//! | [`gba`] | GBA KDF, Ks, Ks_(ext/int)_NAF, B-TID, TMPI, MRK, SMK/SRK per GBA mode, Ks_local | TS 33.220 Annex B, TS 33.246 Annex F, TS 33.110 |
//! | [`mikey`] | MIKEY PRF, key labels, pre-keyed message keys (KEMAC IV, AES-CM, HMAC-SHA-1) | RFC 3830 §4.1–4.2 |
//! | [`aes_cm`] | AES-128 counter mode with a pre-expanded key | RFC 3711 §4.1.1 |
//! | [`srtp_kdf`] | SRTP/SRTCP session keys (key derivation rate 0) | RFC 3711 §4.3 |
//! | [`hmac`] | HMAC-SHA-1/-256 over several parts, constant-time compare | RFC 2104 |
//! | [`key_wrap`] | AES key wrap | RFC 3394 |
//!
//! Keys leave their types only through `expose_secret`, and every MAC check runs in constant
//! time.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aes_cm;
mod error;
pub mod gba;
pub mod hmac;
pub mod key_wrap;
pub mod keys;
pub mod mikey;
pub mod milenage;
pub mod srtp_kdf;

pub use error::{AutnError, AutsError, KdfError, KeyLengthError, KeyWrapError};
