//! Small helpers on top of `keycast_provisioning::xml`: an escaper that keeps every value the
//! reader can give back, and element writers with optional attributes.

use crate::error::GuideError;
use keycast_provisioning::xml::{Element, XmlError, is_xml_char, parse, parse_unsigned};

/// Escapes text or a double-quoted attribute value. Characters XML 1.0 cannot carry are dropped
/// (so `to_xml` never writes a document that is not well formed); tab, LF and CR are written
/// as character references so that attribute-value normalisation keeps them.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
    out
}

/// Attribute list under construction: `None` values are left out.
#[derive(Default)]
pub(crate) struct Attrs(Vec<(&'static str, String)>);

impl Attrs {
    pub(crate) fn new() -> Self {
        Attrs(Vec::new())
    }
    pub(crate) fn add(mut self, name: &'static str, value: impl ToString) -> Self {
        self.0.push((name, value.to_string()));
        self
    }
    pub(crate) fn opt<T: ToString>(mut self, name: &'static str, value: Option<T>) -> Self {
        if let Some(v) = value {
            self.0.push((name, v.to_string()));
        }
        self
    }
    fn write(&self, out: &mut String) {
        for (k, v) in &self.0 {
            out.push(' ');
            out.push_str(k);
            out.push_str("=\"");
            out.push_str(&esc(v));
            out.push('"');
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push(' ');
    }
}

/// `<name attrs>` and a newline.
pub(crate) fn open(out: &mut String, indent: usize, name: &str, attrs: Attrs) {
    pad(out, indent);
    out.push('<');
    out.push_str(name);
    attrs.write(out);
    out.push_str(">\n");
}

/// `</name>` and a newline.
pub(crate) fn close(out: &mut String, indent: usize, name: &str) {
    pad(out, indent);
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

/// `<name attrs/>` and a newline.
pub(crate) fn empty(out: &mut String, indent: usize, name: &str, attrs: Attrs) {
    pad(out, indent);
    out.push('<');
    out.push_str(name);
    attrs.write(out);
    out.push_str("/>\n");
}

/// `<name attrs>text</name>` and a newline.
pub(crate) fn text(out: &mut String, indent: usize, name: &str, attrs: Attrs, text: &str) {
    pad(out, indent);
    out.push('<');
    out.push_str(name);
    attrs.write(out);
    out.push('>');
    out.push_str(&esc(text));
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

// ---------------------------------------------------------------------------------------------
// Reading helpers.

/// Parses a document with the shared bounded reader, first refusing characters that XML 1.0
/// does not allow anywhere (the reader lets raw control characters through; a document holding
/// them is not well formed, and we could not write them back).
pub(crate) fn parse_doc(xml: &str, max_len: usize, fragment: &'static str) -> Result<Element, GuideError> {
    if xml.len() <= max_len && xml.chars().any(|c| !is_xml_char(c)) {
        return Err(GuideError::Xml { fragment, source: XmlError::Syntax("character not allowed in XML 1.0".into()) });
    }
    parse(xml.as_bytes(), max_len).map_err(GuideError::xml(fragment))
}

/// An optional unsigned attribute no greater than `max`.
pub(crate) fn attr_u64(el: &Element, name: &'static str, max: u64) -> Result<Option<u64>, XmlError> {
    el.attr(name).map(|v| parse_unsigned(name, v, max)).transpose()
}

/// A required unsigned attribute no greater than `max`.
pub(crate) fn req_attr_u64(el: &Element, element: &'static str, name: &'static str, max: u64) -> Result<u64, XmlError> {
    parse_unsigned(name, el.req_attr(element, name)?, max)
}

/// A required, non-empty attribute as an owned string.
pub(crate) fn req_attr_string(el: &Element, element: &'static str, name: &'static str) -> Result<String, XmlError> {
    let v = el.req_attr(element, name)?;
    if v.is_empty() {
        return Err(XmlError::InvalidValue { element, reason: "empty attribute" });
    }
    Ok(v.to_owned())
}

/// An optional attribute as an owned string.
pub(crate) fn attr_string(el: &Element, name: &str) -> Option<String> {
    el.attr(name).map(str::to_owned)
}

/// The text of a child element, required to be non-empty.
pub(crate) fn text_string(el: &Element, element: &'static str) -> Result<String, XmlError> {
    let t = el.text(element)?;
    if t.is_empty() {
        return Err(XmlError::InvalidValue { element, reason: "empty" });
    }
    Ok(t.to_owned())
}
