//! HTTP Digest authentication without IO, for both provisioning interfaces:
//!
//! - **Ub** (UE ↔ BSF): HTTP Digest AKA, RFC 3310, `algorithm=AKAv1-MD5`, `qop=auth-int`; the
//!   password is the raw RES octets (flipped for GBA_U), or empty with `auts`
//!   (facts-3gpp.md §2.1).
//! - **Ua** (UE ↔ BSM): RFC 2617 Digest, `algorithm=MD5`, `qop="auth,auth-int"`, username =
//!   B-TID, password = base64(SRK) (profile P-7, P-11.13; facts-3gpp.md §1.6, §3.3).
//!
//! | module | what |
//! |---|---|
//! | [`header`] | `WWW-Authenticate`, `Authorization`, `Authentication-Info` codecs |
//! | [`compute`] | HA1, HA2, `response`, `rspauth`, constant-time verification |
//! | [`nonce`] | stateless authenticated nonces and a bounded `nc` replay guard |
//! | [`client`] | the terminal's side: answer a challenge, check `rspauth` |
//!
//! A server runs, per request: [`Credentials::parse`] → check the realm
//! ([`realm_host_matches`] on Ua, equality on Ub), that `uri` names the Request-URI, that
//! `algorithm` and `qop` are the ones it offered and that `opaque` is its own →
//! [`NonceIssuer::check`] (on `Expired`, challenge again with `stale=true`) →
//! [`Credentials::verify_response`] → [`NcTracker::accept`] (only after the response verified) →
//! [`Credentials::authentication_info`].

pub mod client;
pub mod compute;
pub mod header;
pub mod nonce;

pub use client::{ClientError, DigestClient, SentRequest};
pub use compute::{ComputeError, DigestContext, DigestValue, Ha1, Password, QopFields, VerifyError};
pub use header::{
    AUTS_LEN, Algorithm, AuthParam, AuthenticationInfo, Challenge, Credentials, HeaderError, MAX_HEADER_LEN,
    NonceCount, Qop, uri_names_request,
};
pub use nonce::{NcError, NcPolicy, NcTracker, NonceError, NonceInfo, NonceIssuer, NonceKind};

/// The realm prefixes of GBA on Ua (24.109 §5.2, facts-3gpp.md §1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GbaRealmPrefix {
    /// `3GPP-bootstrapping`: ME-based key (Ks_NAF, or Ks_ext_NAF for GBA_U).
    Bootstrapping,
    /// `3GPP-bootstrapping-uicc`: UICC-based key (Ks_int_NAF).
    BootstrappingUicc,
    /// `3GPP-bootstrapping-digest`: GBA_Digest.
    BootstrappingDigest,
}

impl GbaRealmPrefix {
    /// The prefix text.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            GbaRealmPrefix::Bootstrapping => "3GPP-bootstrapping",
            GbaRealmPrefix::BootstrappingUicc => "3GPP-bootstrapping-uicc",
            GbaRealmPrefix::BootstrappingDigest => "3GPP-bootstrapping-digest",
        }
    }

    /// The realm `<prefix>@<fqdn>`.
    #[must_use]
    pub fn realm(self, fqdn: &str) -> String {
        format!("{}@{fqdn}", self.as_str())
    }
}

/// Splits a Ua realm `<prefix>@<host>` into its prefix and host; `None` when the prefix is not
/// one of the GBA prefixes.
#[must_use]
pub fn split_gba_realm(realm: &str) -> Option<(GbaRealmPrefix, &str)> {
    let (prefix, host) = realm.split_once('@')?;
    let prefix =
        [GbaRealmPrefix::Bootstrapping, GbaRealmPrefix::BootstrappingUicc, GbaRealmPrefix::BootstrappingDigest]
            .into_iter()
            .find(|p| p.as_str() == prefix)?;
    Some((prefix, host))
}

/// Whether a Ua realm carries a GBA prefix and its host part equals `fqdn` (DNS names compare
/// case-insensitively). Both the UE and the NAF/BSM check this on every message
/// (24.109 §5.2, facts-3gpp.md §1.6).
#[must_use]
pub fn realm_host_matches(realm: &str, fqdn: &str) -> bool {
    split_gba_realm(realm).is_some_and(|(_, host)| host.eq_ignore_ascii_case(fqdn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gba_realms() {
        assert_eq!(
            split_gba_realm("3GPP-bootstrapping@bmsc.example.org"),
            Some((GbaRealmPrefix::Bootstrapping, "bmsc.example.org"))
        );
        assert_eq!(
            split_gba_realm("3GPP-bootstrapping-uicc@naf1.home1.net"),
            Some((GbaRealmPrefix::BootstrappingUicc, "naf1.home1.net"))
        );
        assert_eq!(split_gba_realm("bsf.example.org"), None);
        assert_eq!(split_gba_realm("other@host"), None);
        assert!(realm_host_matches("3GPP-bootstrapping@BMSC.example.org", "bmsc.example.org"));
        assert!(!realm_host_matches("3GPP-bootstrapping@evil.example.org", "bmsc.example.org"));
        assert!(!realm_host_matches("3GPP-bootstrapping@bmsc.example.org@x", "bmsc.example.org"));
        assert_eq!(GbaRealmPrefix::Bootstrapping.realm("bmsc.example.org"), "3GPP-bootstrapping@bmsc.example.org");
    }

    /// The whole Ua exchange of vectors.md §3 through the server and client helpers.
    #[test]
    fn ua_server_and_client_together() {
        const T0: u64 = 1_767_182_400;
        let body: &[u8] = b"<mbmsSecurityRegister xmlns=\"urn:3GPP:metadata:2005:MBMS:securityRegistration\"><serviceID>urn:example:svc:1</serviceID></mbmsSecurityRegister>";
        let srk = [0x5a; 32];
        let issuer = NonceIssuer::new([3; 32], 300);
        let mut tracker = NcTracker::new(NcPolicy::Increasing, 1024, 300);
        let realm = GbaRealmPrefix::Bootstrapping.realm("bmsc.example.org");
        let challenge = Challenge {
            realm: realm.clone(),
            nonce: issuer.issue_ua(&[0x77; 16], T0),
            opaque: Some("xyz".into()),
            algorithm: Some(Algorithm::Md5),
            qop: vec![Qop::Auth, Qop::AuthInt],
            stale: false,
            other: vec![],
        };
        let wire = challenge.to_header_value().unwrap();

        // Terminal.
        let received = Challenge::parse(&wire).unwrap();
        assert!(realm_host_matches(&received.realm, "bmsc.example.org"));
        let mut client =
            DigestClient::new(received, "btid@bsf", Password::base64_of_key(&srk), &[Qop::AuthInt, Qop::Auth]).unwrap();
        let uri = "/keymanagement?requesttype=register";
        let sent = client.authorize("POST", uri, body, &[0x10; 16]).unwrap();
        let authorization = sent.credentials().to_header_value().unwrap();

        // BSM.
        let creds = Credentials::parse(&authorization).unwrap();
        assert!(realm_host_matches(&creds.realm, "bmsc.example.org"));
        let info = issuer.check(&creds.nonce, T0 + 1).unwrap();
        let password = Password::base64_of_key(&srk);
        creds.verify_response(&password, "POST", body).unwrap();
        let nc = creds.nc.unwrap();
        tracker.accept(&info, nc, T0 + 1).unwrap();
        assert_eq!(tracker.accept(&info, nc, T0 + 1), Err(NcError::NotIncreasing { nc, highest: nc }));
        let answer = creds.authentication_info(&password, b"<ok/>", None).unwrap().to_header_value().unwrap();

        // Terminal again.
        let answer = AuthenticationInfo::parse(&answer).unwrap();
        client.check_authentication_info(&sent, &answer, b"<ok/>").unwrap();
    }
}
