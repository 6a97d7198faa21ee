//! The provisioning logic over a real store (SQLite in a temporary directory): each request kind,
//! its happy path and the bad inputs of issue 5. Every LTKM in an answer opens under the
//! terminal's SMK, and the card emulator takes them.

mod service_support;

use keycast_bsm::delivery::RegistrationInterface;
use keycast_bsm::domain::{ProgramId, PurchaseKind, Window};
use keycast_bsm::issue::{LtkmCounter, LtkmKind, build_ltkm};
use keycast_bsm::service::{DeliveryIntent, ProvisioningConfig, PushIntent, ServiceError};
use keycast_bsm::store::{BsmStore, Interface};
use keycast_card::mbms::MskUpdateEvent;
use keycast_mikey::{KeyValidity, SecurityPolicy};
use keycast_provisioning::mbms::{DeregisterRequest, MskRef, MskRequest, RegisterRequest};
use keycast_provisioning::sprov::{
    ALL_SERVICES, AccountInquiry, BcastKeyId, DeregistrationRequest, InquiryType, LtkmKeyRequest, LtkmRequest,
    PurchaseItemRef, PurchaseRequestItem, RegistrationRequest, ServiceRequest, SprovMessage, StatusCode,
    TokenPurchaseItem, TokenPurchaseRequest, UnsubscribeRequest,
};
use service_support::*;

fn refs(items: &[(&str, Option<&str>)]) -> Vec<PurchaseItemRef> {
    items.iter().map(|(g, p)| PurchaseItemRef::new(g, *p)).collect()
}

fn service_request(items: &[(&str, Option<&str>)]) -> ServiceRequest {
    ServiceRequest {
        request_id: 11,
        client: None,
        items: refs(items).into_iter().map(|item| PurchaseRequestItem { item, price: None }).collect(),
    }
}

fn key_ref(group: u16, number: u16) -> BcastKeyId {
    BcastKeyId { key_domain_id: kd().0, sek_pek_id: id(group, number).to_bytes() }
}

fn ltkm_request(keys: &[BcastKeyId]) -> LtkmRequest {
    LtkmRequest {
        request_id: 5,
        client: None,
        keys: keys.iter().map(|k| LtkmKeyRequest { key: *k, valid_from: None, valid_until: None }).collect(),
    }
}

fn pushes(intents: &[DeliveryIntent]) -> Vec<&PushIntent> {
    intents
        .iter()
        .filter_map(|i| match i {
            DeliveryIntent::Push(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn delivered(intents: &[DeliveryIntent]) -> Vec<(u16, u16)> {
    intents
        .iter()
        .filter_map(|i| match i {
            DeliveryIntent::DeliveredInResponse { sek_pek_id, .. } => {
                Some((sek_pek_id.key_group, sek_pek_id.key_number))
            }
            _ => None,
        })
        .collect()
}

fn ts_window(from: u64, until: u64) -> KeyValidity {
    KeyValidity::TsWindow { ts_low: ntp(from), ts_high: ntp(until - 1) }
}

// ---------------------------------------------------------------------------------------------
// a. Registration

#[tokio::test]
async fn registration_delivers_every_key_the_terminal_should_hold() {
    let bsm = Bsm::new().await;
    let t = caller(1);
    bsm.bought(&t, "all", "all-month", PurchaseKind::Subscription, Window { from: T0 - DAY, until: T0 + 29 * DAY })
        .await;
    let request = RegistrationRequest { request_id: 3, client: None, items: refs(&[("all", Some("all-month"))]) };
    let o = bsm.svc.registration(&t, &request, source(1), T0).await.unwrap();
    assert_eq!(o.response.request_id, 3);
    assert_eq!(o.response.status, StatusCode::Success);
    assert_eq!(o.response.items[0].status, StatusCode::Success);
    assert_eq!(o.response.ltkms.len(), 2, "news and sport keys");

    let mut card = card(&t);
    let mut seen = Vec::new();
    for (i, bytes) in o.response.ltkms.iter().enumerate() {
        let c = open(bytes, &t);
        assert_eq!(c.ts, i as u32 + 1, "TS from the store's counter, one per LTKM");
        assert!(!c.verification_requested, "an LTKM in an answer asks for no verification message");
        assert_eq!((c.idi.as_str(), c.idr.as_str()), (FQDN, t.keys.btid.as_str()));
        let key = c.sek_pek_id;
        assert_eq!(c.key.as_ref().unwrap().expose_secret(), &[key_byte(key); 16]);
        // The key's window cut to the purchase: the key ends first here.
        assert_eq!(c.validity, ts_window(T0 - DAY, window_of(key).until));
        let policy = c.ext.unwrap().security_policy.unwrap();
        assert_eq!(policy.policy, SecurityPolicy::UnlimitedWithinWindow, "profile P-4: subscription → 0x05");
        assert_eq!(c.srtp_policy.is_some(), key.key_group == 1, "news streams, sport is download");
        let u = card.msk_update(bytes).expect("the card takes it");
        assert_eq!(u.event, MskUpdateEvent::Stored(key));
        seen.push((key.key_group, key.key_number));
    }
    assert_eq!(seen, [(1, 2), (2, 1)]);
    assert_eq!(delivered(&o.intents), seen, "the scheduler learns what went in the answer");

    let reg = bsm.store().terminal(&t.terminal).await.unwrap().unwrap().registration.unwrap();
    assert_eq!((reg.address.as_str(), reg.interface, reg.at), ("10.0.0.1:40000", Interface::OmaBcast, T0));
    assert!(o.intents.iter().any(|i| matches!(i, DeliveryIntent::Registered { to, .. }
        if to.interface == RegistrationInterface::OmaBcast && to.ip == source(1).ip())));

    // Registering again (after power-on) delivers again, with later TSs the card accepts.
    let again = bsm.svc.registration(&t, &request, source(1), T0 + 60).await.unwrap();
    assert_eq!(open(&again.response.ltkms[0], &t).ts, 3);
    card.msk_update(&again.response.ltkms[0]).expect("a later TS is fresh");
}

#[tokio::test]
async fn registration_refuses_unknown_and_unbought_items_and_then_registers_nothing() {
    let bsm = Bsm::new().await;
    let t = caller(2);
    let request = RegistrationRequest { request_id: 4, client: None, items: refs(&[("nope", None), ("basic", None)]) };
    let o = bsm.svc.registration(&t, &request, source(2), T0).await.unwrap();
    let codes: Vec<StatusCode> = o.response.items.iter().map(|i| i.status).collect();
    assert_eq!(codes, [StatusCode::PurchaseItemUnknown, StatusCode::NoSubscription]);
    assert_eq!(o.response.status, StatusCode::PurchaseItemUnknown, "no item succeeded: the first item's code");
    assert!(o.response.ltkms.is_empty() && o.intents.is_empty());
    assert!(bsm.store().terminal(&t.terminal).await.unwrap().unwrap().registration.is_none());

    // An ended purchase does not count either.
    bsm.bought(&t, "basic", "basic-month", PurchaseKind::Subscription, Window { from: T0 - 40 * DAY, until: T0 }).await;
    let o = bsm.svc.registration(&t, &request, source(2), T0).await.unwrap();
    assert_eq!(o.response.items[1].status, StatusCode::NoSubscription);
}

#[tokio::test]
async fn registration_puts_what_does_not_fit_the_answer_into_pushes() {
    let mut config = ProvisioningConfig::new(FQDN);
    config.max_ltkms_per_response = 1;
    let bsm = Bsm::with_config(config).await;
    let t = caller(3);
    bsm.bought(&t, "all", "all-month", PurchaseKind::Subscription, Window { from: T0, until: T0 + 30 * DAY }).await;
    let request = RegistrationRequest { request_id: 1, client: None, items: refs(&[("all", None)]) };
    let o = bsm.svc.registration(&t, &request, source(3), T0).await.unwrap();
    assert_eq!(o.response.ltkms.len(), 1);
    let p = pushes(&o.intents);
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].sek_pek_id, p[0].to.ip), (id(2, 1), source(3).ip()));
    assert!(matches!(p[0].kind, LtkmKind::Deliver { .. }));
}

#[tokio::test]
async fn registration_delivers_the_pek_of_a_pay_per_view_purchase() {
    let bsm = Bsm::new().await;
    let t = caller(5);
    let ppv = PurchaseKind::PayPerView(ProgramId("final".into()));
    bsm.bought(&t, "events", "final-ppv", ppv, Window { from: T0, until: T0 + DAY + 7200 }).await;
    let request = RegistrationRequest { request_id: 5, client: None, items: refs(&[("events", Some("final-ppv"))]) };
    let o = bsm.svc.registration(&t, &request, source(5), T0).await.unwrap();
    assert_eq!(o.response.status, StatusCode::Success);
    assert_eq!(o.response.ltkms.len(), 1, "the program's PEK, not the SEK of its service");
    let c = open(&o.response.ltkms[0], &t);
    assert_eq!(c.sek_pek_id, id(100, 1));
    assert_eq!(c.validity, ts_window(T0 + DAY - 3600, T0 + DAY + 7200), "the PEK's window cut to the purchase");
    assert_eq!(c.ext.unwrap().security_policy.unwrap().policy, SecurityPolicy::PayPerView);
    assert!(c.srtp_policy.is_none(), "the program is on sport, a download service");
    assert_eq!(delivered(&o.intents), [(100, 1)]);
}

// ---------------------------------------------------------------------------------------------
// b. Service Request

#[tokio::test]
async fn service_request_records_the_purchase_and_answers_with_its_keys() {
    let bsm = Bsm::new().await;
    let t = caller(4);
    let o = bsm.svc.service_request(&t, &service_request(&[("basic", Some("basic-month"))]), source(4), T0).await;
    let o = o.unwrap();
    assert_eq!((o.response.request_id, o.response.status), (11, StatusCode::Success));
    assert!(!o.response.registration_required);
    assert_eq!(o.response.items[0].status, StatusCode::Success);
    assert_eq!(o.response.ltkms.len(), 1);
    let c = open(&o.response.ltkms[0], &t);
    assert_eq!(c.sek_pek_id, id(1, 2));
    assert_eq!(c.validity, ts_window(T0, window_of(id(1, 2)).until));
    let mut card = card(&t);
    assert_eq!(card.msk_update(&o.response.ltkms[0]).unwrap().event, MskUpdateEvent::Stored(id(1, 2)));

    let purchases = bsm.store().purchases(&t.terminal).await.unwrap();
    assert_eq!(purchases.len(), 1);
    assert_eq!((purchases[0].item.as_str(), purchases[0].purchase_data.as_str()), ("basic", "basic-month"));
    assert_eq!(purchases[0].window, Window { from: T0, until: T0 + 30 * DAY });
    // Implicit registration: registrationRequired is false.
    let reg = bsm.store().terminal(&t.terminal).await.unwrap().unwrap().registration.unwrap();
    assert_eq!(reg.address, source(4).to_string());

    // The next LTKM continues the durable counter.
    let o = bsm.svc.ltkm_request(&t, &ltkm_request(&[key_ref(1, 2)]), source(4), T0 + 5).await.unwrap();
    assert_eq!(open(&o.response.ltkms[0], &t).ts, 2);
}

#[tokio::test]
async fn service_request_refuses_unknown_items_and_offers_and_wrong_prices() {
    let bsm = Bsm::new().await;
    let t = caller(5);
    let mut request = service_request(&[
        ("nope", None),
        ("basic", Some("all-month")),
        ("all", None),
        ("basic", Some("no-such-offer")),
        ("basic", None),
    ]);
    request.items[4].price = Some(price("0.99"));
    let o = bsm.svc.service_request(&t, &request, source(5), T0).await.unwrap();
    let codes: Vec<StatusCode> = o.response.items.iter().map(|i| i.status).collect();
    assert_eq!(
        codes,
        [
            StatusCode::PurchaseItemUnknown,
            StatusCode::NoMatchingFragment, // an offer of another item
            StatusCode::NoMatchingFragment, // two offers, none named
            StatusCode::NoMatchingFragment,
            StatusCode::ChargingError,
        ]
    );
    assert_eq!(o.response.status, StatusCode::PurchaseItemUnknown);
    assert!(o.response.ltkms.is_empty());
    assert!(bsm.store().purchases(&t.terminal).await.unwrap().is_empty());
    assert!(bsm.store().terminal(&t.terminal).await.unwrap().unwrap().registration.is_none());
}

#[tokio::test]
async fn double_subscribe_answers_already_subscribed_and_resends_the_keys() {
    let bsm = Bsm::new().await;
    let t = caller(6);
    let request = service_request(&[("basic", Some("basic-month"))]);
    bsm.svc.service_request(&t, &request, source(6), T0).await.unwrap();
    let o = bsm.svc.service_request(&t, &request, source(6), T0 + 100).await.unwrap();
    assert_eq!(o.response.items[0].status, StatusCode::AlreadySubscribed);
    assert_eq!(o.response.status, StatusCode::AlreadySubscribed);
    let purchases = bsm.store().purchases(&t.terminal).await.unwrap();
    assert_eq!(purchases[0].window, Window { from: T0, until: T0 + 30 * DAY }, "neither renewed nor extended");
    let c = open(&o.response.ltkms[0], &t);
    assert_eq!((c.sek_pek_id, c.ts), (id(1, 2), 2), "the keys come again, under a new TS");
}

#[tokio::test]
async fn registration_required_leaves_the_terminal_unregistered() {
    let mut config = ProvisioningConfig::new(FQDN);
    config.registration_required = true;
    let bsm = Bsm::with_config(config).await;
    let t = caller(7);
    let o = bsm.svc.service_request(&t, &service_request(&[("basic", None)]), source(7), T0).await.unwrap();
    assert!(o.response.registration_required);
    assert_eq!(o.response.ltkms.len(), 1);
    assert!(bsm.store().terminal(&t.terminal).await.unwrap().unwrap().registration.is_none());
    assert!(!o.intents.iter().any(|i| matches!(i, DeliveryIntent::Registered { .. })));
}

#[tokio::test]
async fn policy_codes_follow_the_purchase_kind() {
    let bsm = Bsm::new().await;
    let t = caller(8);
    let request = service_request(&[("all", Some("all-2h")), ("events", None), ("pack", None)]);
    let o = bsm.svc.service_request(&t, &request, source(8), T0).await.unwrap();
    assert!(o.response.items.iter().all(|i| i.status == StatusCode::Success), "{:?}", o.response.items);
    let mut card = card(&t);
    for bytes in &o.response.ltkms {
        let c = open(bytes, &t);
        let p = c.ext.unwrap().security_policy.unwrap();
        match (c.sek_pek_id.key_group, c.sek_pek_id.key_number) {
            (1, 2) => {
                assert_eq!(p.policy, SecurityPolicy::PayPerTime, "profile P-4: PPT → 0x00");
                assert_eq!(c.validity, ts_window(T0, T0 + 7200), "cut to the two hours bought");
            }
            (2, 1) => {
                // Both PPT (all) and tokens (pack) draw on sport: PPT wins, the hull of the windows.
                assert_eq!(p.policy, SecurityPolicy::PayPerTime);
                assert_eq!(c.validity, ts_window(T0, window_of(id(2, 1)).until));
            }
            (100, 1) => {
                assert_eq!(p.policy, SecurityPolicy::PayPerView, "profile P-4: PPV → 0x02");
                // The PEK's window cut to the purchase, which ends with the program.
                assert_eq!(c.validity, ts_window(window_of(id(100, 1)).from, T0 + DAY + 7200));
            }
            other => panic!("unexpected key {other:?}"),
        }
        card.msk_update(bytes).expect("the card takes every policy");
    }
    assert_eq!(o.response.ltkms.len(), 3);
}

#[tokio::test]
async fn offers_with_play_backs_give_codes_1_and_3() {
    let bsm = Bsm::new().await;
    let store = bsm.store();
    for (id, item, kind, period, play_backs) in [
        ("all-2h-rec", "all", PurchaseKind::PayPerTime, 7200, 2),
        ("final-rec", "events", PurchaseKind::PayPerView(ProgramId("final".into())), 0, 3),
    ] {
        let offer = keycast_bsm::domain::PurchaseData {
            id: id.into(),
            item: item.into(),
            price: price("5.99"),
            kind,
            period,
            play_backs,
        };
        store.put_purchase_data(&offer).await.unwrap();
    }
    let t = caller(19);
    let request = service_request(&[("all", Some("all-2h-rec")), ("events", Some("final-rec"))]);
    let o = bsm.svc.service_request(&t, &request, source(19), T0).await.unwrap();
    assert!(o.response.items.iter().all(|i| i.status == StatusCode::Success), "{:?}", o.response.items);
    let mut card = card(&t);
    let mut seen = Vec::new();
    for bytes in &o.response.ltkms {
        let c = open(bytes, &t);
        let p = c.ext.unwrap().security_policy.unwrap();
        seen.push((c.sek_pek_id.key_group, p.policy, p.play_back_counter, p.view_counter));
        card.msk_update(bytes).expect("the card takes the play-back policies");
    }
    seen.sort_by_key(|s| s.0);
    assert_eq!(
        seen,
        [
            (1, SecurityPolicy::PayPerTimeWithPlayBack, 2, 0),
            (2, SecurityPolicy::PayPerTimeWithPlayBack, 2, 0),
            (100, SecurityPolicy::PayPerViewWithPlayBack, 3, 0),
        ],
        "profile P-4: PPT with play-backs → 0x01, PPV with play-backs → 0x03, with the offer's counter"
    );
}

#[tokio::test]
async fn tokens_bought_by_service_request_carry_the_view_counter() {
    let bsm = Bsm::new().await;
    let t = caller(9);
    let o = bsm.svc.service_request(&t, &service_request(&[("pack", None)]), source(9), T0).await.unwrap();
    let c = open(&o.response.ltkms[0], &t);
    let p = c.ext.unwrap().security_policy.unwrap();
    assert_eq!((p.policy, p.view_counter), (SecurityPolicy::UserPayPerView, 5), "profile P-4: tokens → 0x04");
}

#[tokio::test]
async fn ppv_of_a_program_that_is_over_is_unavailable() {
    let bsm = Bsm::new().await;
    let t = caller(10);
    let o = bsm.svc.service_request(&t, &service_request(&[("events", None)]), source(10), T0 + 2 * DAY).await;
    assert_eq!(o.unwrap().response.items[0].status, StatusCode::RequestUnavailable);
}

// ---------------------------------------------------------------------------------------------
// c. Unsubscribe

#[tokio::test]
async fn unsubscribe_invalidates_only_the_keys_no_other_purchase_needs() {
    let bsm = Bsm::new().await;
    let t = caller(11);
    let o = bsm
        .svc
        .service_request(&t, &service_request(&[("basic", None), ("all", Some("all-month"))]), source(11), T0)
        .await
        .unwrap();
    let mut card = card(&t);
    for l in &o.response.ltkms {
        card.msk_update(l).unwrap();
    }
    let request = UnsubscribeRequest { request_id: 8, client: None, items: refs(&[("all", None)]) };
    let o = bsm.svc.unsubscribe(&t, &request, source(99), T0 + 10).await.unwrap();
    assert_eq!(o.response.items[0].status, StatusCode::Success);
    let p = pushes(&o.intents);
    assert_eq!(p.len(), 1, "news stays for basic; only sport's key goes");
    assert_eq!((p[0].sek_pek_id, p[0].kind), (id(2, 1), LtkmKind::Invalidate));
    assert_eq!(p[0].to.ip, source(11).ip(), "pushed to the registered address, not the request's");
    assert_eq!(bsm.store().purchases(&t.terminal).await.unwrap().len(), 1);

    // What the scheduler will build from the intent: the card revokes the key.
    let stored = bsm.store().key(p[0].sek_pek_id, T0).await.unwrap().unwrap();
    let record = p[0].record(&stored).unwrap();
    let first = bsm.store().reserve_ltkm_ts(&t.terminal, &t.keys.btid, 1).await.unwrap();
    let ts = LtkmCounter::restore(&t.keys.btid, first - 1).reserve(&t.keys.btid).persisted();
    let bytes = build_ltkm(&p[0].kind, &record, &t.keys, &ts, true).unwrap();
    let c = open(&bytes, &t);
    assert!(c.key.is_none() && c.validity.is_invalidation());
    let u = card.msk_update(&bytes).unwrap();
    assert_eq!(u.event, MskUpdateEvent::Invalidated(id(2, 1)));
    assert!(card.msk(kd(), id(2, 1)).unwrap().is_invalidated());
    assert!(!card.msk(kd(), id(1, 2)).unwrap().is_invalidated());
}

#[tokio::test]
async fn unsubscribe_of_what_was_not_bought_is_refused_per_item() {
    let bsm = Bsm::new().await;
    let t = caller(12);
    let request = UnsubscribeRequest { request_id: 9, client: None, items: refs(&[("basic", None), ("nope", None)]) };
    let o = bsm.svc.unsubscribe(&t, &request, source(12), T0).await.unwrap();
    let codes: Vec<StatusCode> = o.response.items.iter().map(|i| i.status).collect();
    assert_eq!(codes, [StatusCode::NoSubscription, StatusCode::PurchaseItemUnknown]);
    assert!(o.intents.is_empty());
}

#[tokio::test]
async fn unsubscribe_all_services_removes_everything_and_pushes_to_the_request_source_when_unregistered() {
    let mut config = ProvisioningConfig::new(FQDN);
    config.registration_required = true;
    let bsm = Bsm::with_config(config).await;
    let t = caller(13);
    bsm.svc.service_request(&t, &service_request(&[("basic", None), ("events", None)]), source(13), T0).await.unwrap();
    let request = UnsubscribeRequest { request_id: 1, client: None, items: refs(&[(ALL_SERVICES, None)]) };
    let o = bsm.svc.unsubscribe(&t, &request, source(14), T0 + 1).await.unwrap();
    assert_eq!(o.response.items[0].status, StatusCode::Success);
    let mut ids: Vec<_> = pushes(&o.intents).iter().map(|p| (p.sek_pek_id, p.to.ip)).collect();
    ids.sort();
    assert_eq!(ids, [(id(1, 2), source(14).ip()), (id(100, 1), source(14).ip())]);
    assert!(bsm.store().purchases(&t.terminal).await.unwrap().is_empty());
    let o = bsm.svc.unsubscribe(&t, &request, source(14), T0 + 2).await.unwrap();
    assert_eq!(o.response.items[0].status, StatusCode::NoSubscription);
}

// ---------------------------------------------------------------------------------------------
// d. LTKM Request

#[tokio::test]
async fn ltkm_request_serves_entitled_keys_and_refuses_the_rest_per_key() {
    let bsm = Bsm::new().await;
    let (t, other) = (caller(15), caller(16));
    bsm.bought(&t, "basic", "basic-month", PurchaseKind::Subscription, Window { from: T0, until: T0 + 30 * DAY }).await;
    bsm.bought(&other, "all", "all-month", PurchaseKind::Subscription, Window { from: T0, until: T0 + 30 * DAY }).await;
    let foreign_domain = BcastKeyId { key_domain_id: [0x99, 0xf9, 0x99], sek_pek_id: id(1, 2).to_bytes() };
    let request = ltkm_request(&[
        key_ref(1, 2),
        key_ref(1, 0), // the current key of the group: the same key, sent once
        key_ref(2, 1), // another terminal's (t never bought sport)
        key_ref(1, 9), // no such key
        key_ref(1, 1), // history, no longer live
        key_ref(0, 1),
        foreign_domain,
    ]);
    let o = bsm.svc.ltkm_request(&t, &request, source(15), T0).await.unwrap();
    let codes: Vec<StatusCode> = o.response.keys.iter().map(|k| k.status).collect();
    assert_eq!(
        codes,
        [
            StatusCode::Success,
            StatusCode::Success,
            StatusCode::NoSubscription,
            StatusCode::WrongKeyInfo,
            StatusCode::WrongKeyInfo,
            StatusCode::WrongKeyInfo,
            StatusCode::WrongKeyInfo,
        ]
    );
    assert_eq!(o.response.ltkms.len(), 1);
    let c = open(&o.response.ltkms[0], &t);
    assert_eq!(c.sek_pek_id, id(1, 2));
    card(&t).msk_update(&o.response.ltkms[0]).unwrap();
    assert!(
        keycast_mikey::Ltkm::decode(&o.response.ltkms[0]).unwrap().open(&other.keys.smk).is_err(),
        "sealed for this terminal only"
    );
    assert_eq!(delivered(&o.intents), [(1, 2)]);
}

// ---------------------------------------------------------------------------------------------
// e. Deregistration, Token Purchase, Account Inquiry

#[tokio::test]
async fn deregistration_stops_pushes_and_purges_ended_purchases() {
    let bsm = Bsm::new().await;
    let t = caller(17);
    bsm.svc.service_request(&t, &service_request(&[("basic", None)]), source(17), T0).await.unwrap();
    bsm.bought(
        &t,
        "events",
        "final-ppv",
        PurchaseKind::PayPerView(ProgramId("final".into())),
        Window { from: T0 - 10, until: T0 + 10 },
    )
    .await;
    let request = DeregistrationRequest { request_id: 2, client: None, items: refs(&[("basic", None), ("x", None)]) };
    let o = bsm.svc.deregistration(&t, &request, T0 + 20).await.unwrap();
    let codes: Vec<StatusCode> = o.response.items.iter().map(|i| i.status).collect();
    assert_eq!(codes, [StatusCode::Success, StatusCode::PurchaseItemUnknown]);
    assert_eq!(o.response.status, StatusCode::Success);
    assert!(matches!(&o.intents[..], [DeliveryIntent::StopPushes { terminal }] if *terminal == t.terminal));
    assert!(bsm.store().terminal(&t.terminal).await.unwrap().unwrap().registration.is_none());
    let left: Vec<String> = bsm.store().purchases(&t.terminal).await.unwrap().into_iter().map(|p| p.item).collect();
    assert_eq!(left, ["basic"], "the ended PPV is purged");
}

#[tokio::test]
async fn token_purchase_gives_live_keys_and_history_keys_for_recordings() {
    let bsm = Bsm::new().await;
    let t = caller(18);
    let item = |key, global: Option<&str>, n| TokenPurchaseItem {
        key_id: key,
        global_id_ref: global.map(str::to_owned),
        number_of_tokens: n,
        price: None,
    };
    let request = TokenPurchaseRequest {
        request_id: 6,
        client: None,
        items: vec![
            item(key_ref(2, 0), None, Some(5)),         // sport's current key, item found by group
            item(key_ref(2, 1), Some("pack"), Some(7)), // a count other than the offer's
            item(key_ref(1, 2), None, None),            // news: no item with a token offer
            item(key_ref(7, 1), None, None),            // no such group
        ],
    };
    let o = bsm.svc.token_purchase(&t, &request, source(18), T0).await.unwrap();
    let codes: Vec<(StatusCode, Option<u32>)> =
        o.response.items.iter().map(|i| (i.status, i.number_of_tokens)).collect();
    assert_eq!(
        codes,
        [
            (StatusCode::Success, Some(5)),
            (StatusCode::InvalidInformation, None),
            (StatusCode::NoMatchingFragment, None),
            (StatusCode::WrongKeyInfo, None),
        ]
    );
    let c = open(&o.response.ltkms[0], &t);
    let p = c.ext.unwrap().security_policy.unwrap();
    assert_eq!((c.sek_pek_id, p.policy, p.view_counter), (id(2, 1), SecurityPolicy::UserPayPerView, 5));
    let mut card = card(&t);
    card.msk_update(&o.response.ltkms[0]).unwrap();
    assert_eq!(bsm.store().purchases(&t.terminal).await.unwrap()[0].kind, PurchaseKind::Tokens(5));

    // A recording under news's old key (1,1): a token offer on news is needed; add one.
    bsm.store()
        .put_purchase_data(&keycast_bsm::domain::PurchaseData {
            id: "basic-tokens".into(),
            item: "basic".into(),
            price: price("1.00"),
            kind: PurchaseKind::Tokens(2),
            period: DAY,
            play_backs: 0,
        })
        .await
        .unwrap();
    let request = TokenPurchaseRequest { request_id: 7, client: None, items: vec![item(key_ref(1, 1), None, None)] };
    let o = bsm.svc.token_purchase(&t, &request, source(18), T0).await.unwrap();
    assert_eq!(o.response.items[0].status, StatusCode::Success);
    let c = open(&o.response.ltkms[0], &t);
    assert_eq!(c.sek_pek_id, id(1, 1));
    assert_eq!(c.key.as_ref().unwrap().expose_secret(), &[key_byte(id(1, 1)); 16]);
    let w = window_of(id(1, 1));
    assert_eq!(c.validity, ts_window(w.from, w.until), "the history key keeps its own window");
    assert_eq!(card.msk_update(&o.response.ltkms[0]).unwrap().event, MskUpdateEvent::Stored(id(1, 1)));
}

#[tokio::test]
async fn account_inquiry_lists_the_purchases() {
    let bsm = Bsm::new().await;
    let t = caller(19);
    bsm.svc.service_request(&t, &service_request(&[("basic", None)]), source(19), T0).await.unwrap();
    let request =
        AccountInquiry { request_id: 1, client: None, inquiry_type: InquiryType::PurchaseItem, items: vec![] };
    let o = bsm.svc.account_inquiry(&t, &request, T0 + 1).await.unwrap();
    assert_eq!(o.response.status, StatusCode::Success);
    let a = &o.response.items[0];
    assert_eq!(a.item, PurchaseItemRef::new("basic", Some("basic-month")));
    assert_eq!(a.price, Some(price("4.99")));
    assert_eq!(a.valid_until.unwrap().unix_seconds(), T0 + 30 * DAY);
    let request = AccountInquiry { inquiry_type: InquiryType::BillingInfo, ..request };
    let o = bsm.svc.account_inquiry(&t, &request, T0 + 1).await.unwrap();
    assert_eq!(o.response.status, StatusCode::RequestUnavailable);
}

#[tokio::test]
async fn handle_dispatches_requests_and_refuses_responses() {
    let bsm = Bsm::new().await;
    let t = caller(20);
    let m = SprovMessage::ServiceRequest(service_request(&[("basic", None)]));
    let o = bsm.svc.handle(&t, m, source(20), T0).await.unwrap();
    assert!(matches!(o.response, SprovMessage::ServiceResponse(ref r) if r.ltkms.len() == 1));
    let answer = o.response.clone();
    assert_eq!(bsm.svc.handle(&t, answer, source(20), T0).await, Err(ServiceError::NotARequest("ServiceResponse")));
}

// ---------------------------------------------------------------------------------------------
// f. MBMS key management

#[tokio::test]
async fn mbms_register_msk_request_and_deregister() {
    let bsm = Bsm::new().await;
    let t = caller(21);
    bsm.bought(&t, "all", "all-month", PurchaseKind::Subscription, Window { from: T0, until: T0 + 30 * DAY }).await;
    let msk = |group: u16, number: u16| MskRef { key_domain_id: kd().0, msk_id: id(group, number).to_bytes() };

    // Not registered yet: MSK requests are forbidden.
    let o = bsm.svc.mbms_msk_request(&t, &MskRequest { msks: vec![msk(1, 0)] }, source(21), T0).await.unwrap();
    assert_eq!(o.response.responses[0].response_code.code, 403);

    let request = RegisterRequest { service_ids: vec!["allall-month".into(), "basic".into(), "nope".into()] };
    let o = bsm.svc.mbms_register(&t, &request, source(21), T0).await.unwrap();
    let codes: Vec<u16> = o.response.responses.iter().map(|r| r.response_code.code).collect();
    assert_eq!(codes, [200, 403, 403], "MBMS User Service ID = GlobalPurchaseItemID ‖ PurchaseDataID");
    let reg = bsm.store().terminal(&t.terminal).await.unwrap().unwrap().registration.unwrap();
    assert_eq!(reg.interface, Interface::Mbms);
    let p = pushes(&o.intents);
    let mut ids: Vec<_> = p.iter().map(|p| p.sek_pek_id).collect();
    ids.sort();
    assert_eq!(ids, [id(1, 2), id(2, 1)], "the answer has codes only; the keys are pushed");
    assert!(p.iter().all(|p| p.to.interface == RegistrationInterface::Mbms), "pushes go to port 2269");

    // The pushed LTKM the scheduler builds (V = 1) is taken by the card, with a verification message.
    let push = p.iter().find(|p| p.sek_pek_id == id(1, 2)).unwrap();
    let stored = bsm.store().key(push.sek_pek_id, T0).await.unwrap().unwrap();
    let first = bsm.store().reserve_ltkm_ts(&t.terminal, &t.keys.btid, 1).await.unwrap();
    let ts = LtkmCounter::restore(&t.keys.btid, first - 1).reserve(&t.keys.btid).persisted();
    let bytes = build_ltkm(&push.kind, &push.record(&stored).unwrap(), &t.keys, &ts, true).unwrap();
    let u = card(&t).msk_update(&bytes).unwrap();
    assert_eq!(u.event, MskUpdateEvent::Stored(id(1, 2)));
    assert!(u.verification.is_some());

    let request = MskRequest { msks: vec![msk(1, 0), msk(1, 2), msk(0, 1), msk(100, 1)] };
    let o = bsm.svc.mbms_msk_request(&t, &request, source(21), T0).await.unwrap();
    let codes: Vec<u16> = o.response.responses.iter().map(|r| r.response_code.code).collect();
    assert_eq!(codes, [200, 200, 400, 403], "the PEK of a program not bought is forbidden");
    assert_eq!(pushes(&o.intents).len(), 1, "one push for the one key named twice");

    let o = bsm.svc.mbms_deregister(&t, &DeregisterRequest { service_ids: vec!["all".into()] }, T0).await.unwrap();
    assert_eq!(o.response.responses[0].response_code.code, 200);
    assert!(bsm.store().terminal(&t.terminal).await.unwrap().unwrap().registration.is_none());
    assert!(matches!(&o.intents[..], [DeliveryIntent::StopPushes { .. }]));
}

// ---------------------------------------------------------------------------------------------
// Any input

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Arbitrary key names and item names are answered with per-item codes: no error, no panic,
    /// one status per entry, and LTKMs only for keys the terminal is entitled to.
    #[test]
    fn any_key_or_item_is_answered_per_entry(
        keys in proptest::collection::vec((proptest::prelude::any::<[u8; 3]>(), proptest::prelude::any::<[u8; 4]>()), 1..6),
        items in proptest::collection::vec("[a-z-]{1,12}", 1..4),
        tokens in proptest::option::of(proptest::prelude::any::<u32>()),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let bsm = Bsm::new().await;
            let t = caller(30);
            let keys: Vec<BcastKeyId> =
                keys.iter().map(|(d, s)| BcastKeyId { key_domain_id: *d, sek_pek_id: *s }).collect();
            let o = bsm.svc.ltkm_request(&t, &ltkm_request(&keys), source(30), T0).await.unwrap();
            assert_eq!(o.response.keys.len(), keys.len());
            assert!(o.response.ltkms.is_empty(), "nothing bought, nothing sent");
            let request = TokenPurchaseRequest {
                request_id: 1,
                client: None,
                items: keys
                    .iter()
                    .map(|k| TokenPurchaseItem { key_id: *k, global_id_ref: None, number_of_tokens: tokens, price: None })
                    .collect(),
            };
            let o = bsm.svc.token_purchase(&t, &request, source(30), T0).await.unwrap();
            assert_eq!(o.response.items.len(), keys.len());
            let named: Vec<(&str, Option<&str>)> = items.iter().map(|i| (i.as_str(), Some(i.as_str()))).collect();
            let o = bsm.svc.service_request(&t, &service_request(&named), source(30), T0).await.unwrap();
            assert_eq!(o.response.items.len(), items.len());
            let o = bsm
                .svc
                .unsubscribe(&t, &UnsubscribeRequest { request_id: 1, client: None, items: refs(&named) }, source(30), T0)
                .await
                .unwrap();
            assert_eq!(o.response.items.len(), items.len());
        });
    }
}
