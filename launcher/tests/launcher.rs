//! The launcher end to end: it preloads the library, passes options and
//! the program's exit status through, and explains itself.

use std::path::PathBuf;
use std::process::Command;

fn launcher() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fortalloc"));
    cmd.env("FORTALLOC_LIB", library());
    cmd
}

/// The debug library of this workspace, of the current sources: built
/// once per run (a no-op when fresh), since `cargo test` does not build a
/// `cdylib` and one left by an earlier `cargo build` may be stale.
fn library() -> PathBuf {
    static LIB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LIB.get_or_init(|| {
        let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let exe = std::env::current_exe().expect("test exe");
        let lib = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .join("libfortalloc.so");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .current_dir(ws)
            .args(["build", "-p", "fortalloc-capi"])
            .status()
            .expect("cargo");
        assert!(ok.success());
        lib
    })
    .clone()
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

/// The names in the statistics tables' headings on `stderr`, one per
/// table, sorted; each heading must carry a pid.
fn tables(stderr: &str) -> Vec<(u32, String)> {
    let mut found: Vec<(u32, String)> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("fortalloc: statistics of process "))
        .map(|rest| {
            let (pid, name) = rest.split_once(" (").expect("pid (name)");
            let name = name.strip_suffix(')').expect("name)");
            (pid.parse().expect("pid"), name.to_string())
        })
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found
}

/// A program that runs two others, all three allocating and exiting
/// through `exit` (so each would print a table).
const PARENT: [&str; 3] = [
    "perl",
    "-e",
    "system(qw(ls -d /)) == 0 or exit 5; system(q(true)) == 0 or exit 6",
];

#[test]
fn stats_are_the_programs_alone() {
    let child = launcher()
        .arg("--stats")
        .arg("--")
        .args(PARENT)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("launcher");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        tables(&stderr),
        [(pid, "perl".to_string())],
        "one table, the program's, under the launcher's pid: {stderr}"
    );
    assert_eq!(stderr.matches("fortalloc: allocations").count(), 1, "{stderr}");
}

#[test]
fn stats_all_are_every_processs() {
    let out = launcher()
        .arg("--stats-all")
        .arg("--")
        .args(PARENT)
        .output()
        .expect("launcher");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let found = tables(&stderr);
    let names: Vec<&str> = found.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["ls", "perl", "true"], "{stderr}");
    assert!(
        found[0].0 != found[1].0 && found[1].0 != found[2].0 && found[0].0 != found[2].0,
        "three processes: {found:?}"
    );
}

/// The variable the launcher sets, used directly: a table only in the
/// process it names, and a value that names none is reported.
#[test]
fn show_stats_for_one_pid() {
    let run = |value: &str| {
        Command::new("true")
            .env("LD_PRELOAD", library())
            .env("FORTALLOC_SHOW_STATS", value)
            .output()
            .expect("true")
    };
    let out = run("pid:1");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "not process 1");
    let out = run("pid:x");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ignoring FORTALLOC_SHOW_STATS") && !stderr.contains("allocations"),
        "{stderr}"
    );
    let out = run("1");
    assert_eq!(tables(&String::from_utf8_lossy(&out.stderr)).len(), 1);
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

/// `--verbose` speaks in the program alone, as `--stats` does; its lines
/// name the library file and the build. `--verbose-all` speaks in every
/// process the program runs too.
#[test]
fn verbose_is_the_programs_alone_unless_asked_for_all() {
    let starts = |stderr: &str| stderr.matches("fortalloc: pid ").count();
    let out = launcher()
        .arg("--verbose")
        .arg("--")
        .args(PARENT)
        .output()
        .expect("launcher");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(starts(&stderr), 1, "one process speaks: {stderr}");
    let first = stderr
        .lines()
        .find(|l| l.starts_with("fortalloc: pid "))
        .expect("start line");
    assert!(
        first.contains("libfortalloc.so") && first.ends_with(", build plain"),
        "names the library and the build: {first}"
    );
    assert!(
        stderr.contains("fortalloc: no defences (the plain build)"),
        "{stderr}"
    );
    assert!(stderr.contains("fortalloc: options: purge delay "), "{stderr}");

    let out = launcher()
        .arg("--verbose-all")
        .arg("--")
        .args(PARENT)
        .output()
        .expect("launcher");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(starts(&stderr), 3, "perl, ls and true speak: {stderr}");
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
    // A bad option: the error and where the usage is, not the usage.
    let out = Command::new(env!("CARGO_BIN_EXE_fortalloc"))
        .args(["--bogus", "true"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        "fortalloc: unknown option --bogus\nfortalloc: `fortalloc --help` shows the usage\n"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_fortalloc"))
        .arg("--version")
        .output()
        .expect("run");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("fortalloc {}\n", env!("CARGO_PKG_VERSION"))
    );
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
