//! The card: secure store, GBA and MBMS security contexts, rights and policy state, the TS 31.102 AUTHENTICATE APDU codec, the `Card` trait with emulator and PC/SC backends.
//!
//! This crate is a room in the Keycast workspace (DESIGN.md §2) that a later issue fills; it holds
//! no code yet, so nothing can depend on it by mistake.

#![forbid(unsafe_code)]
