//! SEK rollover at scale (issue 5): a new SEK for one key group, the delivery LTKM of every
//! subscriber built and one delivery row per subscriber persisted with
//! [`BsmStore::enqueue_deliveries`] (one all-or-nothing transaction). Goals for 1 000 000
//! subscribers: SQLite < 30 s, PostgreSQL < 60 s.
//!
//! ```text
//! cargo bench -p keycast-bsm --bench rollover -- [--subscribers N] [--store sqlite|postgres]
//! ```
//! PostgreSQL runs in a fresh schema (dropped afterwards) of the database named by
//! `KEYCAST_BENCH_POSTGRES_URL`, else `KEYCAST_TEST_POSTGRES_URL`. SQLite uses a file in a
//! temporary directory (WAL, `synchronous=FULL`, as the service runs it).
//!
//! What is synthetic: each subscriber's SMK is HMAC-SHA-256(seed, index) rather than a GBA
//! derivation from a bootstrapping (that needs a BSF run per subscriber and is measured
//! elsewhere), and each LTKM carries TS 1 from a fresh in-memory counter: in service the TS is
//! reserved by [`BsmStore::record_send`] when the LTKM actually leaves, so the rollover itself
//! only needs the rows. The LTKMs are built (and thrown away) to measure the issuing cost the
//! rollover has when it checks every terminal's message before queueing.
//!
//! Printed: seconds for building, persisting and in all, rows per second, and the peak resident
//! memory of the process (`VmHWM` from `/proc/self/status`).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use keycast_bsm::delivery::{
    Delivery, DeliveryKey, DeliveryRow, DeliveryState, PushAddress, RegistrationInterface, Time,
};
use keycast_bsm::domain::{KeyEntry, Window};
use keycast_bsm::issue::{LtkmCounter, SekPekRecord, StreamingPolicy, TerminalKeys, delivery_ltkm};
use keycast_bsm::store::sql::{PgStore, SqliteStore};
use keycast_bsm::store::{BsmStore, StoredKey};
use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::hmac::hmac_sha256;
use keycast_crypto::keys::{SekPek, Smk};
use keycast_mikey::{KeyDomainId, KeyValidity, SekPekId};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool};

const FQDN: &str = "bsm.keycast.example";
const SEED: &[u8] = b"keycast rollover bench: synthetic SMKs";
/// Unix seconds somewhere in 2027.
const NOW: u64 = 1_800_000_000;
/// The campaign's spread window: due times go from now to now + 600 s.
const SPREAD: Duration = Duration::from_secs(600);

struct Args {
    subscribers: u32,
    postgres: bool,
}

fn args() -> Result<Args, String> {
    let mut out = Args { subscribers: 1_000_000, postgres: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--subscribers" => {
                let n = it.next().ok_or("--subscribers needs a number")?;
                out.subscribers = n.parse().map_err(|_| format!("--subscribers {n}: not a number"))?;
            }
            "--store" => match it.next().as_deref() {
                Some("sqlite") => out.postgres = false,
                Some("postgres") => out.postgres = true,
                other => return Err(format!("--store {other:?}: sqlite or postgres")),
            },
            // `cargo bench` passes `--bench`; filters and other harness flags mean nothing here.
            _ => {}
        }
    }
    Ok(out)
}

/// The new SEK: key group 1, Key Number 2, a TEK ID window, streaming (SP payload in every LTKM).
fn new_sek() -> (StoredKey, SekPekRecord) {
    let key_domain = KeyDomainId([0x00, 0xf1, 0x10]);
    let id = SekPekId { key_group: 1, key_number: 2 };
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("OS randomness");
    let mut rand = [0u8; 16];
    getrandom::fill(&mut rand).expect("OS randomness");
    let stored = StoredKey {
        entry: KeyEntry { id, window: Window::new(NOW, NOW + 30 * 86_400).expect("non-empty"), revoked_at: None },
        key_domain,
        key: SekPek::from_bytes(bytes),
        rand,
        csb_id: 0x0c5b_0001,
    };
    let record = SekPekRecord {
        key_domain_id: key_domain,
        sek_pek_id: id,
        key: SekPek::from_bytes(bytes),
        rand,
        csb_id: stored.csb_id,
        validity: KeyValidity::TekIdWindow { seq_l: 0, seq_u: 30_000 },
        ext: None,
        streaming: Some(StreamingPolicy::keycast(None)),
    };
    (stored, record)
}

/// Builds the LTKMs and delivery rows of subscribers `range`; returns the rows and the LTKM bytes.
fn build(record: &SekPekRecord, range: std::ops::Range<u32>, n: u32) -> (Vec<DeliveryRow>, usize) {
    let start = Time::from_secs(NOW);
    let spread = u128::from(SPREAD.as_micros() as u64);
    let mut rows = Vec::with_capacity(range.len());
    let mut bytes = 0;
    for i in range {
        let btid = format!("btid-{i}@bsf.keycast.example");
        let smk = Smk::from_bytes(hmac_sha256(SEED, &[&i.to_be_bytes()]));
        let terminal = TerminalKeys { btid: btid.clone(), smk, bsm_fqdn: FQDN.to_owned() };
        let ts = LtkmCounter::new(btid.as_str()).reserve(&btid).persisted();
        bytes += black_box(delivery_ltkm(record, &terminal, &ts).expect("valid record")).len();
        let offset = u64::try_from(spread * u128::from(i) / u128::from(n)).unwrap_or(u64::MAX);
        rows.push(DeliveryRow {
            delivery: Delivery {
                key: DeliveryKey {
                    terminal: format!("00101{i:010}@ims.mnc001.mcc001.3gppnetwork.org"),
                    key_domain_id: record.key_domain_id,
                    sek_pek_id: record.sek_pek_id,
                    version: 1,
                },
                kind: record.delivery(),
                to: PushAddress {
                    ip: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)),
                    interface: RegistrationInterface::OmaBcast,
                },
            },
            state: DeliveryState::Pending,
            due: Some(Time::from_micros(start.as_micros() + offset)),
            sent: Vec::new(),
        });
    }
    (rows, bytes)
}

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l["VmHWM:".len()..].trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}

/// Runs the rollover on `store`; returns (build seconds, persist seconds).
async fn rollover<S: BsmStore>(store: &S, n: u32) -> (f64, f64) {
    let (stored, record) = new_sek();
    store.add_key(&stored).await.expect("new SEK stored");
    let t = Instant::now();
    // Two halves on two threads (the machine has two cores).
    let half = n / 2;
    let (mut rows, bytes) = std::thread::scope(|s| {
        let first = s.spawn(|| build(&record, 0..half, n));
        let (second, b2) = build(&record, half..n, n);
        let (mut rows, b1) = first.join().expect("builder thread");
        rows.extend(second);
        (rows, b1 + b2)
    });
    let built = t.elapsed().as_secs_f64();
    println!("built {n} LTKMs ({bytes} bytes) and rows in {built:.2} s");
    let t = Instant::now();
    let stored_rows = store.enqueue_deliveries(&rows).await.expect("rows persisted");
    let persisted = t.elapsed().as_secs_f64();
    assert_eq!(stored_rows, u64::from(n));
    rows.clear();
    (built, persisted)
}

fn report(store: &str, n: u32, (built, persisted): (f64, f64)) {
    let total = built + persisted;
    println!(
        "rollover {store}: {n} subscribers in {total:.2} s (build {built:.2} s, persist {persisted:.2} s), \
         {:.0} rows/s overall, {:.0} rows/s persisting; peak memory (VmHWM) {}",
        f64::from(n) / total,
        f64::from(n) / persisted,
        vm_hwm()
    );
}

async fn run(args: Args) -> Result<(), String> {
    let key = StorageKey::from_bytes([0x5a; 16]);
    if args.postgres {
        let url = std::env::var("KEYCAST_BENCH_POSTGRES_URL")
            .or_else(|_| std::env::var("KEYCAST_TEST_POSTGRES_URL"))
            .map_err(|_| "set KEYCAST_BENCH_POSTGRES_URL (or KEYCAST_TEST_POSTGRES_URL)".to_owned())?;
        let schema = format!("keycast_rollover_{}", std::process::id());
        let admin = PgPool::connect(&url).await.map_err(|e| e.to_string())?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .map_err(|e| e.to_string())?;
        let options = PgConnectOptions::from_str(&url).map_err(|e| e.to_string())?.options([("search_path", &schema)]);
        let store = PgStore::connect_with(options, key).await.map_err(|e| e.to_string())?;
        let figures = rollover(&store, args.subscribers).await;
        let count: i64 = sqlx::query("SELECT count(*) AS n FROM deliveries")
            .fetch_one(store.pool())
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(|e| e.to_string())?;
        assert_eq!(count, i64::from(args.subscribers));
        store.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&admin)
            .await
            .map_err(|e| e.to_string())?;
        report("postgres", args.subscribers, figures);
    } else {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let store = SqliteStore::open(dir.path().join("bsm.db"), key).await.map_err(|e| e.to_string())?;
        let figures = rollover(&store, args.subscribers).await;
        let count: i64 = sqlx::query("SELECT count(*) AS n FROM deliveries")
            .fetch_one(store.pool())
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(|e| e.to_string())?;
        assert_eq!(count, i64::from(args.subscribers));
        store.close().await;
        report("sqlite", args.subscribers, figures);
    }
    Ok(())
}

fn main() {
    let result = args().and_then(|args| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(run(args))
    });
    if let Err(e) = result {
        eprintln!("rollover: {e}");
        std::process::exit(2);
    }
}
