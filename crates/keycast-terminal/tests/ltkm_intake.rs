//! LTKM intake decisions, one test each: verification out for V = 1, solicited pull → key
//! request for the right group, card refusals mapped to actions, malformed datagrams as typed
//! errors.

mod common;

use std::net::SocketAddr;

use common::*;
use keycast_card::Card as _;
use keycast_card::card::{CardOpError, TransportError};
use keycast_card::error::CardError;
use keycast_crypto::keys::{SekPek, Tek, TekSalt};
use keycast_mikey::{SekPekId, StkmContent, TekField, VerificationMessage};
use keycast_provisioning::sprov::BcastKeyId;
use keycast_terminal::key_holder::GbaMeKeyHolder;
use keycast_terminal::ltkm_intake::{
    IntakeAction, IntakeError, Interface, LtkmEvent, LtkmIntake, LtkmOrigin, VerificationTarget, bcast_key,
    on_stkm_refusal,
};

fn from() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn udp(interface: Interface) -> LtkmOrigin {
    LtkmOrigin::Udp { from: from(), interface }
}

fn key(group: u16, number: u16) -> BcastKeyId {
    bcast_key(kd(), SekPekId { key_group: group, key_number: number })
}

#[test]
fn v1_ltkm_from_udp_sends_the_verification_message_back_to_its_source() {
    let mut card = card_with_muk(BTID);
    let mut intake = LtkmIntake::new(BSM);
    let bytes = ltkm(BTID, 1, 1, 1, true);
    let report = intake.handle(&mut card, &bytes, udp(Interface::OmaBcast), Some(BTID), now()).unwrap();
    assert_eq!(report.event, LtkmEvent::Accepted { key: key(1, 1) });
    let [IntakeAction::SendVerification { to, message }] = report.actions.as_slice() else {
        panic!("one verification message expected: {report:?}")
    };
    assert_eq!(*to, VerificationTarget::ReplyTo { to: from(), interface: Interface::OmaBcast });
    let vm = VerificationMessage::decode(message).unwrap();
    assert_eq!((vm.ts(), vm.idr(), vm.csb_id()), (1, BTID, 0x0102_0304));
}

#[test]
fn v0_ltkm_is_taken_silently() {
    let mut card = card_with_muk(BTID);
    let mut intake = LtkmIntake::new(BSM);
    let report =
        intake.handle(&mut card, &ltkm(BTID, 1, 1, 1, false), udp(Interface::Mbms), Some(BTID), now()).unwrap();
    assert_eq!(report.event, LtkmEvent::Accepted { key: key(1, 1) });
    assert!(report.actions.is_empty());
}

#[test]
fn v1_ltkm_from_an_answer_sends_the_verification_to_the_bsm() {
    let mut card = card_with_muk(BTID);
    let mut intake = LtkmIntake::new(BSM);
    let origin = LtkmOrigin::Response(Interface::OmaBcast);
    let report = intake.handle(&mut card, &ltkm(BTID, 1, 1, 1, true), origin, Some(BTID), now()).unwrap();
    assert!(matches!(
        report.actions.as_slice(),
        [IntakeAction::SendVerification { to: VerificationTarget::Bsm(Interface::OmaBcast), .. }]
    ));
}

#[test]
fn solicited_pull_asks_for_the_current_key_of_its_group_without_verification() {
    let mut card = card_with_muk(BTID);
    let mut intake = LtkmIntake::new(BSM);
    let report = intake.handle(&mut card, &pull(BTID, 7, 1), udp(Interface::OmaBcast), Some(BTID), now()).unwrap();
    assert_eq!(report.event, LtkmEvent::SolicitedPull { key: key(7, 0) });
    assert_eq!(report.actions, [IntakeAction::RequestKeys { interface: Interface::OmaBcast, keys: vec![key(7, 0)] }]);

    // A second pull for the group within the hold-off costs no second request…
    let again = intake.handle(&mut card, &pull(BTID, 7, 2), udp(Interface::OmaBcast), Some(BTID), at(T0 + 5)).unwrap();
    assert_eq!(again.event, LtkmEvent::SolicitedPull { key: key(7, 0) });
    assert!(again.actions.is_empty());
    // …one after it does; on the MBMS socket the request goes to the MBMS interface.
    let later = intake.handle(&mut card, &pull(BTID, 7, 3), udp(Interface::Mbms), Some(BTID), at(T0 + 11)).unwrap();
    assert_eq!(later.actions, [IntakeAction::RequestKeys { interface: Interface::Mbms, keys: vec![key(7, 0)] }]);
}

#[test]
fn solicited_pull_with_a_bad_mac_is_dropped() {
    let mut card = card_with_muk(BTID);
    let mut intake = LtkmIntake::new(BSM);
    let mut bytes = pull(BTID, 7, 1);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let report = intake.handle(&mut card, &bytes, udp(Interface::OmaBcast), Some(BTID), now()).unwrap();
    assert_eq!(report.event, LtkmEvent::Refused);
    assert!(report.actions.is_empty());
}

#[test]
fn replayed_ltkm_is_dropped_without_verification() {
    let mut card = card_with_muk(BTID);
    let mut intake = LtkmIntake::new(BSM);
    let bytes = ltkm(BTID, 1, 1, 5, true);
    intake.handle(&mut card, &bytes, udp(Interface::OmaBcast), Some(BTID), now()).unwrap();
    let report = intake.handle(&mut card, &bytes, udp(Interface::OmaBcast), Some(BTID), now()).unwrap();
    assert_eq!(report.event, LtkmEvent::Replay);
    assert!(report.actions.is_empty());
}

#[test]
fn ltkm_under_an_unknown_btid_asks_for_the_key_under_the_current_one() {
    let mut card = card_with_muk(BTID);
    let mut intake = LtkmIntake::new(BSM);
    let report = intake
        .handle(&mut card, &ltkm("stale@bsf", 3, 2, 1, true), udp(Interface::OmaBcast), Some(BTID), now())
        .unwrap();
    assert_eq!(report.event, LtkmEvent::KeyNotFound { key: key(3, 2) });
    assert_eq!(report.actions, [IntakeAction::RequestKeys { interface: Interface::OmaBcast, keys: vec![key(3, 2)] }]);
}

#[test]
fn ltkm_under_the_previous_muk_asks_for_the_key_without_verification() {
    let mut card = card_with_muk(BTID);
    let mut intake = LtkmIntake::new(BSM);
    // An LTKM verifies under the first MUK, so that MUK becomes "last used" when a new one comes.
    intake.handle(&mut card, &ltkm(BTID, 1, 1, 1, false), udp(Interface::OmaBcast), Some(BTID), now()).unwrap();
    card.transport_mut()
        .usim_mut()
        .mbms
        .install_muk(BSM, BTID2, keycast_crypto::keys::Smk::from_bytes([0x77; 32]))
        .unwrap();
    let report =
        intake.handle(&mut card, &ltkm(BTID, 1, 2, 2, true), udp(Interface::OmaBcast), Some(BTID2), now()).unwrap();
    assert_eq!(report.event, LtkmEvent::PreviousMuk { key: key(1, 2) });
    assert_eq!(report.actions, [IntakeAction::RequestKeys { interface: Interface::OmaBcast, keys: vec![key(1, 2)] }]);
}

#[test]
fn ltkm_of_another_bsm_never_reaches_the_card() {
    let mut card = card_with_muk(BTID);
    let mut intake = LtkmIntake::new("other.example.org");
    let report =
        intake.handle(&mut card, &ltkm(BTID, 1, 1, 1, true), udp(Interface::OmaBcast), Some(BTID), now()).unwrap();
    assert_eq!(report.event, LtkmEvent::ForeignBsm);
    // The card never saw it: the same LTKM is still fresh for it.
    assert!(card.msk_update(&ltkm(BTID, 1, 1, 1, true)).unwrap().is_some());
}

#[test]
fn rejects_malformed_datagrams_with_a_typed_error() {
    let mut card = card_with_muk(BTID);
    let mut intake = LtkmIntake::new(BSM);
    let good = ltkm(BTID, 1, 1, 1, true);
    // Every truncation of a good LTKM, garbage, and the empty datagram: an error, never a panic.
    for len in 0..good.len() {
        let r = intake.handle(&mut card, &good[..len], udp(Interface::OmaBcast), Some(BTID), now());
        assert!(matches!(r, Err(IntakeError::Malformed(_))), "length {len}: {r:?}");
    }
    let r = intake.handle(&mut card, &[0xff; 64], udp(Interface::OmaBcast), Some(BTID), now());
    assert!(matches!(r, Err(IntakeError::Malformed(_))));
    let huge = vec![1u8; keycast_mikey::MAX_MESSAGE_LEN + 1];
    let r = intake.handle(&mut card, &huge, udp(Interface::OmaBcast), Some(BTID), now());
    assert!(matches!(r, Err(IntakeError::TooLarge(_))));
    // Trailing bytes after a good LTKM are refused too (nothing smuggled behind it).
    let mut long = good.clone();
    long.push(0);
    let r = intake.handle(&mut card, &long, udp(Interface::OmaBcast), Some(BTID), now());
    assert!(r.is_err(), "{r:?}");
    // The card was never asked: the good LTKM is still fresh.
    assert!(intake.handle(&mut card, &good, udp(Interface::OmaBcast), Some(BTID), now()).is_ok());
}

#[test]
fn stkm_key_not_found_asks_for_that_key() {
    let content = StkmContent {
        csb_id: 1,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 4, key_number: 9 },
        tek_id: 1,
        ts: 100,
        ext: None,
        tek: TekField::Clear(Tek::from_bytes([1; 16])),
        salt: Some(TekSalt::from_bytes([2; 14])),
    };
    let stkm = content.seal(&SekPek::from_bytes([3; 16]), &[4; 16]).unwrap();
    let mut card = card_with_muk(BTID);
    let err = card.mtk_generation(&stkm).unwrap_err();
    assert_eq!(on_stkm_refusal(&stkm, &err), Some(key(4, 9)));
    assert_eq!(on_stkm_refusal(&stkm, &CardOpError::Card(CardError::Mac)), None);
    let link = CardOpError::Transport(TransportError::Reader("gone".into()));
    assert_eq!(on_stkm_refusal(&stkm, &link), None);
    assert_eq!(on_stkm_refusal(b"junk", &err), None);
}

/// A GBA_ME terminal's keys: a USIM without MBMS keys and the ME's store with the MUK for
/// [`BSM`] under `btid`.
fn gba_me_holder(btid: &str) -> GbaMeKeyHolder<keycast_card::ApduCard<keycast_card::Emulator>> {
    let mut card = card_with_muk(btid);
    card.transport_mut().usim_mut().mbms = Default::default();
    let mut holder = GbaMeKeyHolder::new(card);
    holder.store_mut().mbms.install_muk(BSM, btid, smk()).unwrap();
    holder
}

#[test]
fn gba_me_store_takes_a_v1_ltkm_and_the_verification_goes_back() {
    let mut holder = gba_me_holder(BTID);
    let mut intake = LtkmIntake::new(BSM);
    let report =
        intake.handle(&mut holder, &ltkm(BTID, 1, 1, 1, true), udp(Interface::Mbms), Some(BTID), now()).unwrap();
    assert_eq!(report.event, LtkmEvent::Accepted { key: key(1, 1) });
    let [IntakeAction::SendVerification { to, message }] = report.actions.as_slice() else {
        panic!("one verification message expected: {report:?}")
    };
    assert_eq!(*to, VerificationTarget::ReplyTo { to: from(), interface: Interface::Mbms });
    assert_eq!(VerificationMessage::decode(message).unwrap().ts(), 1);
    let id = SekPekId { key_group: 1, key_number: 1 };
    assert!(holder.store().mbms.msk(kd(), id).is_some(), "in the ME's store");
    assert!(holder.card().transport().usim().mbms.msk(kd(), id).is_none(), "not in the USIM");
}

#[test]
fn gba_me_store_refuses_an_ltkm_whose_mac_fails() {
    let mut holder = gba_me_holder(BTID);
    let before = holder.store().clone();
    let mut intake = LtkmIntake::new(BSM);
    let mut bytes = ltkm(BTID, 1, 1, 1, true);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let report = intake.handle(&mut holder, &bytes, udp(Interface::OmaBcast), Some(BTID), now()).unwrap();
    assert_eq!(report.event, LtkmEvent::Refused);
    assert!(report.actions.is_empty());
    assert_eq!(holder.store(), &before);
}

#[test]
fn gba_me_store_without_a_muk_asks_for_the_key() {
    let mut holder = GbaMeKeyHolder::new(card_with_muk(BTID));
    let mut intake = LtkmIntake::new(BSM);
    let report =
        intake.handle(&mut holder, &ltkm(BTID, 1, 1, 1, true), udp(Interface::OmaBcast), Some(BTID), now()).unwrap();
    assert_eq!(report.event, LtkmEvent::KeyNotFound { key: key(1, 1) }, "the USIM's MUK is never tried");
    assert_eq!(report.actions, [IntakeAction::RequestKeys { interface: Interface::OmaBcast, keys: vec![key(1, 1)] }]);
}
