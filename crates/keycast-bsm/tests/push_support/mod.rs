//! Shared by the push-service tests: a key source that knows a fixed SMK per B-TID, a terminal's
//! UDP socket on loopback, and a worker wired to both.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keycast_bsm::delivery::{PushPorts, SchedulerConfig, Time};
use keycast_bsm::keys::{KeyError, KeyFuture, KeyRecord, KeySource, NafKeys};
use keycast_bsm::push::{PushConfig, PushWorker};
use keycast_bsm::rng::SeededRandom;
use keycast_bsm::service::Caller;
use keycast_bsm::store::sql::SqliteStore;
use keycast_crypto::keys::KsNaf;
use keycast_mikey::{Ltkm, OpenedLtkm};
use tokio::net::UdpSocket;

use crate::service_support::{FQDN, T0};

/// The BSF's view of the terminals: B-TID → (IMPI, SMK). Built as GBA_ME records, whose SMK is
/// Ks_NAF itself (profile P-7), so the SMK is exactly the caller's.
#[derive(Debug, Clone, Default)]
pub struct FakeKeys(Arc<Mutex<HashMap<String, Bootstrapped>>>);

/// IMPI and SMK of one B-TID.
type Bootstrapped = (String, [u8; 32]);

impl FakeKeys {
    pub fn with(callers: &[&Caller]) -> Self {
        let keys = Self::default();
        for c in callers {
            keys.add(c);
        }
        keys
    }

    pub fn add(&self, c: &Caller) {
        let smk = *c.keys.smk.expose_secret();
        self.0.lock().unwrap().insert(c.keys.btid.clone(), (c.terminal.0.clone(), smk));
    }

    /// The BSF forgets the B-TID (expired or replaced by a new bootstrap).
    pub fn forget(&self, c: &Caller) {
        self.0.lock().unwrap().remove(&c.keys.btid);
    }
}

impl KeySource for FakeKeys {
    fn keys<'a>(&'a self, btid: &'a str, _now: u64) -> KeyFuture<'a> {
        let found = self.0.lock().unwrap().get(btid).cloned();
        Box::pin(async move {
            let (impi, smk) = found.ok_or(KeyError::UnknownBtid)?;
            let naf = NafKeys::Me { ks_naf: KsNaf::from_bytes(smk) };
            Ok(Arc::new(KeyRecord::new(btid, &impi, 0, u64::MAX, &naf)))
        })
    }
}

/// `T0` plus `s` seconds as scheduler time.
pub fn at(s: u64) -> Time {
    Time::from_secs(T0 + s)
}

/// Retries at +10 s, +20 s (backoff 10, 20, capped at 25), three pushes, a pull with 60 s to
/// answer; no jitter, no rate limit, pushes to `port` on both interfaces.
pub fn quiet(port: u16) -> SchedulerConfig {
    let mut c = SchedulerConfig {
        spread_window: Duration::ZERO,
        jitter: Duration::ZERO,
        rate: None,
        ports: PushPorts { mbms: port, oma_bcast: port },
        ..SchedulerConfig::default()
    };
    c.retry.initial = Duration::from_secs(10);
    c.retry.factor = 2;
    c.retry.max_backoff = Duration::from_secs(25);
    c.retry.max_attempts = 3;
    c.retry.solicited_pull = true;
    c.retry.pull_wait = Duration::from_secs(60);
    c
}

pub type Worker = PushWorker<SqliteStore, FakeKeys, SeededRandom>;

/// A worker's configuration: these timings, a 30 s lease.
pub fn push_config(name: &str, scheduler: SchedulerConfig) -> PushConfig {
    let mut config = PushConfig::new(name, FQDN);
    config.scheduler = scheduler;
    config.lease = Duration::from_secs(30);
    config
}

pub async fn worker_from(store: &SqliteStore, keys: &FakeKeys, config: PushConfig) -> Worker {
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    PushWorker::bind(store.clone(), keys.clone(), config, bind, SeededRandom::new(7)).await.unwrap()
}

pub async fn worker(store: &SqliteStore, keys: &FakeKeys, name: &str, scheduler: SchedulerConfig) -> Worker {
    worker_from(store, keys, push_config(name, scheduler)).await
}

/// A terminal's push socket on loopback.
pub async fn terminal_socket() -> (UdpSocket, u16) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// The next datagram, waiting at most five seconds.
pub async fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 4096];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("a datagram within five seconds")
        .unwrap();
    buf.truncate(n);
    (buf, from)
}

/// Asserts that no datagram arrives for a while.
pub async fn silent(socket: &UdpSocket) {
    let mut buf = [0u8; 4096];
    let got = tokio::time::timeout(Duration::from_millis(150), socket.recv_from(&mut buf)).await;
    assert!(got.is_err(), "no datagram expected, got {} octets", got.unwrap().unwrap().0);
}

/// IDr (B-TID) and TS of an LTKM as sent.
pub fn btid_ts(bytes: &[u8]) -> (String, u32) {
    let l = Ltkm::decode(bytes).expect("an LTKM");
    (l.idr().to_owned(), l.ts())
}

/// Whether the LTKM is a solicited-pull trigger under the caller's SMK, and for which Key Group.
pub fn solicited_pull_group(bytes: &[u8], c: &Caller) -> Option<u16> {
    match Ltkm::decode(bytes).ok()?.open(&c.keys.smk).ok()? {
        OpenedLtkm::SolicitedPull(p) => Some(p.key_group),
        OpenedLtkm::Key(_) => None,
    }
}
