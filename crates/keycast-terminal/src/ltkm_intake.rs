//! LTKM intake (`profile: P-3, P-5, P-8`; TS 33.246 §6.3.2.2.4, §6.3.2.3.1; TS 31.102 §7.1.1.6):
//! LTKMs pushed over UDP (port [`OMA_BCAST_LTKM_PORT`] for a terminal registered through OMA
//! BCAST, [`MBMS_LTKM_PORT`] for one registered through 3GPP MBMS) and LTKMs carried in HTTP
//! answers go through [`LtkmIntake::handle`], which decodes them, hands them to the terminal's
//! [`MbmsKeyHolder`] (MSK update: the card for GBA_U, the ME's store for GBA_ME; both refuse with
//! the card's status words) and says what the terminal does next.
//!
//! Sans-IO: the caller passes the bytes, where they came from, the terminal's current B-TID and
//! the time; the answer is an [`IntakeReport`] whose [`IntakeAction`]s the shell carries out.
//!
//! # Decisions
//! | input | card | what happens |
//! |---|---|---|
//! | not an LTKM of the profile (truncated, wrong payloads, over [`MAX_MESSAGE_LEN`]) | not asked | [`IntakeError::Malformed`] |
//! | IDi is not our BSM | not asked | dropped ([`LtkmEvent::ForeignBsm`]): its MUK is not ours to try |
//! | key LTKM | accepted | [`LtkmEvent::Accepted`]; with V = 1 the verification message goes out ([`IntakeAction::SendVerification`]) |
//! | solicited pull (Key Number 0, V = 0) | accepted (MAC good) | [`IntakeAction::RequestKeys`] for the current key of the group, no verification |
//! | any | 6A88 key not found, or 6985 (the card cannot tell which NAF key is meant) | [`IntakeAction::RequestKeys`] for the key the LTKM names: the HTTP request runs under the current B-TID, and its Digest exchange derives the NAF keys again (installing the MUK) or bootstraps again on a 401 (33.246 §6.1: "uses the new B-TID and sends an MSK request") |
//! | IDr ≠ our B-TID | 9865 (a good MAC under the previous MUK) | [`IntakeAction::RequestKeys`] for the key the LTKM names, no verification (33.246 §6.3.2.3.1: handled like a solicited pull) |
//! | IDr = our B-TID | 9865 (TS not fresh) | dropped as a replay; never a verification message (P-5) |
//! | any | 9862 bad MAC / malformed for the card | dropped, nothing sent: only the BSM can make the card answer |
//! | any | 9866 / 9867 card full | dropped; reported so the terminal can tell the user |
//! | any | link to the card failed | [`IntakeError::Card`]: the LTKM was not processed; the BSM will push again |
//!
//! \[chosen\] (`profile: P-3`): for the two "request the key" cases the terminal asks for the
//! SEK/PEK ID the LTKM names (Key Number 0, the group's current key, for a solicited pull), not
//! always the current key of the group, so that a key pushed ahead of a rollover is not missed.
//!
//! \[chosen\] (`profile: P-8`): the same key is requested at most once per
//! [`LtkmIntake::with_hold_off`] seconds (default [`DEFAULT_HOLD_OFF_SECS`]), so that a burst of
//! pushes or pulls for one group costs one HTTP request.
//!
//! # Where the verification message goes
//! \[chosen\] (`profile: P-5, P-8`): a verification message answers the LTKM it verifies, so it
//! goes back over UDP, from the socket that received the LTKM, to the address and port the LTKM
//! came from ([`VerificationTarget::ReplyTo`]): that is the BSM's push socket, whose intake
//! (keycast-bsm `verification::intake`) matches it by B-TID and TS alone, so no other addressing
//! is needed, and it also crosses a NAT that let the push in. An LTKM with V = 1 inside an HTTP
//! answer (the Keycast BSM sends V = 0 there) has no datagram to answer; its verification message
//! goes to the BSM host on the LTKM port of the interface the answer came on
//! ([`VerificationTarget::Bsm`]), which the shell resolves.
//!
//! STKMs: [`on_stkm_refusal`] turns the card's "key not found" for an STKM into the LTKM Request
//! that P-6 step 1 asks for.

use std::collections::HashMap;
use std::net::SocketAddr;

use keycast_card::card::CardOpError;
use keycast_card::error::CardError;
use keycast_mikey::{KeyDomainId, Ltkm, MAX_MESSAGE_LEN, MikeyError, SekPekId, Stkm};
use keycast_provisioning::sprov::BcastKeyId;
use keycast_provisioning::time::UtcTime;

use crate::key_holder::MbmsKeyHolder;

/// UDP port of LTKM pushes to a terminal registered through the OMA BCAST interface (IANA
/// `omabcastltkm`; `profile: P-8`).
pub const OMA_BCAST_LTKM_PORT: u16 = 4359;
/// UDP port of LTKM (MSK) pushes to a terminal registered through the 3GPP MBMS interface
/// (`mikey`, TS 33.246 §6.4.1; `profile: P-8`).
pub const MBMS_LTKM_PORT: u16 = 2269;
/// Default seconds between two requests for the same key \[chosen\].
pub const DEFAULT_HOLD_OFF_SECS: u64 = 10;
/// Most keys whose last request time is remembered (oldest forgotten first) \[chosen\].
const MAX_REMEMBERED_REQUESTS: usize = 1024;

/// The provisioning interface a message travels on; it decides the LTKM port and how keys are
/// asked for (LTKM Request on `/sprov`, MSK request on `/keymanagement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interface {
    /// OMA BCAST service provisioning (`application/vnd.oma.bcast.sprov+xml`), pushes on 4359.
    OmaBcast,
    /// 3GPP MBMS key management (TS 33.246 Annex G), pushes on 2269.
    Mbms,
}

impl Interface {
    /// The default UDP port LTKMs for this interface arrive on (`profile: P-8`).
    #[must_use]
    pub fn default_ltkm_port(self) -> u16 {
        match self {
            Interface::OmaBcast => OMA_BCAST_LTKM_PORT,
            Interface::Mbms => MBMS_LTKM_PORT,
        }
    }
}

/// Where an LTKM came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LtkmOrigin {
    /// A UDP datagram from `from`, received on the socket of `interface`.
    Udp {
        /// The datagram's source (the BSM's push socket).
        from: SocketAddr,
        /// The interface whose socket received it.
        interface: Interface,
    },
    /// Carried in an HTTP answer on `interface`.
    Response(Interface),
}

impl LtkmOrigin {
    /// The interface of the origin.
    #[must_use]
    pub fn interface(self) -> Interface {
        match self {
            LtkmOrigin::Udp { interface, .. } | LtkmOrigin::Response(interface) => interface,
        }
    }
}

/// Where a verification message is sent (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationTarget {
    /// Back to the source of the LTKM datagram, from the socket that received it.
    ReplyTo {
        /// The LTKM's source address.
        to: SocketAddr,
        /// The interface whose socket received the LTKM (and sends the answer).
        interface: Interface,
    },
    /// The BSM host on the LTKM port of this interface (an LTKM from an HTTP answer).
    Bsm(Interface),
}

/// Something the shell does after an LTKM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeAction {
    /// Send this MIKEY verification message (`profile: P-5`) over UDP.
    SendVerification {
        /// Where to.
        to: VerificationTarget,
        /// The message as the card built it.
        message: Vec<u8>,
    },
    /// Ask the BSM for these keys: an LTKM Request (OMA BCAST) or an MSK request (MBMS), on
    /// `interface`.
    RequestKeys {
        /// The interface to ask on (the one the LTKM came on).
        interface: Interface,
        /// The keys (Key Number 0: the current key of the group).
        keys: Vec<BcastKeyId>,
    },
}

/// What an LTKM turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LtkmEvent {
    /// The card took the LTKM (a key, a validity update or an invalidation).
    Accepted {
        /// The key it names.
        key: BcastKeyId,
    },
    /// A solicited pull for a Key Group, with a good MAC.
    SolicitedPull {
        /// The group (Key Number 0).
        key: BcastKeyId,
    },
    /// The card holds no MUK or no key for it (6A88 / 6985): the key is asked for over HTTP.
    KeyNotFound {
        /// The key it names.
        key: BcastKeyId,
    },
    /// Made under the previous MUK (9865 with another B-TID): the key is asked for under the
    /// current one.
    PreviousMuk {
        /// The key it names.
        key: BcastKeyId,
    },
    /// Not fresh (9865 under the current MUK): a replay or a retransmission already taken.
    Replay,
    /// The card refused its MAC or its form (9862).
    Refused,
    /// The card has no room (9866, 9867).
    CardFull,
    /// IDi names another BSM.
    ForeignBsm,
    /// The card refused with a word this intake does not act on.
    Other(u16),
}

/// The outcome of one LTKM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeReport {
    /// What it was.
    pub event: LtkmEvent,
    /// What to do (possibly nothing).
    pub actions: Vec<IntakeAction>,
}

/// Why an LTKM could not be processed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntakeError {
    /// Not an LTKM of the profile (or an empty or oversized datagram).
    #[error("malformed LTKM: {0}")]
    Malformed(MikeyError),
    /// The datagram is longer than any MIKEY message may be.
    #[error("datagram of {0} octets exceeds the MIKEY limit")]
    TooLarge(usize),
    /// The link to the card failed; the LTKM was not processed.
    #[error("card: {0}")]
    Card(CardOpError),
}

/// The intake state: which BSM it serves and when each key was last asked for.
#[derive(Debug, Clone)]
pub struct LtkmIntake {
    bsm_fqdn: String,
    hold_off_secs: u64,
    requested: HashMap<BcastKeyId, u64>,
}

impl LtkmIntake {
    /// Intake for LTKMs of the BSM `bsm_fqdn` (their IDi).
    #[must_use]
    pub fn new(bsm_fqdn: &str) -> Self {
        LtkmIntake { bsm_fqdn: bsm_fqdn.to_owned(), hold_off_secs: DEFAULT_HOLD_OFF_SECS, requested: HashMap::new() }
    }

    /// The same with another minimum interval between two requests for one key (0: none).
    #[must_use]
    pub fn with_hold_off(mut self, secs: u64) -> Self {
        self.hold_off_secs = secs;
        self
    }

    /// The BSM FQDN served.
    #[must_use]
    pub fn bsm_fqdn(&self) -> &str {
        &self.bsm_fqdn
    }

    /// Processes one LTKM (see the module documentation) in `card`, where the terminal's MBMS
    /// keys are (any [`keycast_card::Card`] for GBA_U, a
    /// [`GbaMeKeyHolder`](crate::key_holder::GbaMeKeyHolder) for GBA_ME). `current_btid` is the
    /// terminal's B-TID (`None` before any bootstrap); `now` drives the request hold-off.
    ///
    /// # Errors
    /// [`IntakeError`] when the bytes are no LTKM or the card could not be reached.
    pub fn handle(
        &mut self,
        card: &mut (impl MbmsKeyHolder + ?Sized),
        bytes: &[u8],
        origin: LtkmOrigin,
        current_btid: Option<&str>,
        now: UtcTime,
    ) -> Result<IntakeReport, IntakeError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(IntakeError::TooLarge(bytes.len()));
        }
        // The syntax and the profile are checked here, before the card sees anything: a
        // malformed datagram costs no card command and gets a typed error.
        let ltkm = Ltkm::decode(bytes).map_err(IntakeError::Malformed)?;
        let key = bcast_key(ltkm.key_domain_id(), ltkm.sek_pek_id());
        if !ltkm.idi().eq_ignore_ascii_case(&self.bsm_fqdn) {
            return Ok(report(LtkmEvent::ForeignBsm, Vec::new()));
        }
        let pull = ltkm.is_solicited_pull();
        let ours = current_btid.is_some_and(|b| b == ltkm.idr());
        let interface = origin.interface();
        match card.msk_update(bytes) {
            Ok(_) if pull => {
                // The card verified the MAC; a pull never gets a verification message, even if
                // a card returned one.
                let actions = self.request(interface, key, now);
                Ok(report(LtkmEvent::SolicitedPull { key }, actions))
            }
            Ok(verification) => {
                let actions = verification
                    .into_iter()
                    .map(|message| IntakeAction::SendVerification { to: verification_target(origin), message })
                    .collect();
                Ok(report(LtkmEvent::Accepted { key }, actions))
            }
            Err(CardOpError::Card(e)) => Ok(match e {
                CardError::KeyNotFound | CardError::ConditionsOfUse(_) => {
                    report(LtkmEvent::KeyNotFound { key }, self.request(interface, key, now))
                }
                CardError::Freshness(_) if !ours => {
                    report(LtkmEvent::PreviousMuk { key }, self.request(interface, key, now))
                }
                CardError::Freshness(_) => report(LtkmEvent::Replay, Vec::new()),
                CardError::Mac | CardError::Malformed(_) => report(LtkmEvent::Refused, Vec::new()),
                CardError::NoMemory | CardError::NoMukMemory => report(LtkmEvent::CardFull, Vec::new()),
                other => report(LtkmEvent::Other(other.status_word()), Vec::new()),
            }),
            // The link failed (or a kind of failure added later to the non-exhaustive
            // CardOpError): the LTKM was not processed.
            Err(e) => Err(IntakeError::Card(e)),
        }
    }

    /// A request for `key` unless one was made within the hold-off.
    fn request(&mut self, interface: Interface, key: BcastKeyId, now: UtcTime) -> Vec<IntakeAction> {
        let t = now.unix_seconds();
        if let Some(&last) = self.requested.get(&key)
            && self.hold_off_secs > 0
            && t < last.saturating_add(self.hold_off_secs)
            && t >= last
        {
            return Vec::new();
        }
        if self.requested.len() >= MAX_REMEMBERED_REQUESTS
            && !self.requested.contains_key(&key)
            && let Some(oldest) = self.requested.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k)
        {
            self.requested.remove(&oldest);
        }
        self.requested.insert(key, t);
        vec![IntakeAction::RequestKeys { interface, keys: vec![key] }]
    }

    /// Forgets the hold-off of `key` (after its request failed, so the next trigger asks again).
    pub fn forget_request(&mut self, key: &BcastKeyId) {
        self.requested.remove(key);
    }
}

fn report(event: LtkmEvent, actions: Vec<IntakeAction>) -> IntakeReport {
    IntakeReport { event, actions }
}

fn verification_target(origin: LtkmOrigin) -> VerificationTarget {
    match origin {
        LtkmOrigin::Udp { from, interface } => VerificationTarget::ReplyTo { to: from, interface },
        LtkmOrigin::Response(interface) => VerificationTarget::Bsm(interface),
    }
}

/// The provisioning name of a MIKEY key name.
#[must_use]
pub fn bcast_key(key_domain_id: KeyDomainId, sek_pek_id: SekPekId) -> BcastKeyId {
    BcastKeyId { key_domain_id: key_domain_id.0, sek_pek_id: sek_pek_id.to_bytes() }
}

/// The key to ask for when the card refused an STKM (`profile: P-6` step 1): `Some` exactly for
/// "key not found" (6A88) on an STKM that decodes; every other refusal is final for that STKM
/// (a terminal never answers an STKM on the network).
#[must_use]
pub fn on_stkm_refusal(stkm: &[u8], error: &CardOpError) -> Option<BcastKeyId> {
    if !matches!(error, CardOpError::Card(CardError::KeyNotFound)) {
        return None;
    }
    let stkm = Stkm::decode(stkm).ok()?;
    Some(bcast_key(stkm.key_domain_id(), stkm.sek_pek_id()))
}
