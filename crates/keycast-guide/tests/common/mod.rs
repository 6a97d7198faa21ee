//! Shared helpers for the integration tests.
#![allow(dead_code)]

use keycast_guide::Guide;

/// Reads `tests/data/<name>`.
pub fn data(name: &str) -> String {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every SG fragment example in `tests/data`.
pub const FRAGMENTS: &[&str] = &[
    "service.xml",
    "content.xml",
    "access_sdp.xml",
    "access_usd.xml",
    "purchase_item.xml",
    "purchase_data_month.xml",
    "purchase_data_tokens.xml",
    "purchase_channel.xml",
];

/// A guide holding every example fragment.
pub fn example_guide() -> Guide {
    let mut g = Guide::new();
    for f in FRAGMENTS {
        assert!(g.insert_xml(&data(f)).unwrap(), "{f}");
    }
    g
}
