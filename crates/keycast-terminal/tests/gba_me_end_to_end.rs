//! A GBA_ME terminal (TS 33.220 GBA_ME, TS 33.246 ME-based key management) against the real BSF
//! and the real BSM on 127.0.0.1: the USIM answers AUTHENTICATE in the 3G context only, and
//! Ks, the SMK (Ks_NAF) and the SEK/PEKs live in the ME's `GbaMeStore`
//! ([`GbaMeKeyHolder`]). The BSM gets Ks_NAF over Zn with GBA type ME.
//!
//! - bootstrap, subscribe (the answer's LTKM into the store), a pushed LTKM with V = 1 over UDP
//!   whose verification message goes back, an STKM opened to its TEK by the store;
//! - a pushed LTKM whose MAC fails: dropped, nothing sent, nothing stored;
//! - the BSF session replaced by another client: 401, bootstrap again, the retry succeeds and
//!   the key comes under the new MUK;
//! - a bootstrapping mode that does not suit the key holder is refused at once.

mod loopback;

use std::net::SocketAddr;
use std::time::Duration;

use keycast_bsm::domain::TerminalId;
use keycast_bsm::keys::KeySource as _;
use keycast_bsm::store::BsmStore;
use keycast_card::Card;
use keycast_card::card::CardOpError;
use keycast_card::error::CardError;
use keycast_card::mbms::MukRecord;
use keycast_crypto::keys::{SekPek, Smk};
use keycast_gba::bsf::{GbaType, SeededRandom};
use keycast_gba::client::GbaMode;
use keycast_mikey::{Ltkm, SekPekId, VerificationMessage};
use keycast_provisioning::sprov::{PurchaseItemRef, PurchaseRequestItem, StatusCode};
use keycast_provisioning::time::UtcTime;
use keycast_terminal::key_holder::{GbaMeKeyHolder, MbmsKeyHolder};
use keycast_terminal::ltkm_intake::{Interface, LtkmEvent, bcast_key};
use keycast_terminal::provisioning::Response;
use keycast_terminal::shell::{ShellError, TerminalShell};
use loopback::*;
use tokio::net::UdpSocket;

type MeTerminal = TerminalShell<GbaMeKeyHolder<keycast_card::ApduCard<keycast_card::Emulator>>>;

/// BSF (GBA_ME subscriber), BSM and a GBA_ME terminal, bootstrapped by `connect`.
async fn setup(clock: &TestClock) -> (Running, Bsm, MeTerminal) {
    let bsf = start_bsf(clock, GbaType::GbaMe).await;
    let bsm = start_bsm(bsf.addr, clock).await;
    let mut terminal =
        start_terminal(bsf.addr, bsm.running.addr, clock, GbaMeKeyHolder::new(card()), GbaMode::GbaMe).await;
    assert!(terminal.connect().await.unwrap().is_none(), "nothing bought yet");
    (bsf, bsm, terminal)
}

async fn teardown(bsf: Running, bsm: Bsm) {
    bsm.running.stop().await;
    bsf.stop().await;
}

/// The MUK record the ME's store holds for the BSM.
fn muk_record(terminal: &MeTerminal) -> &MukRecord {
    terminal.card().store().mbms.muks.iter().find(|r| r.idi == BSM).expect("a MUK for the BSM")
}

/// Subscribes to `basic`; the answer's LTKM (SEK (1,2)) is taken.
async fn subscribe(terminal: &mut MeTerminal) {
    let item = PurchaseItemRef::new("basic", Some("basic-month"));
    let until = UtcTime::from_unix_seconds(T0 + 30 * DAY).unwrap();
    let answer = terminal.subscribe(vec![(PurchaseRequestItem { item, price: None }, Some(until))]).await.unwrap();
    let Response::Service(service) = &answer.response else { panic!("{answer:?}") };
    assert_eq!(service.status, StatusCode::Success);
    let sek = bcast_key(kd(), SekPekId { key_group: 1, key_number: 2 });
    assert_eq!(answer.ltkms.len(), 1);
    assert_eq!(answer.ltkms[0].as_ref().unwrap().event, LtkmEvent::Accepted { key: sek });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gba_me_terminal_subscribes_verifies_a_push_and_opens_an_stkm() {
    tokio::time::timeout(Duration::from_secs(90), subscribe_push_stkm()).await.expect("the scenario ends in time");
}

async fn subscribe_push_stkm() {
    let clock = TestClock::new();
    let (bsf, bsm, mut terminal) = setup(&clock).await;

    // Bootstrapped as GBA_ME: Ks in the ME's store under the terminal's B-TID.
    let btid = terminal.client().b_tid().expect("bootstrapped").to_owned();
    assert_eq!(terminal.bootstrap_state().current().unwrap().mode, GbaMode::GbaMe);
    assert_eq!(terminal.card().store().b_tid(), Some(btid.as_str()));
    assert_eq!(terminal.card().gba_type(), GbaType::GbaMe);

    // Zn gives the BSM Ks_NAF with GBA type ME; the store's MUK is that SMK (Ks_NAF), and the
    // USIM holds none (ME-based key management).
    let keys = zn_client(bsf.addr).keys(&btid, clock.unix()()).await.unwrap();
    assert_eq!(keys.gba_type(), GbaType::GbaMe);
    let smk = keys.smk().clone();
    let record = muk_record(&terminal);
    assert_eq!((record.current.idr.as_str(), &record.current.key), (btid.as_str(), &smk));
    let usim = terminal.card().card().transport().usim();
    assert!(usim.mbms.muks.is_empty() && usim.mbms.msks.is_empty(), "the USIM keeps no MBMS key");

    // Subscribe: the answer's LTKM goes into the store.
    subscribe(&mut terminal).await;
    let store = &terminal.card().store().mbms;
    let held = store.msk(kd(), SekPekId { key_group: 1, key_number: 2 }).expect("SEK (1,2) in the ME");
    assert_eq!(held.key, SekPek::from_bytes(SEK));
    assert!(terminal.card().card().transport().usim().mbms.msks.is_empty());

    // A pushed LTKM with V = 1 over UDP: taken by the store, its verification message goes back
    // to the push socket and verifies under the LTKM's keys.
    let bsm_store = bsm.state.service().store();
    let ts = bsm_store.reserve_ltkm_ts(&TerminalId(IMPI.into()), &btid, 1).await.unwrap();
    let pushed = ltkm_9_1(&btid, ts, &smk);
    let bsm_push = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = terminal.udp_addr(Interface::OmaBcast).unwrap();
    bsm_push.send_to(&pushed, to).await.unwrap();
    let received = terminal.recv_ltkm(Duration::from_secs(5)).await.unwrap().expect("the LTKM arrives");
    let nine = bcast_key(kd(), SekPekId { key_group: 9, key_number: 1 });
    assert_eq!(received.report.as_ref().unwrap().event, LtkmEvent::Accepted { key: nine });
    assert!(received.follow_ups.is_empty());
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), bsm_push.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(from, to, "sent from the socket that received the LTKM");
    let ltkm = Ltkm::decode(&pushed).unwrap();
    VerificationMessage::decode(&buf[..n]).unwrap().verify(&ltkm, &ltkm.message_keys(&smk)).unwrap();

    // An STKM under the subscribed SEK: the store opens it to its TEK; the USIM cannot.
    let stkm = sample_stkm();
    assert_sample_tek(terminal.card_mut().mtk_generation(&stkm).unwrap());
    let usim_answer = Card::mtk_generation(terminal.card_mut().card_mut(), &stkm);
    assert_eq!(usim_answer, Err(CardOpError::Card(CardError::KeyNotFound)));

    teardown(bsf, bsm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gba_me_terminal_drops_an_ltkm_whose_mac_fails() {
    tokio::time::timeout(Duration::from_secs(90), bad_mac()).await.expect("the scenario ends in time");
}

async fn bad_mac() {
    let clock = TestClock::new();
    let (bsf, bsm, mut terminal) = setup(&clock).await;
    let btid = terminal.client().b_tid().unwrap().to_owned();
    let smk = zn_client(bsf.addr).keys(&btid, clock.unix()()).await.unwrap().smk().clone();
    let before = terminal.card().store().clone();

    // Sealed under another key (what the BSM would never send): the store refuses its MAC (9862).
    let ts = 1;
    let forged = ltkm_9_1(&btid, ts, &Smk::from_bytes([0x77; 32]));
    let bsm_push = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = terminal.udp_addr(Interface::OmaBcast).unwrap();
    bsm_push.send_to(&forged, to).await.unwrap();
    let received = terminal.recv_ltkm(Duration::from_secs(5)).await.unwrap().expect("the LTKM arrives");
    let report = received.report.unwrap();
    assert_eq!(report.event, LtkmEvent::Refused);
    assert!(report.actions.is_empty() && received.follow_ups.is_empty(), "nothing sent, nothing asked");
    let mut buf = [0u8; 2048];
    let answer = tokio::time::timeout(Duration::from_millis(300), bsm_push.recv_from(&mut buf)).await;
    assert!(answer.is_err(), "no verification message for a forged LTKM");
    assert_eq!(terminal.card().store(), &before, "the refusal leaves the store as it was");

    // The genuine LTKM with the same TS is still taken: the forgery used nothing up.
    bsm_push.send_to(&ltkm_9_1(&btid, ts, &smk), to).await.unwrap();
    let received = terminal.recv_ltkm(Duration::from_secs(5)).await.unwrap().expect("the LTKM arrives");
    let nine = bcast_key(kd(), SekPekId { key_group: 9, key_number: 1 });
    assert_eq!(received.report.unwrap().event, LtkmEvent::Accepted { key: nine });
    tokio::time::timeout(Duration::from_secs(5), bsm_push.recv_from(&mut buf)).await.unwrap().unwrap();

    teardown(bsf, bsm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gba_me_terminal_bootstraps_again_after_a_401() {
    tokio::time::timeout(Duration::from_secs(90), rebootstrap()).await.expect("the scenario ends in time");
}

async fn rebootstrap() {
    let clock = TestClock::new();
    let (bsf, bsm, mut terminal) = setup(&clock).await;
    let first_btid = terminal.client().b_tid().unwrap().to_owned();
    subscribe(&mut terminal).await;

    // Another GBA_ME device with the same subscription bootstraps: the terminal's B-TID is gone.
    clock.advance(60);
    let other_btid = other_client_bootstraps(bsf.addr, &clock, GbaMeKeyHolder::new(card()), GbaMode::GbaMe).await;
    assert_ne!(other_btid, first_btid);

    // The next request gets 401; the terminal bootstraps again (3G AKA, new Ks in the store) and
    // the retry succeeds, the key coming under the new MUK.
    let group = bcast_key(kd(), SekPekId { key_group: 1, key_number: 0 });
    let answer = terminal.request_keys(Interface::OmaBcast, &[group]).await.unwrap();
    assert_eq!(answer.rebootstraps, 1);
    let new_btid = terminal.client().b_tid().unwrap().to_owned();
    assert!(new_btid != first_btid && new_btid != other_btid, "a third B-TID");
    assert_eq!(terminal.card().store().b_tid(), Some(new_btid.as_str()));
    let Response::Ltkm(ltkm) = &answer.response else { panic!("{answer:?}") };
    assert_eq!((ltkm.keys[0].key, ltkm.keys[0].status), (group, StatusCode::Success));
    let sek = bcast_key(kd(), SekPekId { key_group: 1, key_number: 2 });
    assert_eq!(answer.ltkms.len(), 1);
    assert_eq!(answer.ltkms[0].as_ref().unwrap().event, LtkmEvent::Accepted { key: sek });

    // Zn has GBA_ME keys for the new B-TID; the store's current MUK is their SMK, and the first
    // MUK is gone now that an LTKM verified under the new one (TS 31.102 §7.1.1.6).
    let keys = zn_client(bsf.addr).keys(&new_btid, clock.unix()()).await.unwrap();
    assert_eq!(keys.gba_type(), GbaType::GbaMe);
    let record = muk_record(&terminal);
    assert_eq!((record.current.idr.as_str(), &record.current.key), (new_btid.as_str(), keys.smk()));
    assert!(record.last_used.is_none());

    teardown(bsf, bsm).await;
}

#[tokio::test]
async fn shell_refuses_a_mode_that_does_not_suit_its_key_holder() {
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let clock = TestClock::new();
    let rng = || Box::new(SeededRandom::new([1; 32]));
    // GBA_U bootstrapping would leave Ks and the SMK in the card, where a GBA_ME terminal's LTKMs
    // never go.
    let config = shell_config(nowhere, nowhere, GbaMode::GbaU);
    let refused = TerminalShell::new(config, GbaMeKeyHolder::new(card()), clock.utc(), rng()).await;
    assert!(matches!(refused, Err(ShellError::GbaModeMismatch { mode: GbaMode::GbaU, holder: GbaType::GbaMe })));
    // GBA_ME bootstrapping needs the ME's store, which a bare card is not.
    let config = shell_config(nowhere, nowhere, GbaMode::GbaMe);
    let refused = TerminalShell::new(config, card(), clock.utc(), rng()).await;
    assert!(matches!(refused, Err(ShellError::GbaModeMismatch { mode: GbaMode::GbaMe, holder: GbaType::GbaU })));
}
