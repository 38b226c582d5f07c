//! The launcher cbench runs every program under (c/launch.c): it reports the program's own peak
//! RSS, not this process's; passes on its exit code and stdout; and LD_PRELOAD reaches the program.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use fortalloc_bench::cbench::{build_launcher, parse_maxrss_kb};

fn launch(args: &[&str]) -> Command {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    let exe = EXE.get_or_init(|| {
        let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("launch");
        build_launcher(&Path::new(env!("CARGO_MANIFEST_DIR")).join("c/launch.c"), &exe);
        exe
    });
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::null());
    cmd
}

fn report(output: &Output) -> u64 {
    parse_maxrss_kb(&output.stderr).unwrap_or_else(|| panic!("no report: {output:?}"))
}

#[test]
fn peak_rss_is_the_programs_alone() {
    // Give this process a high-water mark far above what `true` uses.
    let mut big = vec![0u8; 64 << 20];
    for page in big.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&big);
    drop(big);

    // Started from here (posix_spawn, a vfork), `true` inherits that mark at execve: the
    // floor the launcher removes.
    #[expect(clippy::zombie_processes, reason = "reaped by wait4 below, for its rusage")]
    let child = Command::new("true").spawn().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into locals we own.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(pid > 0);
    assert!(usage.ru_maxrss >= 60 << 10, "direct: {} KiB", usage.ru_maxrss);

    let output = launch(&["true"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let kb = report(&output);
    assert!(kb > 0 && kb < 8 << 10, "launched: {kb} KiB");
}

#[test]
fn passes_on_stdout_and_exit_code_and_silences_stderr() {
    let output = launch(&["sh", "-c", "echo out; echo err >&2; exit 7"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(7));
    assert_eq!(output.stdout, b"out\n");
    report(&output);
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("err"),
        "{output:?}"
    );

    let killed = launch(&["sh", "-c", "kill -9 $$"]).output().unwrap();
    assert_eq!(killed.status.code(), Some(128 + 9));
    let missing = launch(&["/nonexistent/program"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(127));
}

#[test]
fn ld_preload_reaches_the_program() {
    // cat links no libm: it is in cat's maps only if preloaded.
    let output = launch(&["cat", "/proc/self/maps"])
        .env("LD_PRELOAD", "libm.so.6")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("libm.so.6"));
    let plain = launch(&["cat", "/proc/self/maps"])
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("libm.so.6"));
}
