//! Seal/open round trips and one test per refusal of the typed layer.

mod common;

use common::*;
use keycast_crypto::key_wrap;
use keycast_crypto::keys::{SekPek, Smk, Tbk, Tek};
use keycast_crypto::mikey::MessageKeys;
use keycast_mikey::*;

fn open_key(bytes: &[u8]) -> LtkmContent {
    match Ltkm::decode(bytes).unwrap().open(&smk()).unwrap() {
        OpenedLtkm::Key(c) => c,
        other => panic!("expected a key LTKM, got {other:?}"),
    }
}

#[test]
fn ltkm_streaming_round_trip() {
    let content = ltkm_streaming();
    let wire = content.seal(&smk()).unwrap();
    assert_eq!(open_key(&wire), content);
    let ltkm = Ltkm::decode(&wire).unwrap();
    assert_eq!(ltkm.srtp_policy().unwrap().roc_rate(), Some(1));
    assert_eq!(ltkm.idi(), "bmsc.example.org");
}

#[test]
fn ltkm_download_round_trip() {
    let content = ltkm_download();
    assert_eq!(open_key(&content.seal(&smk()).unwrap()), content);
}

#[test]
fn ltkm_canonical_payload_order() {
    let wire = ltkm_streaming().seal(&smk()).unwrap();
    let m = Message::decode(&wire).unwrap();
    let order: Vec<_> = m.payloads.iter().map(|p| p.payload.payload_type()).collect();
    use keycast_mikey::wire::PayloadType::*;
    assert_eq!(order, [GeneralExt, T, Rand, Id, Id, Sp, GeneralExt, Kemac]);
}

#[test]
fn ltkm_wrong_smk_fails_mac() {
    let wire = ltkm_streaming().seal(&smk()).unwrap();
    let err = Ltkm::decode(&wire).unwrap().open(&Smk::from_bytes([9; 32])).unwrap_err();
    assert_eq!(err, MikeyError::MacMismatch { message: "LTKM" });
}

#[test]
fn every_single_bit_flip_is_refused() {
    for wire in [ltkm_streaming().seal(&smk()).unwrap(), ltkm_download().seal(&smk()).unwrap()] {
        for i in 0..wire.len() * 8 {
            let mut bad = wire.clone();
            bad[i / 8] ^= 1 << (i % 8);
            if let Ok(l) = Ltkm::decode(&bad) {
                assert!(l.open(&smk()).is_err(), "bit {i} flipped still opens");
            }
        }
    }
    let wire = stkm().seal(&sek(), &RAND).unwrap();
    for i in 0..wire.len() * 8 {
        let mut bad = wire.clone();
        bad[i / 8] ^= 1 << (i % 8);
        if let Ok(s) = Stkm::decode(&bad) {
            assert!(s.open(&sek(), &RAND).is_err(), "bit {i} flipped still opens");
        }
    }
}

#[test]
fn truncation_at_every_byte_is_a_decode_error() {
    let msgs = [ltkm_streaming().seal(&smk()).unwrap(), stkm().seal(&sek(), &RAND).unwrap()];
    for wire in &msgs {
        for n in 0..wire.len() {
            assert!(Message::decode(&wire[..n]).is_err(), "prefix of {n} bytes decoded");
            assert!(Ltkm::decode(&wire[..n]).is_err());
            assert!(Stkm::decode(&wire[..n]).is_err());
        }
    }
}

#[test]
fn rejects_trailing_bytes() {
    let mut wire = stkm().seal(&sek(), &RAND).unwrap();
    wire.push(0);
    let err = Stkm::decode(&wire).unwrap_err();
    let MikeyError::Decode { source, .. } = &err else { panic!("expected a decode error, got {err}") };
    assert_eq!(source.kind, DecodeErrorKind::TrailingData { len: 1 });
}

#[test]
fn rejects_oversize_message() {
    let wire = vec![0u8; MAX_MESSAGE_LEN + 1];
    let err = Message::decode(&wire).unwrap_err();
    assert!(matches!(err.kind, DecodeErrorKind::Oversize { .. }));
}

#[test]
fn rejects_unknown_payload_type_with_offset() {
    let mut wire = stkm().seal(&sek(), &RAND).unwrap();
    wire[2] = 99; // HDR next payload
    let err = Message::decode(&wire).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::UnknownPayload(99));
    assert_eq!(err.offset, 10);
    assert!(err.to_string().contains("offset 10"), "{err}");
}

#[test]
fn stkm_round_trip_and_accessors() {
    let content = stkm();
    let wire = content.seal(&sek(), &RAND).unwrap();
    let s = Stkm::decode(&wire).unwrap();
    assert_eq!((s.tek_id(), s.ts(), s.sek_pek_id().key_group), (1, 3_900_000_001, 1));
    assert_eq!(s.open(&sek(), &RAND).unwrap(), content);
    let cached = MessageKeys::derive(sek().expose_secret(), s.csb_id(), &RAND);
    assert_eq!(s.open_with_keys(&cached).unwrap(), content);
}

#[test]
fn stkm_without_extension_and_download_form() {
    let content = StkmContent { ext: None, salt: None, ..stkm() };
    let wire = content.seal(&sek(), &RAND).unwrap();
    assert_eq!(Stkm::decode(&wire).unwrap().open(&sek(), &RAND).unwrap(), content);
}

#[test]
fn stkm_wrong_rand_fails_mac() {
    let wire = stkm().seal(&sek(), &RAND).unwrap();
    assert_eq!(
        Stkm::decode(&wire).unwrap().open(&sek(), &[0; 16]).unwrap_err(),
        MikeyError::MacMismatch { message: "STKM" }
    );
}

#[test]
fn stkm_terminal_bound_tek_unwraps_with_tbk() {
    let tbk = Tbk::from_bytes([0x33; 16]);
    let tek = Tek::from_bytes([0x44; 16]);
    let wrapped = key_wrap::wrap_16(tbk.expose_secret(), tek.expose_secret());
    let mut content = stkm();
    content.tek = TekField::WrappedByTbk(wrapped);
    let ext = content.ext.as_mut().unwrap();
    ext.protection_after_reception = ProtectionAfterReception::TerminalBound;
    ext.tbk_id = Some(0xdeadbeef);
    let wire = content.seal(&sek(), &RAND).unwrap();
    let opened = Stkm::decode(&wire).unwrap().open(&sek(), &RAND).unwrap();
    assert_eq!(opened.tek.tek(Some(&tbk)).unwrap(), tek);
    assert_eq!(opened.tek.tek(Some(&Tbk::from_bytes([0; 16]))), Err(MikeyError::TbkUnwrap));
    assert_eq!(opened.tek.tek(None), Err(MikeyError::TbkUnwrap));
}

#[test]
fn rejects_sealing_a_wrapped_tek_without_terminal_binding() {
    let mut content = stkm();
    content.tek = TekField::WrappedByTbk([0; 24]);
    assert!(matches!(content.seal(&sek(), &RAND), Err(MikeyError::Encode { .. })));
}

/// Re-MACs a modified message so that only the profile checks can refuse it.
fn remac(wire: &mut [u8], psk: &[u8], csb: u32, rand: &[u8]) {
    let keys = MessageKeys::derive(psk, csb, rand);
    let n = wire.len() - 20;
    let mac = keys.mac(&[&wire[..n]]);
    wire[n..].copy_from_slice(&mac);
}

fn profile_refusal(err: MikeyError) -> &'static str {
    match err {
        MikeyError::Profile { why, .. } => why,
        other => panic!("expected a profile refusal, got {other}"),
    }
}

#[test]
fn rejects_null_encryption() {
    let mut wire = stkm().seal(&sek(), &RAND).unwrap();
    let kemac_at = Message::decode(&wire).unwrap().payloads.last().unwrap().span.start;
    wire[kemac_at + 1] = 0;
    remac(&mut wire, sek().expose_secret(), 0x0a0b0c0d, &RAND);
    assert!(profile_refusal(Stkm::decode(&wire).unwrap_err()).contains("NULL"));
}

#[test]
fn rejects_null_mac() {
    let wire = stkm().seal(&sek(), &RAND).unwrap();
    let mut bad = wire[..wire.len() - 21].to_vec();
    bad.push(0); // MAC alg NULL, no MAC
    assert!(profile_refusal(Stkm::decode(&bad).unwrap_err()).contains("NULL"));
}

#[test]
fn rejects_duplicate_t_payload() {
    // Build HDR ‖ T ‖ T ‖ ... by inserting a second T after the first one.
    let wire = stkm().seal(&sek(), &RAND).unwrap();
    let m = Message::decode(&wire).unwrap();
    let t = &m.payloads[1];
    assert!(matches!(t.payload, Payload::T(_)));
    let mut bad = wire[..t.span.end].to_vec();
    let mut second = wire[t.span.clone()].to_vec();
    bad[t.span.start] = 5; // first T now announces a T
    second[0] = wire[t.span.start];
    bad.extend_from_slice(&second);
    bad.extend_from_slice(&wire[t.span.end..]);
    let err = Stkm::decode(&bad).unwrap_err();
    assert_eq!(profile_refusal(err.clone()), "appears more than once");
    assert!(err.to_string().contains("offset"), "{err}");
}

#[test]
fn rejects_rand_in_stkm() {
    let wire = stkm().seal(&sek(), &RAND).unwrap();
    let m = Message::decode(&wire).unwrap();
    let t = &m.payloads[1];
    let mut bad = wire[..t.span.end].to_vec();
    bad[t.span.start] = 11; // T announces RAND
    bad.extend_from_slice(&[wire[t.span.start], 16]);
    bad.extend_from_slice(&RAND);
    bad.extend_from_slice(&wire[t.span.end..]);
    assert_eq!(profile_refusal(Stkm::decode(&bad).unwrap_err()), "payload not allowed in this message");
}

#[test]
fn rejects_key_number_zero_in_stkm() {
    let mut c = stkm();
    c.sek_pek_id.key_number = 0;
    assert!(c.seal(&sek(), &RAND).is_err());
    let mut wire = stkm().seal(&sek(), &RAND).unwrap();
    // HDR (10) + EXT header (4) + Key Domain entry (5) + MSK ID type/len (2) + Key Group (2)
    wire[10 + 4 + 5 + 2 + 2..][..2].copy_from_slice(&[0, 0]);
    assert!(profile_refusal(Stkm::decode(&wire).unwrap_err()).contains("Key Number 0"));
}

#[test]
fn rejects_tek_id_zero_and_ffff() {
    for bad_id in [0u16, 0xffff] {
        let mut wire = stkm().seal(&sek(), &RAND).unwrap();
        wire[10 + 4 + 5 + 6 + 2..][..2].copy_from_slice(&bad_id.to_be_bytes());
        assert!(profile_refusal(Stkm::decode(&wire).unwrap_err()).contains("TEK ID"));
    }
}

#[test]
fn rejects_key_group_zero() {
    let mut c = ltkm_download();
    c.sek_pek_id.key_group = 0;
    assert!(c.seal(&smk()).is_err());
}

#[test]
fn rejects_stkm_header_with_srtp_map() {
    let mut wire = stkm().seal(&sek(), &RAND).unwrap();
    wire[9] = 0; // map type SRTP-ID with #CS 0
    assert!(profile_refusal(Stkm::decode(&wire).unwrap_err()).contains("empty map"));
}

#[test]
fn rejects_sp_in_download_ltkm() {
    let mut c = ltkm_download();
    c.srtp_policy = Some(SrtpPolicy::keycast(None));
    assert!(c.seal(&smk()).is_err());
}

#[test]
fn rejects_ts_window_without_policy_extension() {
    let mut c = ltkm_download();
    c.validity = KeyValidity::TsWindow { ts_low: 1, ts_high: 2 };
    assert!(c.seal(&smk()).is_err());
}

#[test]
fn rejects_sequ_ffff() {
    let mut c = ltkm_download();
    c.validity = KeyValidity::TekIdWindow { seq_l: 0, seq_u: 0xffff };
    assert!(c.seal(&smk()).is_err());
}

#[test]
fn rejects_ltkm_without_ids() {
    let wire = ltkm_download().seal(&smk()).unwrap();
    let m = Message::decode(&wire).unwrap();
    // Drop IDr: IDi then announces KEMAC.
    let idi = &m.payloads[3];
    let idr = &m.payloads[4];
    let mut bad = wire[..idr.span.start].to_vec();
    bad[idi.span.start] = wire[idr.span.start];
    bad.extend_from_slice(&wire[idr.span.end..]);
    assert!(profile_refusal(Ltkm::decode(&bad).unwrap_err()).contains("IDr"));
}

#[test]
fn invalidation_and_validity_update() {
    let delivery = ltkm_streaming();
    let inval = delivery.invalidation(8);
    let opened = open_key(&inval.seal(&smk()).unwrap());
    assert!(opened.validity.is_invalidation());
    assert!(opened.key.is_none());
    assert_eq!((opened.rand, opened.csb_id), (delivery.rand, delivery.csb_id));

    let update = ltkm_download().validity_update(9, KeyValidity::TekIdWindow { seq_l: 10, seq_u: 2000 });
    let opened = open_key(&update.seal(&smk()).unwrap());
    assert_eq!(opened.validity, KeyValidity::TekIdWindow { seq_l: 10, seq_u: 2000 });
    assert!(!opened.validity.is_invalidation() && opened.key.is_none());
}

#[test]
fn solicited_pull_round_trip() {
    let pull = SolicitedPull {
        csb_id: 5,
        key_domain_id: key_domain(),
        key_group: 1,
        ts: 12,
        rand: [7; 16],
        idi: "bmsc.example.org".into(),
        idr: "btid@bsf.example.org".into(),
    };
    let wire = pull.seal(&smk()).unwrap();
    let ltkm = Ltkm::decode(&wire).unwrap();
    assert!(ltkm.is_solicited_pull());
    assert_eq!(ltkm.open(&smk()).unwrap(), OpenedLtkm::SolicitedPull(pull));
    // KEMAC with encrypted data length 0: next, alg, 00 00, MAC alg, MAC.
    assert_eq!(&wire[wire.len() - 25..wire.len() - 20], &[0, 1, 0, 0, 1]);
}

#[test]
fn rejects_key_number_zero_with_key_data() {
    let mut wire = ltkm_download().seal(&smk()).unwrap();
    wire[10 + 4 + 5 + 2 + 2..][..2].copy_from_slice(&[0, 0]);
    assert!(profile_refusal(Ltkm::decode(&wire).unwrap_err()).contains("solicited pull"));
}

#[test]
fn verification_message_round_trip() {
    let wire = ltkm_streaming().seal(&smk()).unwrap();
    let ltkm = Ltkm::decode(&wire).unwrap();
    let keys = ltkm.message_keys(&smk());
    let vm = VerificationMessage::build(&ltkm, &keys).unwrap();
    let decoded = VerificationMessage::decode(&vm).unwrap();
    assert_eq!((decoded.csb_id(), decoded.ts(), decoded.idr()), (ltkm.csb_id(), ltkm.ts(), ltkm.idr()));
    decoded.verify(&ltkm, &keys).unwrap();
    let other = MessageKeys::derive(&[0; 32], ltkm.csb_id(), ltkm.rand());
    assert_eq!(decoded.verify(&ltkm, &other), Err(MikeyError::MacMismatch { message: "verification message" }));
    // Answering another LTKM (different TS) is refused before the MAC.
    let wire2 = LtkmContent { ts: 8, ..ltkm_streaming() }.seal(&smk()).unwrap();
    assert!(decoded.verify(&Ltkm::decode(&wire2).unwrap(), &keys).is_err());
}

#[test]
fn extension_of_another_subtype_is_skipped_but_macd() {
    // An STKM carrying an OMA BCAST LTKM-subtype extension: skipped, still covered by the MAC.
    let mut c = stkm();
    c.ext = None;
    let wire = c.seal(&sek(), &RAND).unwrap();
    let m = Message::decode(&wire).unwrap();
    let t = &m.payloads[1];
    let mut bad = wire[..t.span.end].to_vec();
    bad[t.span.start] = 21;
    bad.extend_from_slice(&[1, 5, 0, 2, 1, 0]); // next KEMAC, OMA BCAST, len 2, subtype LTKM, flags 0
    bad.extend_from_slice(&wire[t.span.end..]);
    remac(&mut bad, sek().expose_secret(), c.csb_id, &RAND);
    let s = Stkm::decode(&bad).unwrap();
    assert!(s.ext().is_none());
    assert_eq!(s.open(&sek(), &RAND).unwrap(), c);
}

#[test]
fn sek_type_is_not_printed() {
    let c = ltkm_streaming();
    let shown = format!("{c:?}");
    assert!(!shown.contains("115, 105"), "key bytes leaked: {shown}");
    assert!(format!("{:?}", SekPek::from_bytes([0xab; 16])).contains('…'));
}
