//! BCAST_Client_ID end to end (seed §6.9.2): the terminal shell bootstraps with the real BSF
//! (keycast-gba) and talks to the real BSM (keycast-bsm's provisioning routes served by
//! `http::tls::serve`) over HTTPS with client certificates from a test CA made with rcgen. The
//! BSM asks for the ID (policy `Request`); the terminal's Registration gets `403
//! send_BCAST_Client_ID`, goes again with the ID over the same mutually authenticated connection,
//! and is answered; the BSM has stored the ID. A terminal without an ID reports the refusal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keycast_bsm::client_id::BcastClientIdPolicy;
use keycast_bsm::domain::{KeyEntry, PurchaseData, PurchaseItem, PurchaseKind, Service, ServiceId, TerminalId, Window};
use keycast_bsm::http::UaGuard;
use keycast_bsm::http::provisioning::{ProvisioningState, bsm_app};
use keycast_bsm::http::tls::{ClientCertificates, tls_server_config};
use keycast_bsm::service::{Provisioning, ProvisioningConfig};
use keycast_bsm::store::sql::SqliteStore;
use keycast_bsm::store::{BsmStore, Interface as StoredInterface, StoredKey};
use keycast_bsm::ua::{UaAuthenticator, UaConfig};
use keycast_bsm::zn_client::{ZnClient, ZnClientConfig, ZnCredential};
use keycast_card::usim::{Usim, UsimIdentity};
use keycast_card::{ApduCard, Emulator};
use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::keys::{Opc, SekPek, SubscriberKey};
use keycast_crypto::milenage::sqn_from_u64;
use keycast_gba::bsf::http::{BsfState, ZnAuth, ZnToken, app};
use keycast_gba::bsf::{Bsf, BsfConfig, GbaType, MemoryStore, SeededRandom, Subscriber};
use keycast_gba::client::http::RetryPolicy;
use keycast_gba::client::{BootstrapConfig, GbaMode};
use keycast_mikey::{KeyDomainId, SekPekId};
use keycast_provisioning::sprov::{Price, PurchaseItemRef, PurchaseRequestItem, StatusCode};
use keycast_provisioning::time::UtcTime;
use keycast_terminal::provisioning::{BcastClientId, ClientConfig, ProvisioningError, Purchase, Response};
use keycast_terminal::shell::{ShellConfig, ShellError, TerminalShell, bsm_tls_config};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpListener;
use tokio::sync::watch;

const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
const BSF_DOMAIN: &str = "bsf.example.org";
const BSM: &str = "bmsc.example.org";
const ZN_TOKEN: &str = "client-id-test-zn-token-42";
/// 2026-06-01T00:00:00Z.
const T0: u64 = 1_780_272_000;
const DAY: u64 = 86_400;
/// TS 35.208 test set 1 (K, OPc) and an SQN near its own.
const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
const SQN: u64 = 0xff9b_b4d0_b607;
const CLIENT_ID: &[u8] = b"bcast-client-terminal-0001";

fn h<const N: usize>(text: &str) -> [u8; N] {
    hex::decode(text).unwrap().try_into().unwrap()
}

fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

/// The test CA, the BSM's server certificate and one terminal certificate.
struct Pki {
    ca: CertificateDer<'static>,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Keycast terminal-test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca: issuer.der().clone(), issuer }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        roots
    }

    fn leaf(
        &self,
        name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }
}

struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    fn until_stopped(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(15), self.task).await.expect("server stops").unwrap();
    }
}

async fn start_bsf(now: Arc<AtomicU64>) -> Server {
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
            .with_clock(Arc::new(move || now.load(Ordering::SeqCst))),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(keycast_gba::bsf::http::serve(listener, app(state), None, Server::until_stopped(&rx)));
    Server { addr, stop, task }
}

/// Service `news` (Key Group 1) in item `basic`, offered as `basic-month`, with a live SEK.
async fn fill(store: &SqliteStore) {
    let news =
        Service { id: ServiceId("news".into()), name: "News".into(), key_domain: kd(), key_group: 1, streaming: true };
    store.put_service(&news).await.unwrap();
    let item = PurchaseItem { global_id: "basic".into(), name: "Basic".into(), services: vec![news.id.clone()] };
    store.put_purchase_item(&item).await.unwrap();
    let price = Price { amount: "4.99".into(), currency: "EUR".into() };
    let offer = PurchaseData {
        id: "basic-month".into(),
        item: "basic".into(),
        price,
        kind: PurchaseKind::Subscription,
        period: 30 * DAY,
        play_backs: 0,
    };
    store.put_purchase_data(&offer).await.unwrap();
    let id = SekPekId { key_group: 1, key_number: 2 };
    let window = Window { from: T0 - DAY, until: T0 + 20 * DAY };
    let entry = KeyEntry { id, window, revoked_at: None };
    let key = StoredKey { entry, key_domain: kd(), key: SekPek::from_bytes([0x12; 16]), rand: [0x48; 16], csb_id: 7 };
    store.add_key(&key).await.unwrap();
}

/// The BSM's provisioning routes over HTTPS, client certificates required, BCAST_Client_ID
/// requested.
async fn start_bsm(
    bsf: SocketAddr,
    now: Arc<AtomicU64>,
    pki: &Pki,
    dir: &tempfile::TempDir,
) -> (Server, Arc<ProvisioningState<SqliteStore>>) {
    let store = SqliteStore::open(dir.path().join("bsm.db"), StorageKey::from_bytes([7; 16])).await.unwrap();
    fill(&store).await;
    let zn = ZnClient::new(ZnClientConfig::new(
        &bsf.to_string(),
        BSF_DOMAIN,
        BSM,
        ZnCredential::Bearer(ZN_TOKEN.to_owned().into()),
    ));
    let clock: Arc<dyn Fn() -> u64 + Send + Sync> = Arc::new(move || now.load(Ordering::SeqCst));
    let authenticator = UaAuthenticator::new(&UaConfig::new(BSM, [9; 32])).unwrap();
    let guard = Arc::new(UaGuard::new(authenticator, Arc::new(zn)).with_clock(clock.clone()));
    let state = Arc::new(
        ProvisioningState::new(Provisioning::new(store, ProvisioningConfig::new(BSM)), guard)
            .with_clock(clock)
            .with_client_id_policy(BcastClientIdPolicy::Request),
    );
    let (chain, key) = pki.leaf(BSM, ExtendedKeyUsagePurpose::ServerAuth);
    let tls = tls_server_config(chain, key, ClientCertificates::Required(pki.roots())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let serve = keycast_bsm::http::tls::serve(
        listener,
        bsm_app(state.clone()),
        Some(Arc::new(tls)),
        Server::until_stopped(&rx),
    );
    (Server { addr, stop, task: tokio::spawn(serve) }, state)
}

fn card() -> ApduCard<Emulator> {
    let id = UsimIdentity { imsi: "001010000000001".into(), impi: IMPI.into(), iccid: "8900100000000000001".into() };
    let mut usim = Usim::new(id, SubscriberKey::from_bytes(h(K)), Opc::from_bytes(h(OPC)));
    usim.sqn_ms = sqn_from_u64(SQN - 7);
    ApduCard::new(Emulator::new(usim))
}

/// A terminal shell toward the BSM over HTTPS with its own client certificate.
async fn terminal(
    bsf: SocketAddr,
    bsm: SocketAddr,
    now: &Arc<AtomicU64>,
    pki: &Pki,
    client_id: Option<&[u8]>,
) -> TerminalShell<ApduCard<Emulator>> {
    let bootstrap = BootstrapConfig {
        bsf_host: BSF_DOMAIN.into(),
        impi: IMPI.into(),
        user_agent: "Keycast-terminal-test/0.1".into(),
        mode: GbaMode::GbaU,
    };
    let mut client = ClientConfig::new(BSM, "Keycast-terminal-test/0.1");
    client.bcast_client_id = client_id.map(|id| BcastClientId::new(id.to_vec()).unwrap());
    let mut config = ShellConfig::new(&bsm.to_string(), &bsf.to_string(), bootstrap, client);
    config.oma_bcast_udp = Some("127.0.0.1:0".parse().unwrap());
    config.mbms_udp = Some("127.0.0.1:0".parse().unwrap());
    config.http_timeout = Duration::from_secs(10);
    config.bootstrap_retry = RetryPolicy { attempts: 1, backoff: Duration::ZERO };
    let t = now.clone();
    let clock = Arc::new(move || UtcTime::from_unix_seconds(t.load(Ordering::SeqCst)).unwrap());
    let mut shell = TerminalShell::new(config, card(), clock, Box::new(SeededRandom::new([0x33; 32]))).await.unwrap();
    let tls = bsm_tls_config(
        pki.roots(),
        Some(pki.leaf("terminal-0001.devices.example.org", ExtendedKeyUsagePurpose::ClientAuth)),
    )
    .unwrap();
    shell.use_bsm_tls(tls, ServerName::try_from(BSM).unwrap());
    shell
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asked_for_its_bcast_client_id_the_terminal_sends_it_over_mutual_tls_and_registers() {
    tokio::time::timeout(Duration::from_secs(90), scenario()).await.expect("the scenario ends in time");
}

async fn scenario() {
    let now = Arc::new(AtomicU64::new(T0));
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let bsf = start_bsf(now.clone()).await;
    let (bsm, state) = start_bsm(bsf.addr, now.clone(), &pki, &dir).await;
    let mut shell = terminal(bsf.addr, bsm.addr, &now, &pki, Some(CLIENT_ID)).await;
    assert!(shell.client().mutual_tls(), "the TLS configuration carries a client certificate");

    // Power-on with nothing bought: bootstrap only. Then a subscription (not a Registration,
    // so the BSM does not ask for the ID).
    assert!(shell.connect().await.unwrap().is_none());
    let item = PurchaseItemRef::new("basic", Some("basic-month"));
    let until = UtcTime::from_unix_seconds(T0 + 30 * DAY).unwrap();
    let answer = shell.subscribe(vec![(PurchaseRequestItem { item: item.clone(), price: None }, Some(until))]).await;
    let Response::Service(service) = answer.unwrap().response else { panic!("not a Service Response") };
    assert_eq!(service.status, StatusCode::Success);
    let impi = TerminalId(IMPI.into());
    assert_eq!(state.service().store().terminal(&impi).await.unwrap().unwrap().bcast_client_id, None);

    // Power-on again: Registration -> 403 send_BCAST_Client_ID -> the Registration with the ID.
    now.fetch_add(60, Ordering::SeqCst);
    let answer = shell.connect().await.unwrap().expect("something to register");
    let Response::Registration(registration) = &answer.response else { panic!("{answer:?}") };
    assert_eq!(registration.status, StatusCode::Success);
    assert!(!answer.ltkms.is_empty() && answer.ltkms.iter().all(Result::is_ok), "its card takes the LTKMs");
    let stored = state.service().store().terminal(&impi).await.unwrap().unwrap();
    assert_eq!(stored.bcast_client_id.map(|id| id.as_bytes().to_vec()), Some(CLIENT_ID.to_vec()));
    let reg = stored.registration.expect("registered");
    assert_eq!(reg.interface, StoredInterface::OmaBcast);
    assert_eq!(reg.at, T0 + 60);

    // The same subscriber on a device without an ID: the request for one is reported.
    let mut other = terminal(bsf.addr, bsm.addr, &now, &pki, None).await;
    other.client_mut().purchases_mut().insert(Purchase { item, valid_until: Some(until) });
    let refused = other.connect().await;
    assert!(matches!(refused, Err(ShellError::Provisioning(ProvisioningError::ClientIdRequested))), "{refused:?}");

    bsm.stop().await;
    bsf.stop().await;
}
