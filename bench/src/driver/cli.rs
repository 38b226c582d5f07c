//! The driver's command line.

use std::time::Duration;

use super::allocators::{self, Allocator};
use crate::workloads::{self, Workload};

/// What to run.
pub struct Options {
    pub runs: usize,
    pub scale: f64,
    pub workloads: Vec<&'static Workload>,
    pub allocators: Vec<&'static Allocator>,
    pub quick: bool,
    /// Reuse the worker binaries of a previous build instead of invoking cargo.
    pub no_build: bool,
    pub timeout: Duration,
}

pub const HELP: &str = "\
fortalloc-bench: runs every workload under every allocator, each allocator its own worker
binary, interleaved run by run, and prints a markdown table.

usage: cargo run --release -p fortalloc-bench -- [options]

options:
  --runs N          runs per workload and allocator; the table shows medians (default 5, --quick 3)
  --only W1,W2      only these workloads
  --alloc A1,A2     only these allocators (mimalloc-v2 is the reference for the ratios)
  --quick           small sizes (scale 0.1) for a smoke run
  --scale F         size factor of every workload (default 1.0)
  --no-build        reuse the worker binaries already in target/bench/<allocator>/
  --timeout SECS    time limit of one worker run (default 300)
  --help            this text
";

/// Parses `args` (without the program name). `Err` holds the message to print; `Ok(None)`
/// means `--help` was asked for.
pub fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut runs = None;
    let mut scale = None;
    let mut only = None;
    let mut alloc = None;
    let mut quick = false;
    let mut no_build = false;
    let mut timeout = 300.0;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--runs" => runs = Some(parse_number::<usize>("--runs", &value("--runs")?)?),
            "--scale" => scale = Some(parse_number::<f64>("--scale", &value("--scale")?)?),
            "--only" => only = Some(value("--only")?),
            "--alloc" => alloc = Some(value("--alloc")?),
            "--timeout" => timeout = parse_number::<f64>("--timeout", &value("--timeout")?)?,
            "--quick" => quick = true,
            "--no-build" => no_build = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    let runs = runs.unwrap_or(if quick { 3 } else { 5 });
    let scale = scale.unwrap_or(if quick { 0.1 } else { 1.0 });
    if runs == 0 || !(scale > 0.0 && scale.is_finite()) || !(timeout > 0.0 && timeout.is_finite()) {
        return Err("--runs, --scale and --timeout must be positive".to_string());
    }
    let workloads = match only {
        None => workloads::ALL.iter().collect(),
        Some(list) => pick(&list, "workload", workloads::find)?,
    };
    let allocators = match alloc {
        None => allocators::ALL.iter().collect(),
        Some(list) => pick(&list, "allocator", allocators::find)?,
    };
    Ok(Some(Options {
        runs,
        scale,
        workloads,
        allocators,
        quick,
        no_build,
        timeout: Duration::from_secs_f64(timeout),
    }))
}

fn parse_number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag}: not a number: {text:?}"))
}

fn pick<T>(list: &str, kind: &str, find: fn(&str) -> Option<&'static T>) -> Result<Vec<&'static T>, String> {
    let mut picked: Vec<&'static T> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let item = find(name).ok_or_else(|| format!("unknown {kind} {name:?} (see --help)"))?;
        if !picked.iter().any(|p| std::ptr::eq(*p, item)) {
            picked.push(item);
        }
    }
    if picked.is_empty() {
        return Err(format!("no {kind} selected"));
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults() {
        let o = parse(&[]).unwrap().unwrap();
        assert_eq!((o.runs, o.scale, o.quick), (5, 1.0, false));
        assert_eq!(o.workloads.len(), workloads::ALL.len());
        assert_eq!(o.allocators.len(), allocators::ALL.len());
    }

    #[test]
    fn quick_and_lists() {
        let o = parse(&args(&[
            "--quick",
            "--only",
            "larson,strings",
            "--alloc",
            "system,mimalloc-v2",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((o.runs, o.scale), (3, 0.1));
        assert_eq!(
            o.workloads.iter().map(|w| w.name).collect::<Vec<_>>(),
            ["larson", "strings"]
        );
        assert_eq!(
            o.allocators.iter().map(|a| a.name).collect::<Vec<_>>(),
            ["system", "mimalloc-v2"]
        );
    }

    #[test]
    fn errors() {
        assert!(parse(&args(&["--runs"])).is_err());
        assert!(parse(&args(&["--runs", "0"])).is_err());
        assert!(parse(&args(&["--only", "nope"])).is_err());
        assert!(parse(&args(&["--bogus"])).is_err());
        assert!(parse(&args(&["--help"])).unwrap().is_none());
    }
}
