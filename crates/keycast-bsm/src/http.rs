//! The BSM's HTTP shell: Ua Digest authentication as an axum middleware plus an extractor
//! ([`auth`]), the provisioning routes behind it ([`provisioning`]), and the operator's JSON
//! administration API ([`admin`]); [`intents`] turns what the provisioning routes decide into
//! stored LTKM deliveries.

pub mod admin;
pub mod auth;
pub mod intents;
pub mod provisioning;

pub use auth::{Clock, UaGuard, UaIdentity, require_ua_digest, system_clock};
