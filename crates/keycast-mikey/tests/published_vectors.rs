//! The published MBMS / OMA BCAST MIKEY vectors under `vectors/mikey/`: each message as hex with
//! a JSON file of every key, derived key and field. This test seals each case and compares it
//! with the hex, then decodes the hex and opens it with the key read from the JSON.
//!
//! Regenerate after a deliberate change of the wire profile with
//! `KEYCAST_WRITE_VECTORS=1 cargo test -p keycast-mikey --test published_vectors`.

mod common;

use std::path::PathBuf;

use common::*;
use keycast_crypto::key_wrap;
use keycast_crypto::keys::{SekPek, Smk, Tbk, Tek, TekSalt};
use keycast_crypto::mikey::{CS_ID_PSK, PSK_AUTH, PSK_ENCR, PSK_SALT, label, prf};
use keycast_mikey::*;
use serde_json::{Value, json};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../vectors/mikey")
}

fn h(b: &[u8]) -> String {
    hex::encode(b)
}

/// The keys RFC 3830 §4.1.4 derives from a pre-shared key, and the KEMAC IV (§4.2.3).
fn derived(psk: &[u8], csb: u32, rand: &[u8], ts: u32) -> Value {
    let mut e = [0u8; 16];
    let mut a = [0u8; 20];
    let mut s = [0u8; 14];
    prf(psk, &label(PSK_ENCR, CS_ID_PSK, csb, rand), &mut e);
    prf(psk, &label(PSK_AUTH, CS_ID_PSK, csb, rand), &mut a);
    prf(psk, &label(PSK_SALT, CS_ID_PSK, csb, rand), &mut s);
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(&s);
    for (i, b) in csb.to_be_bytes().iter().enumerate() {
        iv[2 + i] ^= b;
    }
    for (i, b) in u64::from(ts).to_be_bytes().iter().enumerate() {
        iv[6 + i] ^= b;
    }
    json!({ "encryption_key": h(&e), "authentication_key": h(&a), "salt_key": h(&s), "kemac_iv": h(&iv) })
}

fn key_id(kd: KeyDomainId, id: SekPekId) -> Value {
    let (mcc, mnc) = kd.mcc_mnc().unwrap();
    json!({ "key_domain_id": h(&kd.0), "mcc": mcc, "mnc": mnc, "key_group": id.key_group, "key_number": id.key_number })
}

fn ltkm_ext(ext: &Option<LtkmExt>) -> Value {
    ext.map_or(Value::Null, |e| {
        json!({
            "security_policy": e.security_policy.map(|p| json!({
                "code": p.policy.code(), "play_back_counter": p.play_back_counter, "view_counter": p.view_counter })),
            "tbk_id": e.tbk_id,
            "consumption_reporting": e.consumption_reporting,
        })
    })
}

fn describe_ltkm(c: &LtkmContent) -> Value {
    json!({
        "csb_id": format!("{:08x}", c.csb_id),
        "v": c.verification_requested,
        "srtp_cs": c.srtp_cs.map(|cs| json!({ "policy_no": cs.policy_no, "ssrc": cs.ssrc, "roc": cs.roc })),
        "key_id": key_id(c.key_domain_id, c.sek_pek_id),
        "ts": c.ts,
        "rand": h(&c.rand),
        "idi": c.idi,
        "idr": c.idr,
        "srtp_policy": c.srtp_policy.as_ref().map(|p| json!({
            "policy_no": p.policy_no, "params": p.params.iter().map(|(t, v)| json!([t, h(v)])).collect::<Vec<_>>() })),
        "oma_bcast_ext": ltkm_ext(&c.ext),
        "sek_pek": c.key.as_ref().map(|k| h(k.expose_secret())),
        "validity": match c.validity {
            KeyValidity::TekIdWindow { seq_l, seq_u } => json!({ "seq_l": seq_l, "seq_u": seq_u }),
            KeyValidity::TsWindow { ts_low, ts_high } => json!({ "ts_low": ts_low, "ts_high": ts_high }),
        },
        "invalidation": c.validity.is_invalidation(),
    })
}

fn describe_stkm(c: &StkmContent) -> Value {
    json!({
        "csb_id": format!("{:08x}", c.csb_id),
        "key_id": key_id(c.key_domain_id, c.sek_pek_id),
        "tek_id": c.tek_id,
        "ts": c.ts,
        "oma_bcast_ext": c.ext.as_ref().map(|e| json!({
            "protection_after_reception": e.protection_after_reception.code(),
            "traffic_protection_protocol": e.traffic_protection_protocol.code(),
            "traffic_authentication": e.traffic_authentication,
            "tbk_id": e.tbk_id,
            "program_id": e.program_id(),
            "parental_rating": e.parental_rating().map(|(s, a)| json!({ "system": s, "min_age": a })),
        })),
        "tek": match &c.tek { TekField::Clear(t) => h(t.expose_secret()), TekField::WrappedByTbk(w) => h(w) },
        "tek_wrapped_by_tbk": matches!(c.tek, TekField::WrappedByTbk(_)),
        "salt": c.salt.as_ref().map(|s| h(s.expose_secret())),
    })
}

fn key_from(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(v[field].as_str().unwrap_or_else(|| panic!("{field} missing"))).unwrap()
}

enum Case {
    Ltkm(LtkmContent),
    Stkm(StkmContent, SekPek, [u8; 16], Option<Tbk>),
    Verification(LtkmContent),
    Pull(SolicitedPull),
}

fn cases() -> Vec<(&'static str, &'static str, Case)> {
    let tbk = Tbk::from_bytes(*b"terminal-bind-16");
    let bound_tek = Tek::from_bytes([0x5c; 16]);
    let mut ppv = ltkm_streaming();
    ppv.ts = 8;
    ppv.sek_pek_id.key_number = 2;
    ppv.ext = Some(LtkmExt {
        security_policy: Some(SecurityPolicyExt {
            policy: SecurityPolicy::UserPayPerView,
            play_back_counter: 0,
            view_counter: 5,
        }),
        tbk_id: Some(0x0000_0042),
        consumption_reporting: true,
    });
    let download_stkm = StkmContent {
        ext: Some(StkmExt {
            protection_after_reception: ProtectionAfterReception::MayRecord,
            traffic_protection_protocol: TrafficProtectionProtocol::Dcf,
            traffic_authentication: false,
            tbk_id: None,
            access_criteria: None,
        }),
        salt: None,
        ..stkm()
    };
    let bound_stkm = StkmContent {
        tek_id: 2,
        ts: 3_900_000_002,
        ext: Some(StkmExt {
            protection_after_reception: ProtectionAfterReception::TerminalBound,
            traffic_protection_protocol: TrafficProtectionProtocol::IsmaCryp,
            traffic_authentication: false,
            tbk_id: Some(0x0000_0042),
            access_criteria: Some(vec![
                AccessDescriptor::ParentalRating { system: 1, min_age: 12 },
                AccessDescriptor::ProgramId(0x0001_e240),
            ]),
        }),
        tek: TekField::WrappedByTbk(key_wrap::wrap_16(tbk.expose_secret(), bound_tek.expose_secret())),
        salt: Some(TekSalt::from_bytes([0x6d; 14])),
        ..stkm()
    };
    vec![
        (
            "ltkm-streaming-ppt-playback",
            "streaming LTKM, V=1, SP with RFC 4771 R=1, pay-per-time with 3 play-backs, TS window",
            Case::Ltkm(ltkm_streaming()),
        ),
        (
            "ltkm-download-mbms",
            "download LTKM without OMA BCAST extension: MBMS TEK ID window",
            Case::Ltkm(ltkm_download()),
        ),
        (
            "ltkm-user-ppv-tbk",
            "streaming LTKM: user pay-per-view with 5 tokens, TBK flag, consumption reporting",
            Case::Ltkm(ppv),
        ),
        (
            "ltkm-validity-update",
            "key-validity update of the download key (no key, new TEK ID window)",
            Case::Ltkm(ltkm_download().validity_update(8, KeyValidity::TekIdWindow { seq_l: 0, seq_u: 5000 })),
        ),
        (
            "ltkm-invalidation",
            "invalidation of the streaming key (TS low > TS high, no key)",
            Case::Ltkm(ltkm_streaming().invalidation(9)),
        ),
        (
            "stkm-streaming-srtp",
            "streaming STKM: TEK + 14-byte salt, SRTP, service protection only",
            Case::Stkm(stkm(), sek(), RAND, None),
        ),
        ("stkm-download-dcf", "download STKM: TGK without salt, DCF", Case::Stkm(download_stkm, sek(), RAND, None)),
        (
            "stkm-terminal-bound",
            "STKM whose TEK is wrapped by a TBK (RFC 3394), with parental rating and program ID",
            Case::Stkm(bound_stkm, sek(), RAND, Some(tbk)),
        ),
        (
            "verification-message",
            "verification message answering ltkm-streaming-ppt-playback",
            Case::Verification(ltkm_streaming()),
        ),
        (
            "solicited-pull",
            "solicited-pull trigger for Key Group 1",
            Case::Pull(SolicitedPull {
                csb_id: 0x0badcafe,
                key_domain_id: key_domain(),
                key_group: 1,
                ts: 10,
                rand: [0x77; 16],
                idi: "bmsc.example.org".into(),
                idr: "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org".into(),
            }),
        ),
    ]
}

/// Seals a case; returns the wire bytes and the JSON that describes it.
fn seal(name: &str, about: &str, case: &Case) -> (Vec<u8>, Value) {
    let (wire, kind, body) = match case {
        Case::Ltkm(c) => {
            let wire = c.seal(&smk()).unwrap();
            (
                wire,
                "ltkm",
                json!({ "smk": h(smk().expose_secret()), "derived": derived(smk().expose_secret(), c.csb_id, &c.rand, c.ts), "fields": describe_ltkm(c) }),
            )
        }
        Case::Stkm(c, sek, rand, tbk) => {
            let wire = c.seal(sek, rand).unwrap();
            let tek = c.tek.tek(tbk.as_ref()).unwrap();
            (
                wire,
                "stkm",
                json!({
                "sek_pek": h(sek.expose_secret()), "rand": h(rand), "tbk": tbk.as_ref().map(|t| h(t.expose_secret())),
                "derived": derived(sek.expose_secret(), c.csb_id, rand, c.ts), "unwrapped_tek": h(tek.expose_secret()),
                "fields": describe_stkm(c) }),
            )
        }
        Case::Verification(c) => {
            let ltkm_wire = c.seal(&smk()).unwrap();
            let ltkm = Ltkm::decode(&ltkm_wire).unwrap();
            let wire = VerificationMessage::build(&ltkm, &ltkm.message_keys(&smk())).unwrap();
            (
                wire,
                "verification",
                json!({ "smk": h(smk().expose_secret()), "answers_ltkm": h(&ltkm_wire),
                "derived": derived(smk().expose_secret(), c.csb_id, &c.rand, c.ts),
                "fields": { "csb_id": format!("{:08x}", c.csb_id), "ts": c.ts, "idr": c.idr } }),
            )
        }
        Case::Pull(p) => {
            let wire = p.seal(&smk()).unwrap();
            (
                wire,
                "solicited_pull",
                json!({ "smk": h(smk().expose_secret()), "derived": derived(smk().expose_secret(), p.csb_id, &p.rand, p.ts),
                "fields": { "csb_id": format!("{:08x}", p.csb_id), "key_id": key_id(p.key_domain_id, SekPekId { key_group: p.key_group, key_number: 0 }),
                    "ts": p.ts, "rand": h(&p.rand), "idi": p.idi, "idr": p.idr } }),
            )
        }
    };
    let mut v = json!({ "name": name, "description": about, "kind": kind, "profile": "Keycast wire profile P-1..P-11", "length": wire.len() });
    v.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
    (wire, v)
}

/// Opens committed bytes with the keys named in the committed JSON and describes the result.
fn open_committed(kind: &str, wire: &[u8], v: &Value) -> Value {
    match kind {
        "ltkm" => {
            let smk = Smk::from_slice(&key_from(v, "smk")).unwrap();
            let OpenedLtkm::Key(c) = Ltkm::decode(wire).unwrap().open(&smk).unwrap() else { panic!("not a key LTKM") };
            describe_ltkm(&c)
        }
        "stkm" => {
            let sek = SekPek::from_slice(&key_from(v, "sek_pek")).unwrap();
            let c = Stkm::decode(wire).unwrap().open(&sek, &key_from(v, "rand")).unwrap();
            let tbk = v["tbk"].as_str().map(|t| Tbk::from_slice(&hex::decode(t).unwrap()).unwrap());
            assert_eq!(h(c.tek.tek(tbk.as_ref()).unwrap().expose_secret()), v["unwrapped_tek"]);
            describe_stkm(&c)
        }
        "verification" => {
            let smk = Smk::from_slice(&key_from(v, "smk")).unwrap();
            let ltkm_wire = key_from(v, "answers_ltkm");
            let ltkm = Ltkm::decode(&ltkm_wire).unwrap();
            let vm = VerificationMessage::decode(wire).unwrap();
            vm.verify(&ltkm, &ltkm.message_keys(&smk)).unwrap();
            json!({ "csb_id": format!("{:08x}", vm.csb_id()), "ts": vm.ts(), "idr": vm.idr() })
        }
        "solicited_pull" => {
            let smk = Smk::from_slice(&key_from(v, "smk")).unwrap();
            let OpenedLtkm::SolicitedPull(p) = Ltkm::decode(wire).unwrap().open(&smk).unwrap() else {
                panic!("not a pull")
            };
            json!({ "csb_id": format!("{:08x}", p.csb_id), "key_id": key_id(p.key_domain_id, SekPekId { key_group: p.key_group, key_number: 0 }),
                "ts": p.ts, "rand": h(&p.rand), "idi": p.idi, "idr": p.idr })
        }
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn published_vectors_match() {
    let write = std::env::var_os("KEYCAST_WRITE_VECTORS").is_some();
    let dir = dir();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let all = cases();
    for (name, about, case) in &all {
        let (wire, v) = seal(name, about, case);
        let hex_path = dir.join(format!("{name}.hex"));
        let json_path = dir.join(format!("{name}.json"));
        if write {
            std::fs::write(&hex_path, format!("{}\n", h(&wire))).unwrap();
            std::fs::write(&json_path, format!("{}\n", serde_json::to_string_pretty(&v).unwrap())).unwrap();
        }
        let committed = hex::decode(std::fs::read_to_string(&hex_path).unwrap().trim()).unwrap();
        let committed_json: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
        assert_eq!(h(&committed), h(&wire), "{name}: sealing no longer reproduces the published bytes");
        assert_eq!(committed_json, v, "{name}: JSON differs from the case");
        let kind = committed_json["kind"].as_str().unwrap();
        assert_eq!(
            open_committed(kind, &committed, &committed_json),
            committed_json["fields"],
            "{name}: opened fields differ"
        );
    }
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, all.len() * 2, "every file in vectors/mikey belongs to a case");
}
