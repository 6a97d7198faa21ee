//! `keycast derive`: every key derivation of the profile with each intermediate value printed,
//! for checking against vectors and other implementations.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keycast_crypto::gba::{self, GbaMode, NafId};
use keycast_crypto::keys::{Ck, Ik, Ks, Op, Opc, SubscriberKey};
use keycast_crypto::mikey::{self, MessageKeys};
use keycast_crypto::milenage::{self, Milenage};
use keycast_crypto::srtp_kdf;

use crate::input::HexArg;
use crate::report::Node;

/// Inputs of `derive milenage`.
#[derive(Debug)]
pub struct MilenageInput {
    /// K.
    pub k: HexArg,
    /// OP (OPc is computed).
    pub op: Option<HexArg>,
    /// OPc.
    pub opc: Option<HexArg>,
    /// RAND.
    pub rand: HexArg,
    /// SQN (with AMF: f1, f1*, AUTN).
    pub sqn: Option<HexArg>,
    /// AMF.
    pub amf: Option<HexArg>,
    /// SQN_MS for AUTS.
    pub sqn_ms: Option<HexArg>,
}

/// Milenage f1–f5*, AUTN, AUTS and the GBA_U variants.
pub fn milenage(i: &MilenageInput) -> Result<Node> {
    let k = SubscriberKey::from_bytes(*i.k.array::<16>("--k")?);
    let rand = *i.rand.array::<16>("--rand")?;
    let mut n = Node::group("milenage", "Milenage (TS 35.206) and AKA values (TS 33.102 §6.3)");
    n.push(Node::hex("k", "K", k.expose_secret()));
    let opc = match (&i.op, &i.opc) {
        (Some(op), None) => {
            let op = Op::from_bytes(*op.array::<16>("--op")?);
            n.push(Node::hex("op", "OP", op.expose_secret()));
            Opc::from_op(&k, &op)
        }
        (None, Some(opc)) => Opc::from_bytes(*opc.array::<16>("--opc")?),
        _ => bail!("give exactly one of --op and --opc"),
    };
    n.push(Node::hex("opc", "OPc = OP ⊕ E_K(OP)", opc.expose_secret()));
    n.push(Node::hex("rand", "RAND", &rand));
    let m = Milenage::new(&k, &opc);
    let (res, ck, ik, ak) = m.f2345(&rand);
    let sqn_amf = match (&i.sqn, &i.amf) {
        (Some(s), Some(a)) => Some((*s.array::<6>("--sqn")?, *a.array::<2>("--amf")?)),
        (None, None) => None,
        _ => bail!("--sqn and --amf go together"),
    };
    if let Some((sqn, amf)) = sqn_amf {
        n.push(Node::hex("sqn", "SQN", &sqn));
        n.push(Node::hex("amf", "AMF", &amf));
        let out = m.all(&rand, sqn, amf);
        n.push(Node::hex("f1", "f1 (MAC-A)", &out.mac_a));
        n.push(Node::hex("f1_star", "f1* (MAC-S)", &out.mac_s));
    }
    n.push(Node::hex("f2", "f2 (RES)", res.expose_secret()));
    n.push(Node::hex("f3", "f3 (CK)", ck.expose_secret()));
    n.push(Node::hex("f4", "f4 (IK)", ik.expose_secret()));
    n.push(Node::hex("f5", "f5 (AK)", &ak));
    n.push(Node::hex("f5_star", "f5* (AK*)", &m.f5_star(&rand)));
    if let Some((sqn, amf)) = sqn_amf {
        let sqn_xor_ak: Vec<u8> = sqn.iter().zip(ak).map(|(s, a)| s ^ a).collect();
        n.push(Node::hex("sqn_xor_ak", "SQN ⊕ AK", &sqn_xor_ak));
        let autn = m.build_autn(sqn, amf, &rand);
        n.push(Node::hex("autn", "AUTN = (SQN ⊕ AK) ‖ AMF ‖ MAC-A", &autn));
        let autn_star = milenage::gba_u_autn_star(&autn, &ik);
        n.push(Node::hex("gba_u_autn_star", "GBA_U AUTN* (MAC* = MAC-A ⊕ Trunc(SHA-1(IK)))", &autn_star));
    }
    n.push(Node::hex(
        "gba_u_res",
        "GBA_U RES (least significant bit flipped)",
        milenage::flip_res_lsb(&res).expose_secret(),
    ));
    if let Some(sqn_ms) = &i.sqn_ms {
        let sqn_ms = *sqn_ms.array::<6>("--sqn-ms")?;
        n.push(Node::hex("sqn_ms", "SQN_MS", &sqn_ms));
        let mac_s = m.f1_star(&rand, sqn_ms, [0, 0]);
        n.push(Node::hex("mac_s_resync", "MAC-S = f1*(SQN_MS, RAND, AMF 0000)", &mac_s));
        n.push(Node::hex("auts", "AUTS = (SQN_MS ⊕ AK*) ‖ MAC-S", &m.build_auts(&rand, sqn_ms)));
    }
    Ok(n)
}

/// Inputs of `derive gba`.
#[derive(Debug)]
pub struct GbaInput {
    /// CK.
    pub ck: Option<HexArg>,
    /// IK.
    pub ik: Option<HexArg>,
    /// Ks (instead of CK and IK).
    pub ks: Option<HexArg>,
    /// RAND of the bootstrapping run.
    pub rand: HexArg,
    /// IMPI.
    pub impi: String,
    /// NAF FQDN.
    pub naf_fqdn: String,
    /// Ua security protocol identifier (5 bytes).
    pub ua_protocol: HexArg,
    /// BSF name, for B-TID and TMPI.
    pub bsf: Option<String>,
}

/// FC ‖ P0 ‖ L0 ‖ … ‖ Pn ‖ Ln, the KDF input S of TS 33.220 Annex B.2.
fn kdf_input(fc: u8, params: &[&[u8]]) -> Result<Vec<u8>> {
    let mut s = vec![fc];
    for p in params {
        s.extend_from_slice(p);
        let len = u16::try_from(p.len()).context("a KDF parameter is longer than 65535 bytes")?;
        s.extend_from_slice(&len.to_be_bytes());
    }
    Ok(s)
}

/// Checks that HMAC-SHA-256(key, S) reproduces `expected`, i.e. that the S shown is the S used.
fn check_s(key: &[u8], s: &[u8], expected: &[u8]) -> Result<()> {
    let mac = keycast_crypto::hmac::hmac_sha256(key, &[s]);
    if !keycast_crypto::hmac::ct_eq(&mac, expected) {
        bail!("internal check failed: HMAC-SHA-256(key, S) differs from the library's KDF output");
    }
    Ok(())
}

/// GBA: Ks, B-TID, NAF keys with their KDF inputs, MRK, and SMK/SRK per GBA mode (profile P-7).
pub fn gba(i: &GbaInput) -> Result<Node> {
    let rand = *i.rand.array::<16>("--rand")?;
    let ua = *i.ua_protocol.array::<5>("--ua-protocol")?;
    let mut n = Node::group("gba", "GBA key derivation (TS 33.220 Annex B; TS 33.246 Annex F; profile P-7)");
    let ks = match (&i.ks, &i.ck, &i.ik) {
        (Some(ks), None, None) => Ks::from_bytes(*ks.array::<32>("--ks")?),
        (None, Some(ck), Some(ik)) => {
            let ck = Ck::from_bytes(*ck.array::<16>("--ck")?);
            let ik = Ik::from_bytes(*ik.array::<16>("--ik")?);
            n.push(Node::hex("ck", "CK", ck.expose_secret()));
            n.push(Node::hex("ik", "IK", ik.expose_secret()));
            gba::ks_from_ck_ik(&ck, &ik)
        }
        _ => bail!("give --ks, or both --ck and --ik"),
    };
    n.push(Node::hex("ks", "Ks = CK ‖ IK", ks.expose_secret()));
    n.push(Node::hex("rand", "RAND", &rand));
    n.push(Node::text("impi", "IMPI", i.impi.clone()));
    if let Some(bsf) = &i.bsf {
        n.push(Node::text("b_tid", "B-TID = base64(RAND)@BSF", gba::b_tid(&rand, bsf)));
        n.push(Node::text("tmpi", "TMPI (BSF_Id = BSF ‖ 01 00 00 01 00)", gba::tmpi(&ks, &rand, &i.impi, bsf)?));
    }
    let naf_id = NafId::new(&i.naf_fqdn, ua);
    n.push(Node::hex("naf_id", format!("NAF_Id = \"{}\" ‖ {}", i.naf_fqdn, hex::encode(ua)), naf_id.as_bytes()));
    let ks_b = &ks.expose_secret()[..];
    let s_me = kdf_input(gba::FC_GBA, &[b"gba-me", &rand, i.impi.as_bytes(), naf_id.as_bytes()])?;
    let ext = gba::ks_ext_naf(&ks, &rand, &i.impi, &naf_id)?;
    check_s(ks_b, &s_me, ext.expose_secret())?;
    n.push(Node::hex("s_gba_me", "KDF input S (\"gba-me\")", &s_me));
    n.push(Node::hex("ks_ext_naf", "Ks_NAF = Ks_ext_NAF = KDF(Ks, S)", ext.expose_secret()));
    n.push(Node::text("ks_ext_naf_base64", "base64(Ks_ext_NAF)", BASE64.encode(ext.expose_secret())));
    let s_u = kdf_input(gba::FC_GBA, &[b"gba-u", &rand, i.impi.as_bytes(), naf_id.as_bytes()])?;
    let int = gba::ks_int_naf(&ks, &rand, &i.impi, &naf_id)?;
    check_s(ks_b, &s_u, int.expose_secret())?;
    n.push(Node::hex("s_gba_u", "KDF input S (\"gba-u\")", &s_u));
    n.push(Node::hex("ks_int_naf", "Ks_int_NAF = KDF(Ks, S)", int.expose_secret()));
    n.push(Node::text("ks_int_naf_base64", "base64(Ks_int_NAF)", BASE64.encode(int.expose_secret())));
    let s_mrk = kdf_input(gba::FC_GBA, &[b"mbms-mrk"])?;
    let mrk = gba::mrk(ext.expose_secret());
    check_s(ext.expose_secret(), &s_mrk, mrk.expose_secret())?;
    n.push(Node::hex("s_mrk", "MRK KDF input S (\"mbms-mrk\")", &s_mrk));
    n.push(Node::hex("mrk", "MRK = KDF(Ks_(ext)_NAF, S)", mrk.expose_secret()));
    n.push(Node::text("mrk_base64", "base64(MRK)", BASE64.encode(mrk.expose_secret())));
    let mut modes = Node::group("mbms_keys", "SMK / SRK per GBA mode (profile P-7)");
    for (key, label, mode) in [
        ("gba_u_mbms_card", "GBA_U, MBMS card: SMK = Ks_int_NAF, SRK = Ks_ext_NAF", GbaMode::GbaUMbmsCard),
        (
            "gba_u_non_mbms_card",
            "GBA_U, card without MBMS: SMK = Ks_ext_NAF, SRK = MRK(Ks_ext_NAF)",
            GbaMode::GbaUNonMbmsCard,
        ),
        ("gba_me", "GBA_ME: SMK = Ks_NAF, SRK = MRK(Ks_NAF)", GbaMode::GbaMe),
    ] {
        let (smk, srk) = gba::mbms_keys(mode, &ks, &rand, &i.impi, &naf_id)?;
        modes.push(
            Node::group(key, label)
                .with(Node::hex("smk", "SMK", smk.expose_secret()))
                .with(Node::hex("srk", "SRK", srk.expose_secret()))
                .with(Node::text("digest_password", "Digest password base64(SRK)", BASE64.encode(srk.expose_secret()))),
        );
    }
    n.push(modes);
    Ok(n)
}

/// Inputs of `derive mikey-keys`.
#[derive(Debug)]
pub struct MikeyKeysInput {
    /// inkey: the pre-shared key (SMK or SEK/PEK) or, with `tgk`, the TGK.
    pub key: HexArg,
    /// CSB ID (4 bytes).
    pub csb_id: HexArg,
    /// RAND.
    pub rand: HexArg,
    /// Timestamp (4-byte COUNTER or 8-byte NTP) for the KEMAC IV.
    pub t: Option<HexArg>,
    /// TGK mode (RFC 3830 §4.1.3) instead of the pre-shared-key labels (§4.1.4).
    pub tgk: bool,
    /// cs_id for TGK mode.
    pub cs_id: u8,
    /// TEK length in TGK mode.
    pub tek_len: usize,
    /// Salt length in TGK mode.
    pub salt_len: usize,
}

/// The PRF inputs shared by every key of one message: inkey, CSB ID, RAND.
struct PrfInputs<'a> {
    inkey: &'a [u8],
    csb: u32,
    rand: &'a [u8],
}

fn prf_node(p: &PrfInputs<'_>, key: &str, what: &str, constant: u32, cs_id: u8, len: usize) -> Node {
    let label = mikey::label(constant, cs_id, p.csb, p.rand);
    let mut out = zeroize::Zeroizing::new(vec![0u8; len]);
    mikey::prf(p.inkey, &label, &mut out);
    Node::group(key, format!("{what} (constant 0x{constant:08X}, {len} bytes)"))
        .with(Node::hex("label", "label = constant ‖ cs_id ‖ CSB ID ‖ RAND", &label))
        .with(Node::hex("key", "PRF(inkey, label)", &out))
}

/// MIKEY PRF: the keys protecting a message (pre-shared key) or a TEK and salt from a TGK.
pub fn mikey_keys(i: &MikeyKeysInput) -> Result<Node> {
    let csb = u32::from_be_bytes(*i.csb_id.array::<4>("--csb-id")?);
    let inkey = i.key.bytes();
    let rand = i.rand.bytes();
    let inputs = PrfInputs { inkey, csb, rand };
    let mut n = Node::group("mikey_keys", "MIKEY key derivation (RFC 3830 §4.1.2–4.1.4)");
    n.push(Node::hex("inkey", "inkey", inkey));
    n.push(Node::num("inkey_pieces", "256-bit pieces of inkey", inkey.len().div_ceil(32).max(1) as u64));
    n.push(Node::leaf("csb_id", "CSB ID", format!("{csb:08x}"), format!("0x{csb:08x}")));
    n.push(Node::hex("rand", "RAND", rand));
    if i.tgk {
        n.push(Node::leaf("cs_id", "cs_id", i.cs_id, format!("0x{:02x}", i.cs_id)));
        n.push(prf_node(&inputs, "tek", "TEK", mikey::TEK_CONST, i.cs_id, i.tek_len));
        n.push(prf_node(&inputs, "salt", "Salting key", mikey::TGK_SALT, i.cs_id, i.salt_len));
        return Ok(n);
    }
    let psk = mikey::CS_ID_PSK;
    n.push(Node::leaf("cs_id", "cs_id", psk, format!("0x{psk:02x} (pre-shared key labels)")));
    n.push(prf_node(&inputs, "encryption", "Encryption key", mikey::PSK_ENCR, psk, mikey::ENCR_KEY_LEN));
    n.push(prf_node(&inputs, "authentication", "Authentication key", mikey::PSK_AUTH, psk, mikey::AUTH_KEY_LEN));
    n.push(prf_node(&inputs, "salt", "Salting key", mikey::PSK_SALT, psk, mikey::SALT_LEN));
    if let Some(t) = &i.t {
        let t64 = match t.bytes().len() {
            4 | 8 => t.bytes().iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)),
            other => bail!("--t must be 4 bytes (COUNTER) or 8 bytes (NTP), got {other}"),
        };
        let iv = MessageKeys::derive(inkey, csb, rand).kemac_iv(csb, t64);
        n.push(Node::hex("t64", "T64 (timestamp, left-padded to 8 bytes)", &t64.to_be_bytes()));
        n.push(Node::hex("kemac_iv", "KEMAC IV = (salt ⊕ (0000 ‖ CSB ID ‖ T64)) ‖ 0000", &iv));
    }
    Ok(n)
}

/// SRTP and SRTCP session keys (RFC 3711 §4.3, key derivation rate 0).
pub fn srtp(master_key: &HexArg, master_salt: &HexArg, auth_len: usize) -> Result<Node> {
    let key = master_key.array::<16>("--master-key")?;
    let salt = master_salt.array::<14>("--master-salt")?;
    if auth_len == 0 || auth_len > 4096 {
        bail!("--auth-len must be 1..=4096 bytes");
    }
    let mut n = Node::group("srtp", "SRTP/SRTCP key derivation (RFC 3711 §4.3, key derivation rate 0)");
    n.push(Node::hex("master_key", "master key", &key[..]));
    n.push(Node::hex("master_salt", "master salt", &salt[..]));
    let mut list = Node::list("session_keys", "Session keys");
    for (label, name, len) in [
        (srtp_kdf::label::RTP_CIPHER, "SRTP encryption key k_e", 16),
        (srtp_kdf::label::RTP_AUTH, "SRTP authentication key k_a", auth_len),
        (srtp_kdf::label::RTP_SALT, "SRTP salting key k_s", 14),
        (srtp_kdf::label::RTCP_CIPHER, "SRTCP encryption key", 16),
        (srtp_kdf::label::RTCP_AUTH, "SRTCP authentication key", auth_len),
        (srtp_kdf::label::RTCP_SALT, "SRTCP salting key", 14),
    ] {
        // x = (label ‖ r) ⊕ master salt with r = 0; the AES-CM input block is x · 2^16.
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&salt[..]);
        iv[7] ^= label;
        let mut out = zeroize::Zeroizing::new(vec![0u8; len]);
        srtp_kdf::derive(&key, &salt, label, &mut out);
        list.push(
            Node::group("session_key", format!("label 0x{label:02x}: {name} ({len} bytes)"))
                .with(Node::num("label", "label", label.into()))
                .with(Node::text("name", "", name))
                .with(Node::hex("iv", "AES-CM IV = ((label ‖ r) ⊕ master salt) · 2^16", &iv))
                .with(Node::hex("key", "key", &out)),
        );
    }
    n.push(list);
    Ok(n)
}
