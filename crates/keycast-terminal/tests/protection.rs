//! Content protection end to end (profile P-6, P-10, P-11.5) against the real BSF and the real
//! BSM (provisioning routes and the key center, served by `http::tls::serve` over HTTPS with
//! client certificates from a test CA made with rcgen) on 127.0.0.1, with the emulated GBA_U card:
//! the terminal subscribes, establishes the secure authenticated channel (Ks_local from the key
//! center, the card's Local Key Establishment), and unwraps the channel-wrapped TEK of a
//! protection_after_reception 0 STKM; the card enforces the Counter Limit; a wrong MAC is refused
//! by the card; the key center refuses plain HTTP; a TBK the terminal is entitled to unwraps a
//! protection_after_reception 2 STKM's TEK, and one it is not entitled to is refused.

mod loopback;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keycast_bsm::domain::{KeyEntry, PurchaseData, PurchaseItem, PurchaseKind, Service, ServiceId, Window};
use keycast_bsm::http::UaGuard;
use keycast_bsm::http::key_center::{KeyCenterConfig, KeyCenterState, key_center_app, tbk_for};
use keycast_bsm::http::provisioning::{ProvisioningState, bsm_app};
use keycast_bsm::http::tls::{ClientCertificates, serve, tls_server_config};
use keycast_bsm::service::{Provisioning, ProvisioningConfig};
use keycast_bsm::store::sql::SqliteStore;
use keycast_bsm::store::{BsmStore, StoredKey};
use keycast_bsm::ua::{UaAuthenticator, UaConfig};
use keycast_card::card::{Card, CardOpError};
use keycast_card::mbms::TekOut;
use keycast_card::usim::LocalKeyRequest;
use keycast_card::{ApduCard, CardError, Emulator};
use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::key_wrap;
use keycast_crypto::keys::{SekPek, Tek, TekSalt};
use keycast_gba::bsf::GbaType;
use keycast_gba::client::http::HttpClient;
use keycast_gba::client::{GbaMode, NafCredentials};
use keycast_mikey::{ProtectionAfterReception, SekPekId, StkmContent, StkmExt, TekField, TrafficProtectionProtocol};
use keycast_provisioning::sprov::Price;
use keycast_provisioning::sprov::{PurchaseItemRef, PurchaseRequestItem};
use keycast_provisioning::time::UtcTime;
use keycast_terminal::key_holder::MbmsKeyHolder;
use keycast_terminal::protection::{
    ProtectionError, ProtectionState, SacIdentity, ltkm_tbk_id, stkm_tbk_id, usable_tek, usable_tek_for,
};
use keycast_terminal::provisioning::Response;
use keycast_terminal::shell::{TerminalShell, bsm_tls_config};
use loopback::{BSM, DAY, IMPI, SEK, SEK_RAND, T0, TestClock, card, kd, ntp, shell_config, start_bsf};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const UA: &str = "Keycast-terminal-test/0.1 3gpp-gba";
/// The ICCID of loopback's card, as the card uses it in the Ks_local KDF.
const ICCID: &[u8] = b"8900100000000000001";
const TERMINAL_ID: &[u8] = b"356938035643809";
/// The TBK the news service (Key Group 1) is bound to, and one bound to another key group.
const NEWS_TBK_ID: u32 = 0x0000_0777;
const OTHER_TBK_ID: u32 = 0x0000_0888;
const TBK_SECRET: [u8; 32] = [0x3b; 32];
const TEK: [u8; 16] = [0x5c; 16];
const SALT: [u8; 14] = [0x5d; 14];

/// The catalogue of loopback's BSM: service `news` (Key Group 1) in item `basic`, sold as
/// `basic-month`; its live SEK (1,2); and service `sport` (Key Group 2, bound to another TBK),
/// which this terminal does not buy.
async fn fill(store: &SqliteStore) {
    for (id, group) in [("news", 1), ("sport", 2)] {
        let service =
            Service { id: ServiceId(id.into()), name: id.into(), key_domain: kd(), key_group: group, streaming: true };
        store.put_service(&service).await.unwrap();
    }
    let item =
        PurchaseItem { global_id: "basic".into(), name: "Basic".into(), services: vec![ServiceId("news".into())] };
    store.put_purchase_item(&item).await.unwrap();
    let data = PurchaseData {
        id: "basic-month".into(),
        item: "basic".into(),
        price: Price { amount: "4.99".into(), currency: "EUR".into() },
        kind: PurchaseKind::Subscription,
        period: 30 * DAY,
        play_backs: 0,
    };
    store.put_purchase_data(&data).await.unwrap();
    let id = SekPekId { key_group: 1, key_number: 2 };
    let entry = KeyEntry { id, window: Window { from: T0 - 10 * DAY, until: T0 + 20 * DAY }, revoked_at: None };
    let key = StoredKey { entry, key_domain: kd(), key: SekPek::from_bytes(SEK), rand: SEK_RAND, csb_id: 0x0100_0012 };
    store.add_key(&key).await.unwrap();
}

struct Ca {
    cert: CertificateDer<'static>,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Keycast protection test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { cert: issuer.der().clone(), issuer }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
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

    fn client(&self) -> Arc<rustls::ClientConfig> {
        let leaf = self.leaf("terminal-0001.devices.example.org", ExtendedKeyUsagePurpose::ClientAuth);
        bsm_tls_config(self.roots(), Some(leaf)).unwrap()
    }
}

/// The BSM's provisioning routes and key center on two listeners: HTTPS with client
/// certificates required, and plain HTTP.
struct Bsm {
    https: SocketAddr,
    http: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Bsm {
    async fn start(bsf: SocketAddr, clock: &TestClock, ca: &Ca, counter_limit: u128) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("bsm.db"), StorageKey::from_bytes([7; 16])).await.unwrap();
        fill(&store).await;
        // The news service's LTKMs carry tbk_flag and its TBK ID (P-4, P-11.5).
        let mut provisioning = ProvisioningConfig::new(BSM);
        provisioning.tbk_bindings = BTreeMap::from([(1, NEWS_TBK_ID), (2, OTHER_TBK_ID)]);
        let authenticator = UaAuthenticator::new(&UaConfig::new(BSM, [9; 32])).unwrap();
        let guard = Arc::new(UaGuard::new(authenticator, Arc::new(loopback::zn_client(bsf))).with_clock(clock.unix()));
        let state = Arc::new(
            ProvisioningState::new(Provisioning::new(store.clone(), provisioning), guard.clone())
                .with_clock(clock.unix()),
        );
        let mut config = KeyCenterConfig::new(BSM, TBK_SECRET.into());
        config.counter_limit = counter_limit;
        config.tbk_bindings = BTreeMap::from([(1, NEWS_TBK_ID), (2, OTHER_TBK_ID)]);
        let key_center = Arc::new(KeyCenterState::new(store, guard, config).with_clock(clock.unix()));
        let app = bsm_app(state).merge(key_center_app(key_center));
        let (chain, key) = ca.leaf(BSM, ExtendedKeyUsagePurpose::ServerAuth);
        let tls = Arc::new(tls_server_config(chain, key, ClientCertificates::Required(ca.roots())).unwrap());
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut addrs = Vec::new();
        for tls in [Some(tls), None] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            let mut stopped = stopped.clone();
            let until = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            tasks.push(tokio::spawn(serve(listener, app.clone(), tls, until)));
        }
        Bsm { https: addrs[0], http: addrs[1], stop, tasks, _dir: dir }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }
}

/// A terminal that subscribed to `basic` over HTTPS (the card holds SEK (1,2)), its Ua
/// credentials, and an HTTPS client of its own for the key center.
async fn subscribed(
    bsf: SocketAddr,
    bsm: &Bsm,
    clock: &TestClock,
    ca: &Ca,
) -> (TerminalShell<ApduCard<Emulator>>, NafCredentials, HttpClient) {
    let mut shell = TerminalShell::new(
        shell_config(bsf, bsm.https, GbaMode::GbaU),
        card(),
        clock.utc(),
        Box::new(keycast_gba::bsf::SeededRandom::new([0x33; 32])),
    )
    .await
    .unwrap();
    let server = ServerName::try_from(BSM).unwrap();
    shell.use_bsm_tls(ca.client(), server.clone());
    let item = PurchaseItemRef::new("basic", Some("basic-month"));
    let until = UtcTime::from_unix_seconds(T0 + 30 * DAY).unwrap();
    let answer = shell.subscribe(vec![(PurchaseRequestItem { item, price: None }, Some(until))]).await.unwrap();
    assert_eq!(answer.ltkms.len(), 1, "{answer:?}");
    // The card took the LTKM, which names the TBK of the news service.
    assert!(answer.ltkms[0].is_ok(), "{answer:?}");
    let Response::Service(service) = &answer.response else { panic!("{answer:?}") };
    assert_eq!(ltkm_tbk_id(&service.ltkms[0]), Some(NEWS_TBK_ID));
    let state = shell.bootstrap_state().clone();
    let creds = shell.card_mut().naf_keys(&state, BSM, IMPI).unwrap();
    let https = HttpClient::tls(bsm.https.to_string(), server, ca.client()).with_timeout(Duration::from_secs(10));
    (shell, creds, https)
}

/// An STKM under SEK (1,2) with TEK ID `tek_id`, TS T0 + 60 + `tek_id`, the given
/// protection_after_reception, and the TEK wrapped by `tbk` when given.
fn stkm(tek_id: u16, par: ProtectionAfterReception, tbk: Option<(u32, [u8; 16])>) -> Vec<u8> {
    let tek = match tbk {
        Some((_, key)) => TekField::WrappedByTbk(key_wrap::wrap_16(&key, &TEK)),
        None => TekField::Clear(Tek::from_bytes(TEK)),
    };
    StkmContent {
        csb_id: 0x0a0b_0c0d,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 1, key_number: 2 },
        tek_id,
        ts: ntp(T0 + 60 + u64::from(tek_id)),
        ext: Some(StkmExt {
            protection_after_reception: par,
            traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
            traffic_authentication: true,
            tbk_id: tbk.map(|(id, _)| id),
            access_criteria: None,
        }),
        tek,
        salt: Some(TekSalt::from_bytes(SALT)),
    }
    .seal(&SekPek::from_bytes(SEK), &SEK_RAND)
    .unwrap()
}

fn assert_the_tek(got: (Tek, Option<TekSalt>)) {
    assert_eq!(got.0, Tek::from_bytes(TEK));
    assert_eq!(got.1, Some(TekSalt::from_bytes(SALT)));
}

fn refused_with(result: Result<TekOut, CardOpError>, sw: u16) {
    match result {
        Err(CardOpError::Card(e)) => assert_eq!(e.status_word(), sw, "{e}"),
        other => panic!("card refusal {sw:04X} expected: {other:?}"),
    }
}

async fn with_limit<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(120), f).await.expect("test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secure_channel_releases_content_protected_teks_up_to_the_counter_limit() {
    with_limit(async {
        let clock = TestClock::new();
        let ca = Ca::new();
        let bsf = start_bsf(&clock, GbaType::GbaU).await;
        let bsm = Bsm::start(bsf.addr, &clock, &ca, 2).await;
        let (mut shell, creds, mut https) = subscribed(bsf.addr, &bsm, &clock, &ca).await;
        let ids = SacIdentity::platform(TERMINAL_ID, ICCID);
        let mut protection = ProtectionState::new();

        // Without a channel the card keeps a protection_after_reception 0 TEK (6982).
        refused_with(
            Card::mtk_generation(shell.card_mut(), &stkm(1, ProtectionAfterReception::MayRecord, None)),
            0x6982,
        );

        // The key center refuses plain HTTP, before any Digest exchange.
        let mut plain = HttpClient::plain(bsm.http.to_string()).with_timeout(Duration::from_secs(10));
        let e = protection
            .establish_sac(&mut plain, &creds, UA, shell.card_mut(), &ids, [0x21; 16], &[1; 16])
            .await
            .unwrap_err();
        assert!(matches!(e, ProtectionError::Refused { status: 403, .. }), "{e:?}");
        assert!(protection.sac().is_none());

        // A B-TID the BSF does not know: the key center's Digest layer says bootstrap again.
        let stale = NafCredentials { b_tid: "stale-btid@bsf.example.org".into(), ..creds.clone() };
        let e = protection
            .establish_sac(&mut https, &stale, UA, shell.card_mut(), &ids, [0x20; 16], &[9; 16])
            .await
            .unwrap_err();
        assert!(matches!(e, ProtectionError::Rebootstrap), "{e:?}");

        // Over mutual TLS: Ks_local from the key center, the card derives the same (its
        // verification value matches), and the channel is up.
        let sac = protection
            .establish_sac(&mut https, &creds, UA, shell.card_mut(), &ids, [0x22; 16], &[2; 16])
            .await
            .unwrap();
        assert_eq!(sac.counter_limit, 2);
        assert_eq!(sac.expires, T0 + DAY, "the BSF's session ends first");
        let status = shell
            .card_mut()
            .local_key_available(
                keycast_crypto::gba::NafId::mbms(BSM).as_bytes(),
                TERMINAL_ID,
                b"platform",
                b"platform",
            )
            .unwrap();
        assert_eq!(status, keycast_card::sac::LocalKeyStatus::Available);

        // protection_after_reception 0 and 1: the card wraps, the terminal unwraps the STKM's TEK.
        let out = Card::mtk_generation(shell.card_mut(), &stkm(1, ProtectionAfterReception::MayRecord, None)).unwrap();
        assert!(matches!(out, TekOut::ChannelWrapped(_)), "{out:?}");
        assert_the_tek(usable_tek(&protection, out).unwrap());
        let out =
            Card::mtk_generation(shell.card_mut(), &stkm(2, ProtectionAfterReception::MustNotRecord, None)).unwrap();
        assert_the_tek(usable_tek(&protection, out).unwrap());

        // Counter Limit 2 is used up: the third is refused.
        refused_with(
            Card::mtk_generation(shell.card_mut(), &stkm(3, ProtectionAfterReception::MayRecord, None)),
            0x6982,
        );

        // A Local Key Establishment with a wrong MAC is refused by the card (9862).
        let request = LocalKeyRequest {
            naf_id: keycast_crypto::gba::NafId::mbms(BSM).as_bytes().to_vec(),
            terminal_id: TERMINAL_ID.to_vec(),
            terminal_appli_id: b"platform".to_vec(),
            uicc_appli_id: b"platform".to_vec(),
            randx: vec![0x23; 16],
            counter_limit: 2u128.to_be_bytes(),
            mac: [0xee; 16],
        };
        match shell.card_mut().local_key_establishment(&request) {
            Err(CardOpError::Card(CardError::Mac)) => {}
            other => panic!("MAC refusal expected: {other:?}"),
        }

        // A fresh establishment renews the limit.
        protection.establish_sac(&mut https, &creds, UA, shell.card_mut(), &ids, [0x24; 16], &[3; 16]).await.unwrap();
        let out = Card::mtk_generation(shell.card_mut(), &stkm(3, ProtectionAfterReception::MayRecord, None)).unwrap();
        assert_the_tek(usable_tek(&protection, out).unwrap());

        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tbk_from_the_key_center_unwraps_terminal_bound_teks_and_others_are_refused() {
    with_limit(async {
        let clock = TestClock::new();
        let ca = Ca::new();
        let bsf = start_bsf(&clock, GbaType::GbaU).await;
        let bsm = Bsm::start(bsf.addr, &clock, &ca, 16).await;
        let (mut shell, creds, mut https) = subscribed(bsf.addr, &bsm, &clock, &ca).await;
        let mut protection = ProtectionState::new();
        let tbk = *tbk_for(&TBK_SECRET, NEWS_TBK_ID).expose_secret();

        // protection_after_reception 2: no channel needed, but no TBK held yet.
        let bound = stkm(1, ProtectionAfterReception::TerminalBound, Some((NEWS_TBK_ID, tbk)));
        let out = Card::mtk_generation(shell.card_mut(), &bound).unwrap();
        assert!(matches!(out, TekOut::TbkWrapped { .. }), "{out:?}");
        assert!(matches!(usable_tek(&protection, out.clone()), Err(ProtectionError::NoTbk)));

        // The TBK of the bought service's binding: delivered, and it unwraps the STKM's TEK.
        let got = protection.fetch_tbk(&mut https, &creds, UA, NEWS_TBK_ID, &[4; 16]).await.unwrap();
        assert_eq!(got.expose_secret(), &tbk);
        assert_eq!(stkm_tbk_id(&bound), Some(NEWS_TBK_ID));
        assert_the_tek(usable_tek_for(&protection, out.clone(), stkm_tbk_id(&bound)).unwrap());
        assert_the_tek(usable_tek(&protection, out).unwrap());

        // A TBK bound to a key group this terminal did not buy: refused, nothing kept.
        let e = protection.fetch_tbk(&mut https, &creds, UA, OTHER_TBK_ID, &[5; 16]).await.unwrap_err();
        assert!(matches!(e, ProtectionError::Refused { status: 403, .. }), "{e:?}");
        assert!(protection.tbk(OTHER_TBK_ID).is_none());

        // A TEK wrapped with that other TBK stays unusable here.
        let other = *tbk_for(&TBK_SECRET, OTHER_TBK_ID).expose_secret();
        let foreign = stkm(2, ProtectionAfterReception::TerminalBound, Some((OTHER_TBK_ID, other)));
        let out = Card::mtk_generation(shell.card_mut(), &foreign).unwrap();
        assert!(matches!(usable_tek(&protection, out), Err(ProtectionError::NoTbk)));

        // Plain HTTP is refused for TBKs too.
        let mut plain = HttpClient::plain(bsm.http.to_string()).with_timeout(Duration::from_secs(10));
        let e = protection.fetch_tbk(&mut plain, &creds, UA, NEWS_TBK_ID, &[6; 16]).await.unwrap_err();
        assert!(matches!(e, ProtectionError::Refused { status: 403, .. }), "{e:?}");

        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}

/// Live watching with the content-protection state: the watcher cannot use the channel-wrapped
/// TEK of a protection_after_reception 0 STKM without the state, and opens the stream once it
/// has it (the secure channel established with the card).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_opens_a_protected_stream_once_the_channel_is_established() {
    use keycast_terminal::media::{Event, Packet, Unusable, WatchConfig, Watcher};
    use keycast_traffic::srtp::{Mki, SrtpMasterKey, SrtpPolicy, SrtpSender};
    with_limit(async {
        let clock = TestClock::new();
        let ca = Ca::new();
        let bsf = start_bsf(&clock, GbaType::GbaU).await;
        let bsm = Bsm::start(bsf.addr, &clock, &ca, 10).await;
        let (mut shell, creds, mut https) = subscribed(bsf.addr, &bsm, &clock, &ca).await;
        let ids = SacIdentity::platform(TERMINAL_ID, ICCID);
        let mut protection = ProtectionState::new();
        protection.establish_sac(&mut https, &creds, UA, shell.card_mut(), &ids, [0x31; 16], &[4; 16]).await.unwrap();
        let now = std::time::Instant::now();

        // Without the protection state: the card releases the TEK wrapped, unusable here.
        let mut watcher = Watcher::new(WatchConfig::default());
        let event = watcher.handle_stkm(shell.card_mut(), &stkm(1, ProtectionAfterReception::MayRecord, None), now);
        assert!(matches!(event, Event::Unusable { reason: Unusable::ChannelWrapped, .. }), "{event:?}");

        // With it: the TEK is unwrapped with K_sac and installed.
        watcher.set_protection(protection);
        let event = watcher.handle_stkm(shell.card_mut(), &stkm(2, ProtectionAfterReception::MayRecord, None), now);
        assert!(matches!(event, Event::TekInstalled { .. }), "{event:?}");

        // The stream under it opens, byte for byte.
        let mki = Mki::new(0x0001_0002, 2);
        let key = SrtpMasterKey::new(mki, Tek::from_bytes(TEK), TekSalt::from_bytes(SALT));
        let mut sender = SrtpSender::new(SrtpPolicy::rfc3711(), &key);
        let mut clear = vec![0x80, 96, 0, 1, 0, 0, 0x0b, 0xb8, 0, 0, 0, 9];
        clear.extend((0..160u32).map(|i| i as u8));
        let mut packet = clear.clone();
        sender.protect(&mut packet).unwrap();
        match watcher.handle_srtp(&mut packet, now) {
            Packet::Clear { len, mki: got } => {
                assert_eq!(got, mki);
                assert_eq!(&packet[..len], &clear[..]);
            }
            other => panic!("the packet should open: {other:?}"),
        }

        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}
