//! docs/terminal-guide.md stays true: its configuration example loads with the terminal's own
//! reader, and every `keycast terminal` command it shows exists.

use std::path::Path;
use std::process::Command;

use keycast::terminal_cmd::TerminalConfig;

fn guide() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/terminal-guide.md")).unwrap()
}

#[test]
fn the_configuration_example_loads() {
    let doc = guide();
    let at = doc.find("<!-- config: terminal -->").expect("the example");
    let rest = &doc[at..];
    let start = rest.find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + rest[start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("terminal.toml");
    std::fs::write(&path, &rest[start..end]).unwrap();
    let config = TerminalConfig::load(&path).expect("the example loads");
    assert_eq!(config.card_path(None).unwrap(), dir.path().join("card.kc"));
}

#[test]
fn every_terminal_command_shown_exists() {
    let doc = guide();
    let mut seen = 0;
    for line in doc.lines() {
        let Some(rest) = line.split("keycast terminal ").nth(1) else { continue };
        // `--config FILE` comes before the command.
        let words: Vec<&str> = rest.split_whitespace().collect();
        let command = if words.first() == Some(&"--config") { words.get(2) } else { words.first() };
        let Some(command) = command else { continue };
        if command.starts_with(['<', '`', '-']) {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_keycast")).args(["terminal", command, "--help"]).output().unwrap();
        assert!(
            out.status.success(),
            "`keycast terminal {command}` from the guide: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} commands found in the guide");
}
