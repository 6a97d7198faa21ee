//! The docs stay in step with the code: every `profile: P-n` (and `P-11.k`) that a source comment
//! names is a section (item) of docs/wire-profile.md, and every file a page of docs/ names exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The section numbers named after `profile:` in `text`: `P-7, P-8` gives 7 and 8; `P-11.7`
/// gives (11, Some(7)).
fn profile_tags(text: &str) -> BTreeSet<(u32, Option<u32>)> {
    let mut tags = BTreeSet::new();
    for (at, _) in text.match_indices("profile: ") {
        // A tag list runs until the first character that cannot belong to it.
        let rest = &text[at + "profile: ".len()..];
        let list: String =
            rest.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ',' | ' ')).collect();
        for item in list.split(',') {
            let Some(num) = item.trim().strip_prefix("P-") else { continue };
            let num: String = num.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
            let num = num.trim_end_matches('.');
            let (major, minor) = match num.split_once('.') {
                Some((a, b)) => (a, b.parse().ok()),
                None => (num, None),
            };
            if let Ok(major) = major.parse() {
                tags.insert((major, minor));
            }
        }
    }
    tags
}

#[test]
fn every_profile_tag_in_the_code_has_its_section() {
    let root = root();
    let doc = std::fs::read_to_string(root.join("docs/wire-profile.md")).unwrap();
    let p11 = doc.split("## P-11 ").nth(1).expect("the page has P-11");
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    let mut seen = 0;
    let mut missing = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (major, minor) in profile_tags(&text) {
            seen += 1;
            if !doc.contains(&format!("\n## P-{major} ")) {
                missing.push(format!("{}: P-{major}", file.display()));
            }
            if let (11, Some(k)) = (major, minor)
                && !p11.contains(&format!("\n{k}. **"))
            {
                missing.push(format!("{}: P-11.{k}", file.display()));
            }
        }
    }
    assert!(seen > 20, "found only {seen} profile tags: is the scan looking in the right place?");
    assert!(missing.is_empty(), "tags without a section in docs/wire-profile.md: {missing:#?}");
}

#[test]
fn every_file_the_docs_name_exists() {
    let root = root();
    let mut named = 0;
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let page = entry.unwrap().path();
        if page.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let doc = std::fs::read_to_string(&page).unwrap();
        for quoted in doc.split('`').skip(1).step_by(2) {
            if quoted.starts_with("crates/") {
                named += 1;
                assert!(root.join(quoted).exists(), "{} names {quoted}, which does not exist", page.display());
            }
        }
    }
    assert!(named > 30, "only {named} files named");
}

#[test]
fn the_tag_reader_reads_lists_and_items() {
    let tags = profile_tags("x (`profile: P-7, P-8`) y profile: P-11.7. z profile: P-4 \\[chosen\\]");
    let want: BTreeSet<_> = [(4, None), (7, None), (8, None), (11, Some(7))].into();
    assert_eq!(tags, want);
}
