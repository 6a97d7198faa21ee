//! Service Guide fragments (Service, Access, PurchaseItem, PurchaseData, PurchaseChannel), the MBMS USD and Service Protection Description.
//!
//! This crate is a room in the Keycast workspace (DESIGN.md §2) that a later issue fills; it holds
//! no code yet, so nothing can depend on it by mistake.

#![forbid(unsafe_code)]
