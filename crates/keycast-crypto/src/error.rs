//! Error types, one per concern. None of them carries key bytes.

use thiserror::Error;

/// A key was built from a slice of the wrong length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
#[error("{key_type} must be {expected} bytes long, got {actual}")]
pub struct KeyLengthError {
    /// Name of the key type that was being built.
    pub key_type: &'static str,
    /// Length the key type needs.
    pub expected: usize,
    /// Length that was given.
    pub actual: usize,
}

/// An AUTN did not authenticate the network (TS 33.102 §6.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AutnError {
    /// The MAC-A in AUTN differs from the expected one (wrong K/OPc, or a forged AUTN).
    #[error("AUTN MAC check failed")]
    MacFailure,
}

/// An AUTS did not authenticate the card (TS 33.102 §6.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AutsError {
    /// The MAC-S in AUTS differs from the expected one.
    #[error("AUTS MAC-S check failed")]
    MacFailure,
}

/// A GBA KDF input cannot be encoded (TS 33.220 Annex B.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KdfError {
    /// Each parameter's length must fit the 2-byte length field L_i.
    #[error("KDF parameter P{index} is {len} bytes long, more than 65535")]
    ParameterTooLong {
        /// Index i of the parameter P_i.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
}

/// AES key wrap or unwrap failed (RFC 3394).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyWrapError {
    /// Key data must be a multiple of 8 bytes and at least 16 bytes (wrapped: at least 24).
    #[error("invalid key wrap input length {len}")]
    InvalidLength {
        /// Length that was given.
        len: usize,
    },
    /// The recovered integrity check value is not A6A6A6A6A6A6A6A6 (wrong KEK or tampered data).
    #[error("key unwrap integrity check failed")]
    IntegrityCheckFailed,
}
