//! Header codecs: `WWW-Authenticate: Digest …`, `Authorization: Digest …` and
//! `Authentication-Info: …` (RFC 2617 §3.2.1–3.2.3, RFC 3310 §3 for `auts`).
//!
//! The functions here take and return the header *value* (the text after `Name:`). Parsing is
//! strict about syntax (RFC 2617 §1.2 / RFC 7230 §3.2.6: token, quoted-string with `\` escapes,
//! comma lists with empty elements) and lenient where clients differ (a value may be a token or a
//! quoted-string; parameter names are case-insensitive). A duplicate parameter is refused;
//! unknown parameters are kept in `other` so that a proxy-like caller loses nothing.
//!
//! One header value holds one challenge: a server that offers several schemes sends several
//! `WWW-Authenticate` lines, and the caller picks the Digest one.
//!
//! Formatting validates what it writes: no value may hold a control character other than HTAB
//! (that would let a header be split), and the result never exceeds [`MAX_HEADER_LEN`], so
//! anything formatted here parses back to the same value.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::borrow::Cow;
use std::fmt;

/// The largest header value, in bytes, that is parsed or produced (8 KiB).
pub const MAX_HEADER_LEN: usize = 8 * 1024;

/// Length of AUTS in octets (TS 33.102 §6.3.3: SQN_MS ⊕ AK (6) ‖ MAC-S (8)); RFC 3310 §3.4
/// carries it base64-encoded in the `auts` parameter.
pub const AUTS_LEN: usize = 14;

/// Why a Digest header was refused (parsing) or could not be written (formatting).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The header value is longer than [`MAX_HEADER_LEN`].
    #[error("header value of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Length of the value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The authentication scheme is not `Digest`.
    #[error("authentication scheme is not Digest")]
    NotDigest,
    /// The value does not follow the auth-param list grammar.
    #[error("syntax error at byte {offset}: expected {expected}")]
    Syntax {
        /// Byte offset into the header value.
        offset: usize,
        /// What the grammar expected there.
        expected: &'static str,
    },
    /// A parameter appears more than once (names compared case-insensitively).
    #[error("parameter `{0}` appears more than once")]
    DuplicateParameter(String),
    /// A required parameter is absent.
    #[error("required parameter `{0}` is missing")]
    MissingParameter(&'static str),
    /// A parameter is present where the other parameters forbid it (e.g. `nc` without `qop`).
    #[error("parameter `{param}` is not allowed here: {reason}")]
    UnexpectedParameter {
        /// The parameter.
        param: &'static str,
        /// Why it is not allowed.
        reason: &'static str,
    },
    /// A parameter's value is malformed.
    #[error("parameter `{param}` has an invalid value: {reason}")]
    InvalidValue {
        /// The parameter (lowercase).
        param: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn invalid(param: &str, reason: &'static str) -> HeaderError {
    HeaderError::InvalidValue { param: param.to_owned(), reason }
}

/// The `algorithm` parameter (RFC 2617 §3.2.1; RFC 3310 §3.1 for `AKAv1-MD5`).
///
/// Names are matched case-insensitively; an unknown algorithm is kept as written so that the
/// caller can decide (a client should then ignore the challenge).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Algorithm {
    /// `MD5`, the RFC 2617 default; used on Ua toward the BSM (profile P-7).
    Md5,
    /// `AKAv1-MD5` (RFC 3310): MD5 Digest with the AKA RES as the password; used on Ub.
    AkaV1Md5,
    /// Any other algorithm, as written (e.g. `MD5-sess`, `SHA-256`); not computable here.
    Unknown(String),
}

impl Algorithm {
    /// The canonical spelling.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::AkaV1Md5 => "AKAv1-MD5",
            Algorithm::Unknown(s) => s,
        }
    }

    /// Reads an algorithm name (case-insensitive for the known ones).
    #[must_use]
    pub fn from_name(name: &str) -> Self {
        if name.eq_ignore_ascii_case("MD5") {
            Algorithm::Md5
        } else if name.eq_ignore_ascii_case("AKAv1-MD5") {
            Algorithm::AkaV1Md5
        } else {
            Algorithm::Unknown(name.to_owned())
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A quality-of-protection value (RFC 2617 §3.2.1). Matched exactly (lowercase), because the
/// value enters the response computation as written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Qop {
    /// `auth`: authentication only.
    Auth,
    /// `auth-int`: authentication plus integrity of the entity body.
    AuthInt,
    /// Any other value, as written; not computable here.
    Unknown(String),
}

impl Qop {
    /// The wire spelling.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
            Qop::Unknown(s) => s,
        }
    }

    /// Reads a qop token.
    #[must_use]
    pub fn from_token(token: &str) -> Self {
        match token {
            "auth" => Qop::Auth,
            "auth-int" => Qop::AuthInt,
            other => Qop::Unknown(other.to_owned()),
        }
    }
}

impl fmt::Display for Qop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The nonce count `nc` (RFC 2617 §3.2.2: `nc-value = 8LHEX`), written as 8 lowercase hex digits
/// (profile P-11.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NonceCount(pub u32);

impl NonceCount {
    /// Parses exactly 8 lowercase hex digits.
    ///
    /// # Errors
    /// [`HeaderError::InvalidValue`] naming `nc`.
    pub fn parse(text: &str) -> Result<Self, HeaderError> {
        let ok = text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(invalid("nc", "expected 8 lowercase hex digits"));
        }
        u32::from_str_radix(text, 16).map(NonceCount).map_err(|_| invalid("nc", "expected 8 lowercase hex digits"))
    }
}

impl NonceCount {
    /// The 8 lowercase hex digits, as [`fmt::Display`] writes them, without formatting machinery
    /// (it goes into every request digest).
    #[must_use]
    pub fn hex(self) -> [u8; 8] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        core::array::from_fn(|i| DIGITS[((self.0 >> (28 - 4 * i)) & 0xf) as usize])
    }
}

impl fmt::Display for NonceCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A parameter this crate does not interpret, kept as (lowercase name, unescaped value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthParam {
    /// Parameter name, lowercase; must be a token.
    pub name: String,
    /// Value with quoted-string escapes removed.
    pub value: String,
}

/// A `WWW-Authenticate: Digest …` challenge (RFC 2617 §3.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm` (required).
    pub realm: String,
    /// `nonce` (required).
    pub nonce: String,
    /// `opaque`, returned unchanged by the client.
    pub opaque: Option<String>,
    /// `algorithm`; absent means MD5 (see [`Challenge::algorithm`]).
    pub algorithm: Option<Algorithm>,
    /// `qop` options offered, in the server's order; empty when the parameter is absent.
    pub qop: Vec<Qop>,
    /// `stale=true`: the previous request was refused only because its nonce was stale.
    pub stale: bool,
    /// Parameters not interpreted here (e.g. `domain`).
    pub other: Vec<AuthParam>,
}

impl Challenge {
    /// The effective algorithm: the `algorithm` parameter, or MD5 when absent (RFC 2617 §3.2.1).
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm.clone().unwrap_or(Algorithm::Md5)
    }

    /// Parses a `WWW-Authenticate` value holding one Digest challenge.
    ///
    /// # Errors
    /// See [`HeaderError`].
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        let mut p = Params::parse(value, true)?;
        let realm = p.take("realm").ok_or(HeaderError::MissingParameter("realm"))?;
        let nonce = p.take("nonce").ok_or(HeaderError::MissingParameter("nonce"))?;
        let opaque = p.take("opaque");
        let algorithm = p.take("algorithm").map(|a| Algorithm::from_name(&a));
        let qop = match p.take("qop") {
            None => Vec::new(),
            Some(list) => parse_qop_list(&list)?,
        };
        let stale = p.take("stale").is_some_and(|s| s.eq_ignore_ascii_case("true"));
        Ok(Challenge { realm, nonce, opaque, algorithm, qop, stale, other: p.rest() })
    }

    /// Formats as a `WWW-Authenticate` value (`Digest realm="…", …`).
    ///
    /// # Errors
    /// [`HeaderError::InvalidValue`] for a value holding a control character or an invalid qop
    /// token, [`HeaderError::DuplicateParameter`] when `other` repeats a name, and
    /// [`HeaderError::TooLong`].
    pub fn to_header_value(&self) -> Result<String, HeaderError> {
        let mut w = Writer::new(true);
        w.quoted("realm", &self.realm)?;
        w.quoted("nonce", &self.nonce)?;
        if let Some(a) = &self.algorithm {
            w.token_or_quoted("algorithm", a.as_str())?;
        }
        if !self.qop.is_empty() {
            for q in &self.qop {
                if !is_token(q.as_str()) {
                    return Err(invalid("qop", "option is not a token"));
                }
            }
            let list: Vec<&str> = self.qop.iter().map(Qop::as_str).collect();
            w.quoted("qop", &list.join(","))?;
        }
        if let Some(o) = &self.opaque {
            w.quoted("opaque", o)?;
        }
        if self.stale {
            w.token_or_quoted("stale", "true")?;
        }
        w.others(&self.other, CHALLENGE_PARAMS)?;
        w.finish()
    }
}

/// An `Authorization: Digest …` credential (RFC 2617 §3.2.2; RFC 3310 §3.4 for `auts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `username`: the IMPI on Ub, the B-TID on Ua.
    pub username: String,
    /// `realm`, as in the challenge.
    pub realm: String,
    /// `nonce`, as in the challenge (empty in the first Ub request, facts-3gpp.md §2.1).
    pub nonce: String,
    /// `uri` (digest-uri): the Request-URI.
    pub uri: String,
    /// `response`: 32 hex digits, or empty in the first Ub request.
    pub response: String,
    /// `algorithm`, as in the challenge.
    pub algorithm: Option<Algorithm>,
    /// `cnonce`; present exactly when `qop` is.
    pub cnonce: Option<String>,
    /// `opaque`, as in the challenge.
    pub opaque: Option<String>,
    /// `qop` chosen by the client.
    pub qop: Option<Qop>,
    /// `nc`; present exactly when `qop` is.
    pub nc: Option<NonceCount>,
    /// `auts` (RFC 3310): the decoded AUTS of a synchronisation failure.
    pub auts: Option<[u8; AUTS_LEN]>,
    /// Parameters not interpreted here.
    pub other: Vec<AuthParam>,
}

impl HeaderError {
    /// A short reason for a 400 answer: names the parameter at fault but echoes no value from
    /// the request.
    #[must_use]
    pub fn reason(&self) -> String {
        match self {
            HeaderError::TooLong { .. } => "Authorization header too long".into(),
            HeaderError::NotDigest => "authentication scheme is not Digest".into(),
            HeaderError::Syntax { .. } => "Authorization header syntax error".into(),
            HeaderError::DuplicateParameter(_) => "duplicate parameter in Authorization".into(),
            HeaderError::MissingParameter(p) => format!("Authorization lacks `{p}`"),
            HeaderError::UnexpectedParameter { param, .. } => format!("unexpected `{param}` in Authorization"),
            HeaderError::InvalidValue { .. } => "invalid parameter value in Authorization".into(),
        }
    }
}

/// The (path, query) of a Request-URI or digest-uri, in origin or absolute form; an empty path
/// after an authority is `/` (RFC 9110 §4.2.3).
fn origin_form(uri: &str) -> (&str, &str) {
    let mut rest = uri;
    for scheme in ["http://", "https://"] {
        if uri.get(..scheme.len()).is_some_and(|s| s.eq_ignore_ascii_case(scheme)) {
            let after = &uri[scheme.len()..];
            rest = after.find(['/', '?']).map_or("", |i| &after[i..]);
        }
    }
    let (path, query) = rest.split_at(rest.find('?').unwrap_or(rest.len()));
    (if path.is_empty() { "/" } else { path }, query)
}

/// Whether a Digest `uri` names the Request-URI (RFC 2617 §3.2.2.5): the same path and query,
/// the absolute and origin forms of one resource counting as the same (the server checks the
/// host through the realm).
#[must_use]
pub fn uri_names_request(digest_uri: &str, request_uri: &str) -> bool {
    !digest_uri.is_empty() && origin_form(digest_uri) == origin_form(request_uri)
}

impl Credentials {
    /// The first Ub request (facts-3gpp.md §2.1 step 1): empty `nonce` and `response`.
    #[must_use]
    pub fn initial(username: &str, realm: &str, uri: &str) -> Self {
        Credentials {
            username: username.to_owned(),
            realm: realm.to_owned(),
            nonce: String::new(),
            uri: uri.to_owned(),
            response: String::new(),
            algorithm: None,
            cnonce: None,
            opaque: None,
            qop: None,
            nc: None,
            auts: None,
            other: Vec::new(),
        }
    }

    /// Parses an `Authorization` value holding Digest credentials.
    ///
    /// # Errors
    /// See [`HeaderError`]. Besides syntax, the parser checks: `response` is empty or 32 hex
    /// digits, `nc` is 8 lowercase hex digits, `auts` is base64 of 14 octets, and `cnonce` and
    /// `nc` are present exactly when `qop` is.
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        let mut p = Params::parse(value, true)?;
        let username = p.take("username").ok_or(HeaderError::MissingParameter("username"))?;
        let realm = p.take("realm").ok_or(HeaderError::MissingParameter("realm"))?;
        let nonce = p.take("nonce").ok_or(HeaderError::MissingParameter("nonce"))?;
        let uri = p.take("uri").ok_or(HeaderError::MissingParameter("uri"))?;
        let response = p.take("response").ok_or(HeaderError::MissingParameter("response"))?;
        if !response.is_empty() && !is_hex32(&response) {
            return Err(invalid("response", "expected 32 hex digits"));
        }
        let algorithm = p.take_str("algorithm").map(|a| Algorithm::from_name(&a));
        let cnonce = p.take("cnonce");
        let opaque = p.take("opaque");
        let qop = p.take_str("qop").map(|q| Qop::from_token(&q));
        let nc = p.take_str("nc").map(|n| NonceCount::parse(&n)).transpose()?;
        let auts = p.take_str("auts").map(|a| decode_auts(&a)).transpose()?;
        check_qop_companions(qop.is_some(), cnonce.is_some(), nc.is_some())?;
        Ok(Credentials {
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm,
            cnonce,
            opaque,
            qop,
            nc,
            auts,
            other: p.rest(),
        })
    }

    /// Formats as an `Authorization` value (`Digest username="…", …`).
    ///
    /// # Errors
    /// As [`Challenge::to_header_value`]; also [`HeaderError::InvalidValue`] for a `response`
    /// that is neither empty nor 32 hex digits, and the `qop`/`cnonce`/`nc` pairing rules.
    pub fn to_header_value(&self) -> Result<String, HeaderError> {
        if !self.response.is_empty() && !is_hex32(&self.response) {
            return Err(invalid("response", "expected 32 hex digits"));
        }
        check_qop_companions(self.qop.is_some(), self.cnonce.is_some(), self.nc.is_some())?;
        let mut w = Writer::new(true);
        w.quoted("username", &self.username)?;
        w.quoted("realm", &self.realm)?;
        w.quoted("nonce", &self.nonce)?;
        w.quoted("uri", &self.uri)?;
        if let Some(q) = &self.qop {
            w.token_or_quoted("qop", q.as_str())?;
        }
        if let Some(nc) = self.nc {
            w.token_or_quoted("nc", &nc.to_string())?;
        }
        if let Some(c) = &self.cnonce {
            w.quoted("cnonce", c)?;
        }
        w.quoted("response", &self.response)?;
        if let Some(o) = &self.opaque {
            w.quoted("opaque", o)?;
        }
        if let Some(a) = &self.algorithm {
            w.token_or_quoted("algorithm", a.as_str())?;
        }
        if let Some(auts) = &self.auts {
            w.quoted("auts", &STANDARD.encode(auts))?;
        }
        w.others(&self.other, CREDENTIAL_PARAMS)?;
        w.finish()
    }
}

/// An `Authentication-Info` value (RFC 2617 §3.2.3). Every field is optional on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthenticationInfo {
    /// `nextnonce`: the nonce the client should use next.
    pub nextnonce: Option<String>,
    /// `qop` the server applied.
    pub qop: Option<Qop>,
    /// `rspauth`: the server's proof (32 hex digits).
    pub rspauth: Option<String>,
    /// `cnonce` echoed from the request.
    pub cnonce: Option<String>,
    /// `nc` echoed from the request.
    pub nc: Option<NonceCount>,
    /// Parameters not interpreted here.
    pub other: Vec<AuthParam>,
}

impl AuthenticationInfo {
    /// Parses an `Authentication-Info` value (no scheme).
    ///
    /// # Errors
    /// See [`HeaderError`]; `rspauth` must be 32 hex digits and `nc` 8 lowercase hex digits.
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        let mut p = Params::parse(value, false)?;
        let nextnonce = p.take("nextnonce");
        let qop = p.take("qop").map(|q| Qop::from_token(&q));
        let rspauth = p.take("rspauth");
        if rspauth.as_deref().is_some_and(|r| !is_hex32(r)) {
            return Err(invalid("rspauth", "expected 32 hex digits"));
        }
        let cnonce = p.take("cnonce");
        let nc = p.take("nc").map(|n| NonceCount::parse(&n)).transpose()?;
        Ok(AuthenticationInfo { nextnonce, qop, rspauth, cnonce, nc, other: p.rest() })
    }

    /// Formats as an `Authentication-Info` value.
    ///
    /// # Errors
    /// As [`Challenge::to_header_value`]; `rspauth` must be 32 hex digits.
    pub fn to_header_value(&self) -> Result<String, HeaderError> {
        if self.rspauth.as_deref().is_some_and(|r| !is_hex32(r)) {
            return Err(invalid("rspauth", "expected 32 hex digits"));
        }
        let mut w = Writer::new(false);
        if let Some(q) = &self.qop {
            w.token_or_quoted("qop", q.as_str())?;
        }
        if let Some(r) = &self.rspauth {
            w.quoted("rspauth", r)?;
        }
        if let Some(c) = &self.cnonce {
            w.quoted("cnonce", c)?;
        }
        let nc_hex = self.nc.map(NonceCount::hex);
        if let Some(hex) = &nc_hex {
            // 8 ASCII hex digits, written without the formatting machinery.
            w.token_or_quoted("nc", std::str::from_utf8(hex).unwrap_or_default())?;
        }
        if let Some(n) = &self.nextnonce {
            w.quoted("nextnonce", n)?;
        }
        w.others(&self.other, AUTH_INFO_PARAMS)?;
        w.finish()
    }
}

const CHALLENGE_PARAMS: &[&str] = &["realm", "nonce", "opaque", "algorithm", "qop", "stale"];
const CREDENTIAL_PARAMS: &[&str] =
    &["username", "realm", "nonce", "uri", "response", "algorithm", "cnonce", "opaque", "qop", "nc", "auts"];
const AUTH_INFO_PARAMS: &[&str] = &["nextnonce", "qop", "rspauth", "cnonce", "nc"];

fn check_qop_companions(qop: bool, cnonce: bool, nc: bool) -> Result<(), HeaderError> {
    // RFC 2617 §3.2.2: cnonce and nc MUST be sent with qop, and MUST NOT be sent without it.
    match (qop, cnonce, nc) {
        (true, false, _) => Err(HeaderError::MissingParameter("cnonce")),
        (true, _, false) => Err(HeaderError::MissingParameter("nc")),
        (false, true, _) => Err(HeaderError::UnexpectedParameter { param: "cnonce", reason: "qop is absent" }),
        (false, _, true) => Err(HeaderError::UnexpectedParameter { param: "nc", reason: "qop is absent" }),
        _ => Ok(()),
    }
}

fn decode_auts(text: &str) -> Result<[u8; AUTS_LEN], HeaderError> {
    let bytes = STANDARD.decode(text).map_err(|_| invalid("auts", "not base64"))?;
    bytes.try_into().map_err(|_| invalid("auts", "AUTS must be 14 octets"))
}

fn parse_qop_list(list: &str) -> Result<Vec<Qop>, HeaderError> {
    let mut out = Vec::new();
    for item in list.split(',') {
        let item = item.trim_matches([' ', '\t']);
        if item.is_empty() {
            continue;
        }
        if !is_token(item) {
            return Err(invalid("qop", "option is not a token"));
        }
        out.push(Qop::from_token(item));
    }
    if out.is_empty() {
        return Err(invalid("qop", "empty option list"));
    }
    Ok(out)
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// RFC 7230 §3.2.6 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// A character that may stand in a quoted-string (qdtext or quoted-pair): anything but a
/// control character, except HTAB.
fn is_quotable(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// The raw parameter list of one header value. Names and values are borrowed from the header
/// where they need no change (a lowercase name, a token, a quoted-string without escapes): a
/// server parses one per request, so only the values taken out are copied.
struct Params<'a> {
    items: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Params<'a> {
    /// Parses `[Digest] #auth-param`, refusing duplicates.
    fn parse(value: &'a str, with_scheme: bool) -> Result<Self, HeaderError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(HeaderError::TooLong { len: value.len(), max: MAX_HEADER_LEN });
        }
        let b = value.as_bytes();
        let mut pos = skip_ows(b, 0);
        if with_scheme {
            let end = pos + b[pos..].iter().take_while(|&&c| is_tchar(c)).count();
            if !value[pos..end].eq_ignore_ascii_case("Digest") {
                return Err(HeaderError::NotDigest);
            }
            pos = end;
            if pos < b.len() && !matches!(b[pos], b' ' | b'\t') {
                return Err(HeaderError::Syntax { offset: pos, expected: "whitespace after the scheme" });
            }
        }
        // The Digest parameters of RFC 2617 number at most 11 in a header.
        let mut items: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::with_capacity(12);
        pos = skip_ows(b, pos);
        while pos < b.len() {
            if b[pos] == b',' {
                pos = skip_ows(b, pos + 1);
                continue;
            }
            let start = pos;
            pos += b[pos..].iter().take_while(|&&c| is_tchar(c)).count();
            if pos == start {
                return Err(HeaderError::Syntax { offset: pos, expected: "parameter name" });
            }
            let name = &value[start..pos];
            let name = if name.bytes().any(|c| c.is_ascii_uppercase()) {
                Cow::Owned(name.to_ascii_lowercase())
            } else {
                Cow::Borrowed(name)
            };
            pos = skip_ows(b, pos);
            if b.get(pos) != Some(&b'=') {
                return Err(HeaderError::Syntax { offset: pos, expected: "`=`" });
            }
            pos = skip_ows(b, pos + 1);
            let (val, next) = if b.get(pos) == Some(&b'"') {
                read_quoted(value, pos)?
            } else {
                let end = pos + b[pos..].iter().take_while(|&&c| is_tchar(c)).count();
                if end == pos {
                    return Err(HeaderError::Syntax { offset: pos, expected: "token or quoted-string" });
                }
                (Cow::Borrowed(&value[pos..end]), end)
            };
            pos = skip_ows(b, next);
            if pos < b.len() && b[pos] != b',' {
                return Err(HeaderError::Syntax { offset: pos, expected: "`,`" });
            }
            if items.iter().any(|(n, _)| *n == name) {
                return Err(HeaderError::DuplicateParameter(name.into_owned()));
            }
            items.push((name, val));
        }
        Ok(Params { items })
    }

    fn take(&mut self, name: &str) -> Option<String> {
        self.take_str(name).map(Cow::into_owned)
    }

    /// [`Self::take`] without the copy, for values that are decoded at once.
    fn take_str(&mut self, name: &str) -> Option<Cow<'a, str>> {
        self.items.iter().position(|(n, _)| n == name).map(|i| self.items.remove(i).1)
    }

    fn rest(self) -> Vec<AuthParam> {
        self.items
            .into_iter()
            .map(|(name, value)| AuthParam { name: name.into_owned(), value: value.into_owned() })
            .collect()
    }
}

fn skip_ows(b: &[u8], mut pos: usize) -> usize {
    while pos < b.len() && matches!(b[pos], b' ' | b'\t') {
        pos += 1;
    }
    pos
}

/// Reads a quoted-string starting at the opening quote; returns the unescaped text (borrowed
/// when it holds no escape) and the offset after the closing quote.
fn read_quoted(value: &str, open: usize) -> Result<(Cow<'_, str>, usize), HeaderError> {
    let b = value.as_bytes();
    // The usual case first: no backslash before the closing quote, so the text is the slice.
    let mut pos = open + 1;
    while let Some(&c) = b.get(pos) {
        match c {
            b'"' => return Ok((Cow::Borrowed(&value[open + 1..pos]), pos + 1)),
            b'\\' => break,
            c if is_quotable(c) => pos += 1,
            _ => return Err(HeaderError::Syntax { offset: pos, expected: "no control character" }),
        }
    }
    let mut out = Vec::new();
    let mut pos = open + 1;
    loop {
        match b.get(pos) {
            None => return Err(HeaderError::Syntax { offset: pos, expected: "closing `\"`" }),
            Some(b'"') => break,
            Some(b'\\') => match b.get(pos + 1) {
                Some(&c) if is_quotable(c) => {
                    out.push(c);
                    pos += 2;
                }
                _ => return Err(HeaderError::Syntax { offset: pos + 1, expected: "escaped character" }),
            },
            Some(&c) if is_quotable(c) => {
                out.push(c);
                pos += 1;
            }
            Some(_) => return Err(HeaderError::Syntax { offset: pos, expected: "no control character" }),
        }
    }
    // Only ASCII backslashes were removed from valid UTF-8, so the bytes stay valid UTF-8; the
    // error arm is kept rather than an unwrap so that no input can panic.
    let text = String::from_utf8(out).map_err(|_| HeaderError::Syntax { offset: open, expected: "UTF-8 text" })?;
    Ok((Cow::Owned(text), pos + 1))
}

/// Writes an auth-param list and checks each value.
struct Writer<'a> {
    out: String,
    first: bool,
    /// The names written so far (borrowed: a server writes a header per request).
    names: Vec<&'a str>,
}

impl<'a> Writer<'a> {
    fn new(with_scheme: bool) -> Self {
        // Room for the usual header (an `Authentication-Info` is ≈ 100 octets, a challenge ≈ 150).
        let mut out = String::with_capacity(256);
        if with_scheme {
            out.push_str("Digest ");
        }
        Writer { out, first: true, names: Vec::with_capacity(12) }
    }

    fn start(&mut self, name: &'a str, value: &str) -> Result<(), HeaderError> {
        if value.bytes().any(|c| !is_quotable(c)) {
            return Err(invalid(name, "control character"));
        }
        if self.names.contains(&name) {
            return Err(HeaderError::DuplicateParameter(name.to_owned()));
        }
        self.names.push(name);
        if !self.first {
            self.out.push_str(", ");
        }
        self.first = false;
        self.out.push_str(name);
        self.out.push('=');
        Ok(())
    }

    fn quoted(&mut self, name: &'a str, value: &str) -> Result<(), HeaderError> {
        self.start(name, value)?;
        self.out.push('"');
        for c in value.chars() {
            if c == '"' || c == '\\' {
                self.out.push('\\');
            }
            self.out.push(c);
        }
        self.out.push('"');
        Ok(())
    }

    fn token_or_quoted(&mut self, name: &'a str, value: &str) -> Result<(), HeaderError> {
        if is_token(value) {
            self.start(name, value)?;
            self.out.push_str(value);
            Ok(())
        } else {
            self.quoted(name, value)
        }
    }

    fn others(&mut self, others: &'a [AuthParam], known: &[&str]) -> Result<(), HeaderError> {
        for p in others {
            if !is_token(&p.name) || p.name.bytes().any(|c| c.is_ascii_uppercase()) {
                return Err(invalid(&p.name, "parameter name is not a lowercase token"));
            }
            if known.contains(&p.name.as_str()) {
                return Err(HeaderError::DuplicateParameter(p.name.clone()));
            }
            self.quoted(&p.name, &p.value)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<String, HeaderError> {
        if self.out.len() > MAX_HEADER_LEN {
            return Err(HeaderError::TooLong { len: self.out.len(), max: MAX_HEADER_LEN });
        }
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_ub_challenge() {
        // facts-3gpp.md §2.1 step 2, with the nonce of vectors.md §2.
        let c = Challenge::parse(
            "Digest realm=\"bsf.example.org\", nonce=\"I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M=\", \
             algorithm=AKAv1-MD5, qop=\"auth-int\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert_eq!(c.realm, "bsf.example.org");
        assert_eq!(c.nonce, "I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M=");
        assert_eq!(c.algorithm, Some(Algorithm::AkaV1Md5));
        assert_eq!(c.qop, vec![Qop::AuthInt]);
        assert_eq!(c.opaque.as_deref(), Some("5ccc069c403ebaf9f0171e9517f40e41"));
        assert!(!c.stale);
    }

    #[test]
    fn parses_ua_challenge_with_qop_list() {
        // facts-3gpp.md §1.6 / §3.3.
        let c = Challenge::parse(
            "digest  REALM=\"3GPP-bootstrapping@bmsc.example.org\" ,nonce=\"abc\",algorithm=md5, \
             qop=\"auth, auth-int,,x-new\", stale=TRUE, domain=\"/keymanagement\"",
        )
        .unwrap();
        assert_eq!(c.realm, "3GPP-bootstrapping@bmsc.example.org");
        assert_eq!(c.algorithm(), Algorithm::Md5);
        assert_eq!(c.qop, vec![Qop::Auth, Qop::AuthInt, Qop::Unknown("x-new".into())]);
        assert!(c.stale);
        assert_eq!(c.other, vec![AuthParam { name: "domain".into(), value: "/keymanagement".into() }]);
    }

    #[test]
    fn parses_quoted_pairs_and_empty_elements() {
        let c = Challenge::parse(r#"Digest ,, realm="a \"b\" \\ c" , nonce="" ,"#).unwrap();
        assert_eq!(c.realm, r#"a "b" \ c"#);
        assert_eq!(c.nonce, "");
    }

    #[test]
    fn parses_ub_initial_and_resync_credentials() {
        let c = Credentials::parse(
            "Digest username=\"001010000000001@ims.mnc001.mcc001.3gppnetwork.org\", realm=\"bsf.example.org\", \
             nonce=\"\", uri=\"/\", response=\"\"",
        )
        .unwrap();
        assert_eq!(
            c,
            Credentials::initial("001010000000001@ims.mnc001.mcc001.3gppnetwork.org", "bsf.example.org", "/")
        );

        let auts = [0x45, 0x1e, 0x8b, 0xec, 0xa4, 0x1a, 0x80, 0x12, 0x5e, 0xca, 0x88, 0x84, 0xb5, 0x6a];
        let text = format!(
            "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"/\", qop=auth-int, nc=00000001, \
             cnonce=\"c\", response=\"78486094df22fe6ec39138ac4d2d6e8d\", auts=\"{}\"",
            STANDARD.encode(auts)
        );
        let c = Credentials::parse(&text).unwrap();
        assert_eq!(c.auts, Some(auts));
        assert_eq!(c.nc, Some(NonceCount(1)));
        assert_eq!(c.qop, Some(Qop::AuthInt));
    }

    #[test]
    fn parses_authentication_info() {
        let i = AuthenticationInfo::parse(
            "qop=auth-int, rspauth=\"6629fae49393a05397450978507c4ef1\", cnonce=\"0a4f113b\", nc=00000001, \
             nextnonce=\"n2\"",
        )
        .unwrap();
        assert_eq!(i.qop, Some(Qop::AuthInt));
        assert_eq!(i.nc, Some(NonceCount(1)));
        assert_eq!(i.nextnonce.as_deref(), Some("n2"));
    }

    #[test]
    fn formats_like_the_examples() {
        let c = Challenge {
            realm: "3GPP-bootstrapping@bmsc.example.org".into(),
            nonce: "n".into(),
            opaque: Some("o".into()),
            algorithm: Some(Algorithm::Md5),
            qop: vec![Qop::Auth, Qop::AuthInt],
            stale: false,
            other: vec![],
        };
        assert_eq!(
            c.to_header_value().unwrap(),
            "Digest realm=\"3GPP-bootstrapping@bmsc.example.org\", nonce=\"n\", algorithm=MD5, \
             qop=\"auth,auth-int\", opaque=\"o\""
        );
    }

    #[test]
    fn rejects_duplicates_case_insensitively() {
        let e = Challenge::parse("Digest realm=\"a\", nonce=\"n\", Realm=\"b\"").unwrap_err();
        assert_eq!(e, HeaderError::DuplicateParameter("realm".into()));
        let e = Challenge::parse("Digest realm=\"a\", nonce=\"n\", x=1, X=2").unwrap_err();
        assert_eq!(e, HeaderError::DuplicateParameter("x".into()));
    }

    #[test]
    fn rejects_missing_required() {
        assert_eq!(Challenge::parse("Digest nonce=\"n\""), Err(HeaderError::MissingParameter("realm")));
        assert_eq!(
            Credentials::parse("Digest username=\"u\", realm=\"r\", nonce=\"n\", response=\"\""),
            Err(HeaderError::MissingParameter("uri"))
        );
    }

    #[test]
    fn rejects_other_schemes() {
        assert_eq!(Challenge::parse("Basic realm=\"a\""), Err(HeaderError::NotDigest));
        assert_eq!(Challenge::parse("Digestrealm=\"a\""), Err(HeaderError::NotDigest));
        assert_eq!(Challenge::parse(""), Err(HeaderError::NotDigest));
    }

    #[test]
    fn rejects_syntax_errors() {
        for bad in [
            "Digest realm=\"a",
            "Digest realm=\"a\" nonce=\"n\"",
            "Digest realm",
            "Digest realm=",
            "Digest =\"a\"",
            "Digest realm=\"a\rb\", nonce=\"n\"",
            "Digest realm=\"a\\\n\", nonce=\"n\"",
            "Digest realm=a/b, nonce=n",
        ] {
            assert!(matches!(Challenge::parse(bad), Err(HeaderError::Syntax { .. })), "{bad:?}");
        }
    }

    #[test]
    fn rejects_bad_values() {
        let base = "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"/\"";
        let cases = [
            (format!("{base}, response=\"abc\""), "response"),
            (format!("{base}, response=\"\", qop=auth, cnonce=\"c\", nc=0000000G"), "nc"),
            (format!("{base}, response=\"\", qop=auth, cnonce=\"c\", nc=0000000A"), "nc"),
            (format!("{base}, response=\"\", qop=auth, cnonce=\"c\", nc=1"), "nc"),
            (format!("{base}, response=\"\", auts=\"!!\""), "auts"),
            (format!("{base}, response=\"\", auts=\"AAAA\""), "auts"),
        ];
        for (text, param) in cases {
            match Credentials::parse(&text) {
                Err(HeaderError::InvalidValue { param: p, .. }) => assert_eq!(p, param, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert_eq!(
            Credentials::parse(&format!("{base}, response=\"\", qop=auth, nc=00000001")),
            Err(HeaderError::MissingParameter("cnonce"))
        );
        assert_eq!(
            Credentials::parse(&format!("{base}, response=\"\", nc=00000001")),
            Err(HeaderError::UnexpectedParameter { param: "nc", reason: "qop is absent" })
        );
        assert!(matches!(
            AuthenticationInfo::parse("rspauth=\"zz\""),
            Err(HeaderError::InvalidValue { param, .. }) if param == "rspauth"
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth int\""),
            Err(HeaderError::InvalidValue { param, .. }) if param == "qop"
        ));
    }

    #[test]
    fn rejects_a_second_challenge_in_one_value() {
        // One challenge per header value; a server offering several schemes sends several
        // WWW-Authenticate lines.
        assert!(matches!(
            Challenge::parse("Digest realm=\"a\", nonce=\"n\", Basic realm=\"b\""),
            Err(HeaderError::Syntax { expected: "`=`", .. })
        ));
    }

    #[test]
    fn rejects_overlong_headers() {
        let long = format!("Digest realm=\"{}\", nonce=\"n\"", "a".repeat(MAX_HEADER_LEN));
        assert!(matches!(Challenge::parse(&long), Err(HeaderError::TooLong { .. })));
        let c = Challenge {
            realm: "a".repeat(MAX_HEADER_LEN),
            nonce: String::new(),
            opaque: None,
            algorithm: None,
            qop: vec![],
            stale: false,
            other: vec![],
        };
        assert!(matches!(c.to_header_value(), Err(HeaderError::TooLong { .. })));
    }

    #[test]
    fn refuses_to_format_header_injection() {
        let mut c = Credentials::initial("u\r\nX-Evil: 1", "r", "/");
        assert!(matches!(c.to_header_value(), Err(HeaderError::InvalidValue { param, .. }) if param == "username"));
        c.username = "u".into();
        c.other.push(AuthParam { name: "realm".into(), value: "x".into() });
        assert_eq!(c.to_header_value(), Err(HeaderError::DuplicateParameter("realm".into())));
        c.other = vec![AuthParam { name: "a b".into(), value: "x".into() }];
        assert!(c.to_header_value().is_err());
    }

    fn text() -> impl Strategy<Value = String> {
        "[ -~\t\u{e9}\u{4e2d}]{0,24}"
    }

    fn others(known: &'static [&'static str]) -> impl Strategy<Value = Vec<AuthParam>> {
        proptest::collection::btree_map("[a-z][a-z0-9_-]{0,8}", text(), 0..3).prop_map(move |m| {
            m.into_iter()
                .filter(|(n, _)| !known.contains(&n.as_str()))
                .map(|(name, value)| AuthParam { name, value })
                .collect()
        })
    }

    fn qop() -> impl Strategy<Value = Qop> {
        prop_oneof![Just(Qop::Auth), Just(Qop::AuthInt), "x-[a-z]{1,6}".prop_map(Qop::Unknown)]
    }

    fn algorithm() -> impl Strategy<Value = Algorithm> {
        prop_oneof![Just(Algorithm::Md5), Just(Algorithm::AkaV1Md5), "[A-Z]{1,3}-sess".prop_map(Algorithm::Unknown)]
    }

    prop_compose! {
        fn challenge()(realm in text(), nonce in text(), opaque in proptest::option::of(text()),
                       algorithm in proptest::option::of(algorithm()), qop in proptest::collection::vec(qop(), 0..3),
                       stale: bool, other in others(CHALLENGE_PARAMS)) -> Challenge {
            Challenge { realm, nonce, opaque, algorithm, qop, stale, other }
        }
    }

    prop_compose! {
        fn credentials()(username in text(), realm in text(), nonce in text(), uri in text(),
                         response in prop_oneof![Just(String::new()), "[0-9a-f]{32}"],
                         algorithm in proptest::option::of(algorithm()), opaque in proptest::option::of(text()),
                         qop_part in proptest::option::of((qop(), any::<u32>(), text())),
                         auts in proptest::option::of(any::<[u8; AUTS_LEN]>()),
                         other in others(CREDENTIAL_PARAMS)) -> Credentials {
            let (qop, nc, cnonce) = match qop_part {
                Some((q, n, c)) => (Some(q), Some(NonceCount(n)), Some(c)),
                None => (None, None, None),
            };
            Credentials { username, realm, nonce, uri, response, algorithm, cnonce, opaque, qop, nc, auts, other }
        }
    }

    prop_compose! {
        fn auth_info()(nextnonce in proptest::option::of(text()), qop in proptest::option::of(qop()),
                       rspauth in proptest::option::of("[0-9a-f]{32}"), cnonce in proptest::option::of(text()),
                       nc in proptest::option::of(any::<u32>()), other in others(AUTH_INFO_PARAMS)) -> AuthenticationInfo {
            AuthenticationInfo { nextnonce, qop, rspauth, cnonce, nc: nc.map(NonceCount), other }
        }
    }

    proptest! {
        #[test]
        fn challenge_round_trips(c in challenge()) {
            let text = c.to_header_value().unwrap();
            prop_assert_eq!(Challenge::parse(&text), Ok(c));
        }

        #[test]
        fn credentials_round_trip(c in credentials()) {
            let text = c.to_header_value().unwrap();
            prop_assert_eq!(Credentials::parse(&text), Ok(c));
        }

        #[test]
        fn authentication_info_round_trips(i in auth_info()) {
            let text = i.to_header_value().unwrap();
            prop_assert_eq!(AuthenticationInfo::parse(&text), Ok(i));
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,200}") {
            let _ = Challenge::parse(&s);
            let _ = Credentials::parse(&s);
            let _ = AuthenticationInfo::parse(&s);
        }

        #[test]
        fn digest_prefixed_noise_never_panics(s in "[ -~\t\r\n\u{80}-\u{10ffff}]{0,200}") {
            let _ = Challenge::parse(&format!("Digest {s}"));
            let _ = Credentials::parse(&format!("Digest realm=\"{s}"));
            let _ = AuthenticationInfo::parse(&s);
        }
    }

    #[test]
    fn uri_names_the_request_in_origin_or_absolute_form() {
        assert!(uri_names_request("/", "/"));
        assert!(uri_names_request("http://bsf.example.org/", "/"));
        assert!(uri_names_request("HTTPS://bsf.example.org:8080/", "/"));
        assert!(uri_names_request("http://bsf.example.org", "/"));
        assert!(uri_names_request("/", "http://bsf.example.org/"));
        assert!(uri_names_request("/sprov?x=1", "/sprov?x=1"));
        assert!(uri_names_request("http://bmsc.example.org?a", "/?a"));
        assert!(!uri_names_request("/other", "/"));
        assert!(!uri_names_request("http://bsf.example.org/x", "/"));
        assert!(!uri_names_request("/sprov?x=2", "/sprov?x=1"));
        assert!(!uri_names_request("", "/"));
        assert!(!uri_names_request("?a", "/a"));
    }

    #[test]
    fn header_error_reasons_echo_no_value() {
        let e = Credentials::parse("Digest username=\"secret-user\", username=\"x\"").unwrap_err();
        assert!(!e.reason().contains("secret-user"), "{}", e.reason());
        assert_eq!(HeaderError::NotDigest.reason(), "authentication scheme is not Digest");
    }
}
