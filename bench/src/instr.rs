//! Instruction counts per defence (the runner is src/bin/instr.rs): which C libraries to build
//! with which features, what each is compared with, reading cachegrind's total and the crate's
//! feature table, and the markdown table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// The defences, each a feature of the `fortalloc` crate, in the order of the cumulative ladder.
pub const DEFENCES: [&str; 10] = [
    "guard-pages",
    "encoded-freelist",
    "random-order",
    "double-free",
    "canary",
    "quarantine",
    "underflow-trailers",
    "zero-on-free",
    "write-after-free-check",
    "seal-freed-large",
];

/// The cumulative ladder: each rung adds these defences to the one before (the first, to plain).
/// With the fourth rung it holds every defence of `secure`, with the last every one of
/// `secure-max`, so the marginal counts split both presets' cost by defence.
pub const LADDER: [&[&str]; 8] = [
    &["guard-pages"],
    &["encoded-freelist", "random-order", "double-free"],
    &["canary"],
    &["quarantine"],
    &["underflow-trailers"],
    &["zero-on-free"],
    &["write-after-free-check"],
    &["seal-freed-large"],
];

/// The reference every count is divided by.
pub const REFERENCE: &str = "mimalloc-secure";

/// What a row measures: a fortalloc C library built with `features`, or a reference library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `libfortalloc.so` built with these features of the `fortalloc` crate (presets included).
    Fortalloc(Vec<String>),
    /// mimalloc 2.3 from the vendored sources, plain or with `MI_SECURE=4`.
    Mimalloc { secure: bool },
    /// No preload: glibc's malloc.
    System,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// Its name, and the directory under `target/instr/` a fortalloc build goes to.
    pub name: String,
    /// What it adds to `base`, for the table.
    pub adds: String,
    pub kind: Kind,
    /// The row its marginal count is taken over.
    pub base: Option<String>,
}

fn fortalloc(name: &str, adds: &str, features: &[&str], base: Option<&str>) -> Build {
    Build {
        name: name.to_string(),
        adds: adds.to_string(),
        kind: Kind::Fortalloc(features.iter().map(|f| f.to_string()).collect()),
        base: base.map(str::to_string),
    }
}

/// The name of ladder rung `i` (0-based): `up-to-<its last defence>`.
pub fn rung_name(i: usize) -> String {
    format!("up-to-{}", LADDER[i][LADDER[i].len() - 1])
}

/// Every build the tool knows, in table order: plain and the presets, the ladder, each defence
/// alone, then the references.
pub fn catalogue() -> Vec<Build> {
    let mut all = vec![
        fortalloc("plain", "-", &[], None),
        fortalloc("secure", "preset secure", &["secure"], Some("plain")),
        fortalloc("secure-max", "preset secure-max", &["secure-max"], Some("secure")),
    ];
    let mut so_far: Vec<&str> = Vec::new();
    for (i, step) in LADDER.iter().enumerate() {
        so_far.extend_from_slice(step);
        let base = if i == 0 {
            "plain".to_string()
        } else {
            rung_name(i - 1)
        };
        all.push(fortalloc(
            &rung_name(i),
            &format!("+ {}", step.join(" + ")),
            &so_far,
            Some(&base),
        ));
    }
    for d in DEFENCES {
        all.push(fortalloc(&format!("only-{d}"), d, &[d], Some("plain")));
    }
    all.push(Build {
        name: REFERENCE.to_string(),
        adds: "reference: mimalloc 2.3, MI_SECURE=4".to_string(),
        kind: Kind::Mimalloc { secure: true },
        base: None,
    });
    all.push(Build {
        name: "mimalloc-2.3".to_string(),
        adds: "mimalloc 2.3".to_string(),
        kind: Kind::Mimalloc { secure: false },
        base: None,
    });
    all.push(Build {
        name: "system".to_string(),
        adds: "glibc, no preload".to_string(),
        kind: Kind::System,
        base: None,
    });
    all
}

/// The builds `spec` names (comma-separated build names or groups: `presets`, `ladder`,
/// `alone`, `refs`, `all`), in catalogue order, with the reference always among them.
pub fn select(spec: &str) -> Result<Vec<Build>, String> {
    let all = catalogue();
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    wanted.insert(REFERENCE.to_string());
    for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let group: Vec<String> = match word {
            "all" => all.iter().map(|b| b.name.clone()).collect(),
            "presets" => vec!["plain".into(), "secure".into(), "secure-max".into()],
            "ladder" => std::iter::once("plain".to_string())
                .chain((0..LADDER.len()).map(rung_name))
                .collect(),
            "alone" => std::iter::once("plain".to_string())
                .chain(DEFENCES.iter().map(|d| format!("only-{d}")))
                .collect(),
            "refs" => vec![REFERENCE.into(), "mimalloc-2.3".into(), "system".into()],
            name if all.iter().any(|b| b.name == name) => vec![name.to_string()],
            other => return Err(format!("unknown build {other:?} (see --list)")),
        };
        wanted.extend(group);
    }
    Ok(all.into_iter().filter(|b| wanted.contains(&b.name)).collect())
}

/// The `[features]` table of a Cargo.toml: each feature and what it enables. Reads the
/// one-line form `name = ["a", "b"]` the crate uses; comments and other sections are skipped.
pub fn feature_table(cargo_toml: &str) -> BTreeMap<String, Vec<String>> {
    let mut table = BTreeMap::new();
    let mut inside = false;
    for line in cargo_toml.lines().map(str::trim) {
        if line.starts_with('[') && !line.starts_with("[\"") {
            inside = line == "[features]";
            continue;
        }
        if !inside || line.starts_with('#') {
            continue;
        }
        let Some((name, list)) = line.split_once('=') else {
            continue;
        };
        let list = list.trim();
        let Some(list) = list.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
            continue;
        };
        let enabled = list
            .split(',')
            .map(|f| f.trim().trim_matches('"').to_string())
            .filter(|f| !f.is_empty())
            .collect();
        table.insert(name.trim().to_string(), enabled);
    }
    table
}

/// Every feature `features` turn on, following `table` (entries naming a dependency, `dep:x` or
/// `x/y`, are left out).
pub fn expand(table: &BTreeMap<String, Vec<String>>, features: &[String]) -> BTreeSet<String> {
    let mut on = BTreeSet::new();
    let mut todo: Vec<String> = features.to_vec();
    while let Some(f) = todo.pop() {
        if f.contains(':') || f.contains('/') || !on.insert(f.clone()) {
            continue;
        }
        if let Some(more) = table.get(&f) {
            todo.extend(more.iter().cloned());
        }
    }
    on
}

/// The total instruction count ("I refs") of the last process in cachegrind's output: with
/// `--trace-children=yes` the program exec'd from `env` reports last.
pub fn parse_i_refs(stderr: &str) -> Option<u64> {
    stderr.lines().rev().find_map(|line| {
        let (head, count) = line.split_once("refs:")?;
        let head = head.trim_end();
        if head != "I" && !head.ends_with(" I") {
            return None;
        }
        count.trim().replace(',', "").parse().ok()
    })
}

/// `n` with a comma every three digits.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A row's measured count, if the build and the run succeeded.
pub struct Row<'a> {
    pub build: &'a Build,
    pub count: Option<u64>,
    /// The build whose library it shares (same features once expanded), if any.
    pub same_as: Option<&'a str>,
}

/// The markdown table of one program: per build its count, its marginal count over its base
/// row (`-` when the base was not run) and its ratio to the reference's count.
pub fn render(program: &str, rows: &[Row]) -> String {
    let count = |name: &str| rows.iter().find(|r| r.build.name == name).and_then(|r| r.count);
    let reference = count(REFERENCE);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {program}: build | adds | I refs | marginal (over) | / {REFERENCE} |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for row in rows {
        let b = row.build;
        let Some(n) = row.count else {
            let _ = writeln!(out, "| {} | {} | FAILED | - | - |", b.name, b.adds);
            continue;
        };
        let marginal = match b.base.as_deref().and_then(|base| Some((base, count(base)?))) {
            Some((base, m)) => {
                let diff = n as i128 - m as i128;
                let sign = if diff < 0 { "-" } else { "+" };
                format!(
                    "{sign}{} ({sign}{:.1}%) ({base})",
                    thousands(diff.unsigned_abs() as u64),
                    diff.abs() as f64 * 100.0 / m as f64
                )
            }
            None => "-".to_string(),
        };
        let ratio = reference.map_or("-".to_string(), |r| format!("{:.2}x", n as f64 / r as f64));
        let adds = match row.same_as {
            Some(other) => format!("{} (same build as {other})", b.adds),
            None => b.adds.clone(),
        };
        let _ = writeln!(
            out,
            "| {} | {adds} | {} | {marginal} | {ratio} |",
            b.name,
            thousands(n)
        );
    }
    out
}
