//! The SQL implementations of [`BsmStore`]: [`SqliteStore`] (the default: one file, zero setup)
//! and [`PgStore`] (PostgreSQL by URL, for several BSM processes sharing one database).
//!
//! Both run the same SQL text through sqlx's run-time query API; the schema files differ
//! (`migrations/sqlite/`, `migrations/postgres/`, embedded and applied on open). Writes that read
//! before they write (a key after its group's latest, the LTKM counter) run in one transaction
//! that holds the write lock: SQLite's `BEGIN IMMEDIATE`, PostgreSQL's table lock on `keys`, and
//! single-statement upserts for counters.
//!
//! Deliveries (module `deliveries` has the column mapping and the SQL): a claim is one
//! `UPDATE … WHERE id IN (SELECT … ORDER BY due LIMIT n) RETURNING …`, under SQLite's single
//! writer (`BEGIN IMMEDIATE`) or, on PostgreSQL, with `FOR UPDATE SKIP LOCKED` in the subquery so
//! that BSM processes sharing the database take disjoint rows without waiting for each other.
//! `record_send` locks its row (`FOR UPDATE`; SQLite: the write lock), checks the lease, reserves
//! the TS and writes, all in one transaction. A bulk enqueue is one transaction of multi-row
//! INSERTs, each as large as the backend's parameter limit allows.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::keys::SekPek;
use keycast_mikey::{KeyDomainId, SekPekId};
use keycast_provisioning::sprov::Price;
use sqlx::error::ErrorKind;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Arguments, AssertSqlSafe, Row, SqlSafeStr};

use self::deliveries::{Encoded, Raw, RawSent, Statement};
use super::{
    BsmStore, Campaign, CampaignKind, CampaignPage, CampaignTarget, DeliverySummary, Interface, LtkmForm, Registration,
    SendRecord, SentMatch, StoreError, StoredKey, Terminal, TerminalImport,
};
use crate::client_id::BcastClientId;
use crate::delivery::{AckOutcome, Attempt, DeliveryId, DeliveryKey, DeliveryRow, DeliveryState, Time};
use crate::domain::{
    KeyEntry, Program, ProgramId, Purchase, PurchaseData, PurchaseItem, PurchaseKind, Service, ServiceId, TerminalId,
    Window,
};
use crate::issue::{LtkmCounter, LtkmTs};

mod campaigns;
mod catalogue_cache;
mod deliveries;
mod local;
mod ts_batch;

/// Scope of the BSM's keys at rest.
const SCOPE: &str = "keycast-bsm-store";
const CHECK_NAME: &str = "storage_key_check";

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, "campaigns", include_str!("../../migrations/sqlite/0002_campaigns.sql")),
    (3, "catalogue_version", include_str!("../../migrations/sqlite/0003_catalogue_version.sql")),
    (4, "play_backs", include_str!("../../migrations/sqlite/0004_play_backs.sql")),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/postgres/0001_init.sql")),
    (2, "campaigns", include_str!("../../migrations/postgres/0002_campaigns.sql")),
    (3, "catalogue_version", include_str!("../../migrations/postgres/0003_catalogue_version.sql")),
    (4, "play_backs", include_str!("../../migrations/postgres/0004_play_backs.sql")),
];

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

/// The LTKM counter's errors: the 32-bit counter is full, or the terminal is unknown.
fn ts_error(terminal: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |e| match e.as_database_error().map(|d| d.kind()) {
        Some(ErrorKind::CheckViolation) => {
            StoreError::Conflict(format!("LTKM counter of {terminal} exhausted under this SMK"))
        }
        Some(ErrorKind::ForeignKeyViolation) => StoreError::Missing(format!("terminal {terminal}")),
        _ => backend(e),
    }
}

/// A delivery row (or sent attempt) refused: a repeated name, or a value the schema refuses.
fn insert_error(e: sqlx::Error) -> StoreError {
    match e.as_database_error().map(|d| d.kind()) {
        Some(ErrorKind::UniqueViolation) => StoreError::Conflict(
            "a delivery with this (terminal, Key Domain ID, SEK/PEK ID, version), or a sent LTKM with this \
             B-TID and TS, already exists"
                .into(),
        ),
        Some(ErrorKind::CheckViolation) => StoreError::Invalid(format!("delivery row refused by the schema: {e}")),
        _ => backend(e),
    }
}

fn key_name(key: &DeliveryKey) -> String {
    let id = key.sek_pek_id;
    format!("delivery of {}/{} v{} to {}", id.key_group, id.key_number, key.version, key.terminal)
}

/// How long a PostgreSQL caller waits for a pooled connection.
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Ids per `IN (…)` list when reading sent attempts back (far below either parameter limit).
const IN_LIST: usize = 500;

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
const SQL_PUT_DATA: &str = "INSERT INTO purchase_data \
     (id, item, amount, currency, kind, program, tokens, period, play_backs) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO UPDATE SET item = excluded.item, \
     amount = excluded.amount, currency = excluded.currency, kind = excluded.kind, program = excluded.program, \
     tokens = excluded.tokens, period = excluded.period, play_backs = excluded.play_backs";
const SQL_DATA: &str =
    "SELECT id, item, amount, currency, kind, program, tokens, period, play_backs FROM purchase_data ORDER BY id";
const SQL_KEY_LATEST_END: &str = "SELECT max(window_until) AS latest FROM keys WHERE key_group = $1";
const SQL_ADD_KEY: &str = "INSERT INTO keys \
     (key_group, key_number, window_from, window_until, key_domain, wrapped_key, rand, csb_id, revoked_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const KEY_COLUMNS: &str =
    "key_group, key_number, window_from, window_until, key_domain, wrapped_key, rand, csb_id, revoked_at";
const SQL_REVOKE_KEY: &str = "UPDATE keys SET revoked_at = $3 \
     WHERE key_group = $1 AND key_number = $2 AND revoked_at IS NULL AND window_until > $3";
const TERMINAL_COLUMNS: &str = "impi, btid, last_seen, reg_address, reg_interface, reg_at, bcast_client_id";
const SQL_SET_CLIENT_ID: &str = "UPDATE terminals SET bcast_client_id = $2 WHERE impi = $1";
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
/// first inside it (PostgreSQL's table lock; empty for SQLite). `$claim_lock` follows the claim's
/// row selection and `$row_lock` the delivery read of `record_send` (PostgreSQL's row locks; empty
/// for SQLite, whose `$begin` already holds the one write lock). `$max_params` is the backend's
/// limit of bound parameters per statement.
macro_rules! sql_store {
    (
        $store:ident, $pool:ty, $db:ty, $migrations:expr, $begin:expr, $lock_keys:expr,
        $claim_lock:expr, $row_lock:expr, $max_params:expr
    ) => {
        impl $store {
            async fn init(pool: $pool, key: StorageKey, local: Option<Arc<local::Local>>) -> Result<Self, StoreError> {
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
                let (ts, queue) = ts_batch::TsQueue::new();
                tokio::spawn(Self::serve_ts(pool.clone(), queue));
                Ok($store { pool, key, ts, catalogue: Arc::default(), local })
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

            /// A transaction that may read before it writes: SQLite's `BEGIN IMMEDIATE` takes the
            /// write lock at once (no deadlock between two readers that both want to write).
            async fn write_tx(&self) -> Result<sqlx::Transaction<'static, $db>, StoreError> {
                let begin: Option<&'static str> = $begin;
                match begin {
                    Some(statement) => self.pool.begin_with(statement).await,
                    None => self.pool.begin().await,
                }
                .map_err(backend)
            }

            fn delivery_raw(row: &<$db as sqlx::Database>::Row) -> Result<Raw, StoreError> {
                Ok(Raw {
                    id: row.try_get("id").map_err(backend)?,
                    terminal: row.try_get("terminal").map_err(backend)?,
                    key_domain: row.try_get("key_domain").map_err(backend)?,
                    key_group: row.try_get("key_group").map_err(backend)?,
                    key_number: row.try_get("key_number").map_err(backend)?,
                    version: row.try_get("version").map_err(backend)?,
                    kind: row.try_get("kind").map_err(backend)?,
                    window_form: row.try_get("window_form").map_err(backend)?,
                    window_low: row.try_get("window_low").map_err(backend)?,
                    window_high: row.try_get("window_high").map_err(backend)?,
                    push_ip: row.try_get("push_ip").map_err(backend)?,
                    push_interface: row.try_get("push_interface").map_err(backend)?,
                    state: row.try_get("state").map_err(backend)?,
                    attempt: row.try_get("attempt").map_err(backend)?,
                    state_at: row.try_get("state_at").map_err(backend)?,
                    fail_reason: row.try_get("fail_reason").map_err(backend)?,
                    due: row.try_get("due").map_err(backend)?,
                })
            }

            fn sent_raw(row: &<$db as sqlx::Database>::Row) -> Result<RawSent, StoreError> {
                Ok(RawSent {
                    attempt: row.try_get("s_attempt").map_err(backend)?,
                    btid: row.try_get("s_btid").map_err(backend)?,
                    ts: row.try_get("s_ts").map_err(backend)?,
                    at: row.try_get("s_at").map_err(backend)?,
                    acknowledged: row.try_get("s_ack").map_err(backend)?,
                })
            }

            /// Appends `(…)` with the row's columns in `INSERT_COLUMNS` order.
            fn push_row(
                st: &mut Statement<<$db as sqlx::Database>::Arguments>,
                e: Encoded<'_>,
            ) -> Result<(), StoreError> {
                st.text("(");
                st.bind(e.terminal)?.text(", ").bind(e.key_domain)?.text(", ").bind(e.key_group)?.text(", ");
                st.bind(e.key_number)?.text(", ").bind(e.version)?.text(", ").bind(e.kind)?.text(", ");
                st.bind(e.window_form)?.text(", ").bind(e.window_low)?.text(", ").bind(e.window_high)?.text(", ");
                st.bind(e.push_ip)?.text(", ").bind(e.push_interface)?.text(", ").bind(e.state)?.text(", ");
                st.bind(e.attempt)?.text(", ").bind(e.state_at)?.text(", ").bind(e.fail_reason)?.text(", ");
                st.bind(e.due)?.text(", ").bind(e.ext)?.text(", ").bind(e.srtp)?.text(")");
                Ok(())
            }

            /// Reads the sent attempts of `rows` back (inside the claim's transaction).
            async fn attach_sent(
                conn: &mut <$db as sqlx::Database>::Connection,
                rows: &mut [(DeliveryId, DeliveryRow)],
            ) -> Result<(), StoreError> {
                let index: std::collections::HashMap<u64, usize> =
                    rows.iter().enumerate().map(|(i, (id, _))| (id.0, i)).collect();
                for chunk in rows.iter().map(|(id, _)| to_db(id.0)).collect::<Vec<_>>().chunks(IN_LIST) {
                    let mut st = Statement::<<$db as sqlx::Database>::Arguments>::new(
                        "SELECT delivery, attempt AS s_attempt, btid AS s_btid, ts AS s_ts, sent_at AS s_at, \
                         acknowledged AS s_ack FROM delivery_sends WHERE delivery IN (",
                    );
                    for (i, id) in chunk.iter().enumerate() {
                        if i > 0 {
                            st.text(", ");
                        }
                        st.bind(*id)?;
                    }
                    st.text(") ORDER BY delivery, attempt");
                    let found = sqlx::query_with(AssertSqlSafe(st.sql), st.args)
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(backend)?;
                    for row in &found {
                        let id = from_db(row.try_get("delivery").map_err(backend)?, "delivery id")?;
                        let sent = deliveries::decode_sent(Self::sent_raw(row)?)?;
                        if let (Some(sent), Some(&i)) = (sent, index.get(&id)) {
                            rows[i].1.sent.push(sent);
                        }
                    }
                }
                Ok(())
            }

            /// The enqueue of [`BsmStore::enqueue_deliveries`] and [`BsmStore::enqueue_pushes`].
            async fn enqueue_formed(&self, rows: Vec<(&DeliveryRow, &LtkmForm)>) -> Result<u64, StoreError> {
                // Rows that carry sent attempts need their new id for the child rows, so they go
                // one by one; fresh rows (the bulk of a rollover) go as multi-row statements, as
                // many rows per statement as the parameter limit allows.
                let (bulk, with_sent): (Vec<(&DeliveryRow, &LtkmForm)>, Vec<(&DeliveryRow, &LtkmForm)>) =
                    rows.iter().copied().partition(|(r, _)| r.sent.is_empty());
                let head = format!("INSERT INTO deliveries ({}) VALUES ", deliveries::INSERT_COLUMNS);
                let per_statement: usize = $max_params / deliveries::INSERT_ARITY;
                let mut tx = self.write_tx().await?;
                for chunk in bulk.chunks(per_statement) {
                    let mut st = Statement::<<$db as sqlx::Database>::Arguments>::new(&head);
                    st.args.reserve(chunk.len() * deliveries::INSERT_ARITY, 0);
                    for (i, (row, form)) in chunk.iter().enumerate() {
                        if i > 0 {
                            st.text(", ");
                        }
                        Self::push_row(&mut st, deliveries::encode(row, form)?)?;
                    }
                    sqlx::query_with(AssertSqlSafe(st.sql), st.args).execute(&mut *tx).await.map_err(insert_error)?;
                }
                for (row, form) in with_sent {
                    let mut st = Statement::<<$db as sqlx::Database>::Arguments>::new(&head);
                    Self::push_row(&mut st, deliveries::encode(row, form)?)?;
                    st.text(" RETURNING id");
                    let id: i64 = sqlx::query_with(AssertSqlSafe(st.sql), st.args)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(insert_error)?
                        .try_get("id")
                        .map_err(backend)?;
                    for sent in &row.sent {
                        sqlx::query(deliveries::SQL_SEND_INSERT)
                            .bind(id)
                            .bind(i64::from(sent.attempt))
                            .bind(sent.btid.as_str())
                            .bind(i64::from(sent.ts))
                            .bind(to_db(sent.at.as_micros()))
                            .bind(i64::from(sent.acknowledged))
                            .execute(&mut *tx)
                            .await
                            .map_err(insert_error)?;
                    }
                }
                let done = tx.commit().await;
                self.deliveries_changed();
                done.map_err(backend)?;
                Ok(u64::try_from(rows.len()).unwrap_or(u64::MAX))
            }

            /// [`BsmStore::record_send`] (`btid` given: a TS is reserved and the attempt recorded as
            /// sent) and [`BsmStore::record_unsent`] (`None`: neither), one transaction each.
            async fn record_attempt(
                &self,
                worker: &str,
                key: &DeliveryKey,
                attempt: Attempt,
                btid: Option<&str>,
                now: Time,
                next_due: Time,
            ) -> Result<Option<u32>, StoreError> {
                let mut tx = self.write_tx().await?;
                match Self::record_attempt_in(&mut tx, worker, key, attempt, btid, now, next_due).await {
                    Ok(ts) => {
                        let done = tx.commit().await;
                        self.after_sends(ts.is_some().then_some(key.terminal.as_str())).await;
                        done.map_err(backend)?;
                        Ok(ts)
                    }
                    Err(e) => {
                        // Roll back before the connection goes back to the pool: a rollback left to
                        // the drop runs later, and meanwhile the row lock (PostgreSQL's `FOR
                        // UPDATE`) makes claimers skip a row they should get.
                        let _ = tx.rollback().await;
                        Err(e)
                    }
                }
            }

            #[allow(clippy::too_many_arguments)]
            async fn record_attempt_in(
                tx: &mut <$db as sqlx::Database>::Connection,
                worker: &str,
                key: &DeliveryKey,
                attempt: Attempt,
                btid: Option<&str>,
                now: Time,
                next_due: Time,
            ) -> Result<Option<u32>, StoreError> {
                static CHECK: LazyLock<String> = LazyLock::new(|| deliveries::send_check_sql($row_lock));
                let (terminal, key_domain, key_group, key_number, version) = deliveries::key_columns(key);
                let now_db = to_db(now.as_micros());
                let row = sqlx::query(CHECK.as_str())
                    .bind(terminal)
                    .bind(key_domain)
                    .bind(key_group)
                    .bind(key_number)
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?
                    .ok_or_else(|| StoreError::Missing(key_name(key)))?;
                let id: i64 = row.try_get("id").map_err(backend)?;
                let state: String = row.try_get("state").map_err(backend)?;
                let pushes: i64 = row.try_get("attempt").map_err(backend)?;
                let claimed_by: Option<String> = row.try_get("claimed_by").map_err(backend)?;
                let claim_until: Option<i64> = row.try_get("claim_until").map_err(backend)?;
                let live_claim = claimed_by.as_deref() == Some(worker) && claim_until.is_some_and(|u| u > now_db);
                if !live_claim || state == deliveries::ACKNOWLEDGED || state == deliveries::FAILED {
                    return Err(StoreError::NotClaimed(format!("{} is not claimed by {worker}", key_name(key))));
                }
                let (new_state, new_pushes) = match attempt {
                    Attempt::Push(k) if i64::from(k) == pushes + 1 => (deliveries::SENT, i64::from(k)),
                    Attempt::Push(k) => {
                        return Err(StoreError::Invalid(format!("push {k} of {}: {pushes} so far", key_name(key))));
                    }
                    Attempt::SolicitedPull => (deliveries::PULL_SOLICITED, pushes),
                };
                let Some(btid) = btid else {
                    sqlx::query(deliveries::SQL_SEND_UPDATE)
                        .bind(id)
                        .bind(new_state)
                        .bind(new_pushes)
                        .bind(now_db)
                        .bind(to_db(next_due.as_micros()))
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    return Ok(None);
                };
                let ts: i64 = sqlx::query(SQL_RESERVE_TS)
                    .bind(terminal)
                    .bind(btid)
                    .bind(1_i64)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(ts_error(terminal))?
                    .try_get("ts")
                    .map_err(backend)?;
                let ts = u32::try_from(ts).map_err(|_| StoreError::Corrupt(format!("LTKM TS {ts}")))?;
                if let Attempt::Push(k) = attempt {
                    sqlx::query(deliveries::SQL_SEND_INSERT)
                        .bind(id)
                        .bind(i64::from(k))
                        .bind(btid)
                        .bind(i64::from(ts))
                        .bind(now_db)
                        .bind(0_i64)
                        .execute(&mut *tx)
                        .await
                        .map_err(insert_error)?;
                }
                sqlx::query(deliveries::SQL_SEND_UPDATE)
                    .bind(id)
                    .bind(new_state)
                    .bind(new_pushes)
                    .bind(now_db)
                    .bind(to_db(next_due.as_micros()))
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                Ok(Some(ts))
            }

            fn stored_key(&self, row: &<$db as sqlx::Database>::Row) -> Result<StoredKey, StoreError> {
                let entry = Self::key_entry(row)?;
                let wrapped: Vec<u8> = row.try_get("wrapped_key").map_err(backend)?;
                let row_id = key_row(entry.id, entry.window.from);
                let name = row_id.join("/");
                let row_id: Vec<&str> = row_id.iter().map(String::as_str).collect();
                let key =
                    self.key.unwrap(SCOPE, "SEK/PEK", &row_id, &wrapped).map_err(|_| StoreError::Integrity(name))?;
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

            fn registration_of(
                address: Option<String>,
                interface: Option<String>,
                at: Option<i64>,
            ) -> Result<Option<Registration>, StoreError> {
                Ok(match (address, interface, at) {
                    (Some(address), Some(interface), Some(at)) => Some(Registration {
                        address,
                        interface: Interface::parse(&interface)
                            .ok_or_else(|| StoreError::Corrupt(format!("interface {interface:?}")))?,
                        at: from_db(at, "registration time")?,
                    }),
                    _ => None,
                })
            }

            fn terminal_row(row: &<$db as sqlx::Database>::Row) -> Result<Terminal, StoreError> {
                let address: Option<String> = row.try_get("reg_address").map_err(backend)?;
                let interface: Option<String> = row.try_get("reg_interface").map_err(backend)?;
                let at: Option<i64> = row.try_get("reg_at").map_err(backend)?;
                let registration = Self::registration_of(address, interface, at)?;
                Ok(Terminal {
                    id: TerminalId(row.try_get("impi").map_err(backend)?),
                    btid: row.try_get("btid").map_err(backend)?,
                    registration,
                    last_seen: from_db(row.try_get("last_seen").map_err(backend)?, "last seen")?,
                    bcast_client_id: row
                        .try_get::<Option<Vec<u8>>, _>("bcast_client_id")
                        .map_err(backend)?
                        .map(BcastClientId::from_bytes)
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(format!("BCAST_Client_ID: {e}")))?,
                })
            }

            /// The group-commit task of [`BsmStore::reserve_ltkm_ts`] (module `ts_batch`); ends
            /// when the last store clone is dropped.
            async fn serve_ts(pool: $pool, mut queue: tokio::sync::mpsc::UnboundedReceiver<ts_batch::Reservation>) {
                while let Some(first) = queue.recv().await {
                    let batch = ts_batch::drain(first, &mut queue);
                    match Self::reserve_batch(&pool, &batch).await {
                        Ok(firsts) => {
                            for (r, first) in batch.into_iter().zip(firsts) {
                                let _ = r.answer.send(Ok(first));
                            }
                        }
                        // One at a time: a refused reservation refuses only its own caller.
                        Err(_) => {
                            for r in batch {
                                let one = Self::reserve_batch(&pool, std::slice::from_ref(&r)).await;
                                let _ = r.answer.send(one.map(|v| v[0]));
                            }
                        }
                    }
                }
            }

            /// Reserves every TS of `batch` in one transaction; the first TS of each.
            async fn reserve_batch(pool: &$pool, batch: &[ts_batch::Reservation]) -> Result<Vec<u32>, StoreError> {
                let begin: Option<&'static str> = $begin;
                let mut tx = match begin {
                    Some(statement) => pool.begin_with(statement).await,
                    None => pool.begin().await,
                }
                .map_err(backend)?;
                let mut out = Vec::with_capacity(batch.len());
                for r in batch {
                    let row = sqlx::query(SQL_RESERVE_TS)
                        .bind(r.terminal.as_str())
                        .bind(r.smk.as_str())
                        .bind(i64::from(r.n))
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(ts_error(&r.terminal))?;
                    let last: i64 = row.try_get("ts").map_err(backend)?;
                    let last = u32::try_from(last).map_err(|_| StoreError::Corrupt(format!("LTKM TS {last}")))?;
                    out.push(last - (r.n - 1));
                }
                tx.commit().await.map_err(backend)?;
                Ok(out)
            }

            /// Runs a write of the catalogue or the keys, then drops the cache (and, as cheap
            /// insurance against cascades, the terminal cache of a single-process store).
            async fn changing<T>(&self, write: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
                let result = write.await;
                self.catalogue.changed();
                if let Some(local) = &self.local {
                    local.terminals.changed_all();
                    local.terminals.deliveries_changed();
                }
                result
            }

            /// After a write (committed or not: it may have been) to a terminal's row or
            /// purchases: the single-process cache drops them (module `local`).
            fn terminal_changed(&self, id: &str) {
                if let Some(local) = &self.local {
                    local.terminals.changed(id);
                }
            }

            /// After a write that may make a delivery live: the single-process "no live
            /// deliveries" answers go (module `local`).
            fn deliveries_changed(&self) {
                if let Some(local) = &self.local {
                    local.terminals.deliveries_changed();
                }
            }

            /// After a `record_send` transaction (committed or not): the deliveries changed and,
            /// when it reserved a TS for `terminal` in the database, that terminal's TS block is
            /// behind the counter and goes (module `local`).
            async fn after_sends(&self, terminal: Option<&str>) {
                self.deliveries_changed();
                if let (Some(local), Some(terminal)) = (&self.local, terminal) {
                    local.ts.forget(terminal).await;
                }
            }

            /// A cached part of the catalogue: from the cache while its stamp holds, else `read`
            /// (kept unless a local write came in between).
            async fn cached<T: Clone>(
                &self,
                get: fn(&catalogue_cache::CatalogueCache) -> Option<Arc<Vec<T>>>,
                put: fn(&catalogue_cache::CatalogueCache, u64, Arc<Vec<T>>),
                read: impl Future<Output = Result<Vec<T>, StoreError>>,
            ) -> Result<Vec<T>, StoreError> {
                self.catalogue_fresh().await?;
                if let Some(v) = get(&self.catalogue) {
                    return Ok((*v).clone());
                }
                let generation = self.catalogue.generation();
                let out = read.await?;
                put(&self.catalogue, generation, Arc::new(out.clone()));
                Ok(out)
            }

            /// Reads the catalogue stamp when the cache's is older than `catalogue_cache::FRESH`.
            async fn catalogue_fresh(&self) -> Result<(), StoreError> {
                if !self.catalogue.fresh() {
                    let stamp: i64 = sqlx::query("SELECT version FROM catalogue_version WHERE id = 1")
                        .fetch_one(&self.pool)
                        .await
                        .map_err(backend)?
                        .try_get("version")
                        .map_err(backend)?;
                    self.catalogue.stamp(stamp);
                }
                Ok(())
            }

            /// Every key of a group, oldest first, with its bytes or why they do not open (cached;
            /// a key that fails its integrity check fails only the reads that need its bytes).
            async fn group_keys(&self, key_group: u16) -> Result<Arc<Vec<catalogue_cache::GroupKey>>, StoreError> {
                self.catalogue_fresh().await?;
                if let Some(keys) = self.catalogue.group(key_group) {
                    return Ok(keys);
                }
                let generation = self.catalogue.generation();
                let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE key_group = $1 ORDER BY window_from");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(i64::from(key_group))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(backend)?;
                let keys = Arc::new(
                    rows.iter()
                        .map(|row| {
                            Ok(catalogue_cache::GroupKey { entry: Self::key_entry(row)?, key: self.stored_key(row) })
                        })
                        .collect::<Result<Vec<_>, StoreError>>()?,
                );
                self.catalogue.put_group(generation, key_group, keys.clone());
                Ok(keys)
            }

            /// A transaction for key changes: the write lock (SQLite) or the `keys` table lock
            /// (PostgreSQL), so a key's checks against its group and its writes see one state.
            async fn keys_tx(&self) -> Result<sqlx::Transaction<'static, $db>, StoreError> {
                let mut tx = self.write_tx().await?;
                let lock: &'static str = $lock_keys;
                if !lock.is_empty() {
                    sqlx::query(lock).execute(&mut *tx).await.map_err(backend)?;
                }
                Ok(tx)
            }

            /// Inserts a key after its group's latest (inside [`Self::keys_tx`]).
            async fn insert_key(
                key: &StorageKey,
                tx: &mut sqlx::Transaction<'static, $db>,
                k: &StoredKey,
            ) -> Result<(), StoreError> {
                let id = k.entry.id;
                if id.key_group == 0 || id.key_number == 0 {
                    return Err(StoreError::Conflict(format!("Key Group and Key Number must not be 0 ({id:?})")));
                }
                let row_id = key_row(id, k.entry.window.from);
                let row_id: Vec<&str> = row_id.iter().map(String::as_str).collect();
                // A SEK/PEK is 16 bytes, a valid RFC 3394 input: this cannot fail.
                let wrapped = key.wrap(SCOPE, "SEK/PEK", &row_id, k.key.expose_secret()).unwrap_or_default();
                let latest: Option<i64> = sqlx::query(SQL_KEY_LATEST_END)
                    .bind(i64::from(id.key_group))
                    .fetch_one(&mut **tx)
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
                    .execute(&mut **tx)
                    .await
                    .map_err(backend)?;
                Ok(())
            }

            async fn insert_campaign(
                tx: &mut sqlx::Transaction<'static, $db>,
                key_group: u16,
                key_from: u64,
                kind: CampaignKind,
                spread: Duration,
                now: u64,
            ) -> Result<u64, StoreError> {
                let (kind, old_until) = campaigns::kind_columns(kind);
                let id: i64 = sqlx::query(campaigns::SQL_INSERT)
                    .bind(i64::from(key_group))
                    .bind(to_db(key_from))
                    .bind(kind)
                    .bind(old_until)
                    .bind(to_db(now))
                    .bind(to_db(spread.as_secs()))
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(backend)?
                    .try_get("id")
                    .map_err(backend)?;
                from_db(id, "campaign id")
            }

            fn campaign_row(row: &<$db as sqlx::Database>::Row) -> Result<Campaign, StoreError> {
                campaigns::decode(campaigns::RawCampaign {
                    id: row.try_get("id").map_err(backend)?,
                    key_group: row.try_get("key_group").map_err(backend)?,
                    key_from: row.try_get("key_from").map_err(backend)?,
                    kind: row.try_get("kind").map_err(backend)?,
                    old_until: row.try_get("old_until").map_err(backend)?,
                    created_at: row.try_get("created_at").map_err(backend)?,
                    spread_secs: row.try_get("spread_secs").map_err(backend)?,
                    resume_after: row.try_get("resume_after").map_err(backend)?,
                    terminals: row.try_get("terminals").map_err(backend)?,
                    queued: row.try_get("queued").map_err(backend)?,
                    finished_at: row.try_get("finished_at").map_err(backend)?,
                    key_number: row.try_get("key_number").map_err(backend)?,
                    key_until: row.try_get("window_until").map_err(backend)?,
                    revoked_at: row.try_get("revoked_at").map_err(backend)?,
                    key_domain: row.try_get("key_domain").map_err(backend)?,
                })
            }

            /// The registration columns of a campaign page's row, as a [`Terminal`].
            fn terminal_registration(row: &<$db as sqlx::Database>::Row) -> Result<Terminal, StoreError> {
                let address: Option<String> = row.try_get("reg_address").map_err(backend)?;
                let interface: Option<String> = row.try_get("reg_interface").map_err(backend)?;
                let at: Option<i64> = row.try_get("reg_at").map_err(backend)?;
                Ok(Terminal {
                    id: TerminalId(row.try_get("impi").map_err(backend)?),
                    btid: None,
                    registration: Self::registration_of(address, interface, at)?,
                    last_seen: 0,
                    bcast_client_id: None,
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
                self.changing(async {
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
                })
                .await
            }

            async fn services(&self) -> Result<Vec<Service>, StoreError> {
                self.cached(
                    catalogue_cache::CatalogueCache::services,
                    catalogue_cache::CatalogueCache::put_services,
                    async {
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
                    },
                )
                .await
            }

            async fn put_program(&self, p: &Program) -> Result<(), StoreError> {
                self.changing(async {
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
                })
                .await
            }

            async fn programs(&self) -> Result<Vec<Program>, StoreError> {
                self.cached(
                    catalogue_cache::CatalogueCache::programs,
                    catalogue_cache::CatalogueCache::put_programs,
                    async {
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
                    },
                )
                .await
            }

            async fn put_purchase_item(&self, item: &PurchaseItem) -> Result<(), StoreError> {
                self.changing(async {
                    let mut tx = self.pool.begin().await.map_err(backend)?;
                    sqlx::query(SQL_PUT_ITEM)
                        .bind(item.global_id.as_str())
                        .bind(item.name.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    sqlx::query(SQL_CLEAR_ITEM_SERVICES)
                        .bind(item.global_id.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
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
                })
                .await
            }

            async fn purchase_items(&self) -> Result<Vec<PurchaseItem>, StoreError> {
                self.cached(catalogue_cache::CatalogueCache::items, catalogue_cache::CatalogueCache::put_items, async {
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
                })
                .await
            }

            async fn put_purchase_data(&self, d: &PurchaseData) -> Result<(), StoreError> {
                self.changing(async {
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
                        .bind(i64::from(d.play_backs))
                        .execute(&self.pool)
                        .await
                        .map_err(missing_or_backend(|| format!("purchase item {} (or its program)", d.item)))?;
                    Ok(())
                })
                .await
            }

            async fn purchase_data(&self) -> Result<Vec<PurchaseData>, StoreError> {
                self.cached(
                    catalogue_cache::CatalogueCache::offers,
                    catalogue_cache::CatalogueCache::put_offers,
                    async {
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
                                    play_backs: u16_from_db(row.try_get("play_backs").map_err(backend)?, "play_backs")?,
                                })
                            })
                            .collect()
                    },
                )
                .await
            }

            async fn add_key(&self, k: &StoredKey) -> Result<(), StoreError> {
                self.changing(async {
                    let mut tx = self.keys_tx().await?;
                    Self::insert_key(&self.key, &mut tx, k).await?;
                    tx.commit().await.map_err(backend)
                })
                .await
            }

            async fn add_key_campaign(&self, k: &StoredKey, spread: Duration, now: u64) -> Result<u64, StoreError> {
                self.changing(async {
                    let mut tx = self.keys_tx().await?;
                    Self::insert_key(&self.key, &mut tx, k).await?;
                    let id = Self::insert_campaign(
                        &mut tx,
                        k.entry.id.key_group,
                        k.entry.window.from,
                        CampaignKind::Deliver,
                        spread,
                        now,
                    )
                    .await?;
                    tx.commit().await.map_err(backend)?;
                    Ok(id)
                })
                .await
            }

            async fn key_entries(&self, key_group: u16) -> Result<Vec<KeyEntry>, StoreError> {
                Ok(self.group_keys(key_group).await?.iter().map(|k| k.entry.clone()).collect())
            }

            async fn key(&self, id: SekPekId, at: u64) -> Result<Option<StoredKey>, StoreError> {
                // The key whose window holds `at`, else the latest with this number (numbers
                // repeat after 65 535 keys).
                let keys = self.group_keys(id.key_group).await?;
                let mut mine = keys.iter().filter(|k| k.entry.id.key_number == id.key_number);
                let found = match mine.clone().find(|k| k.entry.window.contains(at)) {
                    Some(k) => Some(k),
                    None => mine.next_back(),
                };
                found.map(|k| k.key.clone()).transpose()
            }

            async fn keys_covering(&self, key_group: u16, window: Window) -> Result<Vec<StoredKey>, StoreError> {
                let keys = self.group_keys(key_group).await?;
                keys.iter().filter(|k| k.entry.window.overlaps(&window)).map(|k| k.key.clone()).collect()
            }

            async fn revoke_key(&self, id: SekPekId, at: u64) -> Result<bool, StoreError> {
                self.changing(async {
                    let done = sqlx::query(SQL_REVOKE_KEY)
                        .bind(i64::from(id.key_group))
                        .bind(i64::from(id.key_number))
                        .bind(to_db(at))
                        .execute(&self.pool)
                        .await
                        .map_err(backend)?;
                    Ok(done.rows_affected() > 0)
                })
                .await
            }

            async fn touch_terminal(&self, id: &TerminalId, btid: &str, now: u64) -> Result<Terminal, StoreError> {
                // The no-write rule of the trait docs: a read, and no write lock, for a terminal
                // heard from again within the granularity under the same B-TID.
                if let Some(known) = self.terminal(id).await?
                    && known.btid.as_deref() == Some(btid)
                    && known.last_seen.abs_diff(now) < super::UNCHANGED_WRITE_GRANULARITY
                {
                    return Ok(known);
                }
                let sql = format!(
                    "INSERT INTO terminals (impi, btid, last_seen) VALUES ($1, $2, $3) ON CONFLICT (impi) DO UPDATE \
                     SET btid = excluded.btid, last_seen = excluded.last_seen RETURNING {TERMINAL_COLUMNS}"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id.0.as_str())
                    .bind(btid)
                    .bind(to_db(now))
                    .fetch_one(&self.pool)
                    .await;
                self.terminal_changed(&id.0);
                Self::terminal_row(&row.map_err(backend)?)
            }

            async fn terminal(&self, id: &TerminalId) -> Result<Option<Terminal>, StoreError> {
                let generation = match &self.local {
                    Some(local) => {
                        if let Some(known) = local.terminals.terminal(&id.0) {
                            return Ok(known);
                        }
                        Some(local.terminals.generation())
                    }
                    None => None,
                };
                static SQL: LazyLock<String> =
                    LazyLock::new(|| format!("SELECT {TERMINAL_COLUMNS} FROM terminals WHERE impi = $1"));
                let row =
                    sqlx::query(SQL.as_str()).bind(id.0.as_str()).fetch_optional(&self.pool).await.map_err(backend)?;
                let terminal = row.map(|row| Self::terminal_row(&row)).transpose()?;
                if let (Some(local), Some(generation)) = (&self.local, generation) {
                    local.terminals.put_terminal(generation, &id.0, terminal.clone());
                }
                Ok(terminal)
            }

            async fn set_bcast_client_id(
                &self,
                id: &TerminalId,
                client_id: &BcastClientId,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(SQL_SET_CLIENT_ID)
                    .bind(id.0.as_str())
                    .bind(client_id.as_bytes())
                    .execute(&self.pool)
                    .await;
                self.terminal_changed(&id.0);
                Ok(done.map_err(backend)?.rows_affected() > 0)
            }

            async fn register(&self, id: &TerminalId, r: &Registration) -> Result<bool, StoreError> {
                // The no-write rule of the trait docs: same address and interface, registered
                // within the granularity.
                let Some(known) = self.terminal(id).await? else { return Ok(false) };
                if known.registration.as_ref().is_some_and(|current| r.renews(current)) {
                    return Ok(true);
                }
                let done = sqlx::query(SQL_REGISTER)
                    .bind(id.0.as_str())
                    .bind(r.address.as_str())
                    .bind(r.interface.as_str())
                    .bind(to_db(r.at))
                    .execute(&self.pool)
                    .await;
                self.terminal_changed(&id.0);
                Ok(done.map_err(backend)?.rows_affected() == 1)
            }

            async fn deregister(&self, id: &TerminalId) -> Result<bool, StoreError> {
                let done = sqlx::query(SQL_DEREGISTER).bind(id.0.as_str()).execute(&self.pool).await;
                self.terminal_changed(&id.0);
                Ok(done.map_err(backend)?.rows_affected() == 1)
            }

            async fn put_purchase(&self, p: &Purchase) -> Result<(), StoreError> {
                let (kind, program, tokens) = kind_to_db(&p.kind);
                let done = sqlx::query(SQL_PUT_PURCHASE)
                    .bind(p.terminal.0.as_str())
                    .bind(p.item.as_str())
                    .bind(p.purchase_data.as_str())
                    .bind(kind)
                    .bind(program)
                    .bind(tokens)
                    .bind(to_db(p.window.from))
                    .bind(to_db(p.window.until))
                    .execute(&self.pool)
                    .await;
                self.terminal_changed(&p.terminal.0);
                done.map_err(missing_or_backend(|| {
                    format!("terminal {}, purchase item {} or offer {}", p.terminal.0, p.item, p.purchase_data)
                }))?;
                Ok(())
            }

            async fn purchases(&self, terminal: &TerminalId) -> Result<Vec<Purchase>, StoreError> {
                let generation = match &self.local {
                    Some(local) => {
                        if let Some(known) = local.terminals.purchases(&terminal.0) {
                            return Ok((*known).clone());
                        }
                        Some(local.terminals.generation())
                    }
                    None => None,
                };
                static SQL: LazyLock<String> = LazyLock::new(|| {
                    format!("SELECT {PURCHASE_COLUMNS} FROM purchases WHERE terminal = $1 ORDER BY item")
                });
                let rows =
                    sqlx::query(SQL.as_str()).bind(terminal.0.as_str()).fetch_all(&self.pool).await.map_err(backend)?;
                let purchases = rows.iter().map(Self::purchase_row).collect::<Result<Vec<_>, _>>()?;
                if let (Some(local), Some(generation)) = (&self.local, generation) {
                    local.terminals.put_purchases(generation, &terminal.0, purchases.clone());
                }
                Ok(purchases)
            }

            async fn remove_purchase(&self, terminal: &TerminalId, item: &str) -> Result<Option<Purchase>, StoreError> {
                let sql =
                    format!("DELETE FROM purchases WHERE terminal = $1 AND item = $2 RETURNING {PURCHASE_COLUMNS}");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(terminal.0.as_str())
                    .bind(item)
                    .fetch_optional(&self.pool)
                    .await;
                self.terminal_changed(&terminal.0);
                row.map_err(backend)?.map(|row| Self::purchase_row(&row)).transpose()
            }

            async fn purge_purchases(&self, terminal: &TerminalId, now: u64) -> Result<u64, StoreError> {
                let done = sqlx::query(SQL_PURGE_PURCHASES)
                    .bind(terminal.0.as_str())
                    .bind(to_db(now))
                    .execute(&self.pool)
                    .await;
                self.terminal_changed(&terminal.0);
                Ok(done.map_err(backend)?.rows_affected())
            }

            async fn reserve_ltkm_ts(&self, terminal: &TerminalId, smk: &str, n: u32) -> Result<u32, StoreError> {
                if n == 0 {
                    return Err(StoreError::Conflict("reserve at least one LTKM timestamp".into()));
                }
                match &self.local {
                    // One process on the database: blocks of TS values, each reserved durably
                    // (group-committed) before any of it is handed out (module `local`).
                    Some(local) => local.ts.reserve(&self.ts, &terminal.0, smk, n).await,
                    None => self.ts.reserve(&terminal.0, smk, n).await,
                }
            }

            async fn enqueue_deliveries(&self, rows: &[DeliveryRow]) -> Result<u64, StoreError> {
                let plain = LtkmForm::default();
                self.enqueue_formed(rows.iter().map(|r| (r, &plain)).collect()).await
            }

            async fn enqueue_pushes(&self, pushes: &[(DeliveryRow, LtkmForm)]) -> Result<u64, StoreError> {
                self.enqueue_formed(pushes.iter().map(|(r, f)| (r, f)).collect()).await
            }

            async fn delivery_form(&self, key: &DeliveryKey) -> Result<Option<LtkmForm>, StoreError> {
                let (terminal, key_domain, key_group, key_number, version) = deliveries::key_columns(key);
                let row = sqlx::query(deliveries::SQL_FORM.as_str())
                    .bind(terminal)
                    .bind(key_domain)
                    .bind(key_group)
                    .bind(key_number)
                    .bind(version)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?;
                row.map(|r| {
                    deliveries::decode_form(r.try_get("ext").map_err(backend)?, r.try_get("srtp").map_err(backend)?)
                })
                .transpose()
            }

            async fn latest_delivery_version(
                &self,
                terminal: &str,
                key_domain_id: KeyDomainId,
                sek_pek_id: SekPekId,
            ) -> Result<Option<u32>, StoreError> {
                let v: Option<i64> = sqlx::query(deliveries::SQL_LATEST_VERSION)
                    .bind(terminal)
                    .bind(key_domain_id.0.as_slice())
                    .bind(i64::from(sek_pek_id.key_group))
                    .bind(i64::from(sek_pek_id.key_number))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(backend)?
                    .try_get("v")
                    .map_err(backend)?;
                v.map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("delivery version {v}"))))
                    .transpose()
            }

            async fn live_deliveries_of(&self, terminal: &str) -> Result<Vec<(DeliveryId, DeliveryRow)>, StoreError> {
                // One process on the database: "none" is kept until a delivery write (module
                // `local`); the usual answer of a terminal that takes its keys in HTTP answers.
                let generation = match &self.local {
                    Some(local) if local.terminals.no_live(terminal) => return Ok(Vec::new()),
                    Some(local) => Some(local.terminals.live_generation()),
                    None => None,
                };
                let rows = sqlx::query(deliveries::SELECT_LIVE_OF.as_str())
                    .bind(terminal)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(backend)?;
                let live = deliveries::group(rows.iter().map(|r| Ok((Self::delivery_raw(r)?, Self::sent_raw(r)?))))?;
                if let (Some(local), Some(generation)) = (&self.local, generation)
                    && live.is_empty()
                {
                    local.terminals.put_no_live(generation, terminal);
                }
                Ok(live)
            }

            async fn find_sent(&self, btid: &str, ts: u32) -> Result<Option<SentMatch>, StoreError> {
                let rows = sqlx::query(deliveries::SELECT_BY_SENT.as_str())
                    .bind(btid)
                    .bind(i64::from(ts))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(backend)?;
                let Some(first) = rows.first() else { return Ok(None) };
                let form = deliveries::decode_form(
                    first.try_get("f_ext").map_err(backend)?,
                    first.try_get("f_srtp").map_err(backend)?,
                )?;
                let found = deliveries::group(rows.iter().map(|r| Ok((Self::delivery_raw(r)?, Self::sent_raw(r)?))))?;
                let Some((id, row)) = found.into_iter().next() else { return Ok(None) };
                let sent = row
                    .sent
                    .iter()
                    .find(|s| s.btid == btid && s.ts == ts)
                    .cloned()
                    .ok_or_else(|| StoreError::Corrupt("sent LTKM missing from its delivery".into()))?;
                Ok(Some(SentMatch { id, row, sent, form }))
            }

            async fn acknowledge_sent(&self, btid: &str, ts: u32, now: Time) -> Result<Option<AckOutcome>, StoreError> {
                static STATE: LazyLock<String> = LazyLock::new(|| deliveries::state_by_id_sql($row_lock));
                let mut tx = self.write_tx().await?;
                let answered = sqlx::query(deliveries::SQL_SENT_ANSWER)
                    .bind(btid)
                    .bind(i64::from(ts))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
                let Some(answered) = answered else {
                    let n: i64 = sqlx::query(deliveries::SQL_SENT_EXISTS)
                        .bind(btid)
                        .bind(i64::from(ts))
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(backend)?
                        .try_get("n")
                        .map_err(backend)?;
                    // Nothing was written; release the write lock now rather than on drop.
                    let _ = tx.rollback().await;
                    return if n == 0 {
                        Err(StoreError::Missing(format!("sent LTKM TS {ts} for {btid}")))
                    } else {
                        Ok(None)
                    };
                };
                let id: i64 = answered.try_get("delivery").map_err(backend)?;
                let state: String = sqlx::query(STATE.as_str())
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(backend)?
                    .try_get("state")
                    .map_err(backend)?;
                let outcome = match state.as_str() {
                    deliveries::ACKNOWLEDGED => AckOutcome::AlreadyAcknowledged,
                    deliveries::FAILED => AckOutcome::AfterGiveUp,
                    _ => AckOutcome::Acknowledged,
                };
                sqlx::query(deliveries::SQL_ACK_BY_ID)
                    .bind(id)
                    .bind(to_db(now.as_micros()))
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                tx.commit().await.map_err(backend)?;
                Ok(Some(outcome))
            }

            async fn claim_due(
                &self,
                worker: &str,
                now: Time,
                lease: Duration,
                limit: u32,
            ) -> Result<Vec<(DeliveryId, DeliveryRow)>, StoreError> {
                static CLAIM: LazyLock<String> = LazyLock::new(|| deliveries::claim_sql($claim_lock));
                if limit == 0 {
                    return Ok(Vec::new());
                }
                let mut tx = self.write_tx().await?;
                let found = sqlx::query(CLAIM.as_str())
                    .bind(worker)
                    .bind(to_db(now.after(lease).as_micros()))
                    .bind(to_db(now.as_micros()))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(backend)?;
                let mut claimed = found
                    .iter()
                    .map(|row| deliveries::decode(Self::delivery_raw(row)?))
                    .collect::<Result<Vec<_>, StoreError>>()?;
                // RETURNING promises no order.
                claimed.sort_unstable_by_key(|(id, row)| (row.due, *id));
                Self::attach_sent(&mut *tx, &mut claimed).await?;
                tx.commit().await.map_err(backend)?;
                Ok(claimed)
            }

            async fn record_send(
                &self,
                worker: &str,
                key: &DeliveryKey,
                attempt: Attempt,
                btid: &str,
                now: Time,
                next_due: Time,
            ) -> Result<LtkmTs, StoreError> {
                let ts = self.record_attempt(worker, key, attempt, Some(btid), now, next_due).await?;
                // `record_attempt` reserved a TS for the B-TID it was given.
                let ts = ts.ok_or_else(|| StoreError::Corrupt("no TS reserved".into()))?;
                // The counter row now holds `ts` durably: this is the reservation, persisted.
                Ok(LtkmCounter::restore(btid, ts.wrapping_sub(1)).reserve(btid).persisted())
            }

            async fn record_unsent(
                &self,
                worker: &str,
                key: &DeliveryKey,
                attempt: Attempt,
                now: Time,
                next_due: Time,
            ) -> Result<(), StoreError> {
                self.record_attempt(worker, key, attempt, None, now, next_due).await.map(|_| ())
            }

            async fn record_sends(
                &self,
                worker: &str,
                sends: &[SendRecord],
                now: Time,
            ) -> Result<Vec<Result<Option<LtkmTs>, StoreError>>, StoreError> {
                use sqlx::Acquire as _;
                let mut tx = self.write_tx().await?;
                let mut out = Vec::with_capacity(sends.len());
                let mut reserved = Vec::new();
                for send in sends {
                    // A savepoint per attempt: one refused attempt leaves the others' writes.
                    let mut one = tx.begin().await.map_err(backend)?;
                    let btid = send.btid.as_deref();
                    match Self::record_attempt_in(&mut one, worker, &send.key, send.attempt, btid, now, send.next_due)
                        .await
                    {
                        Ok(ts) => {
                            one.commit().await.map_err(backend)?;
                            if ts.is_some() {
                                reserved.push(send.key.terminal.as_str());
                            }
                            out.push(Ok(btid
                                .zip(ts)
                                .map(|(b, ts)| LtkmCounter::restore(b, ts.wrapping_sub(1)).reserve(b).persisted())));
                        }
                        Err(e) => {
                            one.rollback().await.map_err(backend)?;
                            out.push(Err(e));
                        }
                    }
                }
                let done = tx.commit().await;
                self.after_sends(None).await;
                for terminal in reserved {
                    self.after_sends(Some(terminal)).await;
                }
                done.map_err(backend)?;
                Ok(out)
            }

            async fn record_outcome(
                &self,
                key: &DeliveryKey,
                state: DeliveryState,
                due: Option<Time>,
            ) -> Result<bool, StoreError> {
                let (terminal, key_domain, key_group, key_number, version) = deliveries::key_columns(key);
                let (name, attempt, at, reason) = deliveries::state_columns(&state);
                let query = match state {
                    DeliveryState::Acknowledged { .. } => sqlx::query(deliveries::SQL_OUTCOME_ACK.as_str()),
                    DeliveryState::Failed { .. } => sqlx::query(deliveries::SQL_OUTCOME_FAIL.as_str()),
                    _ => sqlx::query(deliveries::SQL_OUTCOME_LIVE.as_str()),
                };
                let query = query.bind(terminal).bind(key_domain).bind(key_group).bind(key_number).bind(version);
                let query = match state {
                    DeliveryState::Acknowledged { .. } => query.bind(at),
                    DeliveryState::Failed { .. } => query.bind(at).bind(reason),
                    _ => {
                        let due = due.ok_or_else(|| {
                            StoreError::Invalid(format!("live state for {} without a due time", key_name(key)))
                        })?;
                        query.bind(name).bind(attempt).bind(at).bind(to_db(due.as_micros()))
                    }
                };
                let done = query.execute(&self.pool).await;
                self.deliveries_changed();
                let done = done.map_err(backend)?;
                if done.rows_affected() > 0 {
                    return Ok(true);
                }
                let n: i64 = sqlx::query(deliveries::SQL_EXISTS.as_str())
                    .bind(terminal)
                    .bind(key_domain)
                    .bind(key_group)
                    .bind(key_number)
                    .bind(version)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(backend)?
                    .try_get("n")
                    .map_err(backend)?;
                if n == 0 { Err(StoreError::Missing(key_name(key))) } else { Ok(false) }
            }

            async fn open_deliveries(&self) -> Result<Vec<(DeliveryId, DeliveryRow)>, StoreError> {
                let rows =
                    sqlx::query(deliveries::SELECT_OPEN.as_str()).fetch_all(&self.pool).await.map_err(backend)?;
                deliveries::group(rows.iter().map(|r| Ok((Self::delivery_raw(r)?, Self::sent_raw(r)?))))
            }

            async fn delivery(&self, key: &DeliveryKey) -> Result<Option<(DeliveryId, DeliveryRow)>, StoreError> {
                let (terminal, key_domain, key_group, key_number, version) = deliveries::key_columns(key);
                let rows = sqlx::query(deliveries::SELECT_ONE.as_str())
                    .bind(terminal)
                    .bind(key_domain)
                    .bind(key_group)
                    .bind(key_number)
                    .bind(version)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(backend)?;
                let found = deliveries::group(rows.iter().map(|r| Ok((Self::delivery_raw(r)?, Self::sent_raw(r)?))))?;
                Ok(found.into_iter().next())
            }

            async fn update_key_until(
                &self,
                id: SekPekId,
                from: u64,
                until: u64,
                spread: Duration,
                now: u64,
            ) -> Result<u64, StoreError> {
                self.changing(async {
                    let name = || format!("key {}/{} starting at {from}", id.key_group, id.key_number);
                    let mut tx = self.keys_tx().await?;
                    let row = sqlx::query(campaigns::SQL_KEY_AT)
                        .bind(i64::from(id.key_group))
                        .bind(to_db(from))
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(backend)?;
                    let Some(row) = row else { return Err(StoreError::Missing(name())) };
                    let number: i64 = row.try_get("key_number").map_err(backend)?;
                    if number != i64::from(id.key_number) {
                        return Err(StoreError::Missing(name()));
                    }
                    let old_until = from_db(row.try_get("window_until").map_err(backend)?, "key end")?;
                    let revoked: Option<i64> = row.try_get("revoked_at").map_err(backend)?;
                    if revoked.is_some() {
                        return Err(StoreError::Conflict(format!("{} is revoked", name())));
                    }
                    if until <= from {
                        return Err(StoreError::Conflict(format!("{} cannot end at or before its start", name())));
                    }
                    let next: Option<i64> = sqlx::query(campaigns::SQL_NEXT_KEY_START)
                        .bind(i64::from(id.key_group))
                        .bind(to_db(from))
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(backend)?
                        .try_get("next")
                        .map_err(backend)?;
                    if let Some(next) = next
                        && to_db(until) > next
                    {
                        return Err(StoreError::Conflict(format!(
                            "{} would overlap the next key of its group (starting at {next})",
                            name()
                        )));
                    }
                    sqlx::query(campaigns::SQL_SET_UNTIL)
                        .bind(i64::from(id.key_group))
                        .bind(to_db(from))
                        .bind(to_db(until))
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    let kind = CampaignKind::UpdateValidity { old_until };
                    let campaign = Self::insert_campaign(&mut tx, id.key_group, from, kind, spread, now).await?;
                    tx.commit().await.map_err(backend)?;
                    Ok(campaign)
                })
                .await
            }

            async fn campaigns(&self, open_only: bool) -> Result<Vec<Campaign>, StoreError> {
                let filter = if open_only { " WHERE c.finished_at IS NULL" } else { "" };
                let sql = format!("{}{filter} ORDER BY c.id DESC", campaigns::SQL_SELECT);
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await.map_err(backend)?;
                rows.iter().map(Self::campaign_row).collect()
            }

            async fn campaign_page(
                &self,
                campaign: &Campaign,
                after: Option<&str>,
                limit: u32,
            ) -> Result<CampaignPage, StoreError> {
                let ids = match after {
                    Some(after) => sqlx::query(campaigns::SQL_PAGE_IDS_AFTER).bind(after).bind(i64::from(limit)),
                    None => sqlx::query(campaigns::SQL_PAGE_IDS_FIRST).bind(i64::from(limit)),
                }
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
                let ids: Vec<String> = ids
                    .iter()
                    .map(|r| r.try_get::<String, _>("terminal").map_err(backend))
                    .collect::<Result<_, _>>()?;
                let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
                    return Ok(CampaignPage { targets: Vec::new(), looked_at: 0, last: None });
                };
                let rows = sqlx::query(campaigns::SQL_PAGE_TARGETS)
                    .bind(first.as_str())
                    .bind(last.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(backend)?;
                let versions = sqlx::query(campaigns::SQL_PAGE_VERSIONS)
                    .bind(first.as_str())
                    .bind(last.as_str())
                    .bind(campaign.key_domain.0.to_vec())
                    .bind(i64::from(campaign.key.id.key_group))
                    .bind(i64::from(campaign.key.id.key_number))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(backend)?;
                let mut latest = std::collections::HashMap::with_capacity(versions.len());
                for v in &versions {
                    let terminal: String = v.try_get("terminal").map_err(backend)?;
                    let version: i64 = v.try_get("version").map_err(backend)?;
                    latest.insert(
                        terminal,
                        u32::try_from(version).map_err(|_| StoreError::Corrupt(format!("version {version}")))?,
                    );
                }
                let mut targets: Vec<CampaignTarget> = Vec::new();
                for row in &rows {
                    let purchase = Self::purchase_row(row)?;
                    if targets.last().is_none_or(|t| t.terminal != purchase.terminal) {
                        let terminal = Self::terminal_registration(row)?;
                        let Some(registration) = terminal.registration else { continue };
                        targets.push(CampaignTarget {
                            latest_version: latest.get(&terminal.id.0).copied(),
                            terminal: terminal.id,
                            registration,
                            purchases: Vec::new(),
                        });
                    }
                    if let Some(t) = targets.last_mut() {
                        t.purchases.push(purchase);
                    }
                }
                Ok(CampaignPage {
                    targets,
                    looked_at: u64::try_from(ids.len()).unwrap_or(u64::MAX),
                    last: Some(last.clone()),
                })
            }

            async fn advance_campaign(
                &self,
                campaign: u64,
                after: Option<&str>,
                last: Option<&str>,
                rows: &[(DeliveryRow, LtkmForm)],
                looked_at: u64,
                finished_at: Option<u64>,
            ) -> Result<u64, StoreError> {
                static STATE: LazyLock<String> = LazyLock::new(|| format!("{} {}", campaigns::SQL_STATE, $row_lock));
                let mut tx = self.write_tx().await?;
                let state = sqlx::query(STATE.as_str())
                    .bind(to_db(campaign))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?
                    .ok_or_else(|| StoreError::Missing(format!("campaign {campaign}")))?;
                let cursor: Option<String> = state.try_get("resume_after").map_err(backend)?;
                let finished: Option<i64> = state.try_get("finished_at").map_err(backend)?;
                if finished.is_some() || cursor.as_deref() != after {
                    let _ = tx.rollback().await;
                    return Err(StoreError::NotClaimed(format!(
                        "campaign {campaign} was advanced by another worker (or ended)"
                    )));
                }
                let head = format!("INSERT INTO deliveries ({}) VALUES ", deliveries::INSERT_COLUMNS);
                let per_statement: usize = $max_params / deliveries::INSERT_ARITY;
                let mut stored = 0u64;
                for chunk in rows.chunks(per_statement) {
                    let mut st = Statement::<<$db as sqlx::Database>::Arguments>::new(&head);
                    for (i, (row, form)) in chunk.iter().enumerate() {
                        if !row.sent.is_empty() {
                            return Err(StoreError::Invalid(
                                "a campaign's deliveries are fresh (no sent attempts)".into(),
                            ));
                        }
                        if i > 0 {
                            st.text(", ");
                        }
                        Self::push_row(&mut st, deliveries::encode(row, form)?)?;
                    }
                    st.text(" ON CONFLICT DO NOTHING");
                    let done = sqlx::query_with(AssertSqlSafe(st.sql), st.args)
                        .execute(&mut *tx)
                        .await
                        .map_err(insert_error)?;
                    stored += done.rows_affected();
                }
                sqlx::query(campaigns::SQL_ADVANCE)
                    .bind(to_db(campaign))
                    .bind(last)
                    .bind(to_db(looked_at))
                    .bind(to_db(stored))
                    .bind(finished_at.map(to_db))
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                let done = tx.commit().await;
                self.deliveries_changed();
                done.map_err(backend)?;
                Ok(stored)
            }

            async fn import_terminals(&self, terminals: &[TerminalImport]) -> Result<u64, StoreError> {
                for t in terminals {
                    if let Some(p) = t.purchases.iter().find(|p| p.terminal != t.id) {
                        return Err(StoreError::Invalid(format!(
                            "purchase of {} listed under terminal {}",
                            p.terminal.0, t.id.0
                        )));
                    }
                }
                let mut tx = self.write_tx().await?;
                for chunk in terminals.chunks($max_params / campaigns::IMPORT_TERMINAL_ARITY) {
                    let mut st = Statement::<<$db as sqlx::Database>::Arguments>::new(campaigns::IMPORT_TERMINAL_HEAD);
                    for (i, t) in chunk.iter().enumerate() {
                        if i > 0 {
                            st.text(", ");
                        }
                        let r = t.registration.as_ref();
                        st.text("(").bind(t.id.0.as_str())?.text(", ").bind(to_db(r.map_or(0, |r| r.at)))?;
                        st.text(", ").bind(r.map(|r| r.address.as_str()))?;
                        st.text(", ").bind(r.map(|r| r.interface.as_str()))?;
                        st.text(", ").bind(r.map(|r| to_db(r.at)))?.text(")");
                    }
                    st.text(campaigns::IMPORT_TERMINAL_TAIL);
                    sqlx::query_with(AssertSqlSafe(st.sql), st.args).execute(&mut *tx).await.map_err(backend)?;
                }
                let purchases: Vec<&Purchase> = terminals.iter().flat_map(|t| &t.purchases).collect();
                for chunk in purchases.chunks($max_params / campaigns::IMPORT_PURCHASE_ARITY) {
                    let mut st = Statement::<<$db as sqlx::Database>::Arguments>::new(campaigns::IMPORT_PURCHASE_HEAD);
                    for (i, p) in chunk.iter().enumerate() {
                        if i > 0 {
                            st.text(", ");
                        }
                        let (kind, program, tokens) = kind_to_db(&p.kind);
                        st.text("(").bind(p.terminal.0.as_str())?.text(", ").bind(p.item.as_str())?;
                        st.text(", ").bind(p.purchase_data.as_str())?.text(", ").bind(kind)?;
                        st.text(", ").bind(program)?.text(", ").bind(tokens)?;
                        st.text(", ").bind(to_db(p.window.from))?.text(", ").bind(to_db(p.window.until))?.text(")");
                    }
                    st.text(campaigns::IMPORT_PURCHASE_TAIL);
                    sqlx::query_with(AssertSqlSafe(st.sql), st.args)
                        .execute(&mut *tx)
                        .await
                        .map_err(missing_or_backend(|| "a purchase item, offer or program of the import".into()))?;
                }
                let done = tx.commit().await;
                if let Some(local) = &self.local {
                    local.terminals.changed_all();
                }
                done.map_err(backend)?;
                Ok(u64::try_from(terminals.len()).unwrap_or(u64::MAX))
            }

            async fn subscribers(&self) -> Result<u64, StoreError> {
                let n: i64 = sqlx::query(campaigns::SQL_SUBSCRIBERS)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(backend)?
                    .try_get("n")
                    .map_err(backend)?;
                from_db(n, "subscriber count")
            }

            async fn delivery_summary(&self, id: SekPekId) -> Result<DeliverySummary, StoreError> {
                let row = sqlx::query(campaigns::SQL_DELIVERY_SUMMARY)
                    .bind(i64::from(id.key_group))
                    .bind(i64::from(id.key_number))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(backend)?;
                // The sums are cast to BIGINT in the SQL: PostgreSQL sums integers as NUMERIC.
                let count = |name: &str| -> Result<u64, StoreError> {
                    let v: i64 = row.try_get(name).map_err(backend)?;
                    from_db(v, name)
                };
                Ok(DeliverySummary {
                    rows: count("n")?,
                    terminals: count("terminals")?,
                    max_version: u32::try_from(count("max_version")?)
                        .map_err(|_| StoreError::Corrupt("delivery version".into()))?,
                    pending: count("pending")?,
                    sent: count("sent")?,
                    pull_solicited: count("pulled")?,
                    acknowledged: count("acknowledged")?,
                    failed: count("failed")?,
                })
            }
        }
    };
}

/// A [`BsmStore`] in one SQLite file (WAL journal, `synchronous=FULL`, foreign keys on).
/// Cloning shares the pool.
///
/// \[chosen\] One BSM process per database file: opening takes an exclusive lock on
/// `<file>.bsm-lock` and another process is refused while it is held (several processes share a
/// PostgreSQL database instead, [`PgStore`]). Being the only writer, the store keeps terminals,
/// their purchases, "no live deliveries" and blocks of LTKM TS values in memory (module `local`);
/// stores of this process opened on the same file share that state.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    key: StorageKey,
    ts: ts_batch::TsQueue,
    catalogue: Arc<catalogue_cache::CatalogueCache>,
    /// What only a single-process store keeps (module `local`); PostgreSQL: none.
    local: Option<Arc<local::Local>>,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database file at `path`, applies the migrations and
    /// checks the storage key.
    ///
    /// # Errors
    /// [`StoreError::WrongStorageKey`]; [`StoreError::Backend`] when the file cannot be opened or
    /// another process has it open.
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
        // The file's lock first: a second process is refused before it touches the database.
        let local = local::Local::for_file(options.get_filename())?;
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(backend)?;
        Self::init(pool, key, Some(local)).await
    }
}

/// A [`BsmStore`] in a PostgreSQL database. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    key: StorageKey,
    ts: ts_batch::TsQueue,
    catalogue: Arc<catalogue_cache::CatalogueCache>,
    /// What only a single-process store keeps (module `local`); PostgreSQL: none.
    local: Option<Arc<local::Local>>,
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
        // A request waits at most 5 s for a connection while the database is away (then the
        // store errs and the service answers 503); sqlx's reconnect backoff is a fifth of this.
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(PG_ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(backend)?;
        Self::init(pool, key, None).await
    }
}

// SQLite: `BEGIN IMMEDIATE` takes the write lock before the latest-key read. PostgreSQL: the table
// lock serialises key insertions (rare: rollovers and administration).
// Deliveries: SQLite's single writer makes a claim atomic once `BEGIN IMMEDIATE` holds the write
// lock; PostgreSQL locks the claimed rows and lets a concurrent claimer skip them rather than wait
// (several BSM processes then share the work), and `record_send` locks its row so its check and
// its writes see the same claim. Parameter limits: SQLite 32 766, PostgreSQL 65 535.
sql_store!(SqliteStore, SqlitePool, sqlx::Sqlite, SQLITE_MIGRATIONS, Some("BEGIN IMMEDIATE"), "", "", "", 32_766);
sql_store!(
    PgStore,
    PgPool,
    sqlx::Postgres,
    POSTGRES_MIGRATIONS,
    None,
    "LOCK TABLE keys IN SHARE ROW EXCLUSIVE MODE",
    "FOR UPDATE SKIP LOCKED",
    "FOR UPDATE",
    65_535
);
