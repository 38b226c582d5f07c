//! Helpers shared by integration tests (`mod common;`). Not every test file
//! uses every helper, hence the `dead_code` allowance.
//!
//! [`run_with_limit`] runs a child process under a time limit, so a test
//! whose subject can deadlock fails with "hung" instead of blocking the
//! whole suite; [`run_case`] uses it to re-run this test binary for one
//! case, the pattern of `tests/harden.rs`. The C library's tests include
//! this file too (`#[path]`).

#![allow(dead_code)]

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What a child process did, when it finished in time.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From spawning to the exit.
    pub elapsed: Duration,
}

impl Finished {
    /// Panics with the whole story unless the child exited with status 0.
    pub fn assert_success(&self, what: &str) {
        assert!(
            self.status.success(),
            "{what}: {:?} after {:.1?}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.elapsed,
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `cmd` (stdout and stderr captured) for at most `limit`, in a
/// process group of its own.
///
/// The child is polled with `try_wait`. Past the limit the whole group is
/// killed with SIGKILL (the child and whatever it forked that still runs,
/// such as a grandchild stuck on a lock) and this panics with
/// "`what` hung: ..." and the output so far. Output goes to files, not
/// pipes, so a chatty child cannot block on a full pipe and a grandchild
/// that keeps the descriptors open cannot block the reader.
pub fn run_with_limit(cmd: &mut Command, what: &str, limit: Duration) -> Finished {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("limited");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let tag: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let base = format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let out_path = dir.join(format!("{base}.out"));
    let err_path = dir.join(format!("{base}.err"));
    let out = File::create(&out_path).expect("stdout file");
    let err = File::create(&err_path).expect("stderr file");

    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: spawn: {e}"));
    let read = |p: &PathBuf| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() >= limit {
            let pgid = child.id() as libc::pid_t;
            // The group is the one this child leads (process_group(0)), not
            // reaped yet, so its id cannot have been reused.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            let (stdout, stderr) = (read(&out_path), read(&err_path));
            let _ = std::fs::remove_file(&out_path);
            let _ = std::fs::remove_file(&err_path);
            panic!(
                "{what} hung: no exit within {limit:?}, killed its process group\n\
                 stdout:\n{stdout}\nstderr:\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    let (stdout, stderr) = (read(&out_path), read(&err_path));
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    Finished {
        status,
        stdout,
        stderr,
        elapsed,
    }
}

/// The number that follows `prefix` in `out`'s stdout (say `7` from
/// "forks ok: 7 forks" with prefix "forks ok: "); panics, showing the
/// output, when there is none.
pub fn count_after(out: &Finished, prefix: &str) -> u64 {
    out.stdout
        .lines()
        .find_map(|l| l.split_once(prefix).map(|(_, rest)| rest))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no `{prefix}` line\nstdout:\n{}\nstderr:\n{}",
                out.stdout, out.stderr
            )
        })
}

/// Re-runs this test binary for one case: only the test named `dispatcher`
/// runs (`--exact`, output not captured, one test thread) with
/// `FA_TEST_CASE=case` in its environment, under [`run_with_limit`].
pub fn run_case(dispatcher: &str, case: &str, limit: Duration) -> Finished {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", dispatcher, "--nocapture", "--test-threads=1"])
        .env("FA_TEST_CASE", case);
    run_with_limit(&mut cmd, case, limit)
}

/// Runs `exe` with `lib` preloaded, killed after a minute (a deadlock fails
/// as "hung"), and checks it exited 0 having printed a number of at least
/// `want` after `prefix` (a count of forks, say: the programs stop at a
/// count, so how loaded the machine is changes how long they run, not
/// whether they pass).
pub fn assert_preloaded_count(exe: &Path, lib: &Path, prefix: &str, want: u64) {
    let what = exe
        .file_name()
        .map_or_else(|| exe.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut cmd = Command::new(exe);
    cmd.env("LD_PRELOAD", lib);
    let done = run_with_limit(&mut cmd, &what, Duration::from_secs(60));
    done.assert_success(&what);
    let n = count_after(&done, prefix);
    assert!(n >= want, "{what}: {n} after `{prefix}`\n{}", done.stdout);
}

/// Whether this kernel takes page-table guard markers
/// (`MADV_GUARD_INSTALL`, Linux 6.13+).
pub fn kernel_has_guard_markers() -> bool {
    // SAFETY: a fresh private page of our own, unmapped after the probe.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let ok = libc::madvise(p, 4096, 102) == 0;
        libc::munmap(p, 4096);
        ok
    }
}
