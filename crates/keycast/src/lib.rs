//! Keycast's command-line tool as a library: the `keycast` binary is a thin shell over these
//! modules, and the integration tests use them (the pcap writer above all).
//!
//! | module | what |
//! |---|---|
//! | [`cli`] | clap definitions and dispatch of `demo`, `inspect`, `derive`, `card`, `serve`, `bsf` |
//! | [`demo`] | the narrated layer 1–4 scenario: the keycast-card emulator driven over TS 31.102 APDUs, GBA_U and GBA_ME terminals bootstrapped through keycast-gba's BSF over loopback, the real BSM, a protected stream from the broadcaster core to the terminal's media path |
//! | [`bsf_cmd`] | `keycast serve bsf` (TOML configuration, Ub/Zn/metrics service) and `keycast bsf subscriber add|import|show|delete` |
//! | [`broadcast_cmd`] | `keycast serve broadcast`: the broadcaster (TOML configuration, keys from the BSM, STKMs, SRTP/ESP out, metrics); `keycast broadcast package`: a file for download (DCF + STKM) |
//! | [`bench_cmd`] | `keycast bench rollover`: a SEK rollover campaign for N subscribers through the BSM's code, timed, with the peak memory |
//! | [`card_cmd`] | `keycast card new|show|apdu|reset-counters|serve-vpcd` over card files |
//! | [`inspect`] | field-by-field MIKEY decoding, the typed verdict, verify and decrypt with keys |
//! | [`derive`](mod@derive) | Milenage, GBA, MIKEY PRF and SRTP derivations with every intermediate value |
//! | [`pcap`] | pcap/pcapng reader (UDP over Ethernet, SLL, raw IP, loopback), pcap writer |
//! | [`input`] | hex, base64, files and captures from the command line |
//! | [`terminal_cmd`] | `keycast terminal watch|record|play|open`: STKMs and SRTP in, TEKs from a card file, clear RTP and an SDP out, LTKM Requests to the BSM; recordings written and played back; downloaded files opened |
//! | [`report`] | one tree rendered as `tshark -V`-like text or JSON |
//!
//! Errors are `anyhow` here and only here; the library crates below use typed errors.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench_cmd;
pub mod broadcast_cmd;
pub mod bsf_cmd;
pub mod bsm_admin;
pub mod bsm_cmd;
pub mod card_cmd;
pub mod cli;
pub mod demo;
pub mod derive;
pub mod input;
pub mod inspect;
pub mod pcap;
pub mod report;
pub mod terminal_cmd;
