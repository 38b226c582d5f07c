//! Building the workers: `cargo build --release -p fortalloc-bench --bin worker
//! --no-default-features --features alloc-X --target-dir <target>/bench/<allocator>`, one
//! target directory per allocator (mimalloc v2 and v3 cannot share a build: `links`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::allocators::Allocator;
use super::paths::Paths;

/// A worker binary ready to run.
pub struct Worker {
    pub allocator: &'static Allocator,
    pub path: PathBuf,
}

/// The outcome of building the requested workers: those that built, and for each one that
/// did not, its name and why.
pub struct Built {
    pub workers: Vec<Worker>,
    pub failed: Vec<(&'static str, String)>,
}

/// Builds (or, with `no_build`, only locates) a worker per allocator, then asks each for its
/// name (`worker --which`) to check that it is the allocator it claims to be.
pub fn build_all(paths: &Paths, allocators: &[&'static Allocator], no_build: bool) -> Built {
    let mut built = Built {
        workers: Vec::new(),
        failed: Vec::new(),
    };
    for &allocator in allocators {
        let target_dir = paths.bench_dir.join(allocator.name);
        if !no_build {
            eprintln!(
                "building worker for {} ({})...",
                allocator.name, allocator.feature
            );
            let start = Instant::now();
            if let Err(why) = cargo_build(paths, allocator, &target_dir) {
                eprintln!("  {}: build FAILED, left out: {why}", allocator.name);
                built.failed.push((allocator.name, why));
                continue;
            }
            eprintln!("  built in {:.1} s", start.elapsed().as_secs_f64());
        }
        let path = target_dir
            .join("release")
            .join(format!("worker{}", std::env::consts::EXE_SUFFIX));
        match identify(&path) {
            Ok(name) if name == allocator.name => built.workers.push(Worker { allocator, path }),
            Ok(name) => {
                let why = format!("{} reports allocator {name:?}", path.display());
                eprintln!("  {}: {why}, left out", allocator.name);
                built.failed.push((allocator.name, why));
            }
            Err(why) => {
                eprintln!("  {}: {why}, left out", allocator.name);
                built.failed.push((allocator.name, why));
            }
        }
    }
    built
}

fn cargo_build(paths: &Paths, allocator: &Allocator, target_dir: &Path) -> Result<(), String> {
    let output = Command::new(&paths.cargo)
        .current_dir(&paths.workspace_root)
        .args([
            "build",
            "--release",
            "-p",
            "fortalloc-bench",
            "--bin",
            "worker",
            "--no-default-features",
        ])
        .args(["--features", allocator.feature])
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", paths.cargo.display()))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(25).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    eprintln!("{}", tail.join("\n"));
    let first_error = stderr
        .lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or("cargo build failed");
    Err(first_error.to_string())
}

fn identify(path: &Path) -> Result<String, String> {
    let output = Command::new(path)
        .arg("--which")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if !output.status.success() {
        return Err(format!("{} --which failed ({})", path.display(), output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}
