//! The terminal agent of the OMA BCAST Smartcard Profile. Built so far: the provisioning client
//! toward the BSM over both interfaces, LTKM intake into wherever the terminal's keys are (the
//! card for GBA_U, the ME's store for GBA_ME), the tokio shell that moves their bytes, live
//! watching (STKM intake, TEKs from the key holder, SRTP/SRTCP decryption, clear RTP out),
//! recording and play-back (adapted PDCF), downloaded files (DCF), and content protection (the
//! secure channel to the card, terminal binding keys).
//!
//! | module | what |
//! |---|---|
//! | [`provisioning`] | sans-IO client core: the OMA BCAST service provisioning requests (`/sprov`) and the 3GPP MBMS key-management requests (`/keymanagement`), request IDs, the purchase list with its validity, Ua Digest with the SRK, "bootstrap again, then retry" on a 401, typed answers |
//! | [`key_holder`] | where the keys live and are processed ([`key_holder::MbmsKeyHolder`]): any [`keycast_card::Card`] (GBA_U: Ks, SMK, SEK/PEKs in the UICC) or a [`key_holder::GbaMeKeyHolder`] (GBA_ME: AKA on the USIM, Ks, SMK, SEK/PEKs in the ME's `GbaMeStore`); bootstrapping and NAF keys through keycast-gba's client |
//! | [`ltkm_intake`] | sans-IO LTKM intake: decode, hand to the key holder (MSK update), turn its answer into actions (verification message out, LTKM Request, nothing) |
//! | [`media`] | live watching: sans-IO [`media::Watcher`] (STKM → key holder → TEK → SRTP receiver per SEK/PEK, SRTP/SRTCP opened in place, LTKM Request on "key not found"), its tokio shell [`media::shell::watch`] and the SDP of the clear stream; recording ([`media::record`]: ISMACryp samples and the STKM track into an adapted PDCF) and play-back ([`media::play`]: STKMs to the card under its P-4 rights, missing keys asked for at the BSM) |
//! | [`download`] | a downloaded file: the DCF and the STKM naming the same key, the TEK from the key holder, the file's signature checked and its content decrypted |
//! | [`protection`] | content protection: the secure authenticated channel to the card (Ks_local from the BSM's key center, the card's Local Key Establishment), terminal binding keys, and [`protection::usable_tek`] turning the card's TEK answer into a usable TEK |
//! | [`guide_client`] | the Service Guide from the BSM: loaded over HTTP, checked, offers with prices, and for a chosen offer a Service Request or the portal |
//! | [`state`] | the terminal state file (B-TID and lifetime, request IDs, purchases, registration): versioned, checksummed, written atomically, so a restart neither bootstraps nor registers again needlessly |
//! | [`shell`] | the thin tokio shell, GBA_U or GBA_ME: HTTP to the BSM (hyper, through keycast-gba's client), UDP sockets for LTKM pushes, bootstrapping, registration at start and after reconnecting, bounded timeouts |
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
//! shell.connect()      bootstrap (Ub) -> naf_keys (SRK; the card or the GBA_ME store keeps SMK)
//!                      -> RegistrationRequest
//! shell.subscribe(…)   POST /sprov -> 401 -> POST + Digest(B-TID, base64(SRK), auth-int) -> 200
//!                      ServiceResponse: LTKMs -> intake -> key holder's msk_update
//! UDP 4359 / 2269      LTKM -> intake -> key holder -> verification message back (V = 1)
//!                      solicited pull -> LTKM Request (/sprov) or MSK request (/keymanagement)
//! any request -> 401 after Digest: bootstrap again, new SRK, same request again (once)
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod download;
pub mod guide_client;
pub mod key_holder;
pub mod ltkm_intake;
pub mod media;
pub mod protection;
pub mod provisioning;
pub mod shell;
pub mod state;
