//! The terminal's bootstrapping client against a small fake BSF (written here with
//! keycast-crypto and keycast-provisioning), with the emulated card over APDUs, on Milenage test
//! set 1 and the GBA worked example of reference vectors.md §2.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keycast_card::gba_me::GbaMeStore;
use keycast_card::usim::{Usim, UsimIdentity};
use keycast_card::{ApduCard, Emulator, Transport, TransportError};
use keycast_crypto::gba::{UA_PROTOCOL_HTTP_DIGEST, UA_PROTOCOL_MBMS};
use keycast_crypto::keys::{Ik, Opc, SubscriberKey};
use keycast_crypto::milenage::{Milenage, flip_res_lsb, gba_u_autn_star, sqn_from_u64, sqn_to_u64};
use keycast_gba::client::*;
use keycast_provisioning::bootstrapping::BootstrappingInfo;
use keycast_provisioning::digest::{
    Algorithm, AuthenticationInfo, Challenge, Credentials, GbaRealmPrefix, NonceCount, Password, Qop,
};
use keycast_provisioning::time::UtcTime;
use proptest::prelude::*;

const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
const BSF: &str = "bsf.example.org";
const BSM: &str = "bmsc.example.org";
const BTID: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org";
const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
const RAND1: &str = "23553cbe9637a89d218ae64dae47bf35";
const SQN1: [u8; 6] = [0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x07];
const AMF1: [u8; 2] = [0xb9, 0xb9];
/// cnonce "0a4f113b" of vectors.md §2.
const CNONCE: [u8; 4] = [0x0a, 0x4f, 0x11, 0x3b];
const LIFETIME: &str = "2026-12-01T00:00:00Z";

fn now() -> UtcTime {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

fn lifetime() -> UtcTime {
    LIFETIME.parse().unwrap()
}

fn rand1() -> [u8; 16] {
    hex::decode(RAND1).unwrap().try_into().unwrap()
}

/// base64(RAND ‖ AUTN*) of vectors.md §2, GBA_U variant, no server-specific data.
fn gba_u_nonce() -> String {
    STANDARD.encode(hex::decode(format!("{RAND1}55f328b43577b9b98c7f3f0d723fb244")).unwrap())
}

fn k() -> SubscriberKey {
    SubscriberKey::from_bytes(hex::decode(K).unwrap().try_into().unwrap())
}

fn opc() -> Opc {
    Opc::from_bytes(hex::decode(OPC).unwrap().try_into().unwrap())
}

/// The emulated card of Milenage set 1, over APDUs; it last saw an SQN just below set 1's.
fn card() -> ApduCard<Emulator> {
    let identity =
        UsimIdentity { imsi: "001010000000001".into(), impi: IMPI.into(), iccid: "8900100000000000001".into() };
    let mut usim = Usim::new(identity, k(), opc());
    usim.sqn_ms = [0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x00];
    ApduCard::new(Emulator::new(usim))
}

fn config(mode: GbaMode) -> BootstrapConfig {
    BootstrapConfig { bsf_host: BSF.into(), impi: IMPI.into(), user_agent: "Keycast/0.1".into(), mode }
}

/// A tiny BSF: one subscriber (set 1), Digest AKA per RFC 3310 / 24.109, GBA_U or GBA_ME
/// vectors, AUTS resynchronisation.
struct FakeBsf {
    milenage: Milenage,
    gba_u: bool,
    rand: [u8; 16],
    sqn: [u8; 6],
    amf: [u8; 2],
    /// The expected password of the outstanding challenge (XRES, flipped for GBA_U).
    xres: Vec<u8>,
    nonce: String,
    /// Tamper with the AUTN MAC of the next challenge.
    bad_mac: bool,
    /// Answer a verified response with a 401 again.
    challenge_forever: bool,
}

impl FakeBsf {
    fn new(gba_u: bool) -> Self {
        FakeBsf {
            milenage: Milenage::new(&k(), &opc()),
            gba_u,
            rand: rand1(),
            sqn: SQN1,
            amf: AMF1,
            xres: Vec::new(),
            nonce: String::new(),
            bad_mac: false,
            challenge_forever: false,
        }
    }

    fn challenge(&mut self) -> HttpResponse {
        let (res, _ck, ik, _ak) = self.milenage.f2345(&self.rand);
        let mut autn = self.milenage.build_autn(self.sqn, self.amf, &self.rand);
        if self.gba_u {
            autn = gba_u_autn_star(&autn, &ik);
            self.xres = flip_res_lsb(&res).expose_secret().to_vec();
        } else {
            self.xres = res.expose_secret().to_vec();
        }
        if self.bad_mac {
            autn[15] ^= 0x01;
        }
        let mut nonce = self.rand.to_vec();
        nonce.extend_from_slice(&autn);
        self.nonce = STANDARD.encode(&nonce);
        let challenge = Challenge {
            realm: BSF.into(),
            nonce: self.nonce.clone(),
            opaque: Some("5ccc069c403ebaf9f0171e9517f40e41".into()),
            algorithm: Some(Algorithm::AkaV1Md5),
            qop: vec![Qop::AuthInt],
            stale: false,
            other: vec![],
        };
        HttpResponse {
            status: 401,
            headers: vec![
                ("Server".into(), "FakeBsf 3gpp-gba-tmpi".into()),
                ("WWW-Authenticate".into(), challenge.to_header_value().unwrap()),
            ],
            body: vec![],
        }
    }

    /// Answers one client request.
    fn serve(&mut self, request: &HttpRequest) -> HttpResponse {
        assert_eq!(request.method, "GET");
        assert_eq!(request.uri, "/");
        assert_eq!(request.header("Host"), Some(BSF));
        assert!(request.header("User-Agent").unwrap().contains("3gpp-gba"));
        let creds = Credentials::parse(request.header("Authorization").unwrap()).unwrap();
        assert_eq!(creds.username, IMPI);
        if creds.nonce.is_empty() {
            return self.challenge();
        }
        assert_eq!(creds.nonce, self.nonce, "the client answers the outstanding challenge");
        assert_eq!(creds.opaque.as_deref(), Some("5ccc069c403ebaf9f0171e9517f40e41"));
        if let Some(auts) = creds.auts {
            creds.verify_response(&Password::empty(), "GET", b"").expect("AUTS request with the empty password");
            let sqn_ms = self.milenage.recover_sqn_ms(&self.rand, &auts).expect("AUTS verifies");
            self.sqn = sqn_from_u64(sqn_to_u64(sqn_ms) + 1);
            self.rand = [0x11; 16];
            return self.challenge();
        }
        let password = Password::from_bytes(&self.xres);
        if creds.verify_response(&password, "GET", b"").is_err() || self.challenge_forever {
            return self.challenge();
        }
        let b_tid = keycast_crypto::gba::b_tid(&self.rand, BSF);
        let body = BootstrappingInfo::new(&b_tid, lifetime(), Some(now())).unwrap().to_xml().into_bytes();
        let info = creds.authentication_info(&password, &body, None).unwrap();
        ok_response(&info, body)
    }
}

fn ok_response(info: &AuthenticationInfo, body: Vec<u8>) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![
            ("Authentication-Info".into(), info.to_header_value().unwrap()),
            ("Content-Type".into(), "application/vnd.3gpp.bsf+xml".into()),
        ],
        body,
    }
}

/// Runs the client against the BSF until it is done or fails; returns the result and the
/// requests the client sent.
fn run(
    client: &mut Bootstrapper,
    bsf: &mut FakeBsf,
    card: &mut ApduCard<Emulator>,
    mut gba_me: Option<&mut GbaMeStore>,
) -> (Result<Bootstrapped, BootstrapError>, Vec<HttpRequest>) {
    let mut request = client.start();
    let mut sent = vec![request.clone()];
    for _ in 0..10 {
        let response = bsf.serve(&request);
        match client.handle(response, card, gba_me.as_deref_mut(), now(), &CNONCE) {
            Ok(Step::Send(next)) => {
                sent.push(next.clone());
                request = next;
            }
            Ok(Step::Done(done)) => return (Ok(done), sent),
            Err(e) => return (Err(e), sent),
        }
    }
    panic!("the client did not finish");
}

fn bootstrapped_gba_u() -> (ApduCard<Emulator>, Bootstrapped) {
    let mut card = card();
    let mut client = Bootstrapper::new(config(GbaMode::GbaU));
    let (done, _) = run(&mut client, &mut FakeBsf::new(true), &mut card, None);
    (card, done.unwrap())
}

#[test]
fn gba_u_full_bootstrap() {
    let mut card = card();
    let mut bsf = FakeBsf::new(true);
    let mut client = Bootstrapper::new(config(GbaMode::GbaU));

    let first = client.start();
    assert_eq!(first.method, "GET");
    assert_eq!(first.uri, "/");
    assert!(first.body.is_empty());
    assert_eq!(first.header("user-agent"), Some("Keycast/0.1 3gpp-gba"));
    let initial = Credentials::parse(first.header("Authorization").unwrap()).unwrap();
    assert_eq!(initial, Credentials::initial(IMPI, BSF, "/"));
    let text = first.header("Authorization").unwrap();
    assert!(text.contains("nonce=\"\"") && text.contains("response=\"\""), "{text}");

    let challenge = bsf.serve(&first);
    assert_eq!(bsf.nonce, gba_u_nonce());
    let Ok(Step::Send(answer)) = client.handle(challenge, &mut card, None, now(), &CNONCE) else { panic!() };
    // vectors.md §2, GBA_U: RES with the LSB flipped as the password (the exact value of §2 is
    // checked in `gba_u_authorization_matches_vector`, whose nonce carries AUTN, not AUTN*).
    let creds = Credentials::parse(answer.header("Authorization").unwrap()).unwrap();
    let flipped_res = Password::from_bytes(&hex::decode("a54211d5e3ba50be").unwrap());
    assert_eq!(creds.verify_response(&flipped_res, "GET", b""), Ok(()));
    assert_eq!(creds.realm, BSF);
    assert_eq!(creds.uri, "/");
    assert_eq!(creds.qop, Some(Qop::AuthInt));
    assert_eq!(creds.nc, Some(NonceCount(1)));
    assert_eq!(creds.cnonce.as_deref(), Some("0a4f113b"));
    assert_eq!(creds.algorithm, Some(Algorithm::AkaV1Md5));
    assert_eq!(creds.auts, None);

    let ok = bsf.serve(&answer);
    let Ok(Step::Done(done)) = client.handle(ok, &mut card, None, now(), &CNONCE) else { panic!() };
    assert_eq!(done, Bootstrapped { b_tid: BTID.into(), lifetime: lifetime(), mode: GbaMode::GbaU });
    // The ME wrote B-TID and lifetime into EF_GBABP.
    let gbabp = card.read_gba_bp().unwrap().unwrap();
    assert_eq!(gbabp.rand, rand1());
    assert_eq!(gbabp.b_tid.as_deref(), Some(BTID));
    assert_eq!(gbabp.lifetime.as_deref(), Some(LIFETIME));
    // The run is over.
    assert_eq!(
        client.handle(HttpResponse::default(), &mut card, None, now(), &CNONCE),
        Err(BootstrapError::OutOfOrder)
    );
}

/// A link to the emulated card that turns the AUTN of a GBA bootstrapping AUTHENTICATE into
/// AUTN* (33.220 §5.3.2), so that vectors.md §2's nonce, which carries the plain AUTN, can drive
/// a GBA_U card.
struct AutnStarLink {
    card: Emulator,
    ik: Ik,
}

impl Transport for AutnStarLink {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut command = command.to_vec();
        // 00 88 00 84 Lc DD 10 RAND(16) 10 AUTN(16) …
        if command.len() >= 40 && command[1] == 0x88 && command[3] == 0x84 && command[5] == 0xdd {
            let autn: [u8; 16] = command[24..40].try_into().unwrap();
            command[24..40].copy_from_slice(&gba_u_autn_star(&autn, &self.ik));
        }
        self.card.transmit(&command)
    }
}

#[test]
fn gba_u_authorization_matches_vector() {
    let (_, _, ik, _) = Milenage::new(&k(), &opc()).f2345(&rand1());
    let mut card = ApduCard::new(AutnStarLink { card: card().into_transport(), ik });
    let mut client = Bootstrapper::new(config(GbaMode::GbaU));
    let _ = client.start();
    let challenge = challenge_with(
        "Digest realm=\"bsf.example.org\", nonce=\"I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M=\", \
         algorithm=AKAv1-MD5, qop=\"auth-int\"",
    );
    let Ok(Step::Send(answer)) = client.handle(challenge, &mut card, None, now(), &CNONCE) else { panic!() };
    let text = answer.header("Authorization").unwrap();
    let creds = Credentials::parse(text).unwrap();
    assert_eq!(creds.response, "c89bfc70a1bc5efcdcd0532a9ebef7ef", "{text}");
    assert_eq!(
        text,
        "Digest username=\"001010000000001@ims.mnc001.mcc001.3gppnetwork.org\", realm=\"bsf.example.org\", \
         nonce=\"I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M=\", uri=\"/\", qop=auth-int, nc=00000001, \
         cnonce=\"0a4f113b\", response=\"c89bfc70a1bc5efcdcd0532a9ebef7ef\", algorithm=AKAv1-MD5"
    );

    let password = Password::from_bytes(&hex::decode("a54211d5e3ba50be").unwrap());
    let body = BootstrappingInfo::new(BTID, lifetime(), None).unwrap().to_xml().into_bytes();
    let info = creds.authentication_info(&password, &body, None).unwrap();
    let Ok(Step::Done(done)) = client.handle(ok_response(&info, body), &mut card, None, now(), &CNONCE) else {
        panic!()
    };
    assert_eq!(done.b_tid, BTID);
}

#[test]
fn gba_me_full_bootstrap() {
    let mut card = card();
    let mut store = GbaMeStore::default();
    let mut bsf = FakeBsf::new(false);
    let mut client = Bootstrapper::new(config(GbaMode::GbaMe));
    let (done, sent) = run(&mut client, &mut bsf, &mut card, Some(&mut store));
    let done = done.unwrap();
    assert_eq!(done, Bootstrapped { b_tid: BTID.into(), lifetime: lifetime(), mode: GbaMode::GbaMe });
    assert_eq!(sent.len(), 2);
    // vectors.md §2, GBA_ME: the 8 raw RES octets as the password.
    let creds = Credentials::parse(sent[1].header("Authorization").unwrap()).unwrap();
    assert_eq!(creds.response, "78486094df22fe6ec39138ac4d2d6e8d");
    assert_eq!(store.b_tid(), Some(BTID));
    // The card's GBA context was not used.
    assert!(card.transport().usim().gba.is_none());
}

#[test]
fn gba_me_without_store_is_refused_before_the_card_runs() {
    let mut card = card();
    let mut client = Bootstrapper::new(config(GbaMode::GbaMe));
    let (done, _) = run(&mut client, &mut FakeBsf::new(false), &mut card, None);
    assert_eq!(done, Err(BootstrapError::NoGbaMeStore));
    assert_eq!(card.transport().usim().sqn_ms, [0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x00]);
}

#[test]
fn autn_mac_failure_aborts_without_answering() {
    for mode in [GbaMode::GbaU, GbaMode::GbaMe] {
        let mut card = card();
        let mut store = GbaMeStore::default();
        let mut bsf = FakeBsf::new(mode == GbaMode::GbaU);
        bsf.bad_mac = true;
        let mut client = Bootstrapper::new(config(mode));
        let first = client.start();
        let challenge = bsf.serve(&first);
        assert_eq!(
            client.handle(challenge.clone(), &mut card, Some(&mut store), now(), &CNONCE),
            Err(BootstrapError::NetworkAuthFailure)
        );
        // No further request, whatever the BSF sends next.
        assert_eq!(
            client.handle(challenge, &mut card, Some(&mut store), now(), &CNONCE),
            Err(BootstrapError::OutOfOrder)
        );
        assert_eq!(card.transport().usim().sqn_ms, [0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x00]);
        assert!(card.transport().usim().gba.is_none());
        assert_eq!(store.b_tid(), None);
    }
}

#[test]
fn sync_failure_sends_auts_then_succeeds() {
    let mut card = card();
    // SQN_MS = 000000000021: set 1's SQN is too far ahead, the card answers AUTS.
    card.transport_mut().usim_mut().sqn_ms = [0, 0, 0, 0, 0, 0x21];
    let mut bsf = FakeBsf::new(true);
    let mut client = Bootstrapper::new(config(GbaMode::GbaU));
    let (done, sent) = run(&mut client, &mut bsf, &mut card, None);
    let done = done.unwrap();
    assert_eq!(sent.len(), 3, "initial, AUTS, answer");
    assert_eq!(client.rounds(), 2);

    let resync = Credentials::parse(sent[1].header("Authorization").unwrap()).unwrap();
    // vectors.md §2: AUTS for SQN_MS = 000000000021.
    assert_eq!(hex::encode(resync.auts.unwrap()), "451e8beca41a80125eca8884b56a");
    assert_eq!(resync.verify_response(&Password::empty(), "GET", b""), Ok(()));
    assert_eq!(resync.nonce, gba_u_nonce());

    let answer = Credentials::parse(sent[2].header("Authorization").unwrap()).unwrap();
    assert_eq!(answer.auts, None);
    assert_eq!(answer.nc, Some(NonceCount(1)));
    assert_eq!(done.b_tid, keycast_crypto::gba::b_tid(&[0x11; 16], BSF));
    assert_eq!(card.transport().usim().sqn_ms, [0, 0, 0, 0, 0, 0x22]);
    assert_eq!(card.read_gba_bp().unwrap().unwrap().b_tid.as_deref(), Some(done.b_tid.as_str()));
}

#[test]
fn bad_rspauth_is_refused() {
    // rspauth over another body; rspauth with another password; rspauth absent; a wrong echo.
    let tamperings: [fn(&mut HttpResponse); 4] = [
        |r| r.body.extend_from_slice(b"<!-- -->"),
        |r| {
            let mut info = AuthenticationInfo::parse(r.header("Authentication-Info").unwrap()).unwrap();
            info.rspauth = Some("00112233445566778899aabbccddeeff".into());
            r.headers[0].1 = info.to_header_value().unwrap();
        },
        |r| {
            let mut info = AuthenticationInfo::parse(r.header("Authentication-Info").unwrap()).unwrap();
            info.rspauth = None;
            r.headers[0].1 = info.to_header_value().unwrap();
        },
        |r| {
            let mut info = AuthenticationInfo::parse(r.header("Authentication-Info").unwrap()).unwrap();
            info.cnonce = Some("deadbeef".into());
            r.headers[0].1 = info.to_header_value().unwrap();
        },
    ];
    for tamper in tamperings {
        let mut card = card();
        let mut bsf = FakeBsf::new(true);
        let mut client = Bootstrapper::new(config(GbaMode::GbaU));
        let first = client.start();
        let challenge = bsf.serve(&first);
        let Ok(Step::Send(answer)) = client.handle(challenge, &mut card, None, now(), &CNONCE) else { panic!() };
        let mut ok = bsf.serve(&answer);
        tamper(&mut ok);
        assert_eq!(client.handle(ok, &mut card, None, now(), &CNONCE), Err(BootstrapError::RspauthMismatch));
        // Nothing of the refused answer reached the card.
        assert_eq!(card.read_gba_bp().unwrap().unwrap().b_tid, None);
    }
}

#[test]
fn bsf_challenging_forever_is_bounded() {
    let mut card = card();
    let mut bsf = FakeBsf::new(true);
    bsf.challenge_forever = true;
    let mut client = Bootstrapper::new(config(GbaMode::GbaU));
    let (done, sent) = run(&mut client, &mut bsf, &mut card, None);
    assert_eq!(done, Err(BootstrapError::TooManyRounds));
    assert_eq!(sent.len(), 1 + MAX_ROUNDS as usize);
    assert_eq!(client.rounds(), MAX_ROUNDS + 1);
}

#[test]
fn bsf_error_status_is_reported() {
    let mut card = card();
    let mut client = Bootstrapper::new(config(GbaMode::GbaU));
    let _ = client.start();
    let forbidden = HttpResponse { status: 403, ..HttpResponse::default() };
    assert_eq!(client.handle(forbidden, &mut card, None, now(), &CNONCE), Err(BootstrapError::BsfRejected(403)));
}

fn challenge_with(header: &str) -> HttpResponse {
    HttpResponse { status: 401, headers: vec![("WWW-Authenticate".into(), header.into())], body: vec![] }
}

#[test]
fn malformed_challenges_are_refused_before_the_card_runs() {
    let good_nonce = gba_u_nonce();
    let cases = [
        HttpResponse { status: 401, ..HttpResponse::default() },
        challenge_with("Basic realm=\"bsf.example.org\""),
        challenge_with("Digest realm=\"bsf.example.org\", nonce=\"unterminated"),
        challenge_with(
            "Digest realm=\"bsf.example.org\", nonce=\"I1U8vpY3qJ0hiuZNrke/NQ==\", algorithm=AKAv1-MD5, qop=\"auth-int\"",
        ),
        challenge_with("Digest realm=\"bsf.example.org\", nonce=\"***\", algorithm=AKAv1-MD5, qop=\"auth-int\""),
        challenge_with(&format!(
            "Digest realm=\"bsf.example.org\", nonce=\"{good_nonce}\", algorithm=MD5, qop=\"auth-int\""
        )),
        challenge_with(&format!(
            "Digest realm=\"bsf.example.org\", nonce=\"{good_nonce}\", algorithm=AKAv1-MD5, qop=\"auth\""
        )),
        challenge_with(&format!("Digest realm=\"bsf.example.org\", nonce=\"{good_nonce}\", algorithm=AKAv1-MD5")),
    ];
    for response in cases {
        let mut card = card();
        let mut client = Bootstrapper::new(config(GbaMode::GbaU));
        let _ = client.start();
        let result = client.handle(response.clone(), &mut card, None, now(), &CNONCE);
        assert!(matches!(result, Err(BootstrapError::Malformed { .. })), "{response:?}: {result:?}");
        assert_eq!(card.transport().usim().sqn_ms, [0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x00], "card untouched");
    }
    // A bad cnonce random from the caller is refused before the card runs as well.
    let mut card = card();
    let mut client = Bootstrapper::new(config(GbaMode::GbaU));
    let first = client.start();
    let challenge = FakeBsf::new(true).serve(&first);
    assert_eq!(client.handle(challenge, &mut card, None, now(), &[1; 3]), Err(BootstrapError::BadCnonceRandom(3)));
    assert!(card.transport().usim().gba.is_none());
}

#[test]
fn malformed_success_answers_are_refused() {
    // A 200 whose rspauth verifies but whose body is not a BootstrappingInfo, or whose lifetime
    // has passed; a 200 to the initial request; a 200 without Authentication-Info.
    let bodies: [&[u8]; 3] = [
        b"<not-xml",
        b"<BootstrappingInfo xmlns=\"urn:other\"><btid>x@y</btid><lifetime>2026-12-01T00:00:00Z</lifetime></BootstrappingInfo>",
        b"<BootstrappingInfo xmlns=\"uri:3gpp-gba\"><btid>x@y</btid><lifetime>2026-01-01T00:00:00Z</lifetime></BootstrappingInfo>",
    ];
    for body in bodies {
        let mut card = card();
        let mut bsf = FakeBsf::new(true);
        let mut client = Bootstrapper::new(config(GbaMode::GbaU));
        let first = client.start();
        let challenge = bsf.serve(&first);
        let Ok(Step::Send(answer)) = client.handle(challenge, &mut card, None, now(), &CNONCE) else { panic!() };
        let creds = Credentials::parse(answer.header("Authorization").unwrap()).unwrap();
        let info = creds.authentication_info(&Password::from_bytes(&bsf.xres), body, None).unwrap();
        let result = client.handle(ok_response(&info, body.to_vec()), &mut card, None, now(), &CNONCE);
        assert!(matches!(result, Err(BootstrapError::Malformed { .. })), "{result:?}");
        assert_eq!(card.read_gba_bp().unwrap().unwrap().b_tid, None);
    }

    let mut card = card();
    let mut client = Bootstrapper::new(config(GbaMode::GbaU));
    let _ = client.start();
    let early = HttpResponse { status: 200, ..HttpResponse::default() };
    assert!(matches!(client.handle(early, &mut card, None, now(), &CNONCE), Err(BootstrapError::Malformed { .. })));

    let mut bsf = FakeBsf::new(true);
    let mut client = Bootstrapper::new(config(GbaMode::GbaU));
    let first = client.start();
    let challenge = bsf.serve(&first);
    let Ok(Step::Send(answer)) = client.handle(challenge, &mut card, None, now(), &CNONCE) else { panic!() };
    let mut ok = bsf.serve(&answer);
    ok.headers.retain(|(n, _)| n != "Authentication-Info");
    assert!(matches!(client.handle(ok, &mut card, None, now(), &CNONCE), Err(BootstrapError::Malformed { .. })));
}

#[test]
fn handle_before_start_is_out_of_order() {
    let mut card = card();
    let mut client = Bootstrapper::new(config(GbaMode::GbaU));
    let challenge = FakeBsf::new(true).challenge();
    assert_eq!(client.handle(challenge, &mut card, None, now(), &CNONCE), Err(BootstrapError::OutOfOrder));
}

#[test]
fn lifetime_expiry_needs_bootstrap() {
    let mut state = BootstrapState::new();
    assert!(state.needs_bootstrap(now()));
    assert_eq!(state.b_tid(), None);
    let (_card, done) = bootstrapped_gba_u();
    state.record(done);
    assert_eq!(state.b_tid(), Some(BTID));
    let end = lifetime().unix_seconds();
    let at = |s: u64| UtcTime::from_unix_seconds(s).unwrap();
    assert!(!state.needs_bootstrap(now()));
    assert!(!state.needs_bootstrap(at(end - LIFETIME_MARGIN_SECS - 1)));
    assert!(state.needs_bootstrap(at(end - LIFETIME_MARGIN_SECS)), "within the safety margin");
    assert!(state.needs_bootstrap(at(end)));
    assert!(state.needs_bootstrap(at(end + 3600)));
    let strict = state.clone().with_margin(0);
    assert!(!strict.needs_bootstrap(at(end - 1)));
    assert!(strict.needs_bootstrap(at(end)));
    state.clear();
    assert!(state.needs_bootstrap(now()));
}

#[test]
fn naf_keys_gba_u_match_p7() {
    let (mut card, done) = bootstrapped_gba_u();
    let mut state = BootstrapState::new();
    state.record(done);
    let creds = naf_keys(&state, &mut card, None, BSM, IMPI, UA_PROTOCOL_MBMS).unwrap();
    assert_eq!(creds.b_tid, BTID);
    // vectors.md §2: SRK = Ks_ext_NAF for an MBMS card.
    assert_eq!(
        hex::encode(creds.srk.expose_secret()),
        "79d8098e4b9ef12c858a0da3471f6b2d29b4cbb549500dcb3c88154562de340d"
    );
    assert_eq!(ua_digest_password(&creds.srk).expose_secret(), b"edgJjkue8SyFig2jRx9rLSm0y7VJUA3LPIgVRWLeNA0=");
    assert_eq!(creds.realm_prefix, GbaRealmPrefix::Bootstrapping);
    assert_eq!(creds.realm(), "3GPP-bootstrapping@bmsc.example.org");
    assert!(creds.realm_matches("3GPP-bootstrapping@BMSC.example.org"));
    assert!(!creds.realm_matches("3GPP-bootstrapping@evil.example.org"));
    assert!(!creds.realm_matches("3GPP-bootstrapping-uicc@bmsc.example.org"));
    // SMK = Ks_int_NAF stayed in the card as the BSM's MUK.
    let usim = card.transport().usim();
    assert_eq!(usim.naf_keys.len(), 1);
    assert_eq!(
        hex::encode(usim.naf_keys[0].ks_int_naf.expose_secret()),
        "5ecf80629e0becb2def8d9b3cb80ae3f99ab18f9c50f49fd5da0e6cfb6d0ee5f"
    );

    // Plain HTTP Digest Ua protocol identifier (vectors.md §2).
    let plain = naf_keys(&state, &mut card, None, BSM, IMPI, UA_PROTOCOL_HTTP_DIGEST).unwrap();
    assert_eq!(
        hex::encode(plain.srk.expose_secret()),
        "f44955937d0db165de245ab9db1e55fdde8d75fe651f79275b4253dc3218c1c5"
    );

    // Card without MBMS support: SRK = MRK(Ks_ext_NAF).
    let mut non_mbms = state.clone();
    non_mbms.record(Bootstrapped { mode: GbaMode::GbaUNonMbmsCard, ..state.current().unwrap().clone() });
    let creds = naf_keys(&non_mbms, &mut card, None, BSM, IMPI, UA_PROTOCOL_MBMS).unwrap();
    assert_eq!(
        hex::encode(creds.srk.expose_secret()),
        "06e4f3af25528d00c8739a646ea497dce1d98a7eb6f55f80b7b6a20e62e53623"
    );

    // The whole Ua Digest toward the BSM with these credentials (vectors.md §3 challenge).
    let challenge = Challenge::parse(
        "Digest realm=\"3GPP-bootstrapping@bmsc.example.org\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
         algorithm=MD5, qop=\"auth,auth-int\"",
    )
    .unwrap();
    let mut ua = creds.digest_client(challenge.clone(), &[Qop::AuthInt]).unwrap();
    let sent = ua.authorize("POST", "/keymanagement?requesttype=register", b"x", &CNONCE).unwrap();
    assert_eq!(sent.credentials().username, BTID);
    let wrong_realm = Challenge { realm: "3GPP-bootstrapping@evil.example.org".into(), ..challenge };
    assert!(creds.digest_client(wrong_realm, &[Qop::AuthInt]).is_none());
}

#[test]
fn naf_keys_gba_me_match_p7() {
    let mut card = card();
    let mut store = GbaMeStore::default();
    let mut client = Bootstrapper::new(config(GbaMode::GbaMe));
    let (done, _) = run(&mut client, &mut FakeBsf::new(false), &mut card, Some(&mut store));
    let mut state = BootstrapState::new();
    state.record(done.unwrap());
    let creds = naf_keys(&state, &mut card, Some(&mut store), BSM, IMPI, UA_PROTOCOL_MBMS).unwrap();
    assert_eq!(creds.b_tid, BTID);
    // vectors.md §2: SRK = MRK(Ks_NAF).
    assert_eq!(
        hex::encode(creds.srk.expose_secret()),
        "06e4f3af25528d00c8739a646ea497dce1d98a7eb6f55f80b7b6a20e62e53623"
    );
    // vectors.md §3: the Ua password.
    assert_eq!(ua_digest_password(&creds.srk).expose_secret(), b"BuTzryVSjQDIc5pkbqSX3OHZin629V+At7aiDmLlNiM=");
    assert_eq!(
        naf_keys(&state, &mut card, Some(&mut store), BSM, IMPI, UA_PROTOCOL_HTTP_DIGEST),
        Err(NafKeyError::UnsupportedUaProtocol(UA_PROTOCOL_HTTP_DIGEST))
    );
    assert_eq!(naf_keys(&state, &mut card, None, BSM, IMPI, UA_PROTOCOL_MBMS), Err(NafKeyError::NoGbaMeStore));
    let mut other = GbaMeStore::default();
    assert_eq!(
        naf_keys(&state, &mut card, Some(&mut other), BSM, IMPI, UA_PROTOCOL_MBMS),
        Err(NafKeyError::StoreMismatch)
    );
}

#[test]
fn naf_keys_need_a_bootstrap() {
    let mut card = card();
    assert_eq!(
        naf_keys(&BootstrapState::new(), &mut card, None, BSM, IMPI, UA_PROTOCOL_MBMS),
        Err(NafKeyError::NotBootstrapped)
    );
    // The terminal's record says GBA_U, but the card holds no Ks: the card refuses (6985).
    let mut state = BootstrapState::new();
    state.record(Bootstrapped { b_tid: BTID.into(), lifetime: lifetime(), mode: GbaMode::GbaU });
    assert!(matches!(naf_keys(&state, &mut card, None, BSM, IMPI, UA_PROTOCOL_MBMS), Err(NafKeyError::Card(_))));
}

#[test]
fn ua_401_with_btid_means_bootstrap_again() {
    assert!(rebootstrap_needed(401, true));
    assert!(!rebootstrap_needed(401, false));
    assert!(!rebootstrap_needed(200, true));
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("WWW-Authenticate".to_owned()),
        Just("www-authenticate".to_owned()),
        Just("Authentication-Info".to_owned()),
        Just("Content-Type".to_owned()),
        "[ -~]{0,20}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "Digest [ -~]{0,200}",
        "Digest realm=\"bsf.example.org\", nonce=\"[A-Za-z0-9+/=]{0,64}\", algorithm=AKAv1-MD5, qop=\"auth-int\"",
        "qop=auth-int, rspauth=\"[0-9a-f]{32}\", cnonce=\"0a4f113b\", nc=00000001",
        "\\PC{0,100}",
    ]
}

fn response() -> impl Strategy<Value = HttpResponse> {
    (
        prop_oneof![Just(200u16), Just(401u16), any::<u16>()],
        proptest::collection::vec((header_name(), header_value()), 0..4),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(status, headers, body)| HttpResponse { status, headers, body })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Arbitrary answers from the network never panic, in either state of the run, and never
    /// complete a bootstrap.
    #[test]
    fn arbitrary_bsf_answers_never_panic(first in response(), second in response(), answered in any::<bool>()) {
        let mut card = card();
        let mut store = GbaMeStore::default();
        let mut client = Bootstrapper::new(config(GbaMode::GbaU));
        let request = client.start();
        if answered {
            let mut bsf = FakeBsf::new(true);
            let challenge = bsf.serve(&request);
            prop_assert!(matches!(client.handle(challenge, &mut card, None, now(), &CNONCE), Ok(Step::Send(_))));
        }
        for response in [first, second] {
            let result = client.handle(response, &mut card, Some(&mut store), now(), &CNONCE);
            prop_assert!(!matches!(result, Ok(Step::Done(_))));
        }
    }
}

/// The client against the real BSF core ([`keycast_gba::bsf::Bsf`] with its [`MemoryStore`]):
/// both GBA types, a resynchronisation, and Zn keys that match the terminal's.
mod against_bsf_core {
    use super::*;
    use keycast_crypto::gba::NafId;
    use keycast_gba::bsf::{
        Bsf, BsfConfig, GbaType, MemoryStore, SeededRandom, Subscriber, UbRequest, ZnKeys, ZnRequest,
    };

    fn bsf(gba_type: GbaType) -> (Bsf, MemoryStore) {
        let mut config = BsfConfig::new(BSF, [7; 32]);
        config.authorised_nafs = vec![BSM.into()];
        let store = MemoryStore::new();
        store.insert_subscriber(Subscriber {
            impi: IMPI.into(),
            imsi: "001010000000001".into(),
            k: k(),
            opc: opc(),
            // The next vector carries set 1's SQN (step 32).
            sqn: 0xff9b_b4d0_b5e7,
            amf: AMF1,
            gba_type,
        });
        (Bsf::new(config).unwrap(), store)
    }

    async fn run_core(
        mode: GbaMode,
        bsf: &mut Bsf,
        store: &MemoryStore,
        card: &mut ApduCard<Emulator>,
        mut gba_me: Option<&mut GbaMeStore>,
    ) -> (Result<Bootstrapped, BootstrapError>, usize) {
        let mut rng = SeededRandom::new([9; 32]);
        rng.queue(&rand1());
        let mut client = Bootstrapper::new(config(mode));
        let mut request = client.start();
        for sent in 1..10 {
            let answer = bsf
                .handle_ub(
                    store,
                    &UbRequest {
                        method: &request.method,
                        uri: &request.uri,
                        authorization: request.header("Authorization"),
                        user_agent: request.header("User-Agent"),
                        body: &request.body,
                    },
                    now().unix_seconds(),
                    &mut rng,
                )
                .await;
            let response = HttpResponse { status: answer.status, headers: answer.headers, body: answer.body };
            match client.handle(response, card, gba_me.as_deref_mut(), now(), &[0x42; 16]) {
                Ok(Step::Send(next)) => request = next,
                Ok(Step::Done(done)) => return (Ok(done), sent),
                Err(e) => return (Err(e), sent),
            }
        }
        panic!("no end");
    }

    #[tokio::test]
    async fn gba_u_end_to_end_with_zn() {
        let (mut bsf, store) = bsf(GbaType::GbaU);
        let mut card = card();
        let (done, sent) = run_core(GbaMode::GbaU, &mut bsf, &store, &mut card, None).await;
        let done = done.unwrap();
        assert_eq!(sent, 2);
        assert_eq!(done.b_tid, BTID);
        assert_eq!(done.lifetime.unix_seconds(), now().unix_seconds() + 86_400);
        let mut state = BootstrapState::new();
        state.record(done);
        let creds = naf_keys(&state, &mut card, None, BSM, IMPI, UA_PROTOCOL_MBMS).unwrap();
        let naf_id = NafId::mbms(BSM);
        let zn = bsf
            .zn_keys(
                &store,
                &ZnRequest { btid: BTID, naf_id: naf_id.as_bytes(), naf_is_gba_u_aware: true },
                now().unix_seconds(),
            )
            .await
            .unwrap();
        let ZnKeys::U { ks_ext_naf, ks_int_naf: Some(ks_int_naf) } = zn.keys else { panic!("{zn:?}") };
        assert_eq!(ks_ext_naf.expose_secret(), creds.srk.expose_secret());
        assert_eq!(
            hex::encode(ks_ext_naf.expose_secret()),
            "79d8098e4b9ef12c858a0da3471f6b2d29b4cbb549500dcb3c88154562de340d"
        );
        assert_eq!(card.transport().usim().naf_keys[0].ks_int_naf.expose_secret(), ks_int_naf.expose_secret());
    }

    #[tokio::test]
    async fn gba_me_end_to_end_with_zn() {
        let (mut bsf, store) = bsf(GbaType::GbaMe);
        let mut card = card();
        let mut me = GbaMeStore::default();
        let (done, _) = run_core(GbaMode::GbaMe, &mut bsf, &store, &mut card, Some(&mut me)).await;
        let mut state = BootstrapState::new();
        state.record(done.unwrap());
        let creds = naf_keys(&state, &mut card, Some(&mut me), BSM, IMPI, UA_PROTOCOL_MBMS).unwrap();
        let naf_id = NafId::mbms(BSM);
        let zn = bsf
            .zn_keys(
                &store,
                &ZnRequest { btid: BTID, naf_id: naf_id.as_bytes(), naf_is_gba_u_aware: false },
                now().unix_seconds(),
            )
            .await
            .unwrap();
        let ZnKeys::Me { ks_naf } = zn.keys else { panic!("{zn:?}") };
        assert_eq!(keycast_crypto::gba::mrk(ks_naf.expose_secret()), creds.srk);
    }

    #[tokio::test]
    async fn resynchronisation_end_to_end() {
        let (mut bsf, store) = bsf(GbaType::GbaU);
        let mut card = card();
        card.transport_mut().usim_mut().sqn_ms = [0, 0, 0, 0, 0, 0x21];
        let (done, sent) = run_core(GbaMode::GbaU, &mut bsf, &store, &mut card, None).await;
        let done = done.unwrap();
        assert_eq!(sent, 3, "initial, AUTS, answer");
        // The BSF resynchronised to SQN_MS + 32.
        assert_eq!(card.transport().usim().sqn_ms, [0, 0, 0, 0, 0, 0x41]);
        assert_eq!(card.read_gba_bp().unwrap().unwrap().b_tid.as_deref(), Some(done.b_tid.as_str()));
    }
}
