//! The BSM's HTTP shell: Ua Digest authentication as an axum middleware plus an extractor
//! ([`auth`]), and the provisioning routes behind it ([`provisioning`]).

pub mod auth;
pub mod provisioning;

pub use auth::{Clock, UaGuard, UaIdentity, require_ua_digest, system_clock};
