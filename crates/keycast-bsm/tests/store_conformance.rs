//! The `BsmStore` conformance suite, written once and run on `SqliteStore` (a file in a temporary
//! directory) and `PgStore` (a fresh schema per test in the database named by
//! `KEYCAST_TEST_POSTGRES_URL`; without it those tests print that they were skipped and pass).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keycast_bsm::client_id::BcastClientId;
use keycast_bsm::delivery::AckOutcome;
use keycast_bsm::delivery::{
    Action, Attempt, Delivery, DeliveryId, DeliveryKey, DeliveryRow, DeliveryState, FailReason, PushAddress,
    RegistrationInterface, Scheduler, SchedulerConfig, SendResult, Time,
};
use keycast_bsm::issue::{LtkmKind, StreamingPolicy};
use keycast_bsm::rng::SeededRandom;

use keycast_bsm::domain::{
    KeyEntry, KeyGroup, Program, ProgramId, Purchase, PurchaseData, PurchaseItem, PurchaseKind, Service, ServiceId,
    TerminalId, Window,
};
use keycast_bsm::store::sql::{PgStore, SqliteStore};
use keycast_bsm::store::{BsmStore, Interface, LtkmForm, Registration, StoreError, StoredKey};
use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::keys::SekPek;
use keycast_mikey::{KeyDomainId, KeyValidity, LtkmExt, SecurityPolicy, SecurityPolicyExt, SekPekId};
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
        play_backs: 0,
    };
    s.put_purchase_data(&offer("basic-month", "basic", PurchaseKind::Subscription)).await.unwrap();
    s.put_purchase_data(&offer("final-ppv", "all", PurchaseKind::PayPerView(ProgramId("final".into())))).await.unwrap();
    s.put_purchase_data(&offer("all-tokens", "all", PurchaseKind::Tokens(10))).await.unwrap();
}

/// Delivery times are microseconds; `T0` seconds is the tests' "now".
fn at(s: u64) -> Time {
    Time::from_secs(T0 + s)
}

const LEASE: Duration = Duration::from_secs(30);

fn dkey(n: u32, version: u32) -> DeliveryKey {
    DeliveryKey {
        terminal: terminal(n).0,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 1, key_number: 2 },
        version,
    }
}

fn fresh(n: u32, version: u32, kind: LtkmKind, due: Time) -> DeliveryRow {
    DeliveryRow {
        delivery: Delivery {
            key: dkey(n, version),
            kind,
            to: PushAddress { ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), interface: RegistrationInterface::OmaBcast },
        },
        state: DeliveryState::Pending,
        due: Some(due),
        sent: Vec::new(),
    }
}

fn deliver() -> LtkmKind {
    LtkmKind::Deliver { validity: KeyValidity::TekIdWindow { seq_l: 0, seq_u: 100 } }
}

async fn open_count<S: BsmStore>(s: &S) -> usize {
    s.open_deliveries().await.unwrap().len()
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
        assert_eq!(data[2].play_backs, 0);
        // An offer's play-backs (P-4 codes 0x01/0x03) come back, and replace.
        let mut rec = data[2].clone();
        rec.play_backs = 65_535;
        s.put_purchase_data(&rec).await.unwrap();
        assert_eq!(s.purchase_data().await.unwrap()[2], rec);
        rec.play_backs = 3;
        s.put_purchase_data(&rec).await.unwrap();
        assert_eq!(s.purchase_data().await.unwrap()[2].play_backs, 3);
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
            play_backs: 0,
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

    pub async fn terminals_keep_their_bcast_client_id<S: BsmStore>(s: Arc<S>) {
        let t = terminal(2);
        let id = |bytes: &[u8]| BcastClientId::from_bytes(bytes.to_vec()).unwrap();
        assert!(!s.set_bcast_client_id(&t, &id(b"client-a")).await.unwrap(), "unknown terminal");
        assert_eq!(s.terminal(&t).await, Ok(None), "nothing created for an unknown terminal");
        let seen = s.touch_terminal(&t, "btid-1@bsf", T0).await.unwrap();
        assert_eq!(seen.bcast_client_id, None);
        assert!(s.set_bcast_client_id(&t, &id(b"client-a")).await.unwrap());
        assert_eq!(s.terminal(&t).await.unwrap().unwrap().bcast_client_id, Some(id(b"client-a")));
        let again = s.touch_terminal(&t, "btid-2@bsf", T0 + 1).await.unwrap();
        assert_eq!(again.bcast_client_id, Some(id(b"client-a")), "touch keeps the ID");
        s.register(&t, &registration("127.0.0.1:4000", T0 + 2)).await.unwrap();
        s.deregister(&t).await.unwrap();
        // The longest ID, every octet value: stored as octets, not text.
        let long: Vec<u8> = (0..=255u8).collect();
        assert!(s.set_bcast_client_id(&t, &id(&long)).await.unwrap(), "the last ID counts");
        let stored = s.terminal(&t).await.unwrap().unwrap();
        assert_eq!(stored.bcast_client_id, Some(id(&long)), "kept across (de)registration and replaced");
        assert_eq!(s.terminal(&terminal(1)).await, Ok(None), "no other terminal touched");
    }

    fn registration(address: &str, at: u64) -> Registration {
        Registration { address: address.into(), interface: Interface::OmaBcast, at }
    }

    /// The no-write rule of `touch_terminal` and `register`: nothing is written when nothing a
    /// client can observe changes beyond the 60 s granularity of `last_seen` and the registration
    /// time.
    pub async fn unchanged_terminals_are_not_written_again<S: BsmStore>(s: Arc<S>) {
        let t = terminal(3);
        let stored = |s: Arc<S>| async move { s.terminal(&terminal(3)).await.unwrap().unwrap() };
        assert_eq!(s.touch_terminal(&t, "btid-1@bsf", T0).await.unwrap().last_seen, T0);
        let again = s.touch_terminal(&t, "btid-1@bsf", T0 + 59).await.unwrap();
        assert_eq!(again.last_seen, T0, "same B-TID within 60 s: kept as stored");
        assert_eq!(stored(s.clone()).await.last_seen, T0);
        assert_eq!(s.touch_terminal(&t, "btid-1@bsf", T0 + 60).await.unwrap().last_seen, T0 + 60, "60 s on");
        let moved = s.touch_terminal(&t, "btid-2@bsf", T0 + 61).await.unwrap();
        assert_eq!((moved.btid.as_deref(), moved.last_seen), (Some("btid-2@bsf"), T0 + 61), "a new B-TID");
        assert_eq!(stored(s.clone()).await.btid.as_deref(), Some("btid-2@bsf"));

        assert!(s.register(&t, &registration("127.0.0.1:4000", T0 + 61)).await.unwrap());
        assert!(s.register(&t, &registration("127.0.0.1:4000", T0 + 120)).await.unwrap(), "answered as done");
        assert_eq!(stored(s.clone()).await.registration, Some(registration("127.0.0.1:4000", T0 + 61)), "kept");
        assert!(s.register(&t, &registration("127.0.0.1:4001", T0 + 121)).await.unwrap());
        assert_eq!(stored(s.clone()).await.registration, Some(registration("127.0.0.1:4001", T0 + 121)), "new port");
        let mbms = Registration { interface: Interface::Mbms, at: T0 + 122, ..registration("127.0.0.1:4001", 0) };
        assert!(s.register(&t, &mbms).await.unwrap());
        assert_eq!(stored(s.clone()).await.registration, Some(mbms.clone()), "new interface");
        let later = Registration { at: T0 + 182, ..mbms };
        assert!(s.register(&t, &later).await.unwrap());
        assert_eq!(stored(s.clone()).await.registration, Some(later), "60 s on");
        assert!(!s.register(&terminal(4), &registration("127.0.0.1:4000", T0)).await.unwrap(), "unknown terminal");
        assert_eq!(s.terminal(&terminal(4)).await, Ok(None));
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
    pub async fn deliveries_go_through_their_lifecycle<S: BsmStore>(s: Arc<S>) {
        s.touch_terminal(&terminal(10), "b10@bsf", T0).await.unwrap();
        let ts_update = LtkmKind::UpdateValidity { validity: KeyValidity::TsWindow { ts_low: 7, ts_high: u32::MAX } };
        let mut mbms = fresh(10, 2, ts_update, at(0));
        mbms.delivery.to = PushAddress { ip: "2001:db8::7".parse().unwrap(), interface: RegistrationInterface::Mbms };
        let rows = vec![fresh(10, 1, deliver(), at(0)), mbms, fresh(10, 3, LtkmKind::Invalidate, at(60))];
        assert_eq!(s.enqueue_deliveries(&rows).await, Ok(3));
        for row in &rows {
            let (_, back) = s.delivery(&row.delivery.key).await.unwrap().expect("stored");
            assert_eq!(&back, row, "every kind, window form and interface round-trips");
        }
        assert_eq!(s.delivery(&dkey(10, 9)).await, Ok(None));

        // Two due now; the third later.
        let claimed = s.claim_due("w1", at(0), LEASE, 10).await.unwrap();
        let keys: Vec<_> = claimed.iter().map(|(_, r)| r.delivery.key.version).collect();
        assert_eq!(keys.len(), 2);
        assert!(keys.contains(&1) && keys.contains(&2), "{keys:?}");
        assert!(s.claim_due("w2", at(1), LEASE, 10).await.unwrap().is_empty(), "live leases protect them");

        let key = dkey(10, 1);
        let ts = s.record_send("w1", &key, Attempt::Push(1), "b10@bsf", at(1), at(31)).await.unwrap();
        assert_eq!((ts.btid(), ts.value()), ("b10@bsf", 1));
        let (_, row) = s.delivery(&key).await.unwrap().unwrap();
        assert_eq!(row.state, DeliveryState::Sent { attempt: 1, at: at(1) });
        assert_eq!(row.due, Some(at(31)));
        assert_eq!(row.sent.len(), 1);
        assert_eq!(
            (row.sent[0].attempt, row.sent[0].ts, row.sent[0].at, row.sent[0].acknowledged),
            (1, 1, at(1), false)
        );
        assert!(
            matches!(
                s.record_send("w1", &key, Attempt::Push(2), "b10@bsf", at(2), at(60)).await,
                Err(StoreError::NotClaimed(_))
            ),
            "record_send ends the claim"
        );

        // At 31 s the retry is due, and w1's lease on the other one has run out: earliest due first.
        let again = s.claim_due("w2", at(31), LEASE, 10).await.unwrap();
        let versions: Vec<u32> = again.iter().map(|(_, r)| r.delivery.key.version).collect();
        assert_eq!(versions, [2, 1]);
        assert_eq!(again[1].1.sent, row.sent, "the claim brings the sent attempts");
        assert!(matches!(
            s.record_send("w2", &key, Attempt::Push(3), "b10@bsf", at(31), at(90)).await,
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(s.record_send("w2", &key, Attempt::Push(2), "b10@bsf", at(31), at(90)).await.unwrap().value(), 2);

        // Acknowledged (verification message): once; repeating it changes nothing.
        assert_eq!(s.record_outcome(&key, DeliveryState::Acknowledged { at: at(40) }, None).await, Ok(true));
        assert_eq!(s.record_outcome(&key, DeliveryState::Acknowledged { at: at(41) }, None).await, Ok(false));
        let failed = DeliveryState::Failed { at: at(42), reason: FailReason::NoAcknowledgement };
        assert_eq!(s.record_outcome(&key, failed, None).await, Ok(false), "an acknowledgement stands");
        let (_, row) = s.delivery(&key).await.unwrap().unwrap();
        assert_eq!((row.state, row.due, row.sent.len()), (DeliveryState::Acknowledged { at: at(40) }, None, 2));

        // The MBMS one: a solicited pull (a TS, no sent attempt), then given up, then acknowledged.
        let pull_key = dkey(10, 2);
        let ts = s.record_send("w1", &pull_key, Attempt::SolicitedPull, "b10@bsf", at(35), at(600)).await;
        assert!(matches!(ts, Err(StoreError::NotClaimed(_))), "w2 holds it now: {ts:?}");
        let ts = s.record_send("w2", &pull_key, Attempt::SolicitedPull, "b10@bsf", at(40), at(640)).await.unwrap();
        assert_eq!(ts.value(), 3, "one counter per terminal and SMK, whatever the delivery");
        let (_, row) = s.delivery(&pull_key).await.unwrap().unwrap();
        assert_eq!(
            (row.state, row.due, row.sent.len()),
            (DeliveryState::PullSolicited { at: at(40) }, Some(at(640)), 0)
        );
        assert_eq!(s.record_outcome(&pull_key, failed, None).await, Ok(true));
        assert_eq!(s.record_outcome(&pull_key, failed, None).await, Ok(false));
        assert_eq!(
            s.record_outcome(&pull_key, DeliveryState::Acknowledged { at: at(50) }, None).await,
            Ok(true),
            "after give-up"
        );

        // A live state needs a due time; an unknown delivery is missing.
        let third = dkey(10, 3);
        let sent = DeliveryState::Sent { attempt: 0, at: at(1) };
        assert!(matches!(s.record_outcome(&third, DeliveryState::Pending, None).await, Err(StoreError::Invalid(_))));
        assert_eq!(s.record_outcome(&third, DeliveryState::Pending, Some(at(70))).await, Ok(true), "rescheduled");
        assert!(matches!(s.record_outcome(&dkey(99, 1), sent, Some(at(1))).await, Err(StoreError::Missing(_))));
        let open = s.open_deliveries().await.unwrap();
        assert_eq!(open.len(), 1, "only live rows are open");
        assert_eq!((open[0].1.delivery.key.version, open[0].1.due), (3, Some(at(70))));
    }

    pub async fn duplicate_deliveries_are_refused_whole<S: BsmStore>(s: Arc<S>) {
        let first: Vec<_> = (0..5).map(|i| fresh(20, i, deliver(), at(0))).collect();
        assert_eq!(s.enqueue_deliveries(&first).await, Ok(5));
        let with_existing = vec![fresh(20, 5, deliver(), at(0)), fresh(20, 0, deliver(), at(0))];
        assert!(matches!(s.enqueue_deliveries(&with_existing).await, Err(StoreError::Conflict(_))));
        let twice = vec![fresh(21, 1, deliver(), at(0)), fresh(21, 1, deliver(), at(0))];
        assert!(matches!(s.enqueue_deliveries(&twice).await, Err(StoreError::Conflict(_))));
        let mut no_due = fresh(22, 1, deliver(), at(0));
        no_due.due = None;
        assert!(matches!(
            s.enqueue_deliveries(&[fresh(22, 2, deliver(), at(0)), no_due]).await,
            Err(StoreError::Invalid(_))
        ));
        // More rows than one statement takes (either backend), the duplicate in the last one.
        let mut big: Vec<_> = (0..5_000).map(|i| fresh(23, i, deliver(), at(0))).collect();
        big.push(fresh(23, 0, deliver(), at(0)));
        assert!(matches!(s.enqueue_deliveries(&big).await, Err(StoreError::Conflict(_))));
        assert_eq!(open_count(&*s).await, 5, "nothing half-written");
        big.pop();
        assert_eq!(s.enqueue_deliveries(&big).await, Ok(5_000));
        assert_eq!(open_count(&*s).await, 5_005);
    }

    pub async fn concurrent_claimers_never_share_a_row<S: BsmStore + Send + Sync + 'static>(s: Arc<S>) {
        let rows: Vec<_> = (0..400).map(|i| fresh(30 + i % 7, i, deliver(), at(u64::from(i % 3)))).collect();
        s.enqueue_deliveries(&rows).await.unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|w| {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let got = s.claim_due(&format!("worker-{w}"), at(5), LEASE, 7).await.unwrap();
                        if got.is_empty() {
                            return mine;
                        }
                        mine.extend(got.into_iter().map(|(id, _)| id));
                    }
                })
            })
            .collect();
        let mut all: Vec<DeliveryId> = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        let distinct: HashSet<_> = all.iter().copied().collect();
        assert_eq!(all.len(), 400, "every due row claimed");
        assert_eq!(distinct.len(), 400, "no row claimed twice");
    }

    pub async fn leases_run_out_and_stale_workers_are_refused<S: BsmStore>(s: Arc<S>) {
        s.touch_terminal(&terminal(40), "b40@bsf", T0).await.unwrap();
        let rows: Vec<_> = (1..=3).map(|v| fresh(40, v, deliver(), at(0))).collect();
        s.enqueue_deliveries(&rows).await.unwrap();
        assert_eq!(s.claim_due("w1", at(0), LEASE, 10).await.unwrap().len(), 3);
        assert!(s.claim_due("w2", at(29), LEASE, 10).await.unwrap().is_empty(), "lease still live");
        // Lease ran out but nobody took the rows: w1 is refused all the same (a taker may come any
        // moment, and w1 cannot know).
        let late = s.record_send("w1", &dkey(40, 3), Attempt::Push(1), "b40@bsf", at(30), at(60)).await;
        assert!(matches!(late, Err(StoreError::NotClaimed(_))), "{late:?}");
        let taken = s.claim_due("w2", at(30), LEASE, 2).await.unwrap();
        assert_eq!(taken.len(), 2);
        let key = &taken[0].1.delivery.key;
        let stale = s.record_send("w1", key, Attempt::Push(1), "b40@bsf", at(31), at(61)).await;
        assert!(matches!(stale, Err(StoreError::NotClaimed(_))), "{stale:?}");
        assert_eq!(s.delivery(key).await.unwrap().unwrap().1.state, DeliveryState::Pending, "nothing changed");
        assert_eq!(s.record_send("w2", key, Attempt::Push(1), "b40@bsf", at(31), at(61)).await.unwrap().value(), 1);
        // An unknown terminal: refused, the claim stays.
        s.enqueue_deliveries(&[fresh(41, 1, deliver(), at(0))]).await.unwrap();
        assert_eq!(s.claim_due("w3", at(31), LEASE, 10).await.unwrap().len(), 2, "w1's last one and the new one");
        let unknown = s.record_send("w3", &dkey(41, 1), Attempt::Push(1), "b41@bsf", at(31), at(61)).await;
        assert!(matches!(unknown, Err(StoreError::Missing(_))), "{unknown:?}");
        assert!(s.claim_due("w4", at(32), LEASE, 10).await.unwrap().is_empty());
    }

    pub async fn ltkm_ts_grows_per_terminal_and_smk_across_sends<S: BsmStore>(s: Arc<S>) {
        for t in [50, 51] {
            s.touch_terminal(&terminal(t), &format!("b{t}@bsf"), T0).await.unwrap();
        }
        let rows: Vec<_> = [50, 51].iter().flat_map(|&t| (1..=4).map(move |v| fresh(t, v, deliver(), at(0)))).collect();
        s.enqueue_deliveries(&rows).await.unwrap();
        assert_eq!(s.claim_due("w", at(0), LEASE, 100).await.unwrap().len(), 8);
        let mut seen = Vec::new();
        for v in 1..=3 {
            for t in [50, 51] {
                let ts = s.record_send("w", &dkey(t, v), Attempt::Push(1), &format!("b{t}@bsf"), at(1), at(100)).await;
                seen.push((t, ts.unwrap().value()));
            }
        }
        assert_eq!(seen, [(50, 1), (51, 1), (50, 2), (51, 2), (50, 3), (51, 3)]);
        assert_eq!(s.reserve_ltkm_ts(&terminal(50), "b50@bsf", 1).await, Ok(4), "one counter for both paths");
        // Terminal 50 bootstrapped again: a new SMK, the count restarts.
        let ts = s.record_send("w", &dkey(50, 4), Attempt::Push(1), "b50-new@bsf", at(2), at(100)).await.unwrap();
        assert_eq!((ts.btid(), ts.value()), ("b50-new@bsf", 1));
        let ts = s.record_send("w", &dkey(51, 4), Attempt::Push(1), "b51@bsf", at(2), at(100)).await.unwrap();
        assert_eq!(ts.value(), 4);
    }

    /// The scheduler's rows survive the store: a scheduler restored from the store acts exactly as
    /// one restored from the rows in memory (and as the original, when no rate limit or jitter
    /// state differs).
    pub async fn scheduler_rows_round_trip<S: BsmStore>(s: Arc<S>) {
        let config = SchedulerConfig {
            spread_window: Duration::from_secs(100),
            jitter: Duration::from_millis(300),
            rate: None,
            ..SchedulerConfig::default()
        };
        let mut original = Scheduler::new(config, SeededRandom::new(7)).unwrap();
        let kinds = [
            deliver(),
            LtkmKind::Invalidate,
            LtkmKind::UpdateValidity { validity: KeyValidity::TsWindow { ts_low: 1, ts_high: 2 } },
        ];
        let deliveries: Vec<Delivery> =
            (0..60u32).map(|i| fresh(60 + i, 1, kinds[i as usize % 3], at(0)).delivery).collect();
        original.enqueue_campaign(deliveries, at(0)).unwrap();
        // Drive to 400 s: every push reported sent with a TS, every third acknowledged.
        let mut ts = 0;
        let mut now = at(0);
        while now <= at(400) {
            for action in original.poll(now) {
                match action {
                    Action::Send { id, attempt, .. } => {
                        ts += 1;
                        let sent = SendResult::Sent { btid: format!("btid-{}", id.0), ts };
                        original.send_result(id, Attempt::Push(attempt), sent, now).unwrap();
                        if id.0 % 3 == 0 {
                            original.acknowledged(id, now).unwrap();
                        }
                    }
                    Action::SolicitedPull { id, .. } => {
                        original.send_result(id, Attempt::SolicitedPull, SendResult::NotSent, now).unwrap();
                    }
                    Action::GiveUp { .. } => {}
                }
            }
            now = now.after(Duration::from_secs(7));
        }
        let rows: Vec<DeliveryRow> = original.rows().map(|(_, r)| r.clone()).collect();
        assert!(rows.iter().any(|r| !r.sent.is_empty() && !r.state.is_final()), "some in flight");
        assert!(rows.iter().any(|r| r.state.is_final()), "some done");
        assert_eq!(s.enqueue_deliveries(&rows).await, Ok(60));
        for row in &rows {
            assert_eq!(&s.delivery(&row.delivery.key).await.unwrap().unwrap().1, row, "row kept as is");
        }
        let stored = s.open_deliveries().await.unwrap();
        let in_memory: Vec<(DeliveryId, DeliveryRow)> =
            original.rows().filter(|(_, r)| !r.state.is_final()).map(|(id, r)| (id, r.clone())).collect();
        assert_eq!(stored.len(), in_memory.len());
        let mut from_store = Scheduler::restore(config, SeededRandom::new(9), stored).unwrap();
        let mut from_memory = Scheduler::restore(config, SeededRandom::new(9), in_memory).unwrap();
        // Actions named by delivery key (the store numbers deliveries its own way).
        let named = |s: &Scheduler<SeededRandom>, actions: Vec<Action>| -> Vec<String> {
            let mut out: Vec<String> = actions
                .into_iter()
                .map(|a| match a {
                    Action::Send { id, attempt, to, .. } => {
                        format!("send {} #{attempt} {to}", s.row(id).unwrap().delivery.key.terminal)
                    }
                    Action::SolicitedPull { id, to, .. } => {
                        format!("pull {} {to}", s.row(id).unwrap().delivery.key.terminal)
                    }
                    Action::GiveUp { key, .. } => format!("give up {}", key.terminal),
                })
                .collect();
            out.sort();
            out
        };
        assert_eq!(from_store.poll_timeout(), original.poll_timeout());
        let mut t = now;
        let mut steps = 0;
        while let Some(next) = from_store.poll_timeout() {
            assert_eq!(from_memory.poll_timeout(), Some(next));
            t = t.max(next);
            let a = from_store.poll(t);
            let b = from_memory.poll(t);
            let first = steps == 0;
            let (a, b) = (named(&from_store, a), named(&from_memory, b));
            if first {
                let o = original.poll(t);
                assert_eq!(a, named(&original, o), "the original agrees on the next step");
            }
            assert_eq!(a, b);
            steps += 1;
        }
        assert!(steps > 3, "several steps compared");
    }

    /// A form with every part set: policy with counters, TBK ID, reporting, and a streaming policy
    /// with an SSRC, a ROC and the RFC 4771 rate.
    fn full_form() -> LtkmForm {
        let mut streaming = StreamingPolicy::keycast(Some(16));
        streaming.srtp_cs.ssrc = 0xdead_beef;
        streaming.srtp_cs.roc = 7;
        LtkmForm {
            ext: Some(LtkmExt {
                security_policy: Some(SecurityPolicyExt {
                    policy: SecurityPolicy::UserPayPerView,
                    play_back_counter: 3,
                    view_counter: 65_535,
                }),
                tbk_id: Some(0x0102_0304),
                consumption_reporting: true,
            }),
            streaming: Some(streaming),
        }
    }

    pub async fn pushes_keep_their_form_and_versions<S: BsmStore>(s: Arc<S>) {
        let id = SekPekId { key_group: 1, key_number: 2 };
        let t = terminal(20).0;
        assert_eq!(s.latest_delivery_version(&t, kd(), id).await, Ok(None));
        let plain_ext = LtkmForm { ext: Some(LtkmExt::default()), streaming: None };
        let pushes = vec![
            (fresh(20, 1, deliver(), at(0)), full_form()),
            (fresh(20, 2, LtkmKind::Invalidate, at(5)), plain_ext.clone()),
        ];
        assert_eq!(s.enqueue_pushes(&pushes).await, Ok(2));
        for (row, form) in &pushes {
            assert_eq!(s.delivery_form(&row.delivery.key).await.as_ref(), Ok(&Some(form.clone())), "form round-trips");
            let (_, back) = s.delivery(&row.delivery.key).await.unwrap().unwrap();
            assert_eq!(&back, row);
        }
        assert_eq!(s.latest_delivery_version(&t, kd(), id).await, Ok(Some(2)));
        let other_key = SekPekId { key_group: 1, key_number: 3 };
        assert_eq!(s.latest_delivery_version(&t, kd(), other_key).await, Ok(None), "per key");
        assert_eq!(s.latest_delivery_version(&terminal(21).0, kd(), id).await, Ok(None), "per terminal");
        assert_eq!(s.delivery_form(&dkey(20, 9)).await, Ok(None), "unknown delivery");

        // Rows queued without a form read back as the plain form; a repeated version is refused whole.
        assert_eq!(s.enqueue_deliveries(&[fresh(20, 3, deliver(), at(0))]).await, Ok(1));
        assert_eq!(s.delivery_form(&dkey(20, 3)).await, Ok(Some(LtkmForm::default())));
        let again =
            vec![(fresh(20, 4, deliver(), at(0)), LtkmForm::default()), (fresh(20, 3, deliver(), at(0)), full_form())];
        assert!(matches!(s.enqueue_pushes(&again).await, Err(StoreError::Conflict(_))));
        assert_eq!(s.delivery(&dkey(20, 4)).await, Ok(None), "nothing of a refused batch is stored");

        // Live deliveries of one terminal only; final ones drop out.
        s.enqueue_deliveries(&[fresh(21, 1, deliver(), at(0))]).await.unwrap();
        let live: Vec<u32> =
            s.live_deliveries_of(&t).await.unwrap().iter().map(|(_, r)| r.delivery.key.version).collect();
        assert_eq!(live, [1, 2, 3]);
        let stopped = DeliveryState::Failed { at: at(9), reason: FailReason::Stopped };
        assert_eq!(s.record_outcome(&dkey(20, 2), stopped, None).await, Ok(true));
        let superseded = DeliveryState::Failed { at: at(9), reason: FailReason::Superseded };
        assert_eq!(s.record_outcome(&dkey(20, 3), superseded, None).await, Ok(true));
        let live: Vec<u32> =
            s.live_deliveries_of(&t).await.unwrap().iter().map(|(_, r)| r.delivery.key.version).collect();
        assert_eq!(live, [1]);
        assert_eq!(s.delivery(&dkey(20, 2)).await.unwrap().unwrap().1.state, stopped, "new reasons round-trip");
        assert_eq!(s.delivery(&dkey(20, 3)).await.unwrap().unwrap().1.state, superseded);
        assert_eq!(s.live_deliveries_of(&terminal(99).0).await, Ok(Vec::new()));

        // A live state that names no push count keeps the stored one (an unsent solicited pull).
        s.touch_terminal(&terminal(20), "b20@bsf", T0).await.unwrap();
        s.claim_due("w", at(0), LEASE, 10).await.unwrap();
        s.record_send("w", &dkey(20, 1), Attempt::Push(1), "b20@bsf", at(0), at(10)).await.unwrap();
        let pulled = DeliveryState::PullSolicited { at: at(10) };
        assert_eq!(s.record_outcome(&dkey(20, 1), pulled, Some(at(70))).await, Ok(true));
        let (_, row) = s.delivery(&dkey(20, 1)).await.unwrap().unwrap();
        assert_eq!((row.state, row.due, row.sent.len()), (pulled, Some(at(70)), 1));
    }

    pub async fn unsent_attempts_count_without_a_ts<S: BsmStore>(s: Arc<S>) {
        s.touch_terminal(&terminal(40), "b40@bsf", T0).await.unwrap();
        s.enqueue_deliveries(&[fresh(40, 1, deliver(), at(0))]).await.unwrap();
        let key = dkey(40, 1);
        let refused = s.record_unsent("w", &key, Attempt::Push(1), at(0), at(10)).await;
        assert!(matches!(refused, Err(StoreError::NotClaimed(_))), "only under a claim: {refused:?}");
        s.claim_due("w", at(0), LEASE, 10).await.unwrap();
        let refused = s.record_unsent("w", &key, Attempt::Push(2), at(0), at(10)).await;
        assert!(matches!(refused, Err(StoreError::Invalid(_))), "pushes in sequence: {refused:?}");
        assert_eq!(s.record_unsent("w", &key, Attempt::Push(1), at(0), at(10)).await, Ok(()));
        let (_, row) = s.delivery(&key).await.unwrap().unwrap();
        assert_eq!(
            (row.state, row.due, row.sent.len()),
            (DeliveryState::Sent { attempt: 1, at: at(0) }, Some(at(10)), 0)
        );

        // The claim ended: another worker takes the retry when it is due, well inside the lease.
        assert!(s.claim_due("v", at(9), LEASE, 10).await.unwrap().is_empty());
        assert_eq!(s.claim_due("v", at(10), LEASE, 10).await.unwrap().len(), 1);
        assert_eq!(s.record_unsent("v", &key, Attempt::SolicitedPull, at(10), at(70)).await, Ok(()));
        let (_, row) = s.delivery(&key).await.unwrap().unwrap();
        assert_eq!((row.state, row.due), (DeliveryState::PullSolicited { at: at(10) }, Some(at(70))));
        assert_eq!(s.reserve_ltkm_ts(&terminal(40), "b40@bsf", 1).await, Ok(1), "no TS was taken");
    }

    pub async fn sent_ltkms_are_found_and_acknowledged_once<S: BsmStore>(s: Arc<S>) {
        s.touch_terminal(&terminal(30), "b30@bsf", T0).await.unwrap();
        let pushes =
            vec![(fresh(30, 1, deliver(), at(0)), full_form()), (fresh(30, 2, deliver(), at(0)), LtkmForm::default())];
        s.enqueue_pushes(&pushes).await.unwrap();
        s.claim_due("w", at(0), LEASE, 10).await.unwrap();
        let ts1 = s.record_send("w", &dkey(30, 1), Attempt::Push(1), "b30@bsf", at(0), at(10)).await.unwrap();
        let ts2 = s.record_send("w", &dkey(30, 2), Attempt::Push(1), "b30@bsf", at(0), at(10)).await.unwrap();
        s.claim_due("w", at(10), LEASE, 10).await.unwrap();
        let ts3 = s.record_send("w", &dkey(30, 1), Attempt::Push(2), "b30@bsf", at(10), at(30)).await.unwrap();

        let found = s.find_sent("b30@bsf", ts1.value()).await.unwrap().expect("sent");
        assert_eq!(found.row.delivery.key, dkey(30, 1));
        assert_eq!((found.sent.attempt, found.sent.ts, found.sent.acknowledged), (1, ts1.value(), false));
        assert_eq!(found.row.sent.len(), 2, "with every attempt of its delivery");
        assert_eq!(found.form, full_form());
        assert_eq!(s.find_sent("b30@bsf", ts3.value()).await.unwrap().unwrap().sent.attempt, 2);
        assert_eq!(s.find_sent("b30@bsf", 999).await, Ok(None));
        assert_eq!(s.find_sent("other@bsf", ts1.value()).await, Ok(None), "B-TID and TS together name it");

        // The older attempt's answer acknowledges the delivery, once.
        assert_eq!(s.acknowledge_sent("b30@bsf", ts1.value(), at(12)).await, Ok(Some(AckOutcome::Acknowledged)));
        assert_eq!(s.acknowledge_sent("b30@bsf", ts1.value(), at(13)).await, Ok(None), "a replay changes nothing");
        let (_, row) = s.delivery(&dkey(30, 1)).await.unwrap().unwrap();
        assert_eq!((row.state, row.due), (DeliveryState::Acknowledged { at: at(12) }, None));
        assert_eq!(row.sent.iter().map(|x| x.acknowledged).collect::<Vec<_>>(), [true, false]);
        assert_eq!(
            s.acknowledge_sent("b30@bsf", ts3.value(), at(14)).await,
            Ok(Some(AckOutcome::AlreadyAcknowledged)),
            "the newer attempt's answer finds it acknowledged"
        );
        assert_eq!(
            s.delivery(&dkey(30, 1)).await.unwrap().unwrap().1.state,
            DeliveryState::Acknowledged { at: at(12) }
        );
        assert!(matches!(s.acknowledge_sent("b30@bsf", 999, at(14)).await, Err(StoreError::Missing(_))));

        // After giving up, an answer still counts.
        let failed = DeliveryState::Failed { at: at(20), reason: FailReason::NoAcknowledgement };
        s.record_outcome(&dkey(30, 2), failed, None).await.unwrap();
        assert_eq!(s.acknowledge_sent("b30@bsf", ts2.value(), at(21)).await, Ok(Some(AckOutcome::AfterGiveUp)));
        assert_eq!(
            s.delivery(&dkey(30, 2)).await.unwrap().unwrap().1.state,
            DeliveryState::Acknowledged { at: at(21) }
        );
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
    /// A worker claims and dies before `record_send`; another process opens the database: the rows
    /// come back to it once the lease runs out, never before.
    /// The catalogue and keys are cached per store; a change made through another store on the
    /// same database, or by plain SQL, reaches it within the cache's freshness (250 ms), and the
    /// writer sees its own change at once.
    pub async fn catalogue_changes_reach_every_store<F: SqlFixture>(f: F) {
        let a = f.store();
        let b = f.reopen(storage_key()).await.unwrap();
        catalogue(&*a).await;
        assert_eq!(b.services().await.unwrap().len(), 2);
        assert!(b.key_entries(1).await.unwrap().is_empty());
        a.put_service(&service("film", 3)).await.unwrap();
        a.add_key(&stored_key(1, 1, T0, T0 + DAY, 5)).await.unwrap();
        assert_eq!(a.services().await.unwrap().len(), 3, "the writer sees its change at once");
        assert_eq!(a.key_entries(1).await.unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(b.services().await.unwrap().len(), 3, "another store within 250 ms");
        let one = SekPekId { key_group: 1, key_number: 1 };
        assert_eq!(b.key(one, T0).await.unwrap().unwrap().key, SekPek::from_bytes([5; 16]));
        f.exec("UPDATE services SET name = 'Renamed' WHERE id = 'news'").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        for s in [&*a, &b] {
            assert!(s.services().await.unwrap().iter().any(|x| x.name == "Renamed"), "plain SQL reaches the caches");
        }
        drop(b);
        f.close().await;
    }

    pub async fn a_crashed_worker_loses_nothing<F: SqlFixture>(f: F) {
        let s = f.store();
        s.touch_terminal(&terminal(70), "b70@bsf", T0).await.unwrap();
        s.enqueue_deliveries(&[fresh(70, 1, deliver(), at(0)), fresh(70, 2, deliver(), at(0))]).await.unwrap();
        assert_eq!(s.claim_due("dead", at(0), LEASE, 10).await.unwrap().len(), 2);
        drop(s);
        let other = f.reopen(storage_key()).await.unwrap();
        assert!(other.claim_due("alive", at(29), LEASE, 10).await.unwrap().is_empty());
        let back = other.claim_due("alive", at(30), LEASE, 10).await.unwrap();
        assert_eq!(back.len(), 2, "claimable after the lease");
        assert!(back.iter().all(|(_, r)| r.state == DeliveryState::Pending && r.sent.is_empty()));
        let ts = other.record_send("alive", &dkey(70, 1), Attempt::Push(1), "b70@bsf", at(31), at(61)).await;
        assert_eq!(ts.unwrap().value(), 1);
        drop(other);
        f.close().await;
    }

    /// A row altered behind the store's back reads as an error, never a panic.
    pub async fn altered_delivery_rows_are_errors<F: SqlFixture>(f: F) {
        let s = f.store();
        s.enqueue_deliveries(&[fresh(71, 1, deliver(), at(0))]).await.unwrap();
        f.exec("UPDATE deliveries SET push_ip = 'not an address'").await;
        assert!(matches!(s.delivery(&dkey(71, 1)).await, Err(StoreError::Corrupt(_))));
        assert!(matches!(s.open_deliveries().await, Err(StoreError::Corrupt(_))));
        f.exec("UPDATE deliveries SET push_ip = '10.0.0.1', window_high = 70000").await;
        assert!(matches!(s.claim_due("w", at(0), LEASE, 1).await, Err(StoreError::Corrupt(_))));
        drop(s);
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
        async fn terminals_keep_their_bcast_client_id() {
            let Some(f) = $make else { return };
            suite::terminals_keep_their_bcast_client_id(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn unchanged_terminals_are_not_written_again() {
            let Some(f) = $make else { return };
            suite::unchanged_terminals_are_not_written_again(f.store()).await;
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

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn deliveries_go_through_their_lifecycle() {
            let Some(f) = $make else { return };
            suite::deliveries_go_through_their_lifecycle(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn duplicate_deliveries_are_refused_whole() {
            let Some(f) = $make else { return };
            suite::duplicate_deliveries_are_refused_whole(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_claimers_never_share_a_row() {
            let Some(f) = $make else { return };
            suite::concurrent_claimers_never_share_a_row(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn leases_run_out_and_stale_workers_are_refused() {
            let Some(f) = $make else { return };
            suite::leases_run_out_and_stale_workers_are_refused(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ltkm_ts_grows_per_terminal_and_smk_across_sends() {
            let Some(f) = $make else { return };
            suite::ltkm_ts_grows_per_terminal_and_smk_across_sends(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn scheduler_rows_round_trip() {
            let Some(f) = $make else { return };
            suite::scheduler_rows_round_trip(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn pushes_keep_their_form_and_versions() {
            let Some(f) = $make else { return };
            suite::pushes_keep_their_form_and_versions(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn unsent_attempts_count_without_a_ts() {
            let Some(f) = $make else { return };
            suite::unsent_attempts_count_without_a_ts(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sent_ltkms_are_found_and_acknowledged_once() {
            let Some(f) = $make else { return };
            suite::sent_ltkms_are_found_and_acknowledged_once(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn catalogue_changes_reach_every_store() {
            let Some(f) = $make else { return };
            at_rest::catalogue_changes_reach_every_store(f).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_crashed_worker_loses_nothing() {
            let Some(f) = $make else { return };
            at_rest::a_crashed_worker_loses_nothing(f).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn altered_delivery_rows_are_errors() {
            let Some(f) = $make else { return };
            at_rest::altered_delivery_rows_are_errors(f).await;
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

/// Key campaigns and bulk imports (`add_key_campaign`, `update_key_until`, `campaign_page`,
/// `advance_campaign`, `import_terminals`).
mod campaign_suite {
    use super::*;
    use keycast_bsm::store::{CampaignKind, TerminalImport};

    fn subscriber(n: u32, registered: bool) -> TerminalImport {
        let id = terminal(n);
        TerminalImport {
            registration: registered.then(|| Registration {
                address: format!("10.0.0.{n}:4000"),
                interface: Interface::OmaBcast,
                at: T0,
            }),
            purchases: vec![Purchase {
                terminal: id.clone(),
                item: "basic".into(),
                purchase_data: "basic-month".into(),
                kind: PurchaseKind::Subscription,
                window: Window::new(T0, T0 + 30 * DAY).unwrap(),
            }],
            id,
        }
    }

    fn row_for(n: u32, version: u32) -> (DeliveryRow, LtkmForm) {
        let mut row = fresh(n, version, deliver(), at(5));
        row.delivery.key.sek_pek_id = SekPekId { key_group: 1, key_number: 1 };
        (row, LtkmForm::default())
    }

    pub async fn campaigns_page_and_resume_from_their_cursor<S: BsmStore>(s: Arc<S>) {
        catalogue(&*s).await;
        // Terminals 1, 2, 4 and 5 are registered; 3 is not.
        let imported: Vec<_> = (1..=5).map(|n| subscriber(n, n != 3)).collect();
        assert_eq!(s.import_terminals(&imported).await, Ok(5));
        let id =
            s.add_key_campaign(&stored_key(1, 1, T0, T0 + 10 * DAY, 1), Duration::from_secs(600), T0).await.unwrap();
        let open = s.campaigns(true).await.unwrap();
        assert_eq!(open.len(), 1);
        let c = &open[0];
        assert_eq!((c.id, c.kind, c.cursor.as_deref(), c.terminals, c.queued), (id, CampaignKind::Deliver, None, 0, 0));
        assert_eq!(
            (c.key.id, c.key.window, c.key_domain),
            (SekPekId { key_group: 1, key_number: 1 }, Window::new(T0, T0 + 10 * DAY).unwrap(), kd())
        );
        assert_eq!(c.spread, Duration::from_secs(600));

        let page = s.campaign_page(c, None, 3).await.unwrap();
        assert_eq!(page.looked_at, 3);
        assert_eq!(page.last.as_deref(), Some(terminal(3).0.as_str()));
        let names: Vec<_> = page.targets.iter().map(|t| t.terminal.clone()).collect();
        assert_eq!(names, vec![terminal(1), terminal(2)], "the unregistered terminal is looked at, not targeted");
        assert_eq!(page.targets[0].purchases, imported[0].purchases);
        assert_eq!(page.targets[0].registration.address, "10.0.0.1:4000");
        assert_eq!(page.targets[0].latest_version, None);

        // Terminal 2 got the key some other way meanwhile: its row is skipped, not an error.
        s.enqueue_pushes(&[row_for(2, 1)]).await.unwrap();
        let stored = s.advance_campaign(id, None, page.last.as_deref(), &[row_for(1, 1), row_for(2, 1)], 3, None).await;
        assert_eq!(stored, Ok(1));
        // A runner that read the same page is refused and stores nothing.
        let stale = s.advance_campaign(id, None, page.last.as_deref(), &[row_for(4, 1)], 3, None).await;
        assert!(matches!(stale, Err(StoreError::NotClaimed(_))), "{stale:?}");
        assert_eq!(
            s.latest_delivery_version(&terminal(4).0, kd(), SekPekId { key_group: 1, key_number: 1 }).await,
            Ok(None)
        );

        let c = s.campaigns(true).await.unwrap().remove(0);
        assert_eq!((c.cursor.as_deref(), c.terminals, c.queued), (Some(terminal(3).0.as_str()), 3, 1));
        let page = s.campaign_page(&c, c.cursor.as_deref(), 3).await.unwrap();
        assert_eq!(page.targets.iter().map(|t| t.terminal.clone()).collect::<Vec<_>>(), vec![terminal(4), terminal(5)]);
        assert_eq!(page.looked_at, 2);
        s.advance_campaign(id, c.cursor.as_deref(), page.last.as_deref(), &[row_for(4, 1), row_for(5, 1)], 2, None)
            .await
            .unwrap();
        let c = s.campaigns(true).await.unwrap().remove(0);
        let end = s.campaign_page(&c, c.cursor.as_deref(), 3).await.unwrap();
        assert_eq!((end.targets.len(), end.looked_at, end.last), (0, 0, None));
        assert_eq!(s.advance_campaign(id, c.cursor.as_deref(), c.cursor.as_deref(), &[], 0, Some(T0 + 1)).await, Ok(0));
        assert!(s.campaigns(true).await.unwrap().is_empty());
        let all = s.campaigns(false).await.unwrap();
        assert_eq!((all[0].finished_at, all[0].terminals, all[0].queued), (Some(T0 + 1), 5, 3));
        let ended = s.advance_campaign(id, c.cursor.as_deref(), None, &[], 0, None).await;
        assert!(matches!(ended, Err(StoreError::NotClaimed(_))), "an ended campaign takes no page: {ended:?}");
        let summary = s.delivery_summary(SekPekId { key_group: 1, key_number: 1 }).await.unwrap();
        assert_eq!((summary.rows, summary.terminals, summary.max_version, summary.pending), (4, 4, 1, 4));
        assert_eq!(s.delivery_summary(SekPekId { key_group: 9, key_number: 9 }).await.unwrap().rows, 0);
        // The page reports what exists: terminal 2's latest version now.
        let again = s.campaign_page(&all[0], None, 10).await.unwrap();
        assert!(again.targets.iter().all(|t| t.latest_version == Some(1)));
    }

    pub async fn key_ends_move_with_a_campaign<S: BsmStore>(s: Arc<S>) {
        catalogue(&*s).await;
        let one = SekPekId { key_group: 1, key_number: 1 };
        s.add_key(&stored_key(1, 1, T0, T0 + 10 * DAY, 1)).await.unwrap();
        s.add_key(&stored_key(1, 2, T0 + 20 * DAY, T0 + 30 * DAY, 2)).await.unwrap();
        assert!(s.campaigns(false).await.unwrap().is_empty(), "add_key makes no campaign");
        let id = s.update_key_until(one, T0, T0 + 20 * DAY, Duration::from_secs(60), T0 + 5).await.unwrap();
        let c = s.campaigns(true).await.unwrap().remove(0);
        assert_eq!(
            (c.id, c.kind, c.key.window.until),
            (id, CampaignKind::UpdateValidity { old_until: T0 + 10 * DAY }, T0 + 20 * DAY)
        );
        assert_eq!(s.key_entries(1).await.unwrap()[0].window.until, T0 + 20 * DAY);
        assert_eq!(s.key(one, T0).await.unwrap().unwrap().key, SekPek::from_bytes([1; 16]), "the key still opens");

        let refused = [
            (s.update_key_until(one, T0, T0 + 20 * DAY + 1, Duration::ZERO, T0).await, "overlaps key 2"),
            (s.update_key_until(one, T0, T0, Duration::ZERO, T0).await, "ends at its start"),
        ];
        for (r, why) in refused {
            assert!(matches!(r, Err(StoreError::Conflict(_))), "{why}: {r:?}");
        }
        let wrong_number =
            s.update_key_until(SekPekId { key_group: 1, key_number: 9 }, T0, T0 + DAY, Duration::ZERO, T0).await;
        assert!(matches!(wrong_number, Err(StoreError::Missing(_))), "{wrong_number:?}");
        assert!(matches!(
            s.update_key_until(one, T0 + 1, T0 + DAY, Duration::ZERO, T0).await,
            Err(StoreError::Missing(_))
        ));
        assert_eq!(s.campaigns(false).await.unwrap().len(), 1, "refusals make no campaign");
        assert_eq!(s.key_entries(1).await.unwrap()[0].window.until, T0 + 20 * DAY, "refusals change nothing");

        // Shortening works the same way; a revoked key cannot move.
        s.update_key_until(one, T0, T0 + 2 * DAY, Duration::ZERO, T0 + 6).await.unwrap();
        assert_eq!(s.key_entries(1).await.unwrap()[0].window.until, T0 + 2 * DAY);
        assert!(s.revoke_key(one, T0 + DAY).await.unwrap());
        assert!(matches!(
            s.update_key_until(one, T0, T0 + 3 * DAY, Duration::ZERO, T0).await,
            Err(StoreError::Conflict(_))
        ));
        // A key made with its campaign: both or neither.
        let overlapping =
            s.add_key_campaign(&stored_key(1, 3, T0 + 25 * DAY, T0 + 40 * DAY, 3), Duration::ZERO, T0).await;
        assert!(matches!(overlapping, Err(StoreError::Conflict(_))));
        assert_eq!(s.campaigns(false).await.unwrap().len(), 2);
    }

    pub async fn a_round_of_sends_is_one_transaction_of_independent_attempts<S: BsmStore>(s: Arc<S>) {
        use keycast_bsm::delivery::Attempt;
        use keycast_bsm::store::SendRecord;
        for t in [60, 61, 62] {
            s.touch_terminal(&terminal(t), &format!("b{t}@bsf"), T0).await.unwrap();
        }
        let rows: Vec<_> = [60, 61, 62].iter().map(|&t| fresh(t, 1, deliver(), at(0))).collect();
        s.enqueue_deliveries(&rows).await.unwrap();
        assert_eq!(s.claim_due("w", at(0), LEASE, 10).await.unwrap().len(), 3);
        let send = |t: u32, attempt, btid: Option<&str>| SendRecord {
            key: dkey(t, 1),
            attempt,
            btid: btid.map(str::to_owned),
            next_due: at(100),
        };
        let round = [
            send(60, Attempt::Push(1), Some("b60@bsf")),
            send(61, Attempt::Push(2), Some("b61@bsf")),
            send(62, Attempt::Push(1), None),
        ];
        let answers = s.record_sends("w", &round, at(1)).await.unwrap();
        assert_eq!(answers.len(), 3);
        let ts = answers[0].as_ref().unwrap().as_ref().unwrap();
        assert_eq!((ts.btid(), ts.value()), ("b60@bsf", 1));
        assert!(matches!(answers[1], Err(StoreError::Invalid(_))), "push 2 before push 1: {:?}", answers[1]);
        assert_eq!(answers[2], Ok(None), "counted without a TS");

        let (_, sent) = s.delivery(&dkey(60, 1)).await.unwrap().unwrap();
        assert_eq!(
            (sent.state, sent.sent.len(), sent.sent[0].ts),
            (DeliveryState::Sent { at: at(1), attempt: 1 }, 1, 1)
        );
        let (_, refused) = s.delivery(&dkey(61, 1)).await.unwrap().unwrap();
        assert_eq!(
            (refused.state, refused.sent.len()),
            (DeliveryState::Pending, 0),
            "the refused attempt changed nothing"
        );
        let (_, unsent) = s.delivery(&dkey(62, 1)).await.unwrap().unwrap();
        assert_eq!((unsent.state, unsent.sent.len()), (DeliveryState::Sent { at: at(1), attempt: 1 }, 0));
        assert_eq!(s.reserve_ltkm_ts(&terminal(61), "b61@bsf", 1).await, Ok(1), "no TS burnt by the refusal");
        // The claims of the recorded rows ended with the round: a second round is refused.
        let again = s.record_sends("w", &round[..1], at(2)).await.unwrap();
        assert!(matches!(again[0], Err(StoreError::NotClaimed(_))), "{:?}", again[0]);
        // The refused row is still claimed and takes its first push.
        let fixed = s.record_sends("w", &[send(61, Attempt::Push(1), Some("b61@bsf"))], at(2)).await.unwrap();
        // Above the TS reserved before: 2 where every reservation is its own (PostgreSQL); a
        // single-process store (SQLite) handed that one out of a durable block, whose unused rest
        // the counter now skips (monotonic, never reused).
        let next = fixed[0].as_ref().unwrap().as_ref().unwrap().value();
        assert!(next > 1, "TS {next} after 1");
    }

    /// Concurrent reservations (group-committed) never share a TS, and a refused one refuses only
    /// its own caller.
    pub async fn concurrent_ts_reservations_are_distinct_and_independent<S: BsmStore + Send + Sync + 'static>(
        s: Arc<S>,
    ) {
        s.touch_terminal(&terminal(70), "b70@bsf", T0).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..64u32 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let who = if i == 17 { terminal(71) } else { terminal(70) };
                (i, s.reserve_ltkm_ts(&who, "b70@bsf", 1 + i % 3).await)
            }));
        }
        let mut taken = Vec::new();
        for t in tasks {
            let (i, r) = t.await.unwrap();
            if i == 17 {
                assert!(matches!(r, Err(StoreError::Missing(_))), "unknown terminal: {r:?}");
                continue;
            }
            let first = r.unwrap();
            taken.extend(first..first + 1 + i % 3);
        }
        taken.sort_unstable();
        let expected: Vec<u32> = (1..=u32::try_from(taken.len()).unwrap()).collect();
        assert_eq!(taken, expected, "every TS once, none skipped");
    }

    pub async fn imports_are_all_or_nothing<S: BsmStore>(s: Arc<S>) {
        catalogue(&*s).await;
        let mut bad = subscriber(2, true);
        bad.purchases[0].item = "no-such-item".into();
        let r = s.import_terminals(&[subscriber(1, true), bad]).await;
        assert!(matches!(r, Err(StoreError::Missing(_))), "{r:?}");
        assert_eq!(s.terminal(&terminal(1)).await, Ok(None), "nothing of a refused import is stored");
        let mut foreign = subscriber(1, true);
        foreign.purchases[0].terminal = terminal(2);
        assert!(matches!(s.import_terminals(&[foreign]).await, Err(StoreError::Invalid(_))));

        // A terminal imported again keeps its B-TID; its registration is replaced.
        s.import_terminals(&[subscriber(1, true)]).await.unwrap();
        s.touch_terminal(&terminal(1), "btid-1@bsf", T0 + 1).await.unwrap();
        s.import_terminals(&[subscriber(1, false)]).await.unwrap();
        let t = s.terminal(&terminal(1)).await.unwrap().unwrap();
        assert_eq!((t.btid.as_deref(), t.registration), (Some("btid-1@bsf"), None));
        assert_eq!(s.purchases(&terminal(1)).await.unwrap(), subscriber(1, true).purchases);
    }
}

macro_rules! campaign_suite {
    ($make:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn campaigns_page_and_resume_from_their_cursor() {
            let Some(f) = $make else { return };
            campaign_suite::campaigns_page_and_resume_from_their_cursor(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn key_ends_move_with_a_campaign() {
            let Some(f) = $make else { return };
            campaign_suite::key_ends_move_with_a_campaign(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_round_of_sends_is_one_transaction_of_independent_attempts() {
            let Some(f) = $make else { return };
            campaign_suite::a_round_of_sends_is_one_transaction_of_independent_attempts(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_ts_reservations_are_distinct_and_independent() {
            let Some(f) = $make else { return };
            campaign_suite::concurrent_ts_reservations_are_distinct_and_independent(f.store()).await;
            f.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn imports_are_all_or_nothing() {
            let Some(f) = $make else { return };
            campaign_suite::imports_are_all_or_nothing(f.store()).await;
            f.close().await;
        }
    };
}

mod sqlite_campaigns {
    use super::*;
    campaign_suite!(Some(SqliteFixture::new().await));
}

mod postgres_campaigns {
    use super::*;
    campaign_suite!(PgFixture::new().await);
}

/// What only the single-process SQLite store does (`store::sql` module `local`): the file's lock,
/// the TS blocks, and caches kept true by the store's own writes.
mod sqlite_single_process {
    use super::*;

    async fn open(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(dir.path().join("bsm.db"), storage_key()).await.unwrap()
    }

    /// `flock` conflicts between open file descriptions as between processes: what another BSM
    /// process would meet.
    fn lock_is_free(dir: &tempfile::TempDir) -> bool {
        let file = std::fs::File::open(dir.path().join("bsm.db.bsm-lock")).unwrap();
        match file.try_lock() {
            Ok(()) => true,
            Err(std::fs::TryLockError::WouldBlock) => false,
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_database_file_is_locked_while_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir).await;
        assert!(!lock_is_free(&dir), "another process could open the database");
        // A second store of this process shares the first one's state and lock.
        let again = open(&dir).await;
        s.close().await;
        drop(s);
        assert!(!lock_is_free(&dir), "held while a store of this process is open");
        again.close().await;
        drop(again);
        assert!(lock_is_free(&dir), "released with the last store");
        open(&dir).await.close().await;
    }

    /// A crash loses the unused rest of a block: the next TS is above every one handed out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ts_blocks_skip_their_rest_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir).await;
        s.touch_terminal(&terminal(1), "b1@bsf", T0).await.unwrap();
        assert_eq!(s.reserve_ltkm_ts(&terminal(1), "b1@bsf", 1).await, Ok(1));
        assert_eq!(s.reserve_ltkm_ts(&terminal(1), "b1@bsf", 2).await, Ok(2));
        let counter = |s: &SqliteStore| {
            let pool = s.pool().clone();
            async move {
                let row = sqlx::query("SELECT ts FROM ltkm_counters").fetch_one(&pool).await.unwrap();
                row.try_get::<i64, _>("ts").unwrap()
            }
        };
        let durable = counter(&s).await;
        assert!(durable >= 3, "the database holds every TS handed out: {durable}");
        s.close().await;
        drop(s);
        let s = open(&dir).await;
        let next = s.reserve_ltkm_ts(&terminal(1), "b1@bsf", 1).await.unwrap();
        assert_eq!(i64::from(next), durable + 1, "the rest of the block is skipped, never reused");
        s.close().await;
    }

    /// Many reservations of one terminal run through several blocks (reserved ahead in the
    /// background) without a gap or a repeat, in the order they were made.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ts_blocks_follow_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir).await;
        s.touch_terminal(&terminal(2), "b2@bsf", T0).await.unwrap();
        let mut last = 0;
        for i in 0..2_000u32 {
            let n = 1 + i % 3;
            let first = s.reserve_ltkm_ts(&terminal(2), "b2@bsf", n).await.unwrap();
            assert_eq!(first, last + 1, "reservation {i}");
            last = first + n - 1;
        }
        assert_eq!(s.reserve_ltkm_ts(&terminal(2), "b3@bsf", 1).await, Ok(1), "a new SMK restarts the count");
        s.close().await;
    }

    /// A TS that `record_send` takes from the database moves later reservations above it (the
    /// block in memory is dropped): the terminal never gets a TS below one already sent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_send_moves_the_block_on() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir).await;
        s.touch_terminal(&terminal(3), "b3@bsf", T0).await.unwrap();
        assert_eq!(s.reserve_ltkm_ts(&terminal(3), "b3@bsf", 1).await, Ok(1));
        s.enqueue_deliveries(&[fresh(3, 1, deliver(), at(0))]).await.unwrap();
        assert_eq!(s.claim_due("w", at(0), LEASE, 10).await.unwrap().len(), 1);
        let sent = s.record_send("w", &dkey(3, 1), Attempt::Push(1), "b3@bsf", at(1), at(100)).await.unwrap();
        assert!(sent.value() > 1);
        let next = s.reserve_ltkm_ts(&terminal(3), "b3@bsf", 1).await.unwrap();
        assert!(next > sent.value(), "TS {next} after the sent {}", sent.value());
        s.close().await;
    }

    /// The terminal, purchases and "no live deliveries" answers come from memory and follow every
    /// write of any store of this process on the file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cached_rows_follow_the_writes() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(&dir).await;
        let b = open(&dir).await;
        catalogue(&a).await;
        let t = terminal(4);
        assert_eq!(a.terminal(&t).await, Ok(None));
        b.touch_terminal(&t, "b4@bsf", T0).await.unwrap();
        assert_eq!(a.terminal(&t).await.unwrap().unwrap().btid.as_deref(), Some("b4@bsf"));
        assert!(a.purchases(&t).await.unwrap().is_empty());
        let month = Purchase {
            terminal: t.clone(),
            item: "basic".into(),
            purchase_data: "basic-month".into(),
            kind: PurchaseKind::Subscription,
            window: Window::new(T0, T0 + 30 * DAY).unwrap(),
        };
        b.put_purchase(&month).await.unwrap();
        assert_eq!(a.purchases(&t).await.unwrap(), vec![month.clone()]);
        let r = Registration { address: "10.0.0.9:4359".into(), interface: Interface::OmaBcast, at: T0 };
        assert!(b.register(&t, &r).await.unwrap());
        assert_eq!(a.terminal(&t).await.unwrap().unwrap().registration, Some(r));
        assert!(b.deregister(&t).await.unwrap());
        assert_eq!(a.terminal(&t).await.unwrap().unwrap().registration, None);
        assert_eq!(b.remove_purchase(&t, "basic").await.unwrap(), Some(month));
        assert!(a.purchases(&t).await.unwrap().is_empty());

        assert!(a.live_deliveries_of(&dkey(4, 1).terminal).await.unwrap().is_empty());
        b.enqueue_deliveries(&[fresh(4, 1, deliver(), at(0))]).await.unwrap();
        assert_eq!(a.live_deliveries_of(&dkey(4, 1).terminal).await.unwrap().len(), 1, "a new delivery is seen");
        a.close().await;
        b.close().await;
    }
}
