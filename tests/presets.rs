//! The hardened presets are what SECURITY.md says they are: its table
//! ("The two presets") and `Cargo.toml`'s `secure` and `secure-max`
//! features list the same defences, every defence feature has a row, and
//! a build of a preset has each of its defences switched on and says
//! which preset it is.

mod common;

use std::collections::BTreeSet;

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

const MANIFEST: &str = include_str!("../Cargo.toml");
const SECURITY: &str = include_str!("../SECURITY.md");

/// Features that are not defences or presets.
const NOT_DEFENCES: &[&str] = &["tls-initial-exec", "secure", "secure-max"];

/// The `[features]` table of the manifest: each name with what it turns on.
fn features() -> Vec<(String, Vec<String>)> {
    let start = MANIFEST.find("\n[features]\n").expect("[features] in Cargo.toml");
    let body = &MANIFEST[start + "\n[features]\n".len()..];
    let end = body.find("\n[").unwrap_or(body.len());
    body[..end]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, list) = l.split_once('=').expect("name = [...]");
            let list = list.trim().trim_start_matches('[').trim_end_matches(']');
            let items = list
                .split(',')
                .map(|i| i.trim().trim_matches('"').to_string())
                .filter(|i| !i.is_empty())
                .collect();
            (name.trim().to_string(), items)
        })
        .collect()
}

/// Every defence feature a preset turns on, with what those imply.
fn preset_in_manifest(preset: &str) -> BTreeSet<String> {
    let all = features();
    let mut on = BTreeSet::new();
    let mut todo = vec![preset.to_string()];
    while let Some(f) = todo.pop() {
        let (_, implied) = all
            .iter()
            .find(|(n, _)| *n == f)
            .unwrap_or_else(|| panic!("feature {f} not in Cargo.toml"));
        for i in implied {
            if on.insert(i.clone()) {
                todo.push(i.clone());
            }
        }
    }
    on
}

/// SECURITY.md's preset table: each defence with its `secure` and
/// `secure-max` cells.
fn table() -> Vec<(String, bool, bool)> {
    let start = SECURITY.find("## The two presets").expect("the presets section");
    let section = &SECURITY[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    section[..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let yes = |c: &str| match c {
                "yes" => true,
                "no" => false,
                other => panic!("cell {other:?} in {l}: yes or no"),
            };
            (
                cells[1].trim_matches('`').to_string(),
                yes(cells[2]),
                yes(cells[3]),
            )
        })
        .collect()
}

#[test]
fn security_md_and_cargo_toml_name_the_same_defences_per_preset() {
    let rows = table();
    assert!(!rows.is_empty(), "no rows in SECURITY.md's preset table");
    for (col, preset) in [(0, "secure"), (1, "secure-max")] {
        let documented: BTreeSet<String> = rows
            .iter()
            .filter(|r| if col == 0 { r.1 } else { r.2 })
            .map(|r| r.0.clone())
            .collect();
        assert_eq!(
            preset_in_manifest(preset),
            documented,
            "`{preset}`: Cargo.toml (left) against SECURITY.md (right)"
        );
    }
}

#[test]
fn every_defence_has_a_row_and_secure_max_has_them_all() {
    let rows = table();
    let defences: BTreeSet<String> = features()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !NOT_DEFENCES.contains(&n.as_str()))
        .collect();
    let documented: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(
        defences, documented,
        "Cargo.toml's defences against SECURITY.md's rows"
    );
    assert_eq!(preset_in_manifest("secure-max"), defences);
    let listed: BTreeSet<String> = IN_THIS_BUILD.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(listed, defences, "IN_THIS_BUILD against Cargo.toml's defences");
    assert!(preset_in_manifest("secure").is_subset(&preset_in_manifest("secure-max")));
}

/// What `cfg!` says of each defence in this build (the list must name
/// every defence: checked above against the manifest).
const IN_THIS_BUILD: [(&str, bool); 10] = [
    ("guard-pages", cfg!(feature = "guard-pages")),
    ("seal-freed-large", cfg!(feature = "seal-freed-large")),
    ("encoded-freelist", cfg!(feature = "encoded-freelist")),
    ("random-order", cfg!(feature = "random-order")),
    ("double-free", cfg!(feature = "double-free")),
    ("canary", cfg!(feature = "canary")),
    ("underflow-trailers", cfg!(feature = "underflow-trailers")),
    ("zero-on-free", cfg!(feature = "zero-on-free")),
    ("write-after-free-check", cfg!(feature = "write-after-free-check")),
    ("quarantine", cfg!(feature = "quarantine")),
];

fn on_in_this_build() -> BTreeSet<&'static str> {
    IN_THIS_BUILD
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| n)
        .collect()
}

/// Run under `--features secure` and `--features secure-max` (CI does):
/// the build has every defence its preset's column promises.
#[test]
fn this_build_has_every_defence_its_preset_promises() {
    let on = on_in_this_build();
    for (col, preset, built) in [
        (0, "secure", cfg!(feature = "secure")),
        (1, "secure-max", cfg!(feature = "secure-max")),
    ] {
        if !built {
            continue;
        }
        for (name, in_secure, in_max) in table() {
            if [in_secure, in_max][col] {
                assert!(on.contains(name.as_str()), "`{preset}` build lacks `{name}`");
            }
        }
    }
}

/// `FORTALLOC_VERBOSE=1` names the build: the preset its defences make,
/// `custom` for any other set, `plain` for none.
#[test]
fn the_verbose_line_names_the_preset() {
    let on = on_in_this_build();
    let column = |col: usize| -> BTreeSet<&str> {
        table()
            .into_iter()
            .filter(|r| [r.1, r.2][col])
            .map(|r| IN_THIS_BUILD.iter().find(|(n, _)| *n == r.0).expect("listed").0)
            .collect()
    };
    let want = if on.is_empty() {
        "plain"
    } else if on == column(0) {
        "secure"
    } else if on == column(1) {
        "secure-max"
    } else {
        "custom"
    };
    common::child("verbose-names-the-build")
        .env("FORTALLOC_VERBOSE", "1")
        .run(|| {})
        .check(|o| {
            o.assert_success("verbose child");
            assert!(o.stderr.contains(&format!(", build {want}\n")), "{}", o.stderr);
        });
}
