//! The terminal's side of Digest, without IO: answer a challenge, count `nc`, check `rspauth`.
//!
//! ```
//! use keycast_provisioning::digest::{Challenge, DigestClient, Password, Qop};
//!
//! let challenge = Challenge::parse(
//!     "Digest realm=\"3GPP-bootstrapping@bmsc.example.org\", nonce=\"abc\", algorithm=MD5, qop=\"auth,auth-int\"",
//! )
//! .unwrap();
//! let password = Password::base64_of_key(&[0x11; 32]);
//! let mut client = DigestClient::new(challenge, "btid@bsf.example.org", password, &[Qop::AuthInt]).unwrap();
//! let sent = client.authorize("POST", "/keymanagement?requesttype=register", b"<body/>", &[0x42; 16]).unwrap();
//! let header = sent.credentials().to_header_value().unwrap();
//! assert!(header.contains("qop=auth-int, nc=00000001"));
//! ```

use super::compute::{DigestContext, DigestValue, Password};
use super::header::{AUTS_LEN, Algorithm, AuthenticationInfo, Challenge, Credentials, NonceCount, Qop};

/// Fewest and most random octets accepted for a `cnonce` (hex-encoded; 16 recommended).
pub const CNONCE_RANDOM_LEN: std::ops::RangeInclusive<usize> = 4..=64;

/// Why the client could not answer, or refused the server's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The challenge's algorithm is neither `MD5` nor `AKAv1-MD5`.
    #[error("unsupported Digest algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    /// The challenge offers none of the acceptable qop values.
    #[error("challenge offers no acceptable qop")]
    NoAcceptableQop,
    /// The caller gave a cnonce random outside [`CNONCE_RANDOM_LEN`].
    #[error("cnonce random of {0} octets is outside 4..=64")]
    BadCnonceRandom(usize),
    /// The nonce count would pass 0xffffffff; a new challenge is needed.
    #[error("nonce count exhausted")]
    NonceCountExhausted,
    /// `Authentication-Info` has no `rspauth` (mutual authentication is required).
    #[error("Authentication-Info lacks rspauth")]
    MissingRspauth,
    /// `rspauth` does not verify: the server does not know the password, or the body changed.
    #[error("rspauth does not verify")]
    BadRspauth,
    /// `Authentication-Info` echoes a `qop`, `cnonce` or `nc` other than the one sent.
    #[error("Authentication-Info echoes `{0}` wrongly")]
    EchoMismatch(&'static str),
}

/// A request that was authorised, kept to check the answer's `Authentication-Info`.
#[derive(Debug, Clone)]
pub struct SentRequest {
    credentials: Credentials,
}

impl SentRequest {
    /// The credentials to send as the `Authorization` header
    /// (`credentials().to_header_value()`).
    #[must_use]
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }
}

/// Answers one Digest challenge, possibly several times (the `nc` counts up), and follows
/// `nextnonce`.
#[derive(Debug)]
pub struct DigestClient {
    challenge: Challenge,
    username: String,
    password: Password,
    qop: Qop,
    nc: u32,
    auts: Option<[u8; AUTS_LEN]>,
}

impl DigestClient {
    /// A client for `challenge`, choosing the first of `qop_preference` that the challenge
    /// offers (Ub: `[AuthInt]`; Ua: `[AuthInt]` or `[AuthInt, Auth]`). A challenge without
    /// `qop` (RFC 2069 style) is not answered.
    ///
    /// # Errors
    /// [`ClientError::UnsupportedAlgorithm`], [`ClientError::NoAcceptableQop`].
    pub fn new(
        challenge: Challenge,
        username: &str,
        password: Password,
        qop_preference: &[Qop],
    ) -> Result<Self, ClientError> {
        if let Algorithm::Unknown(a) = challenge.algorithm() {
            return Err(ClientError::UnsupportedAlgorithm(a));
        }
        let qop = qop_preference
            .iter()
            .find(|q| !matches!(q, Qop::Unknown(_)) && challenge.qop.contains(q))
            .cloned()
            .ok_or(ClientError::NoAcceptableQop)?;
        Ok(DigestClient { challenge, username: username.to_owned(), password, qop, nc: 0, auts: None })
    }

    /// A client that reports an AKA synchronisation failure (RFC 3310 §3.4, 24.109 A.4): every
    /// request carries `auts` and is computed with the empty password.
    ///
    /// # Errors
    /// As [`DigestClient::new`].
    pub fn new_resync(
        challenge: Challenge,
        username: &str,
        auts: [u8; AUTS_LEN],
        qop_preference: &[Qop],
    ) -> Result<Self, ClientError> {
        let mut c = Self::new(challenge, username, Password::empty(), qop_preference)?;
        c.auts = Some(auts);
        Ok(c)
    }

    /// The challenge being answered (its nonce follows `nextnonce`).
    #[must_use]
    pub fn challenge(&self) -> &Challenge {
        &self.challenge
    }

    /// The qop chosen.
    #[must_use]
    pub fn qop(&self) -> &Qop {
        &self.qop
    }

    /// Builds the credentials for one request. `cnonce_random` comes from the caller's RNG and
    /// becomes the `cnonce` in lowercase hex; `nc` goes up by one on every call.
    ///
    /// # Errors
    /// [`ClientError::BadCnonceRandom`], [`ClientError::NonceCountExhausted`].
    pub fn authorize(
        &mut self,
        method: &str,
        uri: &str,
        body: &[u8],
        cnonce_random: &[u8],
    ) -> Result<SentRequest, ClientError> {
        if !CNONCE_RANDOM_LEN.contains(&cnonce_random.len()) {
            return Err(ClientError::BadCnonceRandom(cnonce_random.len()));
        }
        let nc = self.nc.checked_add(1).ok_or(ClientError::NonceCountExhausted)?;
        let mut credentials = Credentials {
            username: self.username.clone(),
            realm: self.challenge.realm.clone(),
            nonce: self.challenge.nonce.clone(),
            uri: uri.to_owned(),
            response: String::new(),
            algorithm: Some(self.challenge.algorithm()),
            cnonce: Some(hex::encode(cnonce_random)),
            opaque: self.challenge.opaque.clone(),
            qop: Some(self.qop.clone()),
            nc: Some(NonceCount(nc)),
            auts: self.auts,
            other: Vec::new(),
        };
        let response = DigestContext::from_credentials(&credentials)
            .response(&self.password, method, body)
            .map_err(to_client_error)?;
        credentials.response = response.to_hex();
        self.nc = nc;
        Ok(SentRequest { credentials })
    }

    /// Checks the server's `Authentication-Info` for a request sent with this client: `rspauth`
    /// must be present and verify over `response_body` (constant time), and any echoed `qop`,
    /// `cnonce` and `nc` must match. On success a `nextnonce` replaces the nonce and restarts
    /// `nc`.
    ///
    /// # Errors
    /// [`ClientError::MissingRspauth`], [`ClientError::BadRspauth`], [`ClientError::EchoMismatch`].
    pub fn check_authentication_info(
        &mut self,
        sent: &SentRequest,
        info: &AuthenticationInfo,
        response_body: &[u8],
    ) -> Result<(), ClientError> {
        let c = &sent.credentials;
        if info.qop.as_ref().is_some_and(|q| Some(q) != c.qop.as_ref()) {
            return Err(ClientError::EchoMismatch("qop"));
        }
        if info.cnonce.as_ref().is_some_and(|x| Some(x) != c.cnonce.as_ref()) {
            return Err(ClientError::EchoMismatch("cnonce"));
        }
        if info.nc.is_some_and(|n| Some(n) != c.nc) {
            return Err(ClientError::EchoMismatch("nc"));
        }
        let received = info.rspauth.as_deref().ok_or(ClientError::MissingRspauth)?;
        let received = DigestValue::from_hex(received).ok_or(ClientError::BadRspauth)?;
        let ctx = DigestContext::from_credentials(c);
        let expected = ctx.rspauth(&self.password, response_body).map_err(to_client_error)?;
        if expected != received {
            return Err(ClientError::BadRspauth);
        }
        if let Some(next) = &info.nextnonce {
            self.challenge.nonce.clone_from(next);
            self.nc = 0;
        }
        Ok(())
    }
}

fn to_client_error(e: super::compute::ComputeError) -> ClientError {
    match e {
        super::compute::ComputeError::UnsupportedAlgorithm(a) => ClientError::UnsupportedAlgorithm(a),
        // The qop was chosen among known values; unreachable in practice, reported honestly.
        super::compute::ComputeError::UnsupportedQop(_) => ClientError::NoAcceptableQop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
    const RES: [u8; 8] = [0xa5, 0x42, 0x11, 0xd5, 0xe3, 0xba, 0x50, 0xbf];

    fn ub_challenge() -> Challenge {
        Challenge::parse(
            "Digest realm=\"bsf.example.org\", nonce=\"I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M=\", \
             algorithm=AKAv1-MD5, qop=\"auth-int\", opaque=\"op\"",
        )
        .unwrap()
    }

    /// vectors.md §2 reproduced through the client (cnonce "0a4f113b" = hex of 0a 4f 11 3b).
    #[test]
    fn ub_client_reproduces_vector() {
        let mut c = DigestClient::new(ub_challenge(), IMPI, Password::from_bytes(&RES), &[Qop::AuthInt]).unwrap();
        let sent = c.authorize("GET", "/", b"", &[0x0a, 0x4f, 0x11, 0x3b]).unwrap();
        let creds = sent.credentials();
        assert_eq!(creds.response, "78486094df22fe6ec39138ac4d2d6e8d");
        assert_eq!(creds.opaque.as_deref(), Some("op"));
        assert_eq!(creds.algorithm, Some(Algorithm::AkaV1Md5));
        let text = creds.to_header_value().unwrap();
        assert_eq!(Credentials::parse(&text).as_ref(), Ok(creds));

        // The server side verifies it and answers; the client checks rspauth.
        let parsed = Credentials::parse(&text).unwrap();
        let server_password = Password::from_bytes(&RES);
        parsed.verify_response(&server_password, "GET", b"").unwrap();
        let info = parsed.authentication_info(&server_password, b"<xml/>", None).unwrap();
        let info = AuthenticationInfo::parse(&info.to_header_value().unwrap()).unwrap();
        assert_eq!(c.check_authentication_info(&sent, &info, b"<xml/>"), Ok(()));
        assert_eq!(c.check_authentication_info(&sent, &info, b"<xml />"), Err(ClientError::BadRspauth));
    }

    #[test]
    fn nc_counts_and_nextnonce_restarts() {
        let mut c = DigestClient::new(ub_challenge(), IMPI, Password::from_bytes(&RES), &[Qop::AuthInt]).unwrap();
        let a = c.authorize("GET", "/", b"", &[1; 16]).unwrap();
        let b = c.authorize("GET", "/", b"", &[2; 16]).unwrap();
        assert_eq!(a.credentials().nc, Some(NonceCount(1)));
        assert_eq!(b.credentials().nc, Some(NonceCount(2)));
        let mut info =
            b.credentials().authentication_info(&Password::from_bytes(&RES), b"", Some("n2".into())).unwrap();
        c.check_authentication_info(&b, &info, b"").unwrap();
        assert_eq!(c.challenge().nonce, "n2");
        let d = c.authorize("GET", "/", b"", &[3; 16]).unwrap();
        assert_eq!(d.credentials().nc, Some(NonceCount(1)));
        assert_eq!(d.credentials().nonce, "n2");
        info.nc = Some(NonceCount(7));
        assert_eq!(c.check_authentication_info(&b, &info, b""), Err(ClientError::EchoMismatch("nc")));
    }

    #[test]
    fn resync_uses_empty_password_and_auts() {
        let auts = [0x45, 0x1e, 0x8b, 0xec, 0xa4, 0x1a, 0x80, 0x12, 0x5e, 0xca, 0x88, 0x84, 0xb5, 0x6a];
        let mut c = DigestClient::new_resync(ub_challenge(), IMPI, auts, &[Qop::AuthInt]).unwrap();
        let sent = c.authorize("GET", "/", b"", &[0x0a, 0x4f, 0x11, 0x3b]).unwrap();
        let text = sent.credentials().to_header_value().unwrap();
        assert!(text.contains("auts=\"RR6L7KQagBJeyoiEtWo=\""), "{text}");
        let parsed = Credentials::parse(&text).unwrap();
        assert_eq!(parsed.auts, Some(auts));
        assert_eq!(parsed.verify_response(&Password::empty(), "GET", b""), Ok(()));
        assert!(parsed.verify_response(&Password::from_bytes(&RES), "GET", b"").is_err());
    }

    #[test]
    fn qop_choice() {
        let ua = Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth,auth-int\"").unwrap();
        let c = DigestClient::new(ua.clone(), "u", Password::empty(), &[Qop::AuthInt, Qop::Auth]).unwrap();
        assert_eq!(c.qop(), &Qop::AuthInt);
        let c = DigestClient::new(ua, "u", Password::empty(), &[Qop::Auth]).unwrap();
        assert_eq!(c.qop(), &Qop::Auth);
        let only_auth = Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=auth").unwrap();
        assert_eq!(
            DigestClient::new(only_auth, "u", Password::empty(), &[Qop::AuthInt]).unwrap_err(),
            ClientError::NoAcceptableQop
        );
        let legacy = Challenge::parse("Digest realm=\"r\", nonce=\"n\"").unwrap();
        assert_eq!(
            DigestClient::new(legacy, "u", Password::empty(), &[Qop::Auth]).unwrap_err(),
            ClientError::NoAcceptableQop
        );
        let sha = Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=auth, algorithm=SHA-256").unwrap();
        assert_eq!(
            DigestClient::new(sha, "u", Password::empty(), &[Qop::Auth]).unwrap_err(),
            ClientError::UnsupportedAlgorithm("SHA-256".into())
        );
    }

    #[test]
    fn rejects_bad_cnonce_random_and_missing_rspauth() {
        let mut c = DigestClient::new(ub_challenge(), IMPI, Password::from_bytes(&RES), &[Qop::AuthInt]).unwrap();
        assert_eq!(c.authorize("GET", "/", b"", &[1; 3]).unwrap_err(), ClientError::BadCnonceRandom(3));
        let sent = c.authorize("GET", "/", b"", &[1; 16]).unwrap();
        assert_eq!(
            c.check_authentication_info(&sent, &AuthenticationInfo::default(), b""),
            Err(ClientError::MissingRspauth)
        );
        let info = AuthenticationInfo { cnonce: Some("other".into()), ..AuthenticationInfo::default() };
        assert_eq!(c.check_authentication_info(&sent, &info, b""), Err(ClientError::EchoMismatch("cnonce")));
    }

    #[test]
    fn nonce_count_exhaustion() {
        let mut c = DigestClient::new(ub_challenge(), IMPI, Password::from_bytes(&RES), &[Qop::AuthInt]).unwrap();
        c.nc = u32::MAX - 1;
        let last = c.authorize("GET", "/", b"", &[1; 16]).unwrap();
        assert_eq!(last.credentials().nc, Some(NonceCount(u32::MAX)));
        assert_eq!(c.authorize("GET", "/", b"", &[1; 16]).unwrap_err(), ClientError::NonceCountExhausted);
    }
}
