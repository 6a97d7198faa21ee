//! Layer 4 packet and file transforms: SRTP/SRTCP, ISMACryp, ESP, and the adapted PDCF writer and reader with an STKM track.
//!
//! This crate is a room in the Keycast workspace (DESIGN.md §2) that a later issue fills; it holds
//! no code yet, so nothing can depend on it by mistake.

#![forbid(unsafe_code)]
