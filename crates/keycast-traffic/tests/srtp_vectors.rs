//! keycast-traffic's SRTP/SRTCP against fixed vectors (tests/vectors/srtp_mki.txt), which an
//! independent Python oracle (tests/vectors/gen_srtp_vectors.py, python3-cryptography) wrote.
//! RFC 3711 B.2 (AES-CM keystream) and B.3 (key derivation) are checked in keycast-crypto's
//! tests/srtp.rs; the first vector here uses the B.3 master key and salt.

mod python_oracle;

use python_oracle::{run, vectors_dir};

use std::num::NonZeroU16;

use keycast_crypto::keys::{Tek, TekSalt};
use keycast_traffic::srtp::{Mki, RccMode, SrtpMasterKey, SrtpPolicy, SrtpReceiver, SrtpSender};

struct Vector {
    name: String,
    kind: String,
    auth: String,
    rate: u16,
    key: Vec<u8>,
    salt: Vec<u8>,
    mki: Vec<u8>,
    roc: u32,
    plain: Vec<u8>,
    protected: Vec<u8>,
}

fn load() -> Vec<Vector> {
    let text = std::fs::read_to_string(vectors_dir().join("srtp_mki.txt")).unwrap();
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| b.trim_start().starts_with('[')) {
        let mut lines = block.lines().filter(|l| !l.starts_with('#'));
        let name = lines.next().unwrap().trim_matches(['[', ']']).to_owned();
        let mut field = std::collections::HashMap::new();
        for l in lines {
            let (k, v) = l.split_once(" = ").unwrap();
            field.insert(k, v);
        }
        let hex = |k: &str| hex::decode(field[k]).unwrap();
        out.push(Vector {
            name,
            kind: field["kind"].to_owned(),
            auth: field.get("auth").copied().unwrap_or("").to_owned(),
            rate: field.get("rate").map_or(0, |r| r.parse().unwrap()),
            key: hex("key"),
            salt: hex("salt"),
            mki: hex("mki"),
            roc: field["roc"].parse().unwrap(),
            plain: hex("plain"),
            protected: hex("protected"),
        });
    }
    out
}

fn policy(auth: &str, rate: u16) -> SrtpPolicy {
    let rate = || NonZeroU16::new(rate).unwrap();
    match auth {
        "rfc3711" | "" => SrtpPolicy::rfc3711(),
        "none" => SrtpPolicy::unauthenticated(),
        "rccm1" => SrtpPolicy::rcc(RccMode::Rccm1, rate()),
        "rccm2" => SrtpPolicy::rcc(RccMode::Rccm2, rate()),
        "rccm3" => SrtpPolicy::rcc(RccMode::Rccm3, rate()),
        other => panic!("unknown auth {other}"),
    }
}

fn master(v: &Vector) -> SrtpMasterKey {
    SrtpMasterKey::new(
        Mki::from_bytes(v.mki.clone().try_into().unwrap()),
        Tek::from_slice(&v.key).unwrap(),
        TekSalt::from_slice(&v.salt).unwrap(),
    )
}

#[test]
fn fixed_vectors_protect_and_unprotect_byte_for_byte() {
    let vectors = load();
    assert_eq!(vectors.len(), 11);
    for v in &vectors {
        let key = master(v);
        let pol = policy(&v.auth, v.rate);
        let mut tx = SrtpSender::new(pol, &key);
        let mut rx = SrtpReceiver::new(pol);
        rx.add_key(&key);
        let mut p = v.plain.clone();
        if v.kind == "srtp" {
            let ssrc = u32::from_be_bytes(v.plain[8..12].try_into().unwrap());
            tx.set_roc(ssrc, v.roc);
            rx.set_roc(ssrc, v.roc).unwrap();
            tx.protect(&mut p).unwrap();
            assert_eq!(hex::encode(&p), hex::encode(&v.protected), "{} protect", v.name);
            rx.unprotect(&mut p).unwrap();
        } else {
            let ssrc = u32::from_be_bytes(v.plain[4..8].try_into().unwrap());
            tx.set_srtcp_index(ssrc, v.roc);
            tx.protect_rtcp(&mut p).unwrap();
            assert_eq!(hex::encode(&p), hex::encode(&v.protected), "{} protect", v.name);
            rx.unprotect_rtcp(&mut p).unwrap();
        }
        assert_eq!(p, v.plain, "{} unprotect", v.name);
    }
}

/// A ROC-carrying packet needs no out-of-band ROC: a fresh receiver takes it from the tag.
#[test]
fn fixed_roc_vectors_need_no_signalled_roc() {
    for v in load().iter().filter(|v| v.name.ends_with("roc_packet")) {
        let mut rx = SrtpReceiver::new(policy(&v.auth, v.rate));
        rx.add_key(&master(v));
        let mut p = v.protected.clone();
        rx.unprotect(&mut p).unwrap();
        assert_eq!(p, v.plain, "{}", v.name);
        let ssrc = u32::from_be_bytes(v.plain[8..12].try_into().unwrap());
        assert_eq!(rx.roc(ssrc), Some(v.roc), "{}", v.name);
    }
}

fn python_with_cryptography() -> Option<String> {
    python_oracle::python_with(&["cryptography"])
}

/// Re-runs the oracle: its output must still be the committed file.
#[test]
fn python_oracle_reproduces_the_vector_file() {
    let Some(python) = python_with_cryptography() else { return };
    let out = run(&python, &[vectors_dir().join("gen_srtp_vectors.py").to_str().unwrap()], "");
    assert_eq!(out, std::fs::read_to_string(vectors_dir().join("srtp_mki.txt")).unwrap());
}

/// Live cross-check with python3-cryptography (AES-CTR + HMAC-SHA1): packets across the
/// 65535 → 0 rollover, protected here, recomputed by the oracle from the plaintext.
#[test]
fn python_cross_check_across_roc_rollover() {
    let Some(python) = python_with_cryptography() else { return };
    let key =
        SrtpMasterKey::new(Mki::new(0x00aa_0001, 0x0102), Tek::from_bytes([0x5a; 16]), TekSalt::from_bytes([0xc3; 14]));
    let rate = NonZeroU16::new(2).unwrap();
    let mut lines = String::new();
    for (auth, pol) in [("rfc3711", SrtpPolicy::rfc3711()), ("rccm2", SrtpPolicy::rcc(RccMode::Rccm2, rate))] {
        let mut tx = SrtpSender::new(pol, &key);
        tx.set_roc(0x0102_0304, 0x41);
        for (k, seq) in [0xfffdu16, 0xfffe, 0xffff, 0, 1, 2].into_iter().enumerate() {
            let plain =
                [&[0x80, 0x60][..], &seq.to_be_bytes(), &[0, 0, 0, 9, 1, 2, 3, 4], &vec![k as u8; 20 + k]].concat();
            let mut p = plain.clone();
            tx.protect(&mut p).unwrap();
            let roc = if seq > 0x8000 { 0x41 } else { 0x42 };
            lines += &format!("{auth} {roc} {} {}\n", hex::encode(&plain), hex::encode(&p));
        }
    }
    let script = r#"
import sys
sys.path.insert(0, sys.argv[1])
from gen_srtp_vectors import srtp
key, salt, mki = bytes([0x5a]*16), bytes([0xc3]*14), bytes.fromhex("00aa00010102")
bad = 0
for line in sys.stdin:
    auth, roc, plain, got = line.split()
    want = srtp(key, salt, mki, auth, 2, int(roc), bytes.fromhex(plain)).hex()
    if want != got:
        bad += 1
        print("mismatch", auth, roc, plain, want, got)
print("checked")
sys.exit(1 if bad else 0)
"#;
    let stdout = run(&python, &["-c", script, vectors_dir().to_str().unwrap()], &lines);
    assert!(stdout.contains("checked"));
}
