//! The card over APDUs: the full GBA + MBMS flow with the published vectors, the OMA BCAST audit
//! and parental control commands (INS `1B`), the Local Key Establishment availability check,
//! refusals with their status words, block chaining, and the equivalence of the typed core and
//! `ApduCard<Emulator>`.

use keycast_card::apdu::{EfGbabp, EfGbanlRecord, EfMskRecord, EfMukRecord, StatusWord};
use keycast_card::mbms::{AuditCounters, TekOut};
use keycast_card::sac::LocalKeyStatus;
use keycast_card::usim::{AkaAnswer, LocalKeyRequest, Usim, local_key_request_mac};
use keycast_card::{ApduCard, Card, CardError, CardOpError, Emulator, Transport, TransportError};
use keycast_crypto::gba::{self, LocalKeyParams, NafId};
use keycast_crypto::keys::{KsIntNaf, SekPek, Smk, Tek, TekSalt};
use keycast_crypto::milenage::{Milenage, gba_u_autn_star};
use keycast_mikey::{
    KeyDomainId, LtkmContent, ProtectionAfterReception, SekPekId, StkmContent, StkmExt, TekField,
    TrafficProtectionProtocol,
};

mod common;

use common::{AMF, BTID, IDI, IMPI, LIFETIME, SQN, arr, k, opc, rand, usim};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.trim().replace(' ', "")).unwrap()
}

/// Published MIKEY vectors (vectors/mikey; SMK = Ks_int_NAF of reference vectors §2).
fn vector(name: &str) -> Vec<u8> {
    let path = format!("{}/../../vectors/mikey/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    h(&std::fs::read_to_string(path).unwrap())
}

fn autn() -> [u8; 16] {
    Milenage::new(&k(), &opc()).build_autn(SQN, AMF, &rand())
}

fn autn_star() -> [u8; 16] {
    let m = Milenage::new(&k(), &opc());
    let (_, _, ik, _) = m.f2345(&rand());
    gba_u_autn_star(&autn(), &ik)
}

/// Ks_int_NAF of reference vectors §2 (the SMK of the published vectors).
fn ks_int_naf() -> KsIntNaf {
    KsIntNaf::from_bytes(arr("5ecf80629e0becb2def8d9b3cb80ae3f99ab18f9c50f49fd5da0e6cfb6d0ee5f"))
}

fn smk() -> Smk {
    Smk::from_bytes(*ks_int_naf().expose_secret())
}

fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

fn apdu_card(usim: Usim) -> ApduCard<Emulator> {
    ApduCard::new(Emulator::new(usim))
}

/// Bootstraps and derives the MBMS NAF key through any card; checks the vectors on the way.
fn bootstrap(card: &mut impl Card) {
    let AkaAnswer::SuccessGba { res } = card.gba_bootstrap(&rand(), &autn_star()).unwrap() else {
        panic!("expected RES")
    };
    assert_eq!(hex::encode(res.expose_secret()), "a54211d5e3ba50be", "vectors §2: RES with LSB flipped");
    card.write_gba_bp(BTID, LIFETIME).unwrap();
    let ext = card.gba_naf_derivation(NafId::mbms(IDI).as_bytes(), IMPI).unwrap();
    assert_eq!(
        hex::encode(ext.expose_secret()),
        "79d8098e4b9ef12c858a0da3471f6b2d29b4cbb549500dcb3c88154562de340d",
        "vectors §2: Ks_ext_NAF"
    );
}

fn sw_of(e: CardOpError) -> u16 {
    match e {
        CardOpError::Card(e) => e.status_word(),
        other => panic!("expected a card refusal, got {other:?}"),
    }
}

/// A streaming STKM under the published streaming key with the given protection.
fn stkm(tek_id: u16, ts: u32, par: ProtectionAfterReception) -> Vec<u8> {
    StkmContent {
        csb_id: 0x0a0b0c0d,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
        tek_id,
        ts,
        ext: Some(StkmExt {
            protection_after_reception: par,
            traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
            traffic_authentication: true,
            tbk_id: None,
            access_criteria: None,
        }),
        tek: TekField::Clear(Tek::from_bytes([0x11; 16])),
        salt: Some(TekSalt::from_bytes([0x22; 14])),
    }
    .seal(
        &SekPek::from_bytes(*b"sixteen byte sek"),
        &[0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf],
    )
    .unwrap()
}

fn lke_request(iccid: &str, good_mac: bool) -> LocalKeyRequest {
    let mut req = LocalKeyRequest {
        naf_id: NafId::mbms(IDI).as_bytes().to_vec(),
        terminal_id: b"IMEI3548".to_vec(),
        terminal_appli_id: b"platform".to_vec(),
        uicc_appli_id: b"platform".to_vec(),
        randx: vec![0x42; 16],
        counter_limit: 5u128.to_be_bytes(),
        mac: [0; 16],
    };
    let ks_local = gba::ks_local(
        &ks_int_naf(),
        &LocalKeyParams {
            b_tid: BTID,
            terminal_id: &req.terminal_id,
            iccid: iccid.as_bytes(),
            terminal_appli_id: &req.terminal_appli_id,
            uicc_appli_id: &req.uicc_appli_id,
            randx: &req.randx,
            counter_limit: &req.counter_limit,
        },
    )
    .unwrap();
    if good_mac {
        req.mac = local_key_request_mac(&ks_local, &req, iccid.as_bytes());
    }
    req
}

// ---------------------------------------------------------------------------- full flow

#[test]
fn full_flow_over_apdus_with_the_published_vectors() {
    let mut card = apdu_card(usim());
    assert_eq!(card.read_gba_bp().unwrap(), None);
    bootstrap(&mut card);
    assert!(card.transport_mut().take_dirty());
    assert!(!card.transport_mut().take_dirty());

    assert_eq!(
        card.read_gba_bp().unwrap(),
        Some(EfGbabp { rand: rand(), b_tid: Some(BTID.into()), lifetime: Some(LIFETIME.into()) })
    );
    assert_eq!(
        card.read_gbanl_records().unwrap(),
        [EfGbanlRecord { naf_id: NafId::mbms(IDI).as_bytes().to_vec(), b_tid: BTID.into() }]
    );
    assert_eq!(card.read_muk_records().unwrap(), [EfMukRecord { idr: BTID.into(), idi: IDI.into(), ts: 0 }]);
    assert!(!card.transport_mut().take_dirty(), "reads change nothing");

    // An LTKM sealed here with the §2 Ks_int_NAF equals the published one.
    let ltkm = vector("ltkm-streaming-ppt-playback");
    let content = keycast_mikey::Ltkm::decode(&ltkm).unwrap().open(&smk()).unwrap();
    let keycast_mikey::OpenedLtkm::Key(content) = content else { panic!("a key LTKM") };
    let sealed: Vec<u8> = LtkmContent::seal(&content, &smk()).unwrap();
    assert_eq!(sealed, ltkm);

    let verification = card.msk_update(&ltkm).unwrap().expect("V = 1");
    assert_eq!(verification, vector("verification-message"));
    assert!(card.transport_mut().take_dirty());
    assert_eq!(card.read_muk_records().unwrap()[0].ts, 7);
    assert_eq!(
        card.read_msk_records().unwrap(),
        [EfMskRecord { key_domain_id: kd(), pairs: vec![(SekPekId { key_group: 1, key_number: 1 }, 0)] }]
    );

    let tek = card.mtk_generation(&vector("stkm-streaming-srtp")).unwrap();
    assert_eq!(tek, TekOut::Clear { tek: Tek::from_bytes([0x11; 16]), salt: Some(TekSalt::from_bytes([0x22; 14])) });
    assert_eq!(card.read_msk_records().unwrap()[0].pairs[0].1, 3_900_000_001, "TS stored in EF_MSK");

    let TekOut::TbkWrapped { wrapped, salt } = card.mtk_generation(&vector("stkm-terminal-bound")).unwrap() else {
        panic!("a TBK-wrapped TEK")
    };
    assert_eq!(hex::encode(wrapped), "837198d28d34b40f6d01c4c877ed116a1c21875c123d7b70");
    assert_eq!(salt, Some(TekSalt::from_bytes([0x6d; 14])));

    card.msk_deletion(kd(), 1).unwrap();
    assert_eq!(card.read_msk_records().unwrap(), []);
    card.muk_deletion(IDI, BTID).unwrap();
    assert_eq!(card.read_muk_records().unwrap(), []);
    assert_eq!(card.read_gbanl_records().unwrap(), []);
    assert_eq!(card.read_gba_bp().unwrap(), None, "EF_GBABP := FF");
}

#[test]
fn authenticate_3g_over_apdus_answers_set_1() {
    let mut card = apdu_card(usim());
    let AkaAnswer::Success3g { res, ck, ik } = card.authenticate_3g(&rand(), &autn()).unwrap() else {
        panic!("expected success")
    };
    assert_eq!(hex::encode(res.expose_secret()), "a54211d5e3ba50bf");
    assert_eq!(hex::encode(ck.expose_secret()), "b40ba9a3c58b2a05bbf0d987b21bf8cb");
    assert_eq!(hex::encode(ik.expose_secret()), "f769bcd751044604127672711c6d3441");
    // The same SQN again is stale: AUTS.
    assert!(matches!(card.authenticate_3g(&rand(), &autn()).unwrap(), AkaAnswer::SyncFailure { .. }));
}

// ------------------------------------------------------------------------ refusals

fn bootstrapped() -> ApduCard<Emulator> {
    let mut card = apdu_card(usim());
    bootstrap(&mut card);
    card
}

#[test]
fn rejects_mtk_generation_without_key_6a88() {
    let mut card = bootstrapped();
    assert_eq!(
        card.mtk_generation(&vector("stkm-streaming-srtp")).unwrap_err(),
        CardOpError::Card(CardError::KeyNotFound)
    );
}

#[test]
fn rejects_wrong_mac_9862() {
    let mut card = bootstrapped();
    assert!(card.transport_mut().take_dirty());
    let mut ltkm = vector("ltkm-streaming-ppt-playback");
    *ltkm.last_mut().unwrap() ^= 1;
    assert_eq!(card.msk_update(&ltkm).unwrap_err(), CardOpError::Card(CardError::Mac));
    assert!(!card.transport_mut().take_dirty(), "a refusal changes nothing");
}

#[test]
fn rejects_ltkm_replay_9865() {
    let mut card = bootstrapped();
    card.msk_update(&vector("ltkm-streaming-ppt-playback")).unwrap();
    assert_eq!(sw_of(card.msk_update(&vector("ltkm-streaming-ppt-playback")).unwrap_err()), 0x9865);
}

#[test]
fn rejects_content_protected_tek_without_secure_channel_6982_and_wraps_it_after_lke() {
    let mut card = bootstrapped();
    card.msk_update(&vector("ltkm-streaming-ppt-playback")).unwrap();
    let protected = stkm(1, 3_900_000_001, ProtectionAfterReception::MayRecord);
    assert_eq!(sw_of(card.mtk_generation(&protected).unwrap_err()), 0x6982);
    let iccid = card.transport().usim().identity.iccid.clone();
    assert_eq!(sw_of(card.local_key_establishment(&lke_request(&iccid, false)).unwrap_err()), 0x9862);
    let verification = card.local_key_establishment(&lke_request(&iccid, true)).unwrap();
    assert_eq!(verification.len(), 16);
    assert!(matches!(card.mtk_generation(&protected).unwrap(), TekOut::ChannelWrapped(_)));
}

#[test]
fn rejects_naf_derivation_before_bootstrap_6985_and_write_before_bootstrap_6985() {
    let mut card = apdu_card(usim());
    assert_eq!(sw_of(card.gba_naf_derivation(NafId::mbms(IDI).as_bytes(), IMPI).unwrap_err()), 0x6985);
    assert_eq!(sw_of(card.write_gba_bp(BTID, LIFETIME).unwrap_err()), 0x6985);
}

#[test]
fn rejects_values_too_long_for_a_short_apdu_locally_6700() {
    let mut card = bootstrapped();
    assert_eq!(sw_of(card.gba_naf_derivation(&[b'a'; 250], IMPI).unwrap_err()), 0x6700);
    assert_eq!(card.transport().usim().naf_keys.len(), 1);
}

/// Raw APDUs against a selected emulator.
fn raw() -> Emulator {
    let mut e = Emulator::new(usim());
    assert_eq!(e.transmit_bytes(&h("00a4040c07a0000000871002")), [0x90, 0x00]);
    e
}

fn send(e: &mut Emulator, apdu: &str) -> StatusWord {
    let r = e.transmit_bytes(&h(apdu));
    StatusWord(u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]]))
}

#[test]
fn rejects_bad_lc_6700() {
    assert_eq!(send(&mut raw(), "00880081 22 10 0102"), StatusWord::WRONG_LENGTH);
}

#[test]
fn rejects_unknown_ins_6d00_and_cla_6e00() {
    let mut e = raw();
    assert_eq!(send(&mut e, "0012000000"), StatusWord::INS_NOT_SUPPORTED);
    assert_eq!(send(&mut e, "80a4040c07a0000000871002"), StatusWord::CLA_NOT_SUPPORTED);
}

#[test]
fn rejects_bad_p2_6a86() {
    let mut e = raw();
    let data = format!("22 10{} 10{}", "00".repeat(16), "00".repeat(16));
    assert_eq!(send(&mut e, &format!("00880082 {data} 00")), StatusWord::INCORRECT_P1_P2, "VGCS context");
    assert_eq!(send(&mut e, &format!("00880181 {data} 00")), StatusWord::INCORRECT_P1_P2, "P1 01");
    assert_eq!(send(&mut e, "00898081 04 53020200"), StatusWord::INCORRECT_P1_P2, "3G on the odd INS");
    assert_eq!(send(&mut e, "00898085 04 53020200"), StatusWord::INCORRECT_MAC, "P2 85 is right: the STKM is refused");
}

#[test]
fn rejects_unknown_mbms_mode_9864_and_gba_tag_9864() {
    let mut e = raw();
    assert_eq!(send(&mut e, "00898085 04 53020700"), StatusWord::SECURITY_CONTEXT_NOT_SUPPORTED);
    assert_eq!(send(&mut e, "00880084 02 df00 00"), StatusWord::SECURITY_CONTEXT_NOT_SUPPORTED);
}

#[test]
fn rejects_truncated_or_oversize_tlv_6700() {
    let mut e = raw();
    assert_eq!(send(&mut e, "00898085 03 538201"), StatusWord::WRONG_LENGTH, "header cut");
    assert_eq!(send(&mut e, "00898085 07 5384000000010100"), StatusWord::WRONG_LENGTH, "4-byte length");
    assert_eq!(send(&mut e, "00898085 04 53010203"), StatusWord::WRONG_LENGTH, "more than announced");
    assert_eq!(send(&mut e, "00898085 07 5305 03 00f110 00"), StatusWord::WRONG_LENGTH, "MSK deletion too short");
}

#[test]
fn rejects_chain_continuation_without_chain_6a86() {
    let mut e = raw();
    assert_eq!(send(&mut e, "00890085 02 0102"), StatusWord::INCORRECT_P1_P2);
    assert_eq!(send(&mut e, "0089a08500"), StatusWord::INCORRECT_P1_P2, "nothing to fetch");
    // A chain interrupted by another command is gone.
    assert_eq!(send(&mut e, "00898085 03 531001"), StatusWord::MORE_DATA_EXPECTED);
    assert_eq!(send(&mut e, "00a4000c026fd7"), StatusWord::SUCCESS);
    assert_eq!(send(&mut e, "00890085 02 0102"), StatusWord::INCORRECT_P1_P2);
}

#[test]
fn rejects_file_problems_with_iso_words() {
    let mut e = raw();
    assert_eq!(send(&mut e, "00a4000c026f00"), StatusWord::FILE_NOT_FOUND);
    assert_eq!(send(&mut e, "00b0000000"), StatusWord::NO_CURRENT_EF);
    assert_eq!(send(&mut e, "00a4000c026fd7"), StatusWord::SUCCESS);
    assert_eq!(send(&mut e, "00b0000000"), StatusWord::INCOMPATIBLE_FILE_STRUCTURE);
    assert_eq!(send(&mut e, "00b2210400"), StatusWord::RECORD_NOT_FOUND, "record 33 of 32");
    assert_eq!(send(&mut e, "00b2010300"), StatusWord::INCORRECT_P1_P2);
    assert_eq!(send(&mut e, "00a4000c026fd6"), StatusWord::SUCCESS);
    assert_eq!(send(&mut e, "00b000ff00"), StatusWord::WRONG_PARAMETERS, "offset past the end");
    assert_eq!(send(&mut e, "00d60011 02 0000"), StatusWord::CONDITIONS_OF_USE_NOT_SATISFIED, "no bootstrap");
}

#[test]
fn rejects_update_of_gbabp_that_changes_rand() {
    let mut card = bootstrapped();
    let e = card.transport_mut();
    assert_eq!(send(e, "00a4000c026fd6"), StatusWord::SUCCESS);
    assert_eq!(send(e, "00d60001 01 00"), StatusWord::INCORRECT_DATA);
    assert_eq!(e.usim().gba.as_ref().unwrap().b_tid.as_deref(), Some(BTID));
}

// ------------------------------------------------- OMA BCAST (INS 1B) and LKE availability

/// A bootstrapped card holding the published streaming key, after one live STKM.
fn with_streaming_key() -> ApduCard<Emulator> {
    let mut card = bootstrapped();
    card.msk_update(&vector("ltkm-streaming-ppt-playback")).unwrap();
    card.mtk_generation(&vector("stkm-streaming-srtp")).unwrap();
    card
}

const KEY_1_1: SekPekId = SekPekId { key_group: 1, key_number: 1 };

#[test]
fn audit_over_apdus_reads_the_counters_the_typed_core_keeps() {
    let mut card = with_streaming_key();
    card.transport_mut().take_dirty();
    let counters = card.audit(kd(), KEY_1_1).unwrap();
    assert_eq!(counters, card.transport().usim().audit(kd(), KEY_1_1).unwrap());
    assert_eq!(counters.live_stkms, 1);
    assert!(!card.transport_mut().take_dirty(), "an audit changes nothing");
}

#[test]
fn audit_answer_is_the_chosen_ae_layout() {
    let mut e = with_streaming_key().into_transport();
    let answer = e.transmit_bytes(&h("001b0001 07 00f110 00010001 00"));
    let expected = keycast_card::apdu::encode_audit_answer(&e.usim().audit(kd(), KEY_1_1).unwrap()).unwrap();
    assert_eq!(&answer[..answer.len() - 2], expected.as_slice());
    assert_eq!(&answer[..4], [0xae, 0x1f, 0x80, 0x1d], "PPV program `85 00`: no pay-per-view lock");
    assert_eq!(sw_bytes(&answer), 0x9000);
}

#[test]
fn rejects_audit_of_an_unknown_key_6a88() {
    let mut card = with_streaming_key();
    assert_eq!(sw_of(card.audit(kd(), SekPekId { key_group: 1, key_number: 2 }).unwrap_err()), 0x6a88);
    assert_eq!(send(&mut raw(), "001b0001 07 00f110 00010001 00"), StatusWord::REFERENCED_DATA_NOT_FOUND);
}

#[test]
fn rejects_audit_with_malformed_data_6700() {
    let mut e = raw();
    assert_eq!(send(&mut e, "001b0001 06 00f110 000100 00"), StatusWord::WRONG_LENGTH, "6 bytes");
    assert_eq!(send(&mut e, "001b0001 08 00f110 00010001 ff 00"), StatusWord::WRONG_LENGTH, "8 bytes");
    assert_eq!(send(&mut e, "001b0001 00"), StatusWord::WRONG_LENGTH, "no data");
}

#[test]
fn rejects_unknown_bcast_mode_or_p1_6a86_and_before_selection_6985() {
    let mut e = raw();
    assert_eq!(send(&mut e, "001b0002 00"), StatusWord::INCORRECT_P1_P2, "SPE_SIG is not parental control");
    assert_eq!(send(&mut e, "001b0003 00"), StatusWord::INCORRECT_P1_P2, "REC audit not supported");
    assert_eq!(send(&mut e, "001b0104 00"), StatusWord::INCORRECT_P1_P2, "P1 01");
    assert_eq!(send(&mut e, "001b8004 00"), StatusWord::SUCCESS, "P1 80: a first and only block");
    let mut fresh = Emulator::new(usim());
    assert_eq!(send(&mut fresh, "001b0004 00"), StatusWord::CONDITIONS_OF_USE_NOT_SATISFIED);
}

#[test]
fn parental_limit_reads_over_apdus_as_ae_88() {
    let mut e = raw();
    assert_eq!(e.transmit_bytes(&h("001b0004 00")), h("ae02 8800 9000"), "no restriction");
    e.usim_mut().mbms.parental_limit = Some(16);
    assert_eq!(e.transmit_bytes(&h("001b0004 00")), h("ae03 880110 9000"));
    assert_eq!(ApduCard::new(e).parental_limit().unwrap(), Some(16));
}

#[test]
fn rejects_setting_the_parental_limit_without_the_secure_channel_6982() {
    let mut card = bootstrapped();
    card.transport_mut().take_dirty();
    assert_eq!(sw_of(card.set_parental_limit(Some(12)).unwrap_err()), 0x6982);
    assert_eq!(sw_of(card.set_parental_limit(None).unwrap_err()), 0x6982);
    assert_eq!(card.parental_limit().unwrap(), None);
    assert!(!card.transport_mut().take_dirty());
    assert_eq!(send(card.transport_mut(), "001b0004 05 ae03 88010c"), StatusWord::SECURITY_STATUS_NOT_SATISFIED);
}

#[test]
fn parental_limit_is_set_over_apdus_once_the_secure_channel_is_established() {
    let mut card = bootstrapped();
    let iccid = card.transport().usim().identity.iccid.clone();
    card.local_key_establishment(&lke_request(&iccid, true)).unwrap();
    card.transport_mut().take_dirty();
    card.set_parental_limit(Some(12)).unwrap();
    assert!(card.transport_mut().take_dirty(), "the setting is card state to persist");
    assert_eq!(card.parental_limit().unwrap(), Some(12));
    assert_eq!(card.transport().usim().mbms.parental_limit, Some(12));
    card.set_parental_limit(None).unwrap();
    assert_eq!(card.parental_limit().unwrap(), None);
}

#[test]
fn rejects_malformed_parental_setting_6700_and_6a80() {
    let mut card = bootstrapped();
    let iccid = card.transport().usim().identity.iccid.clone();
    card.local_key_establishment(&lke_request(&iccid, true)).unwrap();
    let e = card.transport_mut();
    assert_eq!(send(e, "001b0004 06 ae04 88020c0c"), StatusWord::WRONG_LENGTH, "two-byte limit");
    assert_eq!(send(e, "001b0004 05 ae03 8a010c"), StatusWord::INCORRECT_DATA, "tag 8A");
    assert_eq!(send(e, "001b0004 05 7303 88010c"), StatusWord::INCORRECT_DATA, "container 73");
    assert_eq!(send(e, "001b0004 05 ae05 88010c"), StatusWord::WRONG_LENGTH, "container longer than its data");
    assert_eq!(send(e, "001b0004 07 ae05 88010c 8800"), StatusWord::WRONG_LENGTH, "a second 88");
    assert_eq!(e.usim().mbms.parental_limit, None);
}

#[test]
fn local_key_availability_check_over_apdus() {
    let mut card = bootstrapped();
    let naf = NafId::mbms(IDI);
    let check = |card: &mut ApduCard<Emulator>, terminal: &[u8]| {
        card.local_key_available(naf.as_bytes(), terminal, b"platform", b"platform").unwrap()
    };
    assert_eq!(check(&mut card, b"IMEI3548"), LocalKeyStatus::NotEstablished);
    let iccid = card.transport().usim().identity.iccid.clone();
    card.local_key_establishment(&lke_request(&iccid, true)).unwrap();
    card.transport_mut().take_dirty();
    assert_eq!(check(&mut card, b"IMEI3548"), LocalKeyStatus::Available);
    assert_eq!(check(&mut card, b"IMEI0000"), LocalKeyStatus::NotEstablished);
    assert!(!card.transport_mut().take_dirty(), "the check changes nothing");
}

#[test]
fn local_key_availability_check_answers_53_03_db_01_status() {
    let mut e = bootstrapped().into_transport();
    let data = keycast_card::apdu::encode_local_key_check(&keycast_card::sac::LocalKeyIds {
        naf_id: NafId::mbms(IDI).as_bytes().to_vec(),
        terminal_id: b"IMEI3548".to_vec(),
        terminal_appli_id: b"platform".to_vec(),
        uicc_appli_id: b"platform".to_vec(),
    })
    .unwrap();
    let mut cmd = h("00898086");
    cmd.push(data.len() as u8);
    cmd.extend_from_slice(&data);
    assert_eq!(sw_bytes(&e.transmit_bytes(&cmd)), 0x62f3);
    assert_eq!(e.transmit_bytes(&h("0089a08600")), h("5303 db01 00 9000"));
}

#[test]
fn rejects_availability_check_without_the_naf_key_6a88_and_a_partial_derivation_6700() {
    let mut card = apdu_card(usim());
    let naf = NafId::mbms(IDI);
    assert_eq!(
        sw_of(card.local_key_available(naf.as_bytes(), b"IMEI3548", b"platform", b"platform").unwrap_err()),
        0x6a88
    );
    // The four identifiers and RANDx, but no Counter Limit or MAC.
    let mut e = raw();
    assert_eq!(send(&mut e, "00898086 0f 730d 8001aa 8101bb 8201cc 8301dd 8401ee"), StatusWord::WRONG_LENGTH);
}

// ------------------------------------------------------------------------ chaining

/// Records every exchange.
struct Recorder<T> {
    inner: T,
    log: Vec<(Vec<u8>, Vec<u8>)>,
}

impl<T: Transport> Transport for Recorder<T> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let answer = self.inner.transmit(command)?;
        self.log.push((command.to_vec(), answer.clone()));
        Ok(answer)
    }
}

fn sw_bytes(answer: &[u8]) -> u16 {
    u16::from_be_bytes([answer[answer.len() - 2], answer[answer.len() - 1]])
}

#[test]
fn chains_an_ltkm_in_small_blocks_both_ways() {
    let mut plain = bootstrapped().into_transport();
    plain.take_dirty();
    let mut card = ApduCard::new(Recorder { inner: plain.with_block_size(16), log: vec![] }).with_block_size(16);
    let ltkm = vector("ltkm-streaming-ppt-playback");
    card.select_usim().unwrap();
    card.transport_mut().log.clear();
    let verification = card.msk_update(&ltkm).unwrap().unwrap();
    assert_eq!(verification, vector("verification-message"));

    let log = &card.transport().log;
    let sent: Vec<(u8, u16)> = log.iter().map(|(c, a)| (c[2], sw_bytes(a))).collect();
    let command_blocks = (ltkm.len() + 1 + 3).div_ceil(16); // 53 81 L ‖ mode ‖ LTKM
    let response_blocks = (vector("verification-message").len() + 1 + 2).div_ceil(16); // 53 L ‖ DB ‖ message
    assert_eq!(sent.len(), command_blocks + response_blocks);
    assert_eq!(sent[0], (0x80, 0x63f1));
    assert!(sent[1..command_blocks - 1].iter().all(|s| *s == (0x00, 0x63f1)));
    assert_eq!(sent[command_blocks - 1], (0x00, 0x62f3));
    assert_eq!(sent[command_blocks], (0xa0, 0x62f1));
    assert!(sent[command_blocks + 1..sent.len() - 1].iter().all(|s| *s == (0x20, 0x62f1)));
    assert_eq!(sent[sent.len() - 1], (0x20, 0x9000));
    assert!(log.iter().all(|(c, a)| c.len() <= 5 + 16 && a.len() <= 16 + 2));
}

#[test]
fn chains_more_than_255_bytes_at_the_default_block_size() {
    let mut card = ApduCard::new(Recorder { inner: bootstrapped().into_transport(), log: vec![] });
    card.select_usim().unwrap();
    card.transport_mut().log.clear();
    // An LTKM-sized message of 600 bytes: three blocks, then MIKEY validation refuses it.
    assert_eq!(sw_of(card.msk_update(&[0x42; 600]).unwrap_err()), 0x9862);
    let p1s: Vec<u8> = card.transport().log.iter().map(|(c, _)| c[2]).collect();
    assert_eq!(p1s, [0x80, 0x00, 0x00]);
}

// ------------------------------------------------------------------------ equivalence

/// The typed core as a `Card` (the shapes of the trait, refusals as `CardOpError::Card`).
struct Typed(Usim);

impl Card for Typed {
    fn authenticate_3g(&mut self, rand: &[u8; 16], autn: &[u8; 16]) -> Result<AkaAnswer, CardOpError> {
        Ok(self.0.authenticate_3g(rand, autn)?)
    }
    fn gba_bootstrap(&mut self, rand: &[u8; 16], autn: &[u8; 16]) -> Result<AkaAnswer, CardOpError> {
        Ok(self.0.gba_bootstrap(rand, autn)?)
    }
    fn write_gba_bp(&mut self, b_tid: &str, lifetime: &str) -> Result<(), CardOpError> {
        Ok(self.0.write_gba_bp(b_tid, lifetime)?)
    }
    fn gba_naf_derivation(&mut self, naf_id: &[u8], impi: &str) -> Result<keycast_crypto::keys::KsExtNaf, CardOpError> {
        Ok(self.0.gba_naf_derivation(naf_id, impi)?)
    }
    fn msk_update(&mut self, ltkm: &[u8]) -> Result<Option<Vec<u8>>, CardOpError> {
        Ok(self.0.msk_update(ltkm)?.verification)
    }
    fn mtk_generation(&mut self, stkm: &[u8]) -> Result<TekOut, CardOpError> {
        Ok(self.0.mtk_generation(stkm)?.tek)
    }
    fn msk_deletion(&mut self, key_domain_id: KeyDomainId, key_group: u16) -> Result<(), CardOpError> {
        Ok(self.0.msk_deletion(key_domain_id, key_group)?)
    }
    fn muk_deletion(&mut self, idi: &str, idr: &str) -> Result<(), CardOpError> {
        Ok(self.0.muk_deletion(idi, idr)?)
    }
    fn local_key_establishment(&mut self, req: &LocalKeyRequest) -> Result<[u8; 16], CardOpError> {
        Ok(self.0.local_key_establishment(req)?)
    }
    fn local_key_available(
        &mut self,
        naf_id: &[u8],
        terminal_id: &[u8],
        terminal_appli_id: &[u8],
        uicc_appli_id: &[u8],
    ) -> Result<LocalKeyStatus, CardOpError> {
        Ok(self.0.local_key_available(naf_id, terminal_id, terminal_appli_id, uicc_appli_id)?)
    }
    fn audit(&mut self, key_domain_id: KeyDomainId, sek_pek_id: SekPekId) -> Result<AuditCounters, CardOpError> {
        Ok(self.0.audit(key_domain_id, sek_pek_id)?)
    }
    fn parental_limit(&mut self) -> Result<Option<u8>, CardOpError> {
        Ok(self.0.parental_limit())
    }
    fn set_parental_limit(&mut self, limit: Option<u8>) -> Result<(), CardOpError> {
        Ok(self.0.set_parental_limit(limit)?)
    }
}

/// One operation's result in a comparable shape: the value, or the refusal's status word.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Aka(AkaAnswer),
    Unit,
    Key(keycast_crypto::keys::KsExtNaf),
    Verification(Option<Vec<u8>>),
    Tek(TekOut),
    Lke([u8; 16]),
    KeyStatus(LocalKeyStatus),
    Audit(AuditCounters),
    Parental(Option<u8>),
    Refused(u16),
}

fn outcome<T>(r: Result<T, CardOpError>, f: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => f(v),
        Err(e) => Outcome::Refused(sw_of(e)),
    }
}

fn script(card: &mut dyn Card, iccid: &str) -> Vec<Outcome> {
    let mut tampered = vector("ltkm-streaming-ppt-playback");
    *tampered.last_mut().unwrap() ^= 0x80;
    let mut bad_autn = autn_star();
    bad_autn[15] ^= 1;
    let naf = NafId::mbms(IDI);
    let key_1_1 = SekPekId { key_group: 1, key_number: 1 };
    let mut out = vec![
        outcome(card.local_key_available(naf.as_bytes(), b"IMEI3548", b"platform", b"platform"), Outcome::KeyStatus),
        outcome(card.audit(kd(), key_1_1), Outcome::Audit),
        outcome(card.parental_limit(), Outcome::Parental),
        outcome(card.set_parental_limit(Some(12)), |()| Outcome::Unit),
        outcome(card.gba_naf_derivation(naf.as_bytes(), IMPI), Outcome::Key),
        outcome(card.write_gba_bp(BTID, LIFETIME), |()| Outcome::Unit),
        outcome(card.gba_bootstrap(&rand(), &bad_autn), Outcome::Aka),
        outcome(card.gba_bootstrap(&rand(), &autn_star()), Outcome::Aka),
        outcome(card.gba_naf_derivation(naf.as_bytes(), IMPI), Outcome::Key),
        outcome(card.write_gba_bp(BTID, LIFETIME), |()| Outcome::Unit),
        outcome(card.gba_naf_derivation(naf.as_bytes(), IMPI), Outcome::Key),
        outcome(card.mtk_generation(&vector("stkm-streaming-srtp")), Outcome::Tek),
        outcome(card.msk_update(&tampered), Outcome::Verification),
        outcome(card.msk_update(&[0x01, 0x02, 0x03]), Outcome::Verification),
    ];
    for name in [
        "ltkm-streaming-ppt-playback",
        "ltkm-streaming-ppt-playback",
        "ltkm-download-mbms",
        "ltkm-user-ppv-tbk",
        "ltkm-validity-update",
    ] {
        out.push(outcome(card.msk_update(&vector(name)), Outcome::Verification));
    }
    for name in ["stkm-streaming-srtp", "stkm-streaming-srtp", "stkm-terminal-bound", "stkm-download-dcf"] {
        out.push(outcome(card.mtk_generation(&vector(name)), Outcome::Tek));
    }
    let protected = stkm(3, 3_900_000_010, ProtectionAfterReception::MustNotRecord);
    let check = |card: &mut dyn Card, terminal: &[u8]| {
        outcome(card.local_key_available(naf.as_bytes(), terminal, b"platform", b"platform"), Outcome::KeyStatus)
    };
    out.extend([
        outcome(card.audit(kd(), key_1_1), Outcome::Audit),
        outcome(card.audit(kd(), SekPekId { key_group: 9, key_number: 9 }), Outcome::Audit),
        outcome(card.mtk_generation(&protected), Outcome::Tek),
        check(card, b"IMEI3548"),
        outcome(card.set_parental_limit(Some(12)), |()| Outcome::Unit),
        outcome(card.local_key_establishment(&lke_request(iccid, false)), Outcome::Lke),
        check(card, b"IMEI3548"),
        outcome(card.local_key_establishment(&lke_request(iccid, true)), Outcome::Lke),
        check(card, b"IMEI3548"),
        check(card, b"IMEI0000"),
        outcome(card.set_parental_limit(Some(12)), |()| Outcome::Unit),
        outcome(card.parental_limit(), Outcome::Parental),
        outcome(card.mtk_generation(&protected), Outcome::Tek),
        outcome(card.audit(kd(), key_1_1), Outcome::Audit),
        outcome(card.msk_update(&vector("solicited-pull")), Outcome::Verification),
        outcome(card.msk_update(&vector("ltkm-invalidation")), Outcome::Verification),
        outcome(
            card.mtk_generation(&stkm(4, 3_900_000_020, ProtectionAfterReception::ServiceProtectionOnly)),
            Outcome::Tek,
        ),
        outcome(card.msk_deletion(kd(), 1), |()| Outcome::Unit),
        outcome(card.msk_deletion(kd(), 1), |()| Outcome::Unit),
        outcome(card.mtk_generation(&vector("stkm-streaming-srtp")), Outcome::Tek),
        outcome(card.muk_deletion(IDI, "someone-else"), |()| Outcome::Unit),
        outcome(card.muk_deletion(IDI, BTID), |()| Outcome::Unit),
        outcome(card.muk_deletion(IDI, BTID), |()| Outcome::Unit),
        outcome(card.msk_update(&vector("ltkm-streaming-ppt-playback")), Outcome::Verification),
        outcome(card.gba_naf_derivation(naf.as_bytes(), IMPI), Outcome::Key),
        outcome(card.authenticate_3g(&rand(), &autn()), Outcome::Aka),
        outcome(card.authenticate_3g(&rand(), &autn()), Outcome::Aka),
    ]);
    out
}

#[test]
fn typed_core_and_apdus_give_identical_results() {
    let mut typed = Typed(usim());
    let iccid = typed.0.identity.iccid.clone();
    let mut card = apdu_card(usim());
    let a = script(&mut typed, &iccid);
    let b = script(&mut card, &iccid);
    assert_eq!(a, b);
    assert_eq!(&typed.0, card.transport().usim(), "same card state afterwards");

    // The script reaches both successes and refusals of every kind asked for.
    let words: Vec<u16> =
        a.iter().filter_map(|o| if let Outcome::Refused(sw) = o { Some(*sw) } else { None }).collect();
    for sw in [0x6985, 0x9862, 0x6a88, 0x9865, 0x6982] {
        assert!(words.contains(&sw), "{sw:04X} not reached: {words:04X?}");
    }
    assert!(a.iter().any(|o| matches!(o, Outcome::Verification(Some(_)))));
    assert!(a.iter().any(|o| matches!(o, Outcome::Tek(TekOut::Clear { .. }))));
    assert!(a.iter().any(|o| matches!(o, Outcome::Tek(TekOut::TbkWrapped { .. }))));
    assert!(a.iter().any(|o| matches!(o, Outcome::Tek(TekOut::ChannelWrapped(_)))));
    assert!(a.iter().any(|o| matches!(o, Outcome::Lke(_))));
    assert!(a.iter().any(|o| matches!(o, Outcome::Aka(AkaAnswer::SyncFailure { .. }))));
    assert!(a.iter().any(|o| matches!(o, Outcome::Audit(c) if c.live_stkms > 0)));
    assert!(a.contains(&Outcome::Parental(Some(12))));
    for status in [LocalKeyStatus::NotEstablished, LocalKeyStatus::Available] {
        assert!(a.contains(&Outcome::KeyStatus(status)), "{status:?} not reached");
    }
}

#[test]
fn emulator_answers_any_bytes_with_a_status_word() {
    let mut e = raw();
    let mut seed = 0x1234_5678u32;
    for _ in 0..5000 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let len = (seed % 40) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|i| (seed.rotate_left(i as u32) >> 3) as u8).collect();
        if len > 1 {
            // Keep many commands on the interesting instructions.
            bytes[1] = [0x88, 0x89, 0xa4, 0xb0, 0xb2, 0xd6][(seed % 6) as usize];
        }
        if len > 0 {
            bytes[0] &= 0x03;
        }
        assert!(e.transmit_bytes(&bytes).len() >= 2);
    }
}
