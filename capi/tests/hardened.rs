//! The hardened C library (`--features secure`) under `LD_PRELOAD`: each
//! violation, made by a C or C++ program that knows nothing of fortalloc,
//! ends in SIGABRT with fortalloc's one-line message naming the address;
//! the plain library lets the same free-list poisoning through.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi-hardened");
    std::fs::create_dir_all(&dir).expect("scratch");
    dir
}

/// The hardened library, built once into its own target directory (it
/// cannot share one with the plain build: same file name).
fn secure_library() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("secure-target");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .args([
                "build",
                "-p",
                "fortalloc-capi",
                "--features",
                "secure",
                "--target-dir",
            ])
            .arg(&dir)
            .output()
            .expect("cargo build");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        dir.join("debug/libfortalloc.so")
    })
    .clone()
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

fn compile(compiler: &str, src: &str, out: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().expect("lock");
    let exe = scratch().join(out);
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
    Command::new(exe)
        .arg(case)
        .env("LD_PRELOAD", lib)
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

fn violation(case: &str, what: &str) {
    let exe = compile("cc", "violations.c", "violations");
    assert_detected(&run(&exe, case, &secure_library()), what);
}

#[test]
fn double_frees() {
    violation("double-free", "double free");
    violation("double-free-aba", "double free");
    violation("double-free-thread", "double free");
}

#[test]
fn overflows() {
    violation("overflow-1", "heap buffer overflow");
    violation("overflow-8-large", "heap buffer overflow");
}

#[test]
fn write_after_free() {
    violation("uaf-write", "write after free");
}

#[test]
fn realloc_of_a_freed_block() {
    violation("realloc-freed", "invalid pointer (not a live block)");
}

#[test]
fn free_list_poisoning() {
    let exe = compile("cc", "violations.c", "violations");
    violation("poison", "corrupted free list");
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
