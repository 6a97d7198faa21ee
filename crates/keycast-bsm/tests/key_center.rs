//! The BSM as NAF Key Center (TS 33.110 §4.5.2, profile P-10) and TBK source (P-11.5), against
//! the real BSF on 127.0.0.1 and the key center routes served by `http::tls::serve` over HTTPS
//! with client certificates from a test CA made with rcgen: the Ks_local it answers is the one
//! the emulated card derives (the card accepts the MAC and its verification value matches) and
//! the one the KDF gives from the known Ks_int_NAF; plain HTTP, GBA_ME sessions, unknown B-TIDs,
//! another B-TID, wrong field sizes and wrong content types are refused; TBKs go to entitled
//! terminals only, wrapped under the SRK-derived key.

mod client_id_support;
mod service_support;
mod ua_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use client_id_support::{ClientCert, Pki, ua_exchange};
use keycast_bsm::domain::{ProgramId, Purchase, PurchaseKind, TerminalId, Window};
use keycast_bsm::http::UaGuard;
use keycast_bsm::http::key_center::{
    GBA_U_REQUIRED_BODY, KS_LOCAL_PATH, KeyCenterConfig, KeyCenterState, KsLocalAnswer, KsLocalRequest,
    MUTUAL_TLS_REQUIRED_BODY, TBK_NOT_ENTITLED_BODY, TBK_PATH, TbkAnswer, key_center_app, tbk_for, tbk_wrapping_key,
};
use keycast_bsm::http::tls::{ClientCertificates, serve};
use keycast_bsm::keys::KeyCache;
use keycast_bsm::store::BsmStore;
use keycast_bsm::store::sql::SqliteStore;
use keycast_bsm::ua::{UaAuthenticator, UaConfig};
use keycast_bsm::zn_client::{ZnClient, ZnClientConfig, ZnCredential};
use keycast_card::Card;
use keycast_card::usim::{LocalKeyRequest, local_key_request_mac, local_key_verification};
use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::gba::{self, LocalKeyParams, NafId};
use keycast_crypto::key_wrap;
use keycast_crypto::keys::{KsIntNaf, KsLocal};
use keycast_gba::bsf::GbaType;
use keycast_gba::client::http::{HttpClient, UbTransport as _};
use keycast_gba::client::{GbaMode, HttpRequest, HttpResponse, NafCredentials};
use keycast_provisioning::digest::{Challenge, Qop};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use ua_support::{BSF_DOMAIN, BSM, BTID1, IMPI, KS_INT_NAF, RunningBsf, T0, Terminal, TestClock, ZN_TOKEN, with_limit};

const UA: &str = "Keycast-test/0.1 3gpp-gba";
const JSON: &str = "application/json";
/// The ICCID of ua_support's card as the card uses it.
const ICCID: &[u8] = b"8900100000000000001";
const TBK_SECRET: [u8; 32] = [0x3b; 32];
const COUNTER_LIMIT: u128 = 1000;
const LIFETIME: u64 = 3600;
const DAY: u64 = 86_400;

struct KeyCenter {
    https: SocketAddr,
    http: SocketAddr,
    store: SqliteStore,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl KeyCenter {
    async fn start(bsf: &RunningBsf, clock: &TestClock, pki: &Pki) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("bsm.db"), StorageKey::from_bytes([7; 16])).await.unwrap();
        service_support::fill(&store).await;
        let zn = ZnClient::new(ZnClientConfig::new(
            &bsf.addr.to_string(),
            BSF_DOMAIN,
            BSM,
            ZnCredential::Bearer(ZN_TOKEN.to_owned().into()),
        ));
        let authenticator = UaAuthenticator::new(&UaConfig::new(BSM, [9; 32])).unwrap();
        let guard = Arc::new(UaGuard::new(authenticator, Arc::new(KeyCache::new(zn, 64))).with_clock(clock.clock()));
        let mut config = KeyCenterConfig::new(BSM, TBK_SECRET.into());
        config.counter_limit = COUNTER_LIMIT;
        config.key_lifetime = LIFETIME;
        // news (Key Group 1) → 0x10, sport (2) → 0x20, the PPV program (100) → 0x100.
        config.tbk_bindings = BTreeMap::from([(1, 0x10), (2, 0x20), (100, 0x100)]);
        let state = Arc::new(KeyCenterState::new(store.clone(), guard, config).with_clock(clock.clock()));
        let app = key_center_app(state);
        let tls = pki.server_config(ClientCertificates::Optional(pki.ca.roots()));
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
        KeyCenter { https: addrs[0], http: addrs[1], store, stop, tasks, _dir: dir }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }
}

fn ks_local_request(btid: &str, randx: &[u8]) -> KsLocalRequest {
    KsLocalRequest {
        b_tid: btid.into(),
        terminal_id: STANDARD.encode(b"356938035643809"),
        iccid: STANDARD.encode(ICCID),
        terminal_appli_id: STANDARD.encode(b"platform"),
        uicc_appli_id: STANDARD.encode(b"platform"),
        randx: STANDARD.encode(randx),
    }
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

fn text(r: &HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

async fn post(client: &mut HttpClient, creds: &NafCredentials, path: &str, body: &[u8]) -> HttpResponse {
    ua_exchange(client, creds, path, JSON, body, UA).await.unwrap()
}

/// The BSF (GBA_U), the key center, and a bootstrapped terminal.
async fn setup(clock: &TestClock, pki: &Pki, gba: GbaType) -> (RunningBsf, KeyCenter, Terminal, NafCredentials) {
    let bsf = RunningBsf::start(clock, gba, DAY).await;
    let center = KeyCenter::start(&bsf, clock, pki).await;
    let mode = if gba == GbaType::GbaU { GbaMode::GbaU } else { GbaMode::GbaMe };
    let mut terminal = Terminal::new(mode);
    terminal.bootstrap(&bsf, clock).await;
    let creds = terminal.credentials();
    (bsf, center, terminal, creds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ks_local_from_the_key_center_is_the_cards() {
    with_limit(async {
        let clock = TestClock::new();
        let pki = Pki::new();
        let (bsf, center, mut terminal, creds) = setup(&clock, &pki, GbaType::GbaU).await;
        assert_eq!(creds.b_tid, BTID1);
        let mut client = pki.https_client(center.https, ClientCert::Trusted);
        let randx = [0x42u8; 16];
        let response = post(&mut client, &creds, KS_LOCAL_PATH, &json(&ks_local_request(BTID1, &randx))).await;
        assert_eq!(response.status, 200, "{}", text(&response));
        assert_eq!(response.header("Content-Type"), Some(JSON));
        let answer: KsLocalAnswer = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(answer.b_tid, BTID1);
        assert_eq!(STANDARD.decode(&answer.naf_id).unwrap(), NafId::mbms(BSM).as_bytes());
        assert_eq!(answer.key_lifetime, T0 + LIFETIME, "the configured lifetime, within the session's");
        let counter_limit: [u8; 16] = STANDARD.decode(&answer.counter_limit).unwrap().try_into().unwrap();
        assert_eq!(u128::from_be_bytes(counter_limit), COUNTER_LIMIT);
        let ks_local = KsLocal::from_slice(&STANDARD.decode(&answer.ks_local).unwrap()).unwrap();

        // The KDF of P-10 over the known Ks_int_NAF gives the same key.
        let ks_int_naf = KsIntNaf::from_bytes(hex::decode(KS_INT_NAF).unwrap().try_into().unwrap());
        let params = LocalKeyParams {
            b_tid: BTID1,
            terminal_id: b"356938035643809",
            iccid: ICCID,
            terminal_appli_id: b"platform",
            uicc_appli_id: b"platform",
            randx: &randx,
            counter_limit: &counter_limit,
        };
        assert_eq!(gba::ks_local(&ks_int_naf, &params).unwrap(), ks_local);

        // The card derives it too: it accepts the MAC and answers the matching verification.
        let mut request = LocalKeyRequest {
            naf_id: NafId::mbms(BSM).as_bytes().to_vec(),
            terminal_id: b"356938035643809".to_vec(),
            terminal_appli_id: b"platform".to_vec(),
            uicc_appli_id: b"platform".to_vec(),
            randx: randx.to_vec(),
            counter_limit,
            mac: [0; 16],
        };
        request.mac = local_key_request_mac(&ks_local, &request, ICCID);
        let verification = terminal.card.local_key_establishment(&request).unwrap();
        assert_eq!(verification, local_key_verification(&ks_local));

        center.stop().await;
        bsf.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_center_refuses_what_it_must() {
    with_limit(async {
        let clock = TestClock::new();
        let pki = Pki::new();
        let (bsf, center, _terminal, creds) = setup(&clock, &pki, GbaType::GbaU).await;
        let body = json(&ks_local_request(BTID1, &[1; 16]));

        // Plain HTTP and HTTPS without a client certificate: 403 at once, no Digest challenge.
        for mut client in [
            HttpClient::plain(center.http.to_string()).with_timeout(Duration::from_secs(10)),
            pki.https_client(center.https, ClientCert::None),
        ] {
            for path in [KS_LOCAL_PATH, TBK_PATH] {
                let request = HttpRequest {
                    method: "POST".into(),
                    uri: path.into(),
                    headers: vec![
                        ("Host".into(), BSM.into()),
                        ("User-Agent".into(), UA.into()),
                        ("Content-Type".into(), JSON.into()),
                    ],
                    body: body.clone(),
                };
                let response = client.send(&request).await.unwrap();
                assert_eq!(response.status, 403);
                assert_eq!(text(&response), MUTUAL_TLS_REQUIRED_BODY);
                assert!(response.header("WWW-Authenticate").is_none());
            }
        }

        let mut client = pki.https_client(center.https, ClientCert::Trusted);
        // Another B-TID than the authenticated one.
        let other = json(&ks_local_request("someone-else@bsf.example.org", &[1; 16]));
        let response = post(&mut client, &creds, KS_LOCAL_PATH, &other).await;
        assert_eq!(response.status, 403, "{}", text(&response));
        // Wrong sizes: RANDx of 15, an empty Terminal_ID, an ICCID of 21.
        let mut short = ks_local_request(BTID1, &[1; 15]);
        let response = post(&mut client, &creds, KS_LOCAL_PATH, &json(&short)).await;
        assert_eq!(response.status, 400, "{}", text(&response));
        assert!(text(&response).contains("randx"));
        short = ks_local_request(BTID1, &[1; 16]);
        short.terminal_id = String::new();
        assert_eq!(post(&mut client, &creds, KS_LOCAL_PATH, &json(&short)).await.status, 400);
        short = ks_local_request(BTID1, &[1; 16]);
        short.iccid = STANDARD.encode([b'8'; 21]);
        assert_eq!(post(&mut client, &creds, KS_LOCAL_PATH, &json(&short)).await.status, 400);
        // Not JSON, unknown fields, wrong content type.
        assert_eq!(post(&mut client, &creds, KS_LOCAL_PATH, b"{").await.status, 400);
        assert_eq!(post(&mut client, &creds, KS_LOCAL_PATH, br#"{"b_tid":"x","extra":1}"#).await.status, 400);
        let response = ua_exchange(&mut client, &creds, KS_LOCAL_PATH, "text/plain", &body, UA).await.unwrap();
        assert_eq!(response.status, 415);

        // An unknown B-TID: the Digest layer's 401 (bootstrap again), no key.
        let stranger = NafCredentials { b_tid: "unknown-btid@bsf.example.org".into(), ..creds.clone() };
        let first = client
            .send(&HttpRequest {
                method: "POST".into(),
                uri: KS_LOCAL_PATH.into(),
                headers: vec![
                    ("Host".into(), BSM.into()),
                    ("User-Agent".into(), UA.into()),
                    ("Content-Type".into(), JSON.into()),
                ],
                body: body.clone(),
            })
            .await
            .unwrap();
        assert_eq!(first.status, 401);
        let challenge = Challenge::parse(first.header("WWW-Authenticate").unwrap()).unwrap();
        let mut digest = stranger.digest_client(challenge, &[Qop::AuthInt]).unwrap();
        let sent = digest.authorize("POST", KS_LOCAL_PATH, &body, &[7; 16]).unwrap();
        let response = client
            .send(&HttpRequest {
                method: "POST".into(),
                uri: KS_LOCAL_PATH.into(),
                headers: vec![
                    ("Host".into(), BSM.into()),
                    ("User-Agent".into(), UA.into()),
                    ("Content-Type".into(), JSON.into()),
                    ("Authorization".into(), sent.credentials().to_header_value().unwrap()),
                ],
                body: body.clone(),
            })
            .await
            .unwrap();
        assert_eq!(response.status, 401, "{}", text(&response));
        assert!(!text(&response).contains("ks_local"));

        center.stop().await;
        bsf.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gba_me_session_gets_no_ks_local() {
    with_limit(async {
        let clock = TestClock::new();
        let pki = Pki::new();
        let (bsf, center, _terminal, creds) = setup(&clock, &pki, GbaType::GbaMe).await;
        let mut client = pki.https_client(center.https, ClientCert::Trusted);
        let body = json(&ks_local_request(&creds.b_tid, &[1; 16]));
        let response = post(&mut client, &creds, KS_LOCAL_PATH, &body).await;
        assert_eq!(response.status, 403);
        assert_eq!(text(&response), GBA_U_REQUIRED_BODY);
        center.stop().await;
        bsf.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tbks_go_to_entitled_terminals_only_wrapped_under_the_srk() {
    with_limit(async {
        let clock = TestClock::new();
        let pki = Pki::new();
        let (bsf, center, _terminal, creds) = setup(&clock, &pki, GbaType::GbaU).await;
        let mut client = pki.https_client(center.https, ClientCert::Trusted);
        let ask = |id: u32| json(&serde_json::json!({ "terminal_binding_key_id": id }));
        let me = TerminalId(IMPI.into());
        let refused = |r: &HttpResponse| r.status == 403 && text(r) == TBK_NOT_ENTITLED_BODY;

        // Nothing bought: refused.
        assert!(refused(&post(&mut client, &creds, TBK_PATH, &ask(0x10)).await));

        // A subscription to `basic` (news, Key Group 1): the TBK bound to group 1, not sport's.
        let purchase = |item: &str, offer: &str, kind, window| Purchase {
            terminal: me.clone(),
            item: item.into(),
            purchase_data: offer.into(),
            kind,
            window,
        };
        let month = Window { from: T0, until: T0 + 30 * DAY };
        center.store.touch_terminal(&me, &creds.b_tid, T0).await.unwrap();
        center.store.put_purchase(&purchase("basic", "basic-month", PurchaseKind::Subscription, month)).await.unwrap();
        let response = post(&mut client, &creds, TBK_PATH, &ask(0x10)).await;
        assert_eq!(response.status, 200, "{}", text(&response));
        let answer: TbkAnswer = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(answer.terminal_binding_key_id, 0x10);
        let wrapped: [u8; 24] = STANDARD.decode(&answer.wrapped_tbk).unwrap().try_into().unwrap();
        let tbk = key_wrap::unwrap_16(&tbk_wrapping_key(&creds.srk), &wrapped).unwrap();
        assert_eq!(&*tbk, tbk_for(&TBK_SECRET, 0x10).expose_secret());
        assert!(!text(&response).contains(&STANDARD.encode(*tbk)), "the TBK never travels in the clear");
        assert!(refused(&post(&mut client, &creds, TBK_PATH, &ask(0x20)).await));
        assert!(refused(&post(&mut client, &creds, TBK_PATH, &ask(0x999)).await), "unbound ID");

        // A pay-per-view purchase of the program (Key Group 100) entitles to its binding.
        assert!(refused(&post(&mut client, &creds, TBK_PATH, &ask(0x100)).await));
        let ppv = Window { from: T0 + DAY, until: T0 + DAY + 7200 };
        center
            .store
            .put_purchase(&purchase("events", "final-ppv", PurchaseKind::PayPerView(ProgramId("final".into())), ppv))
            .await
            .unwrap();
        assert_eq!(post(&mut client, &creds, TBK_PATH, &ask(0x100)).await.status, 200);

        // Once the subscription has ended, its TBK is refused.
        clock.advance(31 * DAY);
        let mut later = Terminal::new(GbaMode::GbaU);
        later.bootstrap(&bsf, &clock).await;
        let creds = later.credentials();
        assert!(refused(&post(&mut client, &creds, TBK_PATH, &ask(0x10)).await));

        // Malformed: 400.
        assert_eq!(post(&mut client, &creds, TBK_PATH, br#"{"terminal_binding_key_id":-1}"#).await.status, 400);

        center.stop().await;
        bsf.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_ltkms_of_a_bound_key_group_carry_tbk_flag_and_the_id() {
    use keycast_bsm::service::ProvisioningConfig;
    use keycast_provisioning::sprov::{PurchaseItemRef, PurchaseRequestItem, ServiceRequest};

    let mut config = ProvisioningConfig::new(BSM);
    config.tbk_bindings = BTreeMap::from([(1, 0x10)]);
    let bsm = service_support::Bsm::with_config(config).await;
    let caller = service_support::caller(4);
    let request = |item: &str, offer: &str| ServiceRequest {
        request_id: 1,
        client: None,
        items: vec![PurchaseRequestItem { item: PurchaseItemRef::new(item, Some(offer)), price: None }],
    };
    let source = service_support::source(4);
    // news (Key Group 1) is bound: its LTKM names TBK 0x10.
    let o = bsm.svc.service_request(&caller, &request("basic", "basic-month"), source, T0).await.unwrap();
    assert_eq!(o.response.ltkms.len(), 1);
    let content = service_support::open(&o.response.ltkms[0], &caller);
    assert_eq!(content.sek_pek_id, service_support::id(1, 2));
    let ext = content.ext.expect("OMA BCAST extension");
    assert_eq!(ext.tbk_id, Some(0x10));
    assert!(ext.security_policy.is_some());
    // sport (Key Group 2) is not: no tbk_flag.
    let o = bsm.svc.service_request(&caller, &request("all", "all-month"), source, T0).await.unwrap();
    let unbound: Vec<_> = o
        .response
        .ltkms
        .iter()
        .map(|l| service_support::open(l, &caller))
        .filter(|c| c.sek_pek_id.key_group == 2)
        .collect();
    assert!(!unbound.is_empty());
    assert!(unbound.iter().all(|c| c.ext.as_ref().is_some_and(|e| e.tbk_id.is_none())));
}
