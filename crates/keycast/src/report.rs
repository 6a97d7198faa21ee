//! One tree, two renderings: every command builds a [`Node`] tree once and prints it either as
//! indented text (in the manner of `tshark -V`) or as JSON with stable snake_case keys.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// A labelled value with children.
///
/// - Text: `label: text`, children indented by four spaces below it.
/// - JSON: a leaf is its value; a node with children is an object of its children keyed by
///   their `key` (plus `"value"` when it also has one); a list is an array of its children.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// JSON key (snake_case, stable).
    pub key: String,
    /// Text label (the specification's name for the field).
    pub label: String,
    /// JSON value of a leaf.
    pub value: Option<Value>,
    /// Text shown after the label; `None` shows the label alone.
    pub text: Option<String>,
    /// Child nodes.
    pub children: Vec<Node>,
    /// Render the children as a JSON array.
    pub list: bool,
}

impl Node {
    /// A node with a label and no value, to hold children.
    #[must_use]
    pub fn group(key: &str, label: impl Into<String>) -> Self {
        Self { key: key.to_owned(), label: label.into(), value: None, text: None, children: Vec::new(), list: false }
    }

    /// A node whose children render as a JSON array.
    #[must_use]
    pub fn list(key: &str, label: impl Into<String>) -> Self {
        Self { list: true, ..Self::group(key, label) }
    }

    /// A leaf with a JSON value and the text shown for it.
    #[must_use]
    pub fn leaf(key: &str, label: impl Into<String>, value: impl Into<Value>, text: impl Into<String>) -> Self {
        Self { value: Some(value.into()), text: Some(text.into()), ..Self::group(key, label) }
    }

    /// A number shown in decimal.
    #[must_use]
    pub fn num(key: &str, label: impl Into<String>, n: u64) -> Self {
        Self::leaf(key, label, n, n.to_string())
    }

    /// A string shown as is.
    #[must_use]
    pub fn text(key: &str, label: impl Into<String>, s: impl Into<String>) -> Self {
        let s = s.into();
        Self::leaf(key, label, s.clone(), s)
    }

    /// Bytes shown (and serialised) as lowercase hex.
    #[must_use]
    pub fn hex(key: &str, label: impl Into<String>, bytes: &[u8]) -> Self {
        let h = hex::encode(bytes);
        let shown = if h.is_empty() { "(empty)".to_owned() } else { h.clone() };
        Self::leaf(key, label, h, shown)
    }

    /// A boolean shown as `yes`/`no`.
    #[must_use]
    pub fn flag(key: &str, label: impl Into<String>, b: bool) -> Self {
        Self::leaf(key, label, b, if b { "yes" } else { "no" })
    }

    /// A wire code point: JSON `{"code", "name"}`, text `name (code)` like tshark.
    #[must_use]
    pub fn code(key: &str, label: impl Into<String>, code: u64, name: &str) -> Self {
        let mut m = Map::new();
        m.insert("code".into(), code.into());
        m.insert("name".into(), name.into());
        Self::leaf(key, label, Value::Object(m), format!("{name} ({code})"))
    }

    /// Adds a child.
    pub fn push(&mut self, child: Node) {
        self.children.push(child);
    }

    /// Adds a child, builder style.
    #[must_use]
    pub fn with(mut self, child: Node) -> Self {
        self.children.push(child);
        self
    }

    /// Shows the node as one text line; its children stay in JSON only.
    #[must_use]
    pub fn summarised(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self.children.iter_mut().for_each(|c| c.label.clear());
        self
    }

    /// Text rendering, indented by `depth` levels.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write_text(&mut out, 0);
        out
    }

    fn write_text(&self, out: &mut String, depth: usize) {
        let pad = "    ".repeat(depth);
        // Writing to a String cannot fail.
        match &self.text {
            Some(t) => writeln!(out, "{pad}{}: {t}", self.label).expect("write to String"),
            None => writeln!(out, "{pad}{}", self.label).expect("write to String"),
        }
        // Children without a label exist for JSON only.
        for c in self.children.iter().filter(|c| !c.label.is_empty()) {
            c.write_text(out, depth + 1);
        }
    }

    /// JSON rendering.
    #[must_use]
    pub fn to_json(&self) -> Value {
        if self.list {
            return Value::Array(self.children.iter().map(Node::to_json).collect());
        }
        if self.children.is_empty() {
            return self.value.clone().unwrap_or(Value::Null);
        }
        let mut m = Map::new();
        if let Some(v) = &self.value {
            m.insert("value".into(), v.clone());
        }
        for c in &self.children {
            m.insert(c.key.clone(), c.to_json());
        }
        Value::Object(m)
    }

    /// The first child with this key.
    #[must_use]
    pub fn child(&self, key: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_and_json_from_one_tree() {
        let n = Node::group("hdr", "HDR")
            .with(Node::num("version", "Version", 1))
            .with(Node::code("data_type", "Data Type", 0, "Pre-shared"))
            .with(Node::list("entries", "Entries").with(Node::group("e", "Entry").with(Node::num("ssrc", "SSRC", 7))));
        assert_eq!(
            n.to_text(),
            "HDR\n    Version: 1\n    Data Type: Pre-shared (0)\n    Entries\n        Entry\n            SSRC: 7\n"
        );
        assert_eq!(
            n.to_json(),
            serde_json::json!({"version": 1, "data_type": {"code": 0, "name": "Pre-shared"}, "entries": [{"ssrc": 7}]})
        );
    }
}
