//! Layer 2: the BSM core (services, purchase items, subscriptions, SEK/PEK lifecycle, LTKM issue and delivery), its storage and HTTP/UDP services.
//!
//! This crate is a room in the Keycast workspace (DESIGN.md §2) that a later issue fills; it holds
//! no code yet, so nothing can depend on it by mistake.

#![forbid(unsafe_code)]
