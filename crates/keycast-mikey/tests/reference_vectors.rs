//! The MIKEY messages of shared/reference/vectors.md §5–§7, decoded by the syntax layer.

use keycast_crypto::mikey::MessageKeys;
use keycast_mikey::wire::*;
use keycast_mikey::*;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap()
}

/// vectors.md §5: an RFC 3830 pre-shared-key init message (SRTP-ID map, NTP-UTC T) [computed].
const RFC3830_108: &str =
    "010005000102030401000011223344000000000b00e1d2c3b4a59687780110a0a1a2a3a4a5a6a7a8a9aaabacadaeaf
    0001002431ed10ac96a4b819490e6968662227308ead13c34d717a225d5136bc64814d416f18ad0c01
    b394851721ebbc5648dfefb187d82ed79de01eeb";

#[test]
fn rfc3830_message_decodes_verifies_and_decrypts() {
    let wire = unhex(RFC3830_108);
    assert_eq!(wire.len(), 108);
    let m = Message::decode(&wire).unwrap();
    assert_eq!(m.hdr.data_type, DataType::PskInit);
    assert_eq!(m.hdr.csb_id, 0x01020304);
    assert_eq!(m.hdr.map.srtp_entries().collect::<Vec<_>>(), [SrtpCs { policy_no: 0, ssrc: 0x11223344, roc: 0 }]);
    let [t, rand, kemac] = m.payloads.as_slice() else { panic!("three payloads expected") };
    assert_eq!(t.payload, Payload::T(Timestamp { ts_type: TsType::NtpUtc, value: 0xe1d2c3b4a5968778 }));
    let Payload::Rand(r) = rand.payload else { panic!() };
    assert_eq!(r, unhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"));
    let Payload::Kemac(k) = &kemac.payload else { panic!() };
    assert_eq!((k.encr_alg, k.mac_alg, k.encr_data.len()), (EncrAlg::AesCm128, MacAlg::HmacSha1_160, 36));
    assert_eq!(kemac.span, 47..108);

    // Keys of vectors.md §4.3 (PSK 00..0f).
    let psk: Vec<u8> = (0u8..16).collect();
    let keys = MessageKeys::derive(&psk, 0x01020304, r);
    assert!(keys.verify_mac(&[&wire[..88]], &wire[88..]));
    let mut plain = k.encr_data.to_vec();
    keys.apply_keystream(&keys.kemac_iv(0x01020304, 0xe1d2c3b4a5968778), &mut plain);
    let kd = KeyData::read_all(&plain, 51).unwrap();
    assert_eq!(kd.len(), 1);
    assert_eq!(kd[0].key_type, KeyDataType::TekSalt);
    assert_eq!(kd[0].key, unhex("101112131415161718191a1b1c1d1e1f"));
    assert_eq!(kd[0].salt.unwrap(), unhex("404142434445464748494a4b4c4d"));
    assert_eq!(kd[0].kv, KeyValidityData::Null);

    // Re-encoding reproduces every byte.
    assert_eq!(m.encode().unwrap(), wire);
}

/// vectors.md §6: the MBMS/BCAST-shaped structure (MAC not valid) [tool: tshark walks it].
const MBMS_SHAPED_66: &str = "010015000a0b0c0d00010503000f000300f11001040001000102020001150200000007010500020240
    00010000010000000000000000000000000000000000000000";

#[test]
fn mbms_shaped_structure_decodes_and_is_refused_as_stkm() {
    let wire = unhex(MBMS_SHAPED_66);
    assert_eq!(wire.len(), 66);
    let m = Message::decode(&wire).unwrap();
    assert_eq!((m.hdr.cs_count, m.hdr.map.clone()), (0, CsIdMap::Empty));
    let Payload::GeneralExt(key_id) = &m.payloads[0].payload else { panic!() };
    assert_eq!(key_id.ext_type, ExtType::KeyId);
    let ids = KeyIdExt::read(key_id.data, 14).unwrap();
    assert_eq!(ids.key_domain_id, Some(KeyDomainId([0x00, 0xf1, 0x10])));
    assert_eq!(ids.sek_pek_id, Some(SekPekId { key_group: 1, key_number: 1 }));
    assert_eq!(ids.tek_id, Some(1));
    assert_eq!(m.payloads[1].payload, Payload::T(Timestamp::counter(7)));
    let Payload::GeneralExt(bcast) = &m.payloads[2].payload else { panic!() };
    assert_eq!(split_oma_bcast(bcast.data, 0).unwrap(), (OmaBcastSubtype::Stkm, &[0x40][..]));
    assert_eq!(m.encode().unwrap(), wire);
    // As an STKM it carries no TEK (encrypted data length 0): refused by the profile.
    let err = Stkm::decode(&wire).unwrap_err();
    assert!(matches!(err, MikeyError::Profile { payload: "KEMAC", offset: 41, .. }), "{err}");
}

/// vectors.md §7: GStreamer's MIKEY header tests [code; bytes partly inferred].
#[test]
fn gstreamer_header_vectors() {
    let hdr_only = unhex("01 00 00 00 12345678 00 00");
    let m = Message::decode(&hdr_only).unwrap();
    assert_eq!((m.hdr.csb_id, m.hdr.cs_count, m.payloads.len()), (0x12345678, 0, 0));
    assert_eq!(m.encode().unwrap(), hdr_only);

    let two_cs = unhex("01 00 00 00 12345678 02 00 01 12345678 00000000 02 23456789 00000001");
    assert_eq!(two_cs.len(), 28);
    let m = Message::decode(&two_cs).unwrap();
    assert_eq!(
        m.hdr.map.srtp_entries().collect::<Vec<_>>(),
        [SrtpCs { policy_no: 1, ssrc: 0x12345678, roc: 0 }, SrtpCs { policy_no: 2, ssrc: 0x23456789, roc: 1 }]
    );

    let with_t = unhex("01 00 05 00 12345678 00 00 00 01 0102030405060708");
    assert_eq!(with_t.len(), 20);
    let m = Message::decode(&with_t).unwrap();
    assert_eq!(m.payloads[0].payload, Payload::T(Timestamp { ts_type: TsType::Ntp, value: 0x0102030405060708 }));
}

#[test]
fn every_payload_type_round_trips() {
    let dh = [0x5au8; 96];
    let sp_params = encode_sp_params(&[(0, &[1]), (13, &[0, 4])]).unwrap();
    let payloads = vec![
        Payload::T(Timestamp { ts_type: TsType::NtpUtc32, value: 9 }),
        Payload::Rand(&[1; 16]),
        Payload::Id(Id { role: None, id_type: IdType::Nai, data: b"bmsc.example.org" }),
        Payload::Id(Id { role: Some(3), id_type: IdType::Uri, data: b"sip:a@b" }),
        Payload::Cert(Cert { cert_type: 0, data: &[0x30, 0x00] }),
        Payload::Chash(Chash { hash_func: HashFunc::Md5, hash: &[7; 16] }),
        Payload::Sp(Sp { policy_no: 0, prot_type: ProtType::Srtp, params: &sp_params }),
        Payload::Err(ErrPayload { error_no: ErrorNo::InvalidTs }),
        Payload::Pke(Pke { c: 2, data: &[3; 40] }),
        Payload::Dh(Dh { group: DhGroup::Oakley1, value: &dh, kv: KeyValidityData::Spi(&[1, 2]) }),
        Payload::GeneralExt(GeneralExt { ext_type: ExtType::VendorId, data: b"vendor" }),
        Payload::V(Verification { auth_alg: MacAlg::HmacSha1_160, mac: &[9; 20] }),
        Payload::Kemac(Kemac { encr_alg: EncrAlg::Null, encr_data: &[], mac_alg: MacAlg::Null, mac: &[] }),
        Payload::Sign(Sign { s_type: 1, signature: &[4; 64] }),
    ];
    let msg = Message {
        hdr: Hdr { data_type: DataType::PkInit, v: true, prf: 0, csb_id: 42, cs_count: 0, map: CsIdMap::Empty },
        payloads: payloads.into_iter().map(|payload| Located { payload, span: 0..0 }).collect(),
    };
    let wire = msg.encode().unwrap();
    let back = Message::decode(&wire).unwrap();
    assert_eq!(back.hdr, msg.hdr);
    let got: Vec<_> = back.payloads.iter().map(|p| p.payload.clone()).collect();
    let want: Vec<_> = msg.payloads.iter().map(|p| p.payload.clone()).collect();
    assert_eq!(got, want);
    let Payload::Sp(sp) = &got[6] else { panic!() };
    assert_eq!(sp.param(13), Some(&[0, 4][..]));
}

#[test]
fn key_data_of_every_type_and_kv_type() {
    let all = [
        KeyData { key_type: KeyDataType::Tgk, key: &[1; 16], salt: None, kv: KeyValidityData::Null },
        KeyData {
            key_type: KeyDataType::TgkSalt,
            key: &[2; 16],
            salt: Some(&[3; 14]),
            kv: KeyValidityData::Spi(&[4; 4]),
        },
        KeyData {
            key_type: KeyDataType::Tek,
            key: &[5; 16],
            salt: None,
            kv: KeyValidityData::Interval { vf: &[0, 1], vt: &[0, 9] },
        },
        KeyData { key_type: KeyDataType::TekSalt, key: &[6; 16], salt: Some(&[7; 14]), kv: KeyValidityData::Null },
    ];
    let mut plain = vec![];
    for (i, kd) in all.iter().enumerate() {
        kd.encode(i + 1 < all.len(), &mut plain).unwrap();
    }
    assert_eq!(KeyData::read_all(&plain, 0).unwrap(), all);
    // Unknown KV type and a `next` other than 0/20 are refused with their offset.
    let mut bad = plain.clone();
    bad[1] = 0x05;
    assert!(KeyData::read_all(&bad, 100).unwrap_err().offset >= 100);
    bad = plain.clone();
    bad[0] = 7;
    assert!(KeyData::read_all(&bad, 0).is_err());
}
