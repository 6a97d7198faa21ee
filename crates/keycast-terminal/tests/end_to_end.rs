//! The terminal against the real BSF (keycast-gba) and the real BSM (keycast-bsm `bsm_app` over
//! SQLite in a temporary directory), in process on 127.0.0.1, with the emulated card:
//! bootstrap, registration, Service Request, LTKMs into the card, an STKM under the delivered
//! SEK opened to its TEK; then the BSF session is replaced by another client, the terminal's next
//! request gets 401, it bootstraps again and the retry succeeds (an LTKM Request answered with
//! the key); finally a solicited pull over UDP makes the terminal send an LTKM Request, and a
//! pushed LTKM with V = 1 gets its verification message back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keycast_bsm::domain::{KeyEntry, PurchaseData, PurchaseItem, PurchaseKind, Service, ServiceId, TerminalId, Window};
use keycast_bsm::http::UaGuard;
use keycast_bsm::http::provisioning::{ProvisioningState, bsm_app};
use keycast_bsm::keys::KeySource as _;
use keycast_bsm::service::{Provisioning, ProvisioningConfig};
use keycast_bsm::store::sql::SqliteStore;
use keycast_bsm::store::{BsmStore, StoredKey};
use keycast_bsm::ua::{UaAuthenticator, UaConfig};
use keycast_bsm::zn_client::{ZnClient, ZnClientConfig, ZnCredential};
use keycast_card::mbms::TekOut;
use keycast_card::usim::{Usim, UsimIdentity};
use keycast_card::{ApduCard, Card as _, Emulator};
use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::keys::{Opc, SekPek, SubscriberKey, Tek, TekSalt};
use keycast_crypto::milenage::sqn_from_u64;
use keycast_gba::bsf::http::{BsfState, ZnAuth, ZnToken, app, serve};
use keycast_gba::bsf::{Bsf, BsfConfig, GbaType, MemoryStore, SeededRandom, Subscriber};
use keycast_gba::client::http::{HttpClient, RetryPolicy, bootstrap};
use keycast_gba::client::{BootstrapConfig, GbaMode};
use keycast_mikey::{
    KeyDomainId, KeyValidity, Ltkm, LtkmContent, SekPekId, SolicitedPull, StkmContent, TekField, VerificationMessage,
};
use keycast_provisioning::sprov::{Price, PurchaseItemRef, PurchaseRequestItem, StatusCode};
use keycast_provisioning::time::UtcTime;
use keycast_terminal::ltkm_intake::{Interface, LtkmEvent, bcast_key};
use keycast_terminal::provisioning::{ClientConfig, Response};
use keycast_terminal::shell::{ShellConfig, TerminalShell};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
const BSF_DOMAIN: &str = "bsf.example.org";
const BSM: &str = "bmsc.example.org";
const ZN_TOKEN: &str = "terminal-test-zn-token-0123";
/// 2026-06-01T00:00:00Z.
const T0: u64 = 1_780_272_000;
const DAY: u64 = 86_400;
/// Seconds between the NTP and Unix epochs.
const NTP: u64 = 2_208_988_800;
/// TS 35.208 test set 1 (K, OPc) and an SQN near its own.
const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
const SQN: u64 = 0xff9b_b4d0_b607;
/// The live SEK of the news service: Key Group 1, Key Number 2.
const SEK: [u8; 16] = [0x12; 16];
const SEK_RAND: [u8; 16] = [0x48; 16];

fn h<const N: usize>(text: &str) -> [u8; N] {
    hex::decode(text).unwrap().try_into().unwrap()
}

fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

#[derive(Clone)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn unix(&self) -> Arc<dyn Fn() -> u64 + Send + Sync> {
        let t = self.0.clone();
        Arc::new(move || t.load(Ordering::SeqCst))
    }
    fn utc(&self) -> Arc<dyn Fn() -> UtcTime + Send + Sync> {
        let t = self.0.clone();
        Arc::new(move || UtcTime::from_unix_seconds(t.load(Ordering::SeqCst)).unwrap())
    }
    fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

/// A server task and the sender that stops it.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

async fn start_bsf(clock: &TestClock) -> Running {
    let mut config = BsfConfig::new(BSF_DOMAIN, [1; 32]);
    config.authorised_nafs = vec![BSM.into()];
    config.fake_amf = [0xb9, 0xb9];
    config.key_lifetime = DAY;
    let store = MemoryStore::new();
    store.insert_subscriber(Subscriber {
        impi: IMPI.into(),
        imsi: "001010000000001".into(),
        k: SubscriberKey::from_bytes(h(K)),
        opc: Opc::from_bytes(h(OPC)),
        sqn: SQN - 32,
        amf: [0xb9, 0xb9],
        gba_type: GbaType::GbaU,
    });
    let zn_auth = ZnAuth {
        tokens: vec![ZnToken { naf: BSM.into(), token: ZN_TOKEN.to_owned().into() }],
        allowed_naf_cert_names: Vec::new(),
    };
    let state = Arc::new(
        BsfState::new(Bsf::new(config).unwrap(), Arc::new(store), zn_auth)
            .with_rng(SeededRandom::new([5; 32]))
            .with_clock(clock.unix()),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app(state), None, async {
        let _ = rx.await;
    }));
    Running { addr, stop, task }
}

fn zn_client(bsf: SocketAddr) -> ZnClient {
    ZnClient::new(ZnClientConfig::new(
        &bsf.to_string(),
        BSF_DOMAIN,
        BSM,
        ZnCredential::Bearer(ZN_TOKEN.to_owned().into()),
    ))
}

/// The catalogue: service `news` (Key Group 1, streaming) in item `basic`, offered as the
/// 30-day subscription `basic-month`; its live SEK (1,2).
async fn fill(store: &SqliteStore) {
    store
        .put_service(&Service {
            id: ServiceId("news".into()),
            name: "News".into(),
            key_domain: kd(),
            key_group: 1,
            streaming: true,
        })
        .await
        .unwrap();
    store
        .put_purchase_item(&PurchaseItem {
            global_id: "basic".into(),
            name: "Basic".into(),
            services: vec![ServiceId("news".into())],
        })
        .await
        .unwrap();
    store
        .put_purchase_data(&PurchaseData {
            id: "basic-month".into(),
            item: "basic".into(),
            price: Price { amount: "4.99".into(), currency: "EUR".into() },
            kind: PurchaseKind::Subscription,
            period: 30 * DAY,
        })
        .await
        .unwrap();
    let id = SekPekId { key_group: 1, key_number: 2 };
    store
        .add_key(&StoredKey {
            entry: KeyEntry { id, window: Window { from: T0 - 10 * DAY, until: T0 + 20 * DAY }, revoked_at: None },
            key_domain: kd(),
            key: SekPek::from_bytes(SEK),
            rand: SEK_RAND,
            csb_id: 0x0100_0012,
        })
        .await
        .unwrap();
}

struct Bsm {
    running: Running,
    state: Arc<ProvisioningState<SqliteStore>>,
    _dir: tempfile::TempDir,
}

/// `bsm_app` with keys from the BSF over Zn on every request (no cache in front: a B-TID the BSF
/// replaced is refused at once, as by a BSM node that never saw it).
async fn start_bsm(bsf: SocketAddr, clock: &TestClock) -> Bsm {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("bsm.db"), StorageKey::from_bytes([7; 16])).await.unwrap();
    fill(&store).await;
    let authenticator = UaAuthenticator::new(&UaConfig::new(BSM, [9; 32])).unwrap();
    let guard = Arc::new(UaGuard::new(authenticator, Arc::new(zn_client(bsf))).with_clock(clock.unix()));
    let state = Arc::new(
        ProvisioningState::new(Provisioning::new(store, ProvisioningConfig::new(BSM)), guard).with_clock(clock.unix()),
    );
    let app = bsm_app(state.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Bsm { running: Running { addr, stop, task }, state, _dir: dir }
}

fn card() -> ApduCard<Emulator> {
    let id = UsimIdentity { imsi: "001010000000001".into(), impi: IMPI.into(), iccid: "8900100000000000001".into() };
    let mut usim = Usim::new(id, SubscriberKey::from_bytes(h(K)), Opc::from_bytes(h(OPC)));
    usim.sqn_ms = sqn_from_u64(SQN - 7);
    ApduCard::new(Emulator::new(usim))
}

fn bootstrap_config() -> BootstrapConfig {
    BootstrapConfig {
        bsf_host: BSF_DOMAIN.into(),
        impi: IMPI.into(),
        user_agent: "Keycast-terminal-test/0.1".into(),
        mode: GbaMode::GbaU,
    }
}

async fn start_terminal(bsf: SocketAddr, bsm: SocketAddr, clock: &TestClock) -> TerminalShell<ApduCard<Emulator>> {
    let mut config = ShellConfig::new(
        &bsm.to_string(),
        &bsf.to_string(),
        bootstrap_config(),
        ClientConfig::new(BSM, "Keycast-terminal-test/0.1"),
    );
    config.oma_bcast_udp = Some("127.0.0.1:0".parse().unwrap());
    config.mbms_udp = Some("127.0.0.1:0".parse().unwrap());
    config.http_timeout = Duration::from_secs(10);
    config.bootstrap_retry = RetryPolicy { attempts: 1, backoff: Duration::ZERO };
    TerminalShell::new(config, card(), clock.utc(), Box::new(SeededRandom::new([0x33; 32]))).await.unwrap()
}

/// Another device with the same subscription bootstraps: the BSF keeps one session per IMPI,
/// so the terminal's B-TID is gone.
async fn other_client_bootstraps(bsf: SocketAddr, clock: &TestClock) -> String {
    let mut other = card();
    let mut transport = HttpClient::plain(bsf.to_string()).with_timeout(Duration::from_secs(10));
    let now = clock.utc();
    let now = move || now();
    let mut rng = SeededRandom::new([0x44; 32]);
    let outcome = bootstrap(
        &mut transport,
        &bootstrap_config(),
        &mut other,
        None,
        &now,
        &mut rng,
        RetryPolicy { attempts: 1, backoff: Duration::ZERO },
    )
    .await
    .unwrap();
    outcome.bootstrapped.b_tid
}

fn ntp(unix: u64) -> u32 {
    u32::try_from(unix + NTP).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_subscribes_survives_a_replaced_bootstrap_and_answers_a_solicited_pull() {
    tokio::time::timeout(Duration::from_secs(90), scenario()).await.expect("the scenario ends in time");
}

async fn scenario() {
    let clock = TestClock(Arc::new(AtomicU64::new(T0)));
    let bsf = start_bsf(&clock).await;
    let bsm = start_bsm(bsf.addr, &clock).await;
    let mut terminal = start_terminal(bsf.addr, bsm.running.addr, &clock).await;

    // Power-on: bootstrap; nothing bought yet, so nothing to register.
    assert!(terminal.connect().await.unwrap().is_none());
    let first_btid = terminal.client().b_tid().expect("bootstrapped").to_owned();

    // Subscribe: the answer carries the SEK's LTKM, which the card takes.
    let item = PurchaseItemRef::new("basic", Some("basic-month"));
    let until = UtcTime::from_unix_seconds(T0 + 30 * DAY).unwrap();
    let answer =
        terminal.subscribe(vec![(PurchaseRequestItem { item: item.clone(), price: None }, Some(until))]).await.unwrap();
    let Response::Service(service) = &answer.response else { panic!("{answer:?}") };
    assert_eq!(service.status, StatusCode::Success);
    let sek = bcast_key(kd(), SekPekId { key_group: 1, key_number: 2 });
    assert_eq!(answer.ltkms.len(), 1);
    assert_eq!(answer.ltkms[0].as_ref().unwrap().event, LtkmEvent::Accepted { key: sek });
    assert_eq!(terminal.client().purchases().active(clock.utc()()), [item]);

    // An STKM made under that SEK opens to its TEK in the card.
    let tek = Tek::from_bytes([0x5c; 16]);
    let stkm = StkmContent {
        csb_id: 0x0a0b_0c0d,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 1, key_number: 2 },
        tek_id: 1,
        ts: ntp(T0 + 60),
        ext: None,
        tek: TekField::Clear(tek.clone()),
        salt: Some(TekSalt::from_bytes([0x5d; 14])),
    }
    .seal(&SekPek::from_bytes(SEK), &SEK_RAND)
    .unwrap();
    match terminal.card_mut().mtk_generation(&stkm).unwrap() {
        TekOut::Clear { tek: got, salt } => {
            assert_eq!(got, tek);
            assert_eq!(salt, Some(TekSalt::from_bytes([0x5d; 14])));
        }
        other => panic!("TEK in the clear expected: {other:?}"),
    }

    // The network comes back: registration again, the key again under a later TS.
    clock.advance(60);
    let answer = terminal.reconnected().await.unwrap().expect("one item to register");
    let Response::Registration(reg) = &answer.response else { panic!("{answer:?}") };
    assert_eq!(reg.items[0].status, StatusCode::Success);
    assert!(answer.ltkms.iter().all(|r| matches!(r, Ok(r) if r.event == (LtkmEvent::Accepted { key: sek }))));
    let store = bsm.state.service().store();
    let registration = store.terminal(&TerminalId(IMPI.into())).await.unwrap().unwrap().registration.unwrap();
    assert!(registration.address.starts_with("127.0.0.1:"), "{}", registration.address);

    // Another client bootstraps the same IMPI: the terminal's B-TID is gone at the BSF.
    clock.advance(60);
    let other_btid = other_client_bootstraps(bsf.addr, &clock).await;
    assert_ne!(other_btid, first_btid);

    // The next request gets 401; the terminal bootstraps again and the retry succeeds.
    let group = bcast_key(kd(), SekPekId { key_group: 1, key_number: 0 });
    let answer = terminal.request_keys(Interface::OmaBcast, &[group]).await.unwrap();
    assert_eq!(answer.rebootstraps, 1);
    let new_btid = terminal.client().b_tid().unwrap().to_owned();
    assert!(new_btid != first_btid && new_btid != other_btid, "a third B-TID");
    let Response::Ltkm(ltkm) = &answer.response else { panic!("{answer:?}") };
    assert_eq!((ltkm.keys[0].key, ltkm.keys[0].status), (group, StatusCode::Success));
    assert_eq!(answer.ltkms.len(), 1);
    assert_eq!(answer.ltkms[0].as_ref().unwrap().event, LtkmEvent::Accepted { key: sek }, "taken under the new MUK");

    // A solicited pull for Key Group 1 over UDP: the terminal answers with an LTKM Request.
    let smk = zn_client(bsf.addr).keys(&new_btid, clock.unix()()).await.unwrap().smk().clone();
    let ts = store.reserve_ltkm_ts(&TerminalId(IMPI.into()), &new_btid, 1).await.unwrap();
    let trigger = SolicitedPull {
        csb_id: 0x7777_0001,
        key_domain_id: kd(),
        key_group: 1,
        ts,
        rand: [0x21; 16],
        idi: BSM.into(),
        idr: new_btid.clone(),
    }
    .seal(&smk)
    .unwrap();
    let bsm_push = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = terminal.udp_addr(Interface::OmaBcast).unwrap();
    bsm_push.send_to(&trigger, to).await.unwrap();
    let received = terminal.recv_ltkm(Duration::from_secs(5)).await.unwrap().expect("the pull arrives");
    assert_eq!(received.from, bsm_push.local_addr().unwrap());
    assert_eq!(received.report.as_ref().unwrap().event, LtkmEvent::SolicitedPull { key: group });
    assert_eq!(received.follow_ups.len(), 1, "one LTKM Request");
    let pulled = received.follow_ups[0].as_ref().unwrap();
    let Response::Ltkm(ltkm) = &pulled.response else { panic!("{pulled:?}") };
    assert_eq!(ltkm.keys[0].key, group);
    assert_eq!(pulled.ltkms[0].as_ref().unwrap().event, LtkmEvent::Accepted { key: sek });

    // A pushed LTKM with V = 1: the verification message goes back to the push socket and
    // verifies under the LTKM's keys (what the BSM's verification intake checks).
    let ts = store.reserve_ltkm_ts(&TerminalId(IMPI.into()), &new_btid, 1).await.unwrap();
    let pushed = LtkmContent {
        csb_id: 0x0900_0001,
        verification_requested: true,
        srtp_cs: None,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 9, key_number: 1 },
        ts,
        rand: [0x39; 16],
        idi: BSM.into(),
        idr: new_btid.clone(),
        srtp_policy: None,
        ext: None,
        key: Some(SekPek::from_bytes([0x91; 16])),
        validity: KeyValidity::TekIdWindow { seq_l: 0, seq_u: 1000 },
    }
    .seal(&smk)
    .unwrap();
    bsm_push.send_to(&pushed, to).await.unwrap();
    let received = terminal.recv_ltkm(Duration::from_secs(5)).await.unwrap().expect("the LTKM arrives");
    let nine = bcast_key(kd(), SekPekId { key_group: 9, key_number: 1 });
    assert_eq!(received.report.as_ref().unwrap().event, LtkmEvent::Accepted { key: nine });
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), bsm_push.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(from, to, "sent from the socket that received the LTKM");
    let ltkm = Ltkm::decode(&pushed).unwrap();
    VerificationMessage::decode(&buf[..n]).unwrap().verify(&ltkm, &ltkm.message_keys(&smk)).unwrap();

    // A datagram that is no LTKM is dropped with a typed error, and nothing is requested.
    bsm_push.send_to(b"not mikey", to).await.unwrap();
    let received = terminal.recv_ltkm(Duration::from_secs(5)).await.unwrap().expect("the datagram arrives");
    assert!(received.report.is_err());
    assert!(received.follow_ups.is_empty());
    // Nothing more arrives.
    assert!(terminal.recv_ltkm(Duration::from_millis(50)).await.unwrap().is_none());

    bsm.running.stop().await;
    bsf.stop().await;
}
