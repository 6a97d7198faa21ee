//! Shared by the provisioning-logic tests: a BSM store (SQLite in a temporary directory) with a
//! small catalogue and keys, terminals with their SMKs, and the card emulator's MBMS store.
#![allow(dead_code)]

use std::net::SocketAddr;

use keycast_bsm::domain::{
    KeyEntry, Program, ProgramId, Purchase, PurchaseData, PurchaseItem, PurchaseKind, Service, ServiceId, TerminalId,
    Window,
};
use keycast_bsm::issue::TerminalKeys;
use keycast_bsm::service::{Caller, Provisioning, ProvisioningConfig};
use keycast_bsm::store::sql::SqliteStore;
use keycast_bsm::store::{BsmStore, StoredKey};
use keycast_card::mbms::MbmsStore;
use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::keys::{SekPek, Smk};
use keycast_mikey::{KeyDomainId, LtkmContent, OpenedLtkm, SekPekId};
use keycast_provisioning::sprov::Price;

pub const FQDN: &str = "bmsc.example.org";
pub const DAY: u64 = 86_400;
/// 2026-06-01T00:00:00Z.
pub const T0: u64 = 1_780_272_000;
/// Seconds between the NTP and Unix epochs.
pub const NTP: u64 = 2_208_988_800;

pub fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

pub fn id(group: u16, number: u16) -> SekPekId {
    SekPekId { key_group: group, key_number: number }
}

/// The key windows of the catalogue.
pub fn window_of(key: SekPekId) -> Window {
    match (key.key_group, key.key_number) {
        (1, 1) => Window { from: T0 - 40 * DAY, until: T0 - 10 * DAY },
        (1, 2) => Window { from: T0 - 10 * DAY, until: T0 + 20 * DAY },
        (2, 1) => Window { from: T0 - 10 * DAY, until: T0 + 20 * DAY },
        (100, 1) => Window { from: T0 + DAY - 3600, until: T0 + DAY + 3 * 3600 },
        _ => panic!("no such key"),
    }
}

/// The key bytes of the catalogue's keys (one octet repeated).
pub fn key_byte(key: SekPekId) -> u8 {
    (key.key_group as u8).wrapping_mul(16) ^ key.key_number as u8
}

fn stored(key: SekPekId) -> StoredKey {
    let b = key_byte(key);
    StoredKey {
        entry: KeyEntry { id: key, window: window_of(key), revoked_at: None },
        key_domain: kd(),
        key: SekPek::from_bytes([b; 16]),
        rand: [b ^ 0x5a; 16],
        csb_id: 0x0100_0000 | u32::from(b),
    }
}

pub fn price(amount: &str) -> Price {
    Price { amount: amount.into(), currency: "EUR".into() }
}

/// A BSM store with:
/// - services `news` (Key Group 1, streaming) and `sport` (Key Group 2, download);
/// - items `basic` [news], `all` [news, sport], `events` [sport], `pack` [sport];
/// - program `final` on sport (Key Group 100) at T0 + 1 day, two hours;
/// - offers `basic-month` (subscription, 30 days), `all-month` (subscription) and `all-2h`
///   (pay-per-time, 2 hours), `final-ppv`, `pack-5` (5 tokens, 30 days);
/// - keys (1,1) history, (1,2) and (2,1) live, (100,1) the program's PEK.
pub struct Bsm {
    pub dir: tempfile::TempDir,
    pub svc: Provisioning<SqliteStore>,
}

impl Bsm {
    pub async fn new() -> Self {
        Self::with_config(ProvisioningConfig::new(FQDN)).await
    }

    pub async fn with_config(config: ProvisioningConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("bsm.db"), StorageKey::from_bytes([0x42; 16])).await.unwrap();
        fill(&store).await;
        Bsm { dir, svc: Provisioning::new(store, config) }
    }

    pub fn store(&self) -> &SqliteStore {
        self.svc.store()
    }

    /// Records a purchase directly (as a web shop would).
    pub async fn bought(&self, caller: &Caller, item: &str, offer: &str, kind: PurchaseKind, window: Window) {
        self.store().touch_terminal(&caller.terminal, &caller.keys.btid, T0).await.unwrap();
        let p = Purchase {
            terminal: caller.terminal.clone(),
            item: item.into(),
            purchase_data: offer.into(),
            kind,
            window,
        };
        self.store().put_purchase(&p).await.unwrap();
    }
}

pub async fn fill<S: BsmStore>(s: &S) {
    let service = |name: &str, group, streaming| Service {
        id: ServiceId(name.into()),
        name: name.into(),
        key_domain: kd(),
        key_group: group,
        streaming,
    };
    s.put_service(&service("news", 1, true)).await.unwrap();
    s.put_service(&service("sport", 2, false)).await.unwrap();
    let item = |id: &str, services: &[&str]| PurchaseItem {
        global_id: id.into(),
        name: id.into(),
        services: services.iter().map(|s| ServiceId((*s).into())).collect(),
    };
    for (id, services) in [
        ("basic", &["news"][..]),
        ("all", &["news", "sport"][..]),
        ("events", &["sport"][..]),
        ("pack", &["sport"][..]),
    ] {
        s.put_purchase_item(&item(id, services)).await.unwrap();
    }
    s.put_program(&Program {
        id: ProgramId("final".into()),
        service: ServiceId("sport".into()),
        key_group: 100,
        window: Window { from: T0 + DAY, until: T0 + DAY + 7200 },
    })
    .await
    .unwrap();
    let offer = |id: &str, item: &str, kind, period| PurchaseData {
        id: id.into(),
        item: item.into(),
        price: price("4.99"),
        kind,
        period,
        play_backs: 0,
    };
    s.put_purchase_data(&offer("basic-month", "basic", PurchaseKind::Subscription, 30 * DAY)).await.unwrap();
    s.put_purchase_data(&offer("all-month", "all", PurchaseKind::Subscription, 30 * DAY)).await.unwrap();
    s.put_purchase_data(&offer("all-2h", "all", PurchaseKind::PayPerTime, 7200)).await.unwrap();
    s.put_purchase_data(&offer("final-ppv", "events", PurchaseKind::PayPerView(ProgramId("final".into())), 0))
        .await
        .unwrap();
    s.put_purchase_data(&offer("pack-5", "pack", PurchaseKind::Tokens(5), 30 * DAY)).await.unwrap();
    for k in [id(1, 1), id(1, 2), id(2, 1), id(100, 1)] {
        s.add_key(&stored(k)).await.unwrap();
    }
}

/// Terminal `n`: IMPI, B-TID and an SMK of its own.
pub fn caller(n: u8) -> Caller {
    Caller {
        terminal: TerminalId(format!("00101000000000{n}@ims.mnc001.mcc001.3gppnetwork.org")),
        keys: TerminalKeys {
            btid: format!("btid-{n}@bsf.example.org"),
            smk: Smk::from_bytes([n; 32]),
            bsm_fqdn: FQDN.into(),
        },
    }
}

/// Terminal `n`'s source address.
pub fn source(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 40_000))
}

/// The card of a terminal: the MBMS store holding its MUK (= SMK) for this BSM.
pub fn card(c: &Caller) -> MbmsStore {
    let mut store = MbmsStore::default();
    store.install_muk(FQDN, &c.keys.btid, c.keys.smk.clone()).unwrap();
    store
}

/// Decodes and opens an LTKM with the terminal's SMK; it must carry a key.
pub fn open(bytes: &[u8], c: &Caller) -> LtkmContent {
    match keycast_mikey::Ltkm::decode(bytes).expect("decodes").open(&c.keys.smk).expect("opens under the SMK") {
        OpenedLtkm::Key(content) => content,
        OpenedLtkm::SolicitedPull(_) => panic!("a key LTKM expected"),
    }
}

/// Unix seconds as NTP seconds.
pub fn ntp(unix: u64) -> u32 {
    u32::try_from(unix + NTP).unwrap()
}
