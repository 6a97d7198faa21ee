//! A small, bounded XML reader and writer shared by [`crate::bootstrapping`], [`crate::mbms`] and
//! [`crate::sprov`].
//!
//! Decoding builds a little tree ([`Element`]) under fixed limits and then the typed layers read
//! what they know from it: unknown elements (in any namespace) and unknown attributes are simply
//! never looked at, which is how the lax schemas (`xs:any`, `xs:anyAttribute`) are honoured.
//!
//! Refused outright: bodies over the caller's size limit, other encodings than UTF-8, a DOCTYPE
//! (so no entity tricks), undefined entities, unbound namespace prefixes, nesting deeper than
//! [`MAX_DEPTH`], and anything but white space, comments and PIs around the root.

use crate::time::{TimeError, UtcTime};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::{NsReader, XmlVersion};

/// Deepest element nesting accepted (the messages need five levels).
pub const MAX_DEPTH: usize = 32;

/// Why an XML document was refused, or why a value cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    /// The body is larger than the limit.
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
    /// The XML is not well formed (the parser's message), or has content outside the root.
    #[error("malformed XML: {0}")]
    Syntax(String),
    /// A DOCTYPE is present (never needed; refused to keep entity tricks out).
    #[error("DOCTYPE is not allowed")]
    DocType,
    /// Elements are nested deeper than the limit (32 levels).
    #[error("elements are nested deeper than {0}")]
    TooDeep(usize),
    /// The root element is not the one expected.
    #[error("root element is {found}, expected {expected}")]
    WrongRoot {
        /// What was expected (`{namespace}name`, or a description).
        expected: &'static str,
        /// What was found, as `{namespace}name`.
        found: String,
    },
    /// A required element is absent (or a list that needs an entry is empty).
    #[error("element `{element}` is missing in `{parent}`")]
    Missing {
        /// The missing element.
        element: &'static str,
        /// The element it belongs in.
        parent: &'static str,
    },
    /// A required attribute is absent.
    #[error("attribute `{attribute}` is missing on `{element}`")]
    MissingAttribute {
        /// The element.
        element: &'static str,
        /// The missing attribute.
        attribute: &'static str,
    },
    /// An element that may occur once occurs again.
    #[error("element `{0}` occurs more than once")]
    Duplicate(&'static str),
    /// An element holds child elements where text is expected.
    #[error("element `{0}` must hold text only")]
    NotText(&'static str),
    /// An element's (or attribute's, written `element@attribute`) value is invalid.
    #[error("`{element}` is invalid: {reason}")]
    InvalidValue {
        /// The element, or `element@attribute`.
        element: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A timestamp is invalid.
    #[error("`{element}`: {error}")]
    Time {
        /// The element, or `element@attribute`.
        element: &'static str,
        /// The timestamp error.
        error: TimeError,
    },
}

/// One element of a decoded document: its namespace, local name, the unqualified attributes,
/// the child elements and the text directly inside it.
#[derive(Debug, Clone)]
pub struct Element {
    ns: Option<String>,
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    /// `{namespace}name`, for error messages.
    pub fn qualified_name(&self) -> String {
        format!("{{{}}}{}", self.ns.as_deref().unwrap_or(""), self.name)
    }

    /// True when the element is `name` in namespace `ns`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.name == name
    }

    /// The local name.
    pub fn local_name(&self) -> &str {
        &self.name
    }

    /// All children named `name` in namespace `ns`, in document order.
    pub fn all(&self, ns: &'static str, name: &'static str) -> impl Iterator<Item = &Element> {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// The child `name`, if present; [`XmlError::Duplicate`] if it occurs twice.
    pub fn opt(&self, ns: &'static str, name: &'static str) -> Result<Option<&Element>, XmlError> {
        let mut it = self.all(ns, name);
        let first = it.next();
        if it.next().is_some() {
            return Err(XmlError::Duplicate(name));
        }
        Ok(first)
    }

    /// The child `name`, exactly once.
    pub fn one(&self, ns: &'static str, name: &'static str, parent: &'static str) -> Result<&Element, XmlError> {
        self.opt(ns, name)?.ok_or(XmlError::Missing { element: name, parent })
    }

    /// All children `name`; [`XmlError::Missing`] when there is none.
    pub fn many(&self, ns: &'static str, name: &'static str, parent: &'static str) -> Result<Vec<&Element>, XmlError> {
        let v: Vec<&Element> = self.all(ns, name).collect();
        if v.is_empty() {
            return Err(XmlError::Missing { element: name, parent });
        }
        Ok(v)
    }

    /// The text of this element (trimmed of XML white space); refuses child elements.
    pub fn text(&self, element: &'static str) -> Result<&str, XmlError> {
        if !self.children.is_empty() {
            return Err(XmlError::NotText(element));
        }
        Ok(trim_ws(&self.text))
    }

    /// The value of the unqualified attribute `name` (trimmed of XML white space).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| trim_ws(v))
    }

    /// A required unqualified attribute.
    pub fn req_attr(&self, element: &'static str, attribute: &'static str) -> Result<&str, XmlError> {
        self.attr(attribute).ok_or(XmlError::MissingAttribute { element, attribute })
    }
}

/// Trims XML white space (space, tab, CR, LF).
pub fn trim_ws(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\r', '\n'])
}

fn syntax(e: impl std::fmt::Display) -> XmlError {
    XmlError::Syntax(e.to_string())
}

/// Parses `body` into its root element under the limits described in the module docs.
pub fn parse(body: &[u8], max_len: usize) -> Result<Element, XmlError> {
    if body.len() > max_len {
        return Err(XmlError::TooLarge { len: body.len(), max: max_len });
    }
    let text = std::str::from_utf8(body).map_err(|_| XmlError::NotUtf8)?;
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(syntax)?;
        // Copied out only for the events that make an element: end tags resolve their namespace
        // too, and a copy per end tag was an allocation per element for nothing.
        let makes_element = matches!(event, Event::Start(_) | Event::Empty(_));
        let ns = match ns {
            ResolveResult::Bound(n) => makes_element.then(|| n.as_ref().to_owned()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(p) => return Err(XmlError::Syntax(format!("unbound namespace prefix `{p}`"))),
        };
        match event {
            Event::Decl(d) => {
                if !stack.is_empty() || root.is_some() {
                    return Err(XmlError::Syntax("misplaced XML declaration".into()));
                }
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(syntax)?;
                    if !enc.eq_ignore_ascii_case("UTF-8") {
                        return Err(XmlError::NotUtf8);
                    }
                }
            }
            Event::DocType(_) => return Err(XmlError::DocType),
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(XmlError::Syntax("content after the root element".into()));
            }
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep(MAX_DEPTH));
                }
                stack.push(element(&reader, ns, &e)?);
            }
            Event::Empty(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep(MAX_DEPTH));
                }
                let el = element(&reader, ns, &e)?;
                close(&mut stack, &mut root, el);
            }
            Event::End(_) => {
                // The reader checks that end tags match their start tags.
                let el = stack.pop().ok_or_else(|| XmlError::Syntax("unexpected end tag".into()))?;
                close(&mut stack, &mut root, el);
            }
            Event::Text(t) => push_text(&mut stack, &t.xml10_content())?,
            Event::CData(c) => push_text(&mut stack, &c.xml10_content())?,
            Event::GeneralRef(r) => {
                let s = if let Some(c) = r.resolve_char_ref().map_err(syntax)? {
                    if !is_xml_char(c) {
                        return Err(XmlError::Syntax("character reference to a non-XML character".into()));
                    }
                    c.to_string()
                } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(&r) {
                    s.to_owned()
                } else {
                    return Err(XmlError::Syntax("undefined entity".into()));
                };
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&s),
                    None => return Err(XmlError::Syntax("reference outside the root element".into())),
                }
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Syntax("document ends inside an element".into()));
    }
    root.ok_or_else(|| XmlError::Syntax("no root element".into()))
}

fn push_text(stack: &mut [Element], text: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        // White space before any other text is never read (`Element::text` trims it, and an
        // element with children has no text): not kept, so that indentation costs no allocation.
        Some(el) if el.text.is_empty() && trim_ws(text).is_empty() => {}
        Some(el) => el.text.push_str(text),
        None if trim_ws(text).is_empty() => {}
        None => return Err(XmlError::Syntax("text outside the root element".into())),
    }
    Ok(())
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

fn element(reader: &NsReader<&[u8]>, ns: Option<String>, e: &BytesStart<'_>) -> Result<Element, XmlError> {
    let name = e.local_name().as_ref().to_owned();
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(syntax)?;
        let key = a.key;
        if key.as_namespace_binding().is_some() {
            continue;
        }
        let (ans, local) = reader.resolver().resolve_attribute(key);
        let value = a.normalized_value(XmlVersion::Implicit1_0).map_err(syntax)?;
        match ans {
            // Only unqualified attributes are ours (attributeFormDefault="unqualified").
            ResolveResult::Unbound => {
                attrs.push((local.as_ref().to_owned(), value.into_owned()));
            }
            ResolveResult::Bound(_) => {}
            ResolveResult::Unknown(p) => {
                return Err(XmlError::Syntax(format!("unbound namespace prefix `{p}`")));
            }
        }
    }
    Ok(Element { ns, name, attrs, children: Vec::new(), text: String::new() })
}

/// The XML 1.0 `Char` production.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

// ---------------------------------------------------------------------------------------------
// Value checks and conversions shared by the typed layers.

/// Checks a string value that goes into an element or attribute: not empty, at most `max`
/// octets, no control characters, no leading or trailing white space (so that it survives the
/// trip through XML unchanged).
pub fn check_token(element: &'static str, value: &str, max: usize) -> Result<(), XmlError> {
    let bad = |reason| Err(XmlError::InvalidValue { element, reason });
    if value.is_empty() {
        return bad("empty");
    }
    if value.len() > max {
        return bad("too long");
    }
    if value.chars().any(|c| c.is_control() || !is_xml_char(c)) {
        return bad("control character");
    }
    if trim_ws(value) != value || value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return bad("leading or trailing white space");
    }
    Ok(())
}

/// Decodes `xs:base64Binary` text (white space inside is allowed) of exactly `N` octets.
pub fn b64_fixed<const N: usize>(element: &'static str, text: &str) -> Result<[u8; N], XmlError> {
    let v = b64_any(element, text)?;
    v.try_into().map_err(|_| XmlError::InvalidValue { element, reason: "wrong length" })
}

/// Decodes `xs:base64Binary` text (white space inside is allowed).
pub fn b64_any(element: &'static str, text: &str) -> Result<Vec<u8>, XmlError> {
    let compact: String = text.chars().filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n')).collect();
    B64.decode(compact.as_bytes()).map_err(|_| XmlError::InvalidValue { element, reason: "not base64" })
}

/// Encodes octets as `xs:base64Binary` (with padding, no line breaks).
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Parses `xs:unsignedLong` (optional `+`, decimal digits) into a `u64` no greater than `max`.
pub fn parse_unsigned(element: &'static str, text: &str, max: u64) -> Result<u64, XmlError> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(XmlError::InvalidValue { element, reason: "not an unsigned integer" });
    }
    let trimmed = digits.trim_start_matches('0');
    if trimmed.len() > 20 {
        return Err(XmlError::InvalidValue { element, reason: "out of range" });
    }
    match trimmed.parse::<u64>() {
        Ok(v) if v <= max => Ok(v),
        Err(_) if trimmed.is_empty() => Ok(0),
        _ => Err(XmlError::InvalidValue { element, reason: "out of range" }),
    }
}

/// Parses an RFC 3339 UTC timestamp (`xs:dateTime`), naming `element` in the error.
pub fn parse_time(element: &'static str, text: &str) -> Result<UtcTime, XmlError> {
    text.parse().map_err(|error| XmlError::Time { element, error })
}

/// Parses `xs:boolean`.
pub fn parse_bool(element: &'static str, text: &str) -> Result<bool, XmlError> {
    match text {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(XmlError::InvalidValue { element, reason: "not a boolean" }),
    }
}

/// Escapes text for element content or a double-quoted attribute value.
pub fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// Writes `<name>escaped text</name>` at `indent` spaces followed by a newline.
pub fn text_el(out: &mut String, indent: usize, name: &str, text: &str) {
    out.push_str(&" ".repeat(indent));
    out.push('<');
    out.push_str(name);
    out.push('>');
    out.push_str(&esc(text));
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

/// The XML declaration every encoder starts with.
pub const DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
