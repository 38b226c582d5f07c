//! `free` keeps `errno` (as POSIX.1-2024 and glibc's `tst-free-errno`
//! ask) in the plain library and both presets, on every path: a C program
//! uses up the process's kernel mappings, so that every `mprotect`,
//! partial `munmap` and `mmap` inside the allocator fails with ENOMEM, and
//! then frees small, medium, large and huge blocks every way there is
//! (`free`, `free_sized`, `free_aligned_sized`, C++ `delete`, `realloc`),
//! checking `errno` after each (see `c/free_errno.c`). Guards are made
//! both ways: with markers where the kernel has them, and with `mprotect`.
//! At the same limit a huge block whose pages cannot be opened fails its
//! allocation with ENOMEM and leaves the allocator usable (see
//! `c/huge_open_limit.c`).

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

/// The C program `tests/c/<name>.c`, built once.
fn program(name: &'static str) -> PathBuf {
    static EXES: Mutex<Vec<(&str, PathBuf)>> = Mutex::new(Vec::new());
    let mut exes = EXES.lock().expect("lock");
    if let Some((_, exe)) = exes.iter().find(|(n, _)| *n == name) {
        return exe.clone();
    }
    let out = scratch().join(name);
    let o = Command::new("cc")
        .args(["-O1", "-Wall", "-Werror", "-pthread", "-o"])
        .arg(&out)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c")))
        .output()
        .expect("cc");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    exes.push((name, out.clone()));
    out
}

/// Runs the program on `lib` with guards made each way; it must check
/// every free and find none that changed `errno`.
fn frees_keep_errno(lib: &Path) {
    for guards in ["auto", "mprotect"] {
        let out = Command::new(program("free_errno"))
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

/// Runs `tests/c/huge_open_limit.c` on `lib` with `mprotect` guards and no
/// quarantine (so the freed huge block's span is back in its arena): a
/// huge block whose pages cannot be opened at the mapping limit fails its
/// allocation with ENOMEM, and huge blocks come again once mappings are
/// given back. Returns what the allocation at the limit did: "refused" or
/// "taken", or None where the limit is too high to reach.
fn huge_block_at_the_limit(lib: &Path) -> Option<String> {
    let out = Command::new(program("huge_open_limit"))
        .env("LD_PRELOAD", lib)
        .env("FORTALLOC_GUARDS", "mprotect")
        .env("FORTALLOC_QUARANTINE", "0")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stdout.starts_with("skip") {
        eprintln!("{}: {stdout}", lib.display());
        return None;
    }
    assert!(
        out.status.success() && stdout.ends_with("ok\n"),
        "{}: {}: {stdout}{stderr}",
        lib.display(),
        out.status
    );
    Some(stdout.lines().next().unwrap_or_default().to_string())
}

#[test]
fn the_secure_max_library_fails_a_huge_block_it_cannot_open() {
    // secure-max seals a freed huge block whole: opening the next one in
    // its span splits the seal, which the kernel refuses at the limit.
    if let Some(what) = huge_block_at_the_limit(&library(Some("secure-max"))) {
        assert_eq!(what, "refused", "the allocation at the limit");
    }
}

#[test]
fn the_secure_library_hands_out_huge_blocks_at_the_mapping_limit() {
    // secure leaves a freed huge block open, with its guards on record:
    // the next one in its span is handed out (short of a guard) or
    // refused, never left sealed.
    if let Some(what) = huge_block_at_the_limit(&library(Some("secure"))) {
        assert!(what == "refused" || what == "taken", "{what}");
    }
}
