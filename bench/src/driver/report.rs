//! The results: a markdown table (medians, ratios to mimalloc, peak RSS, geometric means) and
//! the raw samples as CSV.

use std::fmt::Write as _;

use super::allocators::{REFERENCE, SECOND_REFERENCE};
use super::cli::Options;
use super::runner::{Outcome, Sample};
use super::stats::{geomean, median};
use crate::latency::{self, Latency};

/// The medians of one workload under one allocator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    pub time_ms: f64,
    pub rss_mib: f64,
    /// A latency workload's percentiles, each the median over runs.
    pub latency: Option<Latency>,
}

/// What a summary row compares: time or peak RSS.
type Measure = fn(&Cell) -> f64;

/// Per workload (rows) and allocator (columns): the medians, or `Err(failed runs)`.
pub struct Grid {
    pub workloads: Vec<&'static str>,
    pub allocators: Vec<&'static str>,
    pub cells: Vec<Vec<Result<Cell, usize>>>,
}

impl Grid {
    pub fn new(samples: &[Sample], workloads: Vec<&'static str>, allocators: Vec<&'static str>) -> Grid {
        let cells = workloads
            .iter()
            .map(|w| allocators.iter().map(|a| cell(samples, w, a)).collect())
            .collect();
        Grid {
            workloads,
            allocators,
            cells,
        }
    }

    fn column(&self, allocator: &str) -> Option<usize> {
        self.allocators.iter().position(|a| *a == allocator)
    }

    fn get(&self, row: usize, column: usize) -> Option<Cell> {
        self.cells[row][column].ok()
    }

    /// Per workload, the median time of `reference` (a column name), or of the faster of the two
    /// mimallocs with `None`.
    fn reference_times(&self, reference: Option<&str>) -> Vec<Option<Cell>> {
        (0..self.workloads.len())
            .map(|row| match reference {
                Some(name) => self.column(name).and_then(|c| self.get(row, c)),
                None => {
                    let a = self.column(REFERENCE).and_then(|c| self.get(row, c))?;
                    let b = self.column(SECOND_REFERENCE).and_then(|c| self.get(row, c))?;
                    Some(if a.time_ms <= b.time_ms { a } else { b })
                }
            })
            .collect()
    }

    /// Per allocator, the geometric mean over workloads of its ratio to `reference`.
    fn geomean_row(&self, reference: &[Option<Cell>], measure: Measure) -> Vec<Option<f64>> {
        (0..self.allocators.len())
            .map(|column| {
                let ratios: Vec<f64> = (0..self.workloads.len())
                    .filter_map(|row| {
                        Some(measure(&self.get(row, column)?) / measure(reference[row].as_ref()?))
                    })
                    .collect();
                geomean(&ratios)
            })
            .collect()
    }
}

fn cell(samples: &[Sample], workload: &str, allocator: &str) -> Result<Cell, usize> {
    let mine: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.workload == workload && s.allocator == allocator)
        .collect();
    let failed = mine
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Failed(_)))
        .count();
    let mut times = Vec::new();
    let mut rss = Vec::new();
    let mut latencies = Vec::new();
    for s in &mine {
        if let Outcome::Ok {
            time_ns,
            peak_rss_kb,
            latency,
        } = s.outcome
        {
            times.push(time_ns as f64 / 1e6);
            rss.push(peak_rss_kb as f64 / 1024.0);
            latencies.extend(latency);
        }
    }
    match (failed, median(&times), median(&rss)) {
        (0, Some(time_ms), Some(rss_mib)) => Ok(Cell {
            time_ms,
            rss_mib,
            latency: Latency::median_of(&latencies),
        }),
        _ => Err(failed),
    }
}

fn fmt_time(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn fmt_rss(mib: f64) -> String {
    if mib < 10.0 {
        format!("{mib:.1} MiB")
    } else {
        format!("{mib:.0} MiB")
    }
}

fn fmt_ratio(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"))
}

/// The markdown report. `left_out` lists allocators whose worker could not be built.
pub fn render(grid: &Grid, options: &Options, left_out: &[(&str, String)]) -> String {
    let mut out = String::new();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(out, "## fortalloc-bench\n");
    let _ = writeln!(
        out,
        "{} run(s) per cell, allocators interleaved run by run; scale {}{}; {cpus} CPUs.",
        options.runs,
        options.scale,
        if options.quick { " (--quick)" } else { "" }
    );
    let reference = [REFERENCE, SECOND_REFERENCE]
        .into_iter()
        .find(|r| grid.column(r).is_some());
    let _ = match reference {
        Some(name) => writeln!(
            out,
            "Cell: median wall time of the workload (ratio to {name}'s median time; below 1.00x is faster) \
             and median peak RSS (VmHWM) of the worker process."
        ),
        None => writeln!(
            out,
            "Cell: median wall time and median peak RSS (VmHWM); no mimalloc ran, so no ratios."
        ),
    };
    let _ = writeln!(
        out,
        "Ratios are to {REFERENCE} (mimalloc 2.x), taken as the faster mimalloc on this machine (else to \
         {SECOND_REFERENCE}); summary rows also give ratios to {SECOND_REFERENCE} (mimalloc 3.x) and to the \
         faster of the two chosen per workload."
    );
    if let (Some(v2), true) = (grid.column(REFERENCE), grid.column(SECOND_REFERENCE).is_some()) {
        let against_v3 = grid.reference_times(Some(SECOND_REFERENCE));
        if let Some(ratio) = grid.geomean_row(&against_v3, |c| c.time_ms)[v2] {
            let verdict = if ratio <= 1.0 {
                "the faster"
            } else {
                "NOT the faster"
            };
            let _ = writeln!(
                out,
                "This run: {REFERENCE} took {ratio:.2}x the time of {SECOND_REFERENCE} (geomean), so it is \
                 {verdict} one here."
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| workload | {} |", grid.allocators.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(grid.allocators.len()));
    let ref_cells = grid.reference_times(reference);
    for (row, workload) in grid.workloads.iter().enumerate() {
        let cells: Vec<String> = (0..grid.allocators.len())
            .map(|column| match (grid.cells[row][column], ref_cells[row]) {
                (Ok(c), Some(r)) => {
                    format!(
                        "{} ({:.2}x) {}",
                        fmt_time(c.time_ms),
                        c.time_ms / r.time_ms,
                        fmt_rss(c.rss_mib)
                    )
                }
                (Ok(c), None) => format!("{} {}", fmt_time(c.time_ms), fmt_rss(c.rss_mib)),
                (Err(failed), _) => format!("**FAILED** ({failed} of {} runs)", options.runs),
            })
            .collect();
        let _ = writeln!(out, "| {workload} | {} |", cells.join(" | "));
    }
    let time = |c: &Cell| c.time_ms;
    let rss = |c: &Cell| c.rss_mib;
    let summaries: [(String, Option<&str>, Measure); 5] = [
        (format!("geomean time / {REFERENCE}"), Some(REFERENCE), time),
        (
            format!("geomean time / {SECOND_REFERENCE}"),
            Some(SECOND_REFERENCE),
            time,
        ),
        (
            "geomean time / faster mimalloc per workload".to_string(),
            None,
            time,
        ),
        (format!("geomean peak RSS / {REFERENCE}"), Some(REFERENCE), rss),
        (
            format!("geomean peak RSS / {SECOND_REFERENCE}"),
            Some(SECOND_REFERENCE),
            rss,
        ),
    ];
    for (label, against, measure) in summaries {
        let reference = grid.reference_times(against);
        if reference.iter().all(Option::is_none) {
            continue;
        }
        let row: Vec<String> = grid
            .geomean_row(&reference, measure)
            .into_iter()
            .map(fmt_ratio)
            .collect();
        let _ = writeln!(out, "| **{label}** | {} |", row.join(" | "));
    }
    for (row, workload) in grid.workloads.iter().enumerate() {
        let rows: Vec<(&str, Option<Latency>)> = grid
            .allocators
            .iter()
            .enumerate()
            .map(|(column, name)| (*name, grid.get(row, column).and_then(|c| c.latency)))
            .collect();
        if rows.iter().any(|(_, l)| l.is_some()) {
            let _ = writeln!(out);
            out.push_str(&latency::render(
                workload,
                &rows,
                LATENCY_REFERENCE,
                &latency::JUDGED,
            ));
        }
    }
    for (name, why) in left_out {
        let _ = writeln!(out, "\nLeft out: {name}: {why}");
    }
    out
}

/// The allocator the hardened presets' latency percentiles are compared with.
pub const LATENCY_REFERENCE: &str = "mimalloc-secure";
/// The raw samples as CSV: `run,workload,allocator,time_ns,peak_rss_kb,status`.
pub fn csv(samples: &[Sample]) -> String {
    let mut out = String::from("run,workload,allocator,time_ns,peak_rss_kb,status\n");
    for s in samples {
        let _ = match &s.outcome {
            Outcome::Ok {
                time_ns, peak_rss_kb, ..
            } => {
                writeln!(
                    out,
                    "{},{},{},{time_ns},{peak_rss_kb},ok",
                    s.run + 1,
                    s.workload,
                    s.allocator
                )
            }
            Outcome::Failed(why) => {
                let why = why.replace([',', '\n', '"'], " ");
                writeln!(
                    out,
                    "{},{},{},,,failed: {why}",
                    s.run + 1,
                    s.workload,
                    s.allocator
                )
            }
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(run: usize, workload: &'static str, allocator: &'static str, ms: u64, kb: u64) -> Sample {
        let outcome = Outcome::Ok {
            time_ns: ms * 1_000_000,
            peak_rss_kb: kb,
            latency: None,
        };
        Sample {
            run,
            workload,
            allocator,
            outcome,
        }
    }

    #[test]
    fn medians_ratios_and_failures() {
        let samples = vec![
            ok(0, "w", "mimalloc-v2", 10, 1024),
            ok(1, "w", "mimalloc-v2", 12, 1024),
            ok(2, "w", "mimalloc-v2", 11, 2048),
            ok(0, "w", "mimalloc-v3", 22, 4096),
            ok(0, "w", "x", 5, 512),
            Sample {
                run: 1,
                workload: "w",
                allocator: "x",
                outcome: Outcome::Failed("boom".into()),
            },
        ];
        let grid = Grid::new(&samples, vec!["w"], vec!["mimalloc-v2", "mimalloc-v3", "x"]);
        assert_eq!(
            grid.cells[0][0],
            Ok(Cell {
                time_ms: 11.0,
                rss_mib: 1.0,
                latency: None
            })
        );
        assert_eq!(grid.cells[0][2], Err(1));
        let reference = grid.reference_times(Some(REFERENCE));
        let row = grid.geomean_row(&reference, |c| c.time_ms);
        assert_eq!(row[0], Some(1.0));
        assert_eq!(row[1], Some(2.0));
        assert_eq!(row[2], None);
        let faster = grid.reference_times(None);
        assert_eq!(faster[0].map(|c| c.time_ms), Some(11.0));
        let options = super::super::cli::parse(&[]).unwrap().unwrap();
        let text = render(&grid, &options, &[("snmalloc", "no".into())]);
        assert!(text.contains("| w | 11.0 ms (1.00x) 1.0 MiB | 22.0 ms (2.00x) 4.0 MiB | **FAILED**"));
        assert!(text.contains("Left out: snmalloc"));
        assert!(csv(&samples).contains("2,w,x,,,failed: boom"));
    }
}
