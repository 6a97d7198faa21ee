//! Load test of the BSF over loopback: N concurrent software terminals run full bootstraps
//! against an in-process BSF and the bench reports bootstraps per second and latency.
//!
//! ```text
//! cargo bench -p keycast-gba --bench bootstrap_load -- --store sqlite --terminals 64 --duration-secs 10
//! ```
//!
//! One full bootstrap is two round trips on one keep-alive HTTP/1.1 connection per terminal:
//! the initial request (→ 401 with RAND ‖ AUTN: `start_run` advances SQN and stores the pending
//! challenge, Milenage) and the Digest AKA answer (→ 200 with `Authentication-Info` and a
//! `BootstrappingInfo`: `take_run` takes the challenge with its subscriber, Milenage,
//! `put_session` stores the session with Ks). A bootstrap counts when the 200
//! arrived, its `rspauth` verified and its B-TID is `base64(RAND)@domain`.
//!
//! The BSF is the production shell ([`serve`] with [`app`] on `127.0.0.1:0`, plain HTTP, OS
//! random source, system clock, no tracing subscriber and no metrics recorder installed) around
//! one of three stores: `memory` ([`MemoryStore`]), `sqlite` ([`SqliteStore`], a new file in a
//! temporary directory under `--sqlite-dir`, default the system temporary directory) or
//! `postgres` ([`PgStore`] in a fresh schema, dropped afterwards, of the database named by
//! `--postgres-url` or `KEYCAST_TEST_POSTGRES_URL`; `.ci/postgres-setup` starts one). The store
//! is wrapped in a timer that adds up the time each request waits in each store call; that sum
//! divided by the window is the mean number of store calls in flight (the SQL stores serve the
//! calls in flight together, one transaction per batch).
//!
//! The terminals are GBA_ME-style software terminals: Milenage on K/OPc checks AUTN and SQN
//! freshness and computes RES, and [`DigestClient`] answers and checks `rspauth` — no card
//! emulator, so the client's cost stays small. They send through the crate's own HTTP client
//! shell ([`HttpClient`], hyper, one kept-alive connection each). Client and server share the
//! machine's cores; by default they run on two tokio runtimes (threads `bsf-rt` and
//! `terminal-rt`, each with as many workers as there are cores) so that the CPU each side uses
//! can be reported separately (`--shared-runtime` puts both on one runtime).
//!
//! Options (cargo bench's own `--bench` is ignored):
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `--store LIST` | `memory,sqlite` and `postgres` when a URL is known | stores to run, comma-separated (`all`) |
//! | `--terminals LIST` | `64` | concurrent terminals, comma-separated for several runs |
//! | `--duration-secs S` | `10` | measured window per run |
//! | `--warmup-secs S` | `1` | unmeasured warm-up before the window |
//! | `--subscribers N` | = terminals | subscribers (terminal *i* uses subscriber *i* mod N) |
//! | `--threads N` | available cores | worker threads per runtime |
//! | `--shared-runtime` | off | client and server on one runtime |
//! | `--sqlite-dir DIR` | temp dir | where the SQLite file goes (e.g. `/dev/shm` to take fsync out) |
//! | `--postgres-url URL` | `$KEYCAST_TEST_POSTGRES_URL` | PostgreSQL database |
//! | `--breakdown` | off | also time one bootstrap at a time without HTTP, per store, and the disk's fsync |
//!
//! Every run is bounded: terminals stop starting bootstraps at the end of the window, each
//! request times out after 30 s, and stragglers are aborted 60 s after the window.

use std::collections::BTreeMap;
use std::error::Error;
use std::fs::File;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keycast_crypto::gba::b_tid;
use keycast_crypto::keys::{Opc, SubscriberKey};
use keycast_crypto::milenage::{Milenage, sqn_to_u64};
use keycast_gba::bsf::http::{BsfState, OsRandom, ZnAuth, app, serve};
use keycast_gba::bsf::{
    Bsf, BsfConfig, BsfMetrics, BsfStore, FailureCause, GbaType, MemoryStore, Pending, PgStore, Purged, RandomSource,
    RunStart, SeededRandom, Session, SqliteStore, SqnAdvance, StorageKey, StoreError, Subscriber, SubscriberSummary,
    TakenRun, UbRequest,
};
use keycast_gba::client::HttpRequest;
use keycast_gba::client::http::{HttpClient, UbTransport};
use keycast_provisioning::bootstrapping::BootstrappingInfo;
use keycast_provisioning::digest::{AuthenticationInfo, Challenge, DigestClient, Password, Qop, SentRequest};
use sqlx::postgres::{PgConnectOptions, PgPool};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;

const DOMAIN: &str = "bsf.bench.example.org";
const USER_AGENT: &str = "keycast-bootstrap-load/0.1 3gpp-gba";
const PG_ENV: &str = "KEYCAST_TEST_POSTGRES_URL";
/// Per-request timeout of the terminals' HTTP client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Terminals still running this long after the window are aborted.
const STRAGGLER_GRACE: Duration = Duration::from_secs(60);
/// Pause of a terminal after a failed bootstrap (keeps a broken server from turning the
/// terminals into a busy loop).
const FAILURE_PAUSE: Duration = Duration::from_millis(10);
/// Bootstraps per store in `--breakdown`.
const BREAKDOWN_ITERATIONS: usize = 2000;
/// Linux `USER_HZ`: the unit of utime/stime in /proc.
const USER_HZ: f64 = 100.0;

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Memory,
    Sqlite,
    Postgres,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

#[derive(Debug)]
struct Options {
    stores: Vec<StoreKind>,
    terminals: Vec<usize>,
    duration: Duration,
    warmup: Duration,
    subscribers: Option<usize>,
    threads: usize,
    shared_runtime: bool,
    sqlite_dir: PathBuf,
    postgres_url: Option<String>,
    breakdown: bool,
}

const USAGE: &str = "usage: bootstrap_load [--store memory,sqlite,postgres|all] [--terminals 8,64,256] \
[--duration-secs 10] [--warmup-secs 1] [--subscribers N] [--threads N] [--shared-runtime] [--sqlite-dir DIR] \
[--postgres-url URL] [--breakdown]";

fn parse_list<T: FromStr>(text: &str, what: &str) -> Result<Vec<T>, String> {
    let list: Result<Vec<T>, _> = text.split(',').map(|s| s.trim().parse::<T>()).collect();
    match list {
        Ok(l) if !l.is_empty() => Ok(l),
        _ => Err(format!("{what}: cannot read {text:?}")),
    }
}

fn parse_positive(text: &str, what: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{what} must be a positive integer, not {text:?}")),
    }
}

impl Options {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let mut o = Options {
            stores: Vec::new(),
            terminals: vec![64],
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            subscribers: None,
            threads,
            shared_runtime: false,
            sqlite_dir: std::env::temp_dir(),
            postgres_url: std::env::var(PG_ENV).ok().filter(|u| !u.is_empty()),
            breakdown: false,
        };
        let mut stores: Option<String> = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = || inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{name} needs a value"));
            match name.as_str() {
                "--bench" => {}
                "--shared-runtime" => o.shared_runtime = true,
                "--breakdown" => o.breakdown = true,
                "--store" | "--stores" => stores = Some(value()?),
                "--terminals" => {
                    o.terminals = parse_list::<usize>(&value()?, "--terminals")?;
                    if o.terminals.contains(&0) {
                        return Err("--terminals must be positive".into());
                    }
                }
                "--duration-secs" => o.duration = Duration::from_secs(parse_positive(&value()?, &name)? as u64),
                "--warmup-secs" => {
                    let v = value()?;
                    o.warmup = Duration::from_secs(v.parse().map_err(|_| format!("--warmup-secs: {v:?}"))?);
                }
                "--subscribers" => o.subscribers = Some(parse_positive(&value()?, &name)?),
                "--threads" => o.threads = parse_positive(&value()?, &name)?,
                "--sqlite-dir" => o.sqlite_dir = PathBuf::from(value()?),
                "--postgres-url" => o.postgres_url = Some(value()?),
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        o.stores = match stores.as_deref() {
            None => {
                let mut s = vec![StoreKind::Memory, StoreKind::Sqlite];
                if o.postgres_url.is_some() {
                    s.push(StoreKind::Postgres);
                }
                s
            }
            Some("all") => vec![StoreKind::Memory, StoreKind::Sqlite, StoreKind::Postgres],
            Some(list) => {
                let mut s = Vec::new();
                for name in list.split(',').map(str::trim) {
                    s.push(match name {
                        "memory" => StoreKind::Memory,
                        "sqlite" => StoreKind::Sqlite,
                        "postgres" | "pg" => StoreKind::Postgres,
                        other => return Err(format!("unknown store {other:?} (memory, sqlite, postgres)")),
                    });
                }
                s
            }
        };
        if o.stores.contains(&StoreKind::Postgres) && o.postgres_url.is_none() {
            return Err(format!("--store postgres needs --postgres-url or {PG_ENV} (see .ci/postgres-setup)"));
        }
        Ok(o)
    }
}

// ---------------------------------------------------------------------------------------------
// A store wrapper that times every call

const OP_NAMES: [&str; 5] = ["start_run", "take_run", "put_session", "subscriber", "other"];

#[derive(Debug, Clone, Copy)]
enum Op {
    StartRun = 0,
    TakeRun = 1,
    PutSession = 2,
    Subscriber = 3,
    Other = 4,
}

/// Calls and total wall time per store operation.
#[derive(Debug, Clone, Copy, Default)]
struct OpSnapshot {
    count: [u64; 5],
    nanos: [u64; 5],
}

impl OpSnapshot {
    fn since(&self, earlier: &OpSnapshot) -> OpSnapshot {
        OpSnapshot {
            count: core::array::from_fn(|i| self.count[i].saturating_sub(earlier.count[i])),
            nanos: core::array::from_fn(|i| self.nanos[i].saturating_sub(earlier.nanos[i])),
        }
    }

    fn total_nanos(&self) -> u64 {
        self.nanos.iter().sum()
    }
}

/// A [`BsfStore`] that forwards to `inner` and adds up the wall time of each call.
struct Timed<S> {
    inner: S,
    count: [AtomicU64; 5],
    nanos: [AtomicU64; 5],
}

impl<S> Timed<S> {
    fn new(inner: S) -> Self {
        Timed { inner, count: Default::default(), nanos: Default::default() }
    }

    async fn time<T>(&self, op: Op, call: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let out = call.await;
        let elapsed = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.count[op as usize].fetch_add(1, Ordering::Relaxed);
        self.nanos[op as usize].fetch_add(elapsed, Ordering::Relaxed);
        out
    }

    fn snapshot(&self) -> OpSnapshot {
        OpSnapshot {
            count: core::array::from_fn(|i| self.count[i].load(Ordering::Relaxed)),
            nanos: core::array::from_fn(|i| self.nanos[i].load(Ordering::Relaxed)),
        }
    }
}

impl<S: BsfStore + Sync> BsfStore for Timed<S> {
    async fn start_run(&self, impi: &str, advance: SqnAdvance, pending: Pending) -> Result<RunStart, StoreError> {
        self.time(Op::StartRun, self.inner.start_run(impi, advance, pending)).await
    }

    async fn take_run(&self, rand: &[u8; 16]) -> Result<Option<TakenRun>, StoreError> {
        self.time(Op::TakeRun, self.inner.take_run(rand)).await
    }

    async fn subscriber(&self, impi: &str) -> Result<Option<Subscriber>, StoreError> {
        self.time(Op::Subscriber, self.inner.subscriber(impi)).await
    }

    async fn put_session(&self, session: Session) -> Result<(), StoreError> {
        self.time(Op::PutSession, self.inner.put_session(session)).await
    }

    async fn session(&self, btid: &str) -> Result<Option<Session>, StoreError> {
        self.time(Op::Other, self.inner.session(btid)).await
    }

    async fn set_sqn(&self, impi: &str, sqn: u64) -> Result<bool, StoreError> {
        self.time(Op::Other, self.inner.set_sqn(impi, sqn)).await
    }

    async fn add_subscriber(&self, subscriber: &Subscriber) -> Result<(), StoreError> {
        self.time(Op::Other, self.inner.add_subscriber(subscriber)).await
    }

    async fn delete_subscriber(&self, impi: &str) -> Result<bool, StoreError> {
        self.time(Op::Other, self.inner.delete_subscriber(impi)).await
    }

    async fn list_subscribers(&self) -> Result<Vec<SubscriberSummary>, StoreError> {
        self.time(Op::Other, self.inner.list_subscribers()).await
    }

    async fn purge_expired(&self, now: u64) -> Result<Purged, StoreError> {
        self.time(Op::Other, self.inner.purge_expired(now)).await
    }
}

// ---------------------------------------------------------------------------------------------
// Subscribers and the software terminal

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `n` GBA_ME subscribers with distinct IMPIs and K/OPc from a fixed seed.
fn subscribers(n: usize) -> Vec<Subscriber> {
    let mut rng = SeededRandom::new([0x42; 32]);
    (0..n)
        .map(|i| {
            let (mut k, mut opc) = ([0u8; 16], [0u8; 16]);
            rng.fill(&mut k);
            rng.fill(&mut opc);
            Subscriber {
                impi: format!("00101{i:010}@ims.mnc001.mcc001.3gppnetwork.org"),
                imsi: format!("00101{i:010}"),
                k: SubscriberKey::from_bytes(k),
                opc: Opc::from_bytes(opc),
                sqn: 32,
                amf: [0x80, 0x00],
                gba_type: GbaType::GbaMe,
            }
        })
        .collect()
}

fn bsf_config() -> BsfConfig {
    BsfConfig::new(DOMAIN, [0x17; 32])
}

/// Why one bootstrap failed.
#[derive(Debug)]
enum Fail {
    /// The BSF answered `status` to the initial request (round 1) or to the answer (round 2).
    Status { round: u8, status: u16 },
    /// The HTTP client failed (connect, timeout, connection closed).
    Transport(String),
    /// The terminal refused the BSF's message.
    Terminal(&'static str),
}

impl Fail {
    fn key(&self) -> String {
        match self {
            Fail::Status { round: 1, status } => format!("HTTP {status} to the initial request"),
            Fail::Status { status, .. } => format!("HTTP {status} to the answer"),
            Fail::Transport(e) => format!("transport: {e}"),
            Fail::Terminal(what) => format!("terminal: {what}"),
        }
    }
}

/// What the terminal keeps between the challenge and the 200.
struct Answer {
    client: DigestClient,
    sent: SentRequest,
    btid: String,
}

/// A GBA_ME terminal in software: K/OPc in the clear, Milenage directly, no card.
struct Terminal {
    impi: String,
    milenage: Milenage,
    /// Highest SQN accepted so far (a fresh AUTN must carry a higher one).
    sqn_ms: u64,
    /// `Authorization` of the initial request (constant for an IMPI).
    initial: String,
    id: u64,
    counter: u64,
}

impl Terminal {
    fn new(id: u64, subscriber: &Subscriber) -> Self {
        let initial = keycast_provisioning::digest::Credentials::initial(&subscriber.impi, DOMAIN, "/")
            .to_header_value()
            .expect("a generated IMPI formats");
        Terminal {
            impi: subscriber.impi.clone(),
            milenage: Milenage::new(&subscriber.k, &subscriber.opc),
            sqn_ms: 0,
            initial,
            id,
            counter: 0,
        }
    }

    fn request(authorization: String) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            uri: "/".into(),
            headers: vec![
                ("Host".into(), DOMAIN.into()),
                ("User-Agent".into(), USER_AGENT.into()),
                ("Authorization".into(), authorization),
            ],
            body: Vec::new(),
        }
    }

    /// A unique cnonce: terminal id ‖ counter (a real terminal draws it at random; the BSF only
    /// echoes it).
    fn cnonce(&mut self) -> [u8; 16] {
        self.counter += 1;
        let mut c = [0u8; 16];
        c[..8].copy_from_slice(&self.id.to_be_bytes());
        c[8..].copy_from_slice(&self.counter.to_be_bytes());
        c
    }

    /// The 401: AUTN checked (MAC-A, SQN fresh), RES computed, Digest AKA answer built.
    fn on_challenge(&mut self, status: u16, www_authenticate: Option<&str>) -> Result<(String, Answer), Fail> {
        if status != 401 {
            return Err(Fail::Status { round: 1, status });
        }
        let header = www_authenticate.ok_or(Fail::Terminal("401 without WWW-Authenticate"))?;
        let challenge = Challenge::parse(header).map_err(|_| Fail::Terminal("malformed challenge"))?;
        let raw = STANDARD.decode(challenge.nonce.as_bytes()).map_err(|_| Fail::Terminal("nonce is not base64"))?;
        let (Some(rand), Some(autn)) = (raw.get(..16), raw.get(16..32)) else {
            return Err(Fail::Terminal("nonce shorter than RAND ‖ AUTN"));
        };
        let rand: [u8; 16] = rand.try_into().map_err(|_| Fail::Terminal("RAND"))?;
        let autn: [u8; 16] = autn.try_into().map_err(|_| Fail::Terminal("AUTN"))?;
        let check = self.milenage.check_autn(&rand, &autn).map_err(|_| Fail::Terminal("AUTN MAC-A does not verify"))?;
        let sqn = sqn_to_u64(check.sqn);
        if sqn <= self.sqn_ms {
            return Err(Fail::Terminal("SQN not fresh"));
        }
        self.sqn_ms = sqn;
        let password = Password::from_bytes(check.res.expose_secret());
        let mut client = DigestClient::new(challenge, &self.impi, password, &[Qop::AuthInt])
            .map_err(|_| Fail::Terminal("challenge cannot be answered"))?;
        let cnonce = self.cnonce();
        let sent = client.authorize("GET", "/", b"", &cnonce).map_err(|_| Fail::Terminal("authorize"))?;
        let authorization =
            sent.credentials().to_header_value().map_err(|_| Fail::Terminal("answer cannot be formatted"))?;
        Ok((authorization, Answer { client, sent, btid: b_tid(&rand, DOMAIN) }))
    }

    /// The 200: rspauth verified, BootstrappingInfo parsed, B-TID and lifetime checked.
    fn on_result(
        mut answer: Answer,
        status: u16,
        authentication_info: Option<&str>,
        body: &[u8],
        now: u64,
    ) -> Result<(), Fail> {
        if status != 200 {
            return Err(Fail::Status { round: 2, status });
        }
        let info = authentication_info.ok_or(Fail::Terminal("200 without Authentication-Info"))?;
        let info = AuthenticationInfo::parse(info).map_err(|_| Fail::Terminal("malformed Authentication-Info"))?;
        answer
            .client
            .check_authentication_info(&answer.sent, &info, body)
            .map_err(|_| Fail::Terminal("rspauth does not verify"))?;
        let bootstrapping =
            BootstrappingInfo::from_xml(body).map_err(|_| Fail::Terminal("malformed BootstrappingInfo"))?;
        if bootstrapping.btid() != answer.btid {
            return Err(Fail::Terminal("B-TID is not base64(RAND)@BSF"));
        }
        if bootstrapping.lifetime().unix_seconds() <= now {
            return Err(Fail::Terminal("key lifetime already passed"));
        }
        Ok(())
    }

    /// One full bootstrap over HTTP.
    async fn bootstrap(&mut self, http: &mut HttpClient) -> Result<(), Fail> {
        let transport = |e: keycast_gba::client::http::HttpClientError| Fail::Transport(e.to_string());
        let first = http.send(&Self::request(self.initial.clone())).await.map_err(transport)?;
        let (authorization, answer) = self.on_challenge(first.status, first.header("WWW-Authenticate"))?;
        let second = http.send(&Self::request(authorization)).await.map_err(transport)?;
        Self::on_result(answer, second.status, second.header("Authentication-Info"), &second.body, unix_now())
    }
}

// ---------------------------------------------------------------------------------------------
// CPU accounting (/proc, Linux)

/// CPU seconds (user + system) per thread name, over all threads of this process.
fn thread_cpu() -> BTreeMap<u64, (String, f64)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return out };
    for entry in dir.flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u64>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = stat[open + 1..close].to_owned();
        // Fields after the comm start at field 3 (state); utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        out.insert(tid, (comm, (ticks(11) + ticks(12)) as f64 / USER_HZ));
    }
    out
}

/// CPU seconds used between two [`thread_cpu`] snapshots, by thread name.
fn cpu_by_name(before: &BTreeMap<u64, (String, f64)>, after: &BTreeMap<u64, (String, f64)>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (tid, (comm, secs)) in after {
        let earlier = before.get(tid).map_or(0.0, |(_, s)| *s);
        *out.entry(comm.clone()).or_insert(0.0) += secs - earlier;
    }
    out.retain(|_, s| *s > 0.0);
    out
}

// ---------------------------------------------------------------------------------------------
// One load run

#[derive(Default)]
struct TerminalReport {
    /// Latencies (ns) of bootstraps completed inside the window.
    latencies: Vec<u64>,
    failures: BTreeMap<String, u64>,
    warmup: u64,
    after_window: u64,
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

async fn run_terminal(mut terminal: Terminal, addr: SocketAddr, window: Window) -> TerminalReport {
    let mut http = HttpClient::plain(addr.to_string()).with_timeout(REQUEST_TIMEOUT);
    let mut report = TerminalReport::default();
    loop {
        let start = Instant::now();
        if start >= window.end {
            break;
        }
        let result = terminal.bootstrap(&mut http).await;
        let done = Instant::now();
        let counted = done >= window.start && done < window.end;
        match result {
            Ok(()) if counted => report.latencies.push(u64::try_from((done - start).as_nanos()).unwrap_or(u64::MAX)),
            Ok(()) if done < window.start => report.warmup += 1,
            Ok(()) => report.after_window += 1,
            Err(fail) => {
                if counted {
                    *report.failures.entry(fail.key()).or_insert(0) += 1;
                }
                tokio::time::sleep(FAILURE_PAUSE).await;
            }
        }
    }
    report
}

struct RunResult {
    store: &'static str,
    terminals: usize,
    subscribers: usize,
    window: Duration,
    latencies: Vec<u64>,
    failures: BTreeMap<String, u64>,
    warmup: u64,
    after_window: u64,
    aborted: usize,
    store_ops: OpSnapshot,
    cpu: BTreeMap<String, f64>,
}

impl RunResult {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.window.as_secs_f64()
    }

    fn failure_count(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// Nearest-rank percentile of sorted nanoseconds, in milliseconds.
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e6
}

/// Named counts for printing.
type Counts = Vec<(&'static str, u64)>;

/// BSF counters and failures by cause between two snapshots (failures only when non-zero).
fn metrics_delta(after: &BsfMetrics, before: &BsfMetrics) -> (Counts, Counts) {
    let counters = vec![
        ("challenges", after.challenges - before.challenges),
        ("challenges_unknown_impi", after.challenges_unknown_impi - before.challenges_unknown_impi),
        ("bootstraps_gba_me", after.bootstraps_gba_me - before.bootstraps_gba_me),
        ("bootstraps_gba_u", after.bootstraps_gba_u - before.bootstraps_gba_u),
        ("resyncs", after.resyncs - before.resyncs),
    ];
    let failures = FailureCause::ALL
        .iter()
        .map(|c| (c.as_str(), after.failures(*c) - before.failures(*c)))
        .filter(|(_, n)| *n > 0)
        .collect();
    (counters, failures)
}

/// Starts the BSF on `store`, runs `terminals` terminals on `clients`, stops the BSF.
async fn load_run<S: BsfStore + Send + Sync + 'static>(
    name: &'static str,
    store: Arc<Timed<S>>,
    subs: &[Subscriber],
    terminals: usize,
    options: &Options,
    clients: &Handle,
) -> Result<RunResult, Box<dyn Error>> {
    let state = Arc::new(BsfState::new(Bsf::new(bsf_config())?, store.clone(), ZnAuth::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, app(state.clone()), None, async {
        let _ = stopped.await;
    }));

    let now = Instant::now();
    let window = Window { start: now + options.warmup, end: now + options.warmup + options.duration };
    let tasks: Vec<_> = (0..terminals)
        .map(|i| {
            let terminal = Terminal::new(i as u64, &subs[i % subs.len()]);
            clients.spawn(run_terminal(terminal, addr, window))
        })
        .collect();

    tokio::time::sleep_until(window.start.into()).await;
    let (ops_before, cpu_before) = (store.snapshot(), thread_cpu());
    let bsf_before = state.core_metrics().await;
    tokio::time::sleep_until(window.end.into()).await;
    let (ops_after, cpu_after) = (store.snapshot(), thread_cpu());

    let mut result = RunResult {
        store: name,
        terminals,
        subscribers: subs.len(),
        window: options.duration,
        latencies: Vec::new(),
        failures: BTreeMap::new(),
        warmup: 0,
        after_window: 0,
        aborted: 0,
        store_ops: ops_after.since(&ops_before),
        cpu: cpu_by_name(&cpu_before, &cpu_after),
    };
    let deadline = tokio::time::Instant::from_std(window.end + STRAGGLER_GRACE);
    for task in tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(report)) => {
                result.latencies.extend(report.latencies);
                for (k, n) in report.failures {
                    *result.failures.entry(k).or_insert(0) += n;
                }
                result.warmup += report.warmup;
                result.after_window += report.after_window;
            }
            Ok(Err(e)) => return Err(format!("terminal task failed: {e}").into()),
            Err(_) => {
                abort.abort();
                result.aborted += 1;
            }
        }
    }
    let bsf_after = state.core_metrics().await;
    let (counters, failures) = metrics_delta(&bsf_after, &bsf_before);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), server).await.map_err(|_| "BSF did not stop")??;
    result.latencies.sort_unstable();
    print_run(&result, &counters, &failures, options);
    Ok(result)
}

fn print_run(r: &RunResult, counters: &[(&str, u64)], failures: &[(&str, u64)], options: &Options) {
    let n = r.latencies.len() as u64;
    println!(
        "\n== {} · {} terminals · {} subscribers · {:.0} s window ({} warm-up, {} after the window, {} aborted)",
        r.store,
        r.terminals,
        r.subscribers,
        r.window.as_secs_f64(),
        r.warmup,
        r.after_window,
        r.aborted
    );
    println!(
        "   {:.1} bootstraps/s · p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms · {} failures",
        r.rate(),
        percentile_ms(&r.latencies, 0.50),
        percentile_ms(&r.latencies, 0.99),
        percentile_ms(&r.latencies, 1.0),
        r.failure_count()
    );
    for (k, v) in &r.failures {
        println!("   failure: {k}: {v}");
    }
    let c: Vec<String> = counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let f: Vec<String> = failures.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "   BSF counters (window + drain): {}; failures: {}",
        c.join(" "),
        if f.is_empty() { "none".to_owned() } else { f.join(" ") }
    );
    let ops = &r.store_ops;
    let window = r.window.as_secs_f64();
    let per_op: Vec<String> = (0..5)
        .filter(|&i| ops.count[i] > 0)
        .map(|i| format!("{} {:.0} µs", OP_NAMES[i], ops.nanos[i] as f64 / ops.count[i] as f64 / 1e3))
        .collect();
    let per_bootstrap = if n > 0 { ops.total_nanos() as f64 / n as f64 / 1e3 } else { f64::NAN };
    println!(
        "   store: {:.0} µs waited per bootstrap, {:.1} calls in flight on average; mean wait per call: {}",
        per_bootstrap,
        ops.total_nanos() as f64 / 1e9 / window,
        per_op.join(", ")
    );
    let total: f64 = r.cpu.values().sum();
    let threads: Vec<String> = r.cpu.iter().map(|(k, v)| format!("{k} {:.0}%", v / window * 100.0)).collect();
    println!(
        "   CPU: {:.0}% of {} cores ({}); {:.0} µs CPU per bootstrap",
        total / window / options.threads.max(1) as f64 * 100.0,
        std::thread::available_parallelism().map_or(0, usize::from),
        threads.join(", "),
        if n > 0 { total / n as f64 * 1e6 } else { f64::NAN }
    );
}

// ---------------------------------------------------------------------------------------------
// Breakdown: one bootstrap at a time through the core, no HTTP

/// Runs `iterations` bootstraps one after the other straight through [`Bsf::handle_ub`].
async fn serial_breakdown<S: BsfStore + Sync>(name: &str, store: &Timed<S>, subs: &[Subscriber]) {
    let bsf = Bsf::new(bsf_config()).expect("valid configuration");
    let mut rng = OsRandom;
    let mut terminals: Vec<Terminal> = subs.iter().enumerate().map(|(i, s)| Terminal::new(i as u64, s)).collect();
    let ops_before = store.snapshot();
    let mut terminal_ns = Duration::ZERO;
    let mut failures = 0u64;
    let start = Instant::now();
    for i in 0..BREAKDOWN_ITERATIONS {
        let terminal = &mut terminals[i % subs.len()];
        let request = |authorization| UbRequest {
            method: "GET",
            uri: "/",
            authorization: Some(authorization),
            user_agent: Some(USER_AGENT),
            body: b"",
        };
        let initial = terminal.initial.clone();
        let first = bsf.handle_ub(store, &request(&initial), unix_now(), &mut rng).await;
        let t = Instant::now();
        let answered = terminal.on_challenge(first.status, first.header("WWW-Authenticate"));
        terminal_ns += t.elapsed();
        let Ok((authorization, answer)) = answered else {
            failures += 1;
            continue;
        };
        let second = bsf.handle_ub(store, &request(&authorization), unix_now(), &mut rng).await;
        let t = Instant::now();
        let done =
            Terminal::on_result(answer, second.status, second.header("Authentication-Info"), &second.body, unix_now());
        terminal_ns += t.elapsed();
        if done.is_err() {
            failures += 1;
        }
    }
    let total = start.elapsed();
    let ops = store.snapshot().since(&ops_before);
    let n = BREAKDOWN_ITERATIONS as f64;
    let per = |d: f64| d / n / 1e3;
    let store_us = per(ops.total_nanos() as f64);
    let terminal_us = per(terminal_ns.as_nanos() as f64);
    let total_us = per(total.as_nanos() as f64);
    let core_us = total_us - store_us - terminal_us;
    let per_op: Vec<String> = (0..5)
        .filter(|&i| ops.count[i] > 0)
        .map(|i| format!("{} {:.1}", OP_NAMES[i], ops.nanos[i] as f64 / ops.count[i] as f64 / 1e3))
        .collect();
    println!(
        "{name:<9} {total_us:>9.1} {core_us:>9.1} {store_us:>9.1} {terminal_us:>9.1} {:>11.0}  {failures}  [{}]",
        1e6 / (core_us + store_us),
        per_op.join(", ")
    );
}

/// Mean time of `write(4 KiB)` + `fdatasync` in `dir`.
fn fsync_latency(dir: &Path, rounds: usize) -> std::io::Result<Duration> {
    let path = dir.join(format!("keycast-fsync-probe-{}", std::process::id()));
    let mut file = File::create(&path)?;
    let block = [0x5au8; 4096];
    let start = Instant::now();
    for _ in 0..rounds {
        file.write_all(&block)?;
        file.sync_data()?;
    }
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(elapsed / rounds as u32)
}

// ---------------------------------------------------------------------------------------------
// Stores

fn storage_key() -> StorageKey {
    StorageKey::from_bytes([0x5a; 16])
}

async fn add_all<S: BsfStore>(store: &S, subs: &[Subscriber]) -> Result<(), StoreError> {
    for s in subs {
        store.add_subscriber(s).await?;
    }
    Ok(())
}

/// A fresh PostgreSQL schema for one run, dropped by [`PgSchema::drop_schema`].
struct PgSchema {
    url: String,
    name: String,
}

static SCHEMA_COUNTER: AtomicU64 = AtomicU64::new(0);

impl PgSchema {
    async fn create(url: &str) -> Result<Self, Box<dyn Error>> {
        let name = format!("keycast_bench_{}_{}", std::process::id(), SCHEMA_COUNTER.fetch_add(1, Ordering::Relaxed));
        let admin = PgPool::connect(url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}"))).execute(&admin).await?;
        admin.close().await;
        Ok(PgSchema { url: url.to_owned(), name })
    }

    async fn open(&self) -> Result<PgStore, Box<dyn Error>> {
        let options = PgConnectOptions::from_str(&self.url)?.options([("search_path", self.name.as_str())]);
        Ok(PgStore::connect_with(options, storage_key()).await?)
    }

    async fn drop_schema(self) -> Result<(), Box<dyn Error>> {
        let admin = PgPool::connect(&self.url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", self.name))).execute(&admin).await?;
        admin.close().await;
        Ok(())
    }
}

/// One load run of `kind` with `terminals` terminals, on a fresh store.
async fn run_store(
    kind: StoreKind,
    terminals: usize,
    options: &Options,
    clients: &Handle,
) -> Result<RunResult, Box<dyn Error>> {
    let subs = subscribers(options.subscribers.unwrap_or(terminals));
    match kind {
        StoreKind::Memory => {
            let store = Arc::new(Timed::new(MemoryStore::new()));
            add_all(&*store, &subs).await?;
            load_run(kind.name(), store, &subs, terminals, options, clients).await
        }
        StoreKind::Sqlite => {
            let dir = tempfile::Builder::new().prefix("keycast-bench-").tempdir_in(&options.sqlite_dir)?;
            let store = Arc::new(Timed::new(SqliteStore::open(dir.path().join("bsf.db"), storage_key()).await?));
            add_all(&*store, &subs).await?;
            let result = load_run(kind.name(), store.clone(), &subs, terminals, options, clients).await;
            store.inner.close().await;
            result
        }
        StoreKind::Postgres => {
            let url = options.postgres_url.as_deref().ok_or("no PostgreSQL URL")?;
            let schema = PgSchema::create(url).await?;
            let result = async {
                let store = Arc::new(Timed::new(schema.open().await?));
                add_all(&*store, &subs).await?;
                let result = load_run(kind.name(), store.clone(), &subs, terminals, options, clients).await;
                store.inner.close().await;
                result
            }
            .await;
            schema.drop_schema().await?;
            result
        }
    }
}

async fn breakdown(options: &Options) -> Result<(), Box<dyn Error>> {
    let subs = subscribers(64);
    println!(
        "\nBreakdown: {BREAKDOWN_ITERATIONS} bootstraps one at a time through Bsf::handle_ub (no HTTP, no \
         concurrency), µs per bootstrap"
    );
    println!(
        "{:<9} {:>9} {:>9} {:>9} {:>9} {:>11}  fail  [store µs per call]",
        "store", "total", "core", "store", "terminal", "ceiling/s"
    );
    for kind in &options.stores {
        match kind {
            StoreKind::Memory => {
                let store = Timed::new(MemoryStore::new());
                add_all(&store, &subs).await?;
                serial_breakdown("memory", &store, &subs).await;
            }
            StoreKind::Sqlite => {
                let dir = tempfile::Builder::new().prefix("keycast-bench-").tempdir_in(&options.sqlite_dir)?;
                let store = Timed::new(SqliteStore::open(dir.path().join("bsf.db"), storage_key()).await?);
                add_all(&store, &subs).await?;
                serial_breakdown("sqlite", &store, &subs).await;
                store.inner.close().await;
            }
            StoreKind::Postgres => {
                let url = options.postgres_url.as_deref().ok_or("no PostgreSQL URL")?;
                let schema = PgSchema::create(url).await?;
                let store = Timed::new(schema.open().await?);
                add_all(&store, &subs).await?;
                serial_breakdown("postgres", &store, &subs).await;
                store.inner.close().await;
                schema.drop_schema().await?;
            }
        }
    }
    println!("(ceiling/s = 1 / (core + store): one terminal at a time; concurrency overlaps the store's waits)");
    match fsync_latency(&options.sqlite_dir, 200) {
        Ok(d) => println!("fdatasync of 4 KiB in {}: {:.0} µs", options.sqlite_dir.display(), d.as_secs_f64() * 1e6),
        Err(e) => println!("fdatasync probe in {} failed: {e}", options.sqlite_dir.display()),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

fn runtime(name: &str, threads: usize) -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).thread_name(name).enable_all().build()
}

fn run(options: &Options) -> Result<(), Box<dyn Error>> {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let server = runtime("bsf-rt", options.threads)?;
    let client = if options.shared_runtime { None } else { Some(runtime("terminal-rt", options.threads)?) };
    let clients = client.as_ref().map_or_else(|| server.handle().clone(), |rt| rt.handle().clone());
    println!(
        "keycast BSF bootstrap load: {cores} cores shared by the BSF and the terminals ({}, {} worker threads each); \
         loopback plain HTTP; GBA_ME software terminals",
        if options.shared_runtime { "one runtime" } else { "separate runtimes" },
        options.threads
    );
    let mut results = Vec::new();
    for &kind in &options.stores {
        for &terminals in &options.terminals {
            results.push(server.block_on(run_store(kind, terminals, options, &clients))?);
        }
    }
    println!("\n| store | terminals | bootstraps/s | p50 ms | p99 ms | max ms | failures |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            r.store,
            r.terminals,
            r.rate(),
            percentile_ms(&r.latencies, 0.50),
            percentile_ms(&r.latencies, 0.99),
            percentile_ms(&r.latencies, 1.0),
            r.failure_count()
        );
    }
    if options.breakdown {
        server.block_on(breakdown(options))?;
    }
    if let Some(rt) = client {
        rt.shutdown_timeout(Duration::from_secs(5));
    }
    server.shutdown_timeout(Duration::from_secs(5));
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
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootstrap_load: {e}");
            ExitCode::FAILURE
        }
    }
}
