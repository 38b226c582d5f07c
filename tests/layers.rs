//! The crate's layers import only downward (docs/ARCHITECTURE.md): `os` (the
//! kernel and the primitives on it) and `meta` (types and layout) import
//! nothing but themselves, the counters, options and errors nothing from
//! the defences or the allocator core, and `harden` nothing from the core. This test reads
//! `src/` and fails on an upward `crate::` path, so the structure cannot
//! erode unnoticed. Unit
//! tests (`#[cfg(test)] mod tests`) may reach anywhere and are skipped.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Which top-level modules each layer may name, by its path under `src/`.
const RULES: &[(&str, &[&str])] = &[
    ("os/", &["os"]),
    ("meta/", &["meta"]),
    ("error.rs", &["error", "os"]),
    ("options.rs", &["options", "error", "os"]),
    ("stats.rs", &["stats", "error", "meta", "options", "os"]),
    ("harden/", &["harden", "meta", "os", "error", "options", "stats"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and without its unit tests.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules named by `crate::` paths in `code`, including
/// each item of a `crate::{a, b::c}` group.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Items at depth 0 of the group, each up to its `::` or end.
            let mut depth = 0;
            let mut item = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if !item.is_empty() {
                            found.insert(std::mem::take(&mut item));
                        }
                        at_start = true;
                    }
                    c if depth == 0 && at_start && (c.is_alphanumeric() || c == '_') => item.push(c),
                    c if depth == 0 && !item.is_empty() && !(c.is_alphanumeric() || c == '_') => {
                        at_start = false
                    }
                    _ => {}
                }
            }
            if !item.is_empty() {
                found.insert(item);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn every_layer_imports_only_what_is_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut checked = 0;
    let mut upward = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .into_owned();
        let Some((_, allowed)) = RULES.iter().find(|(prefix, _)| rel.starts_with(prefix)) else {
            continue;
        };
        checked += 1;
        let code = code_of(&fs::read_to_string(file).expect("read"));
        for module in named_modules(&code) {
            if !allowed.contains(&module.as_str()) {
                upward.push(format!("src/{rel} names crate::{module}"));
            }
        }
    }
    assert!(
        checked >= 25,
        "only {checked} files matched a layer: were they moved?"
    );
    assert!(
        upward.is_empty(),
        "imports that point up a layer:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_parser_sees_paths_and_groups() {
    let code = "use crate::{meta::page::Page, os};\nfn f() { crate::harden::x(); }\n";
    let names: Vec<_> = named_modules(code).into_iter().collect();
    assert_eq!(names, ["harden", "meta", "os"]);
    let nested = "use crate::{a::{b, c}, d};";
    let names: Vec<_> = named_modules(nested).into_iter().collect();
    assert_eq!(names, ["a", "d"]);
    assert_eq!(
        code_of("x // crate::core\n#[cfg(test)]\nmod tests { crate::y }"),
        "x "
    );
}

/// The defence switches of `harden/catalogue.rs`: each constant whose doc
/// comment opens with its feature's name and a dash (`` /// `canary` — ``).
fn defence_switches() -> Vec<String> {
    let catalogue = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/harden/catalogue.rs"))
        .expect("catalogue");
    let mut switches = Vec::new();
    let mut in_defence = false;
    for line in catalogue.lines() {
        if line.starts_with("/// `") && line.contains("` — ") {
            in_defence = true;
        } else if let Some(rest) = line.strip_prefix("pub const ") {
            if in_defence {
                switches.push(rest.split(':').next().expect("name").to_string());
            }
            in_defence = false;
        } else if !line.starts_with("///") {
            in_defence = false;
        }
    }
    switches
}

/// The core asks harden what a build does (hooks and properties such as
/// `FREE_BLOCKS_READ_ZERO`); it never tests a defence's switch or feature
/// itself (docs/ARCHITECTURE.md), so every defence stays in its own file.
#[test]
fn the_core_tests_no_defence_switch() {
    let switches = defence_switches();
    assert_eq!(switches.len(), 10, "the catalogue's defences: {switches:?}");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join("core"), &mut files);
    files.push(src.join("lib.rs"));
    let mut found = Vec::new();
    for file in &files {
        let code = code_of(&fs::read_to_string(file).expect("read"));
        for switch in &switches {
            let path = format!("harden::{switch}");
            let whole_word = code
                .match_indices(&path)
                .any(|(i, _)| !code[i + path.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'));
            if whole_word {
                found.push(format!("{} tests {path}", file.display()));
            }
        }
        if code.contains("feature = \"") {
            found.push(format!("{} tests a Cargo feature", file.display()));
        }
    }
    assert!(
        found.is_empty(),
        "defence switches in the core:\n{}",
        found.join("\n")
    );
}
