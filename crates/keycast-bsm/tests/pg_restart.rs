//! Fault test (issue 5): PostgreSQL is restarted under load and the BSM recovers without operator
//! action. The BSM runs over one `PgStore` handle on a cluster of the test's own
//! (`pg_restart_support`): the provisioning routes (`bsm_app`) behind Ua Digest, the delivery
//! intents written by `StoreIntents` before each answer, and a `PushService` pushing to a UDP socket the test owns.
//! Terminals (keys from a fixed key source, as the BSF gives them for a GBA_ME bootstrap) keep
//! buying, registering, asking for LTKMs and registering on the MBMS interface while PostgreSQL is
//! stopped (`pg_ctl -m fast`), left down for a moment and started again. Just before the stop a
//! session of the test's own locks the catalogue, so that requests are inside the database when it
//! goes away.
//!
//! Asserted:
//! - while the database is away, every exchange ends within [`REQUEST_BOUND`] with a 200 or a
//!   Digest-signed `503 service unavailable` (requests whose query the shutdown ended answer it at
//!   once; later ones wait for a connection and complete once it is back), and the server keeps
//!   accepting connections;
//! - within [`RECOVERY_BOUND`] of the start, requests succeed again on the same server and store
//!   handle; the clients' requests succeed again; a push queued after the restart reaches the
//!   UDP socket, and so does every push the store queued (those claimed at the stop after their
//!   lease);
//! - every answered request is in the store (terminal, registration, purchase, queued push), no
//!   terminal ever got two LTKMs with one TS (answers and pushes), the TS counter is ahead of every
//!   TS sent, and every terminal turned away during the outage completes when it tries again.
//!
//! PostgreSQL tests run only when `KEYCAST_TEST_POSTGRES_URL` is set (here the variable only gates
//! the test; its cluster is neither used nor restarted); without it, or without an `initdb` under
//! `/usr/lib/postgresql/*/bin`, the test prints why it skipped and passes.

mod pg_restart_support;
mod push_support;
mod service_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keycast_bsm::delivery::Time;
use keycast_bsm::domain::{PurchaseKind, TerminalId};
use keycast_bsm::http::intents::{IntentWriter, StoreIntents};
use keycast_bsm::http::provisioning::{ProvisioningState, bsm_app};
use keycast_bsm::http::{Clock, UaGuard};
use keycast_bsm::issue::TerminalKeys;
use keycast_bsm::keys::{KeyCache, KeyRecord, NafKeys};
use keycast_bsm::push::{PushClock, PushService, PushWorker};
use keycast_bsm::rng::SeededRandom;
use keycast_bsm::service::{Caller, Provisioning, ProvisioningConfig};
use keycast_bsm::store::BsmStore;
use keycast_bsm::store::sql::PgStore;
use keycast_bsm::ua::{UaAuthenticator, UaConfig};
use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::keys::{KsNaf, Smk};
use keycast_gba::client::http::{HttpClient, UbTransport as _};
use keycast_gba::client::{HttpRequest, HttpResponse, NafCredentials};
use keycast_mikey::{Ltkm, OpenedLtkm};
use keycast_provisioning::digest::{AuthenticationInfo, Challenge, GbaRealmPrefix, Qop};
use keycast_provisioning::mbms::{self, RegisterRequest, RegisterResponse};
use keycast_provisioning::sprov::{
    self, BcastKeyId, LtkmKeyRequest, LtkmRequest, PurchaseItemRef, PurchaseRequestItem, RegistrationRequest,
    ServiceRequest, SprovMessage, StatusCode,
};
use pg_restart_support::{PgCluster, postgres_bin};
use push_support::{FakeKeys, push_config, quiet};
use service_support::{FQDN, T0, fill, id, kd};
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;

const PG_ENV: &str = "KEYCAST_TEST_POSTGRES_URL";
/// The whole test, setup and teardown included.
const LIMIT: Duration = Duration::from_secs(60);
/// The longest any one HTTP exchange may take, the outage included (the client's timeout).
const REQUEST_BOUND: Duration = Duration::from_secs(10);
/// How long after PostgreSQL is back requests must succeed again.
const RECOVERY_BOUND: Duration = Duration::from_secs(20);
/// How long PostgreSQL stays stopped.
const OUTAGE: Duration = Duration::from_millis(1_500);
/// How long the requests pile up behind the test's lock before the stop.
const CAUGHT: Duration = Duration::from_millis(500);
/// Terminals sending requests at once.
const CLIENTS: u32 = 3;
const SPROV: &str = "/sprov";
const MBMS_REGISTER: &str = "/keymanagement?requesttype=register";
const USER_AGENT: &str = "Keycast-test/0.1 3gpp-gba";
/// The typed body of a 503 (`ProvisioningHttpError::Unavailable`).
const UNAVAILABLE: &str = "service unavailable";

// ---------------------------------------------------------------------------------------------
// Time: the BSM's clocks run from T0 at the wall clock's pace, so due times pass.

#[derive(Clone, Copy)]
struct Epoch(Instant);

impl Epoch {
    fn secs(self) -> u64 {
        T0 + self.0.elapsed().as_secs()
    }
    fn clock(self) -> Clock {
        Arc::new(move || self.secs())
    }
    fn push_clock(self) -> PushClock {
        let start = Time::from_secs(T0).as_micros();
        Arc::new(move || Time::from_micros(start + u64::try_from(self.0.elapsed().as_micros()).unwrap()))
    }
}

// ---------------------------------------------------------------------------------------------
// Terminals

/// Terminal `n`: IMPI, B-TID and an SMK of its own (the GBA_ME Ks_NAF, see `FakeKeys`).
fn terminal(n: u32) -> Caller {
    let mut smk = [0x5c; 32];
    smk[..4].copy_from_slice(&n.to_be_bytes());
    Caller {
        terminal: TerminalId(format!("0010199{n:08}@ims.mnc001.mcc001.3gppnetwork.org")),
        keys: TerminalKeys {
            btid: format!("pg-restart-{n}@bsf.example.org"),
            smk: Smk::from_bytes(smk),
            bsm_fqdn: FQDN.into(),
        },
    }
}

/// The terminal's Ua credentials: B-TID and the SRK the BSM derives from the same Ks_NAF.
fn credentials(t: &Caller) -> NafCredentials {
    let naf = NafKeys::Me { ks_naf: KsNaf::from_bytes(*t.keys.smk.expose_secret()) };
    let record = KeyRecord::new(&t.keys.btid, &t.terminal.0, 0, u64::MAX, &naf);
    NafCredentials {
        b_tid: t.keys.btid.clone(),
        srk: record.srk().clone(),
        realm_prefix: GbaRealmPrefix::Bootstrapping,
        naf_fqdn: FQDN.into(),
    }
}

/// The requests of one terminal, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// ServiceRequest for `basic` under `basic-month` (implicit registration, LTKM in the answer).
    Buy,
    /// RegistrationRequest for `basic` (LTKM in the answer).
    Register,
    /// LTKMRequest for the live key (1,2).
    AskLtkm,
    /// MBMS register for `basic` (the key is pushed).
    MbmsRegister,
}

const SCRIPT: [Step; 4] = [Step::Buy, Step::Register, Step::AskLtkm, Step::MbmsRegister];

fn item() -> PurchaseItemRef {
    PurchaseItemRef::new("basic", Some("basic-month"))
}

/// URI, content type and body of a step.
fn request_of(step: Step, n: u32) -> (&'static str, &'static str, Vec<u8>) {
    let request_id = n;
    let sprov = |xml: String| (SPROV, sprov::CONTENT_TYPE, xml.into_bytes());
    match step {
        Step::Buy => sprov(
            ServiceRequest { request_id, client: None, items: vec![PurchaseRequestItem { item: item(), price: None }] }
                .to_xml()
                .unwrap(),
        ),
        Step::Register => {
            sprov(RegistrationRequest { request_id, client: None, items: vec![item()] }.to_xml().unwrap())
        }
        Step::AskLtkm => {
            let key = BcastKeyId { key_domain_id: kd().0, sek_pek_id: id(1, 2).to_bytes() };
            let keys = vec![LtkmKeyRequest { key, valid_from: None, valid_until: None }];
            sprov(LtkmRequest { request_id, client: None, keys }.to_xml().unwrap())
        }
        Step::MbmsRegister => (
            MBMS_REGISTER,
            mbms::REGISTER_CONTENT_TYPE,
            RegisterRequest { service_ids: vec!["basic".into()] }.to_xml().unwrap().into_bytes(),
        ),
    }
}

fn http_request(uri: &str, content_type: &str, body: &[u8], authorization: Option<String>) -> HttpRequest {
    let mut headers = vec![
        ("Host".to_owned(), FQDN.to_owned()),
        ("User-Agent".to_owned(), USER_AGENT.to_owned()),
        ("Content-Type".to_owned(), content_type.to_owned()),
    ];
    headers.extend(authorization.map(|a| ("Authorization".to_owned(), a)));
    HttpRequest { method: "POST".into(), uri: uri.into(), headers, body: body.to_vec() }
}

/// The Ua exchange: POST, 401, POST with Digest (auth-int). Every answer the Digest layer let
/// through carries an `rspauth`, which must verify (503s included). `Err` for a transport failure,
/// a timeout or a broken exchange.
async fn digest_post(
    http: &mut HttpClient,
    creds: &NafCredentials,
    uri: &str,
    content_type: &str,
    body: &[u8],
) -> Result<HttpResponse, String> {
    let first =
        http.send(&http_request(uri, content_type, body, None)).await.map_err(|e| format!("first POST: {e}"))?;
    if first.status != 401 {
        return Err(format!("first POST: {} instead of 401", first.status));
    }
    let header = first.header("WWW-Authenticate").ok_or("401 without WWW-Authenticate")?;
    let challenge = Challenge::parse(header).map_err(|e| format!("challenge: {e}"))?;
    let mut digest = creds.digest_client(challenge, &[Qop::AuthInt, Qop::Auth]).ok_or("realm is not the BSM's")?;
    let sent = digest.authorize("POST", uri, body, &[0x5a; 8]).map_err(|e| format!("authorize: {e}"))?;
    let authorization = sent.credentials().to_header_value().map_err(|e| format!("authorization: {e}"))?;
    let response = http
        .send(&http_request(uri, content_type, body, Some(authorization)))
        .await
        .map_err(|e| format!("second POST: {e}"))?;
    let info = response
        .header("Authentication-Info")
        .ok_or_else(|| format!("{} without Authentication-Info", response.status))?;
    let info = AuthenticationInfo::parse(info).map_err(|e| format!("Authentication-Info: {e}"))?;
    digest.check_authentication_info(&sent, &info, &response.body).map_err(|e| format!("rspauth: {e}"))?;
    Ok(response)
}

/// What an answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// 200 and the request's success: the LTKMs in the answer.
    Done(Vec<Vec<u8>>),
    /// The typed 503 of a store failure.
    Unavailable,
}

/// Judges an answer to `step`; `Err` for anything but a success or the typed 503.
fn verdict(step: Step, r: &HttpResponse) -> Result<Verdict, String> {
    let text = String::from_utf8_lossy(&r.body);
    match r.status {
        503 if text == UNAVAILABLE && r.header("Content-Type") == Some("text/plain; charset=utf-8") => {
            return Ok(Verdict::Unavailable);
        }
        200 => {}
        other => return Err(format!("{step:?}: status {other}: {text}")),
    }
    if step == Step::MbmsRegister {
        let answer = RegisterResponse::from_xml(&r.body).map_err(|e| format!("{step:?}: {e}"))?;
        let codes: Vec<u16> = answer.responses.iter().map(|s| s.response_code.code).collect();
        return if codes == [200] { Ok(Verdict::Done(Vec::new())) } else { Err(format!("{step:?}: codes {codes:?}")) };
    }
    let message = SprovMessage::from_xml(&r.body).map_err(|e| format!("{step:?}: {e}"))?;
    let (ok, ltkms) = match (step, message) {
        // A retried purchase finds the first one (double subscribe) and gets the keys again.
        (Step::Buy, SprovMessage::ServiceResponse(a)) => {
            (matches!(a.status, StatusCode::Success | StatusCode::AlreadySubscribed), a.ltkms)
        }
        (Step::Register, SprovMessage::RegistrationResponse(a)) => {
            (a.items.iter().all(|i| i.status.is_success()), a.ltkms)
        }
        (Step::AskLtkm, SprovMessage::LtkmResponse(a)) => (a.keys.iter().all(|k| k.status.is_success()), a.ltkms),
        (step, other) => return Err(format!("{step:?}: answered with {}", other.root_name())),
    };
    if !ok || ltkms.len() != 1 {
        return Err(format!("{step:?}: not a success with one LTKM: {text}"));
    }
    Ok(Verdict::Done(ltkms))
}

/// One exchange as a client saw it.
#[derive(Debug, Clone)]
struct Exchange {
    terminal: u32,
    step: Step,
    sent: Instant,
    done: Instant,
    outcome: Result<Verdict, String>,
}

type Log = Arc<Mutex<Vec<Exchange>>>;

/// Runs `step` for terminal `n` and logs it.
async fn run_step(http: &mut HttpClient, n: u32, step: Step, log: &Log) -> Result<Verdict, String> {
    let t = terminal(n);
    let (uri, content_type, body) = request_of(step, n);
    let sent = Instant::now();
    let outcome = digest_post(http, &credentials(&t), uri, content_type, &body).await.and_then(|r| verdict(step, &r));
    let done = Instant::now();
    log.lock().unwrap().push(Exchange { terminal: n, step, sent, done, outcome: outcome.clone() });
    outcome
}

/// A terminal's whole script; stops at the first step that is not done.
async fn run_script(http: &mut HttpClient, n: u32, log: &Log) -> bool {
    for step in SCRIPT {
        if !matches!(run_step(http, n, step, log).await, Ok(Verdict::Done(_))) {
            return false;
        }
    }
    true
}

/// One client: a new terminal after another (terminals `first`, `first + CLIENTS`, …), each
/// running the script, until told to stop.
async fn client(bsm: SocketAddr, keys: FakeKeys, first: u32, stop: Arc<AtomicBool>, log: Log) {
    let mut http = HttpClient::plain(bsm.to_string()).with_timeout(REQUEST_BOUND);
    let mut n = first;
    while !stop.load(Ordering::SeqCst) {
        keys.add(&terminal(n));
        run_script(&mut http, n, &log).await;
        n += CLIENTS;
    }
}

/// Datagrams received on the terminals' push socket: (B-TID, TS, when) of each LTKM, `Err` with
/// the length of anything else.
type Pushes = Arc<Mutex<Vec<Result<(String, u32, Instant), usize>>>>;

async fn receive_pushes(socket: UdpSocket, pushes: Pushes) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((len, _)) = socket.recv_from(&mut buf).await else { continue };
        let push = Ltkm::decode(&buf[..len]).map(|l| (l.idr().to_owned(), l.ts(), Instant::now())).map_err(|_| len);
        pushes.lock().unwrap().push(push);
    }
}

/// The LTKMs pushed so far; panics on a datagram that is no LTKM.
fn pushed(pushes: &Pushes) -> Vec<(String, u32, Instant)> {
    pushes
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.clone().unwrap_or_else(|len| panic!("{len} octets pushed, no LTKM")))
        .collect()
}

/// The TS of an LTKM meant for terminal `n`, which opens under its SMK.
fn ts_of(ltkm: &[u8], n: u32) -> u32 {
    let t = terminal(n);
    let ltkm = Ltkm::decode(ltkm).expect("an LTKM");
    assert_eq!(ltkm.idr(), t.keys.btid);
    assert!(matches!(ltkm.open(&t.keys.smk), Ok(OpenedLtkm::Key(_))), "terminal {n}'s LTKM opens under its SMK");
    ltkm.ts()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_the_bsm_recovers_without_operator_action() {
    if std::env::var_os(PG_ENV).is_none() {
        println!("skipped: {PG_ENV} not set");
        return;
    }
    let Some(bin) = postgres_bin() else {
        println!("skipped: no initdb under /usr/lib/postgresql/*/bin");
        return;
    };
    let started = Instant::now();
    let cluster = tokio::task::spawn_blocking(move || PgCluster::start_new(bin)).await.unwrap();
    println!("own cluster at {} ({:?})", cluster.url(), started.elapsed());
    let cluster = Arc::new(Mutex::new(cluster));
    // The cluster is dropped (stopped and removed) when this function ends, however it ends.
    let outcome = tokio::time::timeout(LIMIT, restart_under_load(cluster.clone())).await;
    let log = cluster.lock().unwrap().log_tail();
    assert!(outcome.is_ok(), "the test ends within {LIMIT:?}; server log:\n{log}");
    println!("done in {:?}", started.elapsed());
}

/// Stops (`fast`) and starts the cluster on a blocking thread.
async fn pg_ctl(cluster: &Arc<Mutex<PgCluster>>, start: bool) {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = cluster.lock().unwrap();
        if start { c.start() } else { c.stop("fast") }
    })
    .await
    .unwrap();
}

async fn restart_under_load(cluster: Arc<Mutex<PgCluster>>) {
    let epoch = Epoch(Instant::now());
    let url = cluster.lock().unwrap().url();

    // The BSM: one store handle for everything, opened once.
    let store = PgStore::open(&url, StorageKey::from_bytes([7; 16])).await.unwrap();
    fill(&store).await;
    let keys = FakeKeys::default();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_port = socket.local_addr().unwrap().port();
    let pushes: Pushes = Arc::default();
    let receiver = tokio::spawn(receive_pushes(socket, pushes.clone()));
    let scheduler = quiet(udp_port);
    let writer = Arc::new(IntentWriter::new(store.clone(), scheduler, SeededRandom::new(1)));
    let sink = StoreIntents::new(writer, epoch.push_clock());
    let authenticator = UaAuthenticator::new(&UaConfig::new(FQDN, [9; 32])).unwrap();
    let guard =
        Arc::new(UaGuard::new(authenticator, Arc::new(KeyCache::new(keys.clone(), 4096))).with_clock(epoch.clock()));
    let state = Arc::new(
        ProvisioningState::new(Provisioning::new(store.clone(), ProvisioningConfig::new(FQDN)), guard)
            .with_intents(Arc::new(sink))
            .with_clock(epoch.clock()),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bsm = listener.local_addr().unwrap();
    let (stop_server, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, bsm_app(state).into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    let mut config = push_config("pg-restart", scheduler);
    config.idle_poll = Duration::from_millis(100);
    let lease = Duration::from_secs(5);
    config.lease = lease;
    let worker =
        PushWorker::bind(store.clone(), keys.clone(), config, "127.0.0.1:0".parse().unwrap(), SeededRandom::new(7))
            .await
            .unwrap();
    let push = PushService::spawn(worker, epoch.push_clock());

    // Load.
    let log: Log = Arc::default();
    let stop_load = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> =
        (0..CLIENTS).map(|c| tokio::spawn(client(bsm, keys.clone(), 1 + c, stop_load.clone(), log.clone()))).collect();
    let done_before = || log.lock().unwrap().iter().filter(|e| matches!(e.outcome, Ok(Verdict::Done(_)))).count();
    let warm = Instant::now();
    while done_before() < 40 && warm.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pushed_before = push.worker().stats().snapshot().pushed;
    assert!(done_before() >= 10, "the load runs before the restart: {} requests done", done_before());

    // Requests caught inside the database when it goes away: a session of the test's own locks the
    // purchases, so every request stops in its read of the terminal's purchases (the catalogue is
    // cached, the purchases never are) until the fast shutdown ends the sessions.
    let mut locker = PgConnection::connect(&url).await.unwrap();
    let mut lock = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE purchases IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    tokio::time::sleep(CAUGHT).await;

    // PostgreSQL goes away.
    let stop_begin = Instant::now();
    pg_ctl(&cluster, false).await;
    let stopped_at = Instant::now();
    drop(lock);
    drop(locker);
    println!("PostgreSQL stopped in {:?}", stopped_at - stop_begin);
    // The server still takes connections and answers within the bound while the database is away.
    let probe_terminal = 1_000_000;
    keys.add(&terminal(probe_terminal));
    let probe_log: Log = Arc::default();
    let probe = {
        let log = probe_log.clone();
        tokio::spawn(async move {
            let mut http = HttpClient::plain(bsm.to_string()).with_timeout(REQUEST_BOUND);
            run_step(&mut http, probe_terminal, Step::Buy, &log).await
        })
    };
    let connect = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(bsm)).await;
    assert!(matches!(connect, Ok(Ok(_))), "the BSM accepts connections while PostgreSQL is down: {connect:?}");
    tokio::time::sleep(OUTAGE.saturating_sub(stopped_at.elapsed())).await;

    // PostgreSQL comes back; nobody touches the BSM.
    pg_ctl(&cluster, true).await;
    let start_done = Instant::now();
    println!("PostgreSQL down for {:?}, started in {:?}", start_done - stopped_at, start_done - stop_begin);

    // Requests succeed again within the bound, on a fresh connection of the same server.
    let mut recovered = None;
    let mut n = 2_000_000;
    while start_done.elapsed() < RECOVERY_BOUND {
        keys.add(&terminal(n));
        let mut http = HttpClient::plain(bsm.to_string()).with_timeout(REQUEST_BOUND);
        let attempt = run_step(&mut http, n, Step::Buy, &probe_log).await;
        if matches!(attempt, Ok(Verdict::Done(_))) {
            recovered = Some(start_done.elapsed());
            break;
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = recovered.expect("requests succeed again within the recovery bound");
    println!("requests succeed again {recovered:?} after the start");
    let probe = probe.await.unwrap();
    assert!(probe.is_ok(), "the request sent during the outage ends with a 200 or a typed 503: {probe:?}");

    // The clients' own requests succeed again too; then the load ends.
    let since_start = || {
        log.lock().unwrap().iter().filter(|e| e.sent > start_done && matches!(e.outcome, Ok(Verdict::Done(_)))).count()
    };
    let resumed = Instant::now();
    while since_start() < 20 && resumed.elapsed() < RECOVERY_BOUND {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_load.store(true, Ordering::SeqCst);
    for c in clients {
        tokio::time::timeout(REQUEST_BOUND * 5, c).await.expect("clients end").unwrap();
    }
    assert!(since_start() >= 20, "the clients' requests succeed again after the restart");

    // The push worker resumed: a delivery queued after the restart is pushed.
    let fresh = 3_000_000;
    keys.add(&terminal(fresh));
    let mut http = HttpClient::plain(bsm.to_string()).with_timeout(REQUEST_BOUND);
    assert!(run_script(&mut http, fresh, &probe_log).await, "a fresh terminal's script after the restart");
    let queued = Instant::now();
    let btid = terminal(fresh).keys.btid;
    let arrived = loop {
        if let Some(at) = pushed(&pushes).iter().find(|(b, ..)| b == &btid).map(|p| p.2) {
            break Some(at);
        }
        if queued.elapsed() > Duration::from_secs(10) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let arrived = arrived.expect("the push queued after the restart reaches the terminal's socket");
    println!("push after the restart arrived {:?} after its MBMS registration", arrived - queued);
    assert!(push.worker().stats().snapshot().pushed > pushed_before, "the worker pushes after the restart");

    // Terminals turned away during the outage complete when they try again.
    let log = std::mem::take(&mut *log.lock().unwrap());
    let turned_away: BTreeSet<u32> =
        log.iter().filter(|e| !matches!(e.outcome, Ok(Verdict::Done(_)))).map(|e| e.terminal).collect();
    let retry_log: Log = Arc::default();
    for &n in &turned_away {
        assert!(run_script(&mut http, n, &retry_log).await, "terminal {n} completes after the restart");
    }
    drop(http);
    let retries = std::mem::take(&mut *retry_log.lock().unwrap());

    // Every answer was a success or the typed 503, within the bound; the 503s came with the outage.
    let probes = std::mem::take(&mut *probe_log.lock().unwrap());
    let all: Vec<&Exchange> = log.iter().chain(&probes).chain(&retries).collect();
    let mut unavailable = 0;
    for e in &all {
        match &e.outcome {
            Ok(Verdict::Done(_)) => {}
            Ok(Verdict::Unavailable) => {
                unavailable += 1;
                assert!(e.done >= stop_begin && e.sent <= start_done + recovered, "503 only around the outage: {e:?}");
            }
            Err(why) => panic!("terminal {} {:?}: {why}", e.terminal, e.step),
        }
        assert!(e.done - e.sent <= REQUEST_BOUND, "{e:?}");
    }
    let during: Vec<&&Exchange> = all.iter().filter(|e| e.done >= stop_begin && e.sent <= start_done).collect();
    let slowest = during.iter().map(|e| e.done - e.sent).max().unwrap_or_default();
    for e in &during {
        let ms = |t: Instant| i128::try_from(t.duration_since(stop_begin).as_millis()).unwrap();
        let sent =
            if e.sent >= stop_begin { ms(e.sent) } else { -i128::try_from((stop_begin - e.sent).as_millis()).unwrap() };
        let answer = match &e.outcome {
            Ok(Verdict::Done(_)) => "200",
            Ok(Verdict::Unavailable) => "503",
            Err(_) => "error",
        };
        println!(
            "  terminal {} {:?}: sent at {sent} ms, {answer} at {} ms (from the stop)",
            e.terminal,
            e.step,
            ms(e.done)
        );
    }
    // The requests held by the lock were in the database when it stopped: those whose query the
    // shutdown ended answer the typed 503 at once (one that got its purchases as the lock went
    // away waits for its next connection instead, and completes after the start).
    let caught: Vec<&&Exchange> = all.iter().filter(|e| e.sent < stop_begin && e.done > stop_begin).collect();
    assert!(
        caught.iter().any(|e| matches!(e.outcome, Ok(Verdict::Unavailable)) && e.done < stopped_at + OUTAGE),
        "a request whose session the shutdown ended answers the typed 503 during the outage: {caught:?}"
    );
    println!(
        "{} exchanges ({} before the stop), {} touched the outage (slowest {slowest:?}), {} caught in the database, \
         {unavailable} answered 503; {} terminals turned away and completed later",
        all.len(),
        all.iter().filter(|e| e.done < stop_begin).count(),
        during.len(),
        caught.len(),
        turned_away.len()
    );

    // The store holds what was answered, through the same handle, opened once.
    assert!(!store.pool().is_closed());
    let mut ts_seen: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut done: BTreeMap<u32, BTreeSet<Step>> = BTreeMap::new();
    let mut queued_pushes: BTreeSet<String> = BTreeSet::new();
    for e in &all {
        if let Ok(Verdict::Done(ltkms)) = &e.outcome {
            done.entry(e.terminal).or_default().insert(e.step);
            ts_seen.entry(e.terminal).or_default().extend(ltkms.iter().map(|l| ts_of(l, e.terminal)));
        }
    }
    for (n, steps) in &done {
        let t = terminal(*n);
        let stored = store.terminal(&t.terminal).await.unwrap().unwrap_or_else(|| panic!("terminal {n} stored"));
        assert_eq!(stored.btid.as_deref(), Some(t.keys.btid.as_str()));
        let registration = stored.registration.unwrap_or_else(|| panic!("terminal {n} is registered"));
        assert!(registration.address.starts_with("127.0.0.1:"), "{registration:?}");
        if steps.contains(&Step::Buy) {
            let purchases = store.purchases(&t.terminal).await.unwrap();
            assert!(
                matches!(&purchases[..], [p] if p.item == "basic" && p.purchase_data == "basic-month"
                    && p.kind == PurchaseKind::Subscription && p.window.until - p.window.from == 30 * 86_400),
                "terminal {n}: {purchases:?}"
            );
        }
        // The store queued what each answered MBMS registration asked for: the route stores the
        // intents before it answers.
        if steps.contains(&Step::MbmsRegister) {
            let latest = store.latest_delivery_version(&t.terminal.0, kd(), id(1, 2)).await.unwrap();
            let answered = all
                .iter()
                .any(|e| e.terminal == *n && e.step == Step::MbmsRegister && matches!(e.outcome, Ok(Verdict::Done(_))));
            assert!(latest.is_some() || !answered, "terminal {n}: its push was queued before its answer");
            if latest.is_some() {
                queued_pushes.insert(t.keys.btid.clone());
            }
        }
    }

    // Every queued push goes out, those the worker had claimed when the database stopped too
    // (once their lease ends): nothing is lost.
    let waiting = Instant::now();
    let missing = loop {
        let sent: BTreeSet<String> = pushed(&pushes).into_iter().map(|p| p.0).collect();
        let missing: Vec<&String> = queued_pushes.difference(&sent).collect();
        if missing.is_empty() || waiting.elapsed() > lease + Duration::from_secs(5) {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(missing.is_empty(), "queued pushes never sent: {missing:?}");
    println!("all {} queued pushes sent (waited {:?})", queued_pushes.len(), waiting.elapsed());

    // No TS twice for one terminal: answers and pushes draw on one durable counter.
    let all_pushes = pushed(&pushes);
    for (btid, ts, _) in &all_pushes {
        let n: u32 = btid.strip_prefix("pg-restart-").and_then(|s| s.split('@').next()).unwrap().parse().unwrap();
        ts_seen.entry(n).or_default().push(*ts);
    }
    for (n, ts) in &ts_seen {
        let distinct: BTreeSet<&u32> = ts.iter().collect();
        assert_eq!(distinct.len(), ts.len(), "terminal {n} got a TS twice: {ts:?}");
        let t = terminal(*n);
        let next = store.reserve_ltkm_ts(&t.terminal, &t.keys.btid, 1).await.unwrap();
        assert!(next > **distinct.last().unwrap(), "terminal {n}: counter {next} behind {ts:?}");
    }
    println!(
        "{} terminals checked in the store, {} LTKMs by answer or push, {} pushes",
        done.len(),
        ts_seen.values().map(Vec::len).sum::<usize>(),
        all_pushes.len()
    );

    // Teardown.
    let pushed = push.worker().stats().snapshot().pushed;
    tokio::time::timeout(Duration::from_secs(5), push.stop()).await.expect("the push loop stops");
    let _ = stop_server.send(());
    tokio::time::timeout(Duration::from_secs(15), server).await.expect("the server stops").unwrap();
    receiver.abort();
    store.close().await;
    println!("{pushed} pushes in all");
}
