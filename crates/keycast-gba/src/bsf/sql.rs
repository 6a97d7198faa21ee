//! The SQL implementations of [`BsfStore`]: [`SqliteStore`] (the default: one file, zero setup)
//! and [`PgStore`] (PostgreSQL by URL, for several BSF instances sharing one database).
//!
//! Both run the same SQL text (`$1`-style parameters, `ON CONFLICT`, `DELETE … RETURNING`) through
//! sqlx's run-time query API; only the schema files differ (`migrations/sqlite/`,
//! `migrations/postgres/`, embedded in the binary and applied by [`SqliteStore::open`] and
//! [`PgStore::open`]).
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

use keycast_crypto::hmac::hmac_sha256;
use keycast_crypto::key_wrap;
use keycast_crypto::keys::{Ks, Opc, SubscriberKey};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlSafeStr};
use thiserror::Error;
use zeroize::Zeroizing;

use super::store::{BsfStore, GbaType, NonceKey, Pending, Purged, Session, StoreError, Subscriber, SubscriberSummary};

/// The key that protects K, OPc and Ks at rest (16 bytes, from the service's configuration).
/// Every BSF instance sharing a database must have the same one. Prints as `StorageKey(…)`.
#[derive(Clone)]
pub struct StorageKey(Zeroizing<[u8; 16]>);

impl core::fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("StorageKey(…)")
    }
}

/// A storage key that is not 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("storage key must be 32 hex digits (16 bytes)")]
pub struct StorageKeyError;

impl StorageKey {
    /// A storage key from its bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        StorageKey(Zeroizing::new(bytes))
    }

    /// A storage key from 32 hex digits (as written in a configuration file).
    ///
    /// # Errors
    /// [`StorageKeyError`].
    pub fn from_hex(text: &str) -> Result<Self, StorageKeyError> {
        let mut bytes = Zeroizing::new([0u8; 16]);
        hex::decode_to_slice(text.trim(), &mut bytes[..]).map_err(|_| StorageKeyError)?;
        Ok(StorageKey(bytes))
    }

    /// The KEK for one column of one row.
    fn kek(&self, column: &str, row: &[&str]) -> Zeroizing<[u8; 16]> {
        let mut parts: Vec<&[u8]> = vec![b"keycast-bsf-store ", column.as_bytes()];
        for id in row {
            parts.push(&[0]);
            parts.push(id.as_bytes());
        }
        let mac = Zeroizing::new(hmac_sha256(&self.0[..], &parts));
        Zeroizing::new(core::array::from_fn(|i| mac[i]))
    }

    fn wrap(&self, column: &str, row: &[&str], key: &[u8]) -> Vec<u8> {
        // K and OPc are 16 bytes, Ks 32: both valid RFC 3394 inputs.
        key_wrap::wrap(&self.kek(column, row), key).expect("16- or 32-byte key")
    }

    fn unwrap(&self, column: &'static str, row: &[&str], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        key_wrap::unwrap(&self.kek(column, row), wrapped)
            .map_err(|_| StoreError::Integrity { what: column, id: row.join(" ") })
    }

    /// The value stored in `keycast_meta` to recognise this key.
    fn check_value(&self) -> Vec<u8> {
        self.wrap("check", &[], &[0u8; 16])
    }
}

const CHECK_NAME: &str = "storage_key_check";

fn migrator(sql: &'static str) -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("init"),
        MigrationType::Simple,
        sql.into_sql_str(),
        false,
    )])
}

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

const SQL_CHECK_INSERT: &str = "INSERT INTO keycast_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
const SQL_CHECK_SELECT: &str = "SELECT value FROM keycast_meta WHERE name = $1";
const SQL_SUBSCRIBER: &str =
    "SELECT impi, imsi, wrapped_k, wrapped_opc, sqn, amf, gba_type FROM subscribers WHERE impi = $1";
const SQL_UPDATE_SQN: &str = "UPDATE subscribers SET sqn = $3 WHERE impi = $1 AND sqn = $2";
const SQL_SESSION_DROP_BTID: &str = "DELETE FROM sessions WHERE btid = $1 AND impi <> $2";
const SQL_SESSION_UPSERT: &str = "INSERT INTO sessions \
     (btid, impi, wrapped_ks, rand, gba_type, bootstrapped_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (impi) DO UPDATE SET btid = excluded.btid, wrapped_ks = excluded.wrapped_ks, rand = excluded.rand, \
     gba_type = excluded.gba_type, bootstrapped_at = excluded.bootstrapped_at, expires_at = excluded.expires_at";
const SQL_SESSION: &str =
    "SELECT btid, impi, wrapped_ks, rand, gba_type, bootstrapped_at, expires_at FROM sessions WHERE btid = $1";
const SQL_PUT_PENDING: &str = "INSERT INTO pending (nonce_key, impi, rand, issued_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (nonce_key) DO UPDATE SET impi = excluded.impi, rand = excluded.rand, \
     issued_at = excluded.issued_at, expires_at = excluded.expires_at";
const SQL_TAKE_PENDING: &str = "DELETE FROM pending WHERE nonce_key = $1 RETURNING impi, rand, issued_at, expires_at";
const SQL_ADD_SUBSCRIBER: &str = "INSERT INTO subscribers (impi, imsi, wrapped_k, wrapped_opc, sqn, amf, gba_type) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (impi) DO NOTHING";
const SQL_DELETE_SESSIONS_OF: &str = "DELETE FROM sessions WHERE impi = $1";
const SQL_DELETE_SUBSCRIBER: &str = "DELETE FROM subscribers WHERE impi = $1";
const SQL_LIST_SUBSCRIBERS: &str = "SELECT impi, imsi, sqn, amf, gba_type FROM subscribers ORDER BY impi";
const SQL_PURGE_SESSIONS: &str = "DELETE FROM sessions WHERE expires_at <= $1";
const SQL_PURGE_PENDING: &str = "DELETE FROM pending WHERE expires_at <= $1";

/// Implements [`BsfStore`] for a store type with fields `pool` and `key`; the SQL text is shared.
macro_rules! sql_store {
    ($store:ident, $pool:ty, $migration:expr) => {
        impl $store {
            /// Applies the migrations and checks (or, on a new database, records) the storage key.
            async fn init(pool: &$pool, key: &StorageKey) -> Result<(), StoreError> {
                migrator($migration).run(pool).await.map_err(|e| StoreError::Backend(format!("migration: {e}")))?;
                sqlx::query(SQL_CHECK_INSERT)
                    .bind(CHECK_NAME)
                    .bind(key.check_value())
                    .execute(pool)
                    .await
                    .map_err(backend)?;
                let row = sqlx::query(SQL_CHECK_SELECT).bind(CHECK_NAME).fetch_one(pool).await.map_err(backend)?;
                let stored: Vec<u8> = row.try_get("value").map_err(backend)?;
                key_wrap::unwrap(&key.kek("check", &[]), &stored).map_err(|_| StoreError::WrongStorageKey)?;
                Ok(())
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
        }

        impl BsfStore for $store {
            async fn subscriber(&self, impi: &str) -> Result<Option<Subscriber>, StoreError> {
                let Some(row) =
                    sqlx::query(SQL_SUBSCRIBER).bind(impi).fetch_optional(&self.pool).await.map_err(backend)?
                else {
                    return Ok(None);
                };
                let impi: String = row.try_get("impi").map_err(backend)?;
                let wrapped_k: Vec<u8> = row.try_get("wrapped_k").map_err(backend)?;
                let wrapped_opc: Vec<u8> = row.try_get("wrapped_opc").map_err(backend)?;
                let k = self.key.unwrap("K", &[&impi], &wrapped_k)?;
                let opc = self.key.unwrap("OPc", &[&impi], &wrapped_opc)?;
                let amf: Vec<u8> = row.try_get("amf").map_err(backend)?;
                let gba_type: String = row.try_get("gba_type").map_err(backend)?;
                Ok(Some(Subscriber {
                    imsi: row.try_get("imsi").map_err(backend)?,
                    k: SubscriberKey::from_slice(&k).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    opc: Opc::from_slice(&opc).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    sqn: from_db(row.try_get("sqn").map_err(backend)?, "SQN")?,
                    amf: array(&amf, "AMF")?,
                    gba_type: gba_type_from_db(&gba_type)?,
                    impi,
                }))
            }

            async fn update_sqn(&self, impi: &str, expected: u64, new: u64) -> Result<bool, StoreError> {
                let done = sqlx::query(SQL_UPDATE_SQN)
                    .bind(impi)
                    .bind(to_db(expected))
                    .bind(to_db(new))
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(done.rows_affected() == 1)
            }

            async fn put_session(&self, session: Session) -> Result<(), StoreError> {
                let wrapped_ks = self.key.wrap("Ks", &[&session.btid, &session.impi], session.ks.expose_secret());
                let mut tx = self.pool.begin().await.map_err(backend)?;
                // A B-TID of another IMPI's session (a RAND collision) is taken over.
                sqlx::query(SQL_SESSION_DROP_BTID)
                    .bind(&session.btid)
                    .bind(&session.impi)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                // One session per IMPI (UNIQUE): the upsert replaces the earlier one atomically.
                sqlx::query(SQL_SESSION_UPSERT)
                    .bind(&session.btid)
                    .bind(&session.impi)
                    .bind(wrapped_ks)
                    .bind(session.rand.to_vec())
                    .bind(session.gba_type.as_str())
                    .bind(to_db(session.bootstrapped_at))
                    .bind(to_db(session.expires_at))
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                tx.commit().await.map_err(backend)
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
                let ks = self.key.unwrap("Ks", &[&btid, &impi], &wrapped_ks)?;
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

            async fn put_pending(&self, key: NonceKey, pending: Pending) -> Result<(), StoreError> {
                sqlx::query(SQL_PUT_PENDING)
                    .bind(key.to_vec())
                    .bind(pending.impi)
                    .bind(pending.rand.to_vec())
                    .bind(to_db(pending.issued_at))
                    .bind(to_db(pending.expires_at))
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(())
            }

            async fn take_pending(&self, key: &NonceKey) -> Result<Option<Pending>, StoreError> {
                let row = sqlx::query(SQL_TAKE_PENDING)
                    .bind(key.to_vec())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?;
                let Some(row) = row else { return Ok(None) };
                let rand: Vec<u8> = row.try_get("rand").map_err(backend)?;
                Ok(Some(Pending {
                    impi: row.try_get("impi").map_err(backend)?,
                    rand: array(&rand, "RAND")?,
                    issued_at: from_db(row.try_get("issued_at").map_err(backend)?, "issued_at")?,
                    expires_at: from_db(row.try_get("expires_at").map_err(backend)?, "expires_at")?,
                }))
            }

            async fn add_subscriber(&self, s: &Subscriber) -> Result<(), StoreError> {
                let wrapped_k = self.key.wrap("K", &[&s.impi], s.k.expose_secret());
                let wrapped_opc = self.key.wrap("OPc", &[&s.impi], s.opc.expose_secret());
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
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(backend)?;
        Self::init(&pool, &key).await?;
        Ok(SqliteStore { pool, key })
    }
}

/// A [`BsfStore`] in a PostgreSQL database. Cloning shares the connection pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    key: StorageKey,
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
        let pool = PgPoolOptions::new().max_connections(8).connect_with(options).await.map_err(backend)?;
        Self::init(&pool, &key).await?;
        Ok(PgStore { pool, key })
    }
}

sql_store!(SqliteStore, SqlitePool, include_str!("../../migrations/sqlite/0001_init.sql"));
sql_store!(PgStore, PgPool, include_str!("../../migrations/postgres/0001_init.sql"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keks_are_bound_to_column_and_row() {
        let key = StorageKey::from_bytes([1; 16]);
        assert_ne!(*key.kek("K", &["a"]), *key.kek("OPc", &["a"]));
        assert_ne!(*key.kek("K", &["a"]), *key.kek("K", &["b"]));
        assert_ne!(*key.kek("Ks", &["ab", "c"]), *key.kek("Ks", &["a", "bc"]));
        let wrapped = key.wrap("K", &["a"], &[7; 16]);
        assert_eq!(&key.unwrap("K", &["a"], &wrapped).unwrap()[..], &[7; 16]);
        assert_eq!(key.unwrap("K", &["b"], &wrapped), Err(StoreError::Integrity { what: "K", id: "b".into() }));
    }

    #[test]
    fn storage_key_from_hex_and_debug() {
        let key = StorageKey::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
        assert_eq!(*key.0, core::array::from_fn::<u8, 16, _>(|i| i as u8));
        assert_eq!(format!("{key:?}"), "StorageKey(…)");
        assert_eq!(StorageKey::from_hex("0001").unwrap_err(), StorageKeyError);
        assert_eq!(StorageKey::from_hex("zz0102030405060708090a0b0c0d0e0f").unwrap_err(), StorageKeyError);
    }
}
