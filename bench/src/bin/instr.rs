//! Instruction counts per defence: builds fortalloc's C library with each feature set of
//! `fortalloc_bench::instr::catalogue` into `target/instr/<name>/`, builds mimalloc-secure as
//! cbench does, runs each C program under
//! `valgrind --tool=cachegrind --cache-sim=no --trace-children=yes env LD_PRELOAD=<lib> <prog>`
//! and prints, per program, every build's "I refs" total, its marginal count over the build
//! before it and its ratio to mimalloc-secure's. Counts do not depend on the machine's load,
//! so they show small costs that wall times on a shared machine cannot.
//!
//! cargo run --release -p fortalloc-bench --bin instr -- [--builds B,B] [--programs P,P]
//!     [--no-build] [--list]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fortalloc_bench::cbench::{build_capi, build_mimalloc, compile};
use fortalloc_bench::instr::{expand, feature_table, parse_i_refs, render, select, Kind, Row};

const HELP: &str = "\
instr: instruction counts (cachegrind's I refs) of C programs under LD_PRELOAD, per build of
fortalloc's C library, with each build's marginal count over the one before and its ratio to
mimalloc-secure.

usage: cargo run --release -p fortalloc-bench --bin instr -- [options]

options:
  --builds B,B     builds or groups to measure (default all): presets (plain, secure,
                   secure-max), ladder (plain and the cumulative ladder), alone (plain and
                   each defence alone), refs (mimalloc-secure, mimalloc-2.3, system), all,
                   or names from --list; mimalloc-secure is always measured
  --programs P,P   programs to run (default simple,skewed-mass,latency)
  --no-build       use the libraries already in target/instr/<name>/ (mimalloc's are reused
                   anyway once built)
  --list           list the builds and programs, then exit
  --help           this text
";

/// The programs: name, source in bench/c/, arguments (sizes for a run of seconds under
/// cachegrind; latency's `untimed` leaves out the clock, whose readings would change the count).
const PROGRAMS: [(&str, &str, &[&str]); 3] = [
    ("simple", "simple", &["0.025", "1"]),
    ("skewed-mass", "skewed_mass", &["0.05"]),
    ("latency", "latency", &["0.01", "untimed"]),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).cloned()
    };
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{HELP}");
        return;
    }
    let builds = match select(&value("--builds").unwrap_or_else(|| "all".into())) {
        Ok(b) => b,
        Err(e) => fail(&e),
    };
    let program_names = value("--programs").unwrap_or_else(|| "simple,skewed-mass,latency".into());
    let mut programs = Vec::new();
    for name in program_names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match PROGRAMS.iter().find(|p| p.0 == name) {
            Some(p) => programs.push(*p),
            None => fail(&format!("unknown program {name:?} (see --list)")),
        }
    }
    if args.iter().any(|a| a == "--list") {
        for b in fortalloc_bench::instr::catalogue() {
            let over = b
                .base
                .as_deref()
                .map_or(String::new(), |base| format!(" (over {base})"));
            println!("{:<30} {}{over}", b.name, b.adds);
        }
        for (name, file, argv) in PROGRAMS {
            println!("program {name}: bench/c/{file}.c {}", argv.join(" "));
        }
        return;
    }
    let no_build = args.iter().any(|a| a == "--no-build");

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let c_dir = root.join("target/bench/c");
    std::fs::create_dir_all(&c_dir).expect("target/bench/c");
    let table = std::fs::read_to_string(root.join("Cargo.toml"))
        .map(|t| feature_table(&t))
        .unwrap_or_default();

    // Build each library once: a build whose features expand to those of one before it (a
    // defence alone that is also the ladder's first rung) shares that one's library. A preset's
    // own name stays in its expanded set, so the ladder's rungs that hold a preset's defences are
    // built apart from it: their counts agree unless code tests the preset's name.
    let mut libs: Vec<(Option<PathBuf>, Option<String>)> = Vec::new();
    let mut built: BTreeMap<Vec<String>, (String, Option<PathBuf>)> = BTreeMap::new();
    for b in &builds {
        let lib = match &b.kind {
            Kind::System => (None, None),
            Kind::Mimalloc { secure } => {
                let (file, defines): (&str, &[&str]) = if *secure {
                    ("libmimalloc-secure.so", &["-DMI_SECURE=4"])
                } else {
                    ("libmimalloc-2.3.so", &[])
                };
                (build_mimalloc(&cargo, &root, &c_dir.join(file), defines), None)
            }
            Kind::Fortalloc(features) => {
                let key: Vec<String> = expand(&table, features).into_iter().collect();
                if let Some((first, path)) = built.get(&key) {
                    (path.clone(), Some(first.clone()))
                } else {
                    let dir = format!("target/instr/{}", b.name);
                    let path = if no_build {
                        Some(root.join(&dir).join("release/libfortalloc.so")).filter(|p| p.exists())
                    } else {
                        eprintln!("instr: building {} [{}]", b.name, features.join(","));
                        let features: Vec<String> =
                            features.iter().map(|f| format!("fortalloc/{f}")).collect();
                        build_capi(&cargo, &root, &features, Some(&dir))
                    };
                    built.insert(key, (b.name.clone(), path.clone()));
                    (path, None)
                }
            }
        };
        libs.push(lib);
    }

    let mut out = String::new();
    for (name, file, argv) in &programs {
        let exe = c_dir.join(file);
        compile(&root.join("bench/c").join(format!("{file}.c")), &exe);
        let mut counts: BTreeMap<PathBuf, Option<u64>> = BTreeMap::new();
        let mut rows = Vec::new();
        for (b, (lib, same_as)) in builds.iter().zip(&libs) {
            let count = match (&b.kind, lib) {
                (Kind::System, _) => count(&exe, argv, None),
                (_, None) => None,
                (_, Some(lib)) => *counts
                    .entry(lib.clone())
                    .or_insert_with(|| count(&exe, argv, Some(lib))),
            };
            eprintln!(
                "instr: {name} under {}: {}",
                b.name,
                count.map_or("FAILED".to_string(), |n| n.to_string())
            );
            rows.push(Row {
                build: b,
                count,
                same_as: same_as.as_deref(),
            });
        }
        out.push_str(&render(&format!("{name} ({file}.c {})", argv.join(" ")), &rows));
        out.push('\n');
    }
    println!("{out}");
    let dir = root.join("target/instr");
    let written = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(dir.join("results.md"), &out));
    if let Err(e) = written {
        eprintln!("instr: cannot write {}: {e}", dir.join("results.md").display());
    }
}

/// The instruction count of `exe argv` with `lib` preloaded (none: glibc), or None if valgrind
/// or the program failed. `env` sets `LD_PRELOAD` so that valgrind itself does not load the
/// library; `--trace-children=yes` follows env's exec into the program, whose total comes last.
fn count(exe: &Path, argv: &[&str], lib: Option<&Path>) -> Option<u64> {
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        "--trace-children=yes",
        "env",
    ]);
    match lib {
        Some(lib) => cmd.arg(format!("LD_PRELOAD={}", lib.display())),
        None => cmd.args(["-u", "LD_PRELOAD"]),
    };
    let output = cmd
        .arg(exe)
        .args(argv)
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        eprintln!(
            "instr: {} failed ({}):\n{}",
            exe.display(),
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        return None;
    }
    parse_i_refs(&stderr)
}

fn fail(message: &str) -> ! {
    eprintln!("instr: {message}");
    std::process::exit(2);
}
