//! Interop with Wireshark's MIKEY dissector (tshark 4.0): our LTKMs, STKMs, verification message
//! and solicited pull, written to a pcap with our writer, must be walked by tshark without a
//! malformed packet or expert warning, and every field tshark shows must equal what
//! `keycast inspect --json` shows for the same capture.
//!
//! tshark decodes MIKEY on UDP 2269 by default; 4359 needs `-d udp.port==4359,mikey`
//! (interop.md §1). It does not decode the Key ID / OMA BCAST extensions, the empty map, the
//! COUNTER value or encrypted key data, so those are compared as raw bytes or codes.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

const DECODE_AS: &str = "udp.port==4359,mikey";

fn tshark_available() -> bool {
    Command::new("tshark").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark").args(args).output().expect("run tshark");
    assert!(out.status.success(), "tshark {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("tshark output is UTF-8")
}

/// One `<field …/>` of tshark's PDML output.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    show: String,
    value: String,
    pos: usize,
    size: usize,
}

/// The value of attribute `attr` in one PDML line, XML entities decoded.
fn attr(line: &str, attr: &str) -> Option<String> {
    let key = format!(" {attr}=\"");
    let start = line.find(&key)? + key.len();
    let end = start + line[start..].find('"')?;
    Some(
        line[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// A payload as tshark shows it: its own field and the fields below it.
#[derive(Debug)]
struct TsPayload {
    head: Field,
    fields: Vec<Field>,
}

impl TsPayload {
    fn all(&self, name: &str) -> Vec<&Field> {
        self.fields.iter().filter(|f| f.name == name).collect()
    }

    fn get(&self, name: &str) -> &Field {
        let all = self.all(name);
        assert_eq!(all.len(), 1, "{name} in {}: {:?}", self.head.name, self.fields);
        all[0]
    }

    fn num(&self, name: &str) -> u64 {
        let show = &self.get(name).show;
        match show.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).unwrap(),
            None => show.parse().unwrap_or_else(|_| panic!("{name} = {show:?} is not a number")),
        }
    }
}

/// Every packet's MIKEY payloads, with the position of the MIKEY message in the frame.
fn parse_pdml(pdml: &str) -> Vec<(usize, Vec<TsPayload>)> {
    const PAYLOADS: [&str; 15] = [
        "mikey.hdr",
        "mikey.kemac",
        "mikey.pke",
        "mikey.dh",
        "mikey.sign",
        "mikey.t",
        "mikey.id",
        "mikey.cert",
        "mikey.chash",
        "mikey.v",
        "mikey.sp",
        "mikey.rand",
        "mikey.err",
        "mikey.idr",
        "mikey.ext",
    ];
    let mut packets = Vec::new();
    let mut in_mikey = false;
    let mut current: Option<(usize, Vec<TsPayload>)> = None;
    for line in pdml.lines() {
        let t = line.trim_start();
        if t.starts_with("<packet>") {
            current = Some((0, Vec::new()));
        } else if t.starts_with("</packet>") {
            packets.push(current.take().expect("packet open"));
        } else if t.starts_with("<proto ") {
            in_mikey = attr(t, "name").as_deref() == Some("mikey");
            if in_mikey {
                current.as_mut().expect("packet open").0 = attr(t, "pos").unwrap().parse().unwrap();
            }
        } else if t.starts_with("</proto>") {
            in_mikey = false;
        } else if in_mikey && t.starts_with("<field ") {
            let f = Field {
                name: attr(t, "name").unwrap_or_default(),
                show: attr(t, "show").unwrap_or_default(),
                value: attr(t, "value").unwrap_or_default(),
                pos: attr(t, "pos").and_then(|p| p.parse().ok()).unwrap_or_default(),
                size: attr(t, "size").and_then(|p| p.parse().ok()).unwrap_or_default(),
            };
            let payloads = &mut current.as_mut().expect("packet open").1;
            if PAYLOADS.contains(&f.name.as_str()) {
                payloads.push(TsPayload { head: f, fields: Vec::new() });
            } else {
                payloads.last_mut().expect("a field before any payload").fields.push(f);
            }
        }
        // tshark adds these fields to a packet it could not walk completely.
        assert!(
            !t.contains("name=\"_ws.malformed\"") && !t.contains("name=\"_ws.expert"),
            "tshark reports a problem: {t}"
        );
    }
    packets
}

/// Our name of a payload, by tshark's field name.
fn our_type(ts_name: &str) -> &'static str {
    match ts_name {
        "mikey.ext" => "General Extension",
        "mikey.t" => "T",
        "mikey.rand" => "RAND",
        "mikey.id" => "ID",
        "mikey.sp" => "SP",
        "mikey.kemac" => "KEMAC",
        "mikey.v" => "V",
        other => panic!("unexpected payload {other}"),
    }
}

fn code(v: &Value) -> u64 {
    v["code"].as_u64().unwrap()
}

/// Compares one packet; returns the number of (payload, SP parameter) pairs compared.
fn compare_packet(frame: usize, base: usize, ts: &[TsPayload], ours: &Value) -> (usize, usize) {
    let mut compared = (0, 0);
    let ctx = |what: &str| format!("frame {frame}: {what}");
    // HDR.
    let hdr = &ts[0];
    let h = &ours["hdr"];
    assert_eq!(hdr.head.name, "mikey.hdr", "{}", ctx("HDR first"));
    assert_eq!(hdr.head.size as u64, h["length"].as_u64().unwrap(), "{}", ctx("HDR length"));
    assert_eq!(hdr.num("mikey.version"), h["version"].as_u64().unwrap(), "{}", ctx("version"));
    assert_eq!(hdr.num("mikey.type"), code(&h["data_type"]), "{}", ctx("data type"));
    assert_eq!(hdr.num("mikey.next_payload"), code(&h["next_payload"]), "{}", ctx("HDR next payload"));
    assert_eq!(hdr.num("mikey.v.set") == 1, h["v"].as_bool().unwrap(), "{}", ctx("V"));
    assert_eq!(hdr.num("mikey.prf_func"), code(&h["prf_func"]), "{}", ctx("PRF"));
    assert_eq!(hdr.get("mikey.csb_id").show, format!("0x{}", h["csb_id"].as_str().unwrap()), "{}", ctx("CSB ID"));
    assert_eq!(hdr.num("mikey.cs_count"), h["cs_count"].as_u64().unwrap(), "{}", ctx("#CS"));
    assert_eq!(hdr.num("mikey.cs_id_map_type"), code(&h["cs_id_map_type"]), "{}", ctx("map type"));
    let entries = h["srtp_id_map"].as_array().cloned().unwrap_or_default();
    assert_eq!(hdr.all("mikey.srtp_id.ssrc").len(), entries.len(), "{}", ctx("SRTP-ID entries"));
    for (i, e) in entries.iter().enumerate() {
        let n = |name: &str| {
            let s = &hdr.all(name)[i].show;
            s.strip_prefix("0x").map_or_else(|| s.parse::<u64>().unwrap(), |h| u64::from_str_radix(h, 16).unwrap())
        };
        assert_eq!(n("mikey.srtp_id.policy_no"), e["policy_no"].as_u64().unwrap(), "{}", ctx("policy no"));
        assert_eq!(n("mikey.srtp_id.ssrc"), e["ssrc"].as_u64().unwrap(), "{}", ctx("SSRC"));
        assert_eq!(n("mikey.srtp_id.roc"), e["roc"].as_u64().unwrap(), "{}", ctx("ROC"));
    }
    // The payload chain.
    let payloads = ours["payloads"].as_array().unwrap();
    let ts_types: Vec<&str> = ts[1..].iter().map(|p| our_type(&p.head.name)).collect();
    let our_types: Vec<&str> = payloads.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(ts_types, our_types, "{}", ctx("payload chain"));
    for (t, o) in ts[1..].iter().zip(payloads) {
        compared.0 += 1;
        let what = format!("{} at {}", t.head.name, o["offset"]);
        let ctx = |f: &str| format!("frame {frame}: {what}: {f}");
        assert_eq!((t.head.pos - base) as u64, o["offset"].as_u64().unwrap(), "{}", ctx("offset"));
        assert_eq!(t.head.size as u64, o["length"].as_u64().unwrap(), "{}", ctx("length"));
        assert_eq!(t.num("mikey.next_payload"), code(&o["next_payload"]), "{}", ctx("next payload"));
        match t.head.name.as_str() {
            "mikey.ext" => {
                assert_eq!(t.num("mikey.ext.type"), code(&o["ext_type"]), "{}", ctx("ext type"));
                assert_eq!(t.num("mikey.ext.len"), o["ext_len"].as_u64().unwrap(), "{}", ctx("ext len"));
                assert_eq!(t.get("mikey.ext.data").value, o["data"].as_str().unwrap(), "{}", ctx("ext data"));
            }
            "mikey.t" => assert_eq!(t.num("mikey.t.ts_type"), code(&o["ts_type"]), "{}", ctx("TS type")),
            "mikey.rand" => {
                assert_eq!(t.num("mikey.rand.len"), o["rand_len"].as_u64().unwrap(), "{}", ctx("RAND len"));
                assert_eq!(t.get("mikey.rand.data").value, o["rand"].as_str().unwrap(), "{}", ctx("RAND"));
            }
            "mikey.id" => {
                assert_eq!(t.num("mikey.id.type"), code(&o["id_type"]), "{}", ctx("ID type"));
                assert_eq!(t.num("mikey.id.len"), o["id_len"].as_u64().unwrap(), "{}", ctx("ID len"));
                assert_eq!(t.get("mikey.id.data").show, o["id_data"].as_str().unwrap(), "{}", ctx("ID data"));
            }
            "mikey.sp" => {
                assert_eq!(t.num("mikey.sp.no"), o["policy_no"].as_u64().unwrap(), "{}", ctx("policy no"));
                assert_eq!(t.num("mikey.sp.proto_type"), code(&o["prot_type"]), "{}", ctx("prot type"));
                assert_eq!(
                    t.num("mikey.sp.param_len"),
                    o["policy_param_len"].as_u64().unwrap(),
                    "{}",
                    ctx("param len")
                );
                let ts_params: Vec<(u64, u64, String)> = t
                    .all("mikey.sp.param.type")
                    .iter()
                    .zip(t.all("mikey.sp.param.len"))
                    // tshark's field name really is spelled "patam".
                    .zip(t.all("mikey.sp.patam.value"))
                    .map(|((ty, len), v)| (ty.show.parse().unwrap(), len.show.parse().unwrap(), v.value.clone()))
                    .collect();
                let our_params: Vec<(u64, u64, String)> = o["params"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (code(&p["type"]), p["length"].as_u64().unwrap(), p["value"].as_str().unwrap().to_owned()))
                    .collect();
                assert_eq!(ts_params, our_params, "{}", ctx("SP parameters"));
                compared.1 += ts_params.len();
                // The parameters tshark names, against our values.
                for (name, ty) in [
                    ("mikey.sp.encr_alg", 0),
                    ("mikey.sp.auth_alg", 2),
                    ("mikey.sp.kd_rate", 6),
                    ("mikey.sp.auth_tag_len", 11),
                ] {
                    let ours = our_params.iter().find(|p| p.0 == ty).map(|p| u64::from_str_radix(&p.2, 16).unwrap());
                    assert_eq!(t.all(name).first().map(|_| t.num(name)), ours, "{}", ctx(name));
                }
            }
            "mikey.kemac" => {
                assert_eq!(t.num("mikey.kemac.encr_alg"), code(&o["encr_alg"]), "{}", ctx("encr alg"));
                assert_eq!(
                    t.num("mikey.kemac.key_data_len"),
                    o["encr_data_len"].as_u64().unwrap(),
                    "{}",
                    ctx("encr data len")
                );
                assert_eq!(
                    t.get("mikey.kemac.key_data").value,
                    o["encr_data"].as_str().unwrap(),
                    "{}",
                    ctx("encr data")
                );
                assert_eq!(t.num("mikey.kemac.mac_alg"), code(&o["mac_alg"]), "{}", ctx("MAC alg"));
                assert_eq!(t.get("mikey.kemac.mac").value, o["mac"].as_str().unwrap(), "{}", ctx("MAC"));
            }
            "mikey.v" => {
                assert_eq!(t.num("mikey.v.auth_alg"), code(&o["auth_alg"]), "{}", ctx("auth alg"));
                assert_eq!(t.get("mikey.v.ver_data").value, o["ver_data"].as_str().unwrap(), "{}", ctx("ver data"));
            }
            other => panic!("unexpected payload {other}"),
        }
    }
    compared
}

/// (description, source port, destination port, message).
type Datagram = (&'static str, u16, u16, Vec<u8>);

fn messages() -> Vec<Datagram> {
    let ltkm = ltkm_streaming();
    let vm = verification(&ltkm);
    vec![
        ("LTKM streaming, SP with R, OMA BCAST extension", 40000, 2269, ltkm),
        ("LTKM download, no extension", 40000, 2269, ltkm_download()),
        ("LTKM download with OMA BCAST extension, to 4359", 40000, 4359, ltkm_download_ext()),
        ("STKM streaming with access criteria", 40001, 2269, stkm_streaming()),
        ("STKM download (TGK)", 40001, 2269, stkm_download()),
        ("STKM terminal-bound (TBK-wrapped TEK)", 40001, 2269, stkm_bound()),
        ("verification message", 2269, 2269, vm),
        ("solicited-pull trigger", 40000, 2269, solicited_pull()),
        ("invalidation LTKM", 40000, 2269, ltkm_invalidation()),
    ]
}

fn write_capture(dir: &Path) -> (std::path::PathBuf, Vec<Datagram>) {
    let msgs = messages();
    let path = dir.join("keycast.pcap");
    let packets: Vec<(u16, u16, &[u8])> = msgs.iter().map(|(_, s, d, m)| (*s, *d, m.as_slice())).collect();
    write_pcap(&path, &packets);
    (path, msgs)
}

fn our_json(path: &Path) -> Value {
    let out = assert_cmd::Command::cargo_bin("keycast")
        .unwrap()
        .args(["inspect", "--json", "--smk", SMK_HEX, "--sek", SEK_HEX, "--rand", RAND_HEX, "--tbk", TBK_HEX])
        .args(["--ltkm", &hex::encode(ltkm_streaming()), "--pcap"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "keycast inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn tshark_walks_every_message_and_agrees_with_inspect() {
    if !tshark_available() {
        println!("skipped: tshark not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, msgs) = write_capture(dir.path());
    let file = path.to_str().unwrap();

    // Nothing malformed, no expert information (also with checksum validation on).
    let flagged = tshark(&[
        "-r",
        file,
        "-d",
        DECODE_AS,
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
        "-Y",
        "_ws.malformed || _ws.expert",
    ]);
    assert!(flagged.trim().is_empty(), "tshark flags packets:\n{flagged}");

    // The full tree: every frame is MIKEY, nothing malformed.
    let tree = tshark(&["-r", file, "-d", DECODE_AS, "-V", "-O", "mikey"]);
    assert_eq!(tree.matches("Multimedia Internet KEYing").count(), msgs.len(), "{tree}");
    assert!(!tree.contains("Malformed") && !tree.contains("Exception"), "{tree}");

    // Our own reading of the same capture, every message checked with its keys.
    let ours = our_json(&path);
    let our_msgs = ours["messages"].as_array().unwrap();
    assert_eq!(our_msgs.len(), msgs.len());
    for (m, (what, ..)) in our_msgs.iter().zip(&msgs) {
        assert_eq!(m["ok"], true, "{what}: {m:#}");
    }

    // Field by field.
    let pdml = tshark(&["-r", file, "-d", DECODE_AS, "-T", "pdml"]);
    let packets = parse_pdml(&pdml);
    assert_eq!(packets.len(), msgs.len());
    let (mut payloads, mut sp_params) = (0, 0);
    for (i, ((base, ts), ours)) in packets.iter().zip(our_msgs).enumerate() {
        assert!(!ts.is_empty(), "frame {}: tshark shows no MIKEY ({})", i + 1, msgs[i].0);
        let (p, s) = compare_packet(i + 1, *base, ts, ours);
        payloads += p;
        sp_params += s;
    }
    let expected: usize = our_msgs.iter().map(|m| m["payloads"].as_array().unwrap().len()).sum();
    assert_eq!(payloads, expected, "every payload was compared");
    assert_eq!(sp_params, 10, "two streaming LTKMs (delivery, invalidation), each SP with 4 parameters and R");

    // The one-line-per-frame view.
    let fields = tshark(&[
        "-r",
        file,
        "-d",
        DECODE_AS,
        "-T",
        "fields",
        "-E",
        "aggregator=|",
        "-e",
        "frame.number",
        "-e",
        "mikey.type",
        "-e",
        "mikey.csb_id",
        "-e",
        "mikey.cs_id_map_type",
        "-e",
        "mikey.ext.type",
        "-e",
        "mikey.kemac.encr_alg",
        "-e",
        "mikey.t.ts_type",
    ]);
    let lines: Vec<&str> = fields.lines().collect();
    assert_eq!(lines.len(), msgs.len());
    for (line, ours) in lines.iter().zip(our_msgs) {
        let cols: Vec<&str> = line.split('\t').collect();
        let payloads = ours["payloads"].as_array().unwrap();
        let of_type = |t: &str, key: &str| -> String {
            payloads.iter().filter(|p| p["type"] == t).map(|p| code(&p[key]).to_string()).collect::<Vec<_>>().join("|")
        };
        assert_eq!(cols[0], ours["frame"].to_string());
        assert_eq!(cols[1], code(&ours["hdr"]["data_type"]).to_string());
        assert_eq!(cols[2], format!("0x{}", ours["hdr"]["csb_id"].as_str().unwrap()));
        assert_eq!(cols[3], code(&ours["hdr"]["cs_id_map_type"]).to_string());
        assert_eq!(cols[4], of_type("General Extension", "ext_type"), "{line}");
        assert_eq!(cols[5], of_type("KEMAC", "encr_alg"), "{line}");
        assert_eq!(cols[6], of_type("T", "ts_type"), "{line}");
    }
}

#[test]
fn pdml_parser_flags_a_malformed_message() {
    if !tshark_available() {
        println!("skipped: tshark not installed");
        return;
    }
    // Guard against a parser that silently sees nothing: a truncated LTKM must be flagged.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.pcap");
    let ltkm = ltkm_streaming();
    write_pcap(&path, &[(40000, 2269, &ltkm[..50])]);
    let flagged = tshark(&["-r", path.to_str().unwrap(), "-Y", "_ws.malformed || _ws.expert"]);
    assert_eq!(flagged.lines().count(), 1, "{flagged}");
    let pdml = tshark(&["-r", path.to_str().unwrap(), "-T", "pdml"]);
    assert!(std::panic::catch_unwind(|| parse_pdml(&pdml)).is_err());
}
