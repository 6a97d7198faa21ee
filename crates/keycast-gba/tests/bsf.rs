//! The BSF core against the USIM emulator of `keycast-card` and the Digest client of
//! `keycast-provisioning`, with Milenage test set 1 and the GBA worked example of vectors.md §2.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keycast_card::usim::{AkaAnswer, Usim, UsimIdentity};
use keycast_crypto::gba::{NafId, UA_PROTOCOL_HTTP_DIGEST};
use keycast_crypto::keys::{Opc, Res, SubscriberKey};
use keycast_crypto::milenage::sqn_from_u64;
use keycast_gba::bsf::{
    Bsf, BsfConfig, BsfEvent, BsfStore, FailureCause, GbaType, MemoryStore, Pending, Purged, RunStart, SeededRandom,
    Session, SqnAdvance, StoreError, Subscriber, SubscriberSummary, TakenRun, UbRequest, UbResponse, ZnError, ZnKeys,
    ZnRequest,
};
use keycast_provisioning::bootstrapping::BootstrappingInfo;
use keycast_provisioning::digest::{
    Algorithm, AuthenticationInfo, Challenge, Credentials, DigestClient, Password, Qop, SentRequest,
};
use proptest::prelude::*;

const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
const DOMAIN: &str = "bsf.example.org";
const BSM: &str = "bmsc.example.org";
const T0: u64 = 1_767_182_400;
/// SQN of Milenage set 1.
const SQN1: u64 = 0xff9b_b4d0_b607;
const CNONCE: [u8; 4] = [0x0a, 0x4f, 0x11, 0x3b];

fn h<const N: usize>(text: &str) -> [u8; N] {
    hex::decode(text).unwrap().try_into().unwrap()
}

fn rand1() -> [u8; 16] {
    h("23553cbe9637a89d218ae64dae47bf35")
}

fn k() -> SubscriberKey {
    SubscriberKey::from_bytes(h("465b5ce8b199b49faa5f0a2ee238a6bc"))
}

fn opc() -> Opc {
    Opc::from_bytes(h("cd63cb71954a9f4e48a5994e37a02baf"))
}

fn subscriber(impi: &str, gba_type: GbaType, sqn: u64) -> Subscriber {
    Subscriber {
        impi: impi.into(),
        imsi: "001010000000001".into(),
        k: k(),
        opc: opc(),
        sqn,
        amf: [0xb9, 0xb9],
        gba_type,
    }
}

fn card(sqn_ms: u64) -> Usim {
    let id = UsimIdentity { imsi: "001010000000001".into(), impi: IMPI.into(), iccid: "8900100000000000001".into() };
    let mut usim = Usim::new(id, k(), opc());
    usim.sqn_ms = sqn_from_u64(sqn_ms);
    usim
}

fn config() -> BsfConfig {
    let mut c = BsfConfig::new(DOMAIN, [0x42; 32]);
    c.authorised_nafs = vec![BSM.into()];
    c.fake_amf = [0xb9, 0xb9];
    c
}

fn new_bsf() -> Bsf {
    Bsf::new(config()).unwrap()
}

/// A store with one subscriber whose next vector uses SQN of set 1 (so AUTN is the vector's).
fn new_store(gba_type: GbaType) -> MemoryStore {
    let s = MemoryStore::new();
    s.insert_subscriber(subscriber(IMPI, gba_type, SQN1 - 32));
    s
}

/// A deterministic source whose first 16 octets are RAND of set 1.
fn new_rng() -> SeededRandom {
    let mut r = SeededRandom::new([7; 32]);
    r.queue(&rand1());
    r
}

fn get(authorization: &str) -> UbRequest<'_> {
    UbRequest { method: "GET", uri: "/", authorization: Some(authorization), user_agent: Some("t 3gpp-gba"), body: b"" }
}

fn initial_header(impi: &str) -> String {
    Credentials::initial(impi, DOMAIN, "/").to_header_value().unwrap()
}

fn challenge_of(r: &UbResponse) -> Challenge {
    assert_eq!(r.status, 401, "{r:?}");
    Challenge::parse(r.header("WWW-Authenticate").expect("WWW-Authenticate")).unwrap()
}

fn rand_autn(c: &Challenge) -> ([u8; 16], [u8; 16]) {
    let raw = STANDARD.decode(&c.nonce).unwrap();
    (raw[..16].try_into().unwrap(), raw[16..32].try_into().unwrap())
}

/// Runs the card for a challenge: GBA context for GBA_U, 3G context for GBA_ME.
fn run_card(usim: &mut Usim, gba_type: GbaType, c: &Challenge) -> AkaAnswer {
    let (rand, autn) = rand_autn(c);
    match gba_type {
        GbaType::GbaU => usim.gba_bootstrap(&rand, &autn).unwrap(),
        GbaType::GbaMe => usim.authenticate_3g(&rand, &autn).unwrap(),
    }
}

fn res_of(answer: &AkaAnswer) -> Res {
    match answer {
        AkaAnswer::Success3g { res, .. } | AkaAnswer::SuccessGba { res } => res.clone(),
        AkaAnswer::SyncFailure { .. } => panic!("unexpected sync failure"),
    }
}

fn answer_with(c: &Challenge, impi: &str, password: &[u8]) -> (DigestClient, SentRequest, String) {
    let mut client = DigestClient::new(c.clone(), impi, Password::from_bytes(password), &[Qop::AuthInt]).unwrap();
    let sent = client.authorize("GET", "/", b"", &CNONCE).unwrap();
    let header = sent.credentials().to_header_value().unwrap();
    (client, sent, header)
}

/// A whole run against the card: initial request, card, answer. Returns the final response,
/// with the client's check of `Authentication-Info` done on a 200.
async fn bootstrap<S: BsfStore>(bsf: &Bsf, store: &S, rng: &mut SeededRandom, usim: &mut Usim, now: u64) -> UbResponse {
    let gba_type = store.subscriber(IMPI).await.unwrap().unwrap().gba_type;
    let c = challenge_of(&bsf.handle_ub(store, &get(&initial_header(IMPI)), now, rng).await);
    let res = res_of(&run_card(usim, gba_type, &c));
    let (mut client, sent, header) = answer_with(&c, IMPI, res.expose_secret());
    let r = bsf.handle_ub(store, &get(&header), now, rng).await;
    if r.status == 200 {
        let info = AuthenticationInfo::parse(r.header("Authentication-Info").unwrap()).unwrap();
        client.check_authentication_info(&sent, &info, &r.body).unwrap();
    }
    r
}

fn btid_of(r: &UbResponse) -> String {
    assert_eq!(r.status, 200, "{r:?}");
    BootstrappingInfo::from_xml(&r.body).unwrap().btid().to_owned()
}

fn naf_mbms() -> Vec<u8> {
    NafId::mbms(BSM).as_bytes().to_vec()
}

fn zn<'a>(btid: &'a str, naf_id: &'a [u8], aware: bool) -> ZnRequest<'a> {
    ZnRequest { btid, naf_id, naf_is_gba_u_aware: aware }
}

const BTID1: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org";
const KS1: &str = "b40ba9a3c58b2a05bbf0d987b21bf8cbf769bcd751044604127672711c6d3441";
const KS_EXT_NAF: &str = "79d8098e4b9ef12c858a0da3471f6b2d29b4cbb549500dcb3c88154562de340d";
const KS_INT_NAF: &str = "5ecf80629e0becb2def8d9b3cb80ae3f99ab18f9c50f49fd5da0e6cfb6d0ee5f";

/// GBA_U with the vectors of §2: AUTN*, the flipped RES, B-TID, Ks, Ks_ext_NAF, Ks_int_NAF.
#[tokio::test]
async fn gba_u_bootstrap_reproduces_the_worked_example() {
    let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaU), new_rng());
    let mut usim = card(SQN1 - 32);

    let r = bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await;
    assert_eq!(r.event, BsfEvent::Challenged { known_impi: true });
    let c = challenge_of(&r);
    assert_eq!(c.realm, DOMAIN);
    assert_eq!(c.algorithm, Some(Algorithm::AkaV1Md5));
    assert_eq!(c.qop, vec![Qop::AuthInt]);
    assert!(c.opaque.is_some() && !c.stale);
    let (rand, autn) = rand_autn(&c);
    assert_eq!(rand, rand1());
    assert_eq!(autn, h::<16>("55f328b43577b9b98c7f3f0d723fb244"), "AUTN* of vectors.md §2");

    let answer = run_card(&mut usim, GbaType::GbaU, &c);
    let res = res_of(&answer);
    assert_eq!(res.expose_secret(), &h::<8>("a54211d5e3ba50be"), "RES with its LSB flipped");
    let (mut client, sent, header) = answer_with(&c, IMPI, res.expose_secret());
    let r = bsf.handle_ub(&store, &get(&header), T0, &mut rng).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.event, BsfEvent::Bootstrapped { gba_type: GbaType::GbaU });
    assert_eq!(r.header("Content-Type"), Some("application/vnd.3gpp.bsf+xml"));
    let info = AuthenticationInfo::parse(r.header("Authentication-Info").unwrap()).unwrap();
    assert_eq!(info.qop, Some(Qop::AuthInt));
    assert_eq!(info.cnonce.as_deref(), Some("0a4f113b"));
    client.check_authentication_info(&sent, &info, &r.body).unwrap();

    let xml = BootstrappingInfo::from_xml(&r.body).unwrap();
    assert_eq!(xml.btid(), BTID1);
    assert_eq!(xml.lifetime().unix_seconds(), T0 + 86_400);
    assert_eq!(xml.current_time().map(|t| t.unix_seconds()), Some(T0));
    let session = store.session(BTID1).await.unwrap().unwrap();
    assert_eq!(session.ks.expose_secret(), &h::<32>(KS1));
    assert_eq!((session.impi.as_str(), session.gba_type, session.rand), (IMPI, GbaType::GbaU, rand1()));

    // The card, given B-TID and lifetime, derives the same Ks_ext_NAF.
    usim.write_gba_bp(BTID1, &xml.lifetime().to_string()).unwrap();
    assert_eq!(usim.gba_naf_derivation(&naf_mbms(), IMPI).unwrap().expose_secret(), &h::<32>(KS_EXT_NAF));

    // Zn: a GBA_U-aware NAF gets both keys, another only Ks_ext_NAF.
    let a = bsf.zn_keys(&store, &zn(BTID1, &naf_mbms(), true), T0 + 1).await.unwrap();
    assert_eq!((a.impi.as_str(), a.gba_type), (IMPI, GbaType::GbaU));
    assert_eq!((a.bootstrapped_at.unix_seconds(), a.lifetime.unix_seconds()), (T0, T0 + 86_400));
    match a.keys {
        ZnKeys::U { ks_ext_naf, ks_int_naf: Some(int) } => {
            assert_eq!(ks_ext_naf.expose_secret(), &h::<32>(KS_EXT_NAF));
            assert_eq!(int.expose_secret(), &h::<32>(KS_INT_NAF));
        }
        other => panic!("{other:?}"),
    }
    match bsf.zn_keys(&store, &zn(BTID1, &naf_mbms(), false), T0 + 1).await.unwrap().keys {
        ZnKeys::U { ks_ext_naf, ks_int_naf: None } => assert_eq!(ks_ext_naf.expose_secret(), &h::<32>(KS_EXT_NAF)),
        other => panic!("{other:?}"),
    }
    assert_eq!(bsf.metrics().bootstraps_gba_u, 1);
    assert_eq!(bsf.metrics().challenges, 1);
    assert_eq!(store.pending_len(), 0);
}

/// GBA_ME with the 3G context: plain AUTN, plain RES, Ks_NAF to aware and non-aware NAFs alike.
#[tokio::test]
async fn gba_me_bootstrap_gives_ks_naf_to_every_naf() {
    let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaMe), new_rng());
    let mut usim = card(SQN1 - 32);
    let c = challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await);
    assert_eq!(rand_autn(&c).1, h::<16>("55f328b43577b9b94a9ffac354dfafb3"), "AUTN of vectors.md §2");
    // The first 32 nonce octets are the vector's base64(RAND ‖ AUTN).
    assert!(c.nonce.starts_with("I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7"));
    let res = res_of(&run_card(&mut usim, GbaType::GbaMe, &c));
    assert_eq!(res.expose_secret(), &h::<8>("a54211d5e3ba50bf"));
    let (_, _, header) = answer_with(&c, IMPI, res.expose_secret());
    let r = bsf.handle_ub(&store, &get(&header), T0, &mut rng).await;
    assert_eq!(btid_of(&r), BTID1);
    assert_eq!(r.event, BsfEvent::Bootstrapped { gba_type: GbaType::GbaMe });
    assert_eq!(store.session(BTID1).await.unwrap().unwrap().ks.expose_secret(), &h::<32>(KS1));

    for aware in [false, true] {
        let a = bsf.zn_keys(&store, &zn(BTID1, &naf_mbms(), aware), T0 + 5).await.unwrap();
        assert_eq!(a.gba_type, GbaType::GbaMe);
        match a.keys {
            ZnKeys::Me { ks_naf } => assert_eq!(ks_naf.expose_secret(), &h::<32>(KS_EXT_NAF)),
            other => panic!("{other:?}"),
        }
    }
    let digest_naf = NafId::new(BSM, UA_PROTOCOL_HTTP_DIGEST);
    match bsf.zn_keys(&store, &zn(BTID1, digest_naf.as_bytes(), false), T0 + 5).await.unwrap().keys {
        ZnKeys::Me { ks_naf } => assert_eq!(
            ks_naf.expose_secret(),
            &h::<32>("f44955937d0db165de245ab9db1e55fdde8d75fe651f79275b4253dc3218c1c5")
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wrong_res_gets_a_fresh_challenge_then_403_at_the_limit() {
    let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaMe), new_rng());
    let mut nonces = Vec::new();
    let mut c = challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await);
    for attempt in 1..=3 {
        nonces.push(c.nonce.clone());
        let (_, _, header) = answer_with(&c, IMPI, &h::<8>("a54211d5e3ba50be")); // not this RES
        let r = bsf.handle_ub(&store, &get(&header), T0, &mut rng).await;
        if attempt < 3 {
            assert_eq!(r.event, BsfEvent::Rejected(FailureCause::WrongResponse));
            c = challenge_of(&r);
            assert!(!nonces.contains(&c.nonce), "a fresh challenge every time");
        } else {
            assert_eq!(r.status, 403);
            assert_eq!(r.event, BsfEvent::Rejected(FailureCause::TooManyFailures));
            assert!(r.header("WWW-Authenticate").is_none());
        }
    }
    assert_eq!(bsf.metrics().failures(FailureCause::WrongResponse), 2);
    assert!(store.session_len() == 0);

    // The UE may start again, and the count restarts.
    let mut usim = card(SQN1);
    let r = bootstrap(&bsf, &store, &mut rng, &mut usim, T0 + 1).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn gba_u_answer_with_the_unflipped_res_is_wrong() {
    let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaU), new_rng());
    let c = challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await);
    let (_, _, header) = answer_with(&c, IMPI, &h::<8>("a54211d5e3ba50bf"));
    let r = bsf.handle_ub(&store, &get(&header), T0, &mut rng).await;
    assert_eq!(r.event, BsfEvent::Rejected(FailureCause::WrongResponse));
    challenge_of(&r);
}

#[tokio::test]
async fn replayed_nonce_is_refused() {
    let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaMe), new_rng());
    let mut usim = card(SQN1 - 32);
    let c = challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await);
    let res = res_of(&run_card(&mut usim, GbaType::GbaMe, &c));
    let (_, _, header) = answer_with(&c, IMPI, res.expose_secret());
    assert_eq!(bsf.handle_ub(&store, &get(&header), T0, &mut rng).await.status, 200);
    let again = bsf.handle_ub(&store, &get(&header), T0 + 1, &mut rng).await;
    assert_eq!(again.event, BsfEvent::Rejected(FailureCause::ReplayedNonce));
    assert_ne!(challenge_of(&again).nonce, c.nonce);
    assert_eq!(store.session(BTID1).await.unwrap().unwrap().bootstrapped_at, T0, "the session is untouched");
}

/// A store that fails to delete taken challenges (say, a lagging replica): a taken challenge
/// can be taken again. The nc tracker must still refuse a second answer to the single-use nonce,
/// whatever its nc.
#[derive(Default)]
struct LeakyStore(MemoryStore, std::sync::Mutex<std::collections::HashMap<[u8; 16], TakenRun>>);

impl BsfStore for LeakyStore {
    async fn start_run(&self, impi: &str, advance: SqnAdvance, pending: Pending) -> Result<RunStart, StoreError> {
        self.0.start_run(impi, advance, pending).await
    }
    async fn take_run(&self, rand: &[u8; 16]) -> Result<Option<TakenRun>, StoreError> {
        let taken = self.0.take_run(rand).await?;
        let mut leaked = self.1.lock().unwrap();
        if let Some(t) = &taken {
            leaked.insert(*rand, t.clone());
        }
        Ok(taken.or_else(|| leaked.get(rand).cloned()))
    }
    async fn subscriber(&self, impi: &str) -> Result<Option<Subscriber>, StoreError> {
        self.0.subscriber(impi).await
    }
    async fn put_session(&self, session: Session) -> Result<(), StoreError> {
        self.0.put_session(session).await
    }
    async fn session(&self, btid: &str) -> Result<Option<Session>, StoreError> {
        self.0.session(btid).await
    }
    async fn set_sqn(&self, impi: &str, sqn: u64) -> Result<bool, StoreError> {
        self.0.set_sqn(impi, sqn).await
    }
    async fn add_subscriber(&self, subscriber: &Subscriber) -> Result<(), StoreError> {
        self.0.add_subscriber(subscriber).await
    }
    async fn delete_subscriber(&self, impi: &str) -> Result<bool, StoreError> {
        self.0.delete_subscriber(impi).await
    }
    async fn list_subscribers(&self) -> Result<Vec<SubscriberSummary>, StoreError> {
        self.0.list_subscribers().await
    }
    async fn purge_expired(&self, now: u64) -> Result<Purged, StoreError> {
        self.0.purge_expired(now).await
    }
}

#[tokio::test]
async fn replayed_nc_is_refused() {
    let (bsf, mut rng) = (new_bsf(), new_rng());
    let store = LeakyStore(new_store(GbaType::GbaMe), Default::default());
    let mut usim = card(SQN1 - 32);
    let c = challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await);
    let res = res_of(&run_card(&mut usim, GbaType::GbaMe, &c));
    let (mut client, _, header) = answer_with(&c, IMPI, res.expose_secret());
    assert_eq!(bsf.handle_ub(&store, &get(&header), T0, &mut rng).await.status, 200);
    // Same nc again, then a correctly computed nc=00000002.
    let r = bsf.handle_ub(&store, &get(&header), T0, &mut rng).await;
    assert_eq!(r.event, BsfEvent::Rejected(FailureCause::ReplayedNc));
    let second = client.authorize("GET", "/", b"", &CNONCE).unwrap();
    assert_eq!(second.credentials().nc.unwrap().0, 2);
    let r = bsf.handle_ub(&store, &get(&second.credentials().to_header_value().unwrap()), T0, &mut rng).await;
    assert_eq!(r.event, BsfEvent::Rejected(FailureCause::ReplayedNc));
    challenge_of(&r);
    assert_eq!(bsf.metrics().failures(FailureCause::ReplayedNc), 2);
}

#[tokio::test]
async fn expired_nonce_gets_stale_challenge() {
    let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaMe), new_rng());
    let mut usim = card(SQN1 - 32);
    let c = challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await);
    let res = res_of(&run_card(&mut usim, GbaType::GbaMe, &c));
    let (_, _, header) = answer_with(&c, IMPI, res.expose_secret());
    let r = bsf.handle_ub(&store, &get(&header), T0 + 301, &mut rng).await;
    assert_eq!(r.event, BsfEvent::Rejected(FailureCause::ExpiredNonce));
    let fresh = challenge_of(&r);
    assert!(fresh.stale);
    assert_ne!(fresh.nonce, c.nonce);

    // The fresh challenge works; an answer exactly at the nonce lifetime is still in time.
    let res = res_of(&run_card(&mut usim, GbaType::GbaMe, &fresh));
    let (_, _, header) = answer_with(&fresh, IMPI, res.expose_secret());
    assert_eq!(bsf.handle_ub(&store, &get(&header), T0 + 301 + 300, &mut rng).await.status, 200);
}

#[tokio::test]
async fn forged_nonces_are_refused() {
    let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaMe), new_rng());
    let c = challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await);
    let mut raw = STANDARD.decode(&c.nonce).unwrap();
    raw[0] ^= 1; // another RAND under the old tag
    let forged = Challenge { nonce: STANDARD.encode(&raw), ..c.clone() };

    let mut other_config = config();
    other_config.server_secret = zeroize::Zeroizing::new([0x43; 32]);
    let other = Bsf::new(other_config).unwrap();
    let other_store = new_store(GbaType::GbaMe);
    let foreign = challenge_of(&other.handle_ub(&other_store, &get(&initial_header(IMPI)), T0, &mut rng).await);

    let garbage = Challenge { nonce: "bm90IGEgbm9uY2U=".into(), ..c.clone() };
    for ch in [forged, foreign, garbage] {
        let (_, _, header) = answer_with(&ch, IMPI, &h::<8>("a54211d5e3ba50bf"));
        let r = bsf.handle_ub(&store, &get(&header), T0, &mut rng).await;
        assert_eq!(r.event, BsfEvent::Rejected(FailureCause::InvalidNonce), "{ch:?}");
        challenge_of(&r);
    }
}

/// Replaces the values of `nonce` and `opaque` by their lengths.
fn shape(r: &UbResponse) -> (u16, Vec<String>, String, usize, [u8; 2]) {
    let names = r.headers.iter().map(|(n, _)| n.clone()).collect();
    let Some(value) = r.header("WWW-Authenticate") else {
        return (r.status, names, String::from_utf8_lossy(&r.body).into_owned(), r.body.len(), [0; 2]);
    };
    let c = Challenge::parse(value).unwrap();
    let (_, autn) = rand_autn(&c);
    let masked = Challenge {
        nonce: "N".repeat(c.nonce.len()),
        opaque: c.opaque.as_ref().map(|o| "O".repeat(o.len())),
        ..c.clone()
    };
    (r.status, names, masked.to_header_value().unwrap(), r.body.len(), [autn[6], autn[7]])
}

#[tokio::test]
async fn unknown_impi_is_indistinguishable_from_a_known_one() {
    const STRANGER: &str = "001019999999999@ims.mnc001.mcc001.3gppnetwork.org";
    let (bsf, mut rng) = (new_bsf(), new_rng());
    let store = new_store(GbaType::GbaMe);

    let known = bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await;
    let unknown = bsf.handle_ub(&store, &get(&initial_header(STRANGER)), T0, &mut rng).await;
    let unknown2 = bsf.handle_ub(&store, &get(&initial_header(STRANGER)), T0, &mut rng).await;
    assert_eq!(shape(&known), shape(&unknown));
    assert_eq!(unknown.event, BsfEvent::Challenged { known_impi: false });
    let (ck, cu, cu2) = (challenge_of(&known), challenge_of(&unknown), challenge_of(&unknown2));
    assert_ne!(rand_autn(&cu).0, rand_autn(&cu2).0, "RAND is fresh for unknown IMPIs too");

    // Wrong answers: the same 401 shape, then the same 403.
    let (mut ck, mut cu) = (ck, cu);
    for attempt in 1..=3 {
        let (_, _, hk) = answer_with(&ck, IMPI, &[0; 8]);
        let (_, _, hu) = answer_with(&cu, STRANGER, &[0; 8]);
        let rk = bsf.handle_ub(&store, &get(&hk), T0, &mut rng).await;
        let ru = bsf.handle_ub(&store, &get(&hu), T0, &mut rng).await;
        assert_eq!(shape(&rk), shape(&ru), "attempt {attempt}");
        assert_eq!(rk.body, ru.body);
        if attempt < 3 {
            assert_eq!(ru.event, BsfEvent::Rejected(FailureCause::UnknownImpi));
            (ck, cu) = (challenge_of(&rk), challenge_of(&ru));
        } else {
            assert_eq!((rk.status, ru.status), (403, 403));
        }
    }

    // AUTS: a forged AUTS for a known IMPI and any AUTS for an unknown one look the same.
    let (ck, cu) = (
        challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await),
        challenge_of(&bsf.handle_ub(&store, &get(&initial_header(STRANGER)), T0, &mut rng).await),
    );
    let resync = |c: &Challenge, impi: &str| {
        let mut client = DigestClient::new_resync(c.clone(), impi, [5; 14], &[Qop::AuthInt]).unwrap();
        client.authorize("GET", "/", b"", &CNONCE).unwrap().credentials().to_header_value().unwrap()
    };
    let rk = bsf.handle_ub(&store, &get(&resync(&ck, IMPI)), T0, &mut rng).await;
    let ru = bsf.handle_ub(&store, &get(&resync(&cu, STRANGER)), T0, &mut rng).await;
    assert_eq!((rk.status, ru.status), (403, 403));
    assert_eq!(shape(&rk), shape(&ru));
    assert_eq!(bsf.metrics().challenges_unknown_impi, 3);
}

#[tokio::test]
async fn auts_resynchronises_then_bootstrap_succeeds() {
    let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaMe), new_rng());
    let mut usim = card(0x21); // far behind SQN of set 1: the card answers AUTS
    let c = challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await);
    let AkaAnswer::SyncFailure { auts } = run_card(&mut usim, GbaType::GbaMe, &c) else { panic!("expected AUTS") };
    assert_eq!(auts, h::<14>("451e8beca41a80125eca8884b56a"), "AUTS of vectors.md §2");

    let mut client = DigestClient::new_resync(c, IMPI, auts, &[Qop::AuthInt]).unwrap();
    let header = client.authorize("GET", "/", b"", &CNONCE).unwrap().credentials().to_header_value().unwrap();
    let r = bsf.handle_ub(&store, &get(&header), T0, &mut rng).await;
    assert_eq!(r.event, BsfEvent::Resynchronised);
    assert_eq!(store.subscriber(IMPI).await.unwrap().unwrap().sqn, 0x21 + 32, "SQN := SQN_MS + step");

    let fresh = challenge_of(&r);
    let res = res_of(&run_card(&mut usim, GbaType::GbaMe, &fresh));
    let (_, _, header) = answer_with(&fresh, IMPI, res.expose_secret());
    let r = bsf.handle_ub(&store, &get(&header), T0, &mut rng).await;
    btid_of(&r);
    assert_eq!(bsf.metrics().resyncs, 1);
    assert_eq!(usim.sqn_ms, sqn_from_u64(0x41));
}

#[tokio::test]
async fn gba_u_auts_resynchronises_too() {
    let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaU), new_rng());
    let mut usim = card(SQN1 + 1000); // ahead of the BSF
    let c = challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await);
    let AkaAnswer::SyncFailure { auts } = run_card(&mut usim, GbaType::GbaU, &c) else { panic!("expected AUTS") };
    let mut client = DigestClient::new_resync(c, IMPI, auts, &[Qop::AuthInt]).unwrap();
    let header = client.authorize("GET", "/", b"", &CNONCE).unwrap().credentials().to_header_value().unwrap();
    let fresh = challenge_of(&bsf.handle_ub(&store, &get(&header), T0, &mut rng).await);
    let res = res_of(&run_card(&mut usim, GbaType::GbaU, &fresh));
    let (_, _, header) = answer_with(&fresh, IMPI, res.expose_secret());
    btid_of(&bsf.handle_ub(&store, &get(&header), T0, &mut rng).await);
}

#[tokio::test]
async fn auts_with_bad_mac_s_is_refused() {
    let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaMe), new_rng());
    let c = challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await);
    let mut auts = h::<14>("451e8beca41a80125eca8884b56a");
    auts[13] ^= 0x80;
    let mut client = DigestClient::new_resync(c, IMPI, auts, &[Qop::AuthInt]).unwrap();
    let header = client.authorize("GET", "/", b"", &CNONCE).unwrap().credentials().to_header_value().unwrap();
    let r = bsf.handle_ub(&store, &get(&header), T0, &mut rng).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.event, BsfEvent::Rejected(FailureCause::ResyncMacFailure));
    assert_eq!(store.subscriber(IMPI).await.unwrap().unwrap().sqn, SQN1, "SQN untouched");
}

#[tokio::test]
async fn malformed_authorization_gets_400() {
    let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaMe), new_rng());
    let no_header = UbRequest { method: "GET", uri: "/", authorization: None, user_agent: None, body: b"" };
    assert_eq!(bsf.handle_ub(&store, &no_header, T0, &mut rng).await.status, 400);

    let long_user = "a".repeat(300);
    let mut bad: Vec<String> = vec![
        String::new(),
        "Basic dXNlcjpwYXNz".into(),
        "Digest".into(),
        "Digest username=".into(),
        "Digest username=\"u\", realm=\"bsf.example.org\", nonce=\"\", uri=\"/\"".into(),
        "Digest username=\"u\", username=\"v\", realm=\"bsf.example.org\", nonce=\"\", uri=\"/\", response=\"\"".into(),
        "Digest username=\"u\" realm=\"bsf.example.org\"".into(),
        "Digest username=\"u, realm=\"bsf.example.org\", nonce=\"\", uri=\"/\", response=\"\"".into(),
        "Digest username=\"u\", realm=\"bsf.example.org\", nonce=\"x\", uri=\"/\", response=\"abc\"".into(),
        "Digest username=\"u\", realm=\"bsf.example.org\", nonce=\"x\", uri=\"/\", response=\"\", qop=auth-int, \
         nc=1, cnonce=\"c\""
            .into(),
        "Digest username=\"u\", realm=\"bsf.example.org\", nonce=\"x\", uri=\"/\", response=\"\", auts=\"AAAA\"".into(),
        "Digest username=\"u\", realm=\"bsf.example.org\", nonce=\"\", uri=\"/\", response=\"\", nc=00000001".into(),
        format!("Digest {}", "x=y, ".repeat(2000)),
        Credentials::initial("", DOMAIN, "/").to_header_value().unwrap(),
        Credentials::initial(&long_user, DOMAIN, "/").to_header_value().unwrap(),
        Credentials::initial(IMPI, "other.example.org", "/").to_header_value().unwrap(),
        Credentials { response: "0".repeat(32), ..Credentials::initial(IMPI, DOMAIN, "/") }.to_header_value().unwrap(),
    ];

    // Answers that break the Ub profile.
    let c = challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await);
    let (_, sent, _) = answer_with(&c, IMPI, &[0; 8]);
    let good = sent.credentials().clone();
    let variants = [
        Credentials { algorithm: Some(Algorithm::Md5), ..good.clone() },
        Credentials { qop: Some(Qop::Auth), ..good.clone() },
        Credentials { qop: None, nc: None, cnonce: None, ..good.clone() },
        Credentials { uri: "/elsewhere".into(), ..good.clone() },
        Credentials { opaque: None, ..good.clone() },
        Credentials { opaque: Some("00".repeat(16)), ..good.clone() },
        Credentials { response: String::new(), ..good.clone() },
        Credentials { realm: "bsf.example.org.evil".into(), ..good.clone() },
    ];
    bad.extend(variants.iter().map(|v| v.to_header_value().unwrap()));

    for header in &bad {
        let r = bsf.handle_ub(&store, &get(header), T0, &mut rng).await;
        assert_eq!(r.status, 400, "{header:?} → {r:?}");
        assert_eq!(r.event, BsfEvent::Rejected(FailureCause::MalformedRequest));
        assert!(!r.body.is_empty() && r.body.len() < 100);
    }
    // None of that burnt the challenge: the good answer is still judged on its merits.
    let r = bsf.handle_ub(&store, &get(&good.to_header_value().unwrap()), T0, &mut rng).await;
    assert_eq!(r.event, BsfEvent::Rejected(FailureCause::WrongResponse));
    // The absolute URI form is accepted.
    let mut usim = card(SQN1);
    let c = challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await);
    let res = res_of(&run_card(&mut usim, GbaType::GbaMe, &c));
    let mut client = DigestClient::new(c, IMPI, Password::from_bytes(res.expose_secret()), &[Qop::AuthInt]).unwrap();
    let sent = client.authorize("GET", "http://bsf.example.org/", b"", &CNONCE).unwrap();
    let r = bsf.handle_ub(&store, &get(&sent.credentials().to_header_value().unwrap()), T0, &mut rng).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn concurrent_challenges_for_one_impi_are_each_answerable_once() {
    let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaMe), SeededRandom::new([9; 32]));
    let mut usim = card(SQN1 - 32);
    let a = challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await);
    let b = challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0 + 1, &mut rng).await);
    assert_ne!(a.nonce, b.nonce);
    assert_eq!(store.pending_len(), 2);
    // The card sees A then B (increasing SQN); the BSF gets B's answer first.
    let res_a = res_of(&run_card(&mut usim, GbaType::GbaMe, &a));
    let res_b = res_of(&run_card(&mut usim, GbaType::GbaMe, &b));
    let (_, _, ha) = answer_with(&a, IMPI, res_a.expose_secret());
    let (_, _, hb) = answer_with(&b, IMPI, res_b.expose_secret());
    let btid_b = btid_of(&bsf.handle_ub(&store, &get(&hb), T0 + 2, &mut rng).await);
    let btid_a = btid_of(&bsf.handle_ub(&store, &get(&ha), T0 + 3, &mut rng).await);
    assert_ne!(btid_a, btid_b);
    for h in [&ha, &hb] {
        let r = bsf.handle_ub(&store, &get(h), T0 + 4, &mut rng).await;
        assert_eq!(r.event, BsfEvent::Rejected(FailureCause::ReplayedNonce));
    }
    // The later success replaced the earlier session.
    assert_eq!(bsf.zn_keys(&store, &zn(&btid_b, &naf_mbms(), false), T0 + 5).await, Err(ZnError::UnknownBtid));
    assert!(bsf.zn_keys(&store, &zn(&btid_a, &naf_mbms(), false), T0 + 5).await.is_ok());
    assert_eq!(bsf.metrics().bootstraps_gba_me, 2);
}

#[tokio::test]
async fn zn_refusals_are_distinct() {
    let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaU), new_rng());
    let mut usim = card(SQN1 - 32);
    let btid = btid_of(&bootstrap(&bsf, &store, &mut rng, &mut usim, T0).await);
    let end = T0 + 86_400;
    assert!(bsf.zn_keys(&store, &zn(&btid, &naf_mbms(), true), end - 1).await.is_ok());
    assert_eq!(
        bsf.zn_keys(&store, &zn("AAAAAAAAAAAAAAAAAAAAAA==@bsf.example.org", &naf_mbms(), true), T0).await,
        Err(ZnError::UnknownBtid)
    );
    match bsf.zn_keys(&store, &zn(&btid, &naf_mbms(), true), end).await {
        Err(ZnError::Expired { lifetime }) => assert_eq!(lifetime.unix_seconds(), end),
        other => panic!("{other:?}"),
    }
    let evil = NafId::mbms("evil.example.org");
    assert_eq!(bsf.zn_keys(&store, &zn(&btid, evil.as_bytes(), true), T0).await, Err(ZnError::UnknownNaf));
    // An unauthorised NAF learns nothing about B-TIDs either.
    assert_eq!(
        bsf.zn_keys(&store, &zn("nope@bsf.example.org", evil.as_bytes(), true), T0).await,
        Err(ZnError::UnknownNaf)
    );
    assert_eq!(bsf.zn_keys(&store, &zn(&btid, b"bmsc", true), T0).await, Err(ZnError::InvalidNafId));
}

#[tokio::test]
async fn auth_int_covers_the_request_body() {
    let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaMe), new_rng());
    let mut usim = card(SQN1 - 32);
    let c = challenge_of(&bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng).await);
    let res = res_of(&run_card(&mut usim, GbaType::GbaMe, &c));
    let mut client = DigestClient::new(c, IMPI, Password::from_bytes(res.expose_secret()), &[Qop::AuthInt]).unwrap();
    let sent = client.authorize("POST", "/", b"signed body", &CNONCE).unwrap();
    let header = sent.credentials().to_header_value().unwrap();
    let tampered = UbRequest { method: "POST", uri: "/", authorization: Some(&header), user_agent: None, body: b"x" };
    let r = bsf.handle_ub(&store, &tampered, T0, &mut rng).await;
    assert_eq!(r.event, BsfEvent::Rejected(FailureCause::WrongResponse));
}

/// Runs a future to completion on a fresh current-thread runtime (inside `proptest!`, whose
/// bodies are synchronous).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(future)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_authorization_never_panics(s in "\\PC{0,300}", uri in "\\PC{0,20}", body in proptest::collection::vec(any::<u8>(), 0..40)) {
        let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaU), new_rng());
        for header in [s.clone(), format!("Digest {s}"), format!("Digest username=\"{IMPI}\", realm=\"{DOMAIN}\", {s}")] {
            let req = UbRequest { method: "GET", uri: &uri, authorization: Some(&header), user_agent: Some(&s), body: &body };
            let r = block_on(bsf.handle_ub(&store, &req, T0, &mut rng));
            prop_assert!(matches!(r.status, 200 | 400 | 401 | 403), "{r:?}");
        }
    }

    #[test]
    fn arbitrary_answer_fields_never_panic(nonce in "\\PC{0,100}", opaque in proptest::option::of("\\PC{0,40}"),
                                          auts in proptest::option::of(any::<[u8; 14]>()), nc in any::<u32>(),
                                          now in any::<u64>()) {
        let (bsf, store, mut rng) = (new_bsf(), new_store(GbaType::GbaMe), new_rng());
        let c = challenge_of(&block_on(bsf.handle_ub(&store, &get(&initial_header(IMPI)), T0, &mut rng)));
        let (_, sent, _) = answer_with(&c, IMPI, &[1; 8]);
        let mut creds = sent.credentials().clone();
        creds.nonce = nonce;
        creds.opaque = opaque;
        creds.auts = auts;
        creds.nc = Some(keycast_provisioning::digest::NonceCount(nc));
        if let Ok(header) = creds.to_header_value() {
            let r = block_on(bsf.handle_ub(&store, &get(&header), now, &mut rng));
            prop_assert!(matches!(r.status, 400 | 401 | 403), "{r:?}");
        }
        let r = block_on(bsf.handle_ub(&store, &get(&sent.credentials().to_header_value().unwrap()), now, &mut rng));
        prop_assert!(matches!(r.status, 401 | 403), "{r:?}");
    }
}
