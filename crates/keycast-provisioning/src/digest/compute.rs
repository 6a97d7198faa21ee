//! The Digest computation: HA1, HA2, the request digest (`response`) and `rspauth`
//! (RFC 2617 §3.2.2.1–3.2.2.3 and §3.2.3, facts-3gpp.md §2.2), for `MD5` and for `AKAv1-MD5`
//! (RFC 3310 §3: the same formulas, with the AKA RES octets as the password, and an empty password
//! when the request carries `auts`).
//!
//! ```text
//! HA1      = MD5(username ":" realm ":" password)
//! HA2      = MD5(method ":" digest-uri)                       qop=auth or absent
//! HA2      = MD5(method ":" digest-uri ":" MD5(entity-body))  qop=auth-int
//! response = MD5(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" HA2)   (MD5(HA1 ":" nonce ":" HA2) without qop)
//! rspauth  = the same with an empty method: A2 = ":" digest-uri [":" MD5(response body)]
//! ```
//! Every hash is written as 32 lowercase hex characters before it is hashed again.

use super::header::{Algorithm, AuthenticationInfo, Credentials, NonceCount, Qop};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest as _, Md5};
use std::fmt;
use std::sync::{Arc, OnceLock};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A Digest password as raw octets, wiped when dropped.
///
/// On Ub it is the RES from the card (binary, 33.220 §5.3.2 NOTE 3), or empty for an AUTS
/// resynchronisation; on Ua it is the ASCII text of base64(key) (profile P-7, P-11.13).
///
/// A password and its clones remember the first HA1 computed from them (with its username and
/// realm): a server that keeps one password per terminal (the BSM's key cache) computes HA1 once,
/// not twice per request (`response` and `rspauth`). The remembered HA1 is wiped with the last
/// clone.
#[derive(Clone)]
pub struct Password(Zeroizing<Vec<u8>>, Arc<OnceLock<Ha1Memo>>);

/// An HA1 with the username and realm it was computed for.
struct Ha1Memo {
    username: String,
    realm: String,
    ha1: Ha1,
}

impl Password {
    /// A password made of the given octets (e.g. the AKA RES).
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Password(Zeroizing::new(bytes.to_vec()), Arc::default())
    }

    /// The empty password used with `auts` (RFC 3310 §3.4).
    #[must_use]
    pub fn empty() -> Self {
        Password(Zeroizing::new(Vec::new()), Arc::default())
    }

    /// HA1 of this password for `username` and `realm`: the remembered one when it is for them,
    /// else computed (and remembered when none is yet).
    #[must_use]
    pub fn ha1(&self, username: &str, realm: &str) -> Ha1 {
        if let Some(m) = self.1.get() {
            if m.username == username && m.realm == realm {
                return m.ha1.clone();
            }
            return Ha1::new(username, realm, self);
        }
        let ha1 = Ha1::new(username, realm, self);
        let _ = self.1.set(Ha1Memo { username: username.to_owned(), realm: realm.to_owned(), ha1: ha1.clone() });
        ha1
    }

    /// The Ua password: standard base64 with padding of a key (profile P-11.13: the 32-octet
    /// SRK; facts-3gpp.md §1.6 for a NAF key).
    #[must_use]
    pub fn base64_of_key(key: &[u8]) -> Self {
        // Reserve the exact length first so that the encoder never reallocates and leaves an
        // unwiped copy behind.
        let mut text = Zeroizing::new(String::with_capacity(key.len().div_ceil(3) * 4));
        STANDARD.encode_string(key, &mut text);
        Password(Zeroizing::new(text.as_bytes().to_vec()), Arc::default())
    }

    /// The password octets. Named so that every use is visible in review.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(…)")
    }
}

/// Why a digest could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ComputeError {
    /// The algorithm is neither `MD5` nor `AKAv1-MD5`.
    #[error("unsupported Digest algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    /// The qop is neither `auth` nor `auth-int`.
    #[error("unsupported qop `{0}`")]
    UnsupportedQop(String),
}

/// Why a received `response` (or `rspauth`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The expected value could not be computed.
    #[error(transparent)]
    Compute(#[from] ComputeError),
    /// The received value is absent, empty, or not 32 hex digits.
    #[error("digest value missing or malformed")]
    Malformed,
    /// The received value differs from the expected one.
    #[error("digest value does not match")]
    Mismatch,
}

/// HA1 = MD5(username ":" realm ":" password), as 32 lowercase hex characters. It is
/// password-equivalent, so it is wiped on drop (every clone) and its `Debug` shows nothing.
#[derive(Clone)]
pub struct Ha1(Zeroizing<[u8; 32]>);

impl Ha1 {
    /// Computes HA1 (identical for `MD5` and `AKAv1-MD5`, RFC 3310 §3.4).
    #[must_use]
    pub fn new(username: &str, realm: &str, password: &Password) -> Self {
        let mut h = Md5::new();
        h.update(username.as_bytes());
        h.update(b":");
        h.update(realm.as_bytes());
        h.update(b":");
        h.update(password.expose_secret());
        let raw = Zeroizing::new(<[u8; 16]>::from(h.finalize()));
        let mut hex = Zeroizing::new([0u8; 32]);
        write_hex(&raw, &mut hex);
        Ha1(hex)
    }

    /// The hex text. Named so that every use is visible in review.
    #[must_use]
    pub fn expose_hex(&self) -> &str {
        // Only ASCII hex digits are ever written into the buffer.
        std::str::from_utf8(&self.0[..]).unwrap_or_default()
    }
}

impl fmt::Debug for Ha1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ha1(…)")
    }
}

/// A public MD5 value of the Digest exchange (HA2, `response`, `rspauth`). Equality runs in
/// constant time.
#[derive(Clone, Copy)]
pub struct DigestValue([u8; 16]);

impl DigestValue {
    /// The raw 16 octets.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Reads 32 hex digits (either case).
    #[must_use]
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(DigestValue(out))
    }

    /// The 32 lowercase hex characters.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Constant-time comparison with a received hex value; `false` for malformed text.
    #[must_use]
    pub fn matches_hex(&self, received: &str) -> bool {
        DigestValue::from_hex(received).is_some_and(|r| r == *self)
    }

    fn hex_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        write_hex(&self.0, &mut out);
        out
    }
}

impl PartialEq for DigestValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for DigestValue {}

impl fmt::Display for DigestValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for DigestValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DigestValue({})", self.to_hex())
    }
}

fn write_hex(raw: &[u8; 16], out: &mut [u8; 32]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in raw.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// MD5 of a body, the `H(entity-body)` of qop `auth-int` (profile P-11.13: over the raw octets).
#[must_use]
pub fn body_hash(body: &[u8]) -> DigestValue {
    DigestValue(Md5::digest(body).into())
}

/// HA2 (RFC 2617 §3.2.2.3). `body` is used only with `auth-int`. For `rspauth`, pass an empty
/// method.
///
/// # Errors
/// [`ComputeError::UnsupportedQop`] for an unknown qop.
pub fn ha2(qop: Option<&Qop>, method: &str, uri: &str, body: &[u8]) -> Result<DigestValue, ComputeError> {
    let mut h = Md5::new();
    h.update(method.as_bytes());
    h.update(b":");
    h.update(uri.as_bytes());
    match qop {
        None | Some(Qop::Auth) => {}
        Some(Qop::AuthInt) => {
            h.update(b":");
            h.update(body_hash(body).hex_bytes());
        }
        Some(Qop::Unknown(q)) => return Err(ComputeError::UnsupportedQop(q.clone())),
    }
    Ok(DigestValue(h.finalize().into()))
}

/// The `qop`, `nc` and `cnonce` of one request.
#[derive(Debug, Clone, Copy)]
pub struct QopFields<'a> {
    /// The chosen qop.
    pub qop: &'a Qop,
    /// The nonce count.
    pub nc: NonceCount,
    /// The client nonce.
    pub cnonce: &'a str,
}

/// The request digest (RFC 2617 §3.2.2.1) from HA1 and HA2.
///
/// # Errors
/// [`ComputeError::UnsupportedQop`] for an unknown qop.
pub fn request_digest(
    ha1: &Ha1,
    nonce: &str,
    qop: Option<QopFields<'_>>,
    ha2: &DigestValue,
) -> Result<DigestValue, ComputeError> {
    let mut h = Md5::new();
    h.update(ha1.expose_hex().as_bytes());
    h.update(b":");
    h.update(nonce.as_bytes());
    h.update(b":");
    if let Some(q) = qop {
        if let Qop::Unknown(name) = q.qop {
            return Err(ComputeError::UnsupportedQop(name.clone()));
        }
        h.update(q.nc.hex());
        h.update(b":");
        h.update(q.cnonce.as_bytes());
        h.update(b":");
        h.update(q.qop.as_str().as_bytes());
        h.update(b":");
    }
    h.update(ha2.hex_bytes());
    Ok(DigestValue(h.finalize().into()))
}

static MD5: Algorithm = Algorithm::Md5;

/// Everything of one Digest exchange except the password, the method and the bodies.
#[derive(Debug, Clone, Copy)]
pub struct DigestContext<'a> {
    /// The algorithm (`MD5` or `AKAv1-MD5`).
    pub algorithm: &'a Algorithm,
    /// `username`.
    pub username: &'a str,
    /// `realm`.
    pub realm: &'a str,
    /// `nonce`.
    pub nonce: &'a str,
    /// `uri` (digest-uri).
    pub uri: &'a str,
    /// `qop`, `nc`, `cnonce`, or `None` for the RFC 2069 form.
    pub qop: Option<QopFields<'a>>,
}

impl<'a> DigestContext<'a> {
    /// The context described by received or built credentials.
    #[must_use]
    pub fn from_credentials(c: &'a Credentials) -> Self {
        let qop = match (&c.qop, c.nc, &c.cnonce) {
            (Some(qop), Some(nc), Some(cnonce)) => Some(QopFields { qop, nc, cnonce }),
            // The parser refuses qop without nc and cnonce; a hand-built value that breaks the
            // pairing is computed as if no qop had been sent, and will simply not verify.
            _ => None,
        };
        DigestContext {
            algorithm: c.algorithm.as_ref().unwrap_or(&MD5),
            username: &c.username,
            realm: &c.realm,
            nonce: &c.nonce,
            uri: &c.uri,
            qop,
        }
    }

    fn check_algorithm(&self) -> Result<(), ComputeError> {
        match self.algorithm {
            Algorithm::Md5 | Algorithm::AkaV1Md5 => Ok(()),
            Algorithm::Unknown(a) => Err(ComputeError::UnsupportedAlgorithm(a.clone())),
        }
    }

    /// HA1 for this context.
    ///
    /// # Errors
    /// [`ComputeError::UnsupportedAlgorithm`].
    pub fn ha1(&self, password: &Password) -> Result<Ha1, ComputeError> {
        self.check_algorithm()?;
        Ok(password.ha1(self.username, self.realm))
    }

    /// The `response` of a request with the given method and entity body.
    ///
    /// # Errors
    /// [`ComputeError`] for an unknown algorithm or qop.
    pub fn response(&self, password: &Password, method: &str, body: &[u8]) -> Result<DigestValue, ComputeError> {
        let ha1 = self.ha1(password)?;
        let ha2 = ha2(self.qop.map(|q| q.qop), method, self.uri, body)?;
        request_digest(&ha1, self.nonce, self.qop, &ha2)
    }

    /// The `rspauth` of the answer to that request (RFC 2617 §3.2.3), over the response body.
    ///
    /// # Errors
    /// [`ComputeError`] for an unknown algorithm or qop.
    pub fn rspauth(&self, password: &Password, response_body: &[u8]) -> Result<DigestValue, ComputeError> {
        self.response(password, "", response_body)
    }
}

impl Credentials {
    /// Server side: checks `response` in constant time.
    ///
    /// The caller supplies the password it expects: the XRES (flipped for GBA_U) for Ub, the
    /// empty password when `auts` is present, base64(SRK) on Ua. The caller also checks that
    /// `uri` names the Request-URI, the nonce (see [`super::nonce`]) and the realm.
    ///
    /// # Errors
    /// [`VerifyError`].
    pub fn verify_response(&self, password: &Password, method: &str, body: &[u8]) -> Result<(), VerifyError> {
        let received = DigestValue::from_hex(&self.response).ok_or(VerifyError::Malformed)?;
        let expected = DigestContext::from_credentials(self).response(password, method, body)?;
        if expected == received { Ok(()) } else { Err(VerifyError::Mismatch) }
    }

    /// Server side: the `Authentication-Info` answering these (verified) credentials, with
    /// `rspauth` over `response_body`, echoing `qop`, `cnonce` and `nc`.
    ///
    /// # Errors
    /// [`ComputeError`] for an unknown algorithm or qop.
    pub fn authentication_info(
        &self,
        password: &Password,
        response_body: &[u8],
        nextnonce: Option<String>,
    ) -> Result<AuthenticationInfo, ComputeError> {
        let rspauth = DigestContext::from_credentials(self).rspauth(password, response_body)?;
        Ok(AuthenticationInfo {
            nextnonce,
            qop: self.qop.clone(),
            rspauth: Some(rspauth.to_hex()),
            cnonce: self.cnonce.clone(),
            nc: self.nc,
            other: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_remembers_only_its_own_ha1() {
        let p = Password::base64_of_key(&[0x11; 32]);
        let first = p.ha1("btid-a@bsf", "realm");
        let again = p.clone().ha1("btid-a@bsf", "realm");
        assert_eq!(first.expose_hex(), again.expose_hex());
        assert_eq!(first.expose_hex(), Ha1::new("btid-a@bsf", "realm", &p).expose_hex());
        for (user, realm) in [("btid-b@bsf", "realm"), ("btid-a@bsf", "other")] {
            assert_eq!(p.ha1(user, realm).expose_hex(), Ha1::new(user, realm, &p).expose_hex(), "{user} {realm}");
            assert_ne!(p.ha1(user, realm).expose_hex(), first.expose_hex());
        }
        let other = Password::base64_of_key(&[0x22; 32]);
        assert_ne!(other.ha1("btid-a@bsf", "realm").expose_hex(), first.expose_hex(), "not shared across passwords");
    }

    #[test]
    fn nonce_count_hex_is_its_display() {
        for n in [0, 1, 0xa, 0xff, 0x1234_abcd, u32::MAX] {
            assert_eq!(NonceCount(n).hex().as_slice(), NonceCount(n).to_string().as_bytes());
        }
    }

    const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
    const UB_NONCE: &str = "I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M=";
    const RES: [u8; 8] = [0xa5, 0x42, 0x11, 0xd5, 0xe3, 0xba, 0x50, 0xbf];
    const BSM_BODY: &[u8] = b"<mbmsSecurityRegister xmlns=\"urn:3GPP:metadata:2005:MBMS:securityRegistration\"><serviceID>urn:example:svc:1</serviceID></mbmsSecurityRegister>";
    const BTID: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org";
    const MRK: &str = "06e4f3af25528d00c8739a646ea497dce1d98a7eb6f55f80b7b6a20e62e53623";

    fn ub_context(qop: &Qop) -> DigestContext<'_> {
        DigestContext {
            algorithm: &Algorithm::AkaV1Md5,
            username: IMPI,
            realm: "bsf.example.org",
            nonce: UB_NONCE,
            uri: "/",
            qop: Some(QopFields { qop, nc: NonceCount(1), cnonce: "0a4f113b" }),
        }
    }

    /// vectors.md §2, Digest AKA response, GBA_ME.
    #[test]
    fn vectors_ub_gba_me() {
        let password = Password::from_bytes(&RES);
        let ctx = ub_context(&Qop::AuthInt);
        assert_eq!(ctx.ha1(&password).unwrap().expose_hex(), "61b6a19a6ee7287555b22cf4af3dda7f");
        assert_eq!(ha2(Some(&Qop::AuthInt), "GET", "/", b"").unwrap().to_hex(), "15df3e1aa09254633226c3d41891b148");
        assert_eq!(ctx.response(&password, "GET", b"").unwrap().to_hex(), "78486094df22fe6ec39138ac4d2d6e8d");
    }

    /// vectors.md §2, GBA_U: the RES returned by the UICC has its least significant bit flipped.
    #[test]
    fn vectors_ub_gba_u_flipped_res() {
        let mut res = RES;
        res[7] ^= 1;
        assert_eq!(res, [0xa5, 0x42, 0x11, 0xd5, 0xe3, 0xba, 0x50, 0xbe]);
        let password = Password::from_bytes(&res);
        let ctx = ub_context(&Qop::AuthInt);
        assert_eq!(ctx.ha1(&password).unwrap().expose_hex(), "deb7125311cc0adcfe2392b165731195");
        assert_eq!(ctx.response(&password, "GET", b"").unwrap().to_hex(), "c89bfc70a1bc5efcdcd0532a9ebef7ef");
    }

    fn bsm_context(qop: &Qop) -> DigestContext<'_> {
        DigestContext {
            algorithm: &Algorithm::Md5,
            username: BTID,
            realm: "3GPP-bootstrapping@bmsc.example.org",
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            uri: "/keymanagement?requesttype=register",
            qop: Some(QopFields { qop, nc: NonceCount(1), cnonce: "0a4f113b" }),
        }
    }

    fn bsm_password() -> Password {
        let mrk = hex::decode(MRK).unwrap();
        let p = Password::base64_of_key(&mrk);
        assert_eq!(p.expose_secret(), b"BuTzryVSjQDIc5pkbqSX3OHZin629V+At7aiDmLlNiM=");
        p
    }

    /// vectors.md §3, qop=auth.
    #[test]
    fn vectors_bsm_auth() {
        assert_eq!(BSM_BODY.len(), 142);
        let p = bsm_password();
        let ctx = bsm_context(&Qop::Auth);
        assert_eq!(ctx.ha1(&p).unwrap().expose_hex(), "e541312a6dfcddfc6f8b7bb64177a4ee");
        assert_eq!(
            ha2(Some(&Qop::Auth), "POST", ctx.uri, BSM_BODY).unwrap().to_hex(),
            "e971e4daece817423966626464f16fac"
        );
        assert_eq!(ctx.response(&p, "POST", BSM_BODY).unwrap().to_hex(), "e63120c7c797b492777c86951cd8fbe8");
    }

    /// vectors.md §3, qop=auth-int with the 142-octet body.
    #[test]
    fn vectors_bsm_auth_int() {
        assert_eq!(body_hash(BSM_BODY).to_hex(), "ceb12e013463eb39d0f2a6ddd12a462f");
        let p = bsm_password();
        let ctx = bsm_context(&Qop::AuthInt);
        assert_eq!(
            ha2(Some(&Qop::AuthInt), "POST", ctx.uri, BSM_BODY).unwrap().to_hex(),
            "b9f9a768f96c7d47419eddc5c81a7530"
        );
        assert_eq!(ctx.response(&p, "POST", BSM_BODY).unwrap().to_hex(), "651644adeb66844c5b15cebbfa6125e0");
    }

    /// RFC 2617 §3.5 example (qop=auth, MD5): response 6629fae49393a05397450978507c4ef1.
    #[test]
    fn rfc2617_example() {
        let ctx = DigestContext {
            algorithm: &Algorithm::Md5,
            username: "Mufasa",
            realm: "testrealm@host.com",
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            uri: "/dir/index.html",
            qop: Some(QopFields { qop: &Qop::Auth, nc: NonceCount(1), cnonce: "0a4f113b" }),
        };
        let p = Password::from_bytes(b"Circle Of Life");
        assert_eq!(ctx.response(&p, "GET", b"").unwrap().to_hex(), "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn server_verifies_and_answers() {
        let p = bsm_password();
        let ctx = bsm_context(&Qop::AuthInt);
        let mut creds = Credentials::initial(ctx.username, ctx.realm, ctx.uri);
        creds.nonce = ctx.nonce.into();
        creds.qop = Some(Qop::AuthInt);
        creds.nc = Some(NonceCount(1));
        creds.cnonce = Some("0a4f113b".into());
        creds.algorithm = Some(Algorithm::Md5);
        creds.response = "651644ADEB66844C5B15CEBBFA6125E0".into();
        assert_eq!(creds.verify_response(&p, "POST", BSM_BODY), Ok(()));
        assert_eq!(creds.verify_response(&p, "POST", b"tampered"), Err(VerifyError::Mismatch));
        assert_eq!(creds.verify_response(&p, "GET", BSM_BODY), Err(VerifyError::Mismatch));
        assert_eq!(creds.verify_response(&Password::empty(), "POST", BSM_BODY), Err(VerifyError::Mismatch));

        let info = creds.authentication_info(&p, b"<ok/>", Some("next".into())).unwrap();
        assert_eq!(info.qop, Some(Qop::AuthInt));
        assert_eq!(info.nc, Some(NonceCount(1)));
        let expected = ctx.rspauth(&p, b"<ok/>").unwrap();
        assert_eq!(info.rspauth, Some(expected.to_hex()));
        // rspauth differs from the response (empty method) and covers the response body.
        assert_ne!(expected, ctx.response(&p, "POST", b"<ok/>").unwrap());
        assert_ne!(expected, ctx.rspauth(&p, b"<ok />").unwrap());

        creds.response = String::new();
        assert_eq!(creds.verify_response(&p, "POST", BSM_BODY), Err(VerifyError::Malformed));
    }

    #[test]
    fn rejects_unknown_algorithm_and_qop() {
        let alg = Algorithm::Unknown("MD5-sess".into());
        let mut ctx = bsm_context(&Qop::Auth);
        ctx.algorithm = &alg;
        assert_eq!(
            ctx.response(&Password::empty(), "GET", b""),
            Err(ComputeError::UnsupportedAlgorithm("MD5-sess".into()))
        );
        let q = Qop::Unknown("auth-conf".into());
        let ctx = bsm_context(&q);
        assert_eq!(ctx.response(&Password::empty(), "GET", b""), Err(ComputeError::UnsupportedQop("auth-conf".into())));
    }

    #[test]
    fn secrets_do_not_print() {
        let p = Password::from_bytes(b"secret");
        assert_eq!(format!("{p:?}"), "Password(…)");
        assert_eq!(format!("{:?}", Ha1::new("u", "r", &p)), "Ha1(…)");
    }
}
