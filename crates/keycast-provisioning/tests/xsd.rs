//! Validates both directions against the schemas with `xmllint` (Debian `libxml2-utils`): what our
//! encoders write, the hand-written terminal requests under `tests/data/sprov/`, and invalid
//! documents, which both xmllint and our decoders must refuse. Without xmllint the xmllint half
//! prints `skipped: xmllint not installed` and passes; the decoder half always runs.

mod common;

use common::{data_dir, have_xmllint, mbms_documents, samples, schema_dir, sprov_message, xmllint};
use keycast_provisioning::sprov::SprovMessage;
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

fn sprov_xsd() -> PathBuf {
    schema_dir().join("keycast-sprov.xsd")
}

fn xml_files(dir: PathBuf) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    v.sort();
    v
}

#[test]
fn encoded_sprov_messages_validate() {
    if !have_xmllint() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut per_root: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (i, msg) in samples(sprov_message(), 280, 7).into_iter().enumerate() {
        let xml = msg.to_xml().unwrap();
        let path = dir.path().join(format!("{i:03}-{}.xml", msg.root_name()));
        fs::write(&path, &xml).unwrap();
        if let Err(e) = xmllint(&sprov_xsd(), &path) {
            panic!("{} does not validate:\n{e}\n{xml}", msg.root_name());
        }
        assert_eq!(SprovMessage::from_xml(xml.as_bytes()).as_ref(), Ok(&msg));
        *per_root.entry(msg.root_name()).or_default() += 1;
    }
    assert_eq!(per_root.len(), 14, "{per_root:?}");
    assert!(per_root.values().all(|&n| n >= 5), "{per_root:?}");
}

#[test]
fn sample_requests_validate_and_decode() {
    let lint = have_xmllint();
    let files = xml_files(data_dir().join("sprov"));
    assert!(files.len() >= 8, "{files:?}");
    let dir = tempfile::tempdir().unwrap();
    for path in files {
        if lint {
            xmllint(&sprov_xsd(), &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        let msg =
            SprovMessage::from_xml(&fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // And back: our encoding of what we read validates and reads the same.
        let xml = msg.to_xml().unwrap();
        assert_eq!(SprovMessage::from_xml(xml.as_bytes()).as_ref(), Ok(&msg));
        if lint {
            let out = dir.path().join(path.file_name().unwrap());
            fs::write(&out, xml).unwrap();
            xmllint(&sprov_xsd(), &out).unwrap_or_else(|e| panic!("re-encoded {}: {e}", path.display()));
        }
    }
}

#[test]
fn invalid_documents_are_refused_by_both() {
    let lint = have_xmllint();
    let files = xml_files(data_dir().join("sprov").join("invalid"));
    assert!(files.len() >= 10, "{files:?}");
    for path in files {
        let body = fs::read(&path).unwrap();
        assert!(SprovMessage::from_xml(&body).is_err(), "decoder accepted {}", path.display());
        if lint {
            assert!(xmllint(&sprov_xsd(), &path).is_err(), "xmllint accepted {}", path.display());
        }
    }
}

/// The facts-3gpp.md §5 examples, minus their `xsi:schemaLocation` hints.
const MBMS_EXAMPLES: [(&str, &str); 3] = [
    (
        "3gpp-26346-msk-request.xsd",
        r#"<mbmsMSKRequest xmlns="urn:3GPP:metadata:2005:MBMS:mskRequest"><MSK><keyDomainID>uHCd</keyDomainID><MSKID>aMkAAA==</MSKID></MSK></mbmsMSKRequest>"#,
    ),
    (
        "3gpp-26346-security-registration.xsd",
        r#"<mbmsSecurityRegister xmlns="urn:3GPP:metadata:2005:MBMS:securityRegistration"><serviceID>urn:3gpp:mbms:example:serivce:identification:123456789abcdef</serviceID></mbmsSecurityRegister>"#,
    ),
    (
        "3gpp-26346-msk-response.xsd",
        r#"<mbmsMSKResponse xmlns="urn:3GPP:metadata:2005:MBMS:mskResponse"><Response><MSK><keyDomainID>uHCd</keyDomainID><MSKID>JMtEAA==</MSKID></MSK><ResponseCode>200 OK</ResponseCode></Response></mbmsMSKResponse>"#,
    ),
];

#[test]
fn mbms_documents_validate() {
    if !have_xmllint() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    for (i, (xsd, xml)) in MBMS_EXAMPLES.iter().enumerate() {
        written.push((*xsd, format!("example-{i}.xml"), (*xml).to_owned()));
    }
    for (i, (xsd, xml)) in samples(mbms_documents(), 60, 3).into_iter().enumerate() {
        written.push((xsd, format!("encoded-{i}.xml"), xml));
    }
    let mut kinds = std::collections::BTreeSet::new();
    for (xsd, name, xml) in written {
        let path = dir.path().join(name);
        fs::write(&path, &xml).unwrap();
        if let Err(e) = xmllint(&schema_dir().join(xsd), &path) {
            panic!("{xsd}: {e}\n{xml}");
        }
        kinds.insert(xsd);
    }
    assert_eq!(kinds.len(), 6, "{kinds:?}");

    // A 3-octet MSKID is refused by the schema and by us.
    let bad = MBMS_EXAMPLES[0].1.replace("aMkAAA==", "aMkA");
    let path = dir.path().join("bad.xml");
    fs::write(&path, &bad).unwrap();
    assert!(xmllint(&schema_dir().join(MBMS_EXAMPLES[0].0), &path).is_err());
    assert!(keycast_provisioning::mbms::MskRequest::from_xml(bad.as_bytes()).is_err());
}
