//! The BCAST_Client_ID of a Registration (seed §6.9.2): the value, how it is read from the
//! `User-Agent`, and the BSM's decision for one request. Sans-IO: no socket, clock or store; the
//! HTTP shell ([`crate::http::client_id`]) tells [`decide`] what the channel is and carries the
//! decision out.
//!
//! # Wire form
//!
//! The terminal names itself with a `User-Agent` word `BCAST_Client_ID=<base64>` (seed §6.9.2.2).
//! The BSM's Digest layer (`profile: P-7`) also wants the product token `3gpp-gba` in the same
//! header, and a request carries one `User-Agent` only, so \[chosen\] (`profile: P-7, P-8`) the two
//! are separate words of one value, separated by spaces, in any order:
//!
//! ```text
//! User-Agent: Keycast/1.0 3gpp-gba BCAST_Client_ID=AQIDBA==
//! ```
//!
//! - \[chosen\] (`profile: P-8`) The label `BCAST_Client_ID=` is matched without regard to ASCII
//!   case; more than one such word in a request is refused ([`ClientIdError::Repeated`]), so that
//!   no two readers of the header can disagree on which one counts.
//! - \[chosen\] (`profile: P-8`) The value is standard base64 with padding (RFC 4648 §4, the seed's
//!   "Base64 encoded"), 1 to [`MAX_CLIENT_ID_LEN`] octets once decoded. The length is checked
//!   before anything is decoded, so an oversized header costs no work.
//!
//! # Rules ([`decide`])
//!
//! | the request | channel | policy | decision |
//! |---|---|---|---|
//! | carries an ID | plain HTTP, or TLS without a verified client certificate | any | [`ClientIdDecision::RefuseChannel`]: seed §6.9.2.1–2, the ID travels only inside mutually authenticated HTTPS (33.222 §5.5); it is not read or stored |
//! | not a Registration | any other | any | [`ClientIdDecision::Proceed`] (an ID on a mutually authenticated channel is ignored) |
//! | Registration | any | [`BcastClientIdPolicy::Ignore`] | [`ClientIdDecision::Proceed`] |
//! | Registration without an ID | any | [`BcastClientIdPolicy::Request`] | [`ClientIdDecision::Ask`]: `403` `send_BCAST_Client_ID` (seed §6.9.2.3) |
//! | Registration with a malformed ID | mutual TLS | [`BcastClientIdPolicy::Request`] | [`ClientIdDecision::Malformed`] (400) |
//! | Registration with an ID | mutual TLS | [`BcastClientIdPolicy::Request`] | [`ClientIdDecision::Accept`]: stored with the terminal, the Registration proceeds (seed §6.9.2.5) |
//!
//! The channel rule holds under every policy: it protects the terminal's identifier, not the
//! BSM's wish to have it.
//!
//! # Logs
//!
//! \[chosen\] (`profile: P-8`) The ID is never logged. [`BcastClientId::log_tag`] gives 8 octets of
//! a labelled HMAC-SHA-256 of it in hex, enough for an operator to see that two requests carried
//! the same ID, and nothing to read it back from (a guessable ID can still be confirmed by someone
//! who holds the logs and guesses it; the store holds the ID itself).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The `User-Agent` label in front of the ID (seed §6.9.2.2).
pub const CLIENT_ID_LABEL: &str = "BCAST_Client_ID=";
/// Most octets of a decoded BCAST_Client_ID \[chosen: the seed sets no bound; an identifier
/// longer than this is no identifier\].
pub const MAX_CLIENT_ID_LEN: usize = 256;
/// Most characters of its base64 form (padding included).
pub const MAX_CLIENT_ID_BASE64_LEN: usize = MAX_CLIENT_ID_LEN.div_ceil(3) * 4;

/// The key of [`BcastClientId::log_tag`]: a fixed label, so that tags are comparable across BSM
/// processes and restarts (they are correlators, not protection against guessing).
const LOG_TAG_LABEL: &[u8] = b"keycast-bsm BCAST_Client_ID log tag";

/// Why a `User-Agent`'s BCAST_Client_ID is refused (each answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientIdError {
    /// `BCAST_Client_ID=` with nothing after it.
    #[error("BCAST_Client_ID is empty")]
    Empty,
    /// The value is longer than [`MAX_CLIENT_ID_BASE64_LEN`] characters.
    #[error("BCAST_Client_ID of {len} characters is over the {max}-character limit")]
    TooLong {
        /// Characters received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value decodes to more than [`MAX_CLIENT_ID_LEN`] octets.
    #[error("BCAST_Client_ID of {len} octets is over the {max}-octet limit")]
    TooManyOctets {
        /// Octets decoded.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is not standard, padded base64.
    #[error("BCAST_Client_ID is not base64 (RFC 4648 section 4, padded)")]
    NotBase64,
    /// More than one `BCAST_Client_ID=` word.
    #[error("more than one BCAST_Client_ID in the User-Agent")]
    Repeated,
}

/// A terminal's BCAST_Client_ID: 1 to [`MAX_CLIENT_ID_LEN`] octets. Prints only its
/// [`BcastClientId::log_tag`].
#[derive(Clone, PartialEq, Eq)]
pub struct BcastClientId(Vec<u8>);

impl core::fmt::Debug for BcastClientId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "BcastClientId(tag {})", self.log_tag())
    }
}

impl BcastClientId {
    /// The ID of these octets.
    ///
    /// # Errors
    /// [`ClientIdError::Empty`] or [`ClientIdError::TooManyOctets`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, ClientIdError> {
        match bytes.len() {
            0 => Err(ClientIdError::Empty),
            len if len > MAX_CLIENT_ID_LEN => Err(ClientIdError::TooManyOctets { len, max: MAX_CLIENT_ID_LEN }),
            _ => Ok(BcastClientId(bytes)),
        }
    }

    /// Decodes the base64 text after the label.
    ///
    /// # Errors
    /// [`ClientIdError`] (never [`ClientIdError::Repeated`]).
    pub fn from_base64(text: &str) -> Result<Self, ClientIdError> {
        if text.is_empty() {
            return Err(ClientIdError::Empty);
        }
        if text.len() > MAX_CLIENT_ID_BASE64_LEN {
            return Err(ClientIdError::TooLong { len: text.len(), max: MAX_CLIENT_ID_BASE64_LEN });
        }
        let bytes = STANDARD.decode(text).map_err(|_| ClientIdError::NotBase64)?;
        Self::from_bytes(bytes)
    }

    /// The octets.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The base64 form (as sent after the label).
    #[must_use]
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.0)
    }

    /// 16 hex digits naming the ID in logs (see the module documentation).
    #[must_use]
    pub fn log_tag(&self) -> String {
        let mac = keycast_crypto::hmac::hmac_sha256(LOG_TAG_LABEL, &[&self.0]);
        mac[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The base64 text of the one `BCAST_Client_ID=` word of a `User-Agent` value; `Ok(None)` when
/// there is none.
///
/// # Errors
/// [`ClientIdError::Repeated`].
pub fn client_id_text(user_agent: &str) -> Result<Option<&str>, ClientIdError> {
    let mut found = None;
    for word in user_agent.split_ascii_whitespace() {
        let Some(label) = word.get(..CLIENT_ID_LABEL.len()) else { continue };
        if !label.eq_ignore_ascii_case(CLIENT_ID_LABEL) {
            continue;
        }
        if found.is_some() {
            return Err(ClientIdError::Repeated);
        }
        found = Some(&word[CLIENT_ID_LABEL.len()..]);
    }
    Ok(found)
}

/// Whether the BSM asks terminals for their BCAST_Client_ID at Registration. \[chosen\] (`profile:
/// P-8`) Default [`BcastClientIdPolicy::Ignore`]: the ID is optional for the terminal (seed
/// §6.9.2.4, it "MAY be incapable of sending this identifier") and asking for it refuses every
/// Registration that does not come over mutually authenticated HTTPS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BcastClientIdPolicy {
    /// Neither ask for the ID nor read it; Registrations proceed as without one.
    #[default]
    Ignore,
    /// Ask for it (`403 send_BCAST_Client_ID`) when a Registration comes without it; store it
    /// when it comes.
    Request,
}

impl BcastClientIdPolicy {
    /// `"ignore"` or `"request"` (configuration form).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ignore => "ignore",
            Self::Request => "request",
        }
    }

    /// The configuration form back.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ignore" => Some(Self::Ignore),
            "request" => Some(Self::Request),
            _ => None,
        }
    }
}

/// What protects the connection a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Plain HTTP (or a transport the BSM cannot vouch for).
    PlainHttp,
    /// TLS, the client presented no certificate.
    Tls,
    /// TLS with a client certificate that verified against the configured CA (33.222 §5.5).
    MutualTls,
}

/// What the BSM does about the BCAST_Client_ID of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdDecision {
    /// Go on as if there were no ID.
    Proceed,
    /// Go on, and store this ID with the terminal.
    Accept(BcastClientId),
    /// Answer `403` with body `send_BCAST_Client_ID`.
    Ask,
    /// Answer `403`: an ID arrived outside mutually authenticated HTTPS.
    RefuseChannel,
    /// Answer `400`.
    Malformed(ClientIdError),
}

impl ClientIdDecision {
    /// A label for metrics and logs.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Proceed => "proceed",
            Self::Accept(_) => "accepted",
            Self::Ask => "asked",
            Self::RefuseChannel => "refused-channel",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// The decision for a request with this `User-Agent` on `channel` (see the module table).
/// `registration` says whether the request is a Registration (`RegistrationRequest` or MBMS
/// `register`). Never panics.
#[must_use]
pub fn decide(
    policy: BcastClientIdPolicy,
    channel: Channel,
    user_agent: Option<&str>,
    registration: bool,
) -> ClientIdDecision {
    let text = user_agent.map(client_id_text).transpose();
    // An ID outside mutual TLS is refused before it is even decoded, and so is a header that
    // carries the label twice: either way the identifier has already travelled in the clear.
    let carries_id = !matches!(text, Ok(None | Some(None)));
    if carries_id && channel != Channel::MutualTls {
        return ClientIdDecision::RefuseChannel;
    }
    if !registration || policy == BcastClientIdPolicy::Ignore {
        return ClientIdDecision::Proceed;
    }
    match text {
        Err(e) => ClientIdDecision::Malformed(e),
        Ok(None | Some(None)) => ClientIdDecision::Ask,
        Ok(Some(Some(value))) => match BcastClientId::from_base64(value) {
            Ok(id) => ClientIdDecision::Accept(id),
            Err(e) => ClientIdDecision::Malformed(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTLS: Channel = Channel::MutualTls;
    const REQ: BcastClientIdPolicy = BcastClientIdPolicy::Request;

    #[test]
    fn reads_the_id_word_among_product_tokens() {
        assert_eq!(client_id_text("Keycast/1.0 3gpp-gba BCAST_Client_ID=AQID"), Ok(Some("AQID")));
        assert_eq!(client_id_text("bcast_client_id=AQID 3gpp-gba"), Ok(Some("AQID")));
        assert_eq!(client_id_text("3gpp-gba"), Ok(None));
        assert_eq!(client_id_text("xBCAST_Client_ID=AQID"), Ok(None));
        assert_eq!(client_id_text("BCAST_Client_ID=AQID BCAST_Client_ID=AQID"), Err(ClientIdError::Repeated));
    }

    #[test]
    fn accepts_an_id_on_mutual_tls_under_request() {
        let d = decide(REQ, MTLS, Some("3gpp-gba BCAST_Client_ID=AQIDBA=="), true);
        assert_eq!(d, ClientIdDecision::Accept(BcastClientId::from_bytes(vec![1, 2, 3, 4]).unwrap()));
    }

    #[test]
    fn asks_for_a_missing_id_on_any_channel() {
        for channel in [Channel::PlainHttp, Channel::Tls, MTLS] {
            assert_eq!(decide(REQ, channel, Some("3gpp-gba"), true), ClientIdDecision::Ask);
            assert_eq!(decide(REQ, channel, None, true), ClientIdDecision::Ask);
        }
    }

    #[test]
    fn rejects_an_id_outside_mutual_tls_under_every_policy() {
        for policy in [BcastClientIdPolicy::Ignore, REQ] {
            for channel in [Channel::PlainHttp, Channel::Tls] {
                for registration in [true, false] {
                    let d = decide(policy, channel, Some("3gpp-gba BCAST_Client_ID=AQID"), registration);
                    assert_eq!(d, ClientIdDecision::RefuseChannel);
                }
                let twice = decide(policy, channel, Some("BCAST_Client_ID=x BCAST_Client_ID=y"), true);
                assert_eq!(twice, ClientIdDecision::RefuseChannel);
            }
        }
    }

    #[test]
    fn ignores_the_id_when_told_to_or_off_registration() {
        assert_eq!(
            decide(BcastClientIdPolicy::Ignore, MTLS, Some("BCAST_Client_ID=!!"), true),
            ClientIdDecision::Proceed
        );
        assert_eq!(decide(REQ, MTLS, Some("BCAST_Client_ID=AQID"), false), ClientIdDecision::Proceed);
        assert_eq!(decide(REQ, Channel::PlainHttp, Some("3gpp-gba"), false), ClientIdDecision::Proceed);
    }

    #[test]
    fn rejects_malformed_ids() {
        let malformed = |ua: &str| match decide(REQ, MTLS, Some(ua), true) {
            ClientIdDecision::Malformed(e) => e,
            other => panic!("{ua}: {other:?}"),
        };
        assert_eq!(malformed("BCAST_Client_ID="), ClientIdError::Empty);
        assert_eq!(malformed("BCAST_Client_ID=AQI"), ClientIdError::NotBase64);
        assert_eq!(malformed("BCAST_Client_ID=AQID*A=="), ClientIdError::NotBase64);
        assert_eq!(malformed("BCAST_Client_ID=AQ-_"), ClientIdError::NotBase64);
        assert_eq!(malformed("BCAST_Client_ID=a BCAST_Client_ID=b"), ClientIdError::Repeated);
        let long = format!("BCAST_Client_ID={}", "A".repeat(MAX_CLIENT_ID_BASE64_LEN + 4));
        assert!(matches!(malformed(&long), ClientIdError::TooLong { .. }));
    }

    #[test]
    fn the_longest_id_passes_and_one_more_octet_does_not() {
        let max = STANDARD.encode([7u8; MAX_CLIENT_ID_LEN]);
        assert_eq!(max.len(), MAX_CLIENT_ID_BASE64_LEN);
        assert!(BcastClientId::from_base64(&max).is_ok());
        let over = STANDARD.encode([7u8; MAX_CLIENT_ID_LEN + 1]);
        assert!(matches!(BcastClientId::from_base64(&over), Err(ClientIdError::TooManyOctets { len: 257, .. })));
        assert!(matches!(
            BcastClientId::from_bytes(vec![0; MAX_CLIENT_ID_LEN + 1]),
            Err(ClientIdError::TooManyOctets { len: 257, .. })
        ));
    }

    #[test]
    fn debug_shows_the_tag_not_the_id() {
        let id = BcastClientId::from_bytes(b"IMEI-490154203237518".to_vec()).unwrap();
        let shown = format!("{id:?}");
        assert!(!shown.contains("IMEI") && shown.contains(&id.log_tag()), "{shown}");
        assert_eq!(id.log_tag().len(), 16);
        assert_eq!(BcastClientId::from_base64(&id.to_base64()).unwrap(), id);
    }

    #[test]
    fn policy_config_form_round_trips() {
        for p in [BcastClientIdPolicy::Ignore, BcastClientIdPolicy::Request] {
            assert_eq!(BcastClientIdPolicy::parse(p.as_str()), Some(p));
        }
        assert_eq!(BcastClientIdPolicy::default(), BcastClientIdPolicy::Ignore);
    }
}
