//! The BSF's `BootstrappingInfo` XML (TS 24.109 Annex C; facts-3gpp.md §2.3): the body of the
//! 200 OK that ends a Ub run, content type [`CONTENT_TYPE`], namespace [`NAMESPACE`].
//!
//! ```text
//! BootstrappingInfo = btid (xs:string), lifetime (xs:dateTime, UTC), [Extension (any, lax)]
//! Extension/currenttime (xs:dateTime, UTC) is the only defined extension element.
//! ```
//! Decoding uses the crate's shared XML reader: it checks the namespace, refuses a DOCTYPE and
//! inputs over [`MAX_XML_LEN`], ignores unknown elements and attributes, and trims XML white
//! space around values.

use crate::time::UtcTime;
use crate::xml::{self, DECL, check_token, parse_time, text_el};

pub use crate::xml::XmlError;

/// Content type of the body (24.109 Annex C).
pub const CONTENT_TYPE: &str = "application/vnd.3gpp.bsf+xml";
/// XML namespace of the elements (24.109 Annex C).
pub const NAMESPACE: &str = "uri:3gpp-gba";
/// Largest body accepted (16 KiB; a real one is a few hundred octets).
pub const MAX_XML_LEN: usize = 16 * 1024;
/// Longest B-TID accepted, in octets (an NAI of base64(RAND) `@` a domain name fits easily).
pub const MAX_BTID_LEN: usize = 1024;

const ROOT: &str = "BootstrappingInfo";

/// The content of a `BootstrappingInfo` document.
///
/// ```
/// use keycast_provisioning::bootstrapping::BootstrappingInfo;
/// use keycast_provisioning::time::UtcTime;
///
/// let info = BootstrappingInfo::new(
///     "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org",
///     "2026-01-01T12:00:00Z".parse::<UtcTime>().unwrap(),
///     None,
/// )
/// .unwrap();
/// let xml = info.to_xml();
/// assert_eq!(BootstrappingInfo::from_xml(xml.as_bytes()), Ok(info));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrappingInfo {
    btid: String,
    lifetime: UtcTime,
    current_time: Option<UtcTime>,
}

impl BootstrappingInfo {
    /// Builds the document content.
    ///
    /// # Errors
    /// [`XmlError::InvalidValue`] naming `btid` when it is empty, longer than [`MAX_BTID_LEN`],
    /// holds a control character, or begins or ends with white space.
    pub fn new(btid: &str, lifetime: UtcTime, current_time: Option<UtcTime>) -> Result<Self, XmlError> {
        check_token("btid", btid, MAX_BTID_LEN)?;
        Ok(BootstrappingInfo { btid: btid.to_owned(), lifetime, current_time })
    }

    /// The B-TID (`base64(RAND)@BSF`, facts-3gpp.md §1.4).
    #[must_use]
    pub fn btid(&self) -> &str {
        &self.btid
    }

    /// When Ks expires.
    #[must_use]
    pub fn lifetime(&self) -> UtcTime {
        self.lifetime
    }

    /// The BSF's clock when it answered (`Extension/currenttime`), if sent.
    #[must_use]
    pub fn current_time(&self) -> Option<UtcTime> {
        self.current_time
    }

    /// Encodes the document, laid out as in 24.109 Annex C (and facts-3gpp.md §2.3).
    #[must_use]
    pub fn to_xml(&self) -> String {
        let mut out = String::from(DECL);
        out.push_str("<BootstrappingInfo xmlns=\"uri:3gpp-gba\">\n");
        text_el(&mut out, 2, "btid", &self.btid);
        text_el(&mut out, 2, "lifetime", &self.lifetime.to_string());
        if let Some(now) = self.current_time {
            out.push_str(&format!("  <Extension><currenttime>{now}</currenttime></Extension>\n"));
        }
        out.push_str("</BootstrappingInfo>\n");
        out
    }

    /// Decodes a document.
    ///
    /// # Errors
    /// See [`XmlError`].
    pub fn from_xml(body: &[u8]) -> Result<Self, XmlError> {
        let root = xml::parse(body, MAX_XML_LEN)?;
        if !root.is(NAMESPACE, ROOT) {
            return Err(XmlError::WrongRoot {
                expected: "{uri:3gpp-gba}BootstrappingInfo",
                found: root.qualified_name(),
            });
        }
        let btid = root.one(NAMESPACE, "btid", ROOT)?.text("btid")?;
        check_token("btid", btid, MAX_BTID_LEN)?;
        let lifetime = parse_time("lifetime", root.one(NAMESPACE, "lifetime", ROOT)?.text("lifetime")?)?;
        // `currenttime` may sit in any `Extension`, but only once in all of them.
        let mut times = root.all(NAMESPACE, "Extension").flat_map(|e| e.all(NAMESPACE, "currenttime"));
        let current_time = times.next().map(|t| parse_time("currenttime", t.text("currenttime")?)).transpose()?;
        if times.next().is_some() {
            return Err(XmlError::Duplicate("currenttime"));
        }
        Ok(BootstrappingInfo { btid: btid.to_owned(), lifetime, current_time })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::TimeError;
    use proptest::prelude::*;

    /// facts-3gpp.md §2.3, byte for byte.
    const EXAMPLE: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<BootstrappingInfo xmlns=\"uri:3gpp-gba\">
  <btid>I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org</btid>
  <lifetime>2026-01-01T12:00:00Z</lifetime>
  <Extension><currenttime>2025-12-31T12:00:00Z</currenttime></Extension>
</BootstrappingInfo>
";

    fn example() -> BootstrappingInfo {
        BootstrappingInfo::new(
            "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org",
            "2026-01-01T12:00:00Z".parse().unwrap(),
            Some("2025-12-31T12:00:00Z".parse().unwrap()),
        )
        .unwrap()
    }

    #[test]
    fn decodes_the_example() {
        let info = BootstrappingInfo::from_xml(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(info.btid(), "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org");
        assert_eq!(info.lifetime().unix_seconds(), 1_767_268_800);
        assert_eq!(info.current_time().map(UtcTime::unix_seconds), Some(1_767_182_400));
    }

    #[test]
    fn encodes_the_example() {
        assert_eq!(example().to_xml(), EXAMPLE);
    }

    #[test]
    fn accepts_prefixes_unknown_elements_and_entities() {
        let xml = r#"<!-- c --><g:BootstrappingInfo xmlns:g="uri:3gpp-gba" xmlns:o="urn:other" extra="1">
            <o:btid>ignored</o:btid>
            <g:btid> a&amp;b&#x40;c </g:btid>
            <g:unknown><g:deep>x</g:deep></g:unknown>
            <g:lifetime><![CDATA[2026-01-01T12:00:00Z]]></g:lifetime>
            <g:Extension><o:thing/><g:other>1</g:other></g:Extension>
        </g:BootstrappingInfo>"#;
        let info = BootstrappingInfo::from_xml(xml.as_bytes()).unwrap();
        assert_eq!(info.btid(), "a&b@c");
        assert_eq!(info.current_time(), None);
    }

    #[test]
    fn rejects_wrong_namespace() {
        let xml = EXAMPLE.replace("uri:3gpp-gba", "uri:3gpp-gbb");
        assert_eq!(
            BootstrappingInfo::from_xml(xml.as_bytes()),
            Err(XmlError::WrongRoot {
                expected: "{uri:3gpp-gba}BootstrappingInfo",
                found: "{uri:3gpp-gbb}BootstrappingInfo".into()
            })
        );
        let xml = EXAMPLE.replace(" xmlns=\"uri:3gpp-gba\"", "");
        assert!(matches!(BootstrappingInfo::from_xml(xml.as_bytes()), Err(XmlError::WrongRoot { .. })));
    }

    #[test]
    fn rejects_missing_and_duplicate() {
        let no_lifetime = EXAMPLE.replace("  <lifetime>2026-01-01T12:00:00Z</lifetime>\n", "");
        assert_eq!(
            BootstrappingInfo::from_xml(no_lifetime.as_bytes()),
            Err(XmlError::Missing { element: "lifetime", parent: "BootstrappingInfo" })
        );
        let no_btid = EXAMPLE.replace("  <btid>I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org</btid>\n", "");
        assert_eq!(
            BootstrappingInfo::from_xml(no_btid.as_bytes()),
            Err(XmlError::Missing { element: "btid", parent: "BootstrappingInfo" })
        );
        let two = EXAMPLE.replace("<lifetime>", "<btid>x</btid><lifetime>");
        assert_eq!(BootstrappingInfo::from_xml(two.as_bytes()), Err(XmlError::Duplicate("btid")));
        let empty = EXAMPLE.replace("I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org", "  ");
        assert!(matches!(
            BootstrappingInfo::from_xml(empty.as_bytes()),
            Err(XmlError::InvalidValue { element: "btid", .. })
        ));
    }

    #[test]
    fn rejects_bad_times() {
        let xml = EXAMPLE.replace("2026-01-01T12:00:00Z", "2026-01-01T12:00:00+01:00");
        assert_eq!(
            BootstrappingInfo::from_xml(xml.as_bytes()),
            Err(XmlError::Time { element: "lifetime", error: TimeError::Syntax })
        );
        let xml = EXAMPLE.replace("2025-12-31T12:00:00Z", "2025-02-30T12:00:00Z");
        assert_eq!(
            BootstrappingInfo::from_xml(xml.as_bytes()),
            Err(XmlError::Time { element: "currenttime", error: TimeError::InvalidDate })
        );
    }

    #[test]
    fn rejects_doctype_size_and_encoding() {
        let xml = EXAMPLE.replace("<BootstrappingInfo", "<!DOCTYPE x [<!ENTITY a \"b\">]><BootstrappingInfo");
        assert_eq!(BootstrappingInfo::from_xml(xml.as_bytes()), Err(XmlError::DocType));
        let big = format!("{EXAMPLE}<!--{}-->", "x".repeat(MAX_XML_LEN));
        assert!(matches!(BootstrappingInfo::from_xml(big.as_bytes()), Err(XmlError::TooLarge { .. })));
        assert_eq!(BootstrappingInfo::from_xml(&[0xff, 0xfe, 0x3c]), Err(XmlError::NotUtf8));
        let latin = EXAMPLE.replace("UTF-8", "ISO-8859-1");
        assert_eq!(BootstrappingInfo::from_xml(latin.as_bytes()), Err(XmlError::NotUtf8));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "<BootstrappingInfo xmlns=\"uri:3gpp-gba\">",
            "<BootstrappingInfo xmlns=\"uri:3gpp-gba\"><btid>x</lifetime></BootstrappingInfo>",
            "<BootstrappingInfo xmlns=\"uri:3gpp-gba\"><btid>x<b/></btid></BootstrappingInfo>",
            "<BootstrappingInfo xmlns=\"uri:3gpp-gba\"><btid>&foo;</btid></BootstrappingInfo>",
        ] {
            assert!(BootstrappingInfo::from_xml(bad.as_bytes()).is_err(), "{bad}");
        }
        let trailing = format!("{EXAMPLE}<x/>");
        assert!(matches!(BootstrappingInfo::from_xml(trailing.as_bytes()), Err(XmlError::Syntax(_))));
    }

    #[test]
    fn escapes_on_encode() {
        let info = BootstrappingInfo::new("a<b>&\"c@d", UtcTime::MIN, None).unwrap();
        let xml = info.to_xml();
        assert!(xml.contains("<btid>a&lt;b&gt;&amp;&quot;c@d</btid>"), "{xml}");
        assert_eq!(BootstrappingInfo::from_xml(xml.as_bytes()), Ok(info));
        assert!(BootstrappingInfo::new("a\nb", UtcTime::MIN, None).is_err());
        assert!(BootstrappingInfo::new(" ab", UtcTime::MIN, None).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(btid in "[!-~][ -~\u{e9}]{0,40}[!-~]", l in 0..=UtcTime::MAX.unix_seconds(),
                       c in proptest::option::of(0..=UtcTime::MAX.unix_seconds())) {
            let info = BootstrappingInfo::new(
                &btid,
                UtcTime::from_unix_seconds(l).unwrap(),
                c.map(|c| UtcTime::from_unix_seconds(c).unwrap()),
            ).unwrap();
            prop_assert_eq!(BootstrappingInfo::from_xml(info.to_xml().as_bytes()), Ok(info));
        }

        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,300}") {
            let _ = BootstrappingInfo::from_xml(s.as_bytes());
            let _ = BootstrappingInfo::from_xml(format!("<BootstrappingInfo xmlns=\"uri:3gpp-gba\">{s}").as_bytes());
        }
    }
}
