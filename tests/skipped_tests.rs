//! A test that cannot run in this build says so: it shows as ignored, with
//! the reason (`#[cfg_attr(not(feature = "x"), ignore = "needs --features
//! x")]`), so `cargo test`'s summary tells the reader what was not run. A
//! test compiled away by a feature's `#[cfg]`, or a whole file by
//! `#![cfg]`, would vanish from the summary instead. This reads every integration test file of the
//! workspace and fails on either, and on an `#[ignore]` without a reason.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The attribute starting at line `i`, through the line that closes it.
fn attribute_at(lines: &[&str], i: usize) -> String {
    let mut text = String::new();
    for line in &lines[i..] {
        text.push_str(line);
        if line.ends_with(")]") {
            break;
        }
    }
    text
}

/// What is wrong with `text`, a test file, line by line.
fn silent_skips(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("#![cfg(") && attribute_at(&lines, i).contains("feature") {
            found.push(format!("line {}: the whole file is compiled away: {line}", i + 1));
        }
        if *line == "#[test]" {
            // The attributes around `#[test]`, up to the `fn`.
            let before = lines[..i].iter().rev().take_while(|l| l.starts_with("#["));
            let after = lines[i + 1..].iter().take_while(|l| l.starts_with("#["));
            for attr in before.chain(after) {
                if attr.starts_with("#[cfg(") && attr.contains("feature") {
                    found.push(format!("line {}: a test compiled away: {attr}", i + 1));
                }
            }
        }
        if line.starts_with("#[ignore") && !line.starts_with("#[ignore =") {
            found.push(format!("line {}: ignored without a reason: {line}", i + 1));
        }
    }
    found
}

#[test]
fn every_skipped_test_says_why() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["tests", "capi/tests", "launcher/tests", "bench/tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() >= 30, "test files found: {}", files.len());
    let mut found = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("read");
        for problem in silent_skips(&text) {
            found.push(format!(
                "{}: {problem}",
                file.strip_prefix(root).unwrap_or(file).display()
            ));
        }
    }
    assert!(
        found.is_empty(),
        "tests skipped without a word:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_sees_each_kind_of_silent_skip() {
    let file = "#![cfg(any(\n    feature = \"canary\"\n))]\n\n#[cfg(feature = \"canary\")]\n#[test]\nfn a() {}\n\n#[test]\n#[ignore]\nfn b() {}\n\n#[test]\n#[cfg_attr(not(feature = \"canary\"), ignore = \"needs --features canary\")]\nfn c() {}\n";
    let found = silent_skips(file);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found[0].contains("whole file")
            && found[1].contains("compiled away")
            && found[2].contains("without a reason")
    );
}
