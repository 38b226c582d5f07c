//! Helpers shared by integration tests (`mod common;`). Not every test file
//! uses every helper, hence the `dead_code` allowance.
//!
//! [`child`] is the one harness for running a case of a test in a child
//! process (this test binary re-run for that test alone): what a violation
//! does to the process (an abort, a fault, a hang) must not take the test
//! harness down with it. The case's body and the check of its outcome sit
//! together in the test that names them. [`run_with_limit`] runs any child
//! under a time limit, so a test whose subject can deadlock fails with
//! "hung" instead of blocking the whole suite. The C library's tests
//! include this file too (`#[path]`).

#![allow(dead_code)]

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::panic::Location;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// The signal that ended the child, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// The child's exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The address the child printed with [`say_addr`] before its
    /// violation; panics, showing the output, when there is none.
    pub fn printed_addr(&self) -> String {
        self.stdout
            .lines()
            .find_map(|l| l.split_once("addr=").map(|(_, a)| a.trim()))
            .unwrap_or_else(|| {
                panic!(
                    "child printed no address\nstdout:\n{}\nstderr:\n{}",
                    self.stdout, self.stderr
                )
            })
            .to_string()
    }

    /// Panics unless the child died of `signal`.
    pub fn assert_signal(&self, signal: i32, what: &str) {
        assert_eq!(
            self.signal(),
            Some(signal),
            "{what}: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }

    /// Panics unless the child aborted with fortalloc's report
    /// `fortalloc: <what> at <the address it printed>`.
    pub fn assert_reported(&self, what: &str) {
        self.assert_signal(libc::SIGABRT, what);
        let expect = format!("fortalloc: {what} at {}", self.printed_addr());
        assert!(
            self.stderr.contains(&expect),
            "wanted `{expect}` in stderr:\n{}\nstdout:\n{}",
            self.stderr,
            self.stdout
        );
    }

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

/// Names the case a re-run test binary is to run; its presence is what
/// tells a child from the parent.
const CASE_VAR: &str = "FA_CHILD_CASE";

/// What a child prints before the body, so the parent knows the body ran
/// (a child that ran no body, say for a misspelt test name, exits 0 too).
const STARTED: &str = "fortalloc-test-child: running case ";

/// How long a child may run unless the case says otherwise.
const DEFAULT_LIMIT: Duration = Duration::from_secs(300);

/// One case of the calling test, to be run in a child process by
/// [`Child::run`]. `case` tells the test's cases apart (a test may run
/// several bodies, or one body under several environments).
pub fn child(case: &str) -> Child {
    Child {
        case: case.to_string(),
        env: Vec::new(),
        limit: DEFAULT_LIMIT,
        aslr_off: false,
    }
}

/// A case to run in a child process: see [`child`].
pub struct Child {
    case: String,
    env: Vec<(String, String)>,
    limit: Duration,
    aslr_off: bool,
}

/// What [`Child::run`] did: in the parent, the child's outcome; in the
/// child, nothing (it ran the body).
#[must_use = "check the child's outcome with `check`"]
pub struct Ran(Option<Finished>);

impl Ran {
    /// Runs `check` on the child's outcome, in the parent only.
    pub fn check(self, check: impl FnOnce(&Finished)) {
        if let Some(out) = self.0 {
            check(&out);
        }
    }

    /// The child's outcome, in the parent; `None` in the child.
    pub fn outcome(self) -> Option<Finished> {
        self.0
    }
}

impl Child {
    /// Sets a variable in the child's environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Sets variables in the child's environment.
    pub fn envs(self, env: &[(&str, &str)]) -> Self {
        env.iter().fold(self, |c, (k, v)| c.env(k, v))
    }

    /// Kills the child and fails as "hung" after `limit` (see
    /// [`run_with_limit`]).
    pub fn limit(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// Starts the child with address-space randomization off, so its
    /// layout is what the allocator chose, not the kernel.
    pub fn aslr_off(mut self) -> Self {
        self.aslr_off = true;
        self
    }

    /// In the parent: re-runs the calling test alone in a child process
    /// with this case named in its environment, and returns what the
    /// child did. In that child: runs `body` (once, however often the test
    /// asks for this case) and returns; the test then carries on to its
    /// end without spawning or checking anything.
    #[track_caller]
    pub fn run(self, body: impl FnOnce()) -> Ran {
        note_body(&self.case, Location::caller());
        match std::env::var(CASE_VAR) {
            Ok(case) => {
                static RAN: AtomicBool = AtomicBool::new(false);
                if case == self.case && !RAN.swap(true, Ordering::Relaxed) {
                    use std::io::Write;
                    println!("{STARTED}{case}");
                    std::io::stdout().flush().expect("flush");
                    body();
                    std::io::stdout().flush().expect("flush");
                }
                Ran(None)
            }
            Err(_) => Ran(Some(self.spawn())),
        }
    }

    fn spawn(&self) -> Finished {
        // The test harness runs each test on a thread named after it.
        let current = std::thread::current();
        let test = current
            .name()
            .filter(|&n| n != "main")
            .expect("child cases run from a test's own thread");
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CASE_VAR, &self.case)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if self.aslr_off {
            // SAFETY: personality(2) only changes how the exec'd image is
            // laid out; it allocates nothing and is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::personality(libc::ADDR_NO_RANDOMIZE as libc::c_ulong);
                    Ok(())
                });
            }
        }
        let what = format!("{test} [{}]", self.case);
        let out = run_with_limit(&mut cmd, &what, self.limit);
        assert!(
            out.stdout.contains(&format!("{STARTED}{}\n", self.case)),
            "{what}: the child never ran the case's body ({:?})\nstdout:\n{}\nstderr:\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
        out
    }
}

/// Panics if this test gave `case` to two bodies: the child runs the
/// first body asked for under a case's name, so a second would go untested.
fn note_body(case: &str, at: &'static Location<'static>) {
    thread_local! {
        static BODIES: RefCell<Vec<(String, &'static Location<'static>)>> = const { RefCell::new(Vec::new()) };
    }
    BODIES.with_borrow_mut(|bodies| match bodies.iter().find(|(c, _)| c == case) {
        Some((_, first)) => assert_eq!(*first, at, "case `{case}` names two bodies"),
        None => bodies.push((case.to_string(), at)),
    });
}

/// Prints `addr=<p>` for [`Finished::printed_addr`], flushed before the
/// violation that follows can end the process.
pub fn say_addr<T>(p: *const T) {
    use std::io::Write;
    println!("addr={:#x}", p as usize);
    std::io::stdout().flush().expect("flush");
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
