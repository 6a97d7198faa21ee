//! `keycast card new|show|reset-counters` on card files.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use assert_cmd::Command;
use keycast_card::persist::CardFile;
use keycast_card::sac::SecureChannel;
use keycast_card::usim::{GbaContext, NafKeyRecord, Usim, UsimIdentity};
use keycast_crypto::keys::{Ks, KsIntNaf, Opc, SekPek, Smk, SubscriberKey, Tek, TekSalt};
use keycast_mikey::*;
use predicates::prelude::PredicateBooleanExt as _;
use predicates::str::contains;
use serde_json::Value;

const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const OP: &str = "cdc202d5123e20f62b6d676ac72cb318";
const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
const IMSI: &str = "001010000000001";
const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
const ICCID: &str = "8988211000000000001";
const BSM: &str = "bmsc.example.org";
const BTID: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org";
const RAND: [u8; 16] = [0xa5; 16];
const T0: u32 = 3_900_000_000;
const SMK: [u8; 32] = [0x3c; 32];
const SEK: [u8; 16] = [0x5e; 16];
const KS: [u8; 32] = [0x4b; 32];
const KS_INT_NAF: [u8; 32] = [0x1f; 32];
const K_SAC: [u8; 16] = [0x6d; 16];

fn keycast() -> Command {
    Command::cargo_bin("keycast").unwrap()
}

fn new_args(path: &Path) -> Vec<String> {
    ["card", "new", "--file", path.to_str().unwrap(), "--imsi", IMSI, "--impi", IMPI, "--iccid", ICCID]
        .map(String::from)
        .to_vec()
}

fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

fn ltkm(policy: SecurityPolicy, play_backs: u16, views: u16) -> Vec<u8> {
    LtkmContent {
        csb_id: 0x0102_0304,
        verification_requested: false,
        srtp_cs: None,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 7, key_number: 2 },
        ts: 41,
        rand: RAND,
        idi: BSM.into(),
        idr: BTID.into(),
        srtp_policy: None,
        ext: Some(LtkmExt {
            security_policy: Some(SecurityPolicyExt { policy, play_back_counter: play_backs, view_counter: views }),
            tbk_id: Some(0x0102_0304),
            consumption_reporting: true,
        }),
        key: Some(SekPek::from_bytes(SEK)),
        validity: KeyValidity::TsWindow { ts_low: T0, ts_high: T0 + 86_400 },
    }
    .seal(&Smk::from_bytes(SMK))
    .unwrap()
}

fn stkm(tek_id: u16, ts: u32) -> Vec<u8> {
    StkmContent {
        csb_id: 9,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 7, key_number: 2 },
        tek_id,
        ts,
        ext: None,
        tek: TekField::Clear(Tek::from_bytes([0x77; 16])),
        salt: Some(TekSalt::from_bytes([0x88; 14])),
    }
    .seal(&SekPek::from_bytes(SEK), &RAND)
    .unwrap()
}

/// A card file with GBA, NAF keys, a MUK, a used SEK and a secure channel.
fn populated(path: &Path) -> Usim {
    let mut u = Usim::new(
        UsimIdentity { imsi: IMSI.into(), impi: IMPI.into(), iccid: ICCID.into() },
        SubscriberKey::from_bytes(hex::decode(K).unwrap().try_into().unwrap()),
        Opc::from_bytes(hex::decode(OPC).unwrap().try_into().unwrap()),
    );
    u.gba = Some(GbaContext {
        ks: Ks::from_bytes(KS),
        rand: [0x11; 16],
        b_tid: Some(BTID.into()),
        lifetime: Some("2026-12-31T23:59:59Z".into()),
    });
    u.naf_keys.push(NafKeyRecord {
        naf_id: [BSM.as_bytes(), &[1, 0, 0, 0, 1]].concat(),
        b_tid: BTID.into(),
        ks_int_naf: KsIntNaf::from_bytes(KS_INT_NAF),
        last_use: 1,
    });
    u.use_counter = 1;
    u.mbms.install_muk(BSM, BTID, Smk::from_bytes(SMK)).unwrap();
    u.msk_update(&ltkm(SecurityPolicy::PayPerTimeWithPlayBack, 3, 0)).unwrap();
    u.mtk_generation(&stkm(5, T0 + 100)).unwrap();
    u.mtk_generation(&stkm(5, T0 + 50)).unwrap(); // a play-back session: one play-back spent
    u.mbms.parental_limit = Some(12);
    u.mbms.sac = Some(SecureChannel::from_parts(K_SAC, 500, 3));
    CardFile::create(path, &u).unwrap();
    u
}

fn secrets_absent(out: &str) {
    let opc_from_op = OPC; // OPc of OP under K (TS 35.208 set 1)
    for (name, secret) in [
        ("K", K.to_owned()),
        ("OP", OP.to_owned()),
        ("OPc", opc_from_op.to_owned()),
        ("SMK", hex::encode(SMK)),
        ("SEK", hex::encode(SEK)),
        ("Ks", hex::encode(KS)),
        ("Ks_int_NAF", hex::encode(KS_INT_NAF)),
        ("K_sac", hex::encode(K_SAC)),
    ] {
        assert!(!out.to_lowercase().contains(&secret), "{name} shown:\n{out}");
        // Not in the upper-case form either, nor in pieces of 8 bytes.
        assert!(!out.to_lowercase().contains(&secret[..16]), "part of {name} shown:\n{out}");
    }
}

#[test]
fn new_reads_keys_from_stdin_and_show_never_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.kc");
    keycast()
        .args(new_args(&path))
        .write_stdin(format!("K={K}\nOP={OP}\n"))
        .assert()
        .success()
        .stdout(contains("created card file"));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    // OPc was computed from OP.
    let u = CardFile::new(&path).load().unwrap();
    assert_eq!(hex::encode(u.expose_subscriber_keys().1.expose_secret()), OPC);
    assert_eq!(u.identity.imsi, IMSI);

    let out = keycast().args(["card", "show", "--file", path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("IMSI: {IMSI}")), "{text}");
    assert!(text.contains("K: (secret, not shown)"), "{text}");
    assert!(text.contains("EF_GBABP: empty (not bootstrapped)"), "{text}");
    secrets_absent(&text);
}

#[test]
fn new_takes_keys_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.kc");
    let kf = dir.path().join("k.hex");
    let of = dir.path().join("opc.hex");
    std::fs::write(&kf, format!("{K}\n")).unwrap();
    std::fs::write(&of, format!("OPC={OPC}\n")).unwrap();
    let mut args = new_args(&path);
    args.extend(["--k-file", kf.to_str().unwrap(), "--opc-file", of.to_str().unwrap()].map(String::from));
    keycast().args(&args).assert().success();
    let u = CardFile::new(&path).load().unwrap();
    assert_eq!(hex::encode(u.expose_subscriber_keys().0.expose_secret()), K);
    // Mixed: K from a file, OPc on stdin.
    let path2 = dir.path().join("card2.kc");
    let mut args = new_args(&path2);
    args.extend(["--k-file", kf.to_str().unwrap()].map(String::from));
    keycast().args(&args).write_stdin(format!("# lab card\nopc = {OPC}\n")).assert().success();
    assert_eq!(CardFile::new(&path2).load().unwrap(), u);
}

#[test]
fn new_refuses_keys_in_argv() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.kc");
    for flag in ["--k", "--op", "--opc"] {
        let mut args = new_args(&path);
        args.extend([flag.to_owned(), K.to_owned()]);
        keycast()
            .args(&args)
            .write_stdin(format!("K={K}\nOP={OP}\n"))
            .assert()
            .failure()
            .stderr(contains("keys are never taken from the command line"));
        assert!(!path.exists());
    }
}

#[test]
fn new_refuses_missing_or_bad_keys_and_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.kc");
    keycast()
        .args(new_args(&path))
        .write_stdin(format!("K={K}\n"))
        .assert()
        .failure()
        .stderr(contains("OP or OPc missing"));
    keycast().args(new_args(&path)).write_stdin(format!("OP={OP}\n")).assert().failure().stderr(contains("K missing"));
    keycast()
        .args(new_args(&path))
        .write_stdin(format!("K={K}\nOP={OP}\nOPC={OPC}\n"))
        .assert()
        .failure()
        .stderr(contains("not both"));
    keycast()
        .args(new_args(&path))
        .write_stdin(format!("K={}\nOP={OP}\n", &K[..30]))
        .assert()
        .failure()
        .stderr(contains("K must be 16 bytes"));
    assert!(!path.exists());
    keycast().args(new_args(&path)).write_stdin(format!("K={K}\nOP={OP}\n")).assert().success();
    let before = std::fs::read(&path).unwrap();
    keycast()
        .args(new_args(&path))
        .write_stdin(format!("K={K}\nOPC={OPC}\n"))
        .assert()
        .failure()
        .stderr(contains("already exists"));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let mut bad = new_args(&dir.path().join("x.kc"));
    bad[5] = "12ab".into();
    keycast().args(&bad).write_stdin(format!("K={K}\nOP={OP}\n")).assert().failure().stderr(contains("--imsi"));
}

#[test]
fn show_decodes_every_ef_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.kc");
    populated(&path);
    let file = path.to_str().unwrap();
    let out = keycast().args(["card", "show", "--file", file]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        &format!("B-TID: {BTID}") as &str,
        "Key lifetime: 2026-12-31T23:59:59Z",
        &format!("NAF FQDN: {BSM}"),
        &format!("IDi (BSM FQDN): {BSM}"),
        "TS of the last LTKM: 41",
        "Key Domain ID: 00f110 (MCC 001, MNC 01)",
        "SEK/PEK ID: 00070002",
        "Security policy: pay-per-time with play-back (1)",
        &format!("TS of the last live STKM: {}", T0 + 100),
        "TEK ID of the last live STKM: 5",
        "Play-backs left: 2",
        "In a play-back session: yes",
        "Parental limit (highest minimum age): 12",
        "TEKs released: 3",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    secrets_absent(&text);

    let out = keycast().args(["card", "show", "--file", file, "--json"]).output().unwrap();
    let raw = String::from_utf8(out.stdout).unwrap();
    secrets_absent(&raw);
    let v: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["identity"]["imsi"], IMSI);
    assert_eq!(v["ef_gbabp"]["b_tid"], BTID);
    assert_eq!(v["ef_muk"][0]["idi"], BSM);
    let key = &v["ef_msk"][0]["keys"][0];
    assert_eq!(key["policy"]["code"], 1);
    assert_eq!(key["rights"]["play_backs_left"], 2);
    assert_eq!(key["validity"]["ts_low"], T0);
    assert_eq!(v["secure_channel"]["used"], "3");
}

#[test]
fn show_reports_bad_files_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.kc");
    populated(&path);
    let file = path.to_str().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[14] = 9;
    std::fs::write(&path, &bytes).unwrap();
    keycast()
        .args(["card", "show", "--file", file])
        .assert()
        .failure()
        .stderr(contains("key file from another Keycast version: format version 9, this Keycast reads version 1 to 2"));
    bytes[14] = 1;
    bytes[40] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    keycast().args(["card", "show", "--file", file]).assert().failure().stderr(contains("checksum mismatch"));
    std::fs::write(&path, b"hello").unwrap();
    keycast().args(["card", "show", "--file", file]).assert().failure().stderr(contains("not a Keycast card file"));
}

#[test]
fn reset_counters_makes_every_key_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.kc");
    let before = populated(&path);
    keycast()
        .args(["card", "reset-counters", "--file", path.to_str().unwrap()])
        .assert()
        .success()
        .stdout(contains("reset 1 of 1 SEK/PEKs"));
    let mut after = CardFile::new(&path).load().unwrap();
    let e = after.mbms.msk(kd(), SekPekId { key_group: 7, key_number: 2 }).unwrap();
    assert_eq!((e.ts, e.last_tek_id), (None, None));
    assert_eq!((e.rights.play_backs_left, e.rights.in_play_back, e.rights.play_back_sessions), (3, false, 0));
    assert_eq!(after.mbms.muks[0].current.ts, None);
    // Keys and everything else are as they were.
    assert_eq!(after.expose_subscriber_keys(), before.expose_subscriber_keys());
    assert_eq!((&after.gba, &after.naf_keys, &after.mbms.sac), (&before.gba, &before.naf_keys, &before.mbms.sac));
    // The old STKMs and LTKM are accepted again.
    after.msk_update(&ltkm(SecurityPolicy::PayPerTimeWithPlayBack, 3, 0)).unwrap();
    assert!(!after.mtk_generation(&stkm(5, T0 + 100)).unwrap().play_back);
}

#[test]
fn reset_counters_refuses_pcsc_readers() {
    keycast()
        .args(["card", "reset-counters", "--reader", "ACS ACR38U 00 00"])
        .assert()
        .failure()
        .stderr(contains("reset-counters only works on card files"));
    keycast()
        .args(["card", "reset-counters", "--file", "pcsc:ACS ACR38U 00 00"])
        .assert()
        .failure()
        .stderr(contains("only works on card files"));
}

/// SELECT of the emulated USIM application by its full AID, no FCP.
const SELECT_USIM: &str = "00A4040C10A0000000871002FFFFFFFF4B43000100";

#[test]
fn apdu_drives_the_emulator_and_saves_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.kc");
    populated(&path);
    let file = path.to_str().unwrap();
    // A SELECT changes nothing: nothing is saved.
    let before = std::fs::read(&path).unwrap();
    keycast()
        .args(["card", "apdu", "--file", file, SELECT_USIM])
        .assert()
        .success()
        .stdout(contains("< 9000 (success)"))
        .stdout(contains("saved").not());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // AUTHENTICATE before SELECT: conditions of use not satisfied.
    let delete = "00 89 80 85 08 53 06 03 00F110 0007";
    keycast().args(["card", "apdu", "--file", file, delete]).assert().success().stdout(contains("< 6985"));
    // MSK deletion of Key Group 7 (odd INS, MBMS context, mode 03): saved.
    let out = keycast().args(["card", "apdu", "--file", file, SELECT_USIM, delete]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success() && text.contains("card state saved"), "{text}");
    assert!(!text.lines().last().unwrap().is_empty());
    let after = CardFile::new(&path).load().unwrap();
    assert!(after.mbms.msks.is_empty(), "{text}");
    // Malformed hex is refused before the card is touched.
    keycast().args(["card", "apdu", "--file", file, "00A4zz"]).assert().failure().stderr(contains("APDU 1"));
}

#[test]
fn serve_vpcd_without_a_reader_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("card");
    Command::cargo_bin("keycast")
        .unwrap()
        .args(["card", "new", "--file"])
        .arg(&file)
        .args(["--imsi", "001010000000001", "--impi", "u@ims.example.org", "--iccid", "8900100000000000001"])
        .write_stdin("K=465b5ce8b199b49faa5f0a2ee238a6bc\nOPC=cd63cb71954a9f4e48a5994e37a02baf\n")
        .assert()
        .success();
    // Port 1 on loopback: nothing listens there.
    Command::cargo_bin("keycast")
        .unwrap()
        .args(["card", "serve-vpcd", "--addr", "127.0.0.1:1", "--file"])
        .arg(&file)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("cannot connect to vpcd at 127.0.0.1:1"));
}
