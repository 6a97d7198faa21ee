//! The push service end to end (issue 5; profile P-3, P-5, P-8): provisioning requests make
//! intents, intents become rows, workers push LTKMs over real UDP on loopback, the card emulator
//! answers with verification messages sent back over UDP, and the rows end acknowledged, retried,
//! pulled, given up or stopped.

mod push_support;
mod service_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keycast_bsm::delivery::{AckOutcome, DeliveryKey, DeliveryState, FailReason, RegistrationInterface, Time};
use keycast_bsm::domain::{PurchaseKind, Window};
use keycast_bsm::http::intents::{IntentReport, IntentWriter};
use keycast_bsm::push::{Intake, PushService};
use keycast_bsm::rng::SeededRandom;
use keycast_bsm::service::{Caller, DeliveryIntent};
use keycast_bsm::store::BsmStore;
use keycast_bsm::store::sql::SqliteStore;
use keycast_bsm::verification::VerificationError;
use keycast_card::mbms::MskUpdateEvent;
use keycast_mikey::{KeyValidity, SecurityPolicy};
use keycast_provisioning::mbms::{DeregisterRequest, RegisterRequest};
use keycast_provisioning::sprov::{PurchaseItemRef, RegistrationRequest, UnsubscribeRequest};
use push_support::*;
use service_support::*;

type Writer = IntentWriter<SqliteStore, SeededRandom>;

/// Every terminal registers from loopback, so pushes reach the test's socket.
fn loopback() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn writer(bsm: &Bsm, port: u16) -> Writer {
    IntentWriter::new(bsm.store().clone(), quiet(port), SeededRandom::new(1))
}

async fn subscribed(bsm: &Bsm, t: &Caller) {
    bsm.bought(t, "basic", "basic-month", PurchaseKind::Subscription, Window { from: T0, until: T0 + 30 * DAY }).await;
}

/// MBMS registration for the `basic` service at `T0 + s`, its intents written.
async fn mbms_register(bsm: &Bsm, w: &Writer, t: &Caller, s: u64) -> IntentReport {
    let request = RegisterRequest { service_ids: vec!["basic".into()] };
    let o = bsm.svc.mbms_register(t, &request, loopback(), T0 + s).await.unwrap();
    w.write(o.intents, at(s)).await.unwrap()
}

/// The delivery of news' live key (1,2) to `t`.
fn news_key(t: &Caller, version: u32) -> DeliveryKey {
    DeliveryKey { terminal: t.terminal.0.clone(), key_domain_id: kd(), sek_pek_id: id(1, 2), version }
}

async fn state(bsm: &Bsm, key: &DeliveryKey) -> DeliveryState {
    bsm.store().delivery(key).await.unwrap().expect("stored").1.state
}

#[tokio::test]
async fn mbms_registration_is_pushed_over_udp_and_acknowledged() {
    let bsm = Bsm::new().await;
    let t = caller(1);
    subscribed(&bsm, &t).await;
    let keys = FakeKeys::with(&[&t]);
    let (term, port) = terminal_socket().await;
    let w = worker(bsm.store(), &keys, "w1", quiet(port)).await;
    let report = mbms_register(&bsm, &writer(&bsm, port), &t, 0).await;
    assert_eq!(report.queued, 1);
    let key = news_key(&t, 1);
    let form = bsm.store().delivery_form(&key).await.unwrap().unwrap();
    assert!(form.streaming.is_some(), "news streams: the SRTP policy is kept with the row");

    let round = w.run_once(at(0)).await.unwrap();
    assert_eq!((round.claimed, round.pushed), (1, 1));
    let (ltkm, from) = recv(&term).await;
    assert_eq!(from, w.local_addr().unwrap(), "pushed from the socket that takes the answers");
    assert_eq!(btid_ts(&ltkm), (t.keys.btid.clone(), 1));

    let mut card = card(&t);
    let update = card.msk_update(&ltkm).unwrap();
    assert_eq!(update.event, MskUpdateEvent::Stored(id(1, 2)));
    assert_eq!(card.msk(kd(), id(1, 2)).unwrap().policy(), Some(SecurityPolicy::UnlimitedWithinWindow));
    let vm = update.verification.expect("V = 1 on a push");
    term.send_to(&vm, from).await.unwrap();
    let intake = w.receive_once(at(2)).await.unwrap();
    assert_eq!(intake, Intake::Acknowledged { key: key.clone(), outcome: AckOutcome::Acknowledged });
    let (_, row) = bsm.store().delivery(&key).await.unwrap().unwrap();
    assert_eq!((row.state, row.due), (DeliveryState::Acknowledged { at: at(2) }, None));
    assert!(row.sent[0].acknowledged);

    assert_eq!(w.run_once(at(1_000)).await.unwrap().claimed, 0, "no retry after the acknowledgement");
    silent(&term).await;
    let counts = w.stats().snapshot();
    assert_eq!((counts.pushed, counts.acknowledged, counts.pulls), (1, 1, 0));
}

#[tokio::test]
async fn unanswered_pushes_retry_with_fresher_ts_then_pull_then_give_up() {
    let bsm = Bsm::new().await;
    let t = caller(2);
    subscribed(&bsm, &t).await;
    let keys = FakeKeys::with(&[&t]);
    let (term, port) = terminal_socket().await;
    let w = worker(bsm.store(), &keys, "w1", quiet(port)).await;
    let writer = writer(&bsm, port);
    mbms_register(&bsm, &writer, &t, 0).await;
    let key = news_key(&t, 1);
    let mut card = card(&t);

    // Pushes at 0, 10 (backoff 10) and 30 (backoff 20): each a new TS the card takes as fresher.
    let mut last_vm = Vec::new();
    for (i, s) in [0, 10, 30].into_iter().enumerate() {
        if s > 0 {
            assert_eq!(w.run_once(at(s - 1)).await.unwrap().claimed, 0, "nothing before the backoff ends");
        }
        assert_eq!(w.run_once(at(s)).await.unwrap().pushed, 1);
        let (ltkm, _) = recv(&term).await;
        let attempt = u32::try_from(i).unwrap() + 1;
        assert_eq!(btid_ts(&ltkm).1, attempt, "TS +1 per LTKM sent");
        let update = card.msk_update(&ltkm).expect("a retransmission is fresher for the card");
        last_vm = update.verification.unwrap();
        assert_eq!(state(&bsm, &key).await, DeliveryState::Sent { attempt, at: at(s) });
    }

    // Backoff 25 (capped): the solicited pull at 55, Key Number 0, no verification asked.
    assert_eq!(w.run_once(at(54)).await.unwrap().claimed, 0);
    assert_eq!(w.run_once(at(55)).await.unwrap().pulls, 1);
    let (pull, _) = recv(&term).await;
    assert_eq!(solicited_pull_group(&pull, &t), Some(1));
    assert_eq!(btid_ts(&pull).1, 4, "the pull takes a TS of the same counter");
    let update = card.msk_update(&pull).unwrap();
    assert!(matches!(update.event, MskUpdateEvent::SolicitedPull { key_group: 1, .. }));
    assert!(update.verification.is_none());
    assert_eq!(state(&bsm, &key).await, DeliveryState::PullSolicited { at: at(55) });

    // pull_wait 60: given up at 115, with no datagram.
    assert_eq!(w.run_once(at(114)).await.unwrap().claimed, 0);
    assert_eq!(w.run_once(at(115)).await.unwrap().gave_up, 1);
    silent(&term).await;
    let (_, row) = bsm.store().delivery(&key).await.unwrap().unwrap();
    assert_eq!(row.state, DeliveryState::Failed { at: at(115), reason: FailReason::NoAcknowledgement });
    assert_eq!(row.sent.iter().map(|s| (s.attempt, s.ts)).collect::<Vec<_>>(), [(1, 1), (2, 2), (3, 3)]);

    // A late answer still counts: the card has the key after all.
    term.send_to(&last_vm, w.local_addr().unwrap()).await.unwrap();
    let intake = w.receive_once(at(120)).await.unwrap();
    assert_eq!(intake, Intake::Acknowledged { key, outcome: AckOutcome::AfterGiveUp });

    // Registering again queues the next version, which goes out and is answered.
    let report = mbms_register(&bsm, &writer, &t, 200).await;
    assert_eq!(report.queued, 1);
    assert_eq!(w.run_once(at(200)).await.unwrap().pushed, 1);
    let (ltkm, from) = recv(&term).await;
    assert_eq!(btid_ts(&ltkm).1, 5);
    term.send_to(&card.msk_update(&ltkm).unwrap().verification.unwrap(), from).await.unwrap();
    let intake = w.receive_once(at(201)).await.unwrap();
    assert_eq!(intake, Intake::Acknowledged { key: news_key(&t, 2), outcome: AckOutcome::Acknowledged });
}

#[tokio::test]
async fn forged_malformed_unmatched_and_replayed_datagrams_change_nothing() {
    let bsm = Bsm::new().await;
    let t = caller(3);
    subscribed(&bsm, &t).await;
    let keys = FakeKeys::with(&[&t]);
    let (term, port) = terminal_socket().await;
    let w = worker(bsm.store(), &keys, "w1", quiet(port)).await;
    mbms_register(&bsm, &writer(&bsm, port), &t, 0).await;
    w.run_once(at(0)).await.unwrap();
    let (ltkm, bsm_addr) = recv(&term).await;
    let vm = card(&t).msk_update(&ltkm).unwrap().verification.unwrap();
    let key = news_key(&t, 1);
    let before = bsm.store().delivery(&key).await.unwrap().unwrap();

    let mut forged = vm.clone();
    *forged.last_mut().unwrap() ^= 0x01;
    // P-5: HDR (10 octets with the empty map), then T: next payload, TS type, the 4-octet TS.
    assert_eq!(vm[12..16], 1u32.to_be_bytes(), "the TS sits where P-5 puts it");
    let mut other_ts = vm.clone();
    other_ts[12..16].copy_from_slice(&99u32.to_be_bytes());
    type Expect = fn(&VerificationError) -> bool;
    let cases: [(&[u8], Expect); 5] = [
        (b"", |e| matches!(e, VerificationError::Malformed(_))),
        (b"not a MIKEY message", |e| matches!(e, VerificationError::Malformed(_))),
        (&vm[..vm.len() - 1], |e| matches!(e, VerificationError::Malformed(_))),
        (&forged, |e| matches!(e, VerificationError::Forged)),
        (&other_ts, |e| matches!(e, VerificationError::Unmatched)),
    ];
    for (bytes, expected) in cases {
        term.send_to(bytes, bsm_addr).await.unwrap();
        match w.receive_once(at(1)).await.unwrap() {
            Intake::Refused(e) => assert!(expected(&e), "{e:?} for {} octets", bytes.len()),
            other => panic!("refused expected, got {other:?}"),
        }
        assert_eq!(bsm.store().delivery(&key).await.unwrap().unwrap(), before, "no state change");
    }

    term.send_to(&vm, bsm_addr).await.unwrap();
    assert!(matches!(w.receive_once(at(2)).await.unwrap(), Intake::Acknowledged { .. }));
    term.send_to(&vm, bsm_addr).await.unwrap();
    let replay = w.receive_once(at(3)).await.unwrap();
    assert!(matches!(replay, Intake::Refused(VerificationError::Replayed { .. })), "{replay:?}");
    assert_eq!(state(&bsm, &key).await, DeliveryState::Acknowledged { at: at(2) }, "the first answer stands");
    let c = w.stats().snapshot();
    assert_eq!((c.malformed, c.forged, c.unmatched, c.replayed, c.acknowledged), (3, 1, 1, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_never_send_the_same_attempt() {
    let bsm = Bsm::new().await;
    let callers: Vec<Caller> = (1..=6).map(caller).collect();
    let keys = FakeKeys::default();
    let (term, port) = terminal_socket().await;
    let writer = writer(&bsm, port);
    for t in &callers {
        subscribed(&bsm, t).await;
        keys.add(t);
        mbms_register(&bsm, &writer, t, 0).await;
    }
    let a = worker(bsm.store(), &keys, "worker-a", quiet(port)).await;
    let b = worker(bsm.store(), &keys, "worker-b", quiet(port)).await;

    for (round, s) in [(1u32, 0), (2, 10)] {
        let (ra, rb) = tokio::join!(a.run_once(at(s)), b.run_once(at(s)));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.pushed + rb.pushed, 6, "round {round}: {ra:?} {rb:?}");
        let mut seen = BTreeSet::new();
        for _ in 0..6 {
            let (btid, ts) = btid_ts(&recv(&term).await.0);
            assert_eq!(ts, round, "each terminal's counter moves once per round");
            assert!(seen.insert(btid), "one datagram per terminal and round");
        }
        silent(&term).await;
    }
    for t in &callers {
        let (_, row) = bsm.store().delivery(&news_key(t, 1)).await.unwrap().unwrap();
        assert_eq!(row.sent.iter().map(|s| (s.attempt, s.ts)).collect::<Vec<_>>(), [(1, 1), (2, 2)]);
    }
}

#[tokio::test]
async fn a_restarted_worker_finishes_the_campaign_without_duplicates() {
    let bsm = Bsm::new().await;
    let callers: Vec<Caller> = (1..=5).map(caller).collect();
    let keys = FakeKeys::default();
    let (term, port) = terminal_socket().await;
    let mut config = quiet(port);
    // Retries stay out of the picture: only first pushes are counted.
    config.retry.initial = Duration::from_secs(3_600);
    config.retry.max_backoff = Duration::from_secs(3_600);
    let writer = IntentWriter::new(bsm.store().clone(), config, SeededRandom::new(1));
    for t in &callers {
        subscribed(&bsm, t).await;
        keys.add(t);
        mbms_register(&bsm, &writer, t, 0).await;
    }
    let mut small = push_config("worker-a", config);
    small.batch = 2;
    let a = worker_from(bsm.store(), &keys, small).await;
    assert_eq!(a.run_once(at(0)).await.unwrap().pushed, 2);
    // Worker A claims two more rows and dies before sending them.
    assert_eq!(bsm.store().claim_due("worker-a", at(1), Duration::from_secs(30), 2).await.unwrap().len(), 2);
    drop(a);

    let b = worker(bsm.store(), &keys, "worker-b", config).await;
    assert_eq!(b.run_once(at(1)).await.unwrap().pushed, 1, "the one row nobody holds");
    assert_eq!(b.run_once(at(30)).await.unwrap().claimed, 0, "the dead worker's lease still protects its rows");
    assert_eq!(b.run_once(at(31)).await.unwrap().pushed, 2, "after the lease, nothing is lost");

    let mut per_terminal: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for _ in 0..5 {
        let (btid, ts) = btid_ts(&recv(&term).await.0);
        per_terminal.entry(btid).or_default().push(ts);
    }
    silent(&term).await;
    assert_eq!(per_terminal.len(), 5);
    assert!(per_terminal.values().all(|ts| ts == &[1]), "one LTKM each, no TS reused: {per_terminal:?}");
    for t in &callers {
        let (_, row) = bsm.store().delivery(&news_key(t, 1)).await.unwrap().unwrap();
        assert_eq!(row.sent.len(), 1);
        assert!(matches!(row.state, DeliveryState::Sent { attempt: 1, .. }));
    }
}

#[tokio::test]
async fn deregistration_stops_pushes() {
    let bsm = Bsm::new().await;
    let t = caller(4);
    subscribed(&bsm, &t).await;
    let keys = FakeKeys::with(&[&t]);
    let (term, port) = terminal_socket().await;
    let w = worker(bsm.store(), &keys, "w1", quiet(port)).await;
    let writer = writer(&bsm, port);
    mbms_register(&bsm, &writer, &t, 0).await;
    assert_eq!(w.run_once(at(0)).await.unwrap().pushed, 1);
    recv(&term).await;

    let o =
        bsm.svc.mbms_deregister(&t, &DeregisterRequest { service_ids: vec!["basic".into()] }, T0 + 5).await.unwrap();
    assert!(matches!(&o.intents[..], [DeliveryIntent::StopPushes { .. }]));
    let report = writer.write(o.intents, at(5)).await.unwrap();
    assert_eq!(report.stopped, 1);
    let key = news_key(&t, 1);
    assert_eq!(state(&bsm, &key).await, DeliveryState::Failed { at: at(5), reason: FailReason::Stopped });
    for s in [10, 30, 55, 115] {
        assert_eq!(w.run_once(at(s)).await.unwrap().claimed, 0);
    }
    silent(&term).await;
}

#[tokio::test]
async fn a_terminal_the_bsf_does_not_know_gets_no_push_and_is_given_up() {
    let bsm = Bsm::new().await;
    let t = caller(5);
    subscribed(&bsm, &t).await;
    let keys = FakeKeys::default();
    let (term, port) = terminal_socket().await;
    let w = worker(bsm.store(), &keys, "w1", quiet(port)).await;
    mbms_register(&bsm, &writer(&bsm, port), &t, 0).await;
    for s in [0, 10, 30, 55] {
        let round = w.run_once(at(s)).await.unwrap();
        assert_eq!((round.not_sent, round.pushed, round.pulls), (1, 0, 0), "at {s}");
    }
    assert_eq!(w.run_once(at(115)).await.unwrap().gave_up, 1);
    silent(&term).await;
    let (_, row) = bsm.store().delivery(&news_key(&t, 1)).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.sent.len()),
        (DeliveryState::Failed { at: at(115), reason: FailReason::NoAcknowledgement }, 0)
    );
    assert_eq!(bsm.store().reserve_ltkm_ts(&t.terminal, &t.keys.btid, 1).await, Ok(1), "no TS was burnt");
}

#[tokio::test]
async fn oma_registration_closes_pushes_and_unsubscribe_pushes_an_invalidation_to_4359s_stand_in() {
    let bsm = Bsm::new().await;
    let t = caller(6);
    subscribed(&bsm, &t).await;
    let keys = FakeKeys::with(&[&t]);
    let (mbms_socket, mbms_port) = terminal_socket().await;
    let (oma_socket, oma_port) = terminal_socket().await;
    let mut config = quiet(mbms_port);
    config.ports.oma_bcast = oma_port;
    let w = worker(bsm.store(), &keys, "w1", config).await;
    let writer = IntentWriter::new(bsm.store().clone(), config, SeededRandom::new(1));

    // A push is queued (MBMS), then the terminal registers through OMA BCAST: the answer carries
    // the key, which closes the push before it leaves.
    mbms_register(&bsm, &writer, &t, 0).await;
    let request = RegistrationRequest {
        request_id: 1,
        client: None,
        items: vec![PurchaseItemRef::new("basic", Some("basic-month"))],
    };
    let o = bsm.svc.registration(&t, &request, loopback(), T0 + 1).await.unwrap();
    assert_eq!(o.response.ltkms.len(), 1);
    let mut card = card(&t);
    assert!(card.msk_update(&o.response.ltkms[0]).unwrap().verification.is_none(), "V = 0 in an answer");
    let report = writer.write(o.intents, at(1)).await.unwrap();
    assert_eq!((report.rescheduled, report.acknowledged), (1, 1));
    assert_eq!(state(&bsm, &news_key(&t, 1)).await, DeliveryState::Acknowledged { at: at(1) });
    assert_eq!(w.run_once(at(2)).await.unwrap().claimed, 0);

    // Unsubscribe: an invalidation (version 2 of the key), pushed to the OMA BCAST port.
    let request = UnsubscribeRequest { request_id: 2, client: None, items: vec![PurchaseItemRef::new("basic", None)] };
    let o = bsm.svc.unsubscribe(&t, &request, loopback(), T0 + 10).await.unwrap();
    assert_eq!(writer.write(o.intents, at(10)).await.unwrap().queued, 1);
    let key = news_key(&t, 2);
    let (_, row) = bsm.store().delivery(&key).await.unwrap().unwrap();
    assert_eq!(row.delivery.to.interface, RegistrationInterface::OmaBcast);
    assert_eq!(w.run_once(at(10)).await.unwrap().pushed, 1);
    let (ltkm, from) = recv(&oma_socket).await;
    silent(&mbms_socket).await;
    let update = card.msk_update(&ltkm).unwrap();
    assert_eq!(update.event, MskUpdateEvent::Invalidated(id(1, 2)));
    assert!(matches!(card.msk(kd(), id(1, 2)).unwrap().validity, KeyValidity::TsWindow { .. }), "the key's form");
    oma_socket.send_to(&update.verification.unwrap(), from).await.unwrap();
    let intake = w.receive_once(at(11)).await.unwrap();
    assert_eq!(intake, Intake::Acknowledged { key, outcome: AckOutcome::Acknowledged });
}

#[tokio::test]
async fn the_service_loop_pushes_takes_answers_and_stops_gracefully() {
    let bsm = Bsm::new().await;
    let t = caller(7);
    subscribed(&bsm, &t).await;
    let keys = FakeKeys::with(&[&t]);
    let (term, port) = terminal_socket().await;
    mbms_register(&bsm, &writer(&bsm, port), &t, 0).await;
    let mut config = push_config("loop", quiet(port));
    config.idle_poll = Duration::from_millis(20);
    let w = worker_from(bsm.store(), &keys, config).await;
    // A clock the test moves: the loop's rounds and intake read it.
    let now = Arc::new(AtomicU64::new(at(0).as_micros()));
    let clock = {
        let now = now.clone();
        Arc::new(move || Time::from_micros(now.load(Ordering::SeqCst)))
    };
    let service = PushService::spawn(w, clock);

    let (ltkm, from) = recv(&term).await;
    let vm = card(&t).msk_update(&ltkm).unwrap().verification.unwrap();
    now.store(at(3).as_micros(), Ordering::SeqCst);
    term.send_to(&vm, from).await.unwrap();
    let key = news_key(&t, 1);
    let mut acknowledged = false;
    for _ in 0..250 {
        if state(&bsm, &key).await == (DeliveryState::Acknowledged { at: at(3) }) {
            acknowledged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(acknowledged, "the loop took the verification message in");
    let worker = service.worker().clone();
    tokio::time::timeout(Duration::from_secs(5), service.stop()).await.expect("stops promptly");
    assert_eq!(worker.stats().snapshot().acknowledged, 1);
    now.store(at(1_000).as_micros(), Ordering::SeqCst);
    silent(&term).await;
}
