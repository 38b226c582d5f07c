//! The launcher end to end: it preloads the library, passes options and
//! the program's exit status through, and explains itself.

use std::path::PathBuf;
use std::process::Command;

fn launcher() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fortalloc"));
    cmd.env("FORTALLOC_LIB", library());
    cmd
}

/// The debug library of this workspace, built if needed.
fn library() -> PathBuf {
    let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let exe = std::env::current_exe().expect("test exe");
    let lib = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("libfortalloc.so");
    if !lib.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .current_dir(ws)
            .args(["build", "-p", "fortalloc-capi"])
            .status()
            .expect("cargo");
        assert!(ok.success());
    }
    lib
}

#[test]
fn runs_the_program_on_fortalloc_with_stats_and_its_exit_status() {
    let out = launcher()
        .args(["--stats", "--", "perl", "-e", "print qq(ran\n); exit 3"])
        .output()
        .expect("launcher");
    assert_eq!(out.status.code(), Some(3), "the program's status passes through");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fortalloc: allocations"),
        "stats at exit: {stderr}"
    );
}

#[test]
fn keeps_existing_preloads_and_sets_options() {
    let out = launcher()
        .args([
            "--verbose",
            "--purge-delay",
            "25",
            "--",
            "sh",
            "-c",
            "echo \"$LD_PRELOAD|$FORTALLOC_PURGE_DELAY\"",
        ])
        .env("LD_PRELOAD", "")
        .output()
        .expect("launcher");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("libfortalloc.so|25"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("purge delay 25 ms"),
        "the library read the option: {stderr}"
    );

    // An LD_PRELOAD already set stays, after fortalloc. (The C library
    // itself is preloadable twice without harm; it is loaded once.)
    let other = library();
    let out = launcher()
        .args(["--", "sh", "-c", "echo \"$LD_PRELOAD\""])
        .env("LD_PRELOAD", &other)
        .output()
        .expect("launcher");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let parts: Vec<&str> = stdout.split(' ').collect();
    assert_eq!(parts.len(), 2, "{stdout}");
    assert!(parts[1].ends_with("libfortalloc.so"), "{stdout}");
}

#[test]
fn help_and_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_fortalloc"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("usage: fortalloc"));
    let out = Command::new(env!("CARGO_BIN_EXE_fortalloc"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no program to run"));
    let out = launcher()
        .args(["--", "/nonexistent/program"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(127));
    let out = Command::new(env!("CARGO_BIN_EXE_fortalloc"))
        .args(["--", "true"])
        .env("FORTALLOC_LIB", "/nonexistent/lib.so")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}
