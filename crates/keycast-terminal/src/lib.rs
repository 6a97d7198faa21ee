//! The terminal agent: Service Guide, bootstrapping, provisioning client, LTKM/STKM intake, decryption, recording and play-back.
//!
//! This crate is a room in the Keycast workspace (DESIGN.md §2) that a later issue fills; it holds
//! no code yet, so nothing can depend on it by mistake.

#![forbid(unsafe_code)]
