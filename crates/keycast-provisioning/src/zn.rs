//! Zn, the interface on which a NAF (the BSM) asks the BSF for the NAF keys of a B-TID, in
//! Keycast's own wire form \[chosen\]: TS 29.109 carries Zn over Diameter or SOAP; Keycast uses
//! one JSON request/answer over HTTP(S) with the same content (TS 33.220 §4.5.3: B-TID and NAF_Id
//! in; Ks_(ext/int)_NAF, IMPI, bootstrapping time and key lifetime out).
//!
//! ```text
//! POST /zn/v1/naf-keys   {"btid": "...", "naf_id": base64(NAF FQDN ‖ Ua security protocol id), "gba_u_aware": true}
//! 200 {"impi", "gba_type": "gba-me"|"gba-u", "bootstrapped_at", "lifetime",
//!      "ks_naf" | "ks_ext_naf" [+ "ks_int_naf" for a GBA_U-aware NAF]}   (keys base64, times RFC 3339)
//! 4xx/5xx {"error": code, ["lifetime"], ["detail"]}
//! ```
//!
//! The error codes and their statuses are the `ERROR_*` constants. The server is
//! keycast-gba's BSF; the clients are keycast-bsm's Zn client and the demo. Keys travel in
//! zeroizing buffers and never appear in `Debug` output.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize};
use zeroize::Zeroizing;

use crate::time::UtcTime;

/// The Zn key request path.
pub const PATH: &str = "/zn/v1/naf-keys";
/// 404: the B-TID names no bootstrapping session.
pub const ERROR_UNKNOWN_BTID: &str = "unknown-btid";
/// 410: the session's key lifetime is over (`lifetime` says when it ended).
pub const ERROR_EXPIRED: &str = "expired";
/// 403: the NAF is not authorised for Zn.
pub const ERROR_UNKNOWN_NAF: &str = "unknown-naf";
/// 403: the NAF asked for another NAF's keys.
pub const ERROR_NAF_MISMATCH: &str = "naf-mismatch";
/// 401: no or a wrong credential.
pub const ERROR_UNAUTHENTICATED: &str = "unauthenticated";
/// 400: the request is not a Zn key request (`detail` says why).
pub const ERROR_MALFORMED: &str = "malformed";
/// 413: the request body is too large.
pub const ERROR_TOO_LARGE: &str = "too-large";
/// 500: the BSF failed.
pub const ERROR_INTERNAL: &str = "internal";

/// Longest accepted IMPI (an NAI, RFC 7542, is at most 253 octets).
const MAX_IMPI_LEN: usize = 255;

/// A Zn answer or request that does not follow the wire form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZnWireError {
    /// Not JSON of the expected shape.
    #[error("Zn body is not a {0}")]
    Shape(&'static str),
    /// A member holds a wrong value.
    #[error("Zn member `{member}`: {reason}")]
    Value {
        /// The member.
        member: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A NAF's key request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRequest {
    /// The B-TID the terminal presented.
    pub btid: String,
    /// NAF_Id: the NAF FQDN ‖ the 5-octet Ua security protocol identifier.
    pub naf_id: Vec<u8>,
    /// Whether the NAF is GBA_U-aware (it then gets Ks_int_NAF too).
    pub gba_u_aware: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestJson {
    btid: String,
    naf_id: String,
    #[serde(default)]
    gba_u_aware: bool,
}

impl KeyRequest {
    /// The JSON body.
    #[must_use]
    pub fn to_json(&self) -> String {
        let json = RequestJson {
            btid: self.btid.clone(),
            naf_id: STANDARD.encode(&self.naf_id),
            gba_u_aware: self.gba_u_aware,
        };
        // Strings and a bool always serialise.
        serde_json::to_string(&json).unwrap_or_default()
    }

    /// Reads a request body.
    ///
    /// # Errors
    /// [`ZnWireError`].
    pub fn from_json(body: &[u8]) -> Result<Self, ZnWireError> {
        let json: RequestJson =
            serde_json::from_slice(body).map_err(|_| ZnWireError::Shape("{\"btid\", \"naf_id\", \"gba_u_aware\"}"))?;
        let naf_id = STANDARD
            .decode(json.naf_id.as_bytes())
            .map_err(|_| ZnWireError::Value { member: "naf_id", reason: "not base64" })?;
        Ok(KeyRequest { btid: json.btid, naf_id, gba_u_aware: json.gba_u_aware })
    }

    /// The NAF FQDN inside NAF_Id (all but its last 5 octets), when it is non-empty UTF-8.
    #[must_use]
    pub fn naf_fqdn(&self) -> Option<&str> {
        let n = self.naf_id.len().checked_sub(5)?;
        core::str::from_utf8(&self.naf_id[..n]).ok().filter(|f| !f.is_empty())
    }
}

/// A 32-byte NAF key in a zeroizing buffer; prints as `NafKey(…)`.
#[derive(Clone, PartialEq, Eq)]
pub struct NafKey(Zeroizing<[u8; 32]>);

impl core::fmt::Debug for NafKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NafKey(…)")
    }
}

impl NafKey {
    /// The key from its bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        NafKey(Zeroizing::new(bytes))
    }

    /// The key bytes (handle with care).
    #[must_use]
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(&self.0[..]))
    }

    fn from_base64(text: &SecretText, member: &'static str) -> Result<Self, ZnWireError> {
        let bytes = Zeroizing::new(
            STANDARD.decode(text.0.as_bytes()).map_err(|_| ZnWireError::Value { member, reason: "not base64" })?,
        );
        let key: [u8; 32] = bytes[..].try_into().map_err(|_| ZnWireError::Value { member, reason: "not 32 bytes" })?;
        Ok(NafKey::from_bytes(key))
    }
}

/// The NAF keys of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NafKeys {
    /// A GBA_ME session: Ks_NAF.
    Me {
        /// Ks_NAF.
        ks_naf: NafKey,
    },
    /// A GBA_U session: Ks_ext_NAF, and Ks_int_NAF for a GBA_U-aware NAF.
    U {
        /// Ks_ext_NAF.
        ks_ext_naf: NafKey,
        /// Ks_int_NAF.
        ks_int_naf: Option<NafKey>,
    },
}

/// A 200 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAnswer {
    /// The subscriber's IMPI.
    pub impi: String,
    /// When the session was bootstrapped.
    pub bootstrapped_at: UtcTime,
    /// When its keys expire.
    pub lifetime: UtcTime,
    /// The keys (their variant is the GBA type: `gba-me` or `gba-u` on the wire).
    pub keys: NafKeys,
}

/// A string member whose value is secret: zeroized on drop.
struct SecretText(Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| SecretText(Zeroizing::new(s)))
    }
}

#[derive(Deserialize)]
struct AnswerJson {
    impi: String,
    gba_type: String,
    bootstrapped_at: String,
    lifetime: String,
    ks_naf: Option<SecretText>,
    ks_ext_naf: Option<SecretText>,
    ks_int_naf: Option<SecretText>,
}

fn time(text: &str, member: &'static str) -> Result<UtcTime, ZnWireError> {
    UtcTime::parse_rfc3339(text).map_err(|_| ZnWireError::Value { member, reason: "not an RFC 3339 time" })
}

/// Escapes a string as a JSON string literal.
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

impl KeyAnswer {
    /// `"gba-me"` or `"gba-u"`.
    #[must_use]
    pub fn gba_type(&self) -> &'static str {
        match self.keys {
            NafKeys::Me { .. } => "gba-me",
            NafKeys::U { .. } => "gba-u",
        }
    }

    /// The JSON body, in a zeroizing buffer (it holds keys).
    #[must_use]
    pub fn to_json(&self) -> Zeroizing<String> {
        // Built by hand so that the keys never sit in a non-zeroizing serde_json value.
        let mut out = Zeroizing::new(format!(
            "{{\"impi\":{},\"gba_type\":\"{}\",\"bootstrapped_at\":\"{}\",\"lifetime\":\"{}\"",
            json_string(&self.impi),
            self.gba_type(),
            self.bootstrapped_at,
            self.lifetime
        ));
        let mut member = |name: &str, key: &NafKey| {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":\"");
            out.push_str(&key.to_base64());
            out.push('"');
        };
        match &self.keys {
            NafKeys::Me { ks_naf } => member("ks_naf", ks_naf),
            NafKeys::U { ks_ext_naf, ks_int_naf } => {
                member("ks_ext_naf", ks_ext_naf);
                if let Some(k) = ks_int_naf {
                    member("ks_int_naf", k);
                }
            }
        }
        out.push('}');
        out
    }

    /// Reads a 200 body.
    ///
    /// # Errors
    /// [`ZnWireError`]: not the answer's shape, an IMPI that is empty, over 255 octets or holds
    /// control characters, a time that is not RFC 3339, keys that are not 32 bytes of base64 or do
    /// not match `gba_type`.
    pub fn from_json(body: &[u8]) -> Result<Self, ZnWireError> {
        let a: AnswerJson = serde_json::from_slice(body).map_err(|_| ZnWireError::Shape("Zn key answer"))?;
        if a.impi.is_empty() || a.impi.len() > MAX_IMPI_LEN || a.impi.chars().any(char::is_control) {
            return Err(ZnWireError::Value { member: "impi", reason: "empty, too long or holds control characters" });
        }
        let keys = match (a.gba_type.as_str(), &a.ks_naf, &a.ks_ext_naf, &a.ks_int_naf) {
            ("gba-me", Some(naf), None, None) => NafKeys::Me { ks_naf: NafKey::from_base64(naf, "ks_naf")? },
            ("gba-u", None, Some(ext), int) => NafKeys::U {
                ks_ext_naf: NafKey::from_base64(ext, "ks_ext_naf")?,
                ks_int_naf: int.as_ref().map(|k| NafKey::from_base64(k, "ks_int_naf")).transpose()?,
            },
            _ => return Err(ZnWireError::Value { member: "gba_type", reason: "keys do not match the GBA type" }),
        };
        Ok(KeyAnswer {
            bootstrapped_at: time(&a.bootstrapped_at, "bootstrapped_at")?,
            lifetime: time(&a.lifetime, "lifetime")?,
            impi: a.impi,
            keys,
        })
    }
}

/// A refusal (any status but 200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// One of the `ERROR_*` codes.
    pub error: String,
    /// For [`ERROR_EXPIRED`]: when the keys expired (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<String>,
    /// For [`ERROR_MALFORMED`]: what is wrong with the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Refusal {
    /// A refusal with this code.
    #[must_use]
    pub fn new(error: &str) -> Self {
        Refusal { error: error.to_owned(), lifetime: None, detail: None }
    }

    /// The JSON body.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Strings and options of strings always serialise.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a refusal body; `None` when it is not one (e.g. a proxy's HTML page).
    #[must_use]
    pub fn from_json(body: &[u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }

    /// [`Refusal::lifetime`] as a time.
    #[must_use]
    pub fn lifetime(&self) -> Option<UtcTime> {
        self.lifetime.as_deref().and_then(|l| UtcTime::parse_rfc3339(l).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> UtcTime {
        UtcTime::from_unix_seconds(secs).unwrap()
    }

    #[test]
    fn request_round_trip_and_naf_fqdn() {
        let mut naf_id = b"bmsc.example.org".to_vec();
        naf_id.extend_from_slice(&[1, 0, 0, 0, 1]);
        let r = KeyRequest { btid: "x@bsf".into(), naf_id, gba_u_aware: true };
        assert_eq!(KeyRequest::from_json(r.to_json().as_bytes()).unwrap(), r);
        assert_eq!(r.naf_fqdn(), Some("bmsc.example.org"));
        assert_eq!(KeyRequest { naf_id: vec![1, 0, 0, 0, 1], ..r.clone() }.naf_fqdn(), None);
        let defaulted = KeyRequest::from_json(br#"{"btid":"b","naf_id":"AQ=="}"#).unwrap();
        assert!(!defaulted.gba_u_aware);
        assert!(KeyRequest::from_json(br#"{"btid":"b","naf_id":"AQ==","x":1}"#).is_err(), "unknown members");
        assert!(matches!(KeyRequest::from_json(br#"{"btid":"b","naf_id":"**"}"#), Err(ZnWireError::Value { .. })));
    }

    #[test]
    fn answers_round_trip_for_both_gba_types() {
        let me = KeyAnswer {
            impi: "a@\"x\"".into(),
            bootstrapped_at: t(1_767_225_600),
            lifetime: t(1_767_312_000),
            keys: NafKeys::Me { ks_naf: NafKey::from_bytes([7; 32]) },
        };
        assert_eq!(KeyAnswer::from_json(me.to_json().as_bytes()).unwrap(), me);
        let u = KeyAnswer {
            keys: NafKeys::U { ks_ext_naf: NafKey::from_bytes([1; 32]), ks_int_naf: Some(NafKey::from_bytes([2; 32])) },
            ..me.clone()
        };
        assert_eq!(KeyAnswer::from_json(u.to_json().as_bytes()).unwrap().gba_type(), "gba-u");
        assert_eq!(KeyAnswer::from_json(u.to_json().as_bytes()).unwrap(), u);
        assert!(!format!("{u:?}").contains("1, 1"), "keys never print");
    }

    #[test]
    fn answers_with_wrong_keys_are_refused() {
        let body = |extra: &str| {
            format!(
                r#"{{"impi":"a","gba_type":"gba-me","bootstrapped_at":"2026-01-01T00:00:00Z","lifetime":"2026-01-02T00:00:00Z"{extra}}}"#
            )
        };
        let key = STANDARD.encode([3u8; 32]);
        assert!(KeyAnswer::from_json(body(&format!(r#","ks_naf":"{key}""#)).as_bytes()).is_ok());
        assert!(KeyAnswer::from_json(body("").as_bytes()).is_err(), "no key");
        assert!(KeyAnswer::from_json(body(&format!(r#","ks_ext_naf":"{key}""#)).as_bytes()).is_err(), "U key for ME");
        let short = STANDARD.encode([3u8; 16]);
        assert!(KeyAnswer::from_json(body(&format!(r#","ks_naf":"{short}""#)).as_bytes()).is_err(), "16 bytes");
        assert!(KeyAnswer::from_json(b"<html>").is_err());
    }

    #[test]
    fn refusals() {
        let mut r = Refusal::new(ERROR_EXPIRED);
        r.lifetime = Some(t(1_767_225_600).to_string());
        let again = Refusal::from_json(r.to_json().as_bytes()).unwrap();
        assert_eq!(again.lifetime(), Some(t(1_767_225_600)));
        assert_eq!(Refusal::new(ERROR_UNKNOWN_BTID).to_json(), r#"{"error":"unknown-btid"}"#);
        assert_eq!(Refusal::from_json(b"<html>"), None);
    }
}
