//! Shared end-to-end setting: the real BSF of keycast-gba on loopback (memory store, Milenage
//! test set 1), a terminal bootstrapping through keycast-gba's client with the emulated card, and
//! a test BSM route behind `require_ua_digest` whose keys come over Zn.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use keycast_bsm::http::{Clock, UaGuard, UaIdentity, require_ua_digest};
use keycast_bsm::keys::{KeyCache, KeyFuture, KeyRecord, KeySource};
use keycast_bsm::ua::{UaAuthenticator, UaConfig};
use keycast_bsm::zn_client::{ZnClient, ZnClientConfig, ZnCredential};
use keycast_card::gba_me::GbaMeStore;
use keycast_card::usim::{Usim, UsimIdentity};
use keycast_card::{ApduCard, Emulator};
use keycast_crypto::gba::UA_PROTOCOL_MBMS;
use keycast_crypto::keys::{Opc, SubscriberKey};
use keycast_crypto::milenage::sqn_from_u64;
use keycast_gba::bsf::http::{BsfState, ZnAuth, ZnToken, app, serve};
use keycast_gba::bsf::{Bsf, BsfConfig, GbaType, MemoryStore, SeededRandom, Subscriber};
use keycast_gba::client::http::{HttpClient, RetryPolicy, UbTransport as _, bootstrap};
use keycast_gba::client::{
    BootstrapConfig, BootstrapState, Bootstrapped, GbaMode, HttpRequest, HttpResponse, NafCredentials, naf_keys,
};
use keycast_provisioning::digest::{AuthenticationInfo, Challenge, Qop};
use keycast_provisioning::sprov::{CONTENT_TYPE, ClientIdentity, PurchaseItemRef, RegistrationRequest};
use keycast_provisioning::time::UtcTime;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
pub const BSF_DOMAIN: &str = "bsf.example.org";
pub const BSM: &str = "bmsc.example.org";
/// The B-TID of the first run: base64(RAND of vectors.md §2).
pub const BTID1: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org";
/// Ks_ext_NAF and Ks_int_NAF of that run for NAF_Id = "bmsc.example.org" ‖ 01 00 00 00 01.
pub const KS_EXT_NAF: &str = "79d8098e4b9ef12c858a0da3471f6b2d29b4cbb549500dcb3c88154562de340d";
pub const KS_INT_NAF: &str = "5ecf80629e0becb2def8d9b3cb80ae3f99ab18f9c50f49fd5da0e6cfb6d0ee5f";
pub const ZN_TOKEN: &str = "bsm-zn-token-0123456789";
/// 2026-06-01T00:00:00Z.
pub const T0: u64 = 1_780_272_000;
pub const PATH: &str = "/sprov/register";
pub const USER_AGENT: &str = "Keycast-test/0.1 3gpp-gba";
const SQN1: u64 = 0xff9b_b4d0_b607;
const LIMIT: Duration = Duration::from_secs(60);

fn h<const N: usize>(text: &str) -> [u8; N] {
    hex::decode(text).unwrap().try_into().unwrap()
}

/// Runs a test future with a deadline, so a hang fails instead of blocking the suite.
pub async fn with_limit<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f).await.expect("test finishes in time");
}

/// Unix seconds shared by the BSF, the BSM and the terminal.
#[derive(Clone)]
pub struct TestClock(Arc<AtomicU64>);

impl TestClock {
    pub fn new() -> Self {
        TestClock(Arc::new(AtomicU64::new(T0)))
    }
    pub fn clock(&self) -> Clock {
        let t = self.0.clone();
        Arc::new(move || t.load(Ordering::SeqCst))
    }
    pub fn utc(&self) -> UtcTime {
        UtcTime::from_unix_seconds(self.0.load(Ordering::SeqCst)).unwrap()
    }
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// BSF

pub struct RunningBsf {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningBsf {
    /// The BSF with one subscriber (set 1) of `gba_type`, Ks lifetime `key_lifetime`, the BSM
    /// authorised on Zn by token from loopback.
    pub async fn start(clock: &TestClock, gba_type: GbaType, key_lifetime: u64) -> Self {
        let mut config = BsfConfig::new(BSF_DOMAIN, [1; 32]);
        config.authorised_nafs = vec![BSM.into()];
        config.fake_amf = [0xb9, 0xb9];
        config.key_lifetime = key_lifetime;
        let store = MemoryStore::new();
        store.insert_subscriber(Subscriber {
            impi: IMPI.into(),
            imsi: "001010000000001".into(),
            k: SubscriberKey::from_bytes(h("465b5ce8b199b49faa5f0a2ee238a6bc")),
            opc: Opc::from_bytes(h("cd63cb71954a9f4e48a5994e37a02baf")),
            sqn: SQN1 - 32,
            amf: [0xb9, 0xb9],
            gba_type,
        });
        let zn_auth = ZnAuth {
            tokens: vec![ZnToken { naf: BSM.into(), token: ZN_TOKEN.to_owned().into() }],
            allowed_naf_cert_names: Vec::new(),
        };
        let mut rng = SeededRandom::new([1; 32]);
        rng.queue(&h::<16>("23553cbe9637a89d218ae64dae47bf35"));
        let state = Arc::new(
            BsfState::new(Bsf::new(config).unwrap(), Arc::new(store), zn_auth).with_rng(rng).with_clock(clock.clock()),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app(state), None, async {
            let _ = rx.await;
        }));
        RunningBsf { addr, stop: Some(tx), task }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Terminal

/// A terminal: the emulated card of set 1 (and a GBA_ME key store), its bootstrap record.
pub struct Terminal {
    pub card: ApduCard<Emulator>,
    pub gba_me: Option<GbaMeStore>,
    pub mode: GbaMode,
    pub state: BootstrapState,
}

impl Terminal {
    pub fn new(mode: GbaMode) -> Self {
        let id =
            UsimIdentity { imsi: "001010000000001".into(), impi: IMPI.into(), iccid: "8900100000000000001".into() };
        let mut usim = Usim::new(
            id,
            SubscriberKey::from_bytes(h("465b5ce8b199b49faa5f0a2ee238a6bc")),
            Opc::from_bytes(h("cd63cb71954a9f4e48a5994e37a02baf")),
        );
        usim.sqn_ms = sqn_from_u64(SQN1 - 7);
        let gba_me = (mode == GbaMode::GbaMe).then(GbaMeStore::default);
        Terminal { card: ApduCard::new(Emulator::new(usim)), gba_me, mode, state: BootstrapState::new() }
    }

    /// One bootstrapping run against the BSF.
    pub async fn bootstrap(&mut self, bsf: &RunningBsf, clock: &TestClock) -> Bootstrapped {
        let config = BootstrapConfig {
            bsf_host: BSF_DOMAIN.into(),
            impi: IMPI.into(),
            user_agent: "Keycast-test/0.1".into(),
            mode: self.mode,
        };
        let mut transport = HttpClient::plain(bsf.addr.to_string()).with_timeout(Duration::from_secs(10));
        let c = clock.clone();
        let now = move || c.utc();
        let mut rng = SeededRandom::new([0x33; 32]);
        let outcome = bootstrap(
            &mut transport,
            &config,
            &mut self.card,
            self.gba_me.as_mut(),
            &now,
            &mut rng,
            RetryPolicy { attempts: 1, backoff: Duration::ZERO },
        )
        .await
        .unwrap();
        self.state.record(outcome.bootstrapped.clone());
        outcome.bootstrapped
    }

    /// The Ua credentials toward the BSM (B-TID, SRK), derived on the terminal's side.
    pub fn credentials(&mut self) -> NafCredentials {
        naf_keys(&self.state, &mut self.card, self.gba_me.as_mut(), BSM, IMPI, UA_PROTOCOL_MBMS).unwrap()
    }
}

/// A RegistrationRequest naming the terminal by B-TID.
pub fn registration(btid: &str) -> Vec<u8> {
    RegistrationRequest {
        request_id: 1,
        client: Some(ClientIdentity::Btid(btid.into())),
        items: vec![PurchaseItemRef::new("urn:bsm:item:news", Some("urn:bsm:pd:1"))],
    }
    .to_xml()
    .unwrap()
    .into_bytes()
}

fn post_request(body: &[u8], authorization: Option<String>) -> HttpRequest {
    let mut headers = vec![
        ("Host".to_owned(), BSM.to_owned()),
        ("User-Agent".to_owned(), USER_AGENT.to_owned()),
        ("Content-Type".to_owned(), CONTENT_TYPE.to_owned()),
    ];
    if let Some(a) = authorization {
        headers.push(("Authorization".to_owned(), a));
    }
    HttpRequest { method: "POST".into(), uri: PATH.into(), headers, body: body.to_vec() }
}

/// What the terminal saw of one authenticated POST.
pub struct UaExchange {
    pub challenge: Challenge,
    pub authorization: String,
    pub response: HttpResponse,
}

/// The terminal's Ua exchange: POST without credentials, answer the 401 with `creds`
/// (auth-int preferred), POST again. When the answer is 200 its `rspauth` is checked.
pub async fn ua_post(bsm: &RunningBsm, creds: &NafCredentials, body: &[u8]) -> UaExchange {
    let mut client = HttpClient::plain(bsm.addr.to_string()).with_timeout(Duration::from_secs(10));
    let first = client.send(&post_request(body, None)).await.unwrap();
    assert_eq!(first.status, 401, "{first:?}");
    let challenge = Challenge::parse(first.header("WWW-Authenticate").unwrap()).unwrap();
    let mut digest = creds.digest_client(challenge.clone(), &[Qop::AuthInt, Qop::Auth]).expect("realm is the BSM's");
    let sent = digest.authorize("POST", PATH, body, &[0x5a; 8]).unwrap();
    let authorization = sent.credentials().to_header_value().unwrap();
    let response = client.send(&post_request(body, Some(authorization.clone()))).await.unwrap();
    if response.status == 200 {
        let info = AuthenticationInfo::parse(response.header("Authentication-Info").expect("Authentication-Info"));
        digest.check_authentication_info(&sent, &info.unwrap(), &response.body).expect("rspauth verifies");
    }
    UaExchange { challenge, authorization, response }
}

/// Sends a POST with a given `Authorization` as it is.
pub async fn ua_post_raw(bsm: &RunningBsm, body: &[u8], authorization: &str) -> HttpResponse {
    let mut client = HttpClient::plain(bsm.addr.to_string()).with_timeout(Duration::from_secs(10));
    client.send(&post_request(body, Some(authorization.to_owned()))).await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// BSM

/// A key source that counts the lookups reaching it (here: Zn requests).
pub struct Counting<S> {
    pub inner: S,
    pub calls: AtomicUsize,
}

impl<S: KeySource> KeySource for Counting<S> {
    fn keys<'a>(&'a self, btid: &'a str, now: u64) -> KeyFuture<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.keys(btid, now)
    }
}

/// What the protected route saw.
pub type Seen = Arc<Mutex<Vec<(Arc<KeyRecord>, bool, Vec<u8>)>>>;

async fn protected(State(seen): State<Seen>, terminal: UaIdentity, body: Bytes) -> String {
    let answer = format!("registered {} ({}, {})", terminal.btid(), terminal.impi(), terminal.gba_type().as_str());
    seen.lock().unwrap().push((terminal.keys.clone(), terminal.body_protected, body.to_vec()));
    answer
}

pub struct RunningBsm {
    pub addr: SocketAddr,
    pub seen: Seen,
    pub cache: Arc<KeyCache<Counting<ZnClient>>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningBsm {
    /// A test BSM: `POST /sprov/register` behind the Ua Digest layer, keys over Zn from `bsf`.
    pub async fn start(bsf: &RunningBsf, clock: &TestClock) -> Self {
        let zn = ZnClient::new(ZnClientConfig::new(
            &bsf.addr.to_string(),
            BSF_DOMAIN,
            BSM,
            ZnCredential::Bearer(ZN_TOKEN.to_owned().into()),
        ));
        let cache = Arc::new(KeyCache::new(Counting { inner: zn, calls: AtomicUsize::new(0) }, 1024));
        let authenticator = UaAuthenticator::new(&UaConfig::new(BSM, [9; 32])).unwrap();
        let guard = Arc::new(UaGuard::new(authenticator, cache.clone()).with_clock(clock.clock()));
        let seen: Seen = Arc::default();
        let router = Router::new()
            .route(PATH, post(protected))
            .route_layer(axum::middleware::from_fn_with_state(guard, require_ua_digest))
            .with_state(seen.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        RunningBsm { addr, seen, cache, stop: Some(tx), task }
    }

    /// Zn lookups made so far.
    pub fn zn_calls(&self) -> usize {
        self.cache.inner().calls.load(Ordering::SeqCst)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}
