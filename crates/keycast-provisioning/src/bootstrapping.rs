//! The BSF's `BootstrappingInfo` XML (TS 24.109 Annex C; facts-3gpp.md §2.3): the body of the
//! 200 OK that ends a Ub run, content type [`CONTENT_TYPE`], namespace [`NAMESPACE`].
//!
//! ```text
//! BootstrappingInfo = btid (xs:string), lifetime (xs:dateTime, UTC), [Extension (any, lax)]
//! Extension/currenttime (xs:dateTime, UTC) is the only defined extension element.
//! ```
//! Decoding checks the namespace, refuses a DOCTYPE and inputs over [`MAX_XML_LEN`], ignores
//! unknown elements and attributes, and trims XML white space around values.

use crate::time::{TimeError, UtcTime};
use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

/// Content type of the body (24.109 Annex C).
pub const CONTENT_TYPE: &str = "application/vnd.3gpp.bsf+xml";
/// XML namespace of the elements (24.109 Annex C).
pub const NAMESPACE: &str = "uri:3gpp-gba";
/// Largest body accepted (16 KiB; a real one is a few hundred octets).
pub const MAX_XML_LEN: usize = 16 * 1024;
/// Longest B-TID accepted, in octets (an NAI of base64(RAND) `@` a domain name fits easily).
pub const MAX_BTID_LEN: usize = 1024;

/// Why a `BootstrappingInfo` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    /// The body is larger than [`MAX_XML_LEN`].
    #[error("body of {len} octets exceeds the limit of {max}")]
    TooLarge {
        /// Body length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not UTF-8, or declares another encoding.
    #[error("body is not UTF-8")]
    NotUtf8,
    /// The XML is not well formed (the parser's message).
    #[error("malformed XML: {0}")]
    Syntax(String),
    /// A DOCTYPE is present (never needed; refused to keep entity tricks out).
    #[error("DOCTYPE is not allowed")]
    DocType,
    /// The root element is not `BootstrappingInfo` in namespace `uri:3gpp-gba`.
    #[error("root element is not {{uri:3gpp-gba}}BootstrappingInfo")]
    WrongRoot,
    /// A required element is absent.
    #[error("element `{0}` is missing")]
    Missing(&'static str),
    /// An element that may occur once occurs again.
    #[error("element `{0}` occurs more than once")]
    Duplicate(&'static str),
    /// An element holds child elements where text is expected.
    #[error("element `{0}` must hold text only")]
    NotText(&'static str),
    /// An element's value is invalid.
    #[error("element `{element}` is invalid: {reason}")]
    InvalidValue {
        /// The element.
        element: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A timestamp element is invalid.
    #[error("element `{element}`: {error}")]
    Time {
        /// The element.
        element: &'static str,
        /// The timestamp error.
        error: TimeError,
    },
}

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
        check_btid(btid)?;
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
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str("<BootstrappingInfo xmlns=\"uri:3gpp-gba\">\n");
        out.push_str("  <btid>");
        out.push_str(&quick_xml::escape::escape(self.btid.as_str()));
        out.push_str("</btid>\n");
        out.push_str(&format!("  <lifetime>{}</lifetime>\n", self.lifetime));
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
        if body.len() > MAX_XML_LEN {
            return Err(XmlError::TooLarge { len: body.len(), max: MAX_XML_LEN });
        }
        let text = std::str::from_utf8(body).map_err(|_| XmlError::NotUtf8)?;
        let mut reader = NsReader::from_str(text);
        let mut btid = None;
        let mut lifetime = None;
        let mut current_time = None;

        // Prolog, then the root.
        loop {
            let (ns, event) = reader.read_resolved_event().map_err(syntax)?;
            let in_gba = is_gba(&ns);
            match event {
                Event::Decl(d) => {
                    if let Some(enc) = d.encoding() {
                        let enc = enc.map_err(syntax)?;
                        if !enc.eq_ignore_ascii_case("UTF-8") {
                            return Err(XmlError::NotUtf8);
                        }
                    }
                }
                Event::DocType(_) => return Err(XmlError::DocType),
                Event::Start(e) if in_gba && e.local_name().as_ref() == "BootstrappingInfo" => break,
                Event::Empty(e) if in_gba && e.local_name().as_ref() == "BootstrappingInfo" => {
                    return Err(XmlError::Missing("btid"));
                }
                Event::Start(_) | Event::Empty(_) => return Err(XmlError::WrongRoot),
                Event::Eof => return Err(XmlError::WrongRoot),
                Event::Text(t) if t.xml10_content().trim().is_empty() => {}
                Event::Comment(_) | Event::PI(_) => {}
                _ => return Err(XmlError::Syntax("content before the root element".into())),
            }
        }

        // Children of the root.
        loop {
            let (ns, event) = reader.read_resolved_event().map_err(syntax)?;
            let in_gba = is_gba(&ns);
            match event {
                Event::Start(e) => match (in_gba, e.local_name().as_ref()) {
                    (true, "btid") => set_once(&mut btid, "btid", read_text(&mut reader, "btid")?)?,
                    (true, "lifetime") => {
                        let t = read_time(&mut reader, "lifetime")?;
                        set_once(&mut lifetime, "lifetime", t)?;
                    }
                    (true, "Extension") => read_extension(&mut reader, &mut current_time)?,
                    _ => skip(&mut reader, &e)?,
                },
                Event::Empty(e) => match (in_gba, e.local_name().as_ref()) {
                    (true, "btid") => set_once(&mut btid, "btid", String::new())?,
                    (true, "lifetime") => {
                        return Err(XmlError::Time { element: "lifetime", error: TimeError::Syntax });
                    }
                    _ => {}
                },
                Event::End(_) => break,
                Event::Eof => return Err(XmlError::Syntax("document ends inside the root".into())),
                Event::DocType(_) => return Err(XmlError::DocType),
                // Text, references, comments and PIs between elements are ignored.
                _ => {}
            }
        }

        // After the root: nothing but white space, comments and PIs.
        loop {
            match reader.read_event().map_err(syntax)? {
                Event::Eof => break,
                Event::Text(t) if t.xml10_content().trim().is_empty() => {}
                Event::Comment(_) | Event::PI(_) => {}
                _ => return Err(XmlError::Syntax("content after the root element".into())),
            }
        }

        let btid = btid.ok_or(XmlError::Missing("btid"))?;
        check_btid(&btid)?;
        let lifetime = lifetime.ok_or(XmlError::Missing("lifetime"))?;
        Ok(BootstrappingInfo { btid, lifetime, current_time })
    }
}

fn syntax(e: impl std::fmt::Display) -> XmlError {
    XmlError::Syntax(e.to_string())
}

fn is_gba(ns: &ResolveResult<'_>) -> bool {
    matches!(ns, ResolveResult::Bound(n) if n.as_ref() == NAMESPACE)
}

fn set_once<T>(slot: &mut Option<T>, element: &'static str, value: T) -> Result<(), XmlError> {
    if slot.is_some() {
        return Err(XmlError::Duplicate(element));
    }
    *slot = Some(value);
    Ok(())
}

fn check_btid(btid: &str) -> Result<(), XmlError> {
    let bad = |reason| Err(XmlError::InvalidValue { element: "btid", reason });
    if btid.is_empty() {
        return bad("empty");
    }
    if btid.len() > MAX_BTID_LEN {
        return bad("too long");
    }
    if btid.chars().any(|c| c.is_control() || c == '\u{fffe}' || c == '\u{ffff}') {
        return bad("control character");
    }
    if btid.trim() != btid {
        return bad("leading or trailing white space");
    }
    Ok(())
}

/// Skips an element that was opened with `start`, with everything inside it.
fn skip(reader: &mut NsReader<&[u8]>, start: &BytesStart<'_>) -> Result<(), XmlError> {
    reader.read_to_end(start.name()).map_err(syntax)?;
    Ok(())
}

/// Reads the text of an element whose start tag was just read, up to its end tag; refuses child
/// elements; resolves the predefined entities and character references; trims XML white space.
fn read_text(reader: &mut NsReader<&[u8]>, element: &'static str) -> Result<String, XmlError> {
    let mut out = String::new();
    loop {
        match reader.read_event().map_err(syntax)? {
            Event::Text(t) => out.push_str(&t.xml10_content()),
            Event::CData(c) => out.push_str(&c.xml10_content()),
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().map_err(syntax)? {
                    out.push(c);
                } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(&r) {
                    out.push_str(s);
                } else {
                    return Err(XmlError::InvalidValue { element, reason: "unknown entity" });
                }
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::End(_) => break,
            Event::Start(_) | Event::Empty(_) => return Err(XmlError::NotText(element)),
            Event::Eof => return Err(XmlError::Syntax(format!("document ends inside `{element}`"))),
            Event::Decl(_) | Event::DocType(_) => return Err(XmlError::Syntax("misplaced declaration".into())),
        }
        if out.len() > MAX_XML_LEN {
            return Err(XmlError::TooLarge { len: out.len(), max: MAX_XML_LEN });
        }
    }
    Ok(out.trim_matches([' ', '\t', '\r', '\n']).to_owned())
}

fn read_time(reader: &mut NsReader<&[u8]>, element: &'static str) -> Result<UtcTime, XmlError> {
    let text = read_text(reader, element)?;
    text.parse().map_err(|error| XmlError::Time { element, error })
}

/// Reads `Extension` (its start tag was just read): `currenttime` in our namespace, nothing else.
fn read_extension(reader: &mut NsReader<&[u8]>, current_time: &mut Option<UtcTime>) -> Result<(), XmlError> {
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(syntax)?;
        let in_gba = is_gba(&ns);
        match event {
            Event::Start(e) if in_gba && e.local_name().as_ref() == "currenttime" => {
                let t = read_time(reader, "currenttime")?;
                set_once(current_time, "currenttime", t)?;
            }
            Event::Start(e) => skip(reader, &e)?,
            Event::End(_) => return Ok(()),
            Event::Eof => return Err(XmlError::Syntax("document ends inside `Extension`".into())),
            Event::DocType(_) => return Err(XmlError::DocType),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(BootstrappingInfo::from_xml(xml.as_bytes()), Err(XmlError::WrongRoot));
        let xml = EXAMPLE.replace(" xmlns=\"uri:3gpp-gba\"", "");
        assert_eq!(BootstrappingInfo::from_xml(xml.as_bytes()), Err(XmlError::WrongRoot));
    }

    #[test]
    fn rejects_missing_and_duplicate() {
        let no_lifetime = EXAMPLE.replace("  <lifetime>2026-01-01T12:00:00Z</lifetime>\n", "");
        assert_eq!(BootstrappingInfo::from_xml(no_lifetime.as_bytes()), Err(XmlError::Missing("lifetime")));
        let no_btid = EXAMPLE.replace("  <btid>I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org</btid>\n", "");
        assert_eq!(BootstrappingInfo::from_xml(no_btid.as_bytes()), Err(XmlError::Missing("btid")));
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
