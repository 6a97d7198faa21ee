//! Authenticated provisioning load (issue 5): Registrations with Ua Digest per second against a
//! running BSM, measured with `wrk` at 64 connections, beside a trivial axum handler measured the
//! same way in the same run. Goal: the BSM at ≥ 40 % of the trivial handler's rate.
//!
//! ```text
//! cargo bench -p keycast-bsm --bench registration_load -- --duration-secs 10 --connections 64
//! ```
//!
//! `wrk` must be in `PATH` (Debian: `apt-get install -y wrk`); the bench installs nothing and
//! stops with that hint when it is missing.
//!
//! # What runs
//! Two servers in this process on `127.0.0.1` ephemeral ports, each on its own tokio runtime
//! built as `keycast serve bsm` builds its own (multi-thread, 2 workers, every driver enabled):
//!
//! - **the BSM**: [`bsm_app`] served by the BSM's own [`serve`] (plain HTTP, as the service runs
//!   it without TLS), over a [`SqliteStore`] in a temporary directory on disk (WAL,
//!   `synchronous=FULL`, as the service opens it), with the Ua Digest layer
//!   ([`UaAuthenticator`], default configuration: nonces of 300 s, the `3gpp-gba` User-Agent rule)
//!   and the answers' delivery intents stored by [`StoreIntents`] before each answer leaves, as the
//!   service does. No tracing subscriber and no metrics recorder are installed.
//! - **the trivial handler**: `POST /sprov` answering 200 with a static Registration Response
//!   (and its `Authentication-Info`), and `POST /` answering 200 `ok`, through `axum::serve`.
//!
//! # What is synthetic
//! - The BSF: the keys of the N terminals (N = `--connections`) come from a [`KeySource`] that
//!   answers from a fixed in-memory table (behind the service's [`KeyCache`]), not over Zn. Each
//!   terminal is a GBA_U record with B-TID `base64(RAND)@bsf.example.org` and Ks_ext_NAF /
//!   Ks_int_NAF made by HMAC of its index; no bootstrapping run happens.
//! - The catalogue: two services (one streaming), three purchase items, three offers, one
//!   program, four SEK/PEKs around the current time; each terminal holds a monthly subscription
//!   to `basic`.
//!
//! # The measured request
//! The terminal's real Registration Request (`POST /sprov`, `application/vnd.oma.bcast.sprov+xml`,
//! `RegistrationRequest` naming `basic` / `basic-month` and the terminal's B-TID). Each answer is
//! a `RegistrationResponse` with global status success and one LTKM (the terminal's next TS
//! reserved durably first, `profile: P-3`), plus `Authentication-Info`.
//!
//! Before the timed runs, per terminal, an unauthenticated POST of its Registration fetches a real
//! 401 challenge (its nonce). One extra authenticated Registration, answered through the
//! keycast-provisioning Digest client, checks that the answer is a success with one LTKM and
//! that its `rspauth` verifies, and that HA1 / HA2 as precomputed here give the client's
//! `response`.
//!
//! `wrk -tN -cN` then runs a generated Lua script: each wrk thread is one terminal with one
//! connection (the BSM refuses an `nc` not above the highest seen for (nonce, B-TID), so one
//! terminal's requests must arrive in order). HA1 = MD5(B-TID ":" realm ":" base64(SRK)) and
//! HA2 = MD5("POST:/sprov:" MD5(body)) (RFC 2617, `qop=auth-int`) are computed here; per request
//! the script raises `nc` and computes `response` = MD5(HA1 ":" nonce ":" nc ":" cnonce
//! ":auth-int:" HA2) with its own MD5 (RFC 1321, LuaJIT `bit`). Every thread checks its MD5
//! against RFC 1321's test suite and its first `response` against the value computed here. The
//! script counts answers other than 200; the bench fails when any arrived, when wrk saw socket
//! errors, or when a self-check failed — so a Digest failure cannot pass as speed.
//!
//! The trivial handler is measured two ways:
//! - **the same way** (the goal's figure): the very same `wrk` command and generated script as the
//!   BSM — each thread a terminal, the `Authorization` header computed per request in Lua, the
//!   terminal's body — against `POST /sprov`, which ignores the request and answers 200 with a
//!   static copy of the real Registration Response captured above and its `Authentication-Info`
//!   header (same content type, same lengths). The load tool then spends the same CPU per request
//!   in both runs, on the 2 cores client and server share, and the answers are as large.
//! - **the former way**, kept for comparison with earlier figures: a plain static POST of the
//!   first terminal's body to `POST /` answering `ok`, no Digest computed by wrk (once, first).
//!
//! Then rounds alternate: the trivial handler the same way, the BSM, each for the run's duration;
//! every round gives a ratio, and the goal is judged on the median of the rounds. On a machine
//! whose other load changes from one run to the next (a shared CI host), a single pair of runs
//! can land on either side of the goal by chance; alternating pairs and taking the median keeps
//! such a change from deciding the figure. Min and max are printed beside it.
//!
//! Options (cargo bench's own `--bench` is ignored): `--duration-secs S` (default 10, at most 90
//! so a round's nonces, fetched at its start, outlive its two runs), `--rounds R` (default 3),
//! `--connections N` (default 64), `--only bsm|trivial` (only the BSM runs or only the
//! trivial runs), `--sqlite-dir DIR` (where the store's temporary directory goes, default the
//! system's; `/dev/shm` takes the disk's fsync out, for diagnosis).

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keycast_bsm::domain::{
    KeyEntry, Program, ProgramId, Purchase, PurchaseData, PurchaseItem, PurchaseKind, Service, ServiceId, TerminalId,
    Window,
};
use keycast_bsm::http::UaGuard;
use keycast_bsm::http::intents::{IntentWriter, StoreIntents};
use keycast_bsm::http::provisioning::{ProvisioningState, SPROV_PATH, bsm_app};
use keycast_bsm::http::tls::serve;
use keycast_bsm::keys::{DEFAULT_CACHE_CAPACITY, KeyCache, KeyError, KeyFuture, KeyRecord, KeySource, NafKeys};
use keycast_bsm::push::{OsRandom, system_push_clock};
use keycast_bsm::service::{Provisioning, ProvisioningConfig};
use keycast_bsm::store::sql::SqliteStore;
use keycast_bsm::store::{BsmStore, StoredKey};
use keycast_bsm::ua::{UaAuthenticator, UaConfig};
use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::hmac::hmac_sha256;
use keycast_crypto::keys::{KsExtNaf, KsIntNaf, SekPek};
use keycast_gba::client::http::{HttpClient, UbTransport as _};
use keycast_gba::client::{HttpRequest, HttpResponse};
use keycast_mikey::{KeyDomainId, SekPekId};
use keycast_provisioning::digest::compute::{ha2, request_digest};
use keycast_provisioning::digest::{
    AuthenticationInfo, Challenge, DigestClient, Ha1, NonceCount, Qop, QopFields, realm_host_matches,
};
use keycast_provisioning::sprov::{
    self, ClientIdentity, Price, PurchaseItemRef, RegistrationRequest, RegistrationResponse, StatusCode,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const FQDN: &str = "bmsc.example.org";
const BSF_DOMAIN: &str = "bsf.example.org";
const USER_AGENT: &str = "Keycast-bench/0.1 3gpp-gba";
const DAY: u64 = 86_400;
/// Longest run: the nonces fetched at the start of a round live 300 s.
const MAX_DURATION_SECS: u64 = 90;
const GOAL: f64 = 0.40;

const USAGE: &str = "usage: cargo bench -p keycast-bsm --bench registration_load -- \
                     [--duration-secs S (1..=90, default 10)] [--rounds R (default 3)] \
                     [--connections N (default 64)] [--only bsm|trivial] [--sqlite-dir DIR]";

struct Options {
    duration_secs: u64,
    rounds: u64,
    connections: usize,
    bsm: bool,
    trivial: bool,
    sqlite_dir: PathBuf,
}

impl Options {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut o = Options {
            duration_secs: 10,
            rounds: 3,
            connections: 64,
            bsm: true,
            trivial: true,
            sqlite_dir: std::env::temp_dir(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = || inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{name} needs a value"));
            match name.as_str() {
                "--bench" => {}
                "--duration-secs" => {
                    let v = value()?;
                    o.duration_secs = v
                        .parse()
                        .ok()
                        .filter(|s| (1..=MAX_DURATION_SECS).contains(s))
                        .ok_or_else(|| format!("--duration-secs must be 1 to {MAX_DURATION_SECS}, not {v:?}"))?;
                }
                "--rounds" => {
                    let v = value()?;
                    o.rounds = v
                        .parse()
                        .ok()
                        .filter(|r| (1..=20).contains(r))
                        .ok_or_else(|| format!("--rounds must be 1 to 20, not {v:?}"))?;
                }
                "--connections" => {
                    let v = value()?;
                    o.connections = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| format!("--connections must be 1 to 1024, not {v:?}"))?;
                }
                "--only" => match value()?.as_str() {
                    "bsm" => o.trivial = false,
                    "trivial" => o.bsm = false,
                    other => return Err(format!("--only takes bsm or trivial, not {other:?}")),
                },
                "--sqlite-dir" => o.sqlite_dir = PathBuf::from(value()?),
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        Ok(o)
    }
}

/// `wrk` in `PATH`, if there.
fn find_wrk() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("wrk")).find(|p| p.is_file())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A runtime built as `keycast serve bsm` builds its own.
fn service_runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------------
// The BSM

/// The synthetic BSF: B-TID → keys, from a fixed table.
struct Table(HashMap<String, Arc<KeyRecord>>);

impl KeySource for Table {
    fn keys<'a>(&'a self, btid: &'a str, _now: u64) -> KeyFuture<'a> {
        let found = self.0.get(btid).cloned();
        Box::pin(async move { found.ok_or(KeyError::UnknownBtid) })
    }
}

/// One synthetic terminal: its keys, its Registration body and what the script needs.
struct Terminal {
    keys: Arc<KeyRecord>,
    body: Vec<u8>,
}

fn terminal(i: usize, now: u64) -> Terminal {
    let index = (i as u64).to_be_bytes();
    let part = |label: &[u8]| hmac_sha256(b"keycast registration_load bench", &[label, &index]);
    let rand = &part(b"rand")[..16];
    let btid = format!("{}@{BSF_DOMAIN}", STANDARD.encode(rand));
    let impi = format!("00101{i:010}@ims.mnc001.mcc001.3gppnetwork.org");
    let keys = NafKeys::U {
        ks_ext_naf: KsExtNaf::from_bytes(part(b"ks_ext_naf")),
        ks_int_naf: KsIntNaf::from_bytes(part(b"ks_int_naf")),
    };
    let record = Arc::new(KeyRecord::new(&btid, &impi, now - 60, now + DAY, &keys));
    let body = RegistrationRequest {
        request_id: 1,
        client: Some(ClientIdentity::Btid(btid)),
        items: vec![PurchaseItemRef::new("basic", Some("basic-month"))],
    }
    .to_xml()
    .expect("Registration Request encodes")
    .into_bytes();
    Terminal { keys: record, body }
}

fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").expect("key domain")
}

/// The small catalogue (module docs), around `now`.
async fn fill(store: &SqliteStore, now: u64) {
    let service = |name: &str, group, streaming| Service {
        id: ServiceId(name.into()),
        name: name.into(),
        key_domain: kd(),
        key_group: group,
        streaming,
    };
    store.put_service(&service("news", 1, true)).await.expect("service");
    store.put_service(&service("sport", 2, false)).await.expect("service");
    for (id, services) in [("basic", &["news"][..]), ("all", &["news", "sport"][..]), ("events", &["sport"][..])] {
        let item = PurchaseItem {
            global_id: id.into(),
            name: id.into(),
            services: services.iter().map(|s| ServiceId((*s).into())).collect(),
        };
        store.put_purchase_item(&item).await.expect("purchase item");
    }
    store
        .put_program(&Program {
            id: ProgramId("final".into()),
            service: ServiceId("sport".into()),
            key_group: 100,
            window: Window { from: now + DAY, until: now + DAY + 7200 },
        })
        .await
        .expect("program");
    let price = Price { amount: "4.99".into(), currency: "EUR".into() };
    for (id, item, kind, period) in [
        ("basic-month", "basic", PurchaseKind::Subscription, 30 * DAY),
        ("all-month", "all", PurchaseKind::Subscription, 30 * DAY),
        ("final-ppv", "events", PurchaseKind::PayPerView(ProgramId("final".into())), 0),
    ] {
        let data = PurchaseData { id: id.into(), item: item.into(), price: price.clone(), kind, period, play_backs: 0 };
        store.put_purchase_data(&data).await.expect("offer");
    }
    let keys = [
        ((1, 1), now - 40 * DAY, now - 10 * DAY),
        ((1, 2), now - 10 * DAY, now + 20 * DAY),
        ((2, 1), now - 10 * DAY, now + 20 * DAY),
        ((100, 1), now + DAY - 3600, now + DAY + 3 * 3600),
    ];
    for ((group, number), from, until) in keys {
        let b = (group as u8).wrapping_mul(16) ^ number as u8;
        store
            .add_key(&StoredKey {
                entry: KeyEntry {
                    id: SekPekId { key_group: group, key_number: number },
                    window: Window { from, until },
                    revoked_at: None,
                },
                key_domain: kd(),
                key: SekPek::from_bytes([b; 16]),
                rand: [b ^ 0x5a; 16],
                csb_id: 0x0100_0000 | u32::from(b),
            })
            .await
            .expect("key");
    }
}

struct RunningServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

/// The BSM as `keycast serve bsm` assembles it (module docs), over a filled store.
async fn start_bsm(dir: &Path, terminals: &[Terminal], now: u64) -> (RunningServer, SqliteStore) {
    let store = SqliteStore::open(dir.join("bsm.db"), StorageKey::from_bytes([7; 16])).await.expect("store");
    fill(&store, now).await;
    for t in terminals {
        let id = TerminalId(t.keys.impi().to_owned());
        store.touch_terminal(&id, t.keys.btid(), now - 3600).await.expect("terminal");
        let purchase = Purchase {
            terminal: id,
            item: "basic".into(),
            purchase_data: "basic-month".into(),
            kind: PurchaseKind::Subscription,
            window: Window { from: now - DAY, until: now + 29 * DAY },
        };
        store.put_purchase(&purchase).await.expect("purchase");
    }
    let table = Table(terminals.iter().map(|t| (t.keys.btid().to_owned(), t.keys.clone())).collect());
    let keys: Arc<dyn KeySource> = Arc::new(KeyCache::new(table, DEFAULT_CACHE_CAPACITY));
    let authenticator = UaAuthenticator::new(&UaConfig::new(FQDN, [9; 32])).expect("authenticator");
    let guard = Arc::new(UaGuard::new(authenticator, keys));
    let push_config = keycast_bsm::push::PushConfig::new("registration-load-bench", FQDN);
    let writer = Arc::new(IntentWriter::new(store.clone(), push_config.scheduler, OsRandom));
    let intents = StoreIntents::new(writer, system_push_clock());
    let state = Arc::new(
        ProvisioningState::new(Provisioning::new(store.clone(), ProvisioningConfig::new(FQDN)), guard)
            .with_intents(Arc::new(intents)),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let addr = listener.local_addr().expect("listener address");
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, bsm_app(state), None, async {
        let _ = stop_rx.await;
    }));
    (RunningServer { addr, stop, task }, store)
}

/// `POST /` → 200 `ok` (the former plain run), and `POST /sprov` → 200 with `answer` and the
/// `Authentication-Info` value `info` (a captured real Registration Response and its header,
/// static), through `axum::serve`. Neither looks at the request.
async fn start_trivial(answer: Vec<u8>, info: String) -> RunningServer {
    let answer = axum::body::Bytes::from(answer);
    let info = axum::http::HeaderValue::from_str(&info).expect("a header value the BSM sent");
    let app = Router::new().route("/", post(|| async { "ok" })).route(
        SPROV_PATH,
        post(move || {
            let (answer, info) = (answer.clone(), info.clone());
            async move {
                (
                    [
                        (axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static(sprov::CONTENT_TYPE)),
                        (axum::http::HeaderName::from_static("authentication-info"), info),
                    ],
                    answer,
                )
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let addr = listener.local_addr().expect("listener address");
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
    });
    RunningServer { addr, stop, task }
}

// ---------------------------------------------------------------------------------------------
// The terminals' side before the run

fn registration_post(body: &[u8], authorization: Option<String>) -> HttpRequest {
    let mut headers = vec![
        ("Host".to_owned(), FQDN.to_owned()),
        ("User-Agent".to_owned(), USER_AGENT.to_owned()),
        ("Content-Type".to_owned(), sprov::CONTENT_TYPE.to_owned()),
    ];
    if let Some(a) = authorization {
        headers.push(("Authorization".to_owned(), a));
    }
    HttpRequest { method: "POST".into(), uri: SPROV_PATH.into(), headers, body: body.to_vec() }
}

async fn send(addr: SocketAddr, request: &HttpRequest) -> Result<HttpResponse, String> {
    let mut client = HttpClient::plain(addr.to_string()).with_timeout(Duration::from_secs(10));
    client.send(request).await.map_err(|e| format!("request to the BSM failed: {e}"))
}

/// A real 401 for the terminal's unauthenticated Registration: its challenge.
async fn challenge(addr: SocketAddr, body: &[u8]) -> Result<Challenge, String> {
    let answer = send(addr, &registration_post(body, None)).await?;
    if answer.status != 401 {
        return Err(format!("unauthenticated Registration: expected 401, got {}", answer.status));
    }
    let header = answer.header("WWW-Authenticate").ok_or("401 without WWW-Authenticate")?;
    let challenge = Challenge::parse(header).map_err(|e| format!("challenge does not parse: {e}"))?;
    if !realm_host_matches(&challenge.realm, FQDN) {
        return Err(format!("challenge realm {:?} is not the BSM's", challenge.realm));
    }
    Ok(challenge)
}

/// What the script gets per terminal.
struct ScriptTerminal {
    btid: String,
    nonce: String,
    cnonce: String,
    ha1: String,
    ha2: String,
    /// `response` for nc = 00000001, the script's self-check.
    check: String,
    body: Vec<u8>,
}

fn script_terminal(t: &Terminal, realm: &str, nonce: &str, i: usize) -> ScriptTerminal {
    let ha1 = Ha1::new(t.keys.btid(), realm, &t.keys.ua_password());
    let ha2 = ha2(Some(&Qop::AuthInt), "POST", SPROV_PATH, &t.body).expect("HA2");
    let cnonce = format!("{i:08x}{:08x}", 0x6b63_6173u32);
    let qop = QopFields { qop: &Qop::AuthInt, nc: NonceCount(1), cnonce: &cnonce };
    let check = request_digest(&ha1, nonce, Some(qop), &ha2).expect("response").to_hex();
    ScriptTerminal {
        btid: t.keys.btid().to_owned(),
        nonce: nonce.to_owned(),
        cnonce,
        ha1: ha1.expose_hex().to_owned(),
        ha2: ha2.to_hex(),
        check,
        body: t.body.clone(),
    }
}

/// One authenticated Registration through the Digest client: a success with one LTKM, a good
/// `rspauth`, and the precomputed HA1 / HA2 giving the client's `response`.
async fn check_one_registration(addr: SocketAddr, t: &Terminal) -> Result<(Vec<u8>, String), String> {
    let challenge = challenge(addr, &t.body).await?;
    let realm = challenge.realm.clone();
    let mut client = DigestClient::new(challenge, t.keys.btid(), t.keys.ua_password(), &[Qop::AuthInt])
        .map_err(|e| format!("Digest client: {e}"))?;
    let sent = client.authorize("POST", SPROV_PATH, &t.body, &[0x5a; 8]).map_err(|e| format!("authorize: {e}"))?;
    let credentials = sent.credentials();
    if credentials.qop != Some(Qop::AuthInt) {
        return Err("the client did not choose qop=auth-int".into());
    }
    let ha1 = Ha1::new(t.keys.btid(), &realm, &t.keys.ua_password());
    let ha2 = ha2(Some(&Qop::AuthInt), "POST", SPROV_PATH, &t.body).expect("HA2");
    let cnonce = credentials.cnonce.clone().unwrap_or_default();
    let nc = credentials.nc.unwrap_or(NonceCount(0));
    let qop = QopFields { qop: &Qop::AuthInt, nc, cnonce: &cnonce };
    let mine = request_digest(&ha1, &credentials.nonce, Some(qop), &ha2).expect("response").to_hex();
    if mine != credentials.response {
        return Err("precomputed HA1 / HA2 do not give the Digest client's response".into());
    }
    let authorization = credentials.to_header_value().map_err(|e| format!("Authorization: {e}"))?;
    let answer = send(addr, &registration_post(&t.body, Some(authorization))).await?;
    if answer.status != 200 {
        return Err(format!(
            "authenticated Registration: expected 200, got {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    let info_text = answer.header("Authentication-Info").ok_or("200 without Authentication-Info")?.to_owned();
    let info = info_text.as_str();
    let info = AuthenticationInfo::parse(info).map_err(|e| format!("Authentication-Info: {e}"))?;
    client.check_authentication_info(&sent, &info, &answer.body).map_err(|e| format!("rspauth: {e}"))?;
    let response = RegistrationResponse::from_xml(&answer.body).map_err(|e| format!("answer: {e}"))?;
    if response.status != StatusCode::Success || response.ltkms.len() != 1 {
        return Err(format!(
            "Registration Response: status {:?} with {} LTKMs, expected success with 1",
            response.status,
            response.ltkms.len()
        ));
    }
    Ok((answer.body, info_text))
}

// ---------------------------------------------------------------------------------------------
// The wrk script

/// A Lua string literal of any octets.
fn lua_string(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "\\{b:03}");
        }
    }
    s.push('"');
    s
}

/// MD5 (RFC 1321) in LuaJIT with the `bit` library, its self-test, the answer counting and the
/// report; appended to the generated tables.
const SCRIPT_BODY: &str = r#"
local bit = require("bit")
local band, bor, bxor, bnot, rol, tobit = bit.band, bit.bor, bit.bxor, bit.bnot, bit.rol, bit.tobit
local lshift, rshift, bswap, tohex = bit.lshift, bit.rshift, bit.bswap, bit.tohex
local byte, char, rep, fmt = string.byte, string.char, string.rep, string.format

-- RFC 1321 §3.4: T[i] = floor(4294967296 * abs(sin(i))); the shifts of each round; the message
-- word of each step (round 1: i, round 2: 1 + 5i, round 3: 5 + 3i, round 4: 7i, mod 16).
local T, S, K = {}, {}, {}
local SHIFTS = { { 7, 12, 17, 22 }, { 5, 9, 14, 20 }, { 4, 11, 16, 23 }, { 6, 10, 15, 21 } }
for i = 0, 63 do
  local round = math.floor(i / 16)
  T[i + 1] = tobit(math.floor(4294967296 * math.abs(math.sin(i + 1))))
  S[i + 1] = SHIFTS[round + 1][i % 4 + 1]
  local k
  if round == 0 then k = i
  elseif round == 1 then k = (1 + 5 * i) % 16
  elseif round == 2 then k = (5 + 3 * i) % 16
  else k = (7 * i) % 16 end
  K[i + 1] = k + 1
end

local X = {}
local function md5_hex(message)
  local len = #message
  local bits = len * 8
  -- §3.1, §3.2: a 1 bit, zeros to 56 mod 64 octets, the bit length as 64 bits, low word first.
  message = message .. "\128" .. rep("\0", (55 - len) % 64)
    .. char(band(bits, 255), band(rshift(bits, 8), 255), band(rshift(bits, 16), 255), band(rshift(bits, 24), 255), 0, 0, 0, 0)
  -- §3.3
  local a0, b0, c0, d0 = tobit(0x67452301), tobit(0xefcdab89), tobit(0x98badcfe), tobit(0x10325476)
  for offset = 1, #message, 64 do
    for j = 0, 15 do
      local b1, b2, b3, b4 = byte(message, offset + 4 * j, offset + 4 * j + 3)
      X[j + 1] = bor(b1, lshift(b2, 8), lshift(b3, 16), lshift(b4, 24))
    end
    local a, b, c, d = a0, b0, c0, d0
    -- §3.4: the four rounds of F, G, H, I; a = b + ((a + f(b, c, d) + X[k] + T[i]) <<< s).
    for i = 1, 64 do
      local f
      if i <= 16 then f = bor(band(b, c), band(bnot(b), d))
      elseif i <= 32 then f = bor(band(b, d), band(c, bnot(d)))
      elseif i <= 48 then f = bxor(b, c, d)
      else f = bxor(c, bor(b, bnot(d))) end
      a, b, c, d = d, tobit(b + rol(tobit(a + f + X[K[i]] + T[i]), S[i])), b, c
    end
    a0, b0, c0, d0 = tobit(a0 + a), tobit(b0 + b), tobit(c0 + c), tobit(d0 + d)
  end
  -- §3.5: A, B, C, D, each low-order octet first.
  return tohex(bswap(a0)) .. tohex(bswap(b0)) .. tohex(bswap(c0)) .. tohex(bswap(d0))
end

-- RFC 1321 appendix A.5.
local md5_ok = md5_hex("") == "d41d8cd98f00b204e9800998ecf8427e"
  and md5_hex("abc") == "900150983cd24fb0d6963f7d28e17f72"
  and md5_hex("message digest") == "f96b697d7cb7938d525a2f31aaf161d0"
  and md5_hex("12345678901234567890123456789012345678901234567890123456789012345678901234567890")
    == "57edf4a22be3c955ac49da2e2107b67a"

local threads = {}
local next_terminal = 0

function setup(thread)
  next_terminal = next_terminal + 1
  thread:set("terminal_index", next_terminal)
  table.insert(threads, thread)
end

if MODE == "plain" then
  wrk.method = "POST"
  wrk.body = TERMINALS[1].body
  wrk.headers["Content-Type"] = CONTENT_TYPE
  wrk.headers["User-Agent"] = USER_AGENT
end

local nc, digest_prefix, digest_suffix, header_prefix, header_middle, headers, body

function init(args)
  non200 = 0
  bad_status = 0
  bad_body = ""
  selftest = md5_ok and "ok" or "md5 differs from RFC 1321 A.5"
  if MODE ~= "digest" then return end
  local t = TERMINALS[terminal_index]
  if t == nil then
    selftest = "more wrk threads than terminals"
    return
  end
  nc = 0
  digest_prefix = t.ha1 .. ":" .. t.nonce .. ":"
  digest_suffix = ":" .. t.cnonce .. ":auth-int:" .. t.ha2
  if md5_hex(digest_prefix .. "00000001" .. digest_suffix) ~= t.check then
    selftest = "response for nc=00000001 differs from the Rust one"
  end
  header_prefix = 'Digest username="' .. t.btid .. '", realm="' .. REALM .. '", nonce="' .. t.nonce
    .. '", uri="' .. URI .. '", qop=auth-int, nc='
  header_middle = ', cnonce="' .. t.cnonce .. '", response="'
  headers = { ["Content-Type"] = CONTENT_TYPE, ["User-Agent"] = USER_AGENT }
  body = t.body
end

if MODE == "digest" then
  function request()
    nc = nc + 1
    local count = fmt("%08x", nc)
    local response = md5_hex(digest_prefix .. count .. digest_suffix)
    headers["Authorization"] = header_prefix .. count .. header_middle .. response .. '", algorithm=MD5'
    return wrk.format("POST", URI, headers, body)
  end
end

function response(status, _headers, answer)
  if status ~= 200 then
    non200 = non200 + 1
    if bad_status == 0 then
      bad_status = status
      bad_body = string.sub(answer or "", 1, 200)
    end
  end
end

function done(summary, latency, requests)
  local non200_total, failed, first_bad = 0, 0, ""
  for _, thread in ipairs(threads) do
    non200_total = non200_total + (thread:get("non200") or 0)
    local s = thread:get("selftest")
    if s ~= "ok" then
      failed = failed + 1
      if first_bad == "" then first_bad = "self-check: " .. tostring(s) end
    end
    local status = thread:get("bad_status") or 0
    if status ~= 0 and first_bad == "" then
      first_bad = tostring(status) .. " " .. tostring(thread:get("bad_body"))
    end
  end
  local e = summary.errors
  io.write(fmt("KEYCAST-WRK requests=%.0f duration_us=%.0f non200=%.0f selftest_failed=%.0f connect=%.0f read=%.0f "
    .. "write=%.0f status=%.0f timeout=%.0f p50_us=%.0f p99_us=%.0f mean_us=%.0f max_us=%.0f\n",
    summary.requests, summary.duration, non200_total, failed, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
  if first_bad ~= "" then
    io.write("KEYCAST-WRK first-bad: ", (first_bad:gsub("[\r\n]", " ")), "\n")
  end
end
"#;

fn script(mode: &str, realm: &str, terminals: &[ScriptTerminal]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "-- generated by keycast-bsm/benches/registration_load.rs");
    let _ = writeln!(s, "MODE = {}", lua_string(mode.as_bytes()));
    let _ = writeln!(s, "REALM = {}", lua_string(realm.as_bytes()));
    let _ = writeln!(s, "URI = {}", lua_string(SPROV_PATH.as_bytes()));
    let _ = writeln!(s, "CONTENT_TYPE = {}", lua_string(sprov::CONTENT_TYPE.as_bytes()));
    let _ = writeln!(s, "USER_AGENT = {}", lua_string(USER_AGENT.as_bytes()));
    let _ = writeln!(s, "TERMINALS = {{");
    for t in terminals {
        let _ = writeln!(
            s,
            "  {{ btid = {}, nonce = {}, cnonce = {}, ha1 = {}, ha2 = {}, check = {},\n    body = {} }},",
            lua_string(t.btid.as_bytes()),
            lua_string(t.nonce.as_bytes()),
            lua_string(t.cnonce.as_bytes()),
            lua_string(t.ha1.as_bytes()),
            lua_string(t.ha2.as_bytes()),
            lua_string(t.check.as_bytes()),
            lua_string(&t.body),
        );
    }
    let _ = writeln!(s, "}}");
    s.push_str(SCRIPT_BODY);
    s
}

// ---------------------------------------------------------------------------------------------
// Running wrk

/// What the script's `done` reported.
#[derive(Debug, Default)]
struct WrkReport {
    requests: f64,
    duration_us: f64,
    non200: f64,
    selftest_failed: f64,
    socket_errors: f64,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
    max_us: f64,
    first_bad: Option<String>,
}

impl WrkReport {
    fn per_second(&self) -> f64 {
        self.requests / (self.duration_us / 1e6)
    }

    fn parse(stdout: &str) -> Option<Self> {
        let line = stdout.lines().find_map(|l| l.strip_prefix("KEYCAST-WRK requests="))?;
        let mut fields = HashMap::new();
        for pair in format!("requests={line}").split_whitespace() {
            let (k, v) = pair.split_once('=')?;
            fields.insert(k.to_owned(), v.parse::<f64>().ok()?);
        }
        let get = |k: &str| fields.get(k).copied();
        Some(WrkReport {
            requests: get("requests")?,
            duration_us: get("duration_us")?,
            non200: get("non200")?,
            selftest_failed: get("selftest_failed")?,
            socket_errors: get("connect")? + get("read")? + get("write")? + get("timeout")?,
            p50_us: get("p50_us")?,
            p99_us: get("p99_us")?,
            mean_us: get("mean_us")?,
            max_us: get("max_us")?,
            first_bad: stdout.lines().find_map(|l| l.strip_prefix("KEYCAST-WRK first-bad: ")).map(str::to_owned),
        })
    }

    fn failure(&self) -> Option<String> {
        if self.selftest_failed > 0.0 {
            return Some(format!("{} wrk threads failed their self-check", self.selftest_failed));
        }
        if self.non200 > 0.0 {
            return Some(format!("{} answers were not 200", self.non200));
        }
        if self.socket_errors > 0.0 {
            return Some(format!("wrk saw {} socket errors (connect, read, write, timeout)", self.socket_errors));
        }
        if self.requests < 1.0 {
            return Some("no request completed".into());
        }
        None
    }
}

fn run_wrk(wrk: &Path, connections: usize, secs: u64, url: &str, script: &Path) -> Result<WrkReport, String> {
    let threads = format!("-t{connections}");
    let conns = format!("-c{connections}");
    let duration = format!("-d{secs}s");
    println!(
        "  $ wrk {threads} {conns} {duration} --timeout 10s -s {} {url}",
        script.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    let out = Command::new(wrk)
        .args([threads.as_str(), conns.as_str(), duration.as_str(), "--timeout", "10s", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .map_err(|e| format!("running {}: {e}", wrk.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines().filter(|l| !l.starts_with("KEYCAST-WRK")) {
        println!("    {line}");
    }
    if !out.status.success() {
        return Err(format!("wrk failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    let report = WrkReport::parse(&stdout).ok_or_else(|| {
        format!("wrk printed no report (script error?): {}", String::from_utf8_lossy(&out.stderr).trim())
    })?;
    if let Some(failure) = report.failure() {
        return Err(format!("{failure}; first: {}", report.first_bad.as_deref().unwrap_or("(no detail)")));
    }
    Ok(report)
}

fn show(what: &str, r: &WrkReport) {
    println!(
        "  {what}: {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  mean {:.2} ms  max {:.1} ms  ({:.0} requests in {:.2} s, all 200)",
        r.per_second(),
        r.p50_us / 1e3,
        r.p99_us / 1e3,
        r.mean_us / 1e3,
        r.max_us / 1e3,
        r.requests,
        r.duration_us / 1e6
    );
}

fn run(options: &Options, wrk: &Path) -> Result<(), String> {
    let n = options.connections;
    let secs = options.duration_secs;
    let dir = tempfile::tempdir_in(&options.sqlite_dir).map_err(|e| format!("temporary directory: {e}"))?;
    let now = unix_now();
    let terminals: Vec<Terminal> = (0..n).map(|i| terminal(i, now)).collect();
    println!(
        "keycast-bsm registration_load: {n} terminals = wrk threads = connections, {secs} s per run \
         (SQLite store in {}, WAL, synchronous=FULL)",
        dir.path().display()
    );

    let bsm_rt = service_runtime("bsm-rt");
    let trivial_rt = service_runtime("trivial-rt");
    let (bsm, store) = bsm_rt.block_on(start_bsm(dir.path(), &terminals, now));
    // The terminals' real challenges and one checked Registration first: the same-script trivial
    // run needs the nonces, and answers with the checked Registration Response.
    let addr = bsm.addr;
    let (answer, info) = bsm_rt.block_on(check_one_registration(addr, &terminals[0]))?;
    println!("checked: one authenticated Registration answered success with one LTKM and a valid rspauth");
    let realm = keycast_provisioning::digest::GbaRealmPrefix::Bootstrapping.realm(FQDN);
    // Each round's script carries fresh nonces: the BSM refuses a nonce count it has seen, and
    // wrk's script counts from 1 in every run.
    let digest_script = |round: u64| -> Result<PathBuf, String> {
        let prepared = bsm_rt.block_on(async {
            let mut out = Vec::with_capacity(n);
            for (i, t) in terminals.iter().enumerate() {
                let c = challenge(addr, &t.body).await?;
                out.push(script_terminal(t, &c.realm, &c.nonce, i));
            }
            Ok::<_, String>(out)
        })?;
        let path = dir.path().join(format!("registration-{round}.lua"));
        std::fs::write(&path, script("digest", &realm, &prepared)).map_err(|e| format!("writing the script: {e}"))?;
        Ok(path)
    };
    let trivial = trivial_rt.block_on(start_trivial(answer.clone(), info));

    let mut plain_report = None;
    if options.trivial {
        let path = dir.path().join("trivial.lua");
        let body = ScriptTerminal {
            btid: String::new(),
            nonce: String::new(),
            cnonce: String::new(),
            ha1: String::new(),
            ha2: String::new(),
            check: String::new(),
            body: terminals[0].body.clone(),
        };
        std::fs::write(&path, script("plain", "", &[body])).map_err(|e| format!("writing the script: {e}"))?;
        println!("trivial axum handler, the former way (POST /, 200 \"ok\"; the first terminal's body, no Digest):");
        let r = run_wrk(wrk, n, secs, &format!("http://{}/", trivial.addr), &path)?;
        show("trivial (plain)", &r);
        plain_report = Some(r);
        println!(
            "trivial axum handler, the same way (the BSM's wrk script: Digest per request, the terminals' \
             bodies; POST /sprov, 200 with a static {}-byte Registration Response and its \
             Authentication-Info), in turn with the BSM (POST /sprov, Digest qop=auth-int, one LTKM per answer):",
            answer.len()
        );
    } else {
        println!("BSM Registration (POST /sprov, Digest qop=auth-int, one LTKM per answer):");
    }

    let mut ratios = Vec::new();
    let mut last_bsm = None;
    for round in 1..=options.rounds {
        let digest_script = digest_script(round)?;
        let same = if options.trivial {
            let r = run_wrk(wrk, n, secs, &format!("http://{}{SPROV_PATH}", trivial.addr), &digest_script)?;
            show(&format!("round {round} trivial (same)"), &r);
            Some(r)
        } else {
            None
        };
        let bsm_run = if options.bsm {
            let r = run_wrk(wrk, n, secs, &format!("http://{addr}{SPROV_PATH}"), &digest_script)?;
            show(&format!("round {round} BSM           "), &r);
            Some(r)
        } else {
            None
        };
        if let (Some(b), Some(t)) = (&bsm_run, &same) {
            let ratio = b.per_second() / t.per_second();
            println!("  round {round} ratio BSM / trivial (same): {ratio:.3}");
            ratios.push(ratio);
        }
        last_bsm = bsm_run.or(last_bsm);
    }

    if !ratios.is_empty() {
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
        println!(
            "ratio BSM / trivial measured the same way, median of {} rounds: {median:.3} (min {:.3}, max {:.3}; goal ≥ {GOAL:.2}: {})",
            sorted.len(),
            sorted[0],
            sorted[sorted.len() - 1],
            if median >= GOAL { "met" } else { "NOT met" }
        );
    }
    if let (Some(b), Some(t)) = (&last_bsm, &plain_report) {
        println!(
            "ratio BSM (last round) / trivial the former way (plain POST, no Digest): {:.3}",
            b.per_second() / t.per_second()
        );
    }

    trivial_rt.block_on(trivial.stop());
    bsm_rt.block_on(async {
        bsm.stop().await;
        store.close().await;
    });
    Ok(())
}

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let Some(wrk) = find_wrk() else {
        eprintln!(
            "registration_load needs the load tool wrk in PATH, and it is not there.\n\
             Install it (Debian): apt-get install -y wrk"
        );
        return ExitCode::from(2);
    };
    match run(&options, &wrk) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("registration_load FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
