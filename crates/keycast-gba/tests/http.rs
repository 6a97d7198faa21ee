//! The BSF service over real loopback sockets (plain HTTP and HTTPS with rustls), driven by the
//! terminal's `Bootstrapper` through its HTTP shell, with the emulated card (Milenage test set 1)
//! and the GBA worked example of vectors.md §2; Zn over mutual TLS and by loopback token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keycast_card::usim::{Usim, UsimIdentity};
use keycast_card::{ApduCard, Emulator};
use keycast_crypto::gba::NafId;
use keycast_crypto::keys::{Opc, SubscriberKey};
use keycast_crypto::milenage::sqn_from_u64;
use keycast_gba::bsf::http::{
    BsfState, Clock, ConnInfo, ZN_PATH, ZnAuth, ZnToken, app, install_prometheus, metrics_app, serve, tls_server_config,
};
use keycast_gba::bsf::{
    Bsf, BsfConfig, BsfStore, FailureCause, GbaType, MemoryStore, SeededRandom, SqliteStore, StorageKey, Subscriber,
};
use keycast_gba::client::http::{HttpClient, HttpClientError, Outcome, RetryPolicy, UbTransport, bootstrap};
use keycast_gba::client::{BootstrapConfig, GbaMode, HttpRequest, HttpResponse};
use keycast_provisioning::digest::Credentials;
use keycast_provisioning::time::UtcTime;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
const DOMAIN: &str = "bsf.example.org";
const BSM: &str = "bmsc.example.org";
const OTHER_NAF: &str = "other.example.org";
const UNLISTED_NAF: &str = "unlisted.example.org";
const BTID: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org";
const BSM_TOKEN: &str = "bsm-token-0123456789";
const UNLISTED_TOKEN: &str = "unlisted-token-0123456789";
/// 2026-06-01T00:00:00Z.
const T0: u64 = 1_780_272_000;
/// SQN of Milenage set 1.
const SQN1: u64 = 0xff9b_b4d0_b607;
const KS_EXT_NAF: &str = "79d8098e4b9ef12c858a0da3471f6b2d29b4cbb549500dcb3c88154562de340d";
const KS_INT_NAF: &str = "5ecf80629e0becb2def8d9b3cb80ae3f99ab18f9c50f49fd5da0e6cfb6d0ee5f";
const LIMIT: Duration = Duration::from_secs(60);

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

fn subscriber() -> Subscriber {
    Subscriber {
        impi: IMPI.into(),
        imsi: "001010000000001".into(),
        k: k(),
        opc: opc(),
        // The next vector carries set 1's SQN (step 32).
        sqn: SQN1 - 32,
        amf: [0xb9, 0xb9],
        gba_type: GbaType::GbaU,
    }
}

/// The emulated card of set 1 over APDUs; it last saw an SQN just below set 1's.
fn card() -> ApduCard<Emulator> {
    let id = UsimIdentity { imsi: "001010000000001".into(), impi: IMPI.into(), iccid: "8900100000000000001".into() };
    let mut usim = Usim::new(id, k(), opc());
    usim.sqn_ms = sqn_from_u64(SQN1 - 7);
    ApduCard::new(Emulator::new(usim))
}

fn client_config() -> BootstrapConfig {
    BootstrapConfig {
        bsf_host: DOMAIN.into(),
        impi: IMPI.into(),
        user_agent: "Keycast-test/0.1".into(),
        mode: GbaMode::GbaU,
    }
}

fn bsf_config(secret: u8, key_lifetime: u64) -> BsfConfig {
    let mut c = BsfConfig::new(DOMAIN, [secret; 32]);
    c.authorised_nafs = vec![BSM.into(), OTHER_NAF.into()];
    c.fake_amf = [0xb9, 0xb9];
    c.key_lifetime = key_lifetime;
    c
}

fn zn_auth() -> ZnAuth {
    ZnAuth {
        tokens: vec![
            ZnToken { naf: BSM.into(), token: BSM_TOKEN.to_owned().into() },
            ZnToken { naf: UNLISTED_NAF.into(), token: UNLISTED_TOKEN.to_owned().into() },
        ],
        allowed_naf_cert_names: vec![BSM.into(), OTHER_NAF.into()],
    }
}

/// A test clock: Unix seconds in an atomic, shared by the BSF and the terminal.
#[derive(Clone)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn new() -> Self {
        TestClock(Arc::new(AtomicU64::new(T0)))
    }
    fn clock(&self) -> Clock {
        let t = self.0.clone();
        Arc::new(move || t.load(Ordering::SeqCst))
    }
    fn utc(&self) -> UtcTime {
        UtcTime::from_unix_seconds(self.0.load(Ordering::SeqCst)).unwrap()
    }
    fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

fn state<S: BsfStore + Send + Sync + 'static>(
    store: Arc<S>,
    secret: u8,
    key_lifetime: u64,
    clock: &TestClock,
) -> Arc<BsfState<S>> {
    let mut rng = SeededRandom::new([secret; 32]);
    rng.queue(&rand1());
    Arc::new(
        BsfState::new(Bsf::new(bsf_config(secret, key_lifetime)).unwrap(), store, zn_auth())
            .with_rng(rng)
            .with_clock(clock.clock()),
    )
}

fn memory_store() -> Arc<MemoryStore> {
    let s = MemoryStore::new();
    s.insert_subscriber(subscriber());
    Arc::new(s)
}

async fn sqlite_store(path: &std::path::Path, add: bool) -> Arc<SqliteStore> {
    let store = SqliteStore::open(path, StorageKey::from_bytes([0x5a; 16])).await.unwrap();
    if add {
        store.add_subscriber(&subscriber()).await.unwrap();
    }
    Arc::new(store)
}

// ---------------------------------------------------------------------------------------------
// Certificates (rcgen on aws-lc-rs)

struct Pki {
    ca: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Keycast test CA");
        let issuer = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let (server_chain, server_key) = Self::leaf(&issuer, DOMAIN, ExtendedKeyUsagePurpose::ServerAuth);
        Pki { ca: issuer.der().clone(), server_chain, server_key, issuer }
    }

    fn leaf(
        issuer: &CertifiedIssuer<'static, KeyPair>,
        name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> (Vec<CertificateDer<'static>>, Vec<u8>) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        (vec![cert.der().clone()], key.serialize_der())
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        roots
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        Arc::new(tls_server_config(self.server_chain.clone(), key, Some(self.roots())).unwrap())
    }

    /// A client configuration trusting the CA, with a NAF client certificate for `naf` if given.
    fn client_config(&self, naf: Option<&str>) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots());
        let config = match naf {
            None => builder.with_no_client_auth(),
            Some(name) => {
                let (chain, key) = Self::leaf(&self.issuer, name, ExtendedKeyUsagePurpose::ClientAuth);
                builder.with_client_auth_cert(chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key))).unwrap()
            }
        };
        Arc::new(config)
    }

    fn https_client(&self, addr: SocketAddr, naf: Option<&str>) -> HttpClient {
        HttpClient::tls(addr.to_string(), ServerName::try_from(DOMAIN).unwrap(), self.client_config(naf))
            .with_timeout(Duration::from_secs(10))
    }
}

// ---------------------------------------------------------------------------------------------
// Server and client helpers

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(router: axum::Router, tls: Option<Arc<rustls::ServerConfig>>, addr: Option<SocketAddr>) -> Self {
        let listener = TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap())).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, router, tls, async {
            let _ = rx.await;
        }));
        Server { addr, stop: Some(tx), task }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), self.task).await.expect("server stops").unwrap();
    }
}

fn plain_client(addr: SocketAddr) -> HttpClient {
    HttpClient::plain(addr.to_string()).with_timeout(Duration::from_secs(10))
}

fn test_rng() -> SeededRandom {
    SeededRandom::new([0x33; 32])
}

async fn run_bootstrap<T: UbTransport + Send>(
    transport: &mut T,
    card: &mut ApduCard<Emulator>,
    clock: &TestClock,
    policy: RetryPolicy,
) -> Outcome {
    let c = clock.clone();
    let now = move || c.utc();
    bootstrap(transport, &client_config(), card, None, &now, &mut test_rng(), policy).await.unwrap()
}

fn zn_request(btid: &str, naf: &str, gba_u_aware: bool, token: Option<&str>) -> HttpRequest {
    let body = serde_json::json!({
        "btid": btid,
        "naf_id": STANDARD.encode(NafId::mbms(naf).as_bytes()),
        "gba_u_aware": gba_u_aware,
    });
    raw_zn_request(body.to_string().into_bytes(), token)
}

fn raw_zn_request(body: Vec<u8>, token: Option<&str>) -> HttpRequest {
    let mut headers =
        vec![("Host".to_owned(), DOMAIN.to_owned()), ("Content-Type".to_owned(), "application/json".to_owned())];
    if let Some(t) = token {
        headers.push(("Authorization".to_owned(), format!("Bearer {t}")));
    }
    HttpRequest { method: "POST".into(), uri: ZN_PATH.into(), headers, body }
}

fn json_of(r: &HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("JSON body: {r:?}"))
}

fn key_hex(v: &serde_json::Value, field: &str) -> String {
    hex::encode(STANDARD.decode(v[field].as_str().unwrap_or_else(|| panic!("{field} in {v}"))).unwrap())
}

fn assert_zn_error(r: &HttpResponse, status: u16, error: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(json_of(r)["error"], error, "{r:?}");
}

async fn with_limit<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f).await.expect("test finishes in time");
}

// ---------------------------------------------------------------------------------------------
// Bootstrapping and Zn

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gba_u_bootstrap_over_plain_http_with_memory_store_then_zn_by_loopback_token() {
    with_limit(async {
        let clock = TestClock::new();
        let state = state(memory_store(), 1, 86_400, &clock);
        let server = Server::start(app(state.clone()), None, None).await;
        let mut card = card();
        let mut client = plain_client(server.addr);
        let outcome = run_bootstrap(&mut client, &mut card, &clock, RetryPolicy::default()).await;
        assert_eq!(outcome.attempts, 1);
        assert_eq!(outcome.bootstrapped.b_tid, BTID);
        assert_eq!(outcome.bootstrapped.lifetime.unix_seconds(), T0 + 86_400);
        assert_eq!(card.read_gba_bp().unwrap().unwrap().b_tid.as_deref(), Some(BTID));

        let r = client.send(&zn_request(BTID, BSM, true, Some(BSM_TOKEN))).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let v = json_of(&r);
        assert_eq!(v["impi"], IMPI);
        assert_eq!(v["gba_type"], "gba-u");
        assert_eq!(v["bootstrapped_at"], "2026-06-01T00:00:00Z");
        assert_eq!(v["lifetime"], "2026-06-02T00:00:00Z");
        assert_eq!(key_hex(&v, "ks_ext_naf"), KS_EXT_NAF);
        assert_eq!(key_hex(&v, "ks_int_naf"), KS_INT_NAF);
        assert!(v.get("ks_naf").is_none());
        assert_eq!(state.core_metrics().await.bootstraps_gba_u, 1);
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gba_u_bootstrap_over_https_with_sqlite_store_then_zn_over_mutual_tls() {
    with_limit(async {
        let dir = tempfile::tempdir().unwrap();
        let clock = TestClock::new();
        let pki = Pki::new();
        let state = state(sqlite_store(&dir.path().join("bsf.db"), true).await, 1, 86_400, &clock);
        let server = Server::start(app(state), Some(pki.server_config()), None).await;
        let mut card = card();
        let mut ue = pki.https_client(server.addr, None);
        let outcome = run_bootstrap(&mut ue, &mut card, &clock, RetryPolicy::default()).await;
        assert_eq!(outcome.bootstrapped.b_tid, BTID);

        let mut bsm = pki.https_client(server.addr, Some(BSM));
        let r = bsm.send(&zn_request(BTID, BSM, true, None)).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let v = json_of(&r);
        assert_eq!(key_hex(&v, "ks_ext_naf"), KS_EXT_NAF);
        assert_eq!(key_hex(&v, "ks_int_naf"), KS_INT_NAF);
        // A NAF that is not GBA_U-aware gets Ks_ext_NAF only.
        let r = bsm.send(&zn_request(BTID, BSM, false, None)).await.unwrap();
        let v = json_of(&r);
        assert_eq!(key_hex(&v, "ks_ext_naf"), KS_EXT_NAF);
        assert!(v.get("ks_int_naf").is_none(), "{v}");
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zn_refusals_are_distinct() {
    with_limit(async {
        let clock = TestClock::new();
        let pki = Pki::new();
        let state = state(memory_store(), 1, 600, &clock);
        let server = Server::start(app(state), Some(pki.server_config()), None).await;
        let mut card = card();
        let mut ue = pki.https_client(server.addr, None);
        run_bootstrap(&mut ue, &mut card, &clock, RetryPolicy::default()).await;

        // No certificate, no token: 401 with a Bearer challenge.
        let r = ue.send(&zn_request(BTID, BSM, true, None)).await.unwrap();
        assert_zn_error(&r, 401, "unauthenticated");
        assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
        // A wrong token: 401.
        let r = ue.send(&zn_request(BTID, BSM, true, Some("not-a-token"))).await.unwrap();
        assert_zn_error(&r, 401, "unauthenticated");
        // Another NAF's certificate asking for the BSM's keys: 403 naf-mismatch.
        let mut other = pki.https_client(server.addr, Some(OTHER_NAF));
        let r = other.send(&zn_request(BTID, BSM, true, None)).await.unwrap();
        assert_zn_error(&r, 403, "naf-mismatch");
        // A CA-signed certificate for a NAF that is not allowed: 403 unknown-naf.
        let mut rogue = pki.https_client(server.addr, Some("rogue.example.org"));
        let r = rogue.send(&zn_request(BTID, "rogue.example.org", true, None)).await.unwrap();
        assert_zn_error(&r, 403, "unknown-naf");
        // An authenticated NAF (token) whose FQDN is not an authorised NAF: 403 unknown-naf.
        let r = ue.send(&zn_request(BTID, UNLISTED_NAF, true, Some(UNLISTED_TOKEN))).await.unwrap();
        assert_zn_error(&r, 403, "unknown-naf");
        // Unknown B-TID: 404.
        let mut bsm = pki.https_client(server.addr, Some(BSM));
        let r = bsm.send(&zn_request("AAAAAAAAAAAAAAAAAAAAAA==@bsf.example.org", BSM, true, None)).await.unwrap();
        assert_zn_error(&r, 404, "unknown-btid");
        // Malformed: 400.
        let r = bsm.send(&raw_zn_request(b"{\"btid\": 1}".to_vec(), None)).await.unwrap();
        assert_zn_error(&r, 400, "malformed");
        let r = bsm
            .send(&raw_zn_request(br#"{"btid": "x", "naf_id": "%%%", "gba_u_aware": true}"#.to_vec(), None))
            .await
            .unwrap();
        assert_zn_error(&r, 400, "malformed");
        // Still valid, then expired: 410 with the lifetime.
        let r = bsm.send(&zn_request(BTID, BSM, true, None)).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        clock.advance(600);
        let r = bsm.send(&zn_request(BTID, BSM, true, None)).await.unwrap();
        assert_zn_error(&r, 410, "expired");
        assert_eq!(json_of(&r)["lifetime"], "2026-06-01T00:10:00Z");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn zn_token_is_refused_from_outside_loopback_and_without_connection_info() {
    let clock = TestClock::new();
    let router = app(state(memory_store(), 1, 600, &clock));
    let request = |peer: Option<&str>| {
        let body = serde_json::json!({"btid": BTID, "naf_id": STANDARD.encode(NafId::mbms(BSM).as_bytes())});
        let mut r = axum::http::Request::post(ZN_PATH)
            .header("Authorization", format!("Bearer {BSM_TOKEN}"))
            .body(Body::from(body.to_string()))
            .unwrap();
        if let Some(p) = peer {
            r.extensions_mut().insert(ConnInfo { peer: p.parse().unwrap(), tls: false, client_cert_names: vec![] });
        }
        r
    };
    for peer in [None, Some("192.0.2.7:4000"), Some("[2001:db8::1]:4000")] {
        let r = router.clone().oneshot(request(peer)).await.unwrap();
        assert_eq!(r.status(), 401, "{peer:?}");
    }
    // From loopback the token is accepted (no session yet: 404).
    for peer in ["127.0.0.1:4000", "[::1]:4000"] {
        let r = router.clone().oneshot(request(Some(peer))).await.unwrap();
        assert_eq!(r.status(), 404, "{peer}");
    }
}

#[tokio::test]
async fn ub_oneshot_initial_request_gets_a_challenge_in_both_uri_forms() {
    let clock = TestClock::new();
    let router = app(state(memory_store(), 1, 600, &clock));
    for uri in ["/", "http://bsf.example.org/"] {
        let initial = Credentials::initial(IMPI, DOMAIN, "/").to_header_value().unwrap();
        let r = router
            .clone()
            .oneshot(axum::http::Request::get(uri).header("Authorization", initial).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{uri}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Digest "), "{challenge}");
        assert!(challenge.contains("algorithm=AKAv1-MD5"), "{challenge}");
    }
}

// ---------------------------------------------------------------------------------------------
// Limits and malformed requests over a raw socket

/// Sends raw octets on a new connection and returns the status code of the answer.
async fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything: ignore write errors.
    let _ = tcp.write_all(request).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"))
}

fn initial_get(target: &str, extra: &str) -> Vec<u8> {
    let auth = Credentials::initial(IMPI, DOMAIN, "/").to_header_value().unwrap();
    format!("GET {target} HTTP/1.1\r\nHost: {DOMAIN}\r\nAuthorization: {auth}\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_malformed_requests_are_refused_and_the_server_keeps_serving() {
    with_limit(async {
        let clock = TestClock::new();
        let server = Server::start(app(state(memory_store(), 1, 600, &clock)), None, None).await;
        // Both request-target forms reach Ub.
        assert_eq!(raw_status(server.addr, &initial_get("/", "")).await, 401);
        assert_eq!(raw_status(server.addr, &initial_get("http://bsf.example.org/", "")).await, 401);
        // Oversized head: 431.
        let big = format!("X-Filler: {}\r\n", "a".repeat(20_000));
        assert_eq!(raw_status(server.addr, &initial_get("/", &big)).await, 431);
        // Too many header fields: 431.
        let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
        assert_eq!(raw_status(server.addr, &initial_get("/", &many)).await, 431);
        // Oversized body (declared and sent): 413.
        let body = "b".repeat(20_000);
        let mut req = initial_get("/", &format!("Content-Length: {}\r\n", body.len()));
        req.extend_from_slice(body.as_bytes());
        assert_eq!(raw_status(server.addr, &req).await, 413);
        // Oversized chunked body: 413.
        let mut req = initial_get("/", "Transfer-Encoding: chunked\r\n");
        for _ in 0..5 {
            req.extend_from_slice(format!("1000\r\n{}\r\n", "c".repeat(0x1000)).as_bytes());
        }
        req.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(raw_status(server.addr, &req).await, 413);
        // Malformed Authorization: 400.
        let req =
            format!("GET / HTTP/1.1\r\nHost: {DOMAIN}\r\nAuthorization: Digest garbage\r\nConnection: close\r\n\r\n");
        assert_eq!(raw_status(server.addr, req.as_bytes()).await, 400);
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {DOMAIN}\r\nAuthorization: Basic Zm9vOmJhcg==\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(raw_status(server.addr, req.as_bytes()).await, 400);
        let req = format!("GET / HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n");
        assert_eq!(raw_status(server.addr, req.as_bytes()).await, 400);
        // Wrong method: 405.
        let req = format!("DELETE / HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n");
        assert_eq!(raw_status(server.addr, req.as_bytes()).await, 405);
        // Still serving: a whole bootstrap.
        let mut card = card();
        let outcome = run_bootstrap(&mut plain_client(server.addr), &mut card, &clock, RetryPolicy::default()).await;
        assert!(outcome.bootstrapped.b_tid.ends_with("@bsf.example.org"), "{outcome:?}");
        server.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Concurrency and restarts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_bootstraps_of_one_impi_all_finish() {
    with_limit(async {
        let clock = TestClock::new();
        let state = state(memory_store(), 2, 86_400, &clock);
        let server = Server::start(app(state.clone()), None, None).await;
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let (addr, clock) = (server.addr, clock.clone());
            tasks.push(tokio::spawn(async move {
                let mut card = card();
                let mut client = plain_client(addr);
                let now = move || clock.utc();
                let mut rng = SeededRandom::new([i; 32]);
                bootstrap(&mut client, &client_config(), &mut card, None, &now, &mut rng, RetryPolicy::default())
                    .await
                    .unwrap()
            }));
        }
        let mut btids = std::collections::HashSet::new();
        for t in tasks {
            let outcome = t.await.unwrap();
            assert_eq!(outcome.attempts, 1);
            btids.insert(outcome.bootstrapped.b_tid);
        }
        assert_eq!(btids.len(), 8, "each run had its own challenge");
        let m = state.core_metrics().await;
        assert_eq!((m.challenges, m.bootstraps_gba_u), (8, 8));
        server.stop().await;
    })
    .await;
}

/// Wraps a client: after the first 401 it stops the BSF and starts another on the same address
/// and SQLite file, with the server secret `next_secret`; with `down_once` the new BSF starts
/// only after the next request has failed.
struct Restarting {
    inner: HttpClient,
    server: Option<Server>,
    store: Arc<SqliteStore>,
    clock: TestClock,
    next_secret: u8,
    down_once: bool,
    phase: u8,
    answer_status: Option<u16>,
    next_state: Option<Arc<BsfState<SqliteStore>>>,
    dead: Option<tokio::task::JoinHandle<()>>,
}

impl Restarting {
    /// Starts the next BSF instance on the same store, on a fresh port, and points the client at
    /// it. (Rebinding the old port would race with other tests binding ephemeral ports.)
    async fn start_next(&mut self) {
        let state = state(self.store.clone(), self.next_secret, 86_400, &self.clock);
        self.next_state = Some(state.clone());
        let server = Server::start(app(state), None, None).await;
        self.inner = plain_client(server.addr);
        self.server = Some(server);
    }
}

/// A "BSF down" address that this test owns: every connection is accepted and dropped at once.
async fn dead_endpoint() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    });
    (addr, task)
}

impl UbTransport for Restarting {
    async fn send(&mut self, request: &HttpRequest) -> Result<HttpResponse, HttpClientError> {
        let result = self.inner.send(request).await;
        match self.phase {
            0 if result.as_ref().is_ok_and(|r| r.status == 401) => {
                self.phase = 1;
                self.server.take().unwrap().stop().await;
                if !self.down_once {
                    self.start_next().await;
                } else {
                    self.phase = 2;
                    let (addr, task) = dead_endpoint().await;
                    self.inner = plain_client(addr);
                    self.dead = Some(task);
                }
            }
            1 => {
                self.phase = 3;
                self.answer_status = result.as_ref().ok().map(|r| r.status);
            }
            2 => {
                assert!(result.is_err(), "the BSF is down: {result:?}");
                self.phase = 3;
                if let Some(task) = self.dead.take() {
                    task.abort();
                }
                self.start_next().await;
            }
            _ => {}
        }
        result
    }
}

async fn restart_run(next_secret: u8, down_once: bool) -> (Outcome, Restarting) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bsf.db");
    let clock = TestClock::new();
    let store = sqlite_store(&path, true).await;
    let server = Server::start(app(state(store.clone(), 1, 86_400, &clock)), None, None).await;
    let mut transport = Restarting {
        inner: plain_client(server.addr),
        server: Some(server),
        store,
        clock: clock.clone(),
        next_secret,
        down_once,
        phase: 0,
        answer_status: None,
        next_state: None,
        dead: None,
    };
    let mut card = card();
    let policy = RetryPolicy { attempts: 3, backoff: Duration::from_millis(50) };
    let outcome = run_bootstrap(&mut transport, &mut card, &clock, policy).await;
    assert_eq!(card.read_gba_bp().unwrap().unwrap().b_tid.as_deref(), Some(outcome.bootstrapped.b_tid.as_str()));
    transport.server.take().unwrap().stop().await;
    (outcome, transport)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_a_new_secret_refuses_the_answer_and_the_run_recovers() {
    with_limit(async {
        let (outcome, t) = restart_run(9, false).await;
        assert_eq!(t.answer_status, Some(401), "the answer to the old BSF's nonce is refused with a fresh challenge");
        assert_eq!(outcome.attempts, 1);
        let m = t.next_state.unwrap().core_metrics().await;
        assert_eq!(m.failures(FailureCause::InvalidNonce), 1);
        assert_eq!(m.bootstraps_gba_u, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_the_same_secret_accepts_the_pending_answer() {
    with_limit(async {
        let (outcome, t) = restart_run(1, false).await;
        assert_eq!(t.answer_status, Some(200), "the pending challenge survived the restart in SQLite");
        assert_eq!(outcome.bootstrapped.b_tid, BTID);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bsf_down_at_the_answer_makes_the_client_start_over() {
    with_limit(async {
        let (outcome, t) = restart_run(9, true).await;
        assert_eq!(outcome.attempts, 2, "the failed run was restarted from the initial request");
        let m = t.next_state.unwrap().core_metrics().await;
        assert_eq!((m.challenges, m.bootstraps_gba_u), (1, 1));
        assert_eq!(FailureCause::ALL.iter().map(|c| m.failures(*c)).sum::<u64>(), 0, "{m:?}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_shows_the_counters() {
    with_limit(async {
        let handle = install_prometheus().unwrap();
        let metrics = Server::start(metrics_app(handle), None, None).await;
        let clock = TestClock::new();
        let server = Server::start(app(state(memory_store(), 1, 86_400, &clock)), None, None).await;
        let mut card = card();
        let mut client = plain_client(server.addr);
        run_bootstrap(&mut client, &mut card, &clock, RetryPolicy::default()).await;
        let r = client.send(&zn_request(BTID, BSM, true, Some(BSM_TOKEN))).await.unwrap();
        assert_eq!(r.status, 200);
        let r = client.send(&zn_request(BTID, BSM, true, None)).await.unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(raw_status(server.addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await, 400);

        let get = HttpRequest {
            method: "GET".into(),
            uri: "/metrics".into(),
            headers: vec![("Host".into(), "localhost".into())],
            body: vec![],
        };
        let r = plain_client(metrics.addr).send(&get).await.unwrap();
        assert_eq!(r.status, 200);
        let text = String::from_utf8(r.body).unwrap();
        for line in [
            "keycast_bsf_bootstraps_total{gba_type=\"gba-u\"}",
            "keycast_bsf_challenges_total{known_impi=\"true\"}",
            "keycast_bsf_ub_failures_total{cause=\"malformed_request\"}",
            "keycast_bsf_zn_answers_total{outcome=\"ok\"}",
            "keycast_bsf_zn_answers_total{outcome=\"unauthenticated\"}",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // No secrets in the exposition.
        assert!(!text.contains(KS_EXT_NAF) && !text.contains(BSM_TOKEN));
        server.stop().await;
        metrics.stop().await;
    })
    .await;
}
