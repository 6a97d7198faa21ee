//! The BSM's HTTP shell: Ua Digest authentication as an axum middleware plus an extractor
//! ([`auth`]), the provisioning routes behind it ([`provisioning`]), and the operator's JSON
//! administration API ([`admin`]); [`intents`] turns what the provisioning routes decide into
//! stored LTKM deliveries. [`tls`] serves the routes over HTTPS with client certificates (or
//! plain HTTP) and tells handlers which; [`client_id`] applies the BCAST_Client_ID rules to
//! Registrations on that basis. [`key_center`] is the NAF Key Center (Ks_local, profile P-10) and
//! the source of terminal binding keys (P-11.5), served over mutual TLS only.

pub mod admin;
pub mod auth;
pub mod broadcaster;
pub mod client_id;
pub mod guide;
pub mod intents;
pub mod key_center;
pub mod provisioning;
pub mod tls;

pub use auth::{Clock, UaGuard, UaIdentity, require_ua_digest, system_clock};
