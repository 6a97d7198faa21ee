//! Outcome events of the Ub handler and cumulative counters for a metrics exporter.

use super::store::GbaType;

/// Why a Ub request did not bootstrap. The outward answer for each is in
/// [`crate::bsf`]'s module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureCause {
    /// 400: no or unparsable `Authorization`, wrong realm, algorithm, qop, uri or opaque.
    MalformedRequest,
    /// 401: nonce not ours (malformed, forged, not a Ub nonce, dated in the future).
    InvalidNonce,
    /// 401 with `stale=true`: nonce older than the nonce lifetime.
    ExpiredNonce,
    /// 401: nonce already answered (its pending challenge was taken).
    ReplayedNonce,
    /// 401: the `nc` tracker refused a second answer to a single-use nonce.
    ReplayedNc,
    /// 401: wrong `response` (wrong RES) for a known IMPI.
    WrongResponse,
    /// 401: an answer for an IMPI that is not a subscriber (outwardly identical to
    /// [`FailureCause::WrongResponse`]).
    UnknownImpi,
    /// 401: `username` differs from the IMPI the nonce was issued to.
    IdentityMismatch,
    /// 403: the consecutive-failure limit was reached.
    TooManyFailures,
    /// 403: AUTS whose MAC-S does not verify (or AUTS for an unknown IMPI).
    ResyncMacFailure,
    /// 500: the subscriber's 48-bit SQN space is exhausted.
    SqnExhausted,
    /// 500: the store failed, or SQN updates kept losing a race.
    StoreFailure,
    /// 500: a value could not be encoded (a bug, not caused by input).
    Internal,
}

impl FailureCause {
    /// Every cause, in a fixed order.
    pub const ALL: [FailureCause; 13] = [
        FailureCause::MalformedRequest,
        FailureCause::InvalidNonce,
        FailureCause::ExpiredNonce,
        FailureCause::ReplayedNonce,
        FailureCause::ReplayedNc,
        FailureCause::WrongResponse,
        FailureCause::UnknownImpi,
        FailureCause::IdentityMismatch,
        FailureCause::TooManyFailures,
        FailureCause::ResyncMacFailure,
        FailureCause::SqnExhausted,
        FailureCause::StoreFailure,
        FailureCause::Internal,
    ];

    /// A metric label (snake case).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCause::MalformedRequest => "malformed_request",
            FailureCause::InvalidNonce => "invalid_nonce",
            FailureCause::ExpiredNonce => "expired_nonce",
            FailureCause::ReplayedNonce => "replayed_nonce",
            FailureCause::ReplayedNc => "replayed_nc",
            FailureCause::WrongResponse => "wrong_response",
            FailureCause::UnknownImpi => "unknown_impi",
            FailureCause::IdentityMismatch => "identity_mismatch",
            FailureCause::TooManyFailures => "too_many_failures",
            FailureCause::ResyncMacFailure => "resync_mac_failure",
            FailureCause::SqnExhausted => "sqn_exhausted",
            FailureCause::StoreFailure => "store_failure",
            FailureCause::Internal => "internal",
        }
    }

    fn index(self) -> usize {
        // ALL lists every variant exactly once, so the position always exists.
        FailureCause::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// What one Ub request did. Internal only: it may say what the outward answer hides (e.g. that
/// an IMPI is unknown), so it goes to metrics and logs, never to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BsfEvent {
    /// An initial request was answered with a 401 challenge.
    Challenged {
        /// Whether the IMPI is a subscriber (otherwise the vector is fake).
        known_impi: bool,
    },
    /// A run succeeded (200) and a session was stored.
    Bootstrapped {
        /// GBA type of the session.
        gba_type: GbaType,
    },
    /// A valid AUTS resynchronised SQN and a fresh challenge was sent.
    Resynchronised,
    /// The request was refused (with a fresh challenge, 400, 403 or 500).
    Rejected(FailureCause),
}

/// Cumulative counters over [`BsfEvent`]s, for a Prometheus exporter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BsfMetrics {
    /// Challenges issued to initial requests, known IMPIs.
    pub challenges: u64,
    /// Challenges issued to initial requests, unknown IMPIs (fake vectors).
    pub challenges_unknown_impi: u64,
    /// Successful GBA_U runs.
    pub bootstraps_gba_u: u64,
    /// Successful GBA_ME runs.
    pub bootstraps_gba_me: u64,
    /// Successful resynchronisations.
    pub resyncs: u64,
    failures: [u64; FailureCause::ALL.len()],
}

impl BsfMetrics {
    /// Counts one event.
    pub fn record(&mut self, event: &BsfEvent) {
        match *event {
            BsfEvent::Challenged { known_impi: true } => self.challenges += 1,
            BsfEvent::Challenged { known_impi: false } => self.challenges_unknown_impi += 1,
            BsfEvent::Bootstrapped { gba_type: GbaType::GbaU } => self.bootstraps_gba_u += 1,
            BsfEvent::Bootstrapped { gba_type: GbaType::GbaMe } => self.bootstraps_gba_me += 1,
            BsfEvent::Resynchronised => self.resyncs += 1,
            BsfEvent::Rejected(cause) => self.failures[cause.index()] += 1,
        }
    }

    /// Failures counted for `cause`.
    #[must_use]
    pub fn failures(&self, cause: FailureCause) -> u64 {
        self.failures[cause.index()]
    }

    /// All successful runs.
    #[must_use]
    pub fn bootstraps(&self) -> u64 {
        self.bootstraps_gba_u + self.bootstraps_gba_me
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_labels() {
        let mut m = BsfMetrics::default();
        m.record(&BsfEvent::Challenged { known_impi: true });
        m.record(&BsfEvent::Challenged { known_impi: false });
        m.record(&BsfEvent::Bootstrapped { gba_type: GbaType::GbaU });
        m.record(&BsfEvent::Rejected(FailureCause::Internal));
        m.record(&BsfEvent::Rejected(FailureCause::Internal));
        assert_eq!((m.challenges, m.challenges_unknown_impi, m.bootstraps()), (1, 1, 1));
        assert_eq!(m.failures(FailureCause::Internal), 2);
        assert_eq!(m.failures(FailureCause::MalformedRequest), 0);
        let labels: std::collections::HashSet<_> = FailureCause::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels.len(), FailureCause::ALL.len());
        for (i, c) in FailureCause::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
