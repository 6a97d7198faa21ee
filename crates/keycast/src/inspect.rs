//! `keycast inspect`: decodes a MIKEY message field by field (the syntax layer of
//! keycast-mikey), then judges it with the typed layer (LTKM, solicited pull, STKM,
//! verification message) and, given keys, verifies and decrypts it.

use keycast_crypto::keys::{SekPek, Smk, Tbk};
use keycast_mikey::wire::{
    CsIdMapType, DataType, EncrAlg, ExtType, HashFunc, IdType, KeyDataType, KvType, OmaBcastSubtype, PayloadType,
    ProtType, SrtpParam, TsType,
};
use keycast_mikey::{
    AccessDescriptor, CsIdMap, GeneralExt, Hdr, KeyData, KeyDomainId, KeyIdExt, KeyValidity, KeyValidityData, Located,
    Ltkm, LtkmExt, Message, MikeyError, OpenedLtkm, Payload, PayloadIter, ProtectionAfterReception, SecurityPolicy,
    SekPekId, Stkm, StkmExt, TekField, TrafficProtectionProtocol, VerificationMessage, split_oma_bcast,
};

use crate::input::Origin;
use crate::report::Node;

/// Keys the user gave for verifying and decrypting.
#[derive(Debug, Default)]
pub struct InspectKeys {
    /// SMK for LTKMs, solicited pulls and verification messages.
    pub smk: Option<Smk>,
    /// SEK/PEK and the RAND stored with it, for STKMs.
    pub sek: Option<(SekPek, [u8; 16])>,
    /// TBK for a terminal-bound TEK.
    pub tbk: Option<Tbk>,
    /// The LTKM a verification message answers.
    pub ltkm: Option<Vec<u8>>,
}

/// The outcome of inspecting one message.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Everything shown.
    pub node: Node,
    /// Each failure (malformed, refused by the profile, MAC mismatch, unwrap failure).
    pub errors: Vec<String>,
}

impl Inspection {
    /// Whether nothing failed.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// The kind of message, judged from its header and extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// LTKM (MSK message), possibly a solicited-pull trigger (decided by the typed layer).
    Ltkm,
    /// STKM (MTK message).
    Stkm,
    /// MSK verification message.
    Verification,
    /// Any other MIKEY message.
    Other,
}

/// Decodes, judges and (with keys) opens one message.
#[must_use]
pub fn inspect(bytes: &[u8], origin: Option<&Origin>, keys: &InspectKeys) -> Inspection {
    let title = match origin {
        Some(o) => format!("Frame {}: UDP {} → {}, MIKEY message of {} bytes", o.frame, o.src, o.dst, bytes.len()),
        None => format!("MIKEY message of {} bytes", bytes.len()),
    };
    let mut root = Node::group("message", title);
    let mut errors = Vec::new();
    if let Some(o) = origin {
        // Shown in the title line; the children carry them into JSON.
        root.push(Node::num("frame", "", o.frame));
        root.push(Node::text("src", "", o.src.to_string()));
        root.push(Node::text("dst", "", o.dst.to_string()));
    }
    root.push(Node::num("length", "", bytes.len() as u64));
    let syntax_ok = match PayloadIter::new(bytes) {
        Err(e) => {
            root.push(Node::text("decode_error", "Malformed", e.to_string()));
            errors.push(format!("malformed MIKEY message: {e}"));
            false
        }
        Ok((hdr, iter)) => {
            root.push(hdr_node(bytes, &hdr));
            let mut list = Node::list("payloads", "Payloads");
            let mut malformed = None;
            for item in iter {
                match item {
                    Ok(located) => list.push(payload_node(bytes, &located, &mut errors)),
                    Err(e) => {
                        errors.push(format!("malformed MIKEY message: {e}"));
                        malformed = Some(Node::text("decode_error", "Malformed", e.to_string()));
                        break;
                    }
                }
            }
            root.push(list);
            // After the payloads that did decode, where the walk stopped.
            let ok = malformed.is_none() && errors.is_empty();
            root.children.extend(malformed);
            ok
        }
    };
    root.push(verdict(bytes, syntax_ok, keys, &mut errors));
    root.push(Node::leaf("ok", "Result", errors.is_empty(), if errors.is_empty() { "ok" } else { "FAILED" }));
    Inspection { node: root, errors }
}

fn hdr_node(bytes: &[u8], hdr: &Hdr<'_>) -> Node {
    let len = match hdr.map {
        CsIdMap::SrtpId(raw) => 10 + raw.len(),
        CsIdMap::Empty => 10,
    };
    let next = PayloadType::from(bytes[2]);
    let mut n = Node::group("hdr", format!("Common Header (HDR) (offset 0, length {len})"))
        .with(Node::num("offset", "", 0))
        .with(Node::num("length", "", len as u64))
        .with(Node::num("version", "Version", u64::from(bytes[0])))
        .with(Node::code("data_type", "Data Type", u8::from(hdr.data_type).into(), hdr.data_type.spec_name()))
        .with(Node::code("next_payload", "Next Payload", u8::from(next).into(), next.spec_name()))
        .with(Node::leaf("v", "V", hdr.v, if hdr.v { "1 (verification message requested)" } else { "0" }))
        .with(Node::code("prf_func", "PRF func", hdr.prf.into(), if hdr.prf == 0 { "MIKEY-1" } else { "Unknown" }))
        .with(Node::leaf("csb_id", "CSB ID", format!("{:08x}", hdr.csb_id), format!("0x{:08x}", hdr.csb_id)))
        .with(Node::num("cs_count", "#CS", hdr.cs_count.into()));
    let map_type: CsIdMapType = hdr.map.map_type();
    n.push(Node::code("cs_id_map_type", "CS ID map type", u8::from(map_type).into(), map_type.spec_name()));
    if let CsIdMap::SrtpId(_) = hdr.map {
        let mut list = Node::list("srtp_id_map", "SRTP-ID map");
        for (i, cs) in hdr.map.srtp_entries().enumerate() {
            list.push(
                Node::group("cs", format!("Crypto session {}", i + 1))
                    .with(Node::num("policy_no", "Policy No", cs.policy_no.into()))
                    .with(Node::leaf("ssrc", "SSRC", cs.ssrc, format!("0x{:08x}", cs.ssrc)))
                    .with(Node::num("roc", "ROC", cs.roc.into())),
            );
        }
        n.push(list);
    }
    n
}

fn payload_node(bytes: &[u8], located: &Located<'_>, errors: &mut Vec<String>) -> Node {
    let ty = located.payload.payload_type();
    let span = &located.span;
    let mut n = Node::group("payload", format!("{} (offset {}, length {})", payload_title(ty), span.start, span.len()))
        .with(Node::text("type", "", ty.spec_name()))
        .with(Node::num("type_code", "", u8::from(ty).into()))
        .with(Node::num("offset", "", span.start as u64))
        .with(Node::num("length", "", span.len() as u64));
    if ty != PayloadType::Sign {
        let next = PayloadType::from(bytes[span.start]);
        n.push(Node::code("next_payload", "Next Payload", u8::from(next).into(), next.spec_name()));
    }
    match &located.payload {
        Payload::Kemac(k) => {
            n.push(code_node("encr_alg", "Encr alg", u8::from(k.encr_alg), k.encr_alg.spec_name()));
            n.push(Node::num("encr_data_len", "Encr data len", k.encr_data.len() as u64));
            n.push(Node::hex("encr_data", "Encr data", k.encr_data));
            if k.encr_alg == EncrAlg::Null && !k.encr_data.is_empty() {
                // NULL encryption: the key data is readable as it stands.
                match KeyData::read_all(k.encr_data, span.start + 4) {
                    Ok(all) => {
                        let mut list = Node::list("key_data", "Key data (not encrypted)");
                        all.iter().for_each(|kd| list.push(key_data_node(kd)));
                        n.push(list);
                    }
                    Err(e) => n.push(Node::text("key_data_error", "Key data", format!("malformed: {e}"))),
                }
            }
            n.push(code_node("mac_alg", "MAC alg", u8::from(k.mac_alg), k.mac_alg.spec_name()));
            n.push(Node::hex("mac", "MAC", k.mac));
        }
        Payload::Pke(p) => {
            n.push(Node::num("c", "C", p.c.into()));
            n.push(Node::num("data_len", "Data len", p.data.len() as u64));
            n.push(Node::hex("data", "Data", p.data));
        }
        Payload::Dh(d) => {
            n.push(code_node("dh_group", "DH-Group", u8::from(d.group), d.group.spec_name()));
            n.push(Node::hex("dh_value", "DH-Value", d.value));
            push_kv(&mut n, &d.kv);
        }
        Payload::Sign(s) => {
            n.push(Node::num("s_type", "Signature type", s.s_type.into()));
            n.push(Node::num("signature_len", "Signature len", s.signature.len() as u64));
            n.push(Node::hex("signature", "Signature", s.signature));
        }
        Payload::T(t) => {
            n.push(code_node("ts_type", "TS type", u8::from(t.ts_type), t.ts_type.spec_name()));
            let shown = match t.ts_type {
                TsType::Counter | TsType::NtpUtc32 => format!("{} (0x{:08x})", t.value, t.value),
                _ => format!("{} (0x{:016x})", t.value, t.value),
            };
            n.push(Node::leaf("ts_value", "TS value", t.value, shown));
        }
        Payload::Id(id) => {
            if let Some(role) = id.role {
                n.push(Node::num("id_role", "ID role", role.into()));
            }
            n.push(code_node("id_type", "ID type", u8::from(id.id_type), id.id_type.spec_name()));
            n.push(Node::num("id_len", "ID len", id.data.len() as u64));
            match (id.id_type, std::str::from_utf8(id.data)) {
                (IdType::Nai | IdType::Uri, Ok(s)) => n.push(Node::text("id_data", "ID", s)),
                _ => n.push(Node::hex("id_data", "ID", id.data)),
            }
        }
        Payload::Cert(c) => {
            n.push(Node::num("cert_type", "Certificate type", c.cert_type.into()));
            n.push(Node::num("cert_len", "Certificate len", c.data.len() as u64));
            n.push(Node::hex("cert", "Certificate", c.data));
        }
        Payload::Chash(c) => {
            let f: HashFunc = c.hash_func;
            n.push(code_node("hash_func", "Hash func", u8::from(f), f.spec_name()));
            n.push(Node::hex("hash", "Hash", c.hash));
        }
        Payload::V(v) => {
            n.push(code_node("auth_alg", "Auth alg", u8::from(v.auth_alg), v.auth_alg.spec_name()));
            n.push(Node::hex("ver_data", "Ver data", v.mac));
        }
        Payload::Sp(sp) => {
            let pt: ProtType = sp.prot_type;
            n.push(Node::num("policy_no", "Policy No", sp.policy_no.into()));
            n.push(code_node("prot_type", "Protocol type", u8::from(pt), pt.spec_name()));
            n.push(Node::num("policy_param_len", "Policy param length", sp.params.len() as u64));
            let mut list = Node::list("params", "Policy params");
            for (t, v) in sp.params() {
                let name = if pt == ProtType::Srtp { SrtpParam::from(t).spec_name() } else { "Unknown" };
                let uint = (v.len() <= 8).then(|| v.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)));
                let shown = match uint {
                    Some(u) => format!("{u} (0x{})", hex::encode(v)),
                    None => hex::encode(v),
                };
                list.push(
                    Node::group("param", format!("{name} ({t})"))
                        .with(Node::code("type", "Type", t.into(), name))
                        .with(Node::num("length", "Length", v.len() as u64))
                        .with(Node::hex("value", "Value", v))
                        .summarised(shown),
                );
            }
            n.push(list);
        }
        Payload::Rand(r) => {
            n.push(Node::num("rand_len", "RAND len", r.len() as u64));
            n.push(Node::hex("rand", "RAND", r));
        }
        Payload::Err(e) => {
            n.push(code_node("error_no", "Error no.", u8::from(e.error_no), e.error_no.spec_name()));
        }
        Payload::GeneralExt(g) => ext_nodes(&mut n, g, span.start + 4, errors),
        // `Payload` is non-exhaustive: a future payload still shows its span.
        _ => n.push(Node::hex("raw", "Raw", &bytes[span.clone()])),
    }
    n
}

fn payload_title(ty: PayloadType) -> &'static str {
    match ty {
        PayloadType::Kemac => "Key Data Transport (KEMAC)",
        PayloadType::Pke => "Envelope Data (PKE)",
        PayloadType::Dh => "DH Data (DH)",
        PayloadType::Sign => "Signature (SIGN)",
        PayloadType::T => "Timestamp (T)",
        PayloadType::Id => "ID",
        PayloadType::Cert => "Certificate (CERT)",
        PayloadType::Chash => "CHASH",
        PayloadType::V => "Ver msg (V)",
        PayloadType::Sp => "Security Policy (SP)",
        PayloadType::Rand => "RAND",
        PayloadType::Err => "Error (ERR)",
        PayloadType::Idr => "IDR",
        PayloadType::GeneralExt => "General Extension (EXT)",
        other => other.spec_name(),
    }
}

fn code_node(key: &str, label: &str, code: u8, name: &str) -> Node {
    Node::code(key, label, code.into(), name)
}

fn push_kv(n: &mut Node, kv: &KeyValidityData<'_>) {
    let t: KvType = kv.kv_type();
    n.push(code_node("kv", "KV", u8::from(t), t.spec_name()));
    match kv {
        KeyValidityData::Null => {}
        KeyValidityData::Spi(spi) => n.push(Node::hex("spi", "Valid SPI", spi)),
        KeyValidityData::Interval { vf, vt } => {
            n.push(Node::hex("valid_from", "Valid from", vf));
            n.push(Node::hex("valid_to", "Valid to", vt));
        }
    }
}

fn key_data_node(kd: &KeyData<'_>) -> Node {
    let t: KeyDataType = kd.key_type;
    let mut n = Node::group("key_data", format!("Key data: {}", t.spec_name()))
        .with(code_node("type", "Type", u8::from(t), t.spec_name()))
        .with(Node::num("key_len", "Key len", kd.key.len() as u64))
        .with(Node::hex("key", "Key", kd.key));
    if let Some(salt) = kd.salt {
        n.push(Node::num("salt_len", "Salt key len", salt.len() as u64));
        n.push(Node::hex("salt", "Salt key", salt));
    }
    push_kv(&mut n, &kd.kv);
    n
}

fn ext_nodes(n: &mut Node, g: &GeneralExt<'_>, data_at: usize, errors: &mut Vec<String>) {
    let t: ExtType = g.ext_type;
    n.push(code_node("ext_type", "Extension type", u8::from(t), t.spec_name()));
    n.push(Node::num("ext_len", "Length", g.data.len() as u64));
    n.push(Node::hex("data", "Data", g.data));
    match t {
        ExtType::KeyId => match KeyIdExt::read(g.data, data_at) {
            Ok(k) => n.push(key_id_node(&k)),
            Err(e) => {
                n.push(Node::text("key_id_error", "Key ID", format!("malformed: {e}")));
                errors.push(format!("malformed Key ID extension: {e}"));
            }
        },
        ExtType::OmaBcast => match split_oma_bcast(g.data, data_at) {
            Ok((subtype, body)) => n.push(oma_bcast_node(subtype, body, data_at + 1, errors)),
            Err(e) => {
                n.push(Node::text("oma_bcast_error", "OMA BCAST", format!("malformed: {e}")));
                errors.push(format!("malformed OMA BCAST extension: {e}"));
            }
        },
        _ => {}
    }
}

/// `00f110 (MCC 001, MNC 01)` in text; hex, MCC and MNC in JSON.
fn key_domain_node(kd: KeyDomainId) -> Node {
    let hex = hex::encode(kd.0);
    let (mcc, mnc) = kd.mcc_mnc().map_or((None, None), |(c, n)| (Some(c), Some(n)));
    let shown = match (&mcc, &mnc) {
        (Some(c), Some(n)) => format!("{hex} (MCC {c}, MNC {n})"),
        _ => format!("{hex} (not BCD)"),
    };
    Node::group("key_domain_id", "Key Domain ID")
        .with(Node::text("hex", "", hex))
        .with(Node::leaf("mcc", "", mcc, ""))
        .with(Node::leaf("mnc", "", mnc, ""))
        .summarised(shown)
}

fn sek_pek_id_node(id: SekPekId) -> Node {
    let hex = hex::encode(id.to_bytes());
    let current = if id.key_number == 0 { ", the current key" } else { "" };
    Node::group("sek_pek_id", "SEK/PEK ID (MSK ID)")
        .with(Node::text("hex", "", hex.clone()))
        .with(Node::num("key_group", "", id.key_group.into()))
        .with(Node::num("key_number", "", id.key_number.into()))
        .summarised(format!("{hex} (Key Group {}, Key Number {}{current})", id.key_group, id.key_number))
}

fn key_id_node(k: &KeyIdExt) -> Node {
    let mut n = Node::group("key_id", "Key ID (RFC 4563, TS 33.246 §6.4.4)");
    if let Some(kd) = k.key_domain_id {
        n.push(key_domain_node(kd));
    }
    if let Some(id) = k.sek_pek_id {
        n.push(sek_pek_id_node(id));
    }
    if let Some(t) = k.tek_id {
        n.push(Node::leaf("tek_id", "TEK ID (MTK ID)", t, format!("{t} (0x{t:04x})")));
    }
    n
}

fn policy_name(p: SecurityPolicy) -> &'static str {
    match p {
        SecurityPolicy::PayPerTime => "SEK/PEK pay-per-time (PPT)",
        SecurityPolicy::PayPerTimeWithPlayBack => "PPT with play-back",
        SecurityPolicy::PayPerView => "SEK/PEK pay-per-view (PPV)",
        SecurityPolicy::PayPerViewWithPlayBack => "PPV with play-back",
        SecurityPolicy::UserPayPerView => "user PPV (tokens)",
        SecurityPolicy::UnlimitedWithinWindow => "unlimited within window",
        _ => "Unknown",
    }
}

fn protection_name(p: ProtectionAfterReception) -> &'static str {
    match p {
        ProtectionAfterReception::MayRecord => "content protection; may be recorded (kept encrypted)",
        ProtectionAfterReception::MustNotRecord => "content protection; must not be recorded",
        ProtectionAfterReception::TerminalBound => "content protection; recording bound to this terminal (TBK)",
        ProtectionAfterReception::ServiceProtectionOnly => "service protection only; may be stored in the clear",
    }
}

fn protocol_name(p: TrafficProtectionProtocol) -> &'static str {
    match p {
        TrafficProtectionProtocol::IpsecEsp => "IPsec ESP",
        TrafficProtectionProtocol::Srtp => "SRTP",
        TrafficProtectionProtocol::IsmaCryp => "ISMACryp",
        TrafficProtectionProtocol::Dcf => "DCF",
    }
}

fn oma_bcast_node(subtype: OmaBcastSubtype, body: &[u8], body_at: usize, errors: &mut Vec<String>) -> Node {
    let mut n = Node::group("oma_bcast", "OMA BCAST (RFC 5410; body per profile P-4 / P-6)").with(code_node(
        "subtype",
        "Subtype",
        u8::from(subtype),
        subtype.spec_name(),
    ));
    let flags = body.first().copied();
    match subtype {
        OmaBcastSubtype::Ltkm => match LtkmExt::read(body, body_at) {
            Ok(e) => n.push(ltkm_ext_node(&e, flags.unwrap_or_default())),
            Err(e) => {
                n.push(Node::text("body_error", "LTKM body", format!("malformed: {e}")));
                errors.push(format!("malformed OMA BCAST LTKM extension: {e}"));
            }
        },
        OmaBcastSubtype::Stkm => match StkmExt::read(body, body_at) {
            Ok(e) => n.push(stkm_ext_node(&e, flags.unwrap_or_default())),
            Err(e) => {
                n.push(Node::text("body_error", "STKM body", format!("malformed: {e}")));
                errors.push(format!("malformed OMA BCAST STKM extension: {e}"));
            }
        },
        _ => n.push(Node::hex("body", "Body", body)),
    }
    n
}

fn ltkm_ext_node(e: &LtkmExt, flags: u8) -> Node {
    let mut n = Node::group("ltkm", "LTKM extension body")
        .with(Node::leaf("flags", "Flags", format!("{flags:02x}"), format!("0x{flags:02x}")))
        .with(Node::flag("security_policy_ext_flag", "security_policy_ext_flag", e.security_policy.is_some()))
        .with(Node::flag("tbk_flag", "tbk_flag", e.tbk_id.is_some()))
        .with(Node::flag("consumption_reporting_flag", "consumption_reporting_flag", e.consumption_reporting));
    if let Some(sp) = e.security_policy {
        n.push(Node::code(
            "security_policy_extension",
            "security_policy_extension",
            sp.policy.code().into(),
            policy_name(sp.policy),
        ));
        n.push(Node::num("play_back_counter", "play_back_counter", sp.play_back_counter.into()));
        n.push(Node::num("view_counter", "view_counter", sp.view_counter.into()));
    }
    if let Some(id) = e.tbk_id {
        n.push(Node::leaf("terminal_binding_key_id", "terminal_binding_key_id", id, format!("{id} (0x{id:08x})")));
    }
    n
}

fn stkm_ext_node(e: &StkmExt, flags: u8) -> Node {
    let par = e.protection_after_reception;
    let tpp = e.traffic_protection_protocol;
    let mut n = Node::group("stkm", "STKM extension body")
        .with(Node::leaf("flags", "Flags", format!("{flags:02x}"), format!("0x{flags:02x}")))
        .with(Node::code(
            "protection_after_reception",
            "protection_after_reception",
            par.code().into(),
            protection_name(par),
        ))
        .with(Node::flag("access_criteria_flag", "access_criteria_flag", e.access_criteria.is_some()))
        .with(Node::code(
            "traffic_protection_protocol",
            "traffic_protection_protocol",
            tpp.code().into(),
            protocol_name(tpp),
        ))
        .with(Node::flag("traffic_authentication_flag", "traffic_authentication_flag", e.traffic_authentication));
    if let Some(id) = e.tbk_id {
        n.push(Node::leaf("terminal_binding_key_id", "terminal_binding_key_id", id, format!("{id} (0x{id:08x})")));
    }
    if let Some(all) = &e.access_criteria {
        let mut list = Node::list("access_criteria", format!("Access criteria ({} descriptors)", all.len()));
        for d in all {
            list.push(match d {
                AccessDescriptor::ParentalRating { system, min_age } => Node::group(
                    "descriptor",
                    format!("Parental rating (tag 1): rating system {system}, minimum age {min_age}"),
                )
                .with(Node::num("tag", "", 1))
                .with(Node::num("rating_system", "", (*system).into()))
                .with(Node::num("minimum_age", "", (*min_age).into())),
                AccessDescriptor::ProgramId(id) => Node::group("descriptor", format!("Program ID (tag 2): {id}"))
                    .with(Node::num("tag", "", 2))
                    .with(Node::num("program_id", "", (*id).into())),
                AccessDescriptor::Unknown { tag, value } => {
                    Node::group("descriptor", format!("Unknown descriptor (tag {tag}): {}", hex::encode(value)))
                        .with(Node::num("tag", "", (*tag).into()))
                        .with(Node::hex("value", "", value))
                }
            });
        }
        n.push(list);
    }
    n
}

/// Judges the kind of message: data type 1 is a verification message; a message with a Key ID
/// or OMA BCAST extension is an STKM when it names a TEK ID or has no RAND, else an LTKM; the
/// rest is other MIKEY.
#[must_use]
pub fn classify(bytes: &[u8]) -> Kind {
    let Ok((hdr, iter)) = PayloadIter::new(bytes) else { return Kind::Other };
    if hdr.data_type == DataType::PskVerification {
        return Kind::Verification;
    }
    let (mut key_ext, mut tek_id, mut rand) = (false, false, false);
    for located in iter.map_while(Result::ok) {
        match located.payload {
            Payload::GeneralExt(g) if g.ext_type == ExtType::KeyId => {
                key_ext = true;
                tek_id |= KeyIdExt::read(g.data, 0).is_ok_and(|k| k.tek_id.is_some());
            }
            Payload::GeneralExt(g) if g.ext_type == ExtType::OmaBcast => key_ext = true,
            Payload::Rand(_) => rand = true,
            _ => {}
        }
    }
    match (key_ext, tek_id || !rand) {
        (false, _) => Kind::Other,
        (true, true) => Kind::Stkm,
        (true, false) => Kind::Ltkm,
    }
}

fn verdict(bytes: &[u8], syntax_ok: bool, keys: &InspectKeys, errors: &mut Vec<String>) -> Node {
    let mut n = Node::group("verdict", "Verdict");
    if !syntax_ok {
        n.push(Node::text("kind", "Message kind", "unknown (malformed)"));
        n.push(Node::leaf("profile_check", "Profile check", false, "not run: the message is malformed"));
        return n;
    }
    match classify(bytes) {
        Kind::Ltkm => ltkm_verdict(&mut n, bytes, keys, errors),
        Kind::Stkm => stkm_verdict(&mut n, bytes, keys, errors),
        Kind::Verification => verification_verdict(&mut n, bytes, keys, errors),
        Kind::Other => {
            // Well-formed MIKEY, but none of the profile's messages: say why with the typed
            // decoder of the closest kind (LTKMs carry a RAND, STKMs do not).
            n.push(Node::text(
                "kind",
                "Message kind",
                "other MIKEY (not an LTKM, STKM, verification message or solicited pull)",
            ));
            let has_rand =
                Message::decode(bytes).is_ok_and(|m| m.payloads.iter().any(|p| matches!(p.payload, Payload::Rand(_))));
            let err = if has_rand { Ltkm::decode(bytes).err() } else { Stkm::decode(bytes).err() };
            match err {
                Some(e) => refused(&mut n, &e, errors),
                None => passed(&mut n),
            }
        }
    }
    n
}

fn refused(n: &mut Node, e: &MikeyError, errors: &mut Vec<String>) {
    n.push(Node::leaf("profile_check", "Profile check", false, "FAILED"));
    n.push(Node::text("error", "Error", e.to_string()));
    errors.push(e.to_string());
}

fn passed(n: &mut Node) {
    n.push(Node::leaf("profile_check", "Profile check", true, "passed (typed decode)"));
}

fn mac_failed(n: &mut Node, e: &MikeyError, errors: &mut Vec<String>) {
    n.push(Node::leaf("mac", "MAC", "failed", "FAILED"));
    n.push(Node::text("error", "Error", e.to_string()));
    errors.push(e.to_string());
}

/// The MAC held but the decrypted key data breaks the profile.
fn key_data_failed(n: &mut Node, e: &MikeyError, errors: &mut Vec<String>) {
    n.push(Node::leaf("key_data_check", "Key data check", false, "FAILED"));
    n.push(Node::text("error", "Error", e.to_string()));
    errors.push(e.to_string());
}

fn validity_node(v: KeyValidity) -> Node {
    match v {
        KeyValidity::TsWindow { ts_low, ts_high } => Node::group("key_validity", "Key validity")
            .with(Node::text("form", "", "ts_window"))
            .with(Node::num("ts_low", "", ts_low.into()))
            .with(Node::num("ts_high", "", ts_high.into()))
            .summarised(format!("STKM TS window [{ts_low}, {ts_high}] (TS low, TS high)")),
        KeyValidity::TekIdWindow { seq_l, seq_u } => Node::group("key_validity", "Key validity")
            .with(Node::text("form", "", "tek_id_window"))
            .with(Node::num("seq_l", "", seq_l.into()))
            .with(Node::num("seq_u", "", seq_u.into()))
            .summarised(format!("TEK ID window SEQl {seq_l} < TEK ID ≤ SEQu {seq_u}")),
    }
}

fn ltkm_verdict(n: &mut Node, bytes: &[u8], keys: &InspectKeys, errors: &mut Vec<String>) {
    let l = match Ltkm::decode(bytes) {
        Ok(l) => l,
        Err(e) => {
            n.push(Node::text("kind", "Message kind", "LTKM"));
            return refused(n, &e, errors);
        }
    };
    let pull = l.is_solicited_pull();
    n.push(Node::text("kind", "Message kind", if pull { "solicited-pull trigger" } else { "LTKM" }));
    passed(n);
    let form = if l.srtp_cs().is_some() { "streaming (#CS 1, SRTP-ID map)" } else { "download (#CS 0, empty map)" };
    n.push(Node::text("form", "Form", form));
    n.push(key_domain_node(l.key_domain_id()));
    n.push(sek_pek_id_node(l.sek_pek_id()));
    n.push(Node::num("ts", "TS (LTKM counter)", l.ts().into()));
    n.push(Node::hex("rand", "RAND", l.rand()));
    n.push(Node::text("idi", "IDi (BSM FQDN)", l.idi()));
    n.push(Node::text("idr", "IDr (B-TID)", l.idr()));
    n.push(Node::flag("verification_requested", "Verification requested (V)", l.verification_requested()));
    if let Some(p) = l.srtp_policy() {
        let r = p.roc_rate().map_or("none (plain RFC 3711)".to_owned(), |r| r.to_string());
        n.push(Node::text("roc_rate", "RFC 4771 ROC transmission rate R", r));
    }
    let Some(smk) = &keys.smk else {
        n.push(Node::leaf("mac", "MAC", "not checked", "not checked (give --smk to verify and decrypt)"));
        return;
    };
    match l.open(smk) {
        Err(e @ MikeyError::MacMismatch { .. }) => mac_failed(n, &e, errors),
        Err(e) => {
            n.push(Node::leaf("mac", "MAC", "verified", "verified with the SMK"));
            key_data_failed(n, &e, errors);
        }
        Ok(OpenedLtkm::SolicitedPull(p)) => {
            n.push(Node::leaf("mac", "MAC", "verified", "verified with the SMK"));
            n.push(Node::text(
                "action",
                "Action",
                format!(
                    "solicited pull: the terminal should send an LTKM Request for the current key of Key Group {}",
                    p.key_group
                ),
            ));
        }
        Ok(OpenedLtkm::Key(c)) => {
            n.push(Node::leaf("mac", "MAC", "verified", "verified with the SMK"));
            let action = match (&c.key, c.validity.is_invalidation()) {
                (_, true) => "invalidation (lower bound above upper bound): the card revokes this SEK/PEK",
                (None, false) => "key-validity update (no key): the card changes the window of the key it holds",
                (Some(_), false) => "key delivery",
            };
            n.push(Node::text("action", "Action", action));
            match &c.key {
                Some(k) => n.push(Node::hex("sek_pek", "SEK/PEK (decrypted)", k.expose_secret())),
                None => n.push(Node::leaf("sek_pek", "SEK/PEK (decrypted)", Option::<String>::None, "none")),
            }
            n.push(validity_node(c.validity));
        }
    }
}

fn stkm_verdict(n: &mut Node, bytes: &[u8], keys: &InspectKeys, errors: &mut Vec<String>) {
    n.push(Node::text("kind", "Message kind", "STKM"));
    let s = match Stkm::decode(bytes) {
        Ok(s) => s,
        Err(e) => return refused(n, &e, errors),
    };
    passed(n);
    n.push(key_domain_node(s.key_domain_id()));
    n.push(sek_pek_id_node(s.sek_pek_id()));
    n.push(Node::leaf("tek_id", "TEK ID", s.tek_id(), s.tek_id().to_string()));
    n.push(Node::num("ts", "TS", s.ts().into()));
    let Some((sek, rand)) = &keys.sek else {
        n.push(Node::leaf("mac", "MAC", "not checked", "not checked (give --sek and --rand to verify and decrypt)"));
        return;
    };
    let c = match s.open(sek, rand) {
        Ok(c) => c,
        Err(e @ MikeyError::MacMismatch { .. }) => return mac_failed(n, &e, errors),
        Err(e) => {
            n.push(Node::leaf("mac", "MAC", "verified", "verified with the SEK/PEK"));
            return key_data_failed(n, &e, errors);
        }
    };
    n.push(Node::leaf("mac", "MAC", "verified", "verified with the SEK/PEK and its RAND"));
    match &c.tek {
        TekField::Clear(t) => n.push(Node::hex("tek", "TEK (decrypted)", t.expose_secret())),
        TekField::WrappedByTbk(w) => {
            n.push(Node::hex("tek_wrapped", "TEK wrapped by the TBK", w));
            match &keys.tbk {
                None => {
                    n.push(Node::leaf("tek", "TEK", Option::<String>::None, "terminal-bound: give --tbk to unwrap"))
                }
                Some(tbk) => match c.tek.tek(Some(tbk)) {
                    Ok(t) => n.push(Node::hex("tek", "TEK (unwrapped with the TBK)", t.expose_secret())),
                    Err(e) => {
                        n.push(Node::text("error", "Error", e.to_string()));
                        errors.push(e.to_string());
                    }
                },
            }
        }
    }
    match &c.salt {
        Some(salt) => n.push(Node::hex("salt", "Salt (decrypted)", salt.expose_secret())),
        None => n.push(Node::leaf("salt", "Salt", Option::<String>::None, "none (download: key data type TGK)")),
    }
    // Profile P-9: the SRTP MKI and the ISMACryp key indicator name the key as SEK/PEK ID ‖ TEK ID.
    let mut mki = c.sek_pek_id.to_bytes().to_vec();
    mki.extend_from_slice(&c.tek_id.to_be_bytes());
    n.push(Node::hex("mki", "MKI / key indicator (SEK/PEK ID ‖ TEK ID)", &mki));
}

fn verification_verdict(n: &mut Node, bytes: &[u8], keys: &InspectKeys, errors: &mut Vec<String>) {
    n.push(Node::text("kind", "Message kind", "verification message"));
    let v = match VerificationMessage::decode(bytes) {
        Ok(v) => v,
        Err(e) => return refused(n, &e, errors),
    };
    passed(n);
    n.push(Node::num("ts", "TS (the LTKM's)", v.ts().into()));
    n.push(Node::text("idr", "IDr (B-TID)", v.idr()));
    let (Some(smk), Some(ltkm_bytes)) = (&keys.smk, &keys.ltkm) else {
        n.push(Node::leaf("mac", "MAC", "not checked", "not checked (give --smk and --ltkm, the LTKM it answers)"));
        return;
    };
    let ltkm = match Ltkm::decode(ltkm_bytes) {
        Ok(l) => l,
        Err(e) => {
            let msg = format!("--ltkm: {e}");
            n.push(Node::text("error", "Error", msg.clone()));
            errors.push(msg);
            return;
        }
    };
    match v.verify(&ltkm, &ltkm.message_keys(smk)) {
        Ok(()) => n.push(Node::leaf("mac", "MAC", "verified", "verified: answers the given LTKM, with its SMK")),
        Err(e @ MikeyError::MacMismatch { .. }) => mac_failed(n, &e, errors),
        Err(e) => {
            n.push(Node::leaf("mac", "MAC", "not checked", "not checked: the message does not answer the given LTKM"));
            n.push(Node::text("error", "Error", e.to_string()));
            errors.push(e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vectors.md §6: an MBMS/BCAST-shaped STKM structure with a zero MAC.
    const V6: &str = "010015000a0b0c0d00010503000f000300f11001040001000102020001150200000007010500020240\
                      00010000010000000000000000000000000000000000000000";

    #[test]
    fn classifies_vectors_6_as_stkm_and_refuses_its_empty_kemac() {
        let b = hex::decode(V6).unwrap();
        assert_eq!(classify(&b), Kind::Stkm);
        let i = inspect(&b, None, &InspectKeys::default());
        assert!(!i.ok());
        assert!(i.errors[0].contains("STKM refused"), "{:?}", i.errors);
        let text = i.node.to_text();
        assert!(text.contains("Key Domain ID: 00f110 (MCC 001, MNC 01)"), "{text}");
        assert!(text.contains("SEK/PEK ID (MSK ID): 00010001 (Key Group 1, Key Number 1)"), "{text}");
        assert!(text.contains("protection_after_reception: content protection; must not be recorded (1)"), "{text}");
    }

    #[test]
    fn vectors_5_is_other_mikey_and_not_a_profile_message() {
        let b = hex::decode(
            "010005000102030401000011223344000000000b00e1d2c3b4a59687780110a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\
             0001002431ed10ac96a4b819490e6968662227308ead13c34d717a225d5136bc64814d416f18ad0c01\
             b394851721ebbc5648dfefb187d82ed79de01eeb",
        )
        .unwrap();
        assert_eq!(classify(&b), Kind::Other);
        let i = inspect(&b, None, &InspectKeys::default());
        assert_eq!(i.errors.len(), 1, "well-formed, but not a profile message: {:?}", i.errors);
        assert!(i.errors[0].contains("LTKM refused"), "{:?}", i.errors);
        let text = i.node.to_text();
        assert!(text.contains("SSRC: 0x11223344"), "{text}");
        assert!(text.contains("Message kind: other MIKEY"), "{text}");
    }

    #[test]
    fn no_panic_on_truncated_or_corrupted_messages() {
        use keycast_crypto::keys::{Tek, TekSalt};
        use keycast_mikey::{LtkmContent, StkmContent};
        let smk = Smk::from_bytes([1; 32]);
        let sek = SekPek::from_bytes([2; 16]);
        let rand = [3; 16];
        let kd = KeyDomainId::from_mcc_mnc("001", "01").unwrap();
        let ltkm = LtkmContent {
            csb_id: 1,
            verification_requested: true,
            srtp_cs: None,
            key_domain_id: kd,
            sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
            ts: 1,
            rand,
            idi: "bmsc.example.org".into(),
            idr: "b-tid@bsf.example.org".into(),
            srtp_policy: None,
            ext: None,
            key: Some(sek.clone()),
            validity: KeyValidity::TekIdWindow { seq_l: 0, seq_u: 9 },
        }
        .seal(&smk)
        .unwrap();
        let stkm = StkmContent {
            csb_id: 2,
            key_domain_id: kd,
            sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
            tek_id: 1,
            ts: 5,
            ext: None,
            tek: TekField::Clear(Tek::from_bytes([4; 16])),
            salt: Some(TekSalt::from_bytes([5; 14])),
        }
        .seal(&sek, &rand)
        .unwrap();
        let keys = InspectKeys { smk: Some(smk), sek: Some((sek, rand)), tbk: None, ltkm: Some(ltkm.clone()) };
        for msg in [&ltkm, &stkm] {
            assert!(inspect(msg, None, &keys).ok());
            for cut in 0..msg.len() {
                assert!(!inspect(&msg[..cut], None, &keys).ok(), "a truncated message never passes");
            }
            for i in 0..msg.len() {
                for bit in [0x01, 0x80] {
                    let mut bad = msg.clone();
                    bad[i] ^= bit;
                    // Every single-bit change fails somewhere (syntax, profile or MAC).
                    assert!(!inspect(&bad, None, &keys).ok(), "flip {bit:#x} at {i} passed");
                }
            }
        }
    }
}
