//! Per-call latency: the clock the latency workloads time each malloc and free with, the
//! percentiles they report, the line they report them on (the C program `c/latency.c` and the
//! Rust workload `latency` print the same one), and the table both harnesses print.
//!
//! The report line is
//! `latency clock=<name> timer_ns=<n> malloc_ns=<p50>,<p99>,<p99.9>,<p99.99>,<max> free_ns=<same>`.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use crate::driver::stats::median;

/// The percentiles reported, in millionths: p50, p99, p99.9, p99.99 and the maximum.
pub const AT_PER_MILLION: [u64; 5] = [500_000, 990_000, 999_000, 999_900, 1_000_000];
/// Their column names.
pub const LABELS: [&str; 5] = ["p50", "p99", "p99.9", "p99.99", "max"];

/// One run's percentiles in nanoseconds, for malloc and for free.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub malloc: [f64; 5],
    pub free: [f64; 5],
    /// The least time an empty interval measured: the floor under every sample.
    pub timer_ns: f64,
}

impl Latency {
    /// The report line (without a newline).
    pub fn line(&self, clock: &str) -> String {
        let join = |v: &[f64; 5]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(",");
        format!(
            "latency clock={clock} timer_ns={:.0} malloc_ns={} free_ns={}",
            self.timer_ns,
            join(&self.malloc),
            join(&self.free)
        )
    }

    /// Each percentile's median over `runs`; None if there are none.
    pub fn median_of(runs: &[Latency]) -> Option<Latency> {
        let at = |f: &dyn Fn(&Latency) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let mut out = Latency {
            malloc: [0.0; 5],
            free: [0.0; 5],
            timer_ns: at(&|l| l.timer_ns)?,
        };
        for i in 0..5 {
            out.malloc[i] = at(&|l| l.malloc[i])?;
            out.free[i] = at(&|l| l.free[i])?;
        }
        Some(out)
    }
}

/// The report in `stdout` (its `latency ...` line), or None if there is none or it is malformed.
pub fn parse(stdout: &str) -> Option<Latency> {
    let line = stdout.lines().rev().find(|l| l.starts_with("latency "))?;
    let mut malloc = None;
    let mut free = None;
    let mut timer_ns = None;
    let five = |v: &str| -> Option<[f64; 5]> {
        let values: Vec<f64> = v.split(',').map(|x| x.parse().ok()).collect::<Option<_>>()?;
        values.try_into().ok()
    };
    for field in line.split_whitespace() {
        if let Some(v) = field.strip_prefix("malloc_ns=") {
            malloc = five(v);
        } else if let Some(v) = field.strip_prefix("free_ns=") {
            free = five(v);
        } else if let Some(v) = field.strip_prefix("timer_ns=") {
            timer_ns = v.parse().ok();
        }
    }
    Some(Latency {
        malloc: malloc?,
        free: free?,
        timer_ns: timer_ns?,
    })
}

/// The nearest-rank percentiles of `samples` (sorted in place), each the smallest sample with
/// at least that share of the samples at or below it, times `ns_per_tick`.
pub fn percentiles(samples: &mut [u32], ns_per_tick: f64) -> [f64; 5] {
    samples.sort_unstable();
    let n = samples.len() as u64;
    AT_PER_MILLION.map(|per_million| {
        if n == 0 {
            return 0.0;
        }
        let rank = (n * per_million).div_ceil(1_000_000).max(1);
        samples[(rank - 1) as usize] as f64 * ns_per_tick
    })
}

/// A cheap clock for timing one call: the TSC on x86_64, fenced so that the timed call stays
/// between two readings; elsewhere nanoseconds of `Instant`. `Clock::ns_per_tick` converts.
pub struct Clock {
    start_ticks: u64,
    start: Instant,
}

impl Clock {
    /// The clock's name in the report line.
    pub const NAME: &'static str = if cfg!(target_arch = "x86_64") {
        "rdtsc"
    } else {
        "instant"
    };

    /// Starts the interval over which ticks are converted to nanoseconds.
    pub fn start() -> Clock {
        let start = Instant::now();
        Clock {
            start_ticks: Clock::ticks(),
            start,
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn ticks() -> u64 {
        use std::arch::x86_64::{_mm_lfence, _rdtsc};
        // SAFETY: lfence and rdtsc exist on every x86_64 CPU and touch no memory.
        unsafe {
            _mm_lfence();
            let t = _rdtsc();
            _mm_lfence();
            t
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    pub fn ticks() -> u64 {
        use std::sync::OnceLock;
        static BASE: OnceLock<Instant> = OnceLock::new();
        BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    /// Nanoseconds per tick over the time since `start`: a calibration as long as the run, with
    /// no loop of its own.
    pub fn ns_per_tick(&self) -> f64 {
        let ticks = Clock::ticks().wrapping_sub(self.start_ticks);
        let ns = self.start.elapsed().as_nanos() as f64;
        if ticks == 0 {
            1.0
        } else {
            ns / ticks as f64
        }
    }

    /// The least of many empty intervals, in ticks.
    pub fn floor_ticks() -> u32 {
        (0..10_000)
            .map(|_| elapsed(Clock::ticks(), Clock::ticks()))
            .min()
            .unwrap_or(0)
    }
}

/// `t1 - t0` in ticks, saturated to fit a sample.
#[inline(always)]
pub fn elapsed(t0: u64, t1: u64) -> u32 {
    u32::try_from(t1.wrapping_sub(t0)).unwrap_or(u32::MAX)
}

/// The Rust workload's report, left here for the worker to print after the run (a workload
/// returns only a checksum).
static REPORT: Mutex<Option<Latency>> = Mutex::new(None);

/// Leaves `latency` for `take_report`.
pub fn set_report(latency: Latency) {
    *REPORT.lock().unwrap_or_else(|e| e.into_inner()) = Some(latency);
}

/// The report a workload left, if any.
pub fn take_report() -> Option<Latency> {
    REPORT.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// A preset compared with the reference in the latency table, and the most its p99 and p99.9
/// may be as a ratio to the reference's (None: shown, not judged).
pub struct Judged<'a> {
    pub name: &'a str,
    pub target: Option<f64>,
}

/// The presets the latency tables judge (the Rust harness's and cbench's): `secure`'s p99 and
/// p99.9 must be at most mimalloc-secure's.
pub const JUDGED: [Judged<'static>; 2] = [
    Judged {
        name: "fortalloc-secure",
        target: Some(1.0),
    },
    Judged {
        name: "fortalloc-secure-max",
        target: None,
    },
];

/// The markdown percentile table of one latency workload: a row per allocator (median over
/// runs of each percentile, malloc then free), then each of `judged`'s p99 and p99.9 as a
/// ratio to `reference`'s, with a verdict where it has a target.
pub fn render(title: &str, rows: &[(&str, Option<Latency>)], reference: &str, judged: &[Judged]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {title} (ns, median of runs) | {} | {} | timer |",
        LABELS.map(|l| format!("malloc {l}")).join(" | "),
        LABELS.map(|l| format!("free {l}")).join(" | ")
    );
    let _ = writeln!(out, "|---|{}", "---:|".repeat(11));
    for (name, latency) in rows {
        match latency {
            Some(l) => {
                let cells: Vec<String> = l
                    .malloc
                    .iter()
                    .chain(&l.free)
                    .map(|x| format!("{x:.0}"))
                    .collect();
                let _ = writeln!(out, "| {name} | {} | {:.0} |", cells.join(" | "), l.timer_ns);
            }
            None => {
                let _ = writeln!(out, "| {name} |{}", " - |".repeat(11));
            }
        }
    }
    let find = |name: &str| rows.iter().find(|(n, _)| *n == name).and_then(|(_, l)| *l);
    let Some(base) = find(reference) else {
        return out;
    };
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| {title}: ratio to {reference} | malloc p99 | malloc p99.9 | free p99 | free p99.9 | verdict |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
    for j in judged {
        let Some(l) = find(j.name) else {
            continue;
        };
        let ratios = [
            l.malloc[1] / base.malloc[1],
            l.malloc[2] / base.malloc[2],
            l.free[1] / base.free[1],
            l.free[2] / base.free[2],
        ];
        let verdict = match j.target {
            Some(t) if ratios.iter().all(|r| *r <= t) => format!("PASS (each at most {t:.2}x)"),
            Some(t) => format!("FAIL (target: each at most {t:.2}x)"),
            None => "-".to_string(),
        };
        let cells: Vec<String> = ratios.iter().map(|r| format!("{r:.2}x")).collect();
        let _ = writeln!(out, "| {} | {} | {verdict} |", j.name, cells.join(" | "));
    }
    out
}
