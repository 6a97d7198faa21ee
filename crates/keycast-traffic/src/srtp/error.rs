//! The one error type of SRTP/SRTCP processing.

use thiserror::Error;

use super::Mki;

/// Why a packet was not protected or not accepted. None of the variants carries key bytes, and
/// none is ever raised by a panic: every input, however malformed, ends in `Ok` or one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SrtpError {
    /// The packet ends before `what` does.
    #[error("packet too short: {what} needs {needed} bytes, the packet has {len}")]
    TooShort {
        /// The part that did not fit (RTP header, CSRC list, header extension, SRTCP trailer …).
        what: &'static str,
        /// Bytes needed for it.
        needed: usize,
        /// Bytes available.
        len: usize,
    },
    /// The RTP/RTCP version field is not 2.
    #[error("bad RTP/RTCP version {0} (expected 2)")]
    BadVersion(u8),
    /// No master key with this MKI is installed (the STKM carrying its TEK has not arrived, or
    /// the TEK was already dropped for a newer one).
    #[error("unknown MKI {0} (no TEK installed under it)")]
    UnknownMki(Mki),
    /// The authentication tag does not match: the packet was altered or uses another key.
    #[error("authentication failed")]
    AuthFailed,
    /// A packet with this index was already accepted on this stream.
    #[error("replayed packet (index {index})")]
    Replayed {
        /// The 48-bit SRTP index or 31-bit SRTCP index of the packet.
        index: u64,
    },
    /// The packet's index is below the replay window, so it can no longer be checked.
    #[error("packet too old (below the replay window; highest accepted index {highest})")]
    TooOld {
        /// Highest index accepted on this stream so far.
        highest: u64,
    },
    /// RFC 4771 mode 1 or 3: a packet without ROC and without integrity arrived on a stream
    /// whose ROC is not known yet; the receiver waits for a ROC-carrying packet (SEQ mod R = 0).
    #[error("ROC not synchronised yet: waiting for a ROC-carrying packet")]
    RocNotSynchronised,
    /// The 48-bit SRTP index or 31-bit SRTCP index space of the stream is used up; a new master
    /// key must be installed (RFC 3711 §9.2).
    #[error("packet index space exhausted; rekey")]
    IndexExhausted,
    /// The receiver already tracks its maximum number of SSRCs.
    #[error("too many streams (at most {max} SSRCs)")]
    TooManyStreams {
        /// The configured maximum.
        max: usize,
    },
    /// The caller's buffer has no room for the MKI, tag (and SRTCP index).
    #[error("buffer too small: need {needed} bytes, have {capacity}")]
    BufferTooSmall {
        /// Bytes the protected packet needs.
        needed: usize,
        /// Bytes the buffer has.
        capacity: usize,
    },
}
