//! `keycast bench rollover --subscribers N`: the SEK rollover of issue 5 at scale, through the
//! BSM's own code. N registered subscribers of a streaming service are imported (timed apart),
//! the service's next SEK is made with its campaign ([`keycast_bsm::campaign`]) and the campaign
//! runs to its end: one delivery row per subscriber persisted, page by page, as `serve bsm` does.
//! Then every subscriber's delivery LTKM is built and sealed (the cost the push worker pays when
//! each row falls due). Printed: seconds per phase, rows per second, and the peak resident memory
//! of the process (`VmHWM`).
//!
//! What is synthetic: each subscriber's SMK is HMAC-SHA-256 of a fixed seed and its index (a GBA
//! derivation needs a BSF run per subscriber, measured by keycast-gba's bench), and every LTKM
//! carries TS 1.
//!
//! Stores: SQLite in a temporary directory (WAL, `synchronous=FULL`, as the service runs it), or
//! PostgreSQL (`--postgres URL`), in a schema of its own that is dropped afterwards.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use keycast_bsm::campaign::CampaignRunner;
use keycast_bsm::delivery::{PushAddress, RegistrationInterface};
use keycast_bsm::domain::{
    KeyEntry, Purchase, PurchaseData, PurchaseItem, PurchaseKind, Service, ServiceId, TerminalId, Window,
};
use keycast_bsm::issue::{LtkmCounter, LtkmKind, SekPekRecord, StreamingPolicy, TerminalKeys, delivery_ltkm};
use keycast_bsm::rng::SeededRandom;
use keycast_bsm::service::{Provisioning, ProvisioningConfig, PushIntent};
use keycast_bsm::store::sql::{PgStore, SqliteStore};
use keycast_bsm::store::{BsmStore, Interface, Registration, StoredKey, TerminalImport};
use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::hmac::hmac_sha256;
use keycast_crypto::keys::{SekPek, Smk};
use keycast_mikey::{KeyDomainId, LtkmExt, SecurityPolicy, SecurityPolicyExt, SekPekId};
use keycast_provisioning::sprov::Price;

const FQDN: &str = "bmsc.bench.keycast.example";
const SEED: &[u8] = b"keycast bench rollover: synthetic SMKs";
const DAY: u64 = 86_400;
/// Subscribers per import call.
const IMPORT_BATCH: usize = 20_000;

/// `keycast bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub what: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// A SEK rollover for N registered subscribers: campaign rows persisted and LTKMs built.
    Rollover {
        /// Subscribers.
        #[arg(long, default_value_t = 1_000_000)]
        subscribers: u32,
        /// A PostgreSQL URL (a schema of its own is made and dropped); SQLite in a temporary
        /// directory without it.
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
        /// Terminals per campaign page.
        #[arg(long, default_value_t = keycast_bsm::campaign::DEFAULT_PAGE)]
        page: u32,
    },
}

/// Runs `keycast bench …`.
///
/// # Errors
/// Store and runtime failures.
pub fn run_bench(args: &BenchArgs) -> Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match &args.what {
        BenchCommand::Rollover { subscribers, postgres, page } => {
            runtime.block_on(rollover_bench(*subscribers, postgres.as_deref(), *page))?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn rollover_bench(n: u32, postgres: Option<&str>, page: u32) -> Result<()> {
    if n == 0 {
        bail!("--subscribers must be at least 1");
    }
    let key = StorageKey::from_bytes([0x5a; 16]);
    match postgres {
        None => {
            let dir = tempfile::tempdir().context("temporary directory")?;
            let store = SqliteStore::open(dir.path().join("bsm.db"), key).await.map_err(|e| anyhow!("{e}"))?;
            let figures = rollover(&store, n, page).await?;
            store.close().await;
            report("sqlite", n, &figures);
        }
        Some(url) => {
            let schema = format!("keycast_bench_{}", std::process::id());
            let admin = sqlx::PgPool::connect(url).await.context("connecting to PostgreSQL")?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await?;
            let options = url.parse::<sqlx::postgres::PgConnectOptions>()?.options([("search_path", &schema)]);
            let result = async {
                let store = PgStore::connect_with(options, key).await.map_err(|e| anyhow!("{e}"))?;
                let figures = rollover(&store, n, page).await;
                store.close().await;
                figures
            }
            .await;
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&admin).await?;
            report("postgres", n, &result?);
        }
    }
    Ok(())
}

struct Figures {
    import: Duration,
    campaign: Duration,
    build: Duration,
    queued: u64,
    ltkm_bytes: usize,
}

fn report(store: &str, n: u32, f: &Figures) {
    let rollover = f.campaign + f.build;
    println!(
        "rollover {store}: {n} subscribers — {:.2} s (campaign: {} rows persisted in {:.2} s, {:.0} rows/s; \
         LTKMs built: {} bytes in {:.2} s); import {:.2} s apart; peak memory (VmHWM) {}",
        rollover.as_secs_f64(),
        f.queued,
        f.campaign.as_secs_f64(),
        f.queued as f64 / f.campaign.as_secs_f64(),
        f.ltkm_bytes,
        f.build.as_secs_f64(),
        f.import.as_secs_f64(),
        vm_hwm()
    );
}

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l["VmHWM:".len()..].trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}

fn impi(i: u32) -> String {
    format!("00101{i:010}@ims.mnc001.mcc001.3gppnetwork.org")
}

fn sek(id: SekPekId, window: Window, byte: u8) -> StoredKey {
    StoredKey {
        entry: KeyEntry { id, window, revoked_at: None },
        key_domain: KeyDomainId([0x00, 0xf1, 0x10]),
        key: SekPek::from_bytes([byte; 16]),
        rand: [byte ^ 0xa5; 16],
        csb_id: 0x0c5b_0000 | u32::from(byte),
    }
}

async fn rollover<S: BsmStore + Clone + Send + Sync + 'static>(store: &S, n: u32, page: u32) -> Result<Figures> {
    let now = crate::bsf_cmd::unix_now();
    let e = |e: keycast_bsm::store::StoreError| anyhow!("{e}");
    let kd = KeyDomainId([0x00, 0xf1, 0x10]);
    store
        .put_service(&Service {
            id: ServiceId("news".into()),
            name: "News".into(),
            key_domain: kd,
            key_group: 1,
            streaming: true,
        })
        .await
        .map_err(e)?;
    let item =
        PurchaseItem { global_id: "basic".into(), name: "Basic".into(), services: vec![ServiceId("news".into())] };
    store.put_purchase_item(&item).await.map_err(e)?;
    let offer = PurchaseData {
        id: "basic-month".into(),
        item: "basic".into(),
        price: Price { amount: "4.99".into(), currency: "EUR".into() },
        kind: PurchaseKind::Subscription,
        period: 30 * DAY,
        play_backs: 0,
    };
    store.put_purchase_data(&offer).await.map_err(e)?;
    let current = Window { from: now - DAY, until: now + DAY };
    store.add_key(&sek(SekPekId { key_group: 1, key_number: 1 }, current, 1)).await.map_err(e)?;

    let t = Instant::now();
    let subscription = Window { from: now - DAY, until: now + 60 * DAY };
    for start in (0..n).step_by(IMPORT_BATCH) {
        let end = n.min(start.saturating_add(IMPORT_BATCH as u32));
        let batch: Vec<TerminalImport> = (start..end)
            .map(|i| TerminalImport {
                id: TerminalId(impi(i)),
                registration: Some(Registration {
                    address: std::net::Ipv4Addr::from(0x0a00_0000 | i).to_string(),
                    interface: Interface::OmaBcast,
                    at: now,
                }),
                purchases: vec![Purchase {
                    terminal: TerminalId(impi(i)),
                    item: "basic".into(),
                    purchase_data: "basic-month".into(),
                    kind: PurchaseKind::Subscription,
                    window: subscription,
                }],
            })
            .collect();
        store.import_terminals(&batch).await.map_err(e)?;
    }
    let import = t.elapsed();

    // The rollover: the next SEK with its campaign, run to its end.
    let t = Instant::now();
    let next = sek(SekPekId { key_group: 1, key_number: 2 }, Window { from: current.until, until: now + 31 * DAY }, 2);
    store.add_key_campaign(&next, Duration::from_secs(600), now).await.map_err(e)?;
    let runner =
        CampaignRunner::new(Provisioning::new(store.clone(), ProvisioningConfig::new(FQDN)), SeededRandom::new(1))
            .with_page(page);
    let done = runner.run_open(now, |_| {}).await.map_err(|e| anyhow!("{e}"))?;
    let campaign = t.elapsed();
    let queued = done.iter().map(|c| c.queued).sum();
    if queued != u64::from(n) {
        bail!("the campaign queued {queued} deliveries for {n} subscribers");
    }

    // Every subscriber's LTKM, as the push worker seals it, on both cores.
    let t = Instant::now();
    let policy =
        SecurityPolicyExt { policy: SecurityPolicy::UnlimitedWithinWindow, play_back_counter: 0, view_counter: 0 };
    let intent = PushIntent {
        terminal: TerminalId(String::new()),
        key_domain_id: kd,
        sek_pek_id: next.entry.id,
        kind: LtkmKind::Invalidate,
        ext: Some(LtkmExt { security_policy: Some(policy), tbk_id: None, consumption_reporting: false }),
        streaming: Some(StreamingPolicy::keycast(None)),
        to: PushAddress { ip: std::net::Ipv4Addr::LOCALHOST.into(), interface: RegistrationInterface::OmaBcast },
    };
    let record = intent.record(&next).map_err(|e| anyhow!("{e}"))?;
    let half = n / 2;
    let ltkm_bytes = std::thread::scope(|s| {
        let first = s.spawn(|| build(&record, 0..half));
        let second = build(&record, half..n);
        Ok::<_, anyhow::Error>(first.join().map_err(|_| anyhow!("LTKM builder thread panicked"))?? + second?)
    })?;
    Ok(Figures { import, campaign, build: t.elapsed(), queued, ltkm_bytes })
}

/// Seals the delivery LTKM of subscribers `range`; returns the bytes built.
fn build(record: &SekPekRecord, range: std::ops::Range<u32>) -> Result<usize> {
    let mut bytes = 0;
    for i in range {
        let btid = format!("btid-{i}@bsf.bench.keycast.example");
        let smk = Smk::from_bytes(hmac_sha256(SEED, &[&i.to_be_bytes()]));
        let terminal = TerminalKeys { btid: btid.clone(), smk, bsm_fqdn: FQDN.to_owned() };
        let ts = LtkmCounter::new(btid.as_str()).reserve(&btid).persisted();
        bytes += std::hint::black_box(delivery_ltkm(record, &terminal, &ts).map_err(|e| anyhow!("{e}"))?).len();
    }
    Ok(bytes)
}
