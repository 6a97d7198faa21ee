//! Layer 2 on the network: the BSM (OMA BCAST Smartcard Profile subscription management). Built so
//! far: the domain and its rules, the storage, the authentication of terminals on the provisioning
//! interfaces (profile P-7), the provisioning logic and its HTTP routes, LTKM issuing, the push
//! scheduler, verification intake, the UDP push service over stored deliveries and the operator's
//! admin API; `keycast serve bsm` runs them together.
//!
//! | module | what |
//! |---|---|
//! | [`domain`] | the catalogue (services, programs, purchase items and offers), SEK/PEK key groups with rollover and history, purchases, and the rules: [`domain::keys_to_deliver`], [`domain::keys_to_invalidate`] |
//! | [`store`] | [`store::BsmStore`] with SQLite and PostgreSQL backends: catalogue, keys wrapped at rest, terminals and registrations, purchases, LTKM counters |
//! | [`ua`] | sans-IO HTTP Digest authenticator: username B-TID, password base64(SRK), realm `3GPP-bootstrapping@<BSM FQDN>`, `qop="auth,auth-int"` |
//! | [`keys`] | [`keys::KeyRecord`] (IMPI, GBA type, lifetime, SMK, SRK of a B-TID), the [`keys::KeySource`] trait and the bounded [`keys::KeyCache`] |
//! | [`zn_client`] | the NAF side of Zn: the BSF's keys for a B-TID over HTTP (bearer token) or HTTPS (client certificate) |
//! | [`service`] | the provisioning logic over the store: Registration, Service Request, Unsubscribe, LTKM Request, Deregistration, Token Purchase, Account Inquiry and the MBMS register / deregister / msk-request, with LTKMs in the answers and delivery intents for the push scheduler |
//! | [`http`] | the axum shell: [`http::require_ua_digest`] middleware, the [`http::UaIdentity`] extractor, [`http::provisioning::bsm_app`] (`POST /sprov`, `POST /keymanagement?requesttype=…`), [`http::intents`] (answers' delivery intents into the store) and [`http::admin::admin_app`] (the operator's JSON API) |
//! | [`issue`] | LTKM issuing (P-3, P-4, P-11): [`issue::SekPekRecord`], [`issue::LtkmCounter`] (TS per terminal and SMK), delivery / validity update / invalidation / solicited pull |
//! | [`delivery`] | sans-IO LTKM push scheduler (P-8): spread window, rate limit, jitter, retries with backoff, solicited pull, give-up |
//! | [`verification`] | verification-message intake (P-5): match to the sent LTKM, check the MAC, acknowledge the delivery |
//! | [`push`] | the UDP push service (P-3, P-5, P-8): [`push::PushWorker`] claims stored deliveries, seals and sends LTKMs and solicited pulls, takes verification messages back; [`push::PushService`] runs it with a graceful stop. Intents become rows in [`http::intents`] |
//! | [`campaign`] | key campaigns: a new SEK/PEK, or its moved window, queued for every entitled registered terminal in pages that survive a crash ([`campaign::CampaignRunner`]) |
//! | [`client_id`] | sans-IO BCAST_Client_ID rules (seed §6.9.2): [`client_id::BcastClientId`] read from the `User-Agent`, [`client_id::BcastClientIdPolicy`], [`client_id::decide`]; carried out by [`http::client_id`] over [`http::tls`] (HTTPS with client certificates) |
//! | [`guide`] | the Service Guide published from the catalogue (Service, Access, PurchaseItem, PurchaseData, PurchaseChannel fragments; the MBMS USD and SPD), served by [`http::guide`] and exported by `keycast bsm guide export` |
//! | [`rng`] | the [`rng::RandomSource`] the issuer and the scheduler draw from |
//!
//! The decision logic ([`ua`], the key derivations in [`keys`]) does no IO, reads no clock and
//! draws no randomness: the time and random octets are passed in. The shells ([`zn_client`],
//! [`http`]) move bytes and call it.
//!
//! One request, start to end:
//!
//! ```text
//! terminal --POST (no Authorization)--> require_ua_digest --begin--> 401 WWW-Authenticate
//! terminal --POST + Digest (B-TID)----> begin: syntax, realm, uri, nonce ok -> NeedKeys(B-TID)
//!                                       KeyCache -> ZnClient --POST /zn/v1/naf-keys--> BSF
//!                                       complete: response over base64(SRK), nc -> accepted
//!                                       handler(UaIdentity) -> response + Authentication-Info
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod campaign;
pub mod client_id;
pub mod delivery;
pub mod domain;
pub mod guide;
pub mod http;
pub mod issue;
pub mod keys;
pub mod push;
pub mod rng;
pub mod service;
pub mod store;
pub mod ua;
pub mod verification;
pub mod zn_client;
