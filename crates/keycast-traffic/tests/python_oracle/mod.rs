//! The Python oracles of the traffic tests (python3-cryptography, python3-scapy from Debian): which
//! interpreter has them. `.ci/run` installs them into Debian's `/usr/bin/python3`, which may not be
//! the first `python3` on `PATH`.

// Each test binary uses part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// The first of `$KEYCAST_PYTHON`, `python3`, `/usr/bin/python3` that can import every module of
/// `modules`; `None`, after printing that the test is skipped, when none can.
pub fn python_with(modules: &[&str]) -> Option<String> {
    let candidates = std::env::var("KEYCAST_PYTHON").into_iter().chain(["python3".into(), "/usr/bin/python3".into()]);
    let import = format!("import {}", modules.join(", "));
    for py in candidates {
        let ok = Command::new(&py).args(["-c", &import]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if ok {
            return Some(py);
        }
    }
    eprintln!("skipped: no python3 with {} (set KEYCAST_PYTHON to choose one)", modules.join(" and "));
    None
}

/// The vector files and the oracles' scripts.
pub fn vectors_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors"))
}

/// Runs `python ARGS` with `stdin`; its standard output (the test fails on a non-zero exit).
pub fn run(python: &str, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(python)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The `[name]` blocks of `key = value` lines of a vector file (`#` lines are comments).
pub fn vector_blocks(file: &str) -> Vec<(String, HashMap<String, String>)> {
    let text = std::fs::read_to_string(vectors_dir().join(file)).unwrap();
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| b.trim_start().starts_with('[')) {
        let mut lines = block.lines().filter(|l| !l.starts_with('#'));
        let name = lines.next().unwrap().trim_matches(['[', ']']).to_owned();
        let fields = lines
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        out.push((name, fields));
    }
    out
}

/// A hex field of a vector block.
pub fn hexf(f: &HashMap<String, String>, k: &str) -> Vec<u8> {
    hex::decode(&f[k]).unwrap()
}
