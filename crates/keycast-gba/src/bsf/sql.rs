//! The SQL implementations of [`BsfStore`]: [`SqliteStore`] (the default: one file, zero setup)
//! and [`PgStore`] (PostgreSQL by URL, for several BSF instances sharing one database).
//!
//! Both run the same SQL text (`$1`-style parameters, `ON CONFLICT`, `DELETE … RETURNING`,
//! multi-row `VALUES`) through sqlx's run-time query API; only the schema files differ
//! (`migrations/sqlite/`, `migrations/postgres/`, embedded in the binary and applied by
//! [`SqliteStore::open`] and [`PgStore::open`]).
//!
//! # Group commit
//! The three calls of a bootstrap ([`BsfStore::start_run`], [`BsfStore::take_run`],
//! [`BsfStore::put_session`]) go to one writer per store (a thread of its own), which serves all the calls that
//! queued up meanwhile in one transaction of at most six statements and one commit (see
//! the `batch` module). A lone call costs one transaction as before; under load the commit (the fsync,
//! for SQLite) and the per-statement cost are shared by up to 256 calls. Each call still
//! returns only after its commit. Administration and reads ([`BsfStore::subscriber`],
//! [`BsfStore::session`] for Zn) use the pool directly.
//!
//! # Encryption at rest
//! K, OPc and Ks never reach the database in clear. Each is AES-key-wrapped (RFC 3394) under a
//! key-encryption key derived from the service's [`StorageKey`] and bound to its column and row:
//! `KEK = HMAC-SHA-256(storage key, "keycast-bsf-store " ‖ column ‖ 0x00 ‖ row id)[..16]`, where the
//! row id is the IMPI (K, OPc) or B-TID ‖ 0x00 ‖ IMPI (Ks). So a copied database file gives no
//! subscriber key away, equal keys of two subscribers do not show as equal columns, and a wrapped
//! key copied into another row or column fails its integrity check ([`StoreError::Integrity`]).
//! On open, the store checks a wrapped check value kept in `keycast_meta` (written by the first
//! open): a different storage key is refused with [`StoreError::WrongStorageKey`] before any
//! subscriber key is unwrapped.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub use keycast_crypto::at_rest::{StorageKey, StorageKeyError};
use keycast_crypto::keys::{Ks, Opc, SubscriberKey};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Row, SqlSafeStr};
use zeroize::Zeroizing;

use super::store::{
    BsfStore, GbaType, Pending, Purged, RunStart, Session, SqnAdvance, StoreError, Subscriber, SubscriberSummary,
    TakenRun,
};

mod batch;

use batch::{Answer, BatchConnection, Request, Script, SessionRow, StartAnswer, SubscriberRow, Writer};

/// Scope of the BSF's keys at rest ([`StorageKey`]'s derivation label).
const SCOPE: &str = "keycast-bsf-store";

/// Wraps a key for a column and row of this database.
fn wrap(key: &StorageKey, column: &str, row: &[&str], bytes: &[u8]) -> Vec<u8> {
    // K and OPc are 16 bytes, Ks 32: both valid RFC 3394 inputs, so this cannot fail.
    key.wrap(SCOPE, column, row, bytes).unwrap_or_default()
}

/// Unwraps a key of a column and row of this database.
fn unwrap(
    key: &StorageKey,
    column: &'static str,
    row: &[&str],
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    key.unwrap(SCOPE, column, row, wrapped).map_err(|_| StoreError::Integrity { what: column, id: row.join(" ") })
}

const CHECK_NAME: &str = "storage_key_check";

/// The schema steps of one backend, in order (embedded in the binary).
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

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, "pending by rand", include_str!("../../migrations/sqlite/0002_pending_by_rand.sql")),
];

const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/postgres/0001_init.sql")),
    (2, "pending by rand", include_str!("../../migrations/postgres/0002_pending_by_rand.sql")),
];

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Unix seconds into a BIGINT; instants past 2^63 − 1 s (never, in practice) are clamped.
fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_db(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what}")))
}

fn gba_type_from_db(text: &str) -> Result<GbaType, StoreError> {
    match text {
        "gba-u" => Ok(GbaType::GbaU),
        "gba-me" => Ok(GbaType::GbaMe),
        other => Err(StoreError::Corrupt(format!("unknown GBA type {other:?}"))),
    }
}

fn array<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt(format!("{what} is {} bytes, not {N}", bytes.len())))
}

impl SubscriberRow {
    /// The subscriber, K and OPc unwrapped (each checked against its column and row).
    fn open(self, key: &StorageKey) -> Result<Subscriber, StoreError> {
        let k = unwrap(key, "K", &[&self.impi], &self.wrapped_k)?;
        let opc = unwrap(key, "OPc", &[&self.impi], &self.wrapped_opc)?;
        Ok(Subscriber {
            k: SubscriberKey::from_slice(&k).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            opc: Opc::from_slice(&opc).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            sqn: self.sqn,
            amf: array(&self.amf, "AMF")?,
            gba_type: gba_type_from_db(&self.gba_type)?,
            imsi: self.imsi,
            impi: self.impi,
        })
    }
}

impl SessionRow {
    /// The row for `session`, Ks wrapped under its B-TID and IMPI.
    fn seal(session: Session, key: &StorageKey) -> Self {
        SessionRow {
            wrapped_ks: wrap(key, "Ks", &[&session.btid, &session.impi], session.ks.expose_secret()),
            btid: session.btid,
            impi: session.impi,
            rand: session.rand,
            gba_type: session.gba_type,
            bootstrapped_at: session.bootstrapped_at,
            expires_at: session.expires_at,
        }
    }
}

fn dynamic(sql: String) -> AssertSqlSafe<String> {
    // Built only from fixed text and `$n` placeholders: no value is ever spliced in.
    AssertSqlSafe(sql)
}

const SQL_CHECK_INSERT: &str = "INSERT INTO keycast_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
const SQL_CHECK_SELECT: &str = "SELECT value FROM keycast_meta WHERE name = $1";
const SQL_SUBSCRIBER: &str =
    "SELECT impi, imsi, wrapped_k, wrapped_opc, sqn, amf, gba_type FROM subscribers WHERE impi = $1";
const SQL_SESSION: &str =
    "SELECT btid, impi, wrapped_ks, rand, gba_type, bootstrapped_at, expires_at FROM sessions WHERE btid = $1";
const SQL_ADD_SUBSCRIBER: &str = "INSERT INTO subscribers (impi, imsi, wrapped_k, wrapped_opc, sqn, amf, gba_type) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (impi) DO NOTHING";
const SQL_SET_SQN: &str = "UPDATE subscribers SET sqn = $2 WHERE impi = $1";
const SQL_DELETE_SESSIONS_OF: &str = "DELETE FROM sessions WHERE impi = $1";
const SQL_DELETE_SUBSCRIBER: &str = "DELETE FROM subscribers WHERE impi = $1";
const SQL_LIST_SUBSCRIBERS: &str = "SELECT impi, imsi, sqn, amf, gba_type FROM subscribers ORDER BY impi";
const SQL_PURGE_SESSIONS: &str = "DELETE FROM sessions WHERE expires_at <= $1";
const SQL_PURGE_PENDING: &str = "DELETE FROM pending WHERE expires_at <= $1";

/// Fixed parts of the batch statements (see the `batch` module); the rest is built per batch.
const SQL_SELECT_SUBSCRIBERS: &str =
    "SELECT impi, imsi, wrapped_k, wrapped_opc, sqn, amf, gba_type FROM subscribers WHERE ";
const SQL_PENDING_CONFLICT: &str = " ON CONFLICT (rand) DO UPDATE SET impi = excluded.impi, \
     issued_at = excluded.issued_at, expires_at = excluded.expires_at";
const SQL_INSERT_SESSIONS: &str =
    "INSERT INTO sessions (btid, impi, wrapped_ks, rand, gba_type, bootstrapped_at, expires_at) VALUES ";
const SQL_SESSION_CONFLICT: &str = " ON CONFLICT (impi) DO UPDATE SET btid = excluded.btid, \
     wrapped_ks = excluded.wrapped_ks, rand = excluded.rand, gba_type = excluded.gba_type, \
     bootstrapped_at = excluded.bootstrapped_at, expires_at = excluded.expires_at";

/// The writer's SQLite connection leaves WAL checkpoints to [`sqlite_checkpoints`], so that no
/// batch waits for one.
fn sqlite_writer_options(options: SqliteConnectOptions) -> SqliteConnectOptions {
    options.pragma("wal_autocheckpoint", "0")
}

/// How often the writer's companion copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Checkpoints the WAL on a connection of its own, beside the writer: a passive checkpoint
/// copies what it can without waiting for (or stopping) the writer, and the WAL restarts from
/// its beginning once a checkpoint has caught up.
async fn sqlite_checkpoints(options: &SqliteConnectOptions) {
    let mut conn: Option<SqliteConnection> = None;
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if conn.is_none() {
            conn = options.connect().await.ok();
        }
        if let Some(c) = conn.as_mut()
            && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut *c).await
        {
            tracing::warn!(error = %e, "BSF store: WAL checkpoint failed");
            conn = None;
        }
    }
}

/// The writer's PostgreSQL connection is an ordinary one.
fn pg_writer_options(options: PgConnectOptions) -> PgConnectOptions {
    options
}

/// PostgreSQL needs nothing beside the writer.
async fn pg_housekeeping(_: &PgConnectOptions) {}

/// Implements [`BsfStore`] for a store type with fields `pool`, `key` and `writer`; the SQL text
/// is shared. `$begin` opens a batch transaction, `$lock` is the row-locking clause of the
/// subscriber read, `$combine` sends each phase of a batch as one multi-statement query.
macro_rules! sql_store {
    ($store:ident, $pool:ty, $db:ty, $conn:ty, $options:ty, $migrations:expr, $begin:expr, $lock:literal,
     $combine:expr, $writer_options:path, $housekeeping:path) => {
        impl $store {
            /// Applies the migrations, checks (or, on a new database, records) the storage key and
            /// starts the batch writer.
            async fn init(pool: $pool, options: $options, key: StorageKey) -> Result<Self, StoreError> {
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
                let writer = Writer::start::<$conn>(options)?;
                Ok($store { pool, key, writer })
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

            fn subscriber_row(row: &<$db as sqlx::Database>::Row) -> Result<SubscriberRow, StoreError> {
                Ok(SubscriberRow {
                    impi: row.try_get("impi").map_err(backend)?,
                    imsi: row.try_get("imsi").map_err(backend)?,
                    wrapped_k: row.try_get("wrapped_k").map_err(backend)?,
                    wrapped_opc: row.try_get("wrapped_opc").map_err(backend)?,
                    sqn: from_db(row.try_get("sqn").map_err(backend)?, "SQN")?,
                    amf: row.try_get("amf").map_err(backend)?,
                    gba_type: row.try_get("gba_type").map_err(backend)?,
                })
            }
        }

        impl BatchConnection for $conn {
            type Options = $options;

            async fn connect(options: &$options) -> Result<Self, StoreError> {
                // Batch statements differ by row count: room for every size of each.
                let options = $writer_options(options.clone()).statement_cache_capacity(8 * batch::MAX_BATCH);
                options.connect().await.map_err(backend)
            }

            async fn housekeeping(options: &$options) {
                $housekeeping(options).await;
            }

            /// One batch in one transaction: read and take, decide ([`batch::plan`]), write,
            /// commit. On failure the transaction is rolled back (the writer then opens a new
            /// connection for the next batch).
            async fn execute(&mut self, requests: Vec<Request>) -> Result<Vec<Answer>, StoreError> {
                let result = $store::run_batch(self, requests).await;
                if result.is_err() {
                    let _ = sqlx::query("ROLLBACK").execute(&mut *self).await;
                }
                result
            }
        }

        impl $store {
            async fn run_batch(conn: &mut $conn, requests: Vec<Request>) -> Result<Vec<Answer>, StoreError> {
                let combine: bool = $combine;
                let keys = batch::take_keys(&requests);
                let impis = batch::start_impis(&requests);

                // Read phase: lock, read the subscribers involved, take the answered challenges.
                let mut script = Script::<<$db as sqlx::Database>::Arguments>::new(combine);
                script.statement($begin);
                if !impis.is_empty() || !keys.is_empty() {
                    script.statement(SQL_SELECT_SUBSCRIBERS);
                    if !impis.is_empty() {
                        script.text("impi IN ").list(impis.iter().copied())?;
                    }
                    if !keys.is_empty() {
                        if !impis.is_empty() {
                            script.text(" OR ");
                        }
                        script.text("impi IN (SELECT impi FROM pending WHERE rand IN ");
                        script.list(keys.iter().map(|k| k.as_slice()))?.text(")");
                    }
                    script.text(concat!(" ORDER BY impi", $lock));
                }
                if !keys.is_empty() {
                    script.statement("DELETE FROM pending WHERE rand IN ").list(keys.iter().map(|k| k.as_slice()))?;
                    script.text(" RETURNING rand, impi, issued_at, expires_at");
                }
                let mut taken = Vec::with_capacity(keys.len());
                let mut subscribers = Vec::with_capacity(impis.len() + keys.len());
                for (sql, args) in script.finish() {
                    for row in sqlx::query_with(dynamic(sql), args).fetch_all(&mut *conn).await.map_err(backend)? {
                        if row.try_column("imsi").is_ok() {
                            subscribers.push(Self::subscriber_row(&row)?);
                        } else {
                            let rand: Vec<u8> = row.try_get("rand").map_err(backend)?;
                            taken.push(Pending {
                                impi: row.try_get("impi").map_err(backend)?,
                                rand: array(&rand, "RAND")?,
                                issued_at: from_db(row.try_get("issued_at").map_err(backend)?, "issued_at")?,
                                expires_at: from_db(row.try_get("expires_at").map_err(backend)?, "expires_at")?,
                            });
                        }
                    }
                }

                let plan = batch::plan(requests, taken, subscribers);

                // Write phase, then commit.
                let mut script = Script::<<$db as sqlx::Database>::Arguments>::new(combine);
                if !plan.sqn.is_empty() {
                    script.statement("UPDATE subscribers SET sqn = v.column2 FROM (VALUES ");
                    for (i, (impi, sqn)) in plan.sqn.iter().enumerate() {
                        script.text(if i == 0 { "(" } else { ", (" }).bind(impi.as_str())?.text(", ");
                        script.bind(to_db(*sqn))?.text(")");
                    }
                    script.text(") AS v WHERE subscribers.impi = v.column1");
                }
                if !plan.pending.is_empty() {
                    script.statement("INSERT INTO pending (rand, impi, issued_at, expires_at) VALUES ");
                    for (i, p) in plan.pending.iter().enumerate() {
                        script.text(if i == 0 { "(" } else { ", (" }).bind(p.rand.as_slice())?.text(", ");
                        script.bind(p.impi.as_str())?.text(", ").bind(to_db(p.issued_at))?.text(", ");
                        script.bind(to_db(p.expires_at))?.text(")");
                    }
                    script.text(SQL_PENDING_CONFLICT);
                }
                if !plan.sessions.is_empty() {
                    // A B-TID held by another IMPI's session (a RAND collision) is taken over; the
                    // upsert then replaces each IMPI's earlier session (one per IMPI, UNIQUE).
                    script.statement("DELETE FROM sessions WHERE btid IN ");
                    script.list(plan.sessions.iter().map(|s| s.btid.as_str()))?;
                    script.statement(SQL_INSERT_SESSIONS);
                    for (i, s) in plan.sessions.iter().enumerate() {
                        script.text(if i == 0 { "(" } else { ", (" }).bind(s.btid.as_str())?.text(", ");
                        script.bind(s.impi.as_str())?.text(", ").bind(s.wrapped_ks.as_slice())?.text(", ");
                        script.bind(s.rand.as_slice())?.text(", ").bind(s.gba_type.as_str())?.text(", ");
                        script.bind(to_db(s.bootstrapped_at))?.text(", ").bind(to_db(s.expires_at))?.text(")");
                    }
                    script.text(SQL_SESSION_CONFLICT);
                }
                script.statement("COMMIT");
                for (sql, args) in script.finish() {
                    sqlx::query_with(dynamic(sql), args).execute(&mut *conn).await.map_err(backend)?;
                }
                Ok(plan.answers)
            }
        }

        impl BsfStore for $store {
            async fn start_run(
                &self,
                impi: &str,
                advance: SqnAdvance,
                pending: Pending,
            ) -> Result<RunStart, StoreError> {
                let request = Request::Start { impi: impi.to_owned(), advance, pending };
                match self.writer.call(request).await? {
                    Answer::Start(StartAnswer::Subscriber(row)) => Ok(RunStart::Subscriber(row.open(&self.key)?)),
                    Answer::Start(StartAnswer::Unknown) => Ok(RunStart::Unknown),
                    Answer::Start(StartAnswer::Exhausted) => Ok(RunStart::SqnExhausted),
                    _ => Err(StoreError::new("batch answered a start with another kind of answer")),
                }
            }

            async fn take_run(&self, rand: &[u8; 16]) -> Result<Option<TakenRun>, StoreError> {
                match self.writer.call(Request::Take { rand: *rand }).await? {
                    Answer::Take(None) => Ok(None),
                    Answer::Take(Some((pending, row))) => {
                        let subscriber = row.map(|r| r.open(&self.key)).transpose()?;
                        Ok(Some(TakenRun { pending, subscriber }))
                    }
                    _ => Err(StoreError::new("batch answered a take with another kind of answer")),
                }
            }

            async fn put_session(&self, session: Session) -> Result<(), StoreError> {
                match self.writer.call(Request::Session(SessionRow::seal(session, &self.key))).await? {
                    Answer::Session => Ok(()),
                    _ => Err(StoreError::new("batch answered a session with another kind of answer")),
                }
            }

            async fn subscriber(&self, impi: &str) -> Result<Option<Subscriber>, StoreError> {
                let row = sqlx::query(SQL_SUBSCRIBER).bind(impi).fetch_optional(&self.pool).await.map_err(backend)?;
                row.map(|row| Self::subscriber_row(&row)?.open(&self.key)).transpose()
            }

            async fn session(&self, btid: &str) -> Result<Option<Session>, StoreError> {
                let Some(row) =
                    sqlx::query(SQL_SESSION).bind(btid).fetch_optional(&self.pool).await.map_err(backend)?
                else {
                    return Ok(None);
                };
                let btid: String = row.try_get("btid").map_err(backend)?;
                let impi: String = row.try_get("impi").map_err(backend)?;
                let wrapped_ks: Vec<u8> = row.try_get("wrapped_ks").map_err(backend)?;
                let ks = unwrap(&self.key, "Ks", &[&btid, &impi], &wrapped_ks)?;
                let rand: Vec<u8> = row.try_get("rand").map_err(backend)?;
                let gba_type: String = row.try_get("gba_type").map_err(backend)?;
                Ok(Some(Session {
                    ks: Ks::from_slice(&ks).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    rand: array(&rand, "RAND")?,
                    gba_type: gba_type_from_db(&gba_type)?,
                    bootstrapped_at: from_db(row.try_get("bootstrapped_at").map_err(backend)?, "bootstrapped_at")?,
                    expires_at: from_db(row.try_get("expires_at").map_err(backend)?, "expires_at")?,
                    btid,
                    impi,
                }))
            }

            async fn set_sqn(&self, impi: &str, sqn: u64) -> Result<bool, StoreError> {
                let done =
                    sqlx::query(SQL_SET_SQN).bind(impi).bind(to_db(sqn)).execute(&self.pool).await.map_err(backend)?;
                Ok(done.rows_affected() == 1)
            }

            async fn add_subscriber(&self, s: &Subscriber) -> Result<(), StoreError> {
                let wrapped_k = wrap(&self.key, "K", &[&s.impi], s.k.expose_secret());
                let wrapped_opc = wrap(&self.key, "OPc", &[&s.impi], s.opc.expose_secret());
                let done = sqlx::query(SQL_ADD_SUBSCRIBER)
                    .bind(&s.impi)
                    .bind(&s.imsi)
                    .bind(wrapped_k)
                    .bind(wrapped_opc)
                    .bind(to_db(s.sqn))
                    .bind(s.amf.to_vec())
                    .bind(s.gba_type.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::DuplicateSubscriber(s.impi.clone()));
                }
                Ok(())
            }

            async fn delete_subscriber(&self, impi: &str) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(backend)?;
                sqlx::query(SQL_DELETE_SESSIONS_OF).bind(impi).execute(&mut *tx).await.map_err(backend)?;
                let done = sqlx::query(SQL_DELETE_SUBSCRIBER).bind(impi).execute(&mut *tx).await.map_err(backend)?;
                tx.commit().await.map_err(backend)?;
                Ok(done.rows_affected() > 0)
            }

            async fn list_subscribers(&self) -> Result<Vec<SubscriberSummary>, StoreError> {
                let rows = sqlx::query(SQL_LIST_SUBSCRIBERS).fetch_all(&self.pool).await.map_err(backend)?;
                rows.iter()
                    .map(|row| {
                        let amf: Vec<u8> = row.try_get("amf").map_err(backend)?;
                        let gba_type: String = row.try_get("gba_type").map_err(backend)?;
                        Ok(SubscriberSummary {
                            impi: row.try_get("impi").map_err(backend)?,
                            imsi: row.try_get("imsi").map_err(backend)?,
                            sqn: from_db(row.try_get("sqn").map_err(backend)?, "SQN")?,
                            amf: array(&amf, "AMF")?,
                            gba_type: gba_type_from_db(&gba_type)?,
                        })
                    })
                    .collect()
            }

            async fn purge_expired(&self, now: u64) -> Result<Purged, StoreError> {
                let mut tx = self.pool.begin().await.map_err(backend)?;
                let sessions =
                    sqlx::query(SQL_PURGE_SESSIONS).bind(to_db(now)).execute(&mut *tx).await.map_err(backend)?;
                let pending =
                    sqlx::query(SQL_PURGE_PENDING).bind(to_db(now)).execute(&mut *tx).await.map_err(backend)?;
                tx.commit().await.map_err(backend)?;
                Ok(Purged { sessions: sessions.rows_affected(), pending: pending.rows_affected() })
            }
        }
    };
}

/// A [`BsfStore`] in one SQLite file (WAL journal, `synchronous=FULL`: a write is on disk when
/// its call returns). Cloning shares the connection pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    key: StorageKey,
    writer: Writer,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database file at `path`, applies the migrations and
    /// checks the storage key.
    ///
    /// # Errors
    /// [`StoreError::WrongStorageKey`] when the file was created with another key;
    /// [`StoreError::Backend`] when the file cannot be opened or migrated.
    pub async fn open(path: impl AsRef<Path>, key: StorageKey) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new().filename(path).create_if_missing(true);
        Self::connect_with(options, key).await
    }

    /// Opens a database given by a `sqlite:` URL (e.g. `sqlite://bsf.db?mode=rwc`).
    ///
    /// # Errors
    /// As [`SqliteStore::open`]; a malformed URL is a [`StoreError::Backend`].
    pub async fn open_url(url: &str, key: StorageKey) -> Result<Self, StoreError> {
        Self::connect_with(SqliteConnectOptions::from_str(url).map_err(backend)?, key).await
    }

    /// Opens with these connection options; the journal mode, synchronous level, busy timeout
    /// and foreign-key setting are set here.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub async fn connect_with(options: SqliteConnectOptions, key: StorageKey) -> Result<Self, StoreError> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(backend)?;
        Self::init(pool, options, key).await
    }
}

/// A [`BsfStore`] in a PostgreSQL database. Cloning shares the connection pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    key: StorageKey,
    writer: Writer,
}

impl PgStore {
    /// Connects to `url` (`postgresql://user@host:port/database`), applies the migrations and
    /// checks the storage key.
    ///
    /// # Errors
    /// [`StoreError::WrongStorageKey`] when the database was created with another key;
    /// [`StoreError::Backend`] when it cannot be reached or migrated.
    pub async fn open(url: &str, key: StorageKey) -> Result<Self, StoreError> {
        Self::connect_with(PgConnectOptions::from_str(url).map_err(backend)?, key).await
    }

    /// Connects with these options (e.g. with a `search_path` to keep the tables in a schema).
    ///
    /// # Errors
    /// As [`PgStore::open`].
    pub async fn connect_with(options: PgConnectOptions, key: StorageKey) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(backend)?;
        Self::init(pool, options, key).await
    }
}

// SQLite: `BEGIN IMMEDIATE` takes the database's write lock before the reads, so the SQN read
// and its update cannot interleave with another writer (e.g. `keycast bsf subscriber` run
// beside the service). PostgreSQL: `FOR UPDATE` locks the subscriber rows read.
sql_store!(
    SqliteStore,
    SqlitePool,
    sqlx::Sqlite,
    SqliteConnection,
    SqliteConnectOptions,
    SQLITE_MIGRATIONS,
    "BEGIN IMMEDIATE",
    "",
    true,
    sqlite_writer_options,
    sqlite_checkpoints
);
sql_store!(
    PgStore,
    PgPool,
    sqlx::Postgres,
    PgConnection,
    PgConnectOptions,
    POSTGRES_MIGRATIONS,
    "BEGIN",
    " FOR UPDATE",
    false,
    pg_writer_options,
    pg_housekeeping
);
