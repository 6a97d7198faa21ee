//! Keycast provisioning: the HTTP and XML message formats of the provisioning interfaces.
//!
//! This crate does **no IO, reads no clock and starts no threads**. Every function works on the
//! values it is given: header values and bodies come in as strings and bytes, time comes in as
//! Unix seconds, randomness comes in as caller-supplied bytes, and the caller moves the results
//! onto the network.
//!
//! | module | what | governing text |
//! |---|---|---|
//! | [`digest`] | HTTP Digest: header codecs, MD5 / AKAv1-MD5 computation, nonces, client | RFC 2617, RFC 3310, TS 24.109 §4–5 |
//! | [`bootstrapping`] | the BSF's `BootstrappingInfo` XML | TS 24.109 Annex C |
//! | [`mbms`] | MBMS key management XML: Security Description, (de)registration, MSK request and responses | TS 26.346 §11, TS 33.246 Annex G |
//! | [`sprov`] | OMA BCAST service provisioning messages (`application/vnd.oma.bcast.sprov+xml`), schema `schemas/keycast-sprov.xsd` | profile P-8 (chosen layout) |
//! | [`time`] | RFC 3339 UTC timestamps (`YYYY-MM-DDTHH:MM:SSZ`) | RFC 3339, XML Schema `dateTime` |
//!
//! The BSF (Ub) and the BSM (Ua) both use [`digest`]; the crate depends on no other Keycast
//! crate, only on RustCrypto primitives (MD5, HMAC-SHA-256, `subtle`, `zeroize`) and `quick-xml`.
//!
//! ```
//! use keycast_provisioning::digest::{Challenge, Credentials, DigestClient, Password, Qop};
//!
//! // Terminal, Ub: answer the BSF's AKA challenge with the RES from the card.
//! let challenge = Challenge::parse(
//!     "Digest realm=\"bsf.example.org\", nonce=\"I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M=\", \
//!      algorithm=AKAv1-MD5, qop=\"auth-int\"",
//! )
//! .unwrap();
//! let res = [0xa5, 0x42, 0x11, 0xd5, 0xe3, 0xba, 0x50, 0xbf];
//! let impi = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
//! let mut client = DigestClient::new(challenge, impi, Password::from_bytes(&res), &[Qop::AuthInt]).unwrap();
//! let sent = client.authorize("GET", "/", b"", &[0x0a, 0x4f, 0x11, 0x3b]).unwrap();
//! assert_eq!(sent.credentials().response, "78486094df22fe6ec39138ac4d2d6e8d"); // vectors.md §2
//!
//! // BSF: parse and verify with the expected RES.
//! let header = sent.credentials().to_header_value().unwrap();
//! let creds = Credentials::parse(&header).unwrap();
//! creds.verify_response(&Password::from_bytes(&res), "GET", b"").unwrap();
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bootstrapping;
pub mod digest;
pub mod mbms;
pub mod sprov;
pub mod time;
/// The bounded XML reader and writer, public so that `keycast-guide` reuses it rather than
/// keeping a second one; an implementation detail, not a stable API.
#[doc(hidden)]
pub mod xml;
pub mod zn;
