//! Property tests: generated messages round-trip; arbitrary and mutated bytes never panic.

mod common;

use common::*;
use keycast_crypto::keys::{SekPek, Smk, Tek, TekSalt};
use keycast_mikey::wire::*;
use keycast_mikey::*;
use proptest::collection::vec;
use proptest::prelude::*;

/// Owned stand-ins for the borrowed payload views, so proptest can generate them.
#[derive(Debug, Clone)]
enum P {
    T(u8, u64),
    Rand(Vec<u8>),
    Id(Option<u8>, u8, Vec<u8>),
    Cert(u8, Vec<u8>),
    Chash(bool, Vec<u8>),
    V(bool, Vec<u8>),
    Sp(u8, u8, Vec<(u8, Vec<u8>)>),
    Err(u8),
    Pke(u8, Vec<u8>),
    Dh(u8, Vec<u8>, u8, Vec<u8>, Vec<u8>),
    Ext(u8, Vec<u8>),
    Kemac(u8, Vec<u8>, bool, Vec<u8>),
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn payload() -> impl Strategy<Value = P> {
    prop_oneof![
        (0u8..4, any::<u64>()).prop_map(|(t, v)| P::T(t, if t >= 2 { v & 0xffff_ffff } else { v })),
        bytes(40).prop_map(P::Rand),
        (proptest::option::of(any::<u8>()), 0u8..3, bytes(60)).prop_map(|(r, t, d)| P::Id(r, t, d)),
        (any::<u8>(), bytes(60)).prop_map(|(t, d)| P::Cert(t, d)),
        (any::<bool>(), vec(any::<u8>(), 20))
            .prop_map(|(sha1, h)| P::Chash(sha1, if sha1 { h } else { h[..16].to_vec() })),
        (any::<bool>(), vec(any::<u8>(), 20)).prop_map(|(mac, m)| P::V(mac, if mac { m } else { vec![] })),
        (any::<u8>(), any::<u8>(), vec((any::<u8>(), bytes(8)), 0..6)).prop_map(|(n, t, p)| P::Sp(n, t, p)),
        any::<u8>().prop_map(P::Err),
        (0u8..4, bytes(50)).prop_map(|(c, d)| P::Pke(c, d)),
        (0u8..3, any::<u8>(), 0u8..3, bytes(8), bytes(8)).prop_map(|(g, fill, kv, a, b)| {
            let len = DhGroup::from(g).value_len().unwrap();
            P::Dh(g, vec![fill; len], kv, a, b)
        }),
        (any::<u8>(), bytes(60)).prop_map(|(t, d)| P::Ext(t, d)),
        (0u8..3, bytes(60), any::<bool>(), vec(any::<u8>(), 20)).prop_map(|(e, d, mac, m)| P::Kemac(
            e,
            d,
            mac,
            if mac { m } else { vec![] }
        )),
    ]
}

fn kv<'a>(kv: u8, a: &'a [u8], b: &'a [u8]) -> KeyValidityData<'a> {
    match kv {
        0 => KeyValidityData::Null,
        1 => KeyValidityData::Spi(a),
        _ => KeyValidityData::Interval { vf: a, vt: b },
    }
}

fn view(p: &P) -> Payload<'_> {
    match p {
        P::T(t, v) => Payload::T(Timestamp { ts_type: TsType::from(*t), value: *v }),
        P::Rand(r) => Payload::Rand(r),
        P::Id(role, t, d) => Payload::Id(Id { role: *role, id_type: IdType::from(*t), data: d }),
        P::Cert(t, d) => Payload::Cert(Cert { cert_type: *t, data: d }),
        P::Chash(sha1, h) => {
            Payload::Chash(Chash { hash_func: if *sha1 { HashFunc::Sha1 } else { HashFunc::Md5 }, hash: h })
        }
        P::V(mac, m) => Payload::V(Verification { auth_alg: MacAlg::from(u8::from(*mac)), mac: m }),
        P::Sp(..) => unreachable!("SP needs its parameter bytes; see `views`"),
        P::Err(e) => Payload::Err(ErrPayload { error_no: ErrorNo::from(*e) }),
        P::Pke(c, d) => Payload::Pke(Pke { c: *c, data: d }),
        P::Dh(g, v, k, a, b) => Payload::Dh(Dh { group: DhGroup::from(*g), value: v, kv: kv(*k, a, b) }),
        P::Ext(t, d) => Payload::GeneralExt(GeneralExt { ext_type: ExtType::from(*t), data: d }),
        P::Kemac(e, d, mac, m) => Payload::Kemac(Kemac {
            encr_alg: EncrAlg::from(*e),
            encr_data: d,
            mac_alg: MacAlg::from(u8::from(*mac)),
            mac: m,
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn syntax_round_trip(
        data_type in 0u8..7, v in any::<bool>(), csb in any::<u32>(),
        map in proptest::option::of(vec((any::<u8>(), any::<u32>(), any::<u32>()), 0..4)),
        ps in vec(payload(), 0..10),
    ) {
        let sp_raw: Vec<Vec<u8>> = ps.iter().map(|p| match p {
            P::Sp(_, _, params) => {
                let refs: Vec<(u8, &[u8])> = params.iter().map(|(t, v)| (*t, v.as_slice())).collect();
                encode_sp_params(&refs).unwrap()
            }
            _ => vec![],
        }).collect();
        let payloads = ps.iter().zip(&sp_raw).map(|(p, raw)| {
            let payload = match p {
                P::Sp(n, t, _) => Payload::Sp(Sp { policy_no: *n, prot_type: ProtType::from(*t), params: raw }),
                other => view(other),
            };
            Located { payload, span: 0..0 }
        }).collect();
        let entries: Vec<SrtpCs> = map.iter().flatten().map(|&(policy_no, ssrc, roc)| SrtpCs { policy_no, ssrc, roc }).collect();
        let raw_map = encode_srtp_map(&entries);
        let hdr = Hdr {
            data_type: DataType::from(data_type), v, prf: 0, csb_id: csb, cs_count: entries.len() as u8,
            map: if map.is_some() { CsIdMap::SrtpId(&raw_map) } else { CsIdMap::Empty },
        };
        let msg = Message { hdr, payloads };
        let wire = msg.encode().unwrap();
        let back = Message::decode(&wire).unwrap();
        prop_assert_eq!(&back.hdr, &msg.hdr);
        prop_assert_eq!(back.payloads.len(), msg.payloads.len());
        for (a, b) in back.payloads.iter().zip(&msg.payloads) {
            prop_assert_eq!(&a.payload, &b.payload);
            prop_assert_eq!(&wire[a.span.clone()][1..].is_empty(), &false);
        }
        prop_assert_eq!(back.encode().unwrap(), wire);
    }

    #[test]
    fn ltkm_round_trip(
        csb in any::<u32>(), v in any::<bool>(), ts in any::<u32>(), rand in any::<[u8; 16]>(),
        group in 1u16.., number in 1u16.., streaming in any::<bool>(), r in proptest::option::of(1u16..),
        policy in proptest::option::of((0u8..6, any::<u16>(), any::<u16>())), tbk in proptest::option::of(any::<u32>()),
        key in proptest::option::of(any::<[u8; 16]>()), lo in any::<u32>(), hi in any::<u32>(),
        smk_bytes in any::<[u8; 32]>(), idi in "[a-z.]{1,30}", idr in "[A-Za-z0-9+/=@.]{1,60}",
    ) {
        let ext_present = policy.is_some() || tbk.is_some();
        let ext = ext_present.then(|| LtkmExt {
            security_policy: policy.map(|(c, p, w)| SecurityPolicyExt {
                policy: SecurityPolicy::from_code(c).unwrap(), play_back_counter: p, view_counter: w,
            }),
            tbk_id: tbk,
            consumption_reporting: v,
        });
        let validity = if policy.is_some() {
            KeyValidity::TsWindow { ts_low: lo, ts_high: hi }
        } else {
            KeyValidity::TekIdWindow { seq_l: lo as u16, seq_u: (hi as u16).min(0xfffe) }
        };
        let content = LtkmContent {
            csb_id: csb, verification_requested: v,
            srtp_cs: streaming.then_some(SrtpCs { policy_no: 0, ssrc: lo, roc: hi }),
            key_domain_id: key_domain(), sek_pek_id: SekPekId { key_group: group, key_number: number },
            ts, rand, idi, idr,
            srtp_policy: streaming.then(|| SrtpPolicy::keycast(r)),
            ext, key: key.map(SekPek::from_bytes), validity,
        };
        let smk = Smk::from_bytes(smk_bytes);
        let wire = content.seal(&smk).unwrap();
        prop_assert_eq!(Ltkm::decode(&wire).unwrap().open(&smk).unwrap(), OpenedLtkm::Key(content));
    }

    #[test]
    fn stkm_round_trip(
        csb in any::<u32>(), ts in any::<u32>(), group in 1u16.., number in 1u16.., tek_id in 1u16..0xffff,
        tek in any::<[u8; 16]>(), salt in proptest::option::of(any::<[u8; 14]>()), ext in any::<bool>(),
        par in 0u8..2, tpp in 0u8..4, auth in any::<bool>(), program in proptest::option::of(any::<u32>()),
        rand in bytes(32), sek in any::<[u8; 16]>(),
    ) {
        let ext = ext.then(|| StkmExt {
            protection_after_reception: if par == 0 { ProtectionAfterReception::MayRecord } else { ProtectionAfterReception::ServiceProtectionOnly },
            traffic_protection_protocol: [TrafficProtectionProtocol::IpsecEsp, TrafficProtectionProtocol::Srtp, TrafficProtectionProtocol::IsmaCryp, TrafficProtectionProtocol::Dcf][usize::from(tpp)],
            traffic_authentication: auth,
            tbk_id: None,
            access_criteria: program.map(|p| vec![AccessDescriptor::ProgramId(p), AccessDescriptor::ParentalRating { system: 1, min_age: 18 }]),
        });
        let content = StkmContent {
            csb_id: csb, key_domain_id: key_domain(), sek_pek_id: SekPekId { key_group: group, key_number: number },
            tek_id, ts, ext, tek: TekField::Clear(Tek::from_bytes(tek)), salt: salt.map(TekSalt::from_bytes),
        };
        let sek = SekPek::from_bytes(sek);
        let wire = content.seal(&sek, &rand).unwrap();
        prop_assert_eq!(Stkm::decode(&wire).unwrap().open(&sek, &rand).unwrap(), content);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in bytes(400)) {
        let _ = Message::decode(&data);
        if let Ok(l) = Ltkm::decode(&data) { let _ = l.open(&smk()); }
        if let Ok(s) = Stkm::decode(&data) { let _ = s.open(&sek(), &RAND); }
        let _ = VerificationMessage::decode(&data);
        let _ = KeyData::read_all(&data, 0);
    }

    #[test]
    fn mutated_messages_never_panic(which in 0usize..3, edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6)) {
        let mut wire = match which {
            0 => ltkm_streaming().seal(&smk()).unwrap(),
            1 => ltkm_download().seal(&smk()).unwrap(),
            _ => stkm().seal(&sek(), &RAND).unwrap(),
        };
        for (at, byte, op) in edits {
            if wire.is_empty() { break; }
            let i = at.index(wire.len());
            match op {
                0 => wire[i] = byte,
                1 => { wire.remove(i); }
                _ => wire.insert(i, byte),
            }
        }
        if let Ok(m) = Message::decode(&wire) {
            // The syntax layer keeps every byte, so a decoded message re-encodes identically.
            prop_assert_eq!(m.encode().unwrap(), wire.clone());
        }
        if let Ok(l) = Ltkm::decode(&wire) { let _ = l.open(&smk()); }
        if let Ok(s) = Stkm::decode(&wire) { let _ = s.open(&sek(), &RAND); }
    }
}
