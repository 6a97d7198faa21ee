//! Shared by the loopback tests: the real BSF (keycast-gba) and the real BSM (keycast-bsm
//! `bsm_app` over SQLite in a temporary directory) on 127.0.0.1, a test clock, the emulated USIM
//! of TS 35.208 test set 1, and a terminal shell around a key holder (the card for GBA_U, the
//! USIM with a GBA_ME store for GBA_ME).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keycast_bsm::domain::{KeyEntry, PurchaseData, PurchaseItem, PurchaseKind, Service, ServiceId, Window};
use keycast_bsm::http::UaGuard;
use keycast_bsm::http::provisioning::{ProvisioningState, bsm_app};
use keycast_bsm::service::{Provisioning, ProvisioningConfig};
use keycast_bsm::store::sql::SqliteStore;
use keycast_bsm::store::{BsmStore, StoredKey};
use keycast_bsm::ua::{UaAuthenticator, UaConfig};
use keycast_bsm::zn_client::{ZnClient, ZnClientConfig, ZnCredential};
use keycast_card::mbms::TekOut;
use keycast_card::usim::{Usim, UsimIdentity};
use keycast_card::{ApduCard, Emulator};
use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::keys::{Opc, SekPek, Smk, SubscriberKey, Tek, TekSalt};
use keycast_crypto::milenage::sqn_from_u64;
use keycast_gba::bsf::http::{BsfState, ZnAuth, ZnToken, app, serve};
use keycast_gba::bsf::{Bsf, BsfConfig, GbaType, MemoryStore, SeededRandom, Subscriber};
use keycast_gba::client::http::{HttpClient, RetryPolicy};
use keycast_gba::client::{BootstrapConfig, GbaMode};
use keycast_mikey::{KeyDomainId, KeyValidity, LtkmContent, SekPekId, StkmContent, TekField};
use keycast_provisioning::sprov::Price;
use keycast_provisioning::time::UtcTime;
use keycast_terminal::key_holder::{self, MbmsKeyHolder};
use keycast_terminal::provisioning::ClientConfig;
use keycast_terminal::shell::{ShellConfig, TerminalShell};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
pub const BSF_DOMAIN: &str = "bsf.example.org";
pub const BSM: &str = "bmsc.example.org";
pub const ZN_TOKEN: &str = "terminal-test-zn-token-0123";
/// 2026-06-01T00:00:00Z.
pub const T0: u64 = 1_780_272_000;
pub const DAY: u64 = 86_400;
/// Seconds between the NTP and Unix epochs.
pub const NTP: u64 = 2_208_988_800;
/// TS 35.208 test set 1 (K, OPc) and an SQN near its own.
pub const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
pub const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
pub const SQN: u64 = 0xff9b_b4d0_b607;
/// The live SEK of the news service: Key Group 1, Key Number 2.
pub const SEK: [u8; 16] = [0x12; 16];
pub const SEK_RAND: [u8; 16] = [0x48; 16];

pub fn h<const N: usize>(text: &str) -> [u8; N] {
    hex::decode(text).unwrap().try_into().unwrap()
}

pub fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

pub fn ntp(unix: u64) -> u32 {
    u32::try_from(unix + NTP).unwrap()
}

#[derive(Clone)]
pub struct TestClock(pub Arc<AtomicU64>);

impl TestClock {
    pub fn new() -> Self {
        TestClock(Arc::new(AtomicU64::new(T0)))
    }
    pub fn unix(&self) -> Arc<dyn Fn() -> u64 + Send + Sync> {
        let t = self.0.clone();
        Arc::new(move || t.load(Ordering::SeqCst))
    }
    pub fn utc(&self) -> Arc<dyn Fn() -> UtcTime + Send + Sync> {
        let t = self.0.clone();
        Arc::new(move || UtcTime::from_unix_seconds(t.load(Ordering::SeqCst)).unwrap())
    }
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

/// A server task and the sender that stops it.
pub struct Running {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// The BSF, with the subscriber of test set 1 bootstrapping as `gba_type` (its GUSS).
pub async fn start_bsf(clock: &TestClock, gba_type: GbaType) -> Running {
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
        gba_type,
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

/// The BSM's Zn client toward the BSF (what the BSM itself uses, for checking its keys).
pub fn zn_client(bsf: SocketAddr) -> ZnClient {
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
            play_backs: 0,
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

pub struct Bsm {
    pub running: Running,
    pub state: Arc<ProvisioningState<SqliteStore>>,
    _dir: tempfile::TempDir,
}

/// `bsm_app` with keys from the BSF over Zn on every request (no cache in front: a B-TID the BSF
/// replaced is refused at once, as by a BSM node that never saw it).
pub async fn start_bsm(bsf: SocketAddr, clock: &TestClock) -> Bsm {
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

/// The emulated USIM of test set 1 (GBA-aware: it also answers in the GBA context).
pub fn card() -> ApduCard<Emulator> {
    let id = UsimIdentity { imsi: "001010000000001".into(), impi: IMPI.into(), iccid: "8900100000000000001".into() };
    let mut usim = Usim::new(id, SubscriberKey::from_bytes(h(K)), Opc::from_bytes(h(OPC)));
    usim.sqn_ms = sqn_from_u64(SQN - 7);
    ApduCard::new(Emulator::new(usim))
}

pub fn bootstrap_config(mode: GbaMode) -> BootstrapConfig {
    BootstrapConfig {
        bsf_host: BSF_DOMAIN.into(),
        impi: IMPI.into(),
        user_agent: "Keycast-terminal-test/0.1".into(),
        mode,
    }
}

/// The shell's configuration: loopback sockets on free ports, one bootstrapping run.
pub fn shell_config(bsf: SocketAddr, bsm: SocketAddr, mode: GbaMode) -> ShellConfig {
    let mut config = ShellConfig::new(
        &bsm.to_string(),
        &bsf.to_string(),
        bootstrap_config(mode),
        ClientConfig::new(BSM, "Keycast-terminal-test/0.1"),
    );
    config.oma_bcast_udp = Some("127.0.0.1:0".parse().unwrap());
    config.mbms_udp = Some("127.0.0.1:0".parse().unwrap());
    config.http_timeout = Duration::from_secs(10);
    config.bootstrap_retry = RetryPolicy { attempts: 1, backoff: Duration::ZERO };
    config
}

/// A terminal around `holder`, bootstrapping in `mode`.
pub async fn start_terminal<K>(
    bsf: SocketAddr,
    bsm: SocketAddr,
    clock: &TestClock,
    holder: K,
    mode: GbaMode,
) -> TerminalShell<K>
where
    K: MbmsKeyHolder + Send,
    K::Card: Send,
{
    TerminalShell::new(shell_config(bsf, bsm, mode), holder, clock.utc(), Box::new(SeededRandom::new([0x33; 32])))
        .await
        .unwrap()
}

/// Another device with the same subscription bootstraps (with its own key holder, in `mode`):
/// the BSF keeps one session per IMPI, so the terminal's B-TID is gone.
pub async fn other_client_bootstraps<K>(bsf: SocketAddr, clock: &TestClock, mut other: K, mode: GbaMode) -> String
where
    K: MbmsKeyHolder + Send,
    K::Card: Send,
{
    let mut transport = HttpClient::plain(bsf.to_string()).with_timeout(Duration::from_secs(10));
    let now = clock.utc();
    let now = move || now();
    let mut rng = SeededRandom::new([0x44; 32]);
    let outcome = key_holder::bootstrap(
        &mut transport,
        &bootstrap_config(mode),
        &mut other,
        &now,
        &mut rng,
        RetryPolicy { attempts: 1, backoff: Duration::ZERO },
    )
    .await
    .unwrap();
    outcome.bootstrapped.b_tid
}

/// An STKM for TEK ID 1 under the subscribed SEK (1,2), TEK 0x5c…, salt 0x5d….
pub fn sample_stkm() -> Vec<u8> {
    StkmContent {
        csb_id: 0x0a0b_0c0d,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 1, key_number: 2 },
        tek_id: 1,
        ts: ntp(T0 + 60),
        ext: None,
        tek: TekField::Clear(Tek::from_bytes([0x5c; 16])),
        salt: Some(TekSalt::from_bytes([0x5d; 14])),
    }
    .seal(&SekPek::from_bytes(SEK), &SEK_RAND)
    .unwrap()
}

/// The TEK and salt of [`sample_stkm`], in the clear.
pub fn assert_sample_tek(out: TekOut) {
    match out {
        TekOut::Clear { tek, salt } => {
            assert_eq!(tek, Tek::from_bytes([0x5c; 16]));
            assert_eq!(salt, Some(TekSalt::from_bytes([0x5d; 14])));
        }
        other => panic!("TEK in the clear expected: {other:?}"),
    }
}

/// A download LTKM for SEK (9,1) with V = 1.
pub fn ltkm_9_1(btid: &str, ts: u32, smk: &Smk) -> Vec<u8> {
    LtkmContent {
        csb_id: 0x0900_0001,
        verification_requested: true,
        srtp_cs: None,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 9, key_number: 1 },
        ts,
        rand: [0x39; 16],
        idi: BSM.into(),
        idr: btid.into(),
        srtp_policy: None,
        ext: None,
        key: Some(SekPek::from_bytes([0x91; 16])),
        validity: KeyValidity::TekIdWindow { seq_l: 0, seq_u: 1000 },
    }
    .seal(smk)
    .unwrap()
}
