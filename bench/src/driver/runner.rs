//! Running the workers: run 1 of every workload under every allocator, then run 2, and so on,
//! the allocators' order rotated by one each run, so slow drifts of the machine (heat, other
//! load) spread over all allocators instead of landing on one.

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::cli::Options;
use super::compile::Worker;
use crate::latency::{self, Latency};

/// What one worker run gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok {
        time_ns: u64,
        peak_rss_kb: u64,
        /// The percentiles a latency workload reports.
        latency: Option<Latency>,
    },
    Failed(String),
}

/// One run of one workload under one allocator.
#[derive(Debug, Clone)]
pub struct Sample {
    pub run: usize,
    pub workload: &'static str,
    pub allocator: &'static str,
    pub outcome: Outcome,
}

/// Runs everything `options` asks for, printing progress on stderr.
pub fn run_all(workers: &[Worker], options: &Options) -> Vec<Sample> {
    let mut samples = Vec::new();
    let scale = format!("{}", options.scale);
    for run in 0..options.runs {
        for workload in &options.workloads {
            let mut line = format!("[run {}/{}] {:<14}", run + 1, options.runs, workload.name);
            for k in 0..workers.len() {
                let worker = &workers[(k + run) % workers.len()];
                let outcome = run_one(worker, workload.name, &scale, options.timeout);
                match &outcome {
                    Outcome::Ok { time_ns, .. } => {
                        line += &format!(" {} {:.1}ms", worker.allocator.name, *time_ns as f64 / 1e6)
                    }
                    Outcome::Failed(why) => {
                        line += &format!(" {} FAILED", worker.allocator.name);
                        eprintln!("{} on {}: {why}", worker.allocator.name, workload.name);
                    }
                }
                samples.push(Sample {
                    run,
                    workload: workload.name,
                    allocator: worker.allocator.name,
                    outcome,
                });
            }
            eprintln!("{line}");
        }
    }
    samples
}

/// Runs `worker <workload> <scale>` and parses its report; kills it after `timeout`.
pub fn run_one(worker: &Worker, workload: &str, scale: &str, timeout: Duration) -> Outcome {
    let spawned = Command::new(&worker.path)
        .args([workload, scale])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Outcome::Failed(format!("cannot start {}: {e}", worker.path.display())),
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Outcome::Failed(format!("timed out after {:.0} s", timeout.as_secs_f64()));
            }
            Ok(None) => sleep(Duration::from_millis(2)),
            Err(e) => return Outcome::Failed(format!("wait failed: {e}")),
        }
    }
    let output = match child.wait_with_output() {
        Ok(output) => output,
        Err(e) => return Outcome::Failed(format!("reading output failed: {e}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("").trim();
        return Outcome::Failed(format!("{} ({last})", output.status));
    }
    parse_report(&stdout, worker.allocator.name)
}

/// Parses `time_ns=<n> peak_rss_kb=<n> alloc=<name>`, and a latency line if there is one.
pub fn parse_report(stdout: &str, expected_allocator: &str) -> Outcome {
    let mut time_ns = None;
    let mut peak_rss_kb = None;
    let mut allocator = None;
    for field in stdout.split_whitespace() {
        if let Some(v) = field.strip_prefix("time_ns=") {
            time_ns = v.parse().ok();
        } else if let Some(v) = field.strip_prefix("peak_rss_kb=") {
            peak_rss_kb = v.parse().ok();
        } else if let Some(v) = field.strip_prefix("alloc=") {
            allocator = Some(v);
        }
    }
    match (time_ns, peak_rss_kb, allocator) {
        (Some(time_ns), Some(peak_rss_kb), Some(a)) if a == expected_allocator => Outcome::Ok {
            time_ns,
            peak_rss_kb,
            latency: latency::parse(stdout),
        },
        (_, _, Some(a)) if a != expected_allocator => Outcome::Failed(format!(
            "worker ran allocator {a:?}, expected {expected_allocator:?}"
        )),
        _ => Outcome::Failed(format!("unreadable worker report {:?}", stdout.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reports() {
        assert_eq!(
            parse_report("time_ns=1500 peak_rss_kb=2048 alloc=system\n", "system"),
            Outcome::Ok {
                time_ns: 1500,
                peak_rss_kb: 2048,
                latency: None
            }
        );
        let with_latency = "time_ns=9 peak_rss_kb=8 minflt=1 alloc=system\n\
            latency clock=rdtsc timer_ns=20 malloc_ns=40,90,300,2000,9000 free_ns=30,80,200,1000,5000\n";
        match parse_report(with_latency, "system") {
            Outcome::Ok {
                time_ns: 9,
                latency: Some(l),
                ..
            } => assert_eq!((l.malloc[2], l.free[4]), (300.0, 5000.0)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_report("time_ns=1 peak_rss_kb=2 alloc=jemalloc", "system"),
            Outcome::Failed(_)
        ));
        assert!(matches!(parse_report("garbage", "system"), Outcome::Failed(_)));
    }
}
