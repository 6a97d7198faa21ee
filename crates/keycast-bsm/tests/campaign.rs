//! Key campaigns over a real store (SQLite in a temporary directory): who gets a new key and with
//! which window, due times inside the spread, validity updates, and the crash and race rules —
//! every entitled registered terminal ends with exactly one delivery of the key.

mod service_support;

use std::sync::Arc;
use std::time::Duration;

use keycast_bsm::campaign::CampaignRunner;
use keycast_bsm::delivery::{DeliveryKey, PushAddress, RegistrationInterface, Time};
use keycast_bsm::domain::{KeyEntry, ProgramId, Purchase, PurchaseKind, TerminalId, Window};
use keycast_bsm::issue::LtkmKind;
use keycast_bsm::rng::SeededRandom;
use keycast_bsm::store::{BsmStore, CampaignKind, Interface, Registration, StoredKey, TerminalImport};
use keycast_crypto::keys::SekPek;
use keycast_mikey::{KeyValidity, SecurityPolicy, SekPekId};
use service_support::*;

const SPREAD: Duration = Duration::from_secs(600);

fn impi(n: u32) -> TerminalId {
    TerminalId(format!("campaign-{n:06}@ims.example.org"))
}

fn subscriber(
    n: u32,
    item: &str,
    offer: &str,
    kind: PurchaseKind,
    window: Window,
    via: Option<Interface>,
) -> TerminalImport {
    TerminalImport {
        id: impi(n),
        registration: via.map(|interface| Registration { address: format!("10.1.0.{n}:4000"), interface, at: T0 }),
        purchases: vec![Purchase { terminal: impi(n), item: item.into(), purchase_data: offer.into(), kind, window }],
    }
}

/// Group 1's next key: after (1,2), which ends at T0 + 20 days.
fn key_1_3() -> StoredKey {
    StoredKey {
        entry: KeyEntry {
            id: id(1, 3),
            window: Window { from: T0 + 20 * DAY, until: T0 + 50 * DAY },
            revoked_at: None,
        },
        key_domain: kd(),
        key: SekPek::from_bytes([0x13; 16]),
        rand: [0x31; 16],
        csb_id: 0x0100_0013,
    }
}

fn runner(bsm: &Bsm, seed: u64) -> CampaignRunner<keycast_bsm::store::sql::SqliteStore, SeededRandom> {
    CampaignRunner::new(bsm.svc.clone(), SeededRandom::new(seed)).with_page(2)
}

fn dkey(n: u32, key: SekPekId, version: u32) -> DeliveryKey {
    DeliveryKey { terminal: impi(n).0, key_domain_id: kd(), sek_pek_id: key, version }
}

fn ts(from: u64, until: u64) -> KeyValidity {
    KeyValidity::TsWindow { ts_low: ntp(from), ts_high: ntp(until) - 1 }
}

/// Terminals 1–5 (see each line); 1 and 5 are entitled to (1,3).
async fn five_terminals(bsm: &Bsm) {
    let month = Window { from: T0, until: T0 + 30 * DAY };
    let imports = [
        // Subscribed and registered (OMA BCAST): gets the key, its window cut to the purchase.
        subscriber(1, "basic", "basic-month", PurchaseKind::Subscription, month, Some(Interface::OmaBcast)),
        // Pay-per-time that ends long before the key starts: nothing.
        subscriber(
            2,
            "all",
            "all-2h",
            PurchaseKind::PayPerTime,
            Window { from: T0, until: T0 + 7200 },
            Some(Interface::Mbms),
        ),
        // Subscribed, not registered: nothing to push to.
        subscriber(3, "basic", "basic-month", PurchaseKind::Subscription, month, None),
        // A pay-per-view of another group: nothing.
        subscriber(
            4,
            "events",
            "final-ppv",
            PurchaseKind::PayPerView(ProgramId("final".into())),
            month,
            Some(Interface::OmaBcast),
        ),
        // Subscribed until five days into the key, registered through MBMS.
        subscriber(
            5,
            "basic",
            "basic-month",
            PurchaseKind::Subscription,
            Window { from: T0, until: T0 + 25 * DAY },
            Some(Interface::Mbms),
        ),
    ];
    assert_eq!(bsm.store().import_terminals(&imports).await, Ok(5));
}

#[tokio::test]
async fn a_new_key_goes_to_every_entitled_registered_terminal_once() {
    let bsm = Bsm::new().await;
    five_terminals(&bsm).await;
    let campaign = bsm.store().add_key_campaign(&key_1_3(), SPREAD, T0).await.unwrap();
    let mut seen = Vec::new();
    let done = runner(&bsm, 1).run_open(T0 + 1, |c| seen.push((c.terminals, c.queued))).await.unwrap();
    assert_eq!(done.len(), 1);
    let c = &done[0];
    assert_eq!((c.id, c.terminals, c.queued, c.finished_at), (campaign, 5, 2, Some(T0 + 1)));
    assert_eq!(seen.last(), Some(&(5, 2)), "progress after every page: {seen:?}");
    assert!(seen.len() >= 3, "pages of two terminals: {seen:?}");

    let key = id(1, 3);
    let (_, one) = bsm.store().delivery(&dkey(1, key, 1)).await.unwrap().expect("terminal 1's delivery");
    assert_eq!(one.delivery.kind, LtkmKind::Deliver { validity: ts(T0 + 20 * DAY, T0 + 30 * DAY) });
    assert_eq!(
        one.delivery.to,
        PushAddress { ip: "10.1.0.1".parse().unwrap(), interface: RegistrationInterface::OmaBcast }
    );
    let due = one.due.unwrap();
    assert!(due >= Time::from_secs(T0) && due < Time::from_secs(T0).after(SPREAD), "due inside the spread: {due:?}");
    let form = bsm.store().delivery_form(&dkey(1, key, 1)).await.unwrap().unwrap();
    assert_eq!(form.ext.unwrap().security_policy.unwrap().policy, SecurityPolicy::UnlimitedWithinWindow);
    assert!(form.streaming.is_some(), "news streams: its LTKMs carry the SRTP policy");

    let (_, five) = bsm.store().delivery(&dkey(5, key, 1)).await.unwrap().expect("terminal 5's delivery");
    assert_eq!(five.delivery.kind, LtkmKind::Deliver { validity: ts(T0 + 20 * DAY, T0 + 25 * DAY) });
    assert_eq!(five.delivery.to.interface, RegistrationInterface::Mbms);
    for n in [2, 3, 4] {
        assert_eq!(bsm.store().latest_delivery_version(&impi(n).0, kd(), key).await, Ok(None), "terminal {n}");
    }
    // Running again finds nothing open and queues nothing more.
    assert!(runner(&bsm, 2).run_open(T0 + 2, |_| {}).await.unwrap().is_empty());
    assert_eq!(bsm.store().latest_delivery_version(&impi(1).0, kd(), key).await, Ok(Some(1)));
}

#[tokio::test]
async fn a_campaign_cut_by_a_crash_resumes_and_racing_runners_never_repeat_a_terminal() {
    let bsm = Bsm::new().await;
    let month = Window { from: T0, until: T0 + 30 * DAY };
    let imports: Vec<_> = (1..=60)
        .map(|n| subscriber(n, "basic", "basic-month", PurchaseKind::Subscription, month, Some(Interface::OmaBcast)))
        .collect();
    bsm.store().import_terminals(&imports).await.unwrap();
    bsm.store().add_key_campaign(&key_1_3(), SPREAD, T0).await.unwrap();

    // A runner that stored its first page, then died.
    let c = bsm.store().campaigns(true).await.unwrap().remove(0);
    let page = bsm.store().campaign_page(&c, None, 7).await.unwrap();
    let crashed: Vec<_> = page
        .targets
        .iter()
        .map(|t| {
            let mut row = keycast_bsm::delivery::DeliveryRow {
                delivery: keycast_bsm::delivery::Delivery {
                    key: dkey(0, id(1, 3), 1),
                    kind: LtkmKind::Deliver { validity: ts(T0 + 20 * DAY, T0 + 30 * DAY) },
                    to: PushAddress { ip: "10.1.0.1".parse().unwrap(), interface: RegistrationInterface::OmaBcast },
                },
                state: keycast_bsm::delivery::DeliveryState::Pending,
                due: Some(Time::from_secs(T0)),
                sent: Vec::new(),
            };
            row.delivery.key.terminal = t.terminal.0.clone();
            (row, Default::default())
        })
        .collect();
    bsm.store().advance_campaign(c.id, None, page.last.as_deref(), &crashed, page.looked_at, None).await.unwrap();

    // Two runners resume it at once.
    let a = Arc::new(runner(&bsm, 3));
    let b = Arc::new(runner(&bsm, 4));
    let (ra, rb) = tokio::join!(a.run_open(T0 + 1, |_| {}), b.run_open(T0 + 1, |_| {}));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let finished: Vec<_> = ra.iter().chain(&rb).collect();
    assert!(!finished.is_empty());
    let c = bsm.store().campaigns(false).await.unwrap().remove(0);
    assert_eq!((c.terminals, c.queued), (60, 60), "{c:?}");
    assert!(c.finished_at.is_some());
    for n in 1..=60 {
        assert_eq!(
            bsm.store().latest_delivery_version(&impi(n).0, kd(), id(1, 3)).await,
            Ok(Some(1)),
            "terminal {n}: exactly one delivery"
        );
    }
}

#[tokio::test]
async fn a_moved_key_end_updates_only_the_windows_that_change() {
    let bsm = Bsm::new().await;
    five_terminals(&bsm).await;
    // Terminal 1 holds (1,2) already (a delivery row), terminal 5 never got it.
    let key = id(1, 2);
    let mut held = bsm.store().campaign_page(&dummy_campaign(&bsm).await, None, 1).await.unwrap().targets;
    assert_eq!(held.len(), 1);
    let held = held.remove(0);
    assert_eq!(held.terminal, impi(1));
    let row = keycast_bsm::delivery::DeliveryRow {
        delivery: keycast_bsm::delivery::Delivery {
            key: dkey(1, key, 1),
            kind: LtkmKind::Deliver { validity: ts(T0, T0 + 20 * DAY) },
            to: PushAddress { ip: "10.1.0.1".parse().unwrap(), interface: RegistrationInterface::OmaBcast },
        },
        state: keycast_bsm::delivery::DeliveryState::Acknowledged { at: Time::from_secs(T0) },
        due: None,
        sent: Vec::new(),
    };
    bsm.store().enqueue_deliveries(&[row]).await.unwrap();

    // (1,2) ends at T0 + 20 days; shorten it to T0 + 12 days.
    let window = window_of(key);
    bsm.store().update_key_until(key, window.from, T0 + 12 * DAY, SPREAD, T0).await.unwrap();
    let done = runner(&bsm, 5).run_open(T0 + 1, |_| {}).await.unwrap();
    let c = done.iter().find(|c| matches!(c.kind, CampaignKind::UpdateValidity { .. })).unwrap();
    // Terminal 2's pay-per-time runs for two more hours: it gets the key too.
    assert_eq!(c.queued, 3, "{c:?}");
    let (_, two) = bsm.store().delivery(&dkey(2, key, 1)).await.unwrap().expect("terminal 2's delivery");
    assert_eq!(two.delivery.kind, LtkmKind::Deliver { validity: ts(T0, T0 + 7200) });
    let (_, update) = bsm.store().delivery(&dkey(1, key, 2)).await.unwrap().expect("terminal 1's update");
    assert_eq!(update.delivery.kind, LtkmKind::UpdateValidity { validity: ts(T0, T0 + 12 * DAY) });
    let (_, first) = bsm.store().delivery(&dkey(5, key, 1)).await.unwrap().expect("terminal 5 gets the key itself");
    assert_eq!(first.delivery.kind, LtkmKind::Deliver { validity: ts(T0, T0 + 12 * DAY) });

    // Extending it to T0 + 15 days moves the windows of terminals 1 and 5 (their purchases run
    // beyond both ends); terminal 2's ends with its purchase before either: it gets nothing.
    bsm.store().update_key_until(key, window.from, T0 + 15 * DAY, SPREAD, T0 + 2).await.unwrap();
    let done = runner(&bsm, 6).run_open(T0 + 3, |_| {}).await.unwrap();
    assert_eq!(done[0].queued, 2);
    assert_eq!(bsm.store().latest_delivery_version(&impi(2).0, kd(), key).await, Ok(Some(1)));
    assert_eq!(
        bsm.store().delivery(&dkey(5, key, 2)).await.unwrap().unwrap().1.delivery.kind,
        LtkmKind::UpdateValidity { validity: ts(T0, T0 + 15 * DAY) }
    );
}

/// A finished campaign on (1,2) (only to read pages with).
async fn dummy_campaign(bsm: &Bsm) -> keycast_bsm::store::Campaign {
    let key = id(1, 2);
    let w = window_of(key);
    let c = bsm.store().update_key_until(key, w.from, w.until, Duration::ZERO, T0).await.unwrap();
    let campaign = bsm.store().campaigns(true).await.unwrap().into_iter().find(|x| x.id == c).unwrap();
    bsm.store().advance_campaign(c, None, None, &[], 0, Some(T0)).await.unwrap();
    campaign
}

/// A key group bound to a terminal binding key: the campaign's pushes carry tbk_flag and its ID
/// like the keys in answers do (`profile: P-4, P-11.5`).
#[tokio::test]
async fn a_bound_key_group_s_campaign_pushes_name_its_tbk() {
    let mut config = keycast_bsm::service::ProvisioningConfig::new(FQDN);
    config.tbk_bindings.insert(1, 0x0000_0777);
    let bsm = Bsm::with_config(config).await;
    five_terminals(&bsm).await;
    bsm.store().add_key_campaign(&key_1_3(), SPREAD, T0).await.unwrap();
    runner(&bsm, 3).run_open(T0 + 1, |_| {}).await.unwrap();
    let form = bsm.store().delivery_form(&dkey(1, id(1, 3), 1)).await.unwrap().unwrap();
    assert_eq!(form.ext.unwrap().tbk_id, Some(0x0000_0777));
}
