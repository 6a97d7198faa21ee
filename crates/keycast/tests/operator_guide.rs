//! docs/operator-guide.md stays true: each configuration example parses with its role's own
//! parser, and the catalogue example applies to a running BSM through `keycast bsm apply`.

mod served;

use std::path::Path;
use std::process::Command;

use keycast::broadcast_cmd::BroadcastSettings;
use keycast::bsf_cmd::Settings;
use keycast::bsm_cmd::BsmSettings;
use served::stack::BsmWithKey;

fn guide() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/operator-guide.md")).unwrap()
}

/// The fenced block right after the marker comment `<!-- {marker} -->`.
fn block(doc: &str, marker: &str) -> String {
    let at = doc.find(&format!("<!-- {marker} -->")).unwrap_or_else(|| panic!("no {marker} example"));
    let rest = &doc[at..];
    let start = rest.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + rest[start..].find("```").expect("the block ends");
    rest[start..end].to_owned()
}

#[test]
fn the_configuration_examples_parse() {
    let doc = guide();
    let dir = Path::new("/etc/keycast/x.toml");
    let bsf = Settings::parse(&block(&doc, "config: bsf"), dir).expect("the BSF example");
    assert_eq!(bsf.domain, "bsf.example.org");
    let bsm = BsmSettings::parse(&block(&doc, "config: bsm"), dir).expect("the BSM example");
    assert_eq!(bsm.fqdn, "bsm.example.org");
    let broadcast = BroadcastSettings::parse(&block(&doc, "config: broadcast"), dir).expect("the broadcaster example");
    assert_eq!(broadcast.key_group, 1);
}

#[test]
fn the_catalogue_example_applies_to_a_running_bsm() {
    let doc = guide();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let stack = BsmWithKey::start(d);
    std::fs::write(d.join("catalogue.toml"), block(&doc, "catalogue")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keycast"))
        .args(["bsm", "--config"])
        .arg(d.join("bsm.toml"))
        .arg("apply")
        .arg(d.join("catalogue.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("applied 4 catalogue entries"), "{text}");
    // The pay-per-time offer keeps its play-backs (P-4 code 1 for its buyers' keys).
    let out = Command::new(env!("CARGO_BIN_EXE_keycast"))
        .args(["bsm", "--config"])
        .arg(d.join("bsm.toml"))
        .args(["show", "offers", "--json"])
        .output()
        .unwrap();
    let offers = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && offers.contains(r#""kind":"ppt","period_secs":3600,"play_backs":2"#), "{offers}");
    // The guide it publishes, exported as files (plain HTTP: this BSM has no [tls]).
    let out = Command::new(env!("CARGO_BIN_EXE_keycast"))
        .args(["bsm", "--config"])
        .arg(d.join("bsm.toml"))
        .args(["guide", "export"])
        .arg(d.join("guide"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_exported_guide(&d.join("guide"), "basic-hour");
    let mut bsm = stack.bsm;
    assert!(bsm.terminate().success());
}

/// `dir` holds what `keycast bsm guide export` writes: the index, every fragment it lists (among
/// them the PurchaseData `offer`), and the USD and SPD of the streaming service `news`.
fn assert_exported_guide(dir: &Path, offer: &str) {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let fragments = index["fragments"].as_array().unwrap();
    assert!(!fragments.is_empty(), "{index:#}");
    for f in fragments {
        let id = f["id"].as_str().unwrap();
        let xml = std::fs::read_to_string(dir.join("fragments").join(format!("{id}.xml"))).unwrap();
        assert!(xml.contains(id), "fragment {id}: {xml}");
    }
    let offer_xml = std::fs::read_to_string(dir.join("fragments").join(format!("{offer}.xml"))).unwrap();
    assert!(offer_xml.contains("PurchaseData"), "{offer_xml}");
    assert!(std::fs::read_to_string(dir.join("usd/news.xml")).unwrap().contains("userServiceDescription"));
    assert!(std::fs::read_to_string(dir.join("spd/news.xml")).unwrap().contains("securityDescription"));
}
