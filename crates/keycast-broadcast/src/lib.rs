//! Layer 3 on the air: the broadcaster's TEK schedule, STKM stream and protected content out.
//!
//! This crate is a room in the Keycast workspace (DESIGN.md §2) that a later issue fills; it holds
//! no code yet, so nothing can depend on it by mistake.

#![forbid(unsafe_code)]
