//! Keycast crypto core: the cryptographic functions of the OMA BCAST Smartcard Profile and
//! the 3GPP MBMS security it builds on.
//!
//! This crate does **no IO, reads no clock and starts no threads**. Every function is a pure
//! computation over its arguments; timestamps, randomness and storage come from the caller.
//!
//! | module | what | governing text |
//! |---|---|---|
//! | [`keys`] | secret key newtypes (zeroized on drop, constant-time equality, no `Display`) | — |
//! | [`milenage`] | f1–f5*, OPc, AUTN/AUTS, GBA_U MAC*, RES flip | TS 35.206, 33.102, 33.220 §5.3.2 |
//! | [`gba`] | KDF, Ks, NAF keys, B-TID, TMPI, MRK, SMK/SRK per mode, Ks_local | TS 33.220 B, 33.246 F, 33.110 |
//! | [`mikey`] | MIKEY PRF, key labels, pre-keyed message keys (KEMAC IV, AES-CM, HMAC-SHA-1) | RFC 3830 §4.1–4.2 |
//! | [`aes_cm`] | AES-128 counter mode with a pre-expanded key | RFC 3711 §4.1.1 |
//! | [`srtp_kdf`] | SRTP/SRTCP session keys (key derivation rate 0) | RFC 3711 §4.3 |
//! | [`hmac`] | HMAC-SHA-1/-256 over several parts, constant-time compare | RFC 2104 |
//! | [`key_wrap`] | AES key wrap | RFC 3394 |
//!
//! Keys leave their types only through `expose_secret`, and every MAC check runs in constant
//! time.
//!
//! ```
//! use keycast_crypto::mikey::MessageKeys;
//!
//! // Keys protecting one MIKEY message, from a pre-shared key, CSB ID and RAND.
//! let keys = MessageKeys::derive(&[0x11; 32], 0x0102_0304, &[0xa0; 16]);
//! let mut key_data = *b"TEK and salt";
//! keys.apply_keystream(&keys.kemac_iv(0x0102_0304, 7), &mut key_data);
//! let tag = keys.mac(&[b"message up to the MAC-alg octet", &key_data]);
//! assert!(keys.verify_mac(&[b"message up to the MAC-alg octet", &key_data], &tag));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aes_cm;
pub mod at_rest;
mod error;
pub mod gba;
pub mod hmac;
pub mod key_wrap;
pub mod keys;
pub mod mikey;
pub mod milenage;
pub mod srtp_kdf;

pub use error::{AutnError, AutsError, KdfError, KeyLengthError, KeyWrapError};
