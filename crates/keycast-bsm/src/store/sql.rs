//! The SQL implementations of [`BsmStore`]: [`SqliteStore`] (the default: one file, zero setup)
//! and [`PgStore`] (PostgreSQL by URL, for several BSM processes sharing one database).
//!
//! Both run the same SQL text through sqlx's run-time query API; the schema files differ
//! (`migrations/sqlite/`, `migrations/postgres/`, embedded and applied on open). Writes that read
//! before they write (a key after its group's latest, the LTKM counter) run in one transaction
//! that holds the write lock: SQLite's `BEGIN IMMEDIATE`, PostgreSQL's table lock on `keys`, and
//! single-statement upserts for counters.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::keys::SekPek;
use keycast_mikey::{KeyDomainId, SekPekId};
use keycast_provisioning::sprov::Price;
use sqlx::error::ErrorKind;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlSafeStr};

use super::{BsmStore, Interface, Registration, StoreError, StoredKey, Terminal};
use crate::domain::{
    KeyEntry, Program, ProgramId, Purchase, PurchaseData, PurchaseItem, PurchaseKind, Service, ServiceId, TerminalId,
    Window,
};

/// Scope of the BSM's keys at rest.
const SCOPE: &str = "keycast-bsm-store";
const CHECK_NAME: &str = "storage_key_check";

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[(1, "init", include_str!("../../migrations/sqlite/0001_init.sql"))];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "init", include_str!("../../migrations/postgres/0001_init.sql"))];

fn migrator(steps: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        steps
            .iter()
            .map(|&(version, name, sql)| {
                Migration::new(version, Cow::Borrowed(name), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect(),
    )
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A foreign-key violation names what is missing; anything else is a backend failure.
fn missing_or_backend(what: impl FnOnce() -> String) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match e.as_database_error().map(|d| d.kind()) {
        Some(ErrorKind::ForeignKeyViolation) => StoreError::Missing(what()),
        _ => backend(e),
    }
}

fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_db(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what}")))
}

fn u16_from_db(v: i64, what: &str) -> Result<u16, StoreError> {
    u16::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} out of range")))
}

fn array<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt(format!("{what} is {} bytes, not {N}", bytes.len())))
}

/// The row ID a key's wrapping is bound to.
fn key_row(id: SekPekId, from: u64) -> [String; 3] {
    [id.key_group.to_string(), id.key_number.to_string(), from.to_string()]
}

fn kind_to_db(kind: &PurchaseKind) -> (&'static str, Option<&str>, Option<i64>) {
    match kind {
        PurchaseKind::Subscription => ("subscription", None, None),
        PurchaseKind::PayPerView(p) => ("ppv", Some(p.0.as_str()), None),
        PurchaseKind::PayPerTime => ("ppt", None, None),
        PurchaseKind::Tokens(n) => ("tokens", None, Some(i64::from(*n))),
    }
}

fn kind_from_db(kind: &str, program: Option<String>, tokens: Option<i64>) -> Result<PurchaseKind, StoreError> {
    match (kind, program, tokens) {
        ("subscription", _, _) => Ok(PurchaseKind::Subscription),
        ("ppt", _, _) => Ok(PurchaseKind::PayPerTime),
        ("ppv", Some(p), _) => Ok(PurchaseKind::PayPerView(ProgramId(p))),
        ("tokens", _, Some(n)) => {
            Ok(PurchaseKind::Tokens(u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("tokens {n}")))?))
        }
        (k, _, _) => Err(StoreError::Corrupt(format!("purchase kind {k:?} without its program or tokens"))),
    }
}

const SQL_CHECK_INSERT: &str = "INSERT INTO keycast_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
const SQL_CHECK_SELECT: &str = "SELECT value FROM keycast_meta WHERE name = $1";
const SQL_PUT_SERVICE: &str = "INSERT INTO services (id, name, key_domain, key_group, streaming) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
     key_domain = excluded.key_domain, key_group = excluded.key_group, streaming = excluded.streaming";
const SQL_SERVICES: &str = "SELECT id, name, key_domain, key_group, streaming FROM services ORDER BY id";
const SQL_PUT_PROGRAM: &str = "INSERT INTO programs (id, service, key_group, window_from, window_until) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET service = excluded.service, \
     key_group = excluded.key_group, window_from = excluded.window_from, window_until = excluded.window_until";
const SQL_PROGRAMS: &str = "SELECT id, service, key_group, window_from, window_until FROM programs ORDER BY id";
const SQL_PUT_ITEM: &str = "INSERT INTO purchase_items (global_id, name) VALUES ($1, $2) \
     ON CONFLICT (global_id) DO UPDATE SET name = excluded.name";
const SQL_CLEAR_ITEM_SERVICES: &str = "DELETE FROM purchase_item_services WHERE item = $1";
const SQL_ADD_ITEM_SERVICE: &str = "INSERT INTO purchase_item_services (item, position, service) VALUES ($1, $2, $3)";
const SQL_ITEMS: &str = "SELECT i.global_id, i.name, s.service FROM purchase_items i \
     LEFT JOIN purchase_item_services s ON s.item = i.global_id ORDER BY i.global_id, s.position";
const SQL_PUT_DATA: &str = "INSERT INTO purchase_data (id, item, amount, currency, kind, program, tokens, period) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET item = excluded.item, \
     amount = excluded.amount, currency = excluded.currency, kind = excluded.kind, program = excluded.program, \
     tokens = excluded.tokens, period = excluded.period";
const SQL_DATA: &str =
    "SELECT id, item, amount, currency, kind, program, tokens, period FROM purchase_data ORDER BY id";
const SQL_KEY_LATEST_END: &str = "SELECT max(window_until) AS latest FROM keys WHERE key_group = $1";
const SQL_ADD_KEY: &str = "INSERT INTO keys \
     (key_group, key_number, window_from, window_until, key_domain, wrapped_key, rand, csb_id, revoked_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const KEY_COLUMNS: &str =
    "key_group, key_number, window_from, window_until, key_domain, wrapped_key, rand, csb_id, revoked_at";
const SQL_KEY_ENTRIES: &str = "SELECT key_group, key_number, window_from, window_until, revoked_at FROM keys \
     WHERE key_group = $1 ORDER BY window_from";
const SQL_REVOKE_KEY: &str = "UPDATE keys SET revoked_at = $3 \
     WHERE key_group = $1 AND key_number = $2 AND revoked_at IS NULL AND window_until > $3";
const TERMINAL_COLUMNS: &str = "impi, btid, last_seen, reg_address, reg_interface, reg_at";
const SQL_REGISTER: &str = "UPDATE terminals SET reg_address = $2, reg_interface = $3, reg_at = $4 WHERE impi = $1";
const SQL_DEREGISTER: &str = "UPDATE terminals SET reg_address = NULL, reg_interface = NULL, reg_at = NULL \
     WHERE impi = $1 AND reg_address IS NOT NULL";
const SQL_PUT_PURCHASE: &str = "INSERT INTO purchases \
     (terminal, item, purchase_data, kind, program, tokens, window_from, window_until) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (terminal, item) DO UPDATE SET \
     purchase_data = excluded.purchase_data, kind = excluded.kind, program = excluded.program, \
     tokens = excluded.tokens, window_from = excluded.window_from, window_until = excluded.window_until";
const PURCHASE_COLUMNS: &str = "terminal, item, purchase_data, kind, program, tokens, window_from, window_until";
const SQL_PURGE_PURCHASES: &str = "DELETE FROM purchases WHERE terminal = $1 AND window_until <= $2";
const SQL_RESERVE_TS: &str = "INSERT INTO ltkm_counters (terminal, smk, ts) VALUES ($1, $2, $3) \
     ON CONFLICT (terminal) DO UPDATE SET \
     ts = CASE WHEN ltkm_counters.smk = excluded.smk THEN ltkm_counters.ts + excluded.ts ELSE excluded.ts END, \
     smk = excluded.smk RETURNING ts";

/// Implements [`BsmStore`] for a store with fields `pool` and `key`. `$begin` opens a transaction
/// that holds the write lock for a key insertion (`None`: the pool's `BEGIN`), `$lock_keys` is run
/// first inside it (PostgreSQL's table lock; empty for SQLite).
macro_rules! sql_store {
    ($store:ident, $pool:ty, $db:ty, $migrations:expr, $begin:expr, $lock_keys:expr) => {
        impl $store {
            async fn init(pool: $pool, key: StorageKey) -> Result<Self, StoreError> {
                migrator($migrations).run(&pool).await.map_err(|e| StoreError::Backend(format!("migration: {e}")))?;
                sqlx::query(SQL_CHECK_INSERT)
                    .bind(CHECK_NAME)
                    .bind(key.check_value(SCOPE))
                    .execute(&pool)
                    .await
                    .map_err(backend)?;
                let row = sqlx::query(SQL_CHECK_SELECT).bind(CHECK_NAME).fetch_one(&pool).await.map_err(backend)?;
                let stored: Vec<u8> = row.try_get("value").map_err(backend)?;
                if !key.opens(SCOPE, &stored) {
                    return Err(StoreError::WrongStorageKey);
                }
                Ok($store { pool, key })
            }

            /// The connection pool (administration, inspection in tests).
            #[must_use]
            pub fn pool(&self) -> &$pool {
                &self.pool
            }

            /// Closes the pool, waiting for connections to finish.
            pub async fn close(&self) {
                self.pool.close().await;
            }

            fn stored_key(&self, row: &<$db as sqlx::Database>::Row) -> Result<StoredKey, StoreError> {
                let entry = Self::key_entry(row)?;
                let wrapped: Vec<u8> = row.try_get("wrapped_key").map_err(backend)?;
                let row_id = key_row(entry.id, entry.window.from);
                let name = row_id.join("/");
                let row_id: Vec<&str> = row_id.iter().map(String::as_str).collect();
                let key = self.key.unwrap(SCOPE, "SEK/PEK", &row_id, &wrapped).map_err(|_| StoreError::Integrity(name))?;
                let domain: Vec<u8> = row.try_get("key_domain").map_err(backend)?;
                let rand: Vec<u8> = row.try_get("rand").map_err(backend)?;
                Ok(StoredKey {
                    entry,
                    key_domain: KeyDomainId(array(&domain, "Key Domain ID")?),
                    key: SekPek::from_slice(&key).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    rand: array(&rand, "RAND")?,
                    csb_id: u32::try_from(row.try_get::<i64, _>("csb_id").map_err(backend)?)
                        .map_err(|_| StoreError::Corrupt("CSB ID out of range".into()))?,
                })
            }

            fn key_entry(row: &<$db as sqlx::Database>::Row) -> Result<KeyEntry, StoreError> {
                let from = from_db(row.try_get("window_from").map_err(backend)?, "window start")?;
                let until = from_db(row.try_get("window_until").map_err(backend)?, "window end")?;
                let revoked: Option<i64> = row.try_get("revoked_at").map_err(backend)?;
                Ok(KeyEntry {
                    id: SekPekId {
                        key_group: u16_from_db(row.try_get("key_group").map_err(backend)?, "Key Group")?,
                        key_number: u16_from_db(row.try_get("key_number").map_err(backend)?, "Key Number")?,
                    },
                    window: Window::new(from, until).ok_or_else(|| StoreError::Corrupt("empty key window".into()))?,
                    revoked_at: revoked.map(|r| from_db(r, "revocation time")).transpose()?,
                })
            }

            fn terminal_row(row: &<$db as sqlx::Database>::Row) -> Result<Terminal, StoreError> {
                let address: Option<String> = row.try_get("reg_address").map_err(backend)?;
                let interface: Option<String> = row.try_get("reg_interface").map_err(backend)?;
                let at: Option<i64> = row.try_get("reg_at").map_err(backend)?;
                let registration = match (address, interface, at) {
                    (Some(address), Some(interface), Some(at)) => Some(Registration {
                        address,
                        interface: Interface::parse(&interface)
                            .ok_or_else(|| StoreError::Corrupt(format!("interface {interface:?}")))?,
                        at: from_db(at, "registration time")?,
                    }),
                    _ => None,
                };
                Ok(Terminal {
                    id: TerminalId(row.try_get("impi").map_err(backend)?),
                    btid: row.try_get("btid").map_err(backend)?,
                    registration,
                    last_seen: from_db(row.try_get("last_seen").map_err(backend)?, "last seen")?,
                })
            }

            fn purchase_row(row: &<$db as sqlx::Database>::Row) -> Result<Purchase, StoreError> {
                let kind: String = row.try_get("kind").map_err(backend)?;
                let from = from_db(row.try_get("window_from").map_err(backend)?, "window start")?;
                let until = from_db(row.try_get("window_until").map_err(backend)?, "window end")?;
                Ok(Purchase {
                    terminal: TerminalId(row.try_get("terminal").map_err(backend)?),
                    item: row.try_get("item").map_err(backend)?,
                    purchase_data: row.try_get("purchase_data").map_err(backend)?,
                    kind: kind_from_db(
                        &kind,
                        row.try_get("program").map_err(backend)?,
                        row.try_get("tokens").map_err(backend)?,
                    )?,
                    window: Window::new(from, until)
                        .ok_or_else(|| StoreError::Corrupt("empty purchase window".into()))?,
                })
            }
        }

        impl BsmStore for $store {
            async fn put_service(&self, s: &Service) -> Result<(), StoreError> {
                sqlx::query(SQL_PUT_SERVICE)
                    .bind(s.id.0.as_str())
                    .bind(s.name.as_str())
                    .bind(s.key_domain.0.to_vec())
                    .bind(i64::from(s.key_group))
                    .bind(i64::from(s.streaming))
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(())
            }

            async fn services(&self) -> Result<Vec<Service>, StoreError> {
                let rows = sqlx::query(SQL_SERVICES).fetch_all(&self.pool).await.map_err(backend)?;
                rows.iter()
                    .map(|row| {
                        let domain: Vec<u8> = row.try_get("key_domain").map_err(backend)?;
                        let streaming: i64 = row.try_get("streaming").map_err(backend)?;
                        Ok(Service {
                            id: ServiceId(row.try_get("id").map_err(backend)?),
                            name: row.try_get("name").map_err(backend)?,
                            key_domain: KeyDomainId(array(&domain, "Key Domain ID")?),
                            key_group: u16_from_db(row.try_get("key_group").map_err(backend)?, "Key Group")?,
                            streaming: streaming != 0,
                        })
                    })
                    .collect()
            }

            async fn put_program(&self, p: &Program) -> Result<(), StoreError> {
                sqlx::query(SQL_PUT_PROGRAM)
                    .bind(p.id.0.as_str())
                    .bind(p.service.0.as_str())
                    .bind(i64::from(p.key_group))
                    .bind(to_db(p.window.from))
                    .bind(to_db(p.window.until))
                    .execute(&self.pool)
                    .await
                    .map_err(missing_or_backend(|| format!("service {}", p.service.0)))?;
                Ok(())
            }

            async fn programs(&self) -> Result<Vec<Program>, StoreError> {
                let rows = sqlx::query(SQL_PROGRAMS).fetch_all(&self.pool).await.map_err(backend)?;
                rows.iter()
                    .map(|row| {
                        let from = from_db(row.try_get("window_from").map_err(backend)?, "window start")?;
                        let until = from_db(row.try_get("window_until").map_err(backend)?, "window end")?;
                        Ok(Program {
                            id: ProgramId(row.try_get("id").map_err(backend)?),
                            service: ServiceId(row.try_get("service").map_err(backend)?),
                            key_group: u16_from_db(row.try_get("key_group").map_err(backend)?, "Key Group")?,
                            window: Window::new(from, until)
                                .ok_or_else(|| StoreError::Corrupt("empty program window".into()))?,
                        })
                    })
                    .collect()
            }

            async fn put_purchase_item(&self, item: &PurchaseItem) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(backend)?;
                sqlx::query(SQL_PUT_ITEM)
                    .bind(item.global_id.as_str())
                    .bind(item.name.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                sqlx::query(SQL_CLEAR_ITEM_SERVICES).bind(item.global_id.as_str()).execute(&mut *tx).await.map_err(backend)?;
                for (position, service) in item.services.iter().enumerate() {
                    sqlx::query(SQL_ADD_ITEM_SERVICE)
                        .bind(item.global_id.as_str())
                        .bind(i64::try_from(position).unwrap_or(i64::MAX))
                        .bind(service.0.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(missing_or_backend(|| format!("service {}", service.0)))?;
                }
                tx.commit().await.map_err(backend)
            }

            async fn purchase_items(&self) -> Result<Vec<PurchaseItem>, StoreError> {
                let rows = sqlx::query(SQL_ITEMS).fetch_all(&self.pool).await.map_err(backend)?;
                let mut items: Vec<PurchaseItem> = Vec::new();
                for row in &rows {
                    let id: String = row.try_get("global_id").map_err(backend)?;
                    let service: Option<String> = row.try_get("service").map_err(backend)?;
                    if items.last().is_none_or(|i| i.global_id != id) {
                        items.push(PurchaseItem {
                            global_id: id,
                            name: row.try_get("name").map_err(backend)?,
                            services: Vec::new(),
                        });
                    }
                    if let (Some(item), Some(service)) = (items.last_mut(), service) {
                        item.services.push(ServiceId(service));
                    }
                }
                Ok(items)
            }

            async fn put_purchase_data(&self, d: &PurchaseData) -> Result<(), StoreError> {
                let (kind, program, tokens) = kind_to_db(&d.kind);
                sqlx::query(SQL_PUT_DATA)
                    .bind(d.id.as_str())
                    .bind(d.item.as_str())
                    .bind(d.price.amount.as_str())
                    .bind(d.price.currency.as_str())
                    .bind(kind)
                    .bind(program)
                    .bind(tokens)
                    .bind(to_db(d.period))
                    .execute(&self.pool)
                    .await
                    .map_err(missing_or_backend(|| format!("purchase item {} (or its program)", d.item)))?;
                Ok(())
            }

            async fn purchase_data(&self) -> Result<Vec<PurchaseData>, StoreError> {
                let rows = sqlx::query(SQL_DATA).fetch_all(&self.pool).await.map_err(backend)?;
                rows.iter()
                    .map(|row| {
                        let kind: String = row.try_get("kind").map_err(backend)?;
                        Ok(PurchaseData {
                            id: row.try_get("id").map_err(backend)?,
                            item: row.try_get("item").map_err(backend)?,
                            price: Price {
                                amount: row.try_get("amount").map_err(backend)?,
                                currency: row.try_get("currency").map_err(backend)?,
                            },
                            kind: kind_from_db(
                                &kind,
                                row.try_get("program").map_err(backend)?,
                                row.try_get("tokens").map_err(backend)?,
                            )?,
                            period: from_db(row.try_get("period").map_err(backend)?, "period")?,
                        })
                    })
                    .collect()
            }

            async fn add_key(&self, k: &StoredKey) -> Result<(), StoreError> {
                let id = k.entry.id;
                if id.key_group == 0 || id.key_number == 0 {
                    return Err(StoreError::Conflict(format!("Key Group and Key Number must not be 0 ({id:?})")));
                }
                let row_id = key_row(id, k.entry.window.from);
                let row_id: Vec<&str> = row_id.iter().map(String::as_str).collect();
                // A SEK/PEK is 16 bytes, a valid RFC 3394 input: this cannot fail.
                let wrapped = self.key.wrap(SCOPE, "SEK/PEK", &row_id, k.key.expose_secret()).unwrap_or_default();
                let begin: Option<&'static str> = $begin;
                let mut tx = match begin {
                    Some(statement) => self.pool.begin_with(statement).await,
                    None => self.pool.begin().await,
                }
                .map_err(backend)?;
                let lock: &'static str = $lock_keys;
                if !lock.is_empty() {
                    sqlx::query(lock).execute(&mut *tx).await.map_err(backend)?;
                }
                let latest: Option<i64> = sqlx::query(SQL_KEY_LATEST_END)
                    .bind(i64::from(id.key_group))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(backend)?
                    .try_get("latest")
                    .map_err(backend)?;
                if latest.is_some_and(|end| end > to_db(k.entry.window.from)) {
                    return Err(StoreError::Conflict(format!(
                        "key {}/{} starts before its group's latest key ends",
                        id.key_group, id.key_number
                    )));
                }
                sqlx::query(SQL_ADD_KEY)
                    .bind(i64::from(id.key_group))
                    .bind(i64::from(id.key_number))
                    .bind(to_db(k.entry.window.from))
                    .bind(to_db(k.entry.window.until))
                    .bind(k.key_domain.0.to_vec())
                    .bind(wrapped)
                    .bind(k.rand.to_vec())
                    .bind(i64::from(k.csb_id))
                    .bind(k.entry.revoked_at.map(to_db))
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                tx.commit().await.map_err(backend)
            }

            async fn key_entries(&self, key_group: u16) -> Result<Vec<KeyEntry>, StoreError> {
                let rows = sqlx::query(SQL_KEY_ENTRIES)
                    .bind(i64::from(key_group))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(backend)?;
                rows.iter().map(Self::key_entry).collect()
            }

            async fn key(&self, id: SekPekId, at: u64) -> Result<Option<StoredKey>, StoreError> {
                let sql = format!(
                    "SELECT {KEY_COLUMNS} FROM keys WHERE key_group = $1 AND key_number = $2 \
                     ORDER BY CASE WHEN window_from <= $3 AND $3 < window_until THEN 0 ELSE 1 END, window_from DESC \
                     LIMIT 1"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(i64::from(id.key_group))
                    .bind(i64::from(id.key_number))
                    .bind(to_db(at))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?;
                row.map(|row| self.stored_key(&row)).transpose()
            }

            async fn keys_covering(&self, key_group: u16, window: Window) -> Result<Vec<StoredKey>, StoreError> {
                let sql = format!(
                    "SELECT {KEY_COLUMNS} FROM keys WHERE key_group = $1 AND window_from < $3 AND window_until > $2 \
                     ORDER BY window_from"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(i64::from(key_group))
                    .bind(to_db(window.from))
                    .bind(to_db(window.until))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(backend)?;
                rows.iter().map(|row| self.stored_key(row)).collect()
            }

            async fn revoke_key(&self, id: SekPekId, at: u64) -> Result<bool, StoreError> {
                let done = sqlx::query(SQL_REVOKE_KEY)
                    .bind(i64::from(id.key_group))
                    .bind(i64::from(id.key_number))
                    .bind(to_db(at))
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(done.rows_affected() > 0)
            }

            async fn touch_terminal(&self, id: &TerminalId, btid: &str, now: u64) -> Result<Terminal, StoreError> {
                let sql = format!(
                    "INSERT INTO terminals (impi, btid, last_seen) VALUES ($1, $2, $3) ON CONFLICT (impi) DO UPDATE \
                     SET btid = excluded.btid, last_seen = excluded.last_seen RETURNING {TERMINAL_COLUMNS}"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id.0.as_str())
                    .bind(btid)
                    .bind(to_db(now))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(backend)?;
                Self::terminal_row(&row)
            }

            async fn terminal(&self, id: &TerminalId) -> Result<Option<Terminal>, StoreError> {
                let sql = format!("SELECT {TERMINAL_COLUMNS} FROM terminals WHERE impi = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id.0.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?;
                row.map(|row| Self::terminal_row(&row)).transpose()
            }

            async fn register(&self, id: &TerminalId, r: &Registration) -> Result<bool, StoreError> {
                let done = sqlx::query(SQL_REGISTER)
                    .bind(id.0.as_str())
                    .bind(r.address.as_str())
                    .bind(r.interface.as_str())
                    .bind(to_db(r.at))
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(done.rows_affected() == 1)
            }

            async fn deregister(&self, id: &TerminalId) -> Result<bool, StoreError> {
                let done = sqlx::query(SQL_DEREGISTER).bind(id.0.as_str()).execute(&self.pool).await.map_err(backend)?;
                Ok(done.rows_affected() == 1)
            }

            async fn put_purchase(&self, p: &Purchase) -> Result<(), StoreError> {
                let (kind, program, tokens) = kind_to_db(&p.kind);
                sqlx::query(SQL_PUT_PURCHASE)
                    .bind(p.terminal.0.as_str())
                    .bind(p.item.as_str())
                    .bind(p.purchase_data.as_str())
                    .bind(kind)
                    .bind(program)
                    .bind(tokens)
                    .bind(to_db(p.window.from))
                    .bind(to_db(p.window.until))
                    .execute(&self.pool)
                    .await
                    .map_err(missing_or_backend(|| {
                        format!("terminal {}, purchase item {} or offer {}", p.terminal.0, p.item, p.purchase_data)
                    }))?;
                Ok(())
            }

            async fn purchases(&self, terminal: &TerminalId) -> Result<Vec<Purchase>, StoreError> {
                let sql = format!("SELECT {PURCHASE_COLUMNS} FROM purchases WHERE terminal = $1 ORDER BY item");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(terminal.0.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(backend)?;
                rows.iter().map(Self::purchase_row).collect()
            }

            async fn remove_purchase(&self, terminal: &TerminalId, item: &str) -> Result<Option<Purchase>, StoreError> {
                let sql =
                    format!("DELETE FROM purchases WHERE terminal = $1 AND item = $2 RETURNING {PURCHASE_COLUMNS}");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(terminal.0.as_str())
                    .bind(item)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?;
                row.map(|row| Self::purchase_row(&row)).transpose()
            }

            async fn purge_purchases(&self, terminal: &TerminalId, now: u64) -> Result<u64, StoreError> {
                let done = sqlx::query(SQL_PURGE_PURCHASES)
                    .bind(terminal.0.as_str())
                    .bind(to_db(now))
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(done.rows_affected())
            }

            async fn reserve_ltkm_ts(&self, terminal: &TerminalId, smk: &str, n: u32) -> Result<u32, StoreError> {
                if n == 0 {
                    return Err(StoreError::Conflict("reserve at least one LTKM timestamp".into()));
                }
                let row = sqlx::query(SQL_RESERVE_TS)
                    .bind(terminal.0.as_str())
                    .bind(smk)
                    .bind(i64::from(n))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| match e.as_database_error().map(|d| d.kind()) {
                        Some(ErrorKind::CheckViolation) => {
                            StoreError::Conflict(format!("LTKM counter of {} exhausted under this SMK", terminal.0))
                        }
                        Some(ErrorKind::ForeignKeyViolation) => StoreError::Missing(format!("terminal {}", terminal.0)),
                        _ => backend(e),
                    })?;
                let last: i64 = row.try_get("ts").map_err(backend)?;
                let last = u32::try_from(last).map_err(|_| StoreError::Corrupt(format!("LTKM TS {last}")))?;
                Ok(last - (n - 1))
            }
        }
    };
}

/// A [`BsmStore`] in one SQLite file (WAL journal, `synchronous=FULL`, foreign keys on).
/// Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    key: StorageKey,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database file at `path`, applies the migrations and
    /// checks the storage key.
    ///
    /// # Errors
    /// [`StoreError::WrongStorageKey`]; [`StoreError::Backend`] when the file cannot be opened.
    pub async fn open(path: impl AsRef<Path>, key: StorageKey) -> Result<Self, StoreError> {
        Self::connect_with(SqliteConnectOptions::new().filename(path).create_if_missing(true), key).await
    }

    /// Opens a database given by a `sqlite:` URL.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub async fn open_url(url: &str, key: StorageKey) -> Result<Self, StoreError> {
        Self::connect_with(SqliteConnectOptions::from_str(url).map_err(backend)?, key).await
    }

    /// Opens with these options; journal, synchronous level, busy timeout and foreign keys are
    /// set here.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub async fn connect_with(options: SqliteConnectOptions, key: StorageKey) -> Result<Self, StoreError> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(backend)?;
        Self::init(pool, key).await
    }
}

/// A [`BsmStore`] in a PostgreSQL database. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    key: StorageKey,
}

impl PgStore {
    /// Connects to `url`, applies the migrations and checks the storage key.
    ///
    /// # Errors
    /// [`StoreError::WrongStorageKey`]; [`StoreError::Backend`] when unreachable.
    pub async fn open(url: &str, key: StorageKey) -> Result<Self, StoreError> {
        Self::connect_with(PgConnectOptions::from_str(url).map_err(backend)?, key).await
    }

    /// Connects with these options (e.g. a `search_path` to keep the tables in a schema).
    ///
    /// # Errors
    /// As [`PgStore::open`].
    pub async fn connect_with(options: PgConnectOptions, key: StorageKey) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new().max_connections(8).connect_with(options).await.map_err(backend)?;
        Self::init(pool, key).await
    }
}

// SQLite: `BEGIN IMMEDIATE` takes the write lock before the latest-key read. PostgreSQL: the table
// lock serialises key insertions (rare: rollovers and administration).
sql_store!(SqliteStore, SqlitePool, sqlx::Sqlite, SQLITE_MIGRATIONS, Some("BEGIN IMMEDIATE"), "");
sql_store!(PgStore, PgPool, sqlx::Postgres, POSTGRES_MIGRATIONS, None, "LOCK TABLE keys IN SHARE ROW EXCLUSIVE MODE");
