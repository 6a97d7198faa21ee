//! The sans-IO Ua authenticator, one decision per test, with the terminal side played by
//! keycast-provisioning's `DigestClient` (profile P-7).

use std::sync::Arc;

use keycast_bsm::keys::{KeyError, KeyRecord, NafKeys};
use keycast_bsm::ua::{
    Authenticated, ConfigError, UaAuthenticator, UaConfig, UaEvent, UaFailure, UaRequest, UaResponse, UaStep, UaVerdict,
};
use keycast_crypto::keys::KsNaf;
use keycast_provisioning::digest::{
    Algorithm, AuthenticationInfo, Challenge, Credentials, DigestClient, NonceCount, NonceIssuer, Qop, SentRequest,
};
use proptest::prelude::*;

const FQDN: &str = "bmsc.example.org";
const REALM: &str = "3GPP-bootstrapping@bmsc.example.org";
/// 2026-06-01T00:00:00Z.
const T0: u64 = 1_780_272_000;
const URI: &str = "/sprov/register?x=1";
const BODY: &[u8] = b"<RegistrationRequest xmlns=\"urn:keycast:oma-bcast:sprov:1\" requestID=\"1\"/>";
const UA: &str = "Keycast-test/0.1 3gpp-gba";
const BTID_A: &str = "AAAAAAAAAAAAAAAAAAAAAA==@bsf.example.org";
const BTID_B: &str = "BBBBBBBBBBBBBBBBBBBBBB==@bsf.example.org";
const LIFETIME: u64 = T0 + 86_400;

fn authenticator() -> UaAuthenticator {
    UaAuthenticator::new(&UaConfig::new(FQDN, [7; 32])).unwrap()
}

fn record(btid: &str, fill: u8) -> Arc<KeyRecord> {
    let keys = NafKeys::Me { ks_naf: KsNaf::from_bytes([fill; 32]) };
    Arc::new(KeyRecord::new(btid, &format!("impi-{fill}@ims.example.org"), T0 - 60, LIFETIME, &keys))
}

fn head<'a>(authorization: Option<&'a str>) -> UaRequest<'a> {
    UaRequest { method: "POST", uri: URI, authorization, user_agent: Some(UA) }
}

/// The keys a BSF would give: terminal A (fill 1) and terminal B (fill 2).
fn bsf(btid: &str) -> Result<Arc<KeyRecord>, KeyError> {
    match btid {
        BTID_A => Ok(record(BTID_A, 1)),
        BTID_B => Ok(record(BTID_B, 2)),
        _ => Err(KeyError::UnknownBtid),
    }
}

/// `begin` then, when keys are needed, `complete` with `keys`.
fn run_with(
    auth: &UaAuthenticator,
    request: &UaRequest<'_>,
    body: &[u8],
    now: u64,
    keys: impl FnOnce(&str) -> Result<Arc<KeyRecord>, KeyError>,
) -> Result<Authenticated, UaResponse> {
    let query = match auth.begin(request, now, &[0x42; 16]) {
        UaStep::Respond(r) => return Err(r),
        UaStep::NeedKeys(q) => q,
    };
    let found = keys(query.btid());
    match auth.complete(query, found, body, now, &[0x43; 16]) {
        UaVerdict::Respond(r) => Err(r),
        UaVerdict::Accepted(a) => Ok(a),
    }
}

fn run(auth: &UaAuthenticator, authorization: &str, body: &[u8], now: u64) -> Result<Authenticated, UaResponse> {
    run_with(auth, &head(Some(authorization)), body, now, bsf)
}

fn challenge(auth: &UaAuthenticator, now: u64) -> Challenge {
    let Err(r) = run_with(auth, &head(None), b"", now, bsf) else { panic!("accepted without credentials") };
    assert_eq!(r.status, 401);
    Challenge::parse(r.header("WWW-Authenticate").expect("challenge")).unwrap()
}

/// A terminal answering `challenge` as `btid` with the SRK of `keys`.
fn terminal(challenge: Challenge, btid: &str, keys: &KeyRecord, qop: Qop) -> DigestClient {
    DigestClient::new(challenge, btid, keys.ua_password(), &[qop]).unwrap()
}

fn sign(client: &mut DigestClient, body: &[u8]) -> (SentRequest, String) {
    let sent = client.authorize("POST", URI, body, &[0x0a, 0x4f, 0x11, 0x3b]).unwrap();
    let header = sent.credentials().to_header_value().unwrap();
    (sent, header)
}

fn signed_by_a(auth: &UaAuthenticator, qop: Qop) -> (DigestClient, SentRequest, String) {
    let mut client = terminal(challenge(auth, T0), BTID_A, &record(BTID_A, 1), qop);
    let (sent, header) = sign(&mut client, BODY);
    (client, sent, header)
}

fn assert_refused(result: Result<Authenticated, UaResponse>, status: u16, failure: UaFailure) -> UaResponse {
    let r = result.err().unwrap_or_else(|| panic!("accepted, expected {failure:?}"));
    assert_eq!((r.status, r.event), (status, UaEvent::Rejected(failure)), "{r:?}");
    r
}

/// A 401 that carries a fresh, parsable challenge with the given `stale`.
fn assert_rechallenged(r: &UaResponse, stale: bool) {
    let c = Challenge::parse(r.header("WWW-Authenticate").expect("401 carries a challenge")).unwrap();
    assert_eq!((c.realm.as_str(), c.stale), (REALM, stale));
}

/// Credentials of terminal A, altered by `edit`, as a header value.
fn edited(auth: &UaAuthenticator, edit: impl FnOnce(&mut Credentials)) -> String {
    let (_, sent, _) = signed_by_a(auth, Qop::AuthInt);
    let mut creds = sent.credentials().clone();
    edit(&mut creds);
    creds.to_header_value().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Accepted

#[test]
fn challenges_a_request_without_credentials() {
    let auth = authenticator();
    let Err(r) = run_with(&auth, &head(None), b"", T0, bsf) else { panic!() };
    assert_eq!(r.event, UaEvent::Challenged);
    let c = Challenge::parse(r.header("WWW-Authenticate").unwrap()).unwrap();
    assert_eq!(c.realm, REALM);
    assert_eq!(c.algorithm, Some(Algorithm::Md5));
    assert_eq!(c.qop, vec![Qop::Auth, Qop::AuthInt]);
    assert!(!c.stale);
    assert!(c.opaque.is_none());
}

#[test]
fn accepts_auth_int_and_its_rspauth_covers_the_response_body() {
    let auth = authenticator();
    let (mut client, sent, header) = signed_by_a(&auth, Qop::AuthInt);
    let ok = run(&auth, &header, BODY, T0 + 1).unwrap();
    assert_eq!((ok.btid(), ok.impi()), (BTID_A, "impi-1@ims.example.org"));
    assert!(ok.body_protected());
    assert_eq!(ok.event(), UaEvent::Accepted { auth_int: true });
    assert_eq!(ok.keys().smk().expose_secret(), &[1; 32]);

    let info = AuthenticationInfo::parse(&ok.authentication_info(b"<ok/>").unwrap()).unwrap();
    assert!(client.check_authentication_info(&sent, &info, b"<other/>").is_err());
    client.check_authentication_info(&sent, &info, b"<ok/>").unwrap();
}

#[test]
fn accepts_auth() {
    let auth = authenticator();
    let (mut client, sent, header) = signed_by_a(&auth, Qop::Auth);
    let ok = run(&auth, &header, BODY, T0 + 1).unwrap();
    assert_eq!(ok.event(), UaEvent::Accepted { auth_int: false });
    let info = AuthenticationInfo::parse(&ok.authentication_info(b"anything").unwrap()).unwrap();
    client.check_authentication_info(&sent, &info, b"anything").unwrap();
}

#[test]
fn accepts_a_rising_nc_on_one_nonce_until_the_nonce_expires() {
    let auth = authenticator();
    let (mut client, _, first) = signed_by_a(&auth, Qop::AuthInt);
    run(&auth, &first, BODY, T0).unwrap();
    let (_, second) = sign(&mut client, BODY);
    run(&auth, &second, BODY, T0 + 300).unwrap();
    let (_, third) = sign(&mut client, BODY);
    let r = assert_refused(run(&auth, &third, BODY, T0 + 301), 401, UaFailure::ExpiredNonce);
    assert_rechallenged(&r, true);
}

#[test]
fn absolute_form_uri_is_the_same_resource() {
    let auth = authenticator();
    let mut client = terminal(challenge(&auth, T0), BTID_A, &record(BTID_A, 1), Qop::AuthInt);
    let sent = client.authorize("POST", "http://bmsc.example.org/sprov/register?x=1", BODY, &[1; 8]).unwrap();
    run(&auth, &sent.credentials().to_header_value().unwrap(), BODY, T0).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Refused with 401

#[test]
fn rejects_wrong_response() {
    let auth = authenticator();
    // The right B-TID, but a password from another key.
    let mut client = terminal(challenge(&auth, T0), BTID_A, &record(BTID_A, 9), Qop::AuthInt);
    let (_, header) = sign(&mut client, BODY);
    let r = assert_refused(run(&auth, &header, BODY, T0), 401, UaFailure::WrongResponse);
    assert_rechallenged(&r, false);
}

#[test]
fn rejects_btid_of_another_terminal() {
    let auth = authenticator();
    // Terminal A presents B's B-TID with its own password.
    let mut client = terminal(challenge(&auth, T0), BTID_B, &record(BTID_A, 1), Qop::AuthInt);
    let (_, header) = sign(&mut client, BODY);
    assert_refused(run(&auth, &header, BODY, T0), 401, UaFailure::WrongResponse);
    // …and with auth as well.
    let mut client = terminal(challenge(&auth, T0), BTID_B, &record(BTID_A, 1), Qop::Auth);
    let (_, header) = sign(&mut client, BODY);
    assert_refused(run(&auth, &header, BODY, T0), 401, UaFailure::WrongResponse);
}

#[test]
fn rejects_altered_body_under_auth_int() {
    let auth = authenticator();
    let (_, _, header) = signed_by_a(&auth, Qop::AuthInt);
    assert_refused(run(&auth, &header, b"<RegistrationRequest requestID=\"2\"/>", T0), 401, UaFailure::WrongResponse);
}

#[test]
fn auth_does_not_cover_the_body() {
    let auth = authenticator();
    let (_, _, header) = signed_by_a(&auth, Qop::Auth);
    let ok = run(&auth, &header, b"another body", T0).unwrap();
    assert!(!ok.body_protected());
}

#[test]
fn rejects_replayed_request() {
    let auth = authenticator();
    let (_, _, header) = signed_by_a(&auth, Qop::AuthInt);
    run(&auth, &header, BODY, T0).unwrap();
    let r = assert_refused(run(&auth, &header, BODY, T0 + 1), 401, UaFailure::ReplayedNc);
    assert_rechallenged(&r, false);
}

#[test]
fn rejects_lower_nc() {
    let auth = authenticator();
    let (mut client, _, first) = signed_by_a(&auth, Qop::AuthInt);
    let (_, second) = sign(&mut client, BODY);
    run(&auth, &second, BODY, T0).unwrap();
    assert_refused(run(&auth, &first, BODY, T0), 401, UaFailure::ReplayedNc);
}

#[test]
fn rejects_nc_zero() {
    let auth = authenticator();
    let header = edited(&auth, |c| c.nc = Some(NonceCount(0)));
    // The response no longer matches either; the digest is checked first.
    assert_refused(run(&auth, &header, BODY, T0), 401, UaFailure::WrongResponse);
}

#[test]
fn replay_guard_is_per_terminal() {
    let auth = authenticator();
    let c = challenge(&auth, T0);
    let mut a = terminal(c.clone(), BTID_A, &record(BTID_A, 1), Qop::AuthInt);
    let mut b = terminal(c, BTID_B, &record(BTID_B, 2), Qop::AuthInt);
    let (_, from_a) = sign(&mut a, BODY);
    let (_, from_b) = sign(&mut b, BODY);
    assert_eq!(run(&auth, &from_a, BODY, T0).unwrap().btid(), BTID_A);
    assert_eq!(run(&auth, &from_b, BODY, T0).unwrap().btid(), BTID_B);
}

#[test]
fn expired_nonce_gets_stale() {
    let auth = authenticator();
    let (_, _, header) = signed_by_a(&auth, Qop::AuthInt);
    let r = assert_refused(run(&auth, &header, BODY, T0 + 301), 401, UaFailure::ExpiredNonce);
    assert_rechallenged(&r, true);
}

#[test]
fn rejects_nonce_of_another_server() {
    let auth = authenticator();
    let foreign = NonceIssuer::new([7; 32], 300).issue_ua(&[1; 16], T0);
    let header = edited(&auth, |c| c.nonce = foreign);
    let r = assert_refused(run(&auth, &header, BODY, T0), 401, UaFailure::InvalidNonce);
    assert_rechallenged(&r, false);
    let header = edited(&auth, |c| c.nonce = "bm90IGEgbm9uY2U=".into());
    assert_refused(run(&auth, &header, BODY, T0), 401, UaFailure::InvalidNonce);
}

#[test]
fn rejects_nonce_dated_ahead() {
    let auth = authenticator();
    let mut client = terminal(challenge(&auth, T0 + 60), BTID_A, &record(BTID_A, 1), Qop::AuthInt);
    let (_, header) = sign(&mut client, BODY);
    assert_refused(run(&auth, &header, BODY, T0), 401, UaFailure::InvalidNonce);
}

#[test]
fn unknown_btid_asks_for_a_new_bootstrap() {
    let auth = authenticator();
    let mut client = terminal(challenge(&auth, T0), "CCCC@bsf.example.org", &record(BTID_A, 1), Qop::AuthInt);
    let (_, header) = sign(&mut client, BODY);
    let r = assert_refused(run(&auth, &header, BODY, T0), 401, UaFailure::UnknownBtid);
    assert_rechallenged(&r, false);
}

#[test]
fn expired_key_asks_for_a_new_bootstrap() {
    let auth = authenticator();
    let (_, _, header) = signed_by_a(&auth, Qop::AuthInt);
    let expired = |_: &str| Err(KeyError::Expired { lifetime: T0 });
    assert_refused(run_with(&auth, &head(Some(&header)), BODY, T0, expired), 401, UaFailure::ExpiredKey);
    // A record whose lifetime ends now, as a cache might still hold it.
    let (_, _, header) = signed_by_a(&auth, Qop::AuthInt);
    let at_end = |_: &str| Ok(record(BTID_A, 1));
    assert_refused(run_with(&auth, &head(Some(&header)), BODY, LIFETIME, at_end), 401, UaFailure::ExpiredNonce);
    let mut client = terminal(challenge(&auth, LIFETIME), BTID_A, &record(BTID_A, 1), Qop::AuthInt);
    let (_, header) = sign(&mut client, BODY);
    assert_refused(run_with(&auth, &head(Some(&header)), BODY, LIFETIME, at_end), 401, UaFailure::ExpiredKey);
}

// ---------------------------------------------------------------------------------------------
// Refused otherwise

#[test]
fn rejects_realm_of_another_host_or_prefix() {
    let auth = authenticator();
    for realm in [
        "3GPP-bootstrapping@evil.example.org",
        "3GPP-bootstrapping@bmsc.example.org.evil",
        "3GPP-bootstrapping-uicc@bmsc.example.org",
        "bmsc.example.org",
    ] {
        let header = edited(&auth, |c| c.realm = realm.into());
        assert_refused(run(&auth, &header, BODY, T0), 400, UaFailure::Malformed);
    }
    // Host names compare case-insensitively; the response covers the realm as sent.
    let mut c = challenge(&auth, T0);
    c.realm = "3GPP-bootstrapping@BMSC.example.org".into();
    let mut client = terminal(c, BTID_A, &record(BTID_A, 1), Qop::AuthInt);
    let (_, header) = sign(&mut client, BODY);
    run(&auth, &header, BODY, T0).unwrap();
}

#[test]
fn rejects_malformed_credentials() {
    let auth = authenticator();
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "Digest ,,,=".into()),
        ("basic", "Basic YTpi".into()),
        ("no params", "Digest".into()),
        ("oversized", format!("Digest username=\"{}\"", "a".repeat(9000))),
        ("rfc 2069", edited(&auth, |c| (c.qop, c.nc, c.cnonce) = (None, None, None))),
        ("unknown qop", edited(&auth, |c| c.qop = Some(Qop::from_token("auth-conf")))),
        ("sha-256", edited(&auth, |c| c.algorithm = Some(Algorithm::from_name("SHA-256")))),
        ("aka", edited(&auth, |c| c.algorithm = Some(Algorithm::AkaV1Md5))),
        ("uri", edited(&auth, |c| c.uri = "/other".into())),
        ("empty response", edited(&auth, |c| c.response = String::new())),
        ("auts", edited(&auth, |c| c.auts = Some([0; 14]))),
        ("empty username", edited(&auth, |c| c.username = String::new())),
        ("long username", edited(&auth, |c| c.username = "b".repeat(256))),
    ];
    for (what, header) in cases {
        let r = run(&auth, &header, BODY, T0).err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!((r.status, r.event), (400, UaEvent::Rejected(UaFailure::Malformed)), "{what}: {r:?}");
    }
}

#[test]
fn user_agent_must_name_a_gba_client() {
    let auth = authenticator();
    for ua in [None, Some("curl/7.88.1"), Some("3gpp-gbax/1")] {
        let request = UaRequest { user_agent: ua, ..head(None) };
        assert_refused(run_with(&auth, &request, b"", T0, bsf), 403, UaFailure::NotGbaClient);
    }
    for ua in ["3gpp-gba", "curl/7.88.1 3gpp-gba-tmpi/1.0"] {
        let request = UaRequest { user_agent: Some(ua), ..head(None) };
        assert_eq!(run_with(&auth, &request, b"", T0, bsf).err().unwrap().event, UaEvent::Challenged);
    }
    let long = format!("3gpp-gba {}", "x".repeat(9000));
    let request = UaRequest { user_agent: Some(&long), ..head(None) };
    assert_refused(run_with(&auth, &request, b"", T0, bsf), 400, UaFailure::Malformed);

    let mut config = UaConfig::new(FQDN, [7; 32]);
    config.require_gba_user_agent = false;
    let lenient = UaAuthenticator::new(&config).unwrap();
    let request = UaRequest { user_agent: None, ..head(None) };
    assert_eq!(run_with(&lenient, &request, b"", T0, bsf).err().unwrap().event, UaEvent::Challenged);
}

#[test]
fn key_server_trouble_is_503_not_a_new_bootstrap() {
    let auth = authenticator();
    for error in [KeyError::Unavailable("down".into()), KeyError::Refused("403 unknown-naf".into())] {
        let (_, _, header) = signed_by_a(&auth, Qop::AuthInt);
        let r = run_with(&auth, &head(Some(&header)), BODY, T0, |_| Err(error.clone())).err().unwrap();
        assert_eq!((r.status, r.event), (503, UaEvent::Rejected(UaFailure::KeysUnavailable)));
        assert!(r.log_detail.is_some() && r.header("WWW-Authenticate").is_none());
    }
}

#[test]
fn a_key_source_answering_for_another_btid_is_an_internal_error() {
    let auth = authenticator();
    let (_, _, header) = signed_by_a(&auth, Qop::AuthInt);
    let r = run_with(&auth, &head(Some(&header)), BODY, T0, |_| Ok(record(BTID_B, 1))).err().unwrap();
    assert_eq!((r.status, r.event), (500, UaEvent::Rejected(UaFailure::Internal)));
}

#[test]
fn configuration_is_checked() {
    assert_eq!(UaAuthenticator::new(&UaConfig::new("", [0; 32])).unwrap_err(), ConfigError::InvalidFqdn);
    assert_eq!(UaAuthenticator::new(&UaConfig::new("a\"b", [0; 32])).unwrap_err(), ConfigError::InvalidFqdn);
    let mut c = UaConfig::new(FQDN, [0; 32]);
    c.nonce_lifetime = 0;
    assert_eq!(UaAuthenticator::new(&c).unwrap_err(), ConfigError::ZeroNonceLifetime);
    assert_eq!(authenticator().realm(), REALM);
}

#[test]
fn debug_output_holds_no_secret() {
    let auth = authenticator();
    let (_, _, header) = signed_by_a(&auth, Qop::AuthInt);
    let ok = run(&auth, &header, BODY, T0).unwrap();
    let password = String::from_utf8(record(BTID_A, 1).ua_password().expose_secret().to_vec()).unwrap();
    let texts = [format!("{:?}", UaConfig::new(FQDN, [0xab; 32])), format!("{auth:?}"), format!("{ok:?}")];
    for text in texts {
        assert!(!text.contains(&password), "{text}");
        assert!(!text.to_lowercase().contains("abab") && !text.contains("171"), "{text}");
        assert!(!text.contains("[1, 1, 1"), "{text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever arrives, the authenticator answers with a status and never panics.
    #[test]
    fn never_panics(
        authorization in proptest::option::of("(Digest |Basic )?[ -~]{0,200}"),
        user_agent in proptest::option::of("[ -~é]{0,40}"),
        uri in "[ -~]{0,40}",
        body in proptest::collection::vec(any::<u8>(), 0..64),
        now in T0 - 1000..T0 + 1000,
    ) {
        let auth = authenticator();
        let request = UaRequest {
            method: "POST",
            uri: &uri,
            authorization: authorization.as_deref(),
            user_agent: user_agent.as_deref(),
        };
        match run_with(&auth, &request, &body, now, bsf) {
            Ok(_) => prop_assert!(false, "random credentials were accepted"),
            Err(r) => prop_assert!([400, 401, 403].contains(&r.status)),
        }
    }

    /// Any change to a valid auth-int header is refused.
    #[test]
    fn tampered_headers_are_refused(position in 0usize..400, byte in 0x20u8..0x7f) {
        let auth = authenticator();
        let (_, _, header) = signed_by_a(&auth, Qop::AuthInt);
        let mut bytes = header.clone().into_bytes();
        let i = position % bytes.len();
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let tampered = String::from_utf8(bytes).unwrap();
        // Letter case in names and some tokens does not change meaning: only a changed meaning must fail.
        prop_assume!(!tampered.eq_ignore_ascii_case(&header));
        if run(&auth, &tampered, BODY, T0).is_ok() {
            // Harmless edits only: every value the response covers reads back the same (an
            // `algorithm` parameter that disappears still means MD5).
            let (a, b) = (Credentials::parse(&tampered).unwrap(), Credentials::parse(&header).unwrap());
            prop_assert_eq!(
                (&a.username, &a.realm, &a.nonce, &a.uri, &a.response, &a.cnonce, &a.qop, a.nc),
                (&b.username, &b.realm, &b.nonce, &b.uri, &b.response, &b.cnonce, &b.qop, b.nc)
            );
        }
    }
}
