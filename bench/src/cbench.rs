//! The C benchmark's data and table (the runner is src/bin/cbench.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

pub use crate::driver::stats::{geomean, median};
use crate::latency::{self, Latency};

/// The reference of the hardened presets.
pub const SECURE_REFERENCE: &str = "mimalloc-secure";

/// A hardened preset's targets against `SECURE_REFERENCE` over the C workloads: the most its
/// geometric mean of time ratios and any one workload's ratio may be.
pub struct Target {
    pub name: &'static str,
    pub geomean: f64,
    pub worst: f64,
}

/// The targets: `secure` within mimalloc-secure's cost, `secure-max` within bounds.
pub const TARGETS: [Target; 2] = [
    Target {
        name: "fortalloc-secure",
        geomean: 1.00,
        worst: 1.25,
    },
    Target {
        name: "fortalloc-secure-max",
        geomean: 1.50,
        worst: 4.00,
    },
];

/// A C workload, or a real program.
pub struct Job {
    pub name: &'static str,
    /// A real program (compared with glibc) rather than a C workload
    /// (compared with mimalloc).
    pub program: bool,
    pub argv: Vec<String>,
    /// Its stdout must be the same under every allocator.
    pub compare_output: bool,
    /// It prints per-call percentiles (`crate::latency`'s line), which must be there.
    pub latency: bool,
    pub dir: PathBuf,
}

/// An allocator: a library to preload, or none (glibc).
pub struct Lib {
    pub name: &'static str,
    pub path: Option<PathBuf>,
    /// Not installed, or its preload did not take effect.
    pub missing: bool,
}

/// The samples of one job under one allocator.
#[derive(Clone, Default)]
pub struct Cell {
    pub secs: Vec<f64>,
    pub rss_kb: Vec<u64>,
    /// A latency job's percentiles, one report per run.
    pub latency: Vec<Latency>,
    pub failed: bool,
}

impl Cell {
    fn time(&self) -> Option<f64> {
        if self.failed {
            None
        } else {
            median(&self.secs)
        }
    }

    fn rss(&self) -> Option<f64> {
        median(&self.rss_kb.iter().map(|&k| k as f64).collect::<Vec<_>>())
    }
}

/// Compiles the launcher every measured program runs under (`bench/c/launch.c`, whose head
/// comment says why it exists) from `src` into `exe`: freestanding and static, so that it has
/// no dynamic loader for `LD_PRELOAD` to act on and no libc start-up to time. Panics if it
/// does not build.
pub fn build_launcher(src: &Path, exe: &Path) {
    let mut cmd = Command::new("cc");
    cmd.args([
        "-O2",
        "-static",
        "-nostdlib",
        "-ffreestanding",
        // No libc: no stack-protector canary to check, and no memset or memcpy for the
        // compiler to turn loops into.
        "-fno-stack-protector",
        "-fno-tree-loop-distribute-patterns",
        "-o",
    ])
    .arg(exe)
    .arg(src);
    run_cc(cmd, src);
}

/// Runs a `cc` command building `src`; panics with the compiler's errors if it fails.
pub fn run_cc(mut cmd: Command, src: &Path) {
    let out = cmd.output().expect("cc");
    assert!(
        out.status.success(),
        "{}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds mimalloc 2.x as a preloadable library from the C sources that
/// the `libmimalloc-sys` crate (a dependency of the Rust benchmark's
/// mimalloc workers) vendors, with `defines` added (`-DMI_SECURE=4` for
/// its secure mode, which Debian's package does not have), into `out`
/// unless it is there already. None if the sources cannot be found or do
/// not build.
pub fn build_mimalloc(cargo: &str, root: &Path, out: &Path, defines: &[&str]) -> Option<PathBuf> {
    let find = || -> Option<PathBuf> {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        let registry = home.join("registry/src");
        let mut found: Vec<PathBuf> = std::fs::read_dir(registry)
            .ok()?
            .flatten()
            .flat_map(|index| std::fs::read_dir(index.path()).into_iter().flatten().flatten())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("libmimalloc-sys-"))
            })
            .map(|p| p.join("c_src/mimalloc/v2"))
            .filter(|p| p.join("src/static.c").exists())
            .collect();
        found.sort();
        found.pop()
    };
    let src = find().or_else(|| {
        // The sources arrive with the crate; fetch it if this machine never
        // built the Rust benchmark's mimalloc workers.
        let _ = Command::new(cargo).current_dir(root).arg("fetch").status();
        find()
    });
    let Some(src) = src else {
        eprintln!(
            "cbench: libmimalloc-sys sources not found: {} left out",
            out.display()
        );
        return None;
    };
    if out.exists() {
        return Some(out.to_path_buf());
    }
    let built = Command::new("cc")
        .args(["-O3", "-shared", "-fPIC", "-DNDEBUG", "-DMI_MALLOC_OVERRIDE"])
        .args(defines)
        .arg(format!("-I{}", src.join("include").display()))
        .arg("-o")
        .arg(out)
        .arg(src.join("src/static.c"))
        .arg("-lpthread")
        .status();
    if built.is_ok_and(|s| s.success()) {
        Some(out.to_path_buf())
    } else {
        eprintln!("cbench: building {} failed", out.display());
        None
    }
}

/// Compiles the C workload `src` into `exe` (`cc -O2 -pthread`); panics if it does not build.
pub fn compile(src: &Path, exe: &Path) {
    let mut cmd = Command::new("cc");
    cmd.args(["-O2", "-pthread", "-o"]).arg(exe).arg(src).arg("-ldl");
    run_cc(cmd, src);
}

/// Builds `libfortalloc.so` (`cargo build --release -p fortalloc-capi`) with `features` (as
/// cargo's `--features` takes them: `secure`, `fortalloc/canary`, ...) into `target_dir`
/// (relative to `root`; None for cargo's default). Returns the library's path, or None (with
/// a message on stderr) if the build failed.
pub fn build_capi(
    cargo: &str,
    root: &Path,
    features: &[String],
    target_dir: Option<&str>,
) -> Option<PathBuf> {
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "-p", "fortalloc-capi"]);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    if let Some(dir) = target_dir {
        cmd.args(["--target-dir", dir]);
    }
    let built = cmd.status().is_ok_and(|s| s.success());
    let lib = root
        .join(target_dir.unwrap_or("target"))
        .join("release/libfortalloc.so");
    if built {
        Some(lib)
    } else {
        eprintln!(
            "building libfortalloc.so with features [{}] failed",
            features.join(",")
        );
        None
    }
}

/// The program's peak RSS in KiB from the launcher's stderr (its `maxrss_kb=N` line), or None
/// if it wrote none.
pub fn parse_maxrss_kb(stderr: &[u8]) -> Option<u64> {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("maxrss_kb=")?.trim().parse().ok())
}

/// The markdown table: per job and allocator the median time, its ratio
/// to the reference (mimalloc for C workloads, glibc for real programs)
/// and the median peak RSS; geometric means of the ratios per section.
pub fn render(jobs: &[Job], libs: &[Lib], cells: &[Vec<Cell>]) -> String {
    let mut out = String::new();
    for (program, title, reference) in [
        (false, "C workload", "mimalloc"),
        (false, "C workload", "mimalloc-secure"),
        (true, "program", "system"),
    ] {
        let Some(r) = libs.iter().position(|l| l.name == reference) else {
            continue;
        };
        if !jobs.iter().any(|j| j.program == program) {
            continue;
        }
        let r = Some(r);
        out.push_str(&format!("| {title} (ratio to {reference}) |"));
        for l in libs {
            out.push_str(&format!(
                " {}{} |",
                l.name,
                if l.missing { " (missing)" } else { "" }
            ));
        }
        out.push('\n');
        out.push_str(&"|---".repeat(libs.len() + 1));
        out.push_str("|\n");
        let mut ratios: Vec<Vec<(&str, f64)>> = vec![Vec::new(); libs.len()];
        let mut failed = vec![false; libs.len()];
        for (j, job) in jobs.iter().enumerate().filter(|(_, j)| j.program == program) {
            out.push_str(&format!("| {} |", job.name));
            let base = r.and_then(|r| cells[j][r].time());
            for (l, cell) in cells[j].iter().enumerate() {
                match (cell.time(), cell.failed) {
                    (_, true) => {
                        failed[l] = true;
                        out.push_str(" FAILED |");
                    }
                    (Some(t), false) => {
                        let ratio = base.map(|b| t / b);
                        if let Some(x) = ratio {
                            ratios[l].push((job.name, x));
                        }
                        out.push_str(&format!(
                            " {:.0} ms ({}) {:.1} MiB |",
                            t * 1000.0,
                            ratio.map_or("-".to_string(), |x| format!("{x:.2}x")),
                            cell.rss().unwrap_or(0.0) / 1024.0
                        ));
                    }
                    (None, false) => out.push_str(" - |"),
                }
            }
            out.push('\n');
        }
        out.push_str(&format!("| **geomean / {reference}** |"));
        for r in &ratios {
            let values: Vec<f64> = r.iter().map(|&(_, x)| x).collect();
            out.push_str(&geomean(&values).map_or(" - |".to_string(), |g| format!(" **{g:.2}x** |")));
        }
        out.push_str("\n\n");
        if !program && reference == SECURE_REFERENCE {
            out.push_str(&verdicts(libs, &ratios, &failed));
        }
    }
    for (j, job) in jobs.iter().enumerate().filter(|(_, j)| j.latency) {
        let rows: Vec<(&str, Option<Latency>)> = libs
            .iter()
            .zip(&cells[j])
            .filter(|(l, _)| !l.missing)
            .map(|(l, c)| {
                let runs = if c.failed {
                    None
                } else {
                    Latency::median_of(&c.latency)
                };
                (l.name, runs)
            })
            .collect();
        out.push_str(&latency::render(
            job.name,
            &rows,
            SECURE_REFERENCE,
            &latency::JUDGED,
        ));
        out.push('\n');
    }
    out
}

/// Each preset of `TARGETS` against mimalloc-secure: its geometric mean and its worst workload
/// (from `ratios`, per library the C workloads' time ratios), each checked against its target.
/// A preset that failed a workload fails.
fn verdicts(libs: &[Lib], ratios: &[Vec<(&str, f64)>], failed: &[bool]) -> String {
    let mut out = format!(
        "| preset / {SECURE_REFERENCE} | geomean | worst workload | targets | verdict |\n|---|---:|---|---|---|\n"
    );
    for target in &TARGETS {
        let Some(l) = libs.iter().position(|l| l.name == target.name && !l.missing) else {
            continue;
        };
        let values: Vec<f64> = ratios[l].iter().map(|&(_, x)| x).collect();
        let (Some(g), Some(&(worst_name, worst))) = (
            geomean(&values),
            ratios[l].iter().max_by(|a, b| a.1.total_cmp(&b.1)),
        ) else {
            continue;
        };
        let verdict = if failed[l] {
            "FAIL (a workload failed)"
        } else if g <= target.geomean && worst <= target.worst {
            "PASS"
        } else {
            "FAIL"
        };
        out.push_str(&format!(
            "| {} | {g:.2}x | {worst_name} {worst:.2}x | geomean <= {:.2}x, none above {:.2}x | {verdict} |\n",
            target.name, target.geomean, target.worst
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(secs: &[f64]) -> Cell {
        Cell {
            secs: secs.to_vec(),
            rss_kb: vec![2048; secs.len()],
            latency: Vec::new(),
            failed: false,
        }
    }

    #[test]
    fn parses_the_launchers_report() {
        assert_eq!(parse_maxrss_kb(b"maxrss_kb=1412\n"), Some(1412));
        assert_eq!(parse_maxrss_kb(b"usage: launch PROGRAM [ARG...]\n"), None);
        assert_eq!(parse_maxrss_kb(b""), None);
    }

    #[test]
    fn ratios_are_against_each_sections_reference() {
        let job = |name, program| Job {
            name,
            program,
            argv: vec![],
            compare_output: program,
            latency: false,
            dir: PathBuf::new(),
        };
        let lib = |name| Lib {
            name,
            path: None,
            missing: false,
        };
        let jobs = [job("w", false), job("p", true)];
        let libs = [lib("system"), lib("fortalloc"), lib("mimalloc")];
        let mut failed = cell(&[1.0]);
        failed.failed = true;
        let cells = vec![
            vec![
                cell(&[4.0, 4.0, 9.0]),
                cell(&[1.0, 1.0, 1.0]),
                cell(&[2.0, 2.0, 2.0]),
            ],
            vec![cell(&[2.0]), cell(&[3.0]), failed],
        ];
        let t = render(&jobs, &libs, &cells);
        assert!(
            t.contains("| w | 4000 ms (2.00x) 2.0 MiB | 1000 ms (0.50x) 2.0 MiB | 2000 ms (1.00x)"),
            "{t}"
        );
        assert!(
            t.contains("| p | 2000 ms (1.00x) 2.0 MiB | 3000 ms (1.50x) 2.0 MiB | FAILED |"),
            "{t}"
        );
        assert!(
            t.contains("| **geomean / system** | **1.00x** | **1.50x** | - |"),
            "{t}"
        );
    }

    /// A C workload (not a real program) named `name`.
    fn job(name: &'static str) -> Job {
        Job {
            name,
            program: false,
            argv: vec![],
            compare_output: false,
            latency: false,
            dir: PathBuf::new(),
        }
    }

    /// A library named `name`, found.
    fn lib(name: &'static str) -> Lib {
        Lib {
            name,
            path: None,
            missing: false,
        }
    }

    #[test]
    fn presets_are_judged_against_mimalloc_secure() {
        let jobs = [job("a"), job("b")];
        let libs = [
            lib("mimalloc-secure"),
            lib("fortalloc-secure"),
            lib("fortalloc-secure-max"),
        ];
        // secure: 0.8x and 1.3x (geomean 1.02x, b above 1.25x); secure-max: 1.2x and 3.0x.
        let cells = vec![
            vec![cell(&[1.0]), cell(&[0.8]), cell(&[1.2])],
            vec![cell(&[1.0]), cell(&[1.3]), cell(&[3.0])],
        ];
        let t = render(&jobs, &libs, &cells);
        assert!(
            t.contains("| fortalloc-secure | 1.02x | b 1.30x | geomean <= 1.00x, none above 1.25x | FAIL |"),
            "{t}"
        );
        assert!(
            t.contains(
                "| fortalloc-secure-max | 1.90x | b 3.00x | geomean <= 1.50x, none above 4.00x | FAIL |"
            ),
            "{t}"
        );
        let faster = vec![
            vec![cell(&[1.0]), cell(&[0.9]), cell(&[1.2])],
            vec![cell(&[1.0]), cell(&[1.0]), cell(&[1.5])],
        ];
        let t = render(&jobs, &libs, &faster);
        assert!(t.contains("| fortalloc-secure | 0.95x | b 1.00x |"), "{t}");
        assert!(
            t.contains(
                "| fortalloc-secure-max | 1.34x | b 1.50x | geomean <= 1.50x, none above 4.00x | PASS |"
            ),
            "{t}"
        );
    }

    #[test]
    fn sections_without_jobs_are_left_out() {
        let jobs = [job("w")];
        let libs = [lib("system"), lib("mimalloc")];
        let t = render(&jobs, &libs, &[vec![cell(&[2.0]), cell(&[1.0])]]);
        assert!(t.contains("| w | 2000 ms (2.00x)"), "{t}");
        assert!(!t.contains("program (ratio to system)"), "{t}");
    }
}
