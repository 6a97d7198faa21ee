//! Layer 1 of the Smartcard Profile on the network: the BSF (TS 24.109 Ub with HTTP Digest AKA,
//! RFC 3310) and the terminal's bootstrapping client.
//!
//! The cores here do no IO, read no clock and start no threads: requests, responses, time and
//! randomness are passed in, and the HTTP shells live at the edge.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bsf;
pub mod client;
