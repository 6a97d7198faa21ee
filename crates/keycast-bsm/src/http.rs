//! The BSM's HTTP shell. For now it holds the piece every provisioning route needs: Ua Digest
//! authentication as an axum middleware plus an extractor ([`auth`]). The routes themselves
//! come with the BSM service.

pub mod auth;

pub use auth::{Clock, UaGuard, UaIdentity, require_ua_digest, system_clock};
