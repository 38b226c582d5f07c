//! The driver: build one worker per allocator, run them interleaved, report.

pub mod allocators;
pub mod cli;
pub mod compile;
pub mod paths;
pub mod report;
pub mod runner;
pub mod stats;

use std::process::ExitCode;
use std::time::Instant;

use paths::Paths;
use report::Grid;
use runner::Outcome;

/// The `fortalloc-bench` program. Exits 1 if a worker failed (corruption, crash, timeout) or
/// could not be built, 2 on bad arguments.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match cli::parse(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{}", cli::HELP);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("fortalloc-bench: {message}");
            return ExitCode::from(2);
        }
    };
    let paths = Paths::discover();
    let start = Instant::now();
    let built = compile::build_all(&paths, &options.allocators, options.no_build);
    let build_secs = start.elapsed().as_secs_f64();
    if built.workers.is_empty() {
        eprintln!("fortalloc-bench: no worker could be built");
        return ExitCode::FAILURE;
    }
    let start = Instant::now();
    let samples = runner::run_all(&built.workers, &options);
    let run_secs = start.elapsed().as_secs_f64();
    let grid = Grid::new(
        &samples,
        options.workloads.iter().map(|w| w.name).collect(),
        built.workers.iter().map(|w| w.allocator.name).collect(),
    );
    let table = report::render(&grid, &options, &built.failed);
    println!("{table}");
    let written = std::fs::create_dir_all(&paths.bench_dir)
        .and_then(|_| std::fs::write(paths.bench_dir.join("results.csv"), report::csv(&samples)))
        .and_then(|_| std::fs::write(paths.bench_dir.join("results.md"), &table));
    match written {
        Ok(()) => eprintln!("raw results: {}", paths.bench_dir.join("results.csv").display()),
        Err(e) => eprintln!(
            "fortalloc-bench: cannot write results to {}: {e}",
            paths.bench_dir.display()
        ),
    }
    eprintln!("build {build_secs:.0} s, runs {run_secs:.0} s");
    let failed_runs = samples
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Failed(_)))
        .count();
    if failed_runs > 0 || !built.failed.is_empty() {
        eprintln!(
            "fortalloc-bench: {failed_runs} failed run(s), {} allocator(s) not built",
            built.failed.len()
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
