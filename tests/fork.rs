//! Issue 12: `fork()` in a program whose global allocator is fortalloc.
//! A child inherits a copy of memory but only the forking thread; a
//! fortalloc lock some other thread held at that instant stays locked in
//! the child, and the child's first allocation that needs it waits for
//! ever. Each case runs in a child process (`common::child`) under a time
//! limit, so a deadlock fails the test as "hung" instead of blocking the
//! suite:
//!
//! - `stdio`: forks from several threads beside threads reading long lines
//!   with `getline` from one shared `FILE`, threads calling `fflush(NULL)`,
//!   and threads allocating (up to several MiB) and starting and ending
//!   short threads; each fork child allocates, starts a thread, `_exit`s.
//! - `signal`: a single-threaded malloc/free loop into which SIGUSR1 and
//!   SIGUSR2, sent at random moments by another process, bring handlers
//!   that fork; the child finishes the interrupted allocation and goes on
//!   allocating.
//! - `command`: `std::process::Command` spawned from several threads with a
//!   `pre_exec` closure that allocates (so std forks, and the child needs
//!   fortalloc's locks) beside threads that allocate and start threads.
//!
//! The C library's version of the first two is `capi/tests/c/fork_*.c`.

mod common;

use std::ffi::{c_char, c_int, c_void};
use std::mem::MaybeUninit;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

/// How long a case may take before it counts as hung; each stops its own
/// work after a few seconds.
const LIMIT: Duration = Duration::from_secs(60);

/// Each case stops when it has made its count of forks (or spawns), and
/// passes only if it made them all: a count, not a rate, so a loaded
/// machine makes a case run longer rather than fail. The time cap, far
/// above what a case needs, stops a case that only crawls before
/// [`LIMIT`] kills it as hung.
const TIME_CAP: Duration = Duration::from_secs(40);
const STDIO_FORKS: u32 = 200;
const SIGNAL_FORKS: u32 = 400;
const COMMAND_SPAWNS: u32 = 200;

fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Sizes from 1 byte to 6 MiB, most of them small; one in sixteen is of
/// MiBs, so the global arena lock is taken often.
fn size_of(x: u64) -> usize {
    let r = (x >> 8) as usize;
    match x % 16 {
        0 => (1 + r % 6) << 20,
        1 => (64 << 10) + r % (960 << 10),
        2 | 3 => 1024 + r % 30_000,
        _ => 1 + r % 1000,
    }
}

/// A block of `n` bytes from the global allocator, its first and last
/// bytes written.
fn block(n: usize, v: u8) -> Box<[MaybeUninit<u8>]> {
    let mut b = Box::<[u8]>::new_uninit_slice(n);
    b[0].write(v);
    b[n - 1].write(v);
    b
}

/// `rounds` rounds of 32 allocations into `slots` (64 of them), each
/// freeing what its slot held.
fn churn_round(slots: &mut [Option<Box<[MaybeUninit<u8>]>>], seed: &mut u64, rounds: usize) {
    for _ in 0..rounds {
        for _ in 0..32 {
            let x = next(seed);
            let k = (x % slots.len() as u64) as usize;
            slots[k] = None;
            slots[k] = Some(block(size_of(x >> 6), x as u8));
        }
    }
}

fn new_slots() -> Vec<Option<Box<[MaybeUninit<u8>]>>> {
    (0..64).map(|_| None).collect()
}

/// Allocates and frees until `stop`, and every few rounds starts a short
/// thread that allocates and exits with its blocks still alive (they are
/// freed here): heap creation, thread exit and abandonment take the
/// global locks too.
fn churner(stop: &AtomicBool, mut seed: u64) {
    let mut slots = new_slots();
    let mut round = 0u64;
    while !stop.load(Relaxed) {
        churn_round(&mut slots, &mut seed, 1);
        round += 1;
        if round.is_multiple_of(4) {
            let t = std::thread::spawn(move || {
                let small: Vec<Box<u64>> = (0..100).map(Box::new).collect();
                (small, block((1 + (round as usize % 4)) << 20, 3))
            });
            drop(t.join().expect("short thread"));
        }
    }
}

/// The thread a fork child starts: allocates through fortalloc (a new
/// thread's heap, blocks of all sizes), returns a checksum.
extern "C" fn child_thread(_: *mut c_void) -> *mut c_void {
    let v: Vec<Box<u32>> = (0..50).map(Box::new).collect();
    let sum = v.iter().map(|b| **b as usize).sum::<usize>() + block(2 << 20, 1).len();
    std::ptr::without_provenance_mut(sum)
}

/// A fork child's work: a block of MiBs, small boxes, and a thread started
/// and joined, all allocating through fortalloc; then `_exit`, with status
/// 0 only if all went well. Never returns.
///
/// The thread is a bare pthread, not `std::thread`: std's own thread start
/// takes a process-wide mutex (its stack-guard bookkeeping) that a parent
/// thread starting or ending a thread at the fork leaves locked in the
/// child, a hang that is not the allocator's.
fn fork_child_work(seed: u64) -> ! {
    let big = block((1 + (seed % 8) as usize) << 20, 7);
    let small: Vec<Box<[u64; 4]>> = (0..64).map(|i| Box::new([i; 4])).collect();
    let mut t: libc::pthread_t = 0;
    let mut ret: *mut c_void = std::ptr::null_mut();
    // SAFETY: `t` and `ret` are valid out-pointers; `child_thread` matches
    // the start routine's signature and takes no argument.
    let joined = unsafe {
        libc::pthread_create(&mut t, std::ptr::null(), child_thread, std::ptr::null_mut()) == 0
            && libc::pthread_join(t, &mut ret) == 0
    };
    let ok = joined && ret.addr() == 1225 + (2 << 20) && small[63][0] == 63 && big.len() >= 1 << 20;
    drop(small);
    drop(big);
    // SAFETY: _exit ends this forked child at once, without running the
    // parent's atexit handlers or unwinding into the parent's stack.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) }
}

/// Waits for `pid`; true when it exited with status 0.
fn reap(pid: libc::pid_t) -> bool {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

/// A `FILE *` the threads share (stdio locks it on every call).
#[derive(Clone, Copy)]
struct SharedFile(*mut libc::FILE);
// SAFETY: a FILE is made for use from several threads: each stdio call
// takes the FILE's own lock.
unsafe impl Send for SharedFile {}
// SAFETY: as for Send.
unsafe impl Sync for SharedFile {}

fn pause_us(us: u64) {
    std::thread::sleep(Duration::from_micros(us));
}

/// Case `stdio`; prints `fork stdio ok: N forks`.
fn stdio_case() {
    const FORKERS: u64 = 4;
    const MAX_FORKS: u32 = STDIO_FORKS;
    const MAX_TIME: Duration = TIME_CAP;

    // Lines of 64 KiB to 6 MiB in a memory stream: `getline` grows its
    // buffer (glibc's malloc, here) while it holds the FILE's lock.
    let lens = [3usize << 20, 64 << 10, 6 << 20, 1 << 20, 5 << 19, 5 << 20];
    let mut text = Vec::with_capacity(lens.iter().sum());
    for (i, &n) in lens.iter().enumerate() {
        text.extend(std::iter::repeat_n(b'a' + i as u8, n - 1));
        text.push(b'\n');
    }
    // SAFETY: `text` outlives the stream (closed below, before `text` is
    // dropped); "r" never writes to it.
    let f = unsafe { libc::fmemopen(text.as_mut_ptr().cast(), text.len(), c"r".as_ptr()) };
    assert!(!f.is_null(), "fmemopen");
    let file = SharedFile(f);

    let stop = AtomicBool::new(false);
    let forks = AtomicU32::new(0);
    let failures = AtomicU32::new(0);
    let lines = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (stop, lines) = (&stop, &lines);
            s.spawn(move || {
                let f = file;
                let mut k = t * 500;
                while !stop.load(Relaxed) {
                    let mut line: *mut c_char = std::ptr::null_mut();
                    let mut cap: libc::size_t = 0;
                    k += 1;
                    // The stream is open until every thread has stopped.
                    // SAFETY: `line` is null or a 16-byte block from malloc
                    // with `cap` its size, as getline requires.
                    let n = unsafe {
                        if k % 2 == 1 {
                            cap = 16;
                            line = libc::malloc(cap).cast();
                        }
                        let n = libc::getline(&mut line, &mut cap, f.0);
                        libc::free(line.cast::<c_void>());
                        if n < 0 {
                            libc::rewind(f.0);
                        }
                        n
                    };
                    if n >= 0 {
                        lines.fetch_add(1, Relaxed);
                    }
                    // Short pauses leave the FILE unlocked now and then:
                    // without them fork, which needs the stdio list lock,
                    // starves whatever the allocator.
                    pause_us(k * 7919 % 1000);
                }
            });
        }
        for _ in 0..2 {
            let stop = &stop;
            s.spawn(move || {
                while !stop.load(Relaxed) {
                    // SAFETY: fflush(NULL) flushes every open stream.
                    unsafe { libc::fflush(std::ptr::null_mut()) };
                    pause_us(100);
                }
            });
        }
        for t in 0..2u64 {
            let stop = &stop;
            s.spawn(move || churner(stop, 0x9e37_79b9_7f4a_7c15 ^ (t + 1)));
        }
        let forkers: Vec<_> = (0..FORKERS)
            .map(|t| {
                let (stop, forks, failures) = (&stop, &forks, &failures);
                s.spawn(move || {
                    let mut seed = t + 1;
                    while !stop.load(Relaxed) {
                        // What this test checks is that this is safe.
                        // SAFETY: the child runs only fork_child_work, which
                        // allocates, starts one thread and _exits.
                        let pid = unsafe { libc::fork() };
                        if pid == 0 {
                            fork_child_work(seed);
                        }
                        assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        if !reap(pid) {
                            failures.fetch_add(1, Relaxed);
                        }
                        let n = forks.fetch_add(1, Relaxed) + 1;
                        if n >= MAX_FORKS || start.elapsed() >= MAX_TIME {
                            stop.store(true, Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in forkers {
            t.join().expect("forker");
        }
        stop.store(true, Relaxed);
    });
    // SAFETY: every thread that used the stream has ended.
    unsafe { libc::fclose(f) };
    drop(text);
    assert_eq!(failures.load(Relaxed), 0, "fork children failed");
    println!(
        "fork stdio ok: {} forks, {} lines, {:.2?}",
        forks.load(Relaxed),
        lines.load(Relaxed),
        start.elapsed()
    );
}

// The signal case's state, shared with its handler (lock-free atomics only).
static IN_CHILD: AtomicBool = AtomicBool::new(false);
static SIG_FORKS: AtomicU32 = AtomicU32::new(0);
static SIG_FAILURES: AtomicU32 = AtomicU32::new(0);
static SIG_DONE: AtomicBool = AtomicBool::new(false);
static ACK_FD: AtomicI32 = AtomicI32::new(-1);
const SIG_MAX_FORKS: u32 = SIGNAL_FORKS;

/// The SIGUSR1/SIGUSR2 handler: forks; the child returns to whatever the
/// signal interrupted (the main loop then ends it), the parent waits for
/// the child, counts it and tells the sender with a byte on the pipe.
extern "C" fn on_signal(_sig: c_int) {
    // SAFETY: errno of this thread, saved and restored around the handler.
    let saved = unsafe { *libc::__errno_location() };
    if !SIG_DONE.load(Relaxed) {
        // SAFETY: a single-threaded process; the child returns from this
        // handler into the allocation the signal interrupted.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            IN_CHILD.store(true, Relaxed);
            // SAFETY: as above.
            unsafe { *libc::__errno_location() = saved };
            return;
        }
        if pid > 0 && reap(pid) {
            SIG_FORKS.fetch_add(1, Relaxed);
        } else {
            SIG_FAILURES.fetch_add(1, Relaxed);
        }
        if SIG_FORKS.load(Relaxed) >= SIG_MAX_FORKS {
            SIG_DONE.store(true, Relaxed);
        }
        let c = 0u8;
        // SAFETY: writes one byte from a live local to the pipe.
        if unsafe { libc::write(ACK_FD.load(Relaxed), (&c as *const u8).cast(), 1) } != 1 {
            SIG_DONE.store(true, Relaxed);
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// A fork child of the signal case, back in the main loop: a few hundred
/// more allocations (small ones, and one of 4 MiB), then `_exit`. Never
/// returns.
fn signal_child_work(seed: &mut u64) -> ! {
    let mut keep: Vec<Option<Box<[MaybeUninit<u8>]>>> = (0..32).map(|_| None).collect();
    for _ in 0..300 {
        let x = next(seed);
        let k = (x % 32) as usize;
        keep[k] = None;
        keep[k] = Some(block(1 + (x >> 8) as usize % 2000, x as u8));
    }
    drop(block(4 << 20, 1));
    drop(keep);
    // SAFETY: ends the fork child at once, as in fork_child_work.
    unsafe { libc::_exit(0) }
}

/// The sender process: a random pause of 0 to 1 ms, SIGUSR1 or SIGUSR2 to
/// `target`, then waits for the handler's byte. Only nanosleep, kill, read
/// and _exit: it allocates nothing. Never returns.
fn sender(target: libc::pid_t, ack: c_int) -> ! {
    let mut s = 0x2545_f491_4f6c_dd1d_u64;
    loop {
        let x = next(&mut s);
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: (x % 1000) as libc::c_long * 1000,
        };
        let sig = if (x >> 20) & 1 == 1 {
            libc::SIGUSR1
        } else {
            libc::SIGUSR2
        };
        let mut c = 0u8;
        // SAFETY: plain system calls on local, live memory.
        unsafe {
            libc::nanosleep(&ts, std::ptr::null_mut());
            if libc::kill(target, sig) != 0 || libc::read(ack, (&mut c as *mut u8).cast(), 1) != 1 {
                libc::_exit(0);
            }
        }
    }
}

/// Case `signal`, in a process of one thread (forked from the test's
/// thread: the test harness's main thread is not in it); returns the exit
/// status and prints `fork signal ok: N forks`.
fn signal_case() -> c_int {
    const MAX_TIME: Duration = TIME_CAP;
    let mut fds = [0 as c_int; 2];
    // The handler is async-signal-safe as far as this test needs (atomics,
    // fork, waitpid, write).
    // SAFETY: sigaction and pipe get valid pointers to initialised locals.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        // Handlers do not nest: the forks interrupt only the main loop.
        libc::sigaddset(&mut sa.sa_mask, libc::SIGUSR1);
        libc::sigaddset(&mut sa.sa_mask, libc::SIGUSR2);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
    }
    // Set before the sender exists: its first signal can come at once, and
    // a handler that found no pipe would end the run after one fork.
    ACK_FD.store(fds[1], Relaxed);
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    // SAFETY: this process has one thread; the child runs only `sender`.
    let send = unsafe { libc::fork() };
    if send == 0 {
        // SAFETY: closing our copy of the pipe's write end.
        unsafe { libc::close(fds[1]) };
        sender(me, fds[0]);
    }
    assert!(send > 0, "fork: {}", std::io::Error::last_os_error());
    // SAFETY: closing our copy of the pipe's read end.
    unsafe { libc::close(fds[0]) };

    let start = Instant::now();
    let mut slots = new_slots();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rounds = 0u64;
    while !SIG_DONE.load(Relaxed) && start.elapsed() < MAX_TIME {
        churn_round(&mut slots, &mut seed, 1);
        rounds += 1;
        if IN_CHILD.load(Relaxed) {
            signal_child_work(&mut seed);
        }
    }
    // SAFETY: blocking the two signals, then ending and reaping the sender;
    // all arguments are valid.
    unsafe {
        let mut both: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut both);
        libc::sigaddset(&mut both, libc::SIGUSR1);
        libc::sigaddset(&mut both, libc::SIGUSR2);
        libc::sigprocmask(libc::SIG_BLOCK, &both, std::ptr::null_mut());
        libc::kill(send, libc::SIGKILL);
        libc::waitpid(send, std::ptr::null_mut(), 0);
    }
    drop(slots);
    let failures = SIG_FAILURES.load(Relaxed);
    let line = format!(
        "fork signal ok: {} forks, {rounds} rounds, {:.2?}, {failures} failures\n",
        SIG_FORKS.load(Relaxed),
        start.elapsed()
    );
    // SAFETY: writes a live buffer to stdout (not through std's locked
    // handle: this process was forked from a multi-threaded one).
    unsafe { libc::write(1, line.as_ptr().cast(), line.len()) };
    c_int::from(failures != 0)
}

/// Case `command`; prints `fork command ok: N spawns`.
fn command_case() {
    const SPAWNERS: u64 = 4;
    const MAX_SPAWNS: u32 = COMMAND_SPAWNS;
    const MAX_TIME: Duration = TIME_CAP;
    let stop = AtomicBool::new(false);
    let spawns = AtomicU32::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let stop = &stop;
            s.spawn(move || churner(stop, 0x51_7cc1_b727_220a ^ (t + 1)));
        }
        let spawners: Vec<_> = (0..SPAWNERS)
            .map(|t| {
                let (stop, spawns) = (&stop, &spawns);
                s.spawn(move || {
                    while !stop.load(Relaxed) {
                        let mut cmd = Command::new("/bin/true");
                        let mib = 1 + (t as usize + spawns.load(Relaxed) as usize) % 6;
                        // That this is safe there is what this test checks.
                        // SAFETY: the closure runs in the forked child before
                        // exec and only allocates and frees through fortalloc.
                        unsafe {
                            cmd.pre_exec(move || {
                                let big = block(mib << 20, 5);
                                let small: Vec<Box<u64>> = (0..32).map(Box::new).collect();
                                drop(small);
                                drop(big);
                                Ok(())
                            })
                        };
                        let status = cmd.status().expect("spawn /bin/true");
                        assert!(status.success(), "/bin/true: {status:?}");
                        let n = spawns.fetch_add(1, Relaxed) + 1;
                        if n >= MAX_SPAWNS || start.elapsed() >= MAX_TIME {
                            stop.store(true, Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in spawners {
            t.join().expect("spawner");
        }
        stop.store(true, Relaxed);
    });
    println!(
        "fork command ok: {} spawns, {:.2?}",
        spawns.load(Relaxed),
        start.elapsed()
    );
}

/// Case `signal`: the fork into [`signal_case`], whose child is the
/// process with a single thread that case needs.
fn signal_fork() {
    // The harness's other thread holds no fortalloc lock meanwhile.
    // SAFETY: the child runs only signal_case and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // A panic must not unwind into the harness's code in a process
        // that lacks the harness's main thread.
        let code = std::panic::catch_unwind(signal_case).unwrap_or(101);
        // SAFETY: ends the single-threaded child.
        unsafe { libc::_exit(code) };
    }
    assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
    assert!(reap(pid), "the signal case failed");
}

/// Runs `body` as `case` in a child process within [`LIMIT`] and checks it
/// printed `prefix` and a count of at least `at_least`.
#[track_caller]
fn run(case: &str, body: impl FnOnce(), prefix: &str, at_least: u64) {
    common::child(case).limit(LIMIT).run(body).check(|out| {
        out.assert_success(case);
        let n = common::count_after(out, prefix);
        assert!(
            n >= at_least,
            "{case}: only {n} (wanted {at_least})\n{}",
            out.stdout
        );
        eprintln!("{case}: {n} in {:.1?}", out.elapsed);
    });
}

#[test]
fn fork_from_threads_beside_stdio_getline_fflush_and_thread_churn() {
    run("stdio", stdio_case, "fork stdio ok: ", STDIO_FORKS.into());
}

#[test]
fn fork_from_signal_handlers_into_a_malloc_loop() {
    run("signal", signal_fork, "fork signal ok: ", SIGNAL_FORKS.into());
}

#[test]
fn command_spawn_with_an_allocating_pre_exec_beside_thread_churn() {
    run(
        "command",
        command_case,
        "fork command ok: ",
        COMMAND_SPAWNS.into(),
    );
}
