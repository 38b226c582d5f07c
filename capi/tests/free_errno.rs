//! `free` keeps `errno` (as POSIX.1-2024 and glibc's `tst-free-errno`
//! ask) in the plain library and both presets, on every path: a C program
//! uses up the process's kernel mappings, so that every `mprotect`,
//! partial `munmap` and `mmap` inside the allocator fails with ENOMEM, and
//! then frees small, medium, large and huge blocks every way there is
//! (`free`, `free_sized`, `free_aligned_sized`, C++ `delete`, `realloc`),
//! checking `errno` after each (see `c/free_errno.c`). Guards are made
//! both ways: with markers where the kernel has them, and with `mprotect`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi-free-errno");
    std::fs::create_dir_all(&dir).expect("scratch");
    dir
}

/// libfortalloc.so of the current sources, plain (`None`) or with a
/// preset, each built once into its own target directory (the names are
/// the same); the presets' directories are the ones `hardened.rs` uses.
fn library(preset: Option<&'static str>) -> PathBuf {
    static BUILT: Mutex<Vec<(Option<&str>, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().expect("lock");
    if let Some((_, lib)) = built.iter().find(|(p, _)| *p == preset) {
        return lib.clone();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["build", "-p", "fortalloc-capi"]);
    let lib = match preset {
        Some(preset) => {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{preset}-target"));
            cmd.args(["--features", preset, "--target-dir"]).arg(&dir);
            dir.join("debug/libfortalloc.so")
        }
        None => {
            let exe = std::env::current_exe().expect("test binary");
            let target = exe.parent().and_then(Path::parent).expect("target dir");
            target.join("libfortalloc.so")
        }
    };
    let out = cmd.output().expect("cargo build");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(lib.exists(), "{} missing", lib.display());
    built.push((preset, lib.clone()));
    lib
}

fn program() -> PathBuf {
    static EXE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut exe = EXE.lock().expect("lock");
    if let Some(exe) = exe.as_ref() {
        return exe.clone();
    }
    let out = scratch().join("free_errno");
    let o = Command::new("cc")
        .args(["-O1", "-Wall", "-Werror", "-pthread", "-o"])
        .arg(&out)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/free_errno.c"))
        .output()
        .expect("cc");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    *exe = Some(out.clone());
    out
}

/// Runs the program on `lib` with guards made each way; it must check
/// every free and find none that changed `errno`.
fn frees_keep_errno(lib: &Path) {
    for guards in ["auto", "mprotect"] {
        let out = Command::new(program())
            .env("LD_PRELOAD", lib)
            .env("FORTALLOC_GUARDS", guards)
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stdout.starts_with("skip") {
            eprintln!("{}: {stdout}", lib.display());
            return;
        }
        // The exit status says which signal, if any: the program prints
        // nothing before its last line unless a free fails.
        assert!(
            out.status.success(),
            "{} (guards {guards}): {}: {stdout}{stderr}",
            lib.display(),
            out.status
        );
        let checked: u32 = stdout
            .strip_prefix("ok ")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no count: {stdout}"));
        // 14 sizes, 7 ways, 3 copies before the limit, one in the other
        // thread and one after: 490 unless an allocation near the limit
        // failed.
        assert!(checked >= 14 * 7 * 4, "only {checked} frees checked: {stdout}");
    }
}

#[test]
fn the_plain_library_keeps_errno_in_free() {
    frees_keep_errno(&library(None));
}

#[test]
fn the_secure_library_keeps_errno_in_free() {
    frees_keep_errno(&library(Some("secure")));
}

#[test]
fn the_secure_max_library_keeps_errno_in_free() {
    frees_keep_errno(&library(Some("secure-max")));
}
