//! Layer 1 on the network: the BSF (Ub, HTTP Digest AKA), its subscriber store, Zn for NAFs, and the terminal's bootstrapping client.
//!
//! This crate is a room in the Keycast workspace (DESIGN.md §2) that a later issue fills; it holds
//! no code yet, so nothing can depend on it by mistake.

#![forbid(unsafe_code)]
