//! Everything we write is well-formed XML according to libxml2's `xmllint --noout` (skipped,
//! with a message, when xmllint is not installed).

mod common;

use common::{FRAGMENTS, data};
use keycast_guide::fragments::{Fragment, Service};
use keycast_guide::usd::UserServiceBundle;
use std::path::Path;
use std::process::Command;

const XMLLINT: &str = "/usr/bin/xmllint";

fn lint_all(docs: &[(String, String)]) {
    if !Path::new(XMLLINT).exists() {
        eprintln!("SKIPPED: {XMLLINT} is not installed; built XML not checked for well-formedness");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (name, xml) in docs {
        let p = dir.path().join(name);
        std::fs::write(&p, xml).unwrap();
        paths.push(p);
    }
    let out = Command::new(XMLLINT).arg("--noout").args(&paths).output().unwrap();
    assert!(out.status.success(), "xmllint refused our output:\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn built_fragments_and_usd_are_well_formed() {
    let mut docs: Vec<(String, String)> =
        FRAGMENTS.iter().map(|f| (format!("built-{f}"), Fragment::from_xml(&data(f)).unwrap().to_xml())).collect();
    docs.push(("built-usd.xml".into(), UserServiceBundle::from_xml(&data("usd.xml")).unwrap().to_xml()));
    // Hostile strings: markup characters, quotes, line breaks and a character XML 1.0 cannot
    // carry (dropped on output).
    let mut s = Service::from_xml(&data("service.xml")).unwrap();
    s.names = vec!["<b>\"Q&A\"</b> 'x'\n\ttab".into(), "bell\u{7}".into()];
    s.global_service_id = Some("urn:x?a=1&b=<2>".into());
    docs.push(("hostile.xml".into(), s.to_xml()));
    lint_all(&docs);
    // And our own reader takes the hostile one back (the control character is gone).
    let back = Service::from_xml(&s.to_xml()).unwrap();
    assert_eq!(back.names, ["<b>\"Q&A\"</b> 'x'\n\ttab", "bell"]);
    assert_eq!(back.global_service_id, s.global_service_id);
}

#[test]
fn xmllint_notices_broken_xml() {
    // The check can fail: a truncated document is refused.
    if !Path::new(XMLLINT).exists() {
        eprintln!("SKIPPED: {XMLLINT} is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.xml");
    let xml = Service::from_xml(&data("service.xml")).unwrap().to_xml();
    std::fs::write(&p, &xml[..xml.len() - 4]).unwrap();
    let out = Command::new(XMLLINT).arg("--noout").arg(&p).output().unwrap();
    assert!(!out.status.success());
}
