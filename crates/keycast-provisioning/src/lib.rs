//! OMA BCAST service provisioning messages (XML), status codes, the BSF BootstrappingInfo XML and the MBMS register / MSK-request bodies.
//!
//! This crate is a room in the Keycast workspace (DESIGN.md §2) that a later issue fills; it holds
//! no code yet, so nothing can depend on it by mistake.

#![forbid(unsafe_code)]
