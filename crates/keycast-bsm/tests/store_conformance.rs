//! The `BsmStore` conformance suite, written once and run on `SqliteStore` (a file in a temporary
//! directory) and `PgStore` (a fresh schema per test in the database named by
//! `KEYCAST_TEST_POSTGRES_URL`; without it those tests print that they were skipped and pass).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use keycast_bsm::domain::{
    KeyEntry, KeyGroup, Program, ProgramId, Purchase, PurchaseData, PurchaseItem, PurchaseKind, Service, ServiceId,
    TerminalId, Window,
};
use keycast_bsm::store::sql::{PgStore, SqliteStore};
use keycast_bsm::store::{BsmStore, Interface, Registration, StoreError, StoredKey};
use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::keys::SekPek;
use keycast_mikey::{KeyDomainId, SekPekId};
use keycast_provisioning::sprov::Price;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool};

const PG_ENV: &str = "KEYCAST_TEST_POSTGRES_URL";
const T0: u64 = 1_767_225_600;
const DAY: u64 = 86_400;

fn storage_key() -> StorageKey {
    StorageKey::from_bytes([0x3c; 16])
}

fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

fn service(id: &str, group: u16) -> Service {
    Service { id: ServiceId(id.into()), name: format!("{id} TV"), key_domain: kd(), key_group: group, streaming: true }
}

fn stored_key(group: u16, number: u16, from: u64, until: u64, byte: u8) -> StoredKey {
    StoredKey {
        entry: KeyEntry {
            id: SekPekId { key_group: group, key_number: number },
            window: Window::new(from, until).unwrap(),
            revoked_at: None,
        },
        key_domain: kd(),
        key: SekPek::from_bytes([byte; 16]),
        rand: [byte ^ 0xff; 16],
        csb_id: 0x1000_0000 | u32::from(byte),
    }
}

fn terminal(n: u32) -> TerminalId {
    TerminalId(format!("00101000000000{n}@ims.example.org"))
}

async fn catalogue<S: BsmStore>(s: &S) {
    s.put_service(&service("news", 1)).await.unwrap();
    s.put_service(&service("sport", 2)).await.unwrap();
    let item = |id: &str, services: &[&str]| PurchaseItem {
        global_id: id.into(),
        name: id.into(),
        services: services.iter().map(|s| ServiceId((*s).into())).collect(),
    };
    s.put_purchase_item(&item("basic", &["news"])).await.unwrap();
    s.put_purchase_item(&item("all", &["sport", "news"])).await.unwrap();
    s.put_program(&Program {
        id: ProgramId("final".into()),
        service: ServiceId("sport".into()),
        key_group: 100,
        window: Window::new(T0 + DAY, T0 + DAY + 7200).unwrap(),
    })
    .await
    .unwrap();
    let offer = |id: &str, item: &str, kind| PurchaseData {
        id: id.into(),
        item: item.into(),
        price: Price { amount: "4.99".into(), currency: "EUR".into() },
        kind,
        period: 30 * DAY,
    };
    s.put_purchase_data(&offer("basic-month", "basic", PurchaseKind::Subscription)).await.unwrap();
    s.put_purchase_data(&offer("final-ppv", "all", PurchaseKind::PayPerView(ProgramId("final".into())))).await.unwrap();
    s.put_purchase_data(&offer("all-tokens", "all", PurchaseKind::Tokens(10))).await.unwrap();
}

mod suite {
    use super::*;

    pub async fn catalogue_round_trips_and_refuses_dangling_references<S: BsmStore>(s: Arc<S>) {
        catalogue(&*s).await;
        let services = s.services().await.unwrap();
        assert_eq!(services, [service("news", 1), service("sport", 2)]);
        let items = s.purchase_items().await.unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].global_id, "all");
        assert_eq!(items[0].services, [ServiceId("sport".into()), ServiceId("news".into())], "order kept");
        assert_eq!(s.programs().await.unwrap()[0].key_group, 100);
        let data = s.purchase_data().await.unwrap();
        assert_eq!(data.len(), 3);
        assert_eq!(data[0].kind, PurchaseKind::Tokens(10));
        assert_eq!(data[2].kind, PurchaseKind::PayPerView(ProgramId("final".into())));
        // Replacing.
        let mut news = service("news", 1);
        news.name = "News 24".into();
        s.put_service(&news).await.unwrap();
        assert_eq!(s.services().await.unwrap()[0].name, "News 24");
        s.put_purchase_item(&PurchaseItem { global_id: "all".into(), name: "All".into(), services: vec![] })
            .await
            .unwrap();
        assert!(s.purchase_items().await.unwrap()[0].services.is_empty(), "services replaced");
        // Dangling references.
        let orphan = PurchaseItem { global_id: "x".into(), name: "x".into(), services: vec![ServiceId("none".into())] };
        assert!(matches!(s.put_purchase_item(&orphan).await, Err(StoreError::Missing(_))));
        assert!(!s.purchase_items().await.unwrap().iter().any(|i| i.global_id == "x"), "nothing half-written");
        let mut program = s.programs().await.unwrap().remove(0);
        program.service = ServiceId("none".into());
        assert!(matches!(s.put_program(&program).await, Err(StoreError::Missing(_))));
        let offer = PurchaseData {
            id: "o".into(),
            item: "none".into(),
            price: Price { amount: "1".into(), currency: "EUR".into() },
            kind: PurchaseKind::PayPerTime,
            period: 1,
        };
        assert!(matches!(s.put_purchase_data(&offer).await, Err(StoreError::Missing(_))));
    }

    pub async fn keys_keep_their_history<S: BsmStore>(s: Arc<S>) {
        s.add_key(&stored_key(1, 1, T0, T0 + 30 * DAY, 1)).await.unwrap();
        s.add_key(&stored_key(1, 2, T0 + 30 * DAY, T0 + 60 * DAY, 2)).await.unwrap();
        s.add_key(&stored_key(2, 1, T0, T0 + 30 * DAY, 3)).await.unwrap();
        assert!(matches!(
            s.add_key(&stored_key(1, 3, T0 + 59 * DAY, T0 + 90 * DAY, 4)).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.add_key(&stored_key(1, 0, T0 + 60 * DAY, T0 + 90 * DAY, 4)).await,
            Err(StoreError::Conflict(_))
        ));
        let entries = s.key_entries(1).await.unwrap();
        let group = KeyGroup::with_keys(1, entries.clone()).unwrap();
        assert_eq!(group.keys().len(), 2);
        let k = s.key(SekPekId { key_group: 1, key_number: 2 }, T0 + 31 * DAY).await.unwrap().unwrap();
        assert_eq!(k, stored_key(1, 2, T0 + 30 * DAY, T0 + 60 * DAY, 2), "bytes, RAND and window come back");
        assert_eq!(s.key(SekPekId { key_group: 1, key_number: 9 }, T0).await, Ok(None));
        let covering = s.keys_covering(1, Window::new(T0 + 29 * DAY, T0 + 31 * DAY).unwrap()).await.unwrap();
        assert_eq!(covering.len(), 2);
        assert!(s.revoke_key(SekPekId { key_group: 1, key_number: 1 }, T0 + DAY).await.unwrap());
        assert!(!s.revoke_key(SekPekId { key_group: 1, key_number: 1 }, T0 + DAY).await.unwrap(), "already revoked");
        assert!(!s.revoke_key(SekPekId { key_group: 2, key_number: 1 }, T0 + 40 * DAY).await.unwrap(), "ended");
        let entries = s.key_entries(1).await.unwrap();
        assert_eq!(entries[0].revoked_at, Some(T0 + DAY), "revoked keys stay in the history");
        assert_eq!(s.keys_covering(1, Window::new(T0, T0 + 1).unwrap()).await.unwrap().len(), 1);
    }

    pub async fn terminals_register_and_deregister<S: BsmStore>(s: Arc<S>) {
        let t = terminal(1);
        assert_eq!(s.terminal(&t).await, Ok(None));
        assert!(!s.register(&t, &registration("127.0.0.1:4000", T0)).await.unwrap(), "unknown terminal");
        let seen = s.touch_terminal(&t, "btid-1@bsf", T0).await.unwrap();
        assert_eq!((seen.btid.as_deref(), seen.registration.as_ref(), seen.last_seen), (Some("btid-1@bsf"), None, T0));
        assert!(s.register(&t, &registration("127.0.0.1:4000", T0 + 1)).await.unwrap());
        let again = s.touch_terminal(&t, "btid-2@bsf", T0 + 2).await.unwrap();
        assert_eq!(again.registration, Some(registration("127.0.0.1:4000", T0 + 1)), "touch keeps the registration");
        assert_eq!(again.btid.as_deref(), Some("btid-2@bsf"));
        assert!(s.register(&t, &registration("[::1]:5000", T0 + 3)).await.unwrap(), "the last registration counts");
        assert_eq!(s.terminal(&t).await.unwrap().unwrap().registration.unwrap().address, "[::1]:5000");
        assert!(s.deregister(&t).await.unwrap());
        assert!(!s.deregister(&t).await.unwrap());
        assert_eq!(s.terminal(&t).await.unwrap().unwrap().registration, None);
    }

    fn registration(address: &str, at: u64) -> Registration {
        Registration { address: address.into(), interface: Interface::OmaBcast, at }
    }

    pub async fn purchases_replace_remove_and_purge<S: BsmStore>(s: Arc<S>) {
        catalogue(&*s).await;
        let t = terminal(2);
        let month = Purchase {
            terminal: t.clone(),
            item: "basic".into(),
            purchase_data: "basic-month".into(),
            kind: PurchaseKind::Subscription,
            window: Window::new(T0, T0 + 30 * DAY).unwrap(),
        };
        assert!(matches!(s.put_purchase(&month).await, Err(StoreError::Missing(_))), "unknown terminal");
        s.touch_terminal(&t, "b@bsf", T0).await.unwrap();
        s.put_purchase(&month).await.unwrap();
        let ppv = Purchase {
            item: "all".into(),
            purchase_data: "final-ppv".into(),
            kind: PurchaseKind::PayPerView(ProgramId("final".into())),
            window: Window::new(T0, T0 + 2 * DAY).unwrap(),
            ..month.clone()
        };
        s.put_purchase(&ppv).await.unwrap();
        assert_eq!(s.purchases(&t).await.unwrap(), [ppv.clone(), month.clone()]);
        let tokens = Purchase { purchase_data: "all-tokens".into(), kind: PurchaseKind::Tokens(10), ..ppv.clone() };
        s.put_purchase(&tokens).await.unwrap();
        assert_eq!(s.purchases(&t).await.unwrap()[0], tokens, "a new purchase of an item replaces the old");
        let mut bad = month.clone();
        bad.purchase_data = "none".into();
        assert!(matches!(s.put_purchase(&bad).await, Err(StoreError::Missing(_))));
        assert_eq!(s.purge_purchases(&t, T0 + 2 * DAY).await, Ok(1), "the ended one");
        assert_eq!(s.remove_purchase(&t, "basic").await.unwrap(), Some(month));
        assert_eq!(s.remove_purchase(&t, "basic").await.unwrap(), None);
        assert!(s.purchases(&t).await.unwrap().is_empty());
    }

    pub async fn ltkm_timestamps_are_monotonic_per_smk<S: BsmStore + Send + Sync + 'static>(s: Arc<S>) {
        let t = terminal(3);
        assert!(matches!(s.reserve_ltkm_ts(&t, "b1@bsf", 1).await, Err(StoreError::Missing(_))));
        s.touch_terminal(&t, "b1@bsf", T0).await.unwrap();
        assert_eq!(s.reserve_ltkm_ts(&t, "b1@bsf", 1).await, Ok(1));
        assert_eq!(s.reserve_ltkm_ts(&t, "b1@bsf", 3).await, Ok(2), "2, 3 and 4 reserved");
        assert_eq!(s.reserve_ltkm_ts(&t, "b1@bsf", 1).await, Ok(5));
        assert_eq!(s.reserve_ltkm_ts(&t, "b2@bsf", 1).await, Ok(1), "a new SMK restarts the count");
        assert!(matches!(s.reserve_ltkm_ts(&t, "b2@bsf", 0).await, Err(StoreError::Conflict(_))));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let s = Arc::clone(&s);
                let t = t.clone();
                tokio::spawn(async move { s.reserve_ltkm_ts(&t, "b2@bsf", 2).await.unwrap() })
            })
            .collect();
        let mut firsts = Vec::new();
        for task in tasks {
            firsts.push(task.await.unwrap());
        }
        firsts.sort_unstable();
        let want: Vec<u32> = (0..16).map(|i| 2 + 2 * i).collect();
        assert_eq!(firsts, want, "concurrent reservations never share a timestamp");
        assert_eq!(
            s.reserve_ltkm_ts(&t, "b2@bsf", u32::MAX).await.map_err(|e| matches!(e, StoreError::Conflict(_))),
            Err(true),
            "overflow refused"
        );
        assert_eq!(s.reserve_ltkm_ts(&t, "b2@bsf", 1).await, Ok(34), "the refused reservation changed nothing");
    }
}

/// A SQL store and direct access to its tables.
trait SqlFixture: Sized {
    type Store: BsmStore + Send + Sync + 'static;
    fn store(&self) -> Arc<Self::Store>;
    async fn reopen(&self, key: StorageKey) -> Result<Self::Store, StoreError>;
    async fn blobs(&self, sql: &'static str) -> Vec<Vec<u8>>;
    async fn exec(&self, sql: &'static str);
    async fn close(self);
}

mod at_rest {
    use super::*;

    pub async fn keys_are_wrapped_and_bound_to_their_row<F: SqlFixture>(f: F) {
        let s = f.store();
        s.add_key(&stored_key(1, 1, T0, T0 + DAY, 0x77)).await.unwrap();
        s.add_key(&stored_key(1, 2, T0 + DAY, T0 + 2 * DAY, 0x77)).await.unwrap();
        let blobs = f.blobs("SELECT wrapped_key FROM keys ORDER BY window_from").await;
        assert_eq!(blobs.len(), 2);
        assert!(blobs.iter().all(|b| !b.windows(4).any(|w| w == [0x77; 4])), "no key in clear");
        assert_ne!(blobs[0], blobs[1], "equal keys do not show as equal columns");
        // Copy the first key's wrapping onto the second row: it must not open there.
        f.exec(
            "UPDATE keys SET wrapped_key = (SELECT wrapped_key FROM keys WHERE key_number = 1) WHERE key_number = 2",
        )
        .await;
        let moved = s.key(SekPekId { key_group: 1, key_number: 2 }, T0 + DAY).await;
        assert!(matches!(moved, Err(StoreError::Integrity(_))), "{moved:?}");
        drop(s);
        assert_eq!(f.reopen(StorageKey::from_bytes([9; 16])).await.err(), Some(StoreError::WrongStorageKey));
        let again = f.reopen(storage_key()).await.unwrap();
        assert_eq!(again.key_entries(1).await.unwrap().len(), 2, "a reopened store has everything");
        f.close().await;
    }
}

struct SqliteFixture {
    dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
}

impl SqliteFixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("bsm.db"), storage_key()).await.unwrap();
        SqliteFixture { dir, store: Arc::new(store) }
    }
}

impl SqlFixture for SqliteFixture {
    type Store = SqliteStore;
    fn store(&self) -> Arc<SqliteStore> {
        Arc::clone(&self.store)
    }
    async fn reopen(&self, key: StorageKey) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(self.dir.path().join("bsm.db"), key).await
    }
    async fn blobs(&self, sql: &'static str) -> Vec<Vec<u8>> {
        let rows = sqlx::query(sql).fetch_all(self.store.pool()).await.unwrap();
        rows.iter().map(|r| r.try_get::<Vec<u8>, _>(0).unwrap()).collect()
    }
    async fn exec(&self, sql: &'static str) {
        sqlx::query(sql).execute(self.store.pool()).await.unwrap();
    }
    async fn close(self) {
        self.store.close().await;
    }
}

/// A PostgreSQL store in a schema of its own (dropped by `close`).
struct PgFixture {
    url: String,
    schema: String,
    store: Arc<PgStore>,
}

static SCHEMA_COUNTER: AtomicU32 = AtomicU32::new(0);

impl PgFixture {
    async fn new() -> Option<Self> {
        let Ok(url) = std::env::var(PG_ENV) else {
            println!("skipped: {PG_ENV} not set");
            return None;
        };
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let schema =
            format!("keycast_bsm_{}_{nanos}_{}", std::process::id(), SCHEMA_COUNTER.fetch_add(1, Ordering::Relaxed));
        let admin = PgPool::connect(&url).await.expect("KEYCAST_TEST_POSTGRES_URL reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await.unwrap();
        admin.close().await;
        let store = PgStore::connect_with(Self::options(&url, &schema), storage_key()).await.unwrap();
        Some(PgFixture { url, schema, store: Arc::new(store) })
    }

    fn options(url: &str, schema: &str) -> PgConnectOptions {
        PgConnectOptions::from_str(url).unwrap().options([("search_path", schema)])
    }
}

impl SqlFixture for PgFixture {
    type Store = PgStore;
    fn store(&self) -> Arc<PgStore> {
        Arc::clone(&self.store)
    }
    async fn reopen(&self, key: StorageKey) -> Result<PgStore, StoreError> {
        PgStore::connect_with(Self::options(&self.url, &self.schema), key).await
    }
    async fn blobs(&self, sql: &'static str) -> Vec<Vec<u8>> {
        let rows = sqlx::query(sql).fetch_all(self.store.pool()).await.unwrap();
        rows.iter().map(|r| r.try_get::<Vec<u8>, _>(0).unwrap()).collect()
    }
    async fn exec(&self, sql: &'static str) {
        sqlx::query(sql).execute(self.store.pool()).await.unwrap();
    }
    async fn close(self) {
        self.store.close().await;
        let admin = PgPool::connect(&self.url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", self.schema))).execute(&admin).await.unwrap();
        admin.close().await;
    }
}

macro_rules! backend_suite {
    ($make:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn catalogue_round_trips_and_refuses_dangling_references() {
            let Some(f) = $make else { return };
            suite::catalogue_round_trips_and_refuses_dangling_references(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn keys_keep_their_history() {
            let Some(f) = $make else { return };
            suite::keys_keep_their_history(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn terminals_register_and_deregister() {
            let Some(f) = $make else { return };
            suite::terminals_register_and_deregister(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn purchases_replace_remove_and_purge() {
            let Some(f) = $make else { return };
            suite::purchases_replace_remove_and_purge(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ltkm_timestamps_are_monotonic_per_smk() {
            let Some(f) = $make else { return };
            suite::ltkm_timestamps_are_monotonic_per_smk(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn keys_are_wrapped_and_bound_to_their_row() {
            let Some(f) = $make else { return };
            at_rest::keys_are_wrapped_and_bound_to_their_row(f).await;
        }
    };
}

mod sqlite {
    use super::*;
    backend_suite!(Some(SqliteFixture::new().await));
}

mod postgres {
    use super::*;
    backend_suite!(PgFixture::new().await);
}
