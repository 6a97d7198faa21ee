//! Push throughput: LTKMs per second out of the BSM's UDP push worker at full rate (no rate
//! limit, no jitter), over a SQLite store on disk.
//!
//! ```text
//! cargo bench -p keycast-bsm --bench push -- --terminals 20000
//! ```
//!
//! Set-up (not timed): one SEK, N registered terminals on 127.0.0.1, one queued delivery each,
//! a key source that knows each terminal's SMK (synthetic: HMAC of the index; no BSF), and a
//! UDP sink counting datagrams. Timed: the worker's rounds (`run_once`, 256 rows a round) until
//! every delivery is pushed — per row a claim, a durable `record_send` (the LTKM TS reserved
//! before anything leaves, profile P-3), the LTKM sealed and one datagram sent. Reports LTKMs/s
//! and datagrams received.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keycast_bsm::delivery::{
    Delivery, DeliveryKey, DeliveryRow, DeliveryState, PushAddress, PushPorts, RegistrationInterface, SchedulerConfig,
    Time,
};
use keycast_bsm::domain::{KeyEntry, TerminalId, Window};
use keycast_bsm::issue::LtkmKind;
use keycast_bsm::keys::{KeyError, KeyFuture, KeyRecord, KeySource, NafKeys};
use keycast_bsm::push::{PushConfig, PushWorker};
use keycast_bsm::rng::SeededRandom;
use keycast_bsm::store::sql::SqliteStore;
use keycast_bsm::store::{BsmStore, Interface, LtkmForm, Registration, StoredKey};
use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::hmac::hmac_sha256;
use keycast_crypto::keys::{KsNaf, SekPek};
use keycast_mikey::{KeyDomainId, KeyValidity, SekPekId};
use tokio::net::UdpSocket;

const T0: u64 = 1_767_225_600;

/// B-TID → (IMPI, SMK); GBA_ME records, whose SMK is Ks_NAF itself.
struct Keys(HashMap<String, (String, [u8; 32])>);

impl KeySource for Keys {
    fn keys<'a>(&'a self, btid: &'a str, _now: u64) -> KeyFuture<'a> {
        let found = self.0.get(btid).cloned();
        Box::pin(async move {
            let (impi, smk) = found.ok_or(KeyError::UnknownBtid)?;
            Ok(Arc::new(KeyRecord::new(btid, &impi, 0, u64::MAX, &NafKeys::Me { ks_naf: KsNaf::from_bytes(smk) })))
        })
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = arg("--terminals", 20_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("bsm.db"), StorageKey::from_bytes([7; 16])).await.expect("store");
    let kd = KeyDomainId::from_mcc_mnc("001", "01").expect("key domain");
    let sek = SekPekId { key_group: 1, key_number: 1 };
    store
        .add_key(&StoredKey {
            entry: KeyEntry { id: sek, window: Window { from: T0, until: T0 + 86_400 }, revoked_at: None },
            key_domain: kd,
            key: SekPek::from_bytes([0x11; 16]),
            rand: [0x22; 16],
            csb_id: 0x3333_3333,
        })
        .await
        .expect("key");

    let sink = UdpSocket::bind("127.0.0.1:0").await.expect("sink");
    let sink_port = sink.local_addr().expect("sink address").port();
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let sink_task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while sink.recv_from(&mut buf).await.is_ok() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    let setup = Instant::now();
    let mut keys = HashMap::new();
    let mut rows = Vec::with_capacity(n as usize);
    for i in 0..n {
        let impi = format!("user{i}@ims.example.org");
        let btid = format!("btid{i}@bsf.example.org");
        let smk = hmac_sha256(b"keycast push bench", &[&i.to_be_bytes()]);
        let terminal = TerminalId(impi.clone());
        store.touch_terminal(&terminal, &btid, T0).await.expect("terminal");
        let registration =
            Registration { address: format!("127.0.0.1:{sink_port}"), interface: Interface::OmaBcast, at: T0 };
        store.register(&terminal, &registration).await.expect("registration");
        keys.insert(btid, (impi.clone(), smk));
        let delivery = Delivery {
            key: DeliveryKey { terminal: impi, key_domain_id: kd, sek_pek_id: sek, version: 1 },
            kind: LtkmKind::Deliver { validity: KeyValidity::TekIdWindow { seq_l: 0, seq_u: 1000 } },
            to: PushAddress { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), interface: RegistrationInterface::OmaBcast },
        };
        let row =
            DeliveryRow { delivery, state: DeliveryState::Pending, due: Some(Time::from_secs(T0)), sent: Vec::new() };
        rows.push((row, LtkmForm { ext: None, streaming: None }));
    }
    store.enqueue_pushes(&rows).await.expect("deliveries");
    drop(rows);
    let setup = setup.elapsed();

    let mut config = PushConfig::new("bench-worker", "bmsc.example.org");
    config.scheduler = SchedulerConfig {
        spread_window: Duration::ZERO,
        jitter: Duration::ZERO,
        rate: None,
        ports: PushPorts { mbms: sink_port, oma_bcast: sink_port },
        ..SchedulerConfig::default()
    };
    let worker = PushWorker::bind(
        store.clone(),
        Keys(keys),
        config,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SeededRandom::new(1),
    )
    .await
    .expect("worker");

    let start = Instant::now();
    let mut pushed = 0u64;
    let mut rounds = 0u64;
    while pushed < n {
        let report = worker.run_once(Time::from_secs(T0)).await.expect("round");
        rounds += 1;
        pushed += u64::from(report.pushed);
        if report.claimed == 0 {
            break;
        }
    }
    let elapsed = start.elapsed();
    // Let the last datagrams arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    sink_task.abort();
    println!(
        "keycast-bsm push worker, SQLite (synchronous=FULL): {n} terminals set up in {:.1} s; {pushed} LTKMs pushed in \
         {:.2} s over {rounds} rounds = {:.0} LTKMs/s; {} datagrams received",
        setup.as_secs_f64(),
        elapsed.as_secs_f64(),
        pushed as f64 / elapsed.as_secs_f64(),
        received.load(Ordering::Relaxed)
    );
    store.close().await;
}
