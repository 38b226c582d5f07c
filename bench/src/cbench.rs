//! The C benchmark's data and table (the runner is src/bin/cbench.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

pub use crate::driver::stats::{geomean, median};

/// A C workload, or a real program.
pub struct Job {
    pub name: &'static str,
    /// A real program (compared with glibc) rather than a C workload
    /// (compared with mimalloc).
    pub program: bool,
    pub argv: Vec<String>,
    /// Its stdout must be the same under every allocator.
    pub compare_output: bool,
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
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); libs.len()];
        for (j, job) in jobs.iter().enumerate().filter(|(_, j)| j.program == program) {
            out.push_str(&format!("| {} |", job.name));
            let base = r.and_then(|r| cells[j][r].time());
            for (l, cell) in cells[j].iter().enumerate() {
                match (cell.time(), cell.failed) {
                    (_, true) => out.push_str(" FAILED |"),
                    (Some(t), false) => {
                        let ratio = base.map(|b| t / b);
                        if let Some(x) = ratio {
                            ratios[l].push(x);
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
            out.push_str(&geomean(r).map_or(" - |".to_string(), |g| format!(" **{g:.2}x** |")));
        }
        out.push_str("\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(secs: &[f64]) -> Cell {
        Cell {
            secs: secs.to_vec(),
            rss_kb: vec![2048; secs.len()],
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
}
