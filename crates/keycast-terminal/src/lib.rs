//! The terminal agent of the OMA BCAST Smartcard Profile. Built so far: the provisioning client
//! toward the BSM over both interfaces, LTKM intake into the card, and the tokio shell that moves
//! their bytes. The Service Guide, STKM intake, decryption, recording and play-back come later.
//!
//! | module | what |
//! |---|---|
//! | [`provisioning`] | sans-IO client core: the OMA BCAST service provisioning requests (`/sprov`) and the 3GPP MBMS key-management requests (`/keymanagement`), request IDs, the purchase list with its validity, Ua Digest with the SRK, "bootstrap again, then retry" on a 401, typed answers |
//! | [`ltkm_intake`] | sans-IO LTKM intake: decode, hand to the [`keycast_card::Card`], turn its answer into actions (verification message out, LTKM Request, nothing) |
//! | [`shell`] | the thin tokio shell: HTTP to the BSM (hyper, through keycast-gba's client), UDP sockets for LTKM pushes, bootstrapping, registration at start and after reconnecting, bounded timeouts |
//!
//! The cores ([`provisioning`], [`ltkm_intake`]) open no socket, read no clock, draw no
//! randomness and start no thread: HTTP responses, datagrams, the time and the `cnonce` octets
//! are passed in; requests, verification messages and actions come out as values. Bad input from
//! the network or the card is an error value or a dropped message, never a panic; no key is ever
//! logged or printed.
//!
//! One subscription, start to end:
//!
//! ```text
//! shell.connect()      bootstrap (Ub) -> naf_keys (SRK; the card keeps SMK) -> RegistrationRequest
//! shell.subscribe(…)   POST /sprov -> 401 -> POST + Digest(B-TID, base64(SRK), auth-int) -> 200
//!                      ServiceResponse: LTKMs -> intake -> card.msk_update
//! UDP 4359 / 2269      LTKM -> intake -> card -> verification message back (V = 1)
//!                      solicited pull -> LTKM Request (/sprov) or MSK request (/keymanagement)
//! any request -> 401 after Digest: bootstrap again, new SRK, same request again (once)
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ltkm_intake;
pub mod provisioning;
pub mod shell;
