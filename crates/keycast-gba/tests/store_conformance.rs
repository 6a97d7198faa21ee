//! The `BsfStore` conformance suite, written once and run for every backend: `MemoryStore`,
//! `SqliteStore` (a file in a temporary directory) and `PgStore` (a fresh schema per test in the
//! database named by `KEYCAST_TEST_POSTGRES_URL`; without it those tests print that they were
//! skipped and pass). `.ci/postgres-setup` starts a throwaway cluster and sets the variable.
//!
//! The SQL stores also get the at-rest checks: raw columns hold no K, OPc or Ks, a wrong storage
//! key is refused, a wrapped key moved to another row fails, and a reopened database has
//! everything.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use keycast_card::usim::{AkaAnswer, Usim, UsimIdentity};
use keycast_crypto::gba::NafId;
use keycast_crypto::keys::{Ks, Opc, SubscriberKey};
use keycast_crypto::milenage::sqn_from_u64;
use keycast_gba::bsf::{
    Bsf, BsfConfig, BsfStore, GbaType, MemoryStore, Pending, PgStore, Purged, RunStart, SeededRandom, Session,
    SqliteStore, SqnAdvance, SqnScheme, StorageKey, StoreError, Subscriber, SubscriberSummary, UbRequest, ZnKeys,
    ZnRequest,
};
use keycast_provisioning::bootstrapping::BootstrappingInfo;
use keycast_provisioning::digest::{Challenge, Credentials, DigestClient, Password, Qop};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool};

const PG_ENV: &str = "KEYCAST_TEST_POSTGRES_URL";
const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
const DOMAIN: &str = "bsf.example.org";
const BSM: &str = "bmsc.example.org";
const T0: u64 = 1_767_182_400;
/// SQN of Milenage set 1.
const SQN1: u64 = 0xff9b_b4d0_b607;
const BTID1: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org";
const KS1: &str = "b40ba9a3c58b2a05bbf0d987b21bf8cbf769bcd751044604127672711c6d3441";
const KS_EXT_NAF: &str = "79d8098e4b9ef12c858a0da3471f6b2d29b4cbb549500dcb3c88154562de340d";

fn h<const N: usize>(text: &str) -> [u8; N] {
    hex::decode(text).unwrap().try_into().unwrap()
}

fn storage_key() -> StorageKey {
    StorageKey::from_bytes([0x5a; 16])
}

const K1: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const OPC1: &str = "cd63cb71954a9f4e48a5994e37a02baf";

fn subscriber(impi: &str, gba_type: GbaType, sqn: u64) -> Subscriber {
    Subscriber {
        impi: impi.into(),
        imsi: "001010000000001".into(),
        k: SubscriberKey::from_bytes(h(K1)),
        opc: Opc::from_bytes(h(OPC1)),
        sqn,
        amf: [0xb9, 0xb9],
        gba_type,
    }
}

fn session(btid: &str, impi: &str, expires_at: u64) -> Session {
    Session {
        btid: btid.into(),
        impi: impi.into(),
        ks: Ks::from_bytes(h(KS1)),
        rand: [4; 16],
        gba_type: GbaType::GbaU,
        bootstrapped_at: T0,
        expires_at,
    }
}

fn pending(impi: &str, rand: u8, expires_at: u64) -> Pending {
    Pending { impi: impi.into(), rand: [rand; 16], issued_at: T0, expires_at }
}

fn next() -> SqnAdvance {
    SqnAdvance::Next(SqnScheme::default())
}

/// The generic suite: every function takes any `BsfStore`.
mod suite {
    use super::*;

    pub async fn subscriber_add_get_duplicate_delete<S: BsfStore>(s: Arc<S>) {
        assert_eq!(s.subscriber(IMPI).await, Ok(None));
        let a = subscriber(IMPI, GbaType::GbaU, 64);
        s.add_subscriber(&a).await.unwrap();
        assert_eq!(s.subscriber(IMPI).await.unwrap(), Some(a.clone()));
        let mut again = subscriber(IMPI, GbaType::GbaMe, 0);
        again.imsi = "001019999999999".into();
        assert_eq!(s.add_subscriber(&again).await, Err(StoreError::DuplicateSubscriber(IMPI.into())));
        assert_eq!(s.subscriber(IMPI).await.unwrap(), Some(a.clone()), "the duplicate changed nothing");
        let b = subscriber("b@x", GbaType::GbaMe, 0);
        s.add_subscriber(&b).await.unwrap();
        assert_eq!(
            s.list_subscribers().await.unwrap(),
            vec![SubscriberSummary::from(&a), SubscriberSummary::from(&b)],
            "ordered by IMPI, no secrets"
        );
        s.put_session(session(BTID1, IMPI, T0 + 10)).await.unwrap();
        assert_eq!(s.delete_subscriber(IMPI).await, Ok(true));
        assert_eq!(s.delete_subscriber(IMPI).await, Ok(false));
        assert_eq!(s.subscriber(IMPI).await, Ok(None));
        assert_eq!(s.session(BTID1).await, Ok(None), "its session went with it");
        assert_eq!(s.list_subscribers().await.unwrap(), vec![SubscriberSummary::from(&b)]);
    }

    pub async fn start_run_advances_sqn_atomically<S: BsfStore>(s: Arc<S>) {
        s.add_subscriber(&subscriber(IMPI, GbaType::GbaMe, 64)).await.unwrap();
        let RunStart::Subscriber(got) = s.start_run(IMPI, next(), pending(IMPI, 1, T0 + 300)).await.unwrap() else {
            panic!("subscriber expected")
        };
        assert_eq!(got.sqn, 96, "SQN_HE + 32");
        assert_eq!((got.k, got.opc), (SubscriberKey::from_bytes(h(K1)), Opc::from_bytes(h(OPC1))), "keys opened");
        assert_eq!(s.subscriber(IMPI).await.unwrap().unwrap().sqn, 96, "stored as SQN_HE");
        let resync = SqnAdvance::Resync { sqn_ms: 0x21, scheme: SqnScheme::default() };
        let RunStart::Subscriber(got) = s.start_run(IMPI, resync, pending(IMPI, 2, T0 + 300)).await.unwrap() else {
            panic!("subscriber expected")
        };
        assert_eq!(got.sqn, 0x41, "resync: SQN_MS + 32, which may lower SQN_HE");
        assert_eq!(s.start_run("nobody", next(), pending("nobody", 3, T0 + 300)).await, Ok(RunStart::Unknown));
        let top = (1u64 << 48) - 1;
        s.add_subscriber(&subscriber("top@x", GbaType::GbaMe, top - 32)).await.unwrap();
        let RunStart::Subscriber(got) = s.start_run("top@x", next(), pending("top@x", 4, T0 + 300)).await.unwrap()
        else {
            panic!("subscriber expected")
        };
        assert_eq!(got.sqn, top, "the whole 48-bit range");
        assert_eq!(s.start_run("top@x", next(), pending("top@x", 5, T0 + 300)).await, Ok(RunStart::SqnExhausted));
        assert_eq!(s.subscriber("top@x").await.unwrap().unwrap().sqn, top, "unchanged when exhausted");
        assert_eq!(s.take_run(&[5; 16]).await, Ok(None), "nothing recorded when exhausted");
        assert_eq!(s.set_sqn("top@x", 0x40).await, Ok(true), "administration may set SQN_HE");
        assert_eq!(s.subscriber("top@x").await.unwrap().unwrap().sqn, 0x40);
        assert_eq!(s.set_sqn("nobody", 1).await, Ok(false));
        for (rand, impi) in [(1, IMPI), (2, IMPI), (3, "nobody"), (4, "top@x")] {
            let taken = s.take_run(&[rand; 16]).await.unwrap().expect("recorded");
            assert_eq!(taken.pending, pending(impi, rand, T0 + 300));
            assert_eq!(taken.subscriber.is_some(), impi != "nobody");
        }
    }

    pub async fn concurrent_runs_get_distinct_sqns<S: BsfStore + Send + Sync + 'static>(s: Arc<S>) {
        s.add_subscriber(&subscriber(IMPI, GbaType::GbaMe, 64)).await.unwrap();
        let tasks: Vec<_> = (0..32u8)
            .map(|i| {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    match s.start_run(IMPI, next(), pending(IMPI, i, T0 + 300)).await.unwrap() {
                        RunStart::Subscriber(sub) => sub.sqn,
                        other => panic!("{other:?}"),
                    }
                })
            })
            .collect();
        let mut sqns = Vec::new();
        for t in tasks {
            sqns.push(t.await.unwrap());
        }
        sqns.sort_unstable();
        let want: Vec<u64> = (1..=32).map(|i| 64 + 32 * i).collect();
        assert_eq!(sqns, want, "every run its own SQN, none skipped");
        assert_eq!(s.subscriber(IMPI).await.unwrap().unwrap().sqn, 64 + 32 * 32);
    }

    pub async fn session_put_replace_get<S: BsfStore>(s: Arc<S>) {
        assert_eq!(s.session(BTID1).await, Ok(None));
        let first = session("x@bsf", "a", T0 + 100);
        s.put_session(first.clone()).await.unwrap();
        assert_eq!(s.session("x@bsf").await.unwrap(), Some(first));
        let other = session("y@bsf", "b", T0 + 100);
        s.put_session(other.clone()).await.unwrap();
        let mut later = session("z@bsf", "a", T0 + 200);
        later.gba_type = GbaType::GbaMe;
        later.ks = Ks::from_bytes([0x77; 32]);
        s.put_session(later.clone()).await.unwrap();
        assert_eq!(s.session("x@bsf").await, Ok(None), "replaced by the later run of the same IMPI");
        assert_eq!(s.session("z@bsf").await.unwrap(), Some(later.clone()));
        assert_eq!(s.session("y@bsf").await.unwrap(), Some(other), "another IMPI is untouched");
        // The same B-TID again (same IMPI): an update in place.
        let mut renewed = later.clone();
        renewed.expires_at = T0 + 300;
        s.put_session(renewed.clone()).await.unwrap();
        assert_eq!(s.session("z@bsf").await.unwrap(), Some(renewed));
        // A B-TID that another IMPI holds (a RAND collision): taken over.
        let taken = session("y@bsf", "c", T0 + 100);
        s.put_session(taken.clone()).await.unwrap();
        assert_eq!(s.session("y@bsf").await.unwrap(), Some(taken));
        assert_eq!(s.purge_expired(T0 + 1000).await.unwrap(), Purged { sessions: 2, pending: 0 });
    }

    pub async fn expired_sessions_and_pending_are_purged<S: BsfStore>(s: Arc<S>) {
        s.put_session(session("old@bsf", "a", T0 + 10)).await.unwrap();
        s.put_session(session("new@bsf", "b", T0 + 20)).await.unwrap();
        s.start_run("a", next(), pending("a", 1, T0 + 10)).await.unwrap();
        s.start_run("b", next(), pending("b", 2, T0 + 20)).await.unwrap();
        assert_eq!(s.purge_expired(T0 + 9).await.unwrap(), Purged::default());
        assert_eq!(s.purge_expired(T0 + 10).await.unwrap(), Purged { sessions: 1, pending: 1 }, "expiry is inclusive");
        assert_eq!(s.session("old@bsf").await, Ok(None));
        assert!(s.session("new@bsf").await.unwrap().is_some());
        assert_eq!(s.take_run(&[1; 16]).await, Ok(None));
        assert_eq!(s.take_run(&[2; 16]).await.unwrap().unwrap().pending, pending("b", 2, T0 + 20));
        // A session past its expiry is still returned until purged: the caller checks it.
        assert_eq!(s.session("new@bsf").await.unwrap().unwrap().expires_at, T0 + 20);
    }

    pub async fn run_is_taken_once<S: BsfStore>(s: Arc<S>) {
        assert_eq!(s.take_run(&[7; 16]).await, Ok(None));
        s.add_subscriber(&subscriber(IMPI, GbaType::GbaU, 64)).await.unwrap();
        s.start_run(IMPI, next(), pending(IMPI, 7, T0 + 300)).await.unwrap();
        s.start_run("other", next(), pending("other", 8, T0 + 300)).await.unwrap();
        let taken = s.take_run(&[7; 16]).await.unwrap().unwrap();
        assert_eq!(taken.pending, pending(IMPI, 7, T0 + 300));
        let sub = taken.subscriber.expect("its subscriber comes with it");
        assert_eq!((sub.impi.as_str(), sub.sqn, sub.gba_type), (IMPI, 96, GbaType::GbaU));
        assert_eq!(s.take_run(&[7; 16]).await, Ok(None));
        let other = s.take_run(&[8; 16]).await.unwrap().unwrap();
        assert_eq!((other.pending, other.subscriber), (pending("other", 8, T0 + 300), None));
        // A subscriber deleted while its challenge is pending: the challenge comes back alone.
        s.start_run(IMPI, next(), pending(IMPI, 9, T0 + 300)).await.unwrap();
        s.delete_subscriber(IMPI).await.unwrap();
        assert_eq!(s.take_run(&[9; 16]).await.unwrap().unwrap().subscriber, None);
    }

    pub async fn concurrent_takes_have_one_winner<S: BsfStore + Send + Sync + 'static>(s: Arc<S>) {
        for round in 0..4u8 {
            s.start_run(IMPI, next(), pending(IMPI, round, T0 + 300)).await.unwrap();
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let s = Arc::clone(&s);
                    tokio::spawn(async move { s.take_run(&[round; 16]).await.unwrap() })
                })
                .collect();
            let mut got = Vec::new();
            for t in tasks {
                got.extend(t.await.unwrap().map(|t| t.pending));
            }
            assert_eq!(got, vec![pending(IMPI, round, T0 + 300)], "exactly one of 16 takes wins (round {round})");
        }
    }

    /// Many bootstraps' calls at once, mixed: every one answered, none lost or mixed up (the SQL
    /// stores serve them in shared transactions).
    pub async fn interleaved_runs_of_many_subscribers<S: BsfStore + Send + Sync + 'static>(s: Arc<S>) {
        for i in 0..64u64 {
            s.add_subscriber(&subscriber(&format!("u{i}@x"), GbaType::GbaMe, 32 * i)).await.unwrap();
        }
        let tasks: Vec<_> = (0..64u8)
            .map(|i| {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let impi = format!("u{i}@x");
                    let RunStart::Subscriber(sub) =
                        s.start_run(&impi, next(), pending(&impi, i, T0 + 300)).await.unwrap()
                    else {
                        panic!("subscriber expected")
                    };
                    assert_eq!(sub.sqn, 32 * u64::from(i) + 32);
                    let taken = s.take_run(&[i; 16]).await.unwrap().unwrap();
                    assert_eq!(taken.pending.impi, impi);
                    let btid = format!("{i}@bsf");
                    s.put_session(session(&btid, &impi, T0 + 100)).await.unwrap();
                    assert_eq!(s.session(&btid).await.unwrap().unwrap().impi, impi);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(s.purge_expired(T0 + 100).await.unwrap(), Purged { sessions: 64, pending: 0 });
    }

    /// A whole GBA_U run (Milenage set 1, the worked example of vectors.md §2) through `Bsf`
    /// with this store, then Zn.
    pub async fn gba_u_bootstrap_end_to_end<S: BsfStore>(s: Arc<S>) {
        s.add_subscriber(&subscriber(IMPI, GbaType::GbaU, SQN1 - 32)).await.unwrap();
        let btid = bootstrap(&*s).await;
        assert_eq!(btid, BTID1);
        let stored = s.subscriber(IMPI).await.unwrap().unwrap();
        assert_eq!(stored.sqn, SQN1);
        check_session(&*s).await;
    }

    pub async fn bootstrap<S: BsfStore>(s: &S) -> String {
        let mut config = BsfConfig::new(DOMAIN, [0x42; 32]);
        config.authorised_nafs = vec![BSM.into()];
        let bsf = Bsf::new(config).unwrap();
        let mut rng = SeededRandom::new([7; 32]);
        rng.queue(&h::<16>("23553cbe9637a89d218ae64dae47bf35"));
        let id =
            UsimIdentity { imsi: "001010000000001".into(), impi: IMPI.into(), iccid: "8900100000000000001".into() };
        let mut usim = Usim::new(id, SubscriberKey::from_bytes(h(K1)), Opc::from_bytes(h(OPC1)));
        usim.sqn_ms = sqn_from_u64(SQN1 - 32);

        let initial = Credentials::initial(IMPI, DOMAIN, "/").to_header_value().unwrap();
        let r = bsf.handle_ub(s, &get(&initial), T0, &mut rng).await;
        assert_eq!(r.status, 401, "{r:?}");
        let c = Challenge::parse(r.header("WWW-Authenticate").unwrap()).unwrap();
        let raw = base64_decode(&c.nonce);
        let (rand, autn): ([u8; 16], [u8; 16]) = (raw[..16].try_into().unwrap(), raw[16..32].try_into().unwrap());
        let AkaAnswer::SuccessGba { res } = usim.gba_bootstrap(&rand, &autn).unwrap() else { panic!("card refused") };
        let mut client =
            DigestClient::new(c.clone(), IMPI, Password::from_bytes(res.expose_secret()), &[Qop::AuthInt]).unwrap();
        let sent = client.authorize("GET", "/", b"", &[0x0a, 0x4f, 0x11, 0x3b]).unwrap();
        let r = bsf.handle_ub(s, &get(&sent.credentials().to_header_value().unwrap()), T0, &mut rng).await;
        assert_eq!(r.status, 200, "{r:?}");
        BootstrappingInfo::from_xml(&r.body).unwrap().btid().to_owned()
    }

    /// The session of [`bootstrap`] is there and gives the NAF the worked example's key.
    pub async fn check_session<S: BsfStore>(s: &S) {
        let session = s.session(BTID1).await.unwrap().unwrap();
        assert_eq!(session.ks.expose_secret(), &h::<32>(KS1));
        assert_eq!((session.impi.as_str(), session.gba_type, session.expires_at), (IMPI, GbaType::GbaU, T0 + 86_400));
        let naf_id = NafId::mbms(BSM);
        let request = ZnRequest { btid: BTID1, naf_id: naf_id.as_bytes(), naf_is_gba_u_aware: false };
        let answer = keycast_gba::bsf::zn_keys(s, &[BSM.to_owned()], &request, T0 + 1).await.unwrap();
        let ZnKeys::U { ks_ext_naf, ks_int_naf: None } = answer.keys else { panic!("{answer:?}") };
        assert_eq!(ks_ext_naf.expose_secret(), &h::<32>(KS_EXT_NAF));
    }

    fn get(authorization: &str) -> UbRequest<'_> {
        UbRequest { method: "GET", uri: "/", authorization: Some(authorization), user_agent: None, body: b"" }
    }

    fn base64_decode(text: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(text).unwrap()
    }
}

/// A SQL store under test, with access to its raw tables and a way to open it again.
trait SqlFixture {
    type Store: BsfStore + Send + Sync + 'static;
    fn store(&self) -> Arc<Self::Store>;
    /// Opens the same database again with this key.
    async fn reopen(&self, key: StorageKey) -> Result<Self::Store, StoreError>;
    /// Every value of the first column of a query's rows, as bytes.
    async fn blobs(&self, sql: &'static str) -> Vec<Vec<u8>>;
    /// Runs a statement with two text parameters.
    async fn exec(&self, sql: &'static str, a: &str, b: &str);
    async fn close(self);
}

/// The at-rest suite for the SQL stores.
mod at_rest {
    use super::*;

    pub async fn encrypted_columns_hide_the_keys<F: SqlFixture>(f: F) {
        let s = f.store();
        s.add_subscriber(&subscriber(IMPI, GbaType::GbaU, 0)).await.unwrap();
        s.add_subscriber(&subscriber("twin@x", GbaType::GbaMe, 0)).await.unwrap();
        s.put_session(session(BTID1, IMPI, T0 + 10)).await.unwrap();
        let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        let k: [u8; 16] = h(K1);
        let opc: [u8; 16] = h(OPC1);
        let ks: [u8; 32] = h(KS1);
        let wrapped_k = f.blobs("SELECT wrapped_k FROM subscribers ORDER BY impi").await;
        let wrapped_opc = f.blobs("SELECT wrapped_opc FROM subscribers ORDER BY impi").await;
        let wrapped_ks = f.blobs("SELECT wrapped_ks FROM sessions").await;
        assert_eq!((wrapped_k.len(), wrapped_opc.len(), wrapped_ks.len()), (2, 2, 1));
        for w in wrapped_k.iter().chain(&wrapped_opc) {
            assert_eq!(w.len(), 24);
            for secret in [&k[..], &opc[..], &k[..8], &k[8..], &opc[..8], &opc[8..]] {
                assert!(!contains(w, secret), "a raw column holds key bytes");
            }
        }
        assert_eq!(wrapped_ks[0].len(), 40);
        for secret in [&ks[..], &ks[..8], &ks[8..16], &ks[16..24], &ks[24..]] {
            assert!(!contains(&wrapped_ks[0], secret), "the session column holds Ks bytes");
        }
        assert_ne!(wrapped_k[0], wrapped_k[1], "equal keys of two subscribers do not look equal");
        assert_ne!(wrapped_k[0], wrapped_opc[0]);
        // Nothing anywhere else either: every text and blob of every table.
        for sql in ["SELECT imsi FROM subscribers", "SELECT impi FROM sessions", "SELECT rand FROM sessions"] {
            for v in f.blobs(sql).await {
                assert!(!contains(&v, &k[..8]) && !contains(&v, &opc[..8]) && !contains(&v, &ks[..8]));
            }
        }
        f.close().await;
    }

    pub async fn wrong_storage_key_is_refused<F: SqlFixture>(f: F) {
        f.store().add_subscriber(&subscriber(IMPI, GbaType::GbaU, 0)).await.unwrap();
        let err = f.reopen(StorageKey::from_bytes([0xa5; 16])).await.err();
        assert_eq!(err, Some(StoreError::WrongStorageKey));
        assert!(err.unwrap().to_string().contains("storage key"));
        // The right key still opens it.
        let again = f.reopen(storage_key()).await.unwrap();
        assert_eq!(again.subscriber(IMPI).await.unwrap().unwrap().k, SubscriberKey::from_bytes(h(K1)));
        f.close().await;
    }

    pub async fn moved_wrapped_key_fails_its_integrity_check<F: SqlFixture>(f: F) {
        let s = f.store();
        s.add_subscriber(&subscriber(IMPI, GbaType::GbaU, 0)).await.unwrap();
        let mut other = subscriber("b@x", GbaType::GbaU, 0);
        other.k = SubscriberKey::from_bytes([0x11; 16]);
        s.add_subscriber(&other).await.unwrap();
        f.exec(
            "UPDATE subscribers SET wrapped_k = (SELECT wrapped_k FROM subscribers WHERE impi = $1) WHERE impi = $2",
            "b@x",
            IMPI,
        )
        .await;
        assert_eq!(s.subscriber(IMPI).await, Err(StoreError::Integrity { what: "K", id: IMPI.into() }));
        assert!(s.subscriber("b@x").await.unwrap().is_some());
        s.put_session(session(BTID1, IMPI, T0 + 10)).await.unwrap();
        f.exec("UPDATE sessions SET impi = $1 WHERE btid = $2", "b@x", BTID1).await;
        assert!(matches!(s.session(BTID1).await, Err(StoreError::Integrity { what: "Ks", .. })));
        f.close().await;
    }

    pub async fn reopened_database_has_everything<F: SqlFixture>(f: F) {
        let s = f.store();
        s.add_subscriber(&subscriber(IMPI, GbaType::GbaU, SQN1 - 32)).await.unwrap();
        s.add_subscriber(&subscriber("b@x", GbaType::GbaMe, 7)).await.unwrap();
        assert_eq!(suite::bootstrap(&*s).await, BTID1);
        s.start_run("b@x", next(), pending("b@x", 3, T0 + 300)).await.unwrap();
        let list = s.list_subscribers().await.unwrap();
        drop(s);
        let again = f.reopen(storage_key()).await.unwrap();
        assert_eq!(again.list_subscribers().await.unwrap(), list);
        assert_eq!(again.subscriber(IMPI).await.unwrap().unwrap().sqn, SQN1);
        assert_eq!(again.subscriber("b@x").await.unwrap().unwrap().sqn, 39);
        suite::check_session(&again).await;
        assert_eq!(again.take_run(&[3; 16]).await.unwrap().unwrap().pending, pending("b@x", 3, T0 + 300));
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
        let store = SqliteStore::open(dir.path().join("bsf.db"), storage_key()).await.unwrap();
        SqliteFixture { dir, store: Arc::new(store) }
    }
}

impl SqliteFixture {
    fn into_pair(self) -> Option<(Arc<SqliteStore>, Self)> {
        Some((self.store(), self))
    }
}

impl SqlFixture for SqliteFixture {
    type Store = SqliteStore;
    fn store(&self) -> Arc<SqliteStore> {
        Arc::clone(&self.store)
    }
    async fn reopen(&self, key: StorageKey) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(self.dir.path().join("bsf.db"), key).await
    }
    async fn blobs(&self, sql: &'static str) -> Vec<Vec<u8>> {
        let rows = sqlx::query(sql).fetch_all(self.store.pool()).await.unwrap();
        rows.iter()
            .map(|r| r.try_get::<Vec<u8>, _>(0).or_else(|_| r.try_get::<String, _>(0).map(String::into_bytes)).unwrap())
            .collect()
    }
    async fn exec(&self, sql: &'static str, a: &str, b: &str) {
        sqlx::query(sql).bind(a).bind(b).execute(self.store.pool()).await.unwrap();
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
    /// `None` (after saying so) when `KEYCAST_TEST_POSTGRES_URL` is not set.
    async fn new() -> Option<Self> {
        let Ok(url) = std::env::var(PG_ENV) else {
            println!("skipped: {PG_ENV} not set");
            return None;
        };
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let schema =
            format!("keycast_test_{}_{nanos}_{}", std::process::id(), SCHEMA_COUNTER.fetch_add(1, Ordering::Relaxed));
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
        rows.iter()
            .map(|r| r.try_get::<Vec<u8>, _>(0).or_else(|_| r.try_get::<String, _>(0).map(String::into_bytes)).unwrap())
            .collect()
    }
    async fn exec(&self, sql: &'static str, a: &str, b: &str) {
        sqlx::query(sql).bind(a).bind(b).execute(self.store.pool()).await.unwrap();
    }
    async fn close(self) {
        self.store.close().await;
        let admin = PgPool::connect(&self.url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", self.schema))).execute(&admin).await.unwrap();
        admin.close().await;
    }
}

/// One `#[tokio::test]` per suite function for a backend. `$make` yields `Option<(store, fixture)>`:
/// `None` skips; the fixture is closed after a passing test.
macro_rules! generic_suite {
    ($make:expr; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some((store, fixture)) = $make else { return };
            suite::$name(store).await;
            fixture.close().await;
        }
    )*};
}

macro_rules! at_rest_suite {
    ($make:expr; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(fixture) = $make else { return };
            at_rest::$name(fixture).await;
        }
    )*};
}

macro_rules! all_generic {
    ($make:expr) => {
        generic_suite!($make;
            subscriber_add_get_duplicate_delete,
            start_run_advances_sqn_atomically,
            concurrent_runs_get_distinct_sqns,
            session_put_replace_get,
            expired_sessions_and_pending_are_purged,
            run_is_taken_once,
            concurrent_takes_have_one_winner,
            interleaved_runs_of_many_subscribers,
            gba_u_bootstrap_end_to_end,
        );
    };
}

macro_rules! all_at_rest {
    ($make:expr) => {
        at_rest_suite!($make;
            encrypted_columns_hide_the_keys,
            wrong_storage_key_is_refused,
            moved_wrapped_key_fails_its_integrity_check,
            reopened_database_has_everything,
        );
    };
}

/// Nothing to close for the memory store.
struct NoFixture;

impl NoFixture {
    async fn close(self) {}
}

mod memory {
    use super::*;
    all_generic!(Some((Arc::new(MemoryStore::new()), NoFixture)));
}

mod sqlite {
    use super::*;
    all_generic!(SqliteFixture::new().await.into_pair());
    all_at_rest!(Some(SqliteFixture::new().await));

    /// The writer leaves WAL checkpoints to a companion connection: what the batches wrote reaches
    /// the database file without any batch running a checkpoint itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_checkpointed_beside_the_writer() {
        let f = SqliteFixture::new().await;
        let s = f.store();
        let db = f.dir.path().join("bsf.db");
        let before = std::fs::metadata(&db).unwrap().len();
        let tasks: Vec<_> = (0..2000u32)
            .map(|i| {
                let s = Arc::clone(&s);
                tokio::spawn(async move { s.put_session(session(&format!("{i}@bsf"), &format!("u{i}"), T0 + 9)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::metadata(&db).unwrap().len() <= before {
            assert!(std::time::Instant::now() < deadline, "the database file never grew: no checkpoint ran");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(s.purge_expired(T0 + 9).await.unwrap().sessions, 2000);
        f.close().await;
    }

    #[tokio::test]
    async fn open_url_creates_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("by-url.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let s = SqliteStore::open_url(&url, storage_key()).await.unwrap();
        s.add_subscriber(&subscriber(IMPI, GbaType::GbaMe, 0)).await.unwrap();
        s.close().await;
        assert!(path.exists());
    }
}

mod postgres {
    use super::*;
    all_generic!(PgFixture::new().await.map(|f| (f.store(), f)));
    all_at_rest!(PgFixture::new().await);
}

/// `Bsf::handle_ub` over an SQL store is a `Send` future, so an HTTP shell can spawn it.
#[test]
fn handle_ub_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    async fn run(bsf: &Bsf, store: &SqliteStore, rng: &mut SeededRandom) {
        let request = UbRequest { method: "GET", uri: "/", authorization: None, user_agent: None, body: b"" };
        bsf.handle_ub(store, &request, T0, rng).await;
    }
    let fut = async {
        let store = SqliteFixture::new().await;
        let bsf = Bsf::new(BsfConfig::new(DOMAIN, [1; 32])).unwrap();
        run(&bsf, &store.store(), &mut SeededRandom::new([1; 32])).await;
    };
    assert_send(&fut);
}
