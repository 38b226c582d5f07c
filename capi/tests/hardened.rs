//! The hardened C libraries (`--features secure` and `--features
//! secure-max`) under `LD_PRELOAD`: each violation, made by a C or C++
//! program that knows nothing of fortalloc, ends in SIGABRT with
//! fortalloc's one-line message naming the address, or in SIGSEGV where a
//! guard page or a sealed block stops the access, under every preset that
//! promises to catch it (SECURITY.md); the plain library lets the same
//! free-list poisoning through, leaves freed bytes readable and hands
//! blocks out in address order.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../../tests/common/mod.rs"]
mod common;

fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi-hardened");
    std::fs::create_dir_all(&dir).expect("scratch");
    dir
}

/// A hardened library, built once per preset into its own target
/// directory (it cannot share one with the plain build: same file name).
fn preset_library(preset: &'static str) -> PathBuf {
    static LIBS: std::sync::Mutex<Vec<(&str, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut libs = LIBS.lock().expect("lock");
    if let Some((_, lib)) = libs.iter().find(|(p, _)| *p == preset) {
        return lib.clone();
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{preset}-target"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args([
            "build",
            "-p",
            "fortalloc-capi",
            "--features",
            preset,
            "--target-dir",
        ])
        .arg(&dir)
        .output()
        .expect("cargo build");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lib = dir.join("debug/libfortalloc.so");
    libs.push((preset, lib.clone()));
    lib
}

/// The preset recommended to every service.
fn secure_library() -> PathBuf {
    preset_library("secure")
}

/// Every defence.
fn secure_max_library() -> PathBuf {
    preset_library("secure-max")
}

/// Both presets, for the violations both promise to catch.
fn presets() -> [PathBuf; 2] {
    [secure_library(), secure_max_library()]
}

fn plain_library() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let lib = exe
        .parent()
        .and_then(Path::parent)
        .expect("target")
        .join("libfortalloc.so");
    assert!(lib.exists(), "{} (built with the package)", lib.display());
    lib
}

/// Compiles `src` once per test process: tests run in parallel, and
/// rewriting an executable while another test runs it made that run fail
/// to start ("text file busy").
fn compile(compiler: &str, src: &str, out: &str) -> PathBuf {
    static DONE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut done = DONE.lock().expect("lock");
    let exe = scratch().join(out);
    if done.iter().any(|d| d == out) {
        return exe;
    }
    done.push(out.to_string());
    let o = Command::new(compiler)
        .args(["-O1", "-pthread", "-o"])
        .arg(&exe)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c").join(src))
        .output()
        .expect("compiler");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    exe
}

fn run(exe: &Path, case: &str, lib: &Path) -> Output {
    run_with(exe, case, lib, &[])
}

fn run_with(exe: &Path, case: &str, lib: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(exe)
        .arg(case)
        .env("LD_PRELOAD", lib)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running {} {case}: {e}", exe.display()))
}

fn assert_detected(out: &Output, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{what}: {stdout} / {stderr}"
    );
    let addr = stdout
        .lines()
        .find_map(|l| l.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no address: {stdout}"));
    let expect = format!("fortalloc: {what} at {addr}");
    assert!(stderr.contains(&expect), "wanted `{expect}` in: {stderr}");
}

/// A violation both presets catch.
fn violation(case: &str, what: &str) {
    for lib in presets() {
        violation_in(&lib, case, what);
    }
}

fn violation_in(lib: &Path, case: &str, what: &str) {
    let exe = compile("cc", "violations.c", "violations");
    assert_detected(&run(&exe, case, lib), what);
}

/// A violation that needs freed blocks to go straight to a free list: the
/// quarantine is off (it would catch the write as the block left it).
fn violation_without_quarantine(lib: &Path, case: &str, what: &str) {
    let exe = compile("cc", "violations.c", "violations");
    let out = run_with(&exe, case, lib, &[("FORTALLOC_QUARANTINE", "0")]);
    assert_detected(&out, what);
}

#[test]
fn double_frees() {
    violation("double-free", "double free");
    violation("double-free-aba", "double free");
    violation("double-free-thread", "double free");
    // `free(p); q = malloc(n); free(p)`: the quarantine keeps `p` from
    // being `q`, so the stale free is a double free, not `q`'s.
    violation("double-free-stale", "double free");
}

#[test]
fn overflows() {
    violation("overflow-1", "heap buffer overflow");
    violation("overflow-8-large", "heap buffer overflow");
}

/// Issue 15's rates through the C library: with the secure library's
/// quarantine, `a` or `b` just freed is among the next 64 allocations of
/// its size in at most 2 of 200 trials, and `free(p); q = malloc(n)` gives
/// `q == p` in fewer than 10 of 1,000; the plain library fails both
/// thresholds.
#[test]
fn freed_blocks_come_back_late_under_the_secure_library() {
    let exe = compile("cc", "violations.c", "violations");
    let rates = |lib: &Path| -> (u32, u32) {
        let out = run(&exe, "reuse-rates", lib);
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let line = stdout.lines().find(|l| l.starts_with("back=")).expect("rates");
        let mut it = line
            .split(' ')
            .map(|kv| kv.split_once('=').expect("k=v").1.parse().expect("n"));
        (it.next().expect("back"), it.next().expect("same"))
    };
    let (back, same) = rates(&secure_library());
    assert!(
        back <= 2 && same < 10,
        "secure: back {back} of 200, same {same} of 1000"
    );
    let (back, same) = rates(&plain_library());
    assert!(
        back > 2 && same >= 10,
        "plain fails the thresholds: back {back}, same {same}"
    );
}

#[test]
fn underflows() {
    // `secure-max` only: `underflow-trailers` (SECURITY.md).
    let lib = secure_max_library();
    violation_in(&lib, "underflow-1", "heap buffer underflow");
    violation_in(&lib, "underflow-16", "heap buffer underflow");
    violation_in(&lib, "underflow-16-below-free", "heap buffer underflow");
}

/// `secure-max` only: `secure` wipes freed blocks but does not read them
/// back (SECURITY.md).
#[test]
fn write_after_free() {
    // Caught as the block leaves the quarantine, and without it when the
    // block is handed out again.
    violation_in(&secure_max_library(), "uaf-write", "write after free");
    violation_without_quarantine(&secure_max_library(), "uaf-write", "write after free");
}

#[test]
fn realloc_of_a_freed_block() {
    violation("realloc-freed", "invalid pointer (not a live block)");
}

#[test]
fn free_list_poisoning() {
    let exe = compile("cc", "violations.c", "violations");
    for lib in presets() {
        violation_without_quarantine(&lib, "poison", "corrupted free list");
    }
    // The plain library follows the forged link: what the hardened one is for.
    let out = run(&exe, "poison", &plain_library());
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn more_double_frees() {
    violation("double-free-later", "double free");
    violation("double-free-realloc", "double free");
}

#[test]
fn more_overflows() {
    violation("overflow-8", "heap buffer overflow");
    violation("overflow-1-large", "heap buffer overflow");
}

#[test]
fn free_list_poisoning_in_safe_linking_form() {
    let exe = compile("cc", "violations.c", "violations");
    for lib in presets() {
        violation_without_quarantine(&lib, "poison-safe-linking", "corrupted free list");
    }
    // The plain library does not undo glibc's mangling: the forged link
    // points nowhere useful, and the target is never returned.
    let out = run(&exe, "poison-safe-linking", &plain_library());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("TARGET RETURNED"), "{stdout}");
}

#[test]
fn usable_size_of_a_freed_block() {
    violation("usable-size-freed", "invalid pointer (not a live block)");
}

/// Invalid frees are refused by every build: the hardened library and the
/// plain one give the same one-line report.
#[test]
fn invalid_frees() {
    let exe = compile("cc", "violations.c", "violations");
    for lib in [secure_library(), secure_max_library(), plain_library()] {
        for (case, detail) in [
            ("free-stack", "not allocated by fortalloc"),
            ("free-global", "not allocated by fortalloc"),
            ("free-interior", "interior pointer"),
            ("free-misaligned", "interior pointer"),
        ] {
            let out = run(&exe, case, &lib);
            assert_detected(&out, "invalid free");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(detail), "{case}: wanted `{detail}` in: {stderr}");
        }
    }
}

/// The run must die of SIGSEGV after it started the bad access, with
/// guards made either way: page-table markers where the kernel has them,
/// and the `mprotect` fallback, forced; under both presets.
fn faults(case: &str) {
    for lib in presets() {
        faults_in(&lib, case);
    }
}

fn faults_in(lib: &Path, case: &str) {
    let exe = compile("cc", "violations.c", "violations");
    for way in ["auto", "mprotect"] {
        let out = Command::new(&exe)
            .arg(case)
            .env("LD_PRELOAD", lib)
            .env("FORTALLOC_GUARDS", way)
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGSEGV),
            "{case} (guards: {way}): {stdout} / {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("writing") || stdout.contains("reading"),
            "{case} (guards: {way}): {stdout}"
        );
        assert!(!stdout.contains("no fault"), "{case} (guards: {way}): {stdout}");
    }
}

#[test]
fn guard_pages_stop_linear_overflows_and_underflows() {
    faults("overflow-large-to-slot-end");
    faults("overflow-small-linear");
    faults("underflow-large");
    // Within a page of the request: only secure-max seals a large block's
    // slack.
    faults_in(&secure_max_library(), "overflow-large-linear");
}

#[test]
fn zero_size_blocks_are_inaccessible() {
    faults("zero-size-read");
}

/// `secure-max` only (`seal-freed-large`): `secure` keeps guards on both
/// sides of a freed large block but leaves the block itself open.
#[test]
fn freed_large_blocks_are_inaccessible() {
    faults_in(&secure_max_library(), "read-after-free-large");
}

#[test]
fn a_dangling_reader_sees_zeros() {
    let exe = compile("cc", "violations.c", "violations");
    // `zero-on-free`: `secure-max` (SECURITY.md).
    let out = run(&exe, "dangling-read", &secure_max_library());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("zeroed"), "{stdout}");
    // The plain library leaves the old bytes (past the free-list link).
    let out = run(&exe, "dangling-read", &plain_library());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("old data"), "{stdout}");
}

fn neighbours(lib: &Path) -> f64 {
    let exe = compile("cc", "violations.c", "violations");
    let out = run(&exe, "order", lib);
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("neighbours="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no figure: {stdout}"))
}

#[test]
fn allocation_order_is_random_under_the_hardened_library_only() {
    // 2000 allocations of 48 bytes: in address order nearly every pair of
    // consecutive ones are neighbours; in a random order few are.
    let hardened = neighbours(&secure_library());
    assert!(hardened < 0.25, "hardened: {hardened:.3} of pairs are neighbours");
    let plain = neighbours(&plain_library());
    assert!(plain > 0.9, "plain: {plain:.3} of pairs are neighbours");
}

#[test]
fn sized_delete_with_the_wrong_size() {
    let exe = compile("g++", "sized_delete.cc", "sized_delete");
    assert_detected(
        &run(&exe, "", &secure_library()),
        "sized free with the wrong size",
    );
    // The plain library does not check sizes.
    let out = run(&exe, "", &plain_library());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 12 under the hardened library: one of the `fork_*.c` races, killed
/// after a minute (a deadlock fails as "hung"), must make all its `forks`
/// (the count follows `ok` in its last line).
fn fork_race(src: &str, out: &str, ok: &str, forks: u64) {
    let exe = compile("cc", src, out);
    common::assert_preloaded_count(&exe, &secure_library(), ok, forks);
}

/// fork from four threads while others getline long lines from one FILE
/// and call fflush(NULL): all 300 forks (the program's MAX_FORKS) made.
#[test]
fn fork_beside_getline_and_fflush() {
    fork_race("fork_stdio.c", "fork_stdio", "fork stdio ok: ", 300);
}

/// fork from SIGUSR1/SIGUSR2 handlers into a single-threaded malloc loop:
/// all 500 forks (the program's MAX_FORKS) made.
#[test]
fn fork_from_signal_handlers() {
    fork_race("fork_signal.c", "fork_signal", "fork signal ok: ", 500);
}
