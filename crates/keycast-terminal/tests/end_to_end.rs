//! The terminal against the real BSF (keycast-gba) and the real BSM (keycast-bsm `bsm_app` over
//! SQLite in a temporary directory), in process on 127.0.0.1, with the emulated card:
//! bootstrap, registration, Service Request, LTKMs into the card, an STKM under the delivered
//! SEK opened to its TEK; then the BSF session is replaced by another client, the terminal's next
//! request gets 401, it bootstraps again and the retry succeeds (an LTKM Request answered with
//! the key); finally a solicited pull over UDP makes the terminal send an LTKM Request, and a
//! pushed LTKM with V = 1 gets its verification message back.

mod loopback;

use std::time::Duration;

use keycast_bsm::domain::TerminalId;
use keycast_bsm::keys::KeySource as _;
use keycast_bsm::store::BsmStore;
use keycast_card::Card as _;
use keycast_gba::bsf::GbaType;
use keycast_gba::client::GbaMode;
use keycast_mikey::{Ltkm, SekPekId, SolicitedPull, VerificationMessage};
use keycast_provisioning::sprov::{PurchaseItemRef, PurchaseRequestItem, StatusCode};
use keycast_provisioning::time::UtcTime;
use keycast_terminal::ltkm_intake::{Interface, LtkmEvent, bcast_key};
use keycast_terminal::provisioning::Response;
use loopback::*;
use tokio::net::UdpSocket;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_subscribes_survives_a_replaced_bootstrap_and_answers_a_solicited_pull() {
    tokio::time::timeout(Duration::from_secs(90), scenario()).await.expect("the scenario ends in time");
}

async fn scenario() {
    let clock = TestClock::new();
    let bsf = start_bsf(&clock, GbaType::GbaU).await;
    let bsm = start_bsm(bsf.addr, &clock).await;
    let mut terminal = start_terminal(bsf.addr, bsm.running.addr, &clock, card(), GbaMode::GbaU).await;

    // Power-on: bootstrap; nothing bought yet, so nothing to register.
    assert!(terminal.connect().await.unwrap().is_none());
    let first_btid = terminal.client().b_tid().expect("bootstrapped").to_owned();

    // Subscribe: the answer carries the SEK's LTKM, which the card takes.
    let item = PurchaseItemRef::new("basic", Some("basic-month"));
    let until = UtcTime::from_unix_seconds(T0 + 30 * DAY).unwrap();
    let answer =
        terminal.subscribe(vec![(PurchaseRequestItem { item: item.clone(), price: None }, Some(until))]).await.unwrap();
    let Response::Service(service) = &answer.response else { panic!("{answer:?}") };
    assert_eq!(service.status, StatusCode::Success);
    let sek = bcast_key(kd(), SekPekId { key_group: 1, key_number: 2 });
    assert_eq!(answer.ltkms.len(), 1);
    assert_eq!(answer.ltkms[0].as_ref().unwrap().event, LtkmEvent::Accepted { key: sek });
    assert_eq!(terminal.client().purchases().active(clock.utc()()), [item]);

    // An STKM made under that SEK opens to its TEK in the card.
    let stkm = sample_stkm();
    assert_sample_tek(terminal.card_mut().mtk_generation(&stkm).unwrap());

    // The network comes back: registration again, the key again under a later TS.
    clock.advance(60);
    let answer = terminal.reconnected().await.unwrap().expect("one item to register");
    let Response::Registration(reg) = &answer.response else { panic!("{answer:?}") };
    assert_eq!(reg.items[0].status, StatusCode::Success);
    assert!(answer.ltkms.iter().all(|r| matches!(r, Ok(r) if r.event == (LtkmEvent::Accepted { key: sek }))));
    let store = bsm.state.service().store();
    let registration = store.terminal(&TerminalId(IMPI.into())).await.unwrap().unwrap().registration.unwrap();
    assert!(registration.address.starts_with("127.0.0.1:"), "{}", registration.address);

    // Another client bootstraps the same IMPI: the terminal's B-TID is gone at the BSF.
    clock.advance(60);
    let other_btid = other_client_bootstraps(bsf.addr, &clock, card(), GbaMode::GbaU).await;
    assert_ne!(other_btid, first_btid);

    // The next request gets 401; the terminal bootstraps again and the retry succeeds.
    let group = bcast_key(kd(), SekPekId { key_group: 1, key_number: 0 });
    let answer = terminal.request_keys(Interface::OmaBcast, &[group]).await.unwrap();
    assert_eq!(answer.rebootstraps, 1);
    let new_btid = terminal.client().b_tid().unwrap().to_owned();
    assert!(new_btid != first_btid && new_btid != other_btid, "a third B-TID");
    let Response::Ltkm(ltkm) = &answer.response else { panic!("{answer:?}") };
    assert_eq!((ltkm.keys[0].key, ltkm.keys[0].status), (group, StatusCode::Success));
    assert_eq!(answer.ltkms.len(), 1);
    assert_eq!(answer.ltkms[0].as_ref().unwrap().event, LtkmEvent::Accepted { key: sek }, "taken under the new MUK");

    // A solicited pull for Key Group 1 over UDP: the terminal answers with an LTKM Request.
    let smk = zn_client(bsf.addr).keys(&new_btid, clock.unix()()).await.unwrap().smk().clone();
    let ts = store.reserve_ltkm_ts(&TerminalId(IMPI.into()), &new_btid, 1).await.unwrap();
    let trigger = SolicitedPull {
        csb_id: 0x7777_0001,
        key_domain_id: kd(),
        key_group: 1,
        ts,
        rand: [0x21; 16],
        idi: BSM.into(),
        idr: new_btid.clone(),
    }
    .seal(&smk)
    .unwrap();
    let bsm_push = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = terminal.udp_addr(Interface::OmaBcast).unwrap();
    bsm_push.send_to(&trigger, to).await.unwrap();
    let received = terminal.recv_ltkm(Duration::from_secs(5)).await.unwrap().expect("the pull arrives");
    assert_eq!(received.from, bsm_push.local_addr().unwrap());
    assert_eq!(received.report.as_ref().unwrap().event, LtkmEvent::SolicitedPull { key: group });
    assert_eq!(received.follow_ups.len(), 1, "one LTKM Request");
    let pulled = received.follow_ups[0].as_ref().unwrap();
    let Response::Ltkm(ltkm) = &pulled.response else { panic!("{pulled:?}") };
    assert_eq!(ltkm.keys[0].key, group);
    assert_eq!(pulled.ltkms[0].as_ref().unwrap().event, LtkmEvent::Accepted { key: sek });

    // A pushed LTKM with V = 1: the verification message goes back to the push socket and
    // verifies under the LTKM's keys (what the BSM's verification intake checks).
    let ts = store.reserve_ltkm_ts(&TerminalId(IMPI.into()), &new_btid, 1).await.unwrap();
    let pushed = ltkm_9_1(&new_btid, ts, &smk);
    bsm_push.send_to(&pushed, to).await.unwrap();
    let received = terminal.recv_ltkm(Duration::from_secs(5)).await.unwrap().expect("the LTKM arrives");
    let nine = bcast_key(kd(), SekPekId { key_group: 9, key_number: 1 });
    assert_eq!(received.report.as_ref().unwrap().event, LtkmEvent::Accepted { key: nine });
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), bsm_push.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(from, to, "sent from the socket that received the LTKM");
    let ltkm = Ltkm::decode(&pushed).unwrap();
    VerificationMessage::decode(&buf[..n]).unwrap().verify(&ltkm, &ltkm.message_keys(&smk)).unwrap();

    // A datagram that is no LTKM is dropped with a typed error, and nothing is requested.
    bsm_push.send_to(b"not mikey", to).await.unwrap();
    let received = terminal.recv_ltkm(Duration::from_secs(5)).await.unwrap().expect("the datagram arrives");
    assert!(received.report.is_err());
    assert!(received.follow_ups.is_empty());
    // Nothing more arrives.
    assert!(terminal.recv_ltkm(Duration::from_millis(50)).await.unwrap().is_none());

    bsm.running.stop().await;
    bsf.stop().await;
}
