//! Large blocks (64 KiB to 2 MiB) live in segments of slots shared by all
//! threads, in every build: `calloc` of one whose memory is fresh leaves
//! its pages untouched, a freed one's memory goes back to the OS after the
//! purge delay (every build but `seal-freed-large`'s, which seals it at
//! once), a reused one reads zero from `calloc`, and a second free is
//! reported (of a huge block too, with the `double-free` bitmaps),
//! also after threads churned its class (which turns on the plain build's
//! per-thread caches of freed blocks; `src/large.rs` tests those closely),
//! after `collect`, and from another thread. Reuse, thread exit, `fork`
//! and the counters keep their promises too.
//! Each case runs in a child process of its own, so no other test takes
//! the slots it watches.

mod common;

use std::time::Duration;

use common::{child, Finished};

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

/// A size no other case uses, in a large class.
const BIG: usize = 1_500_000;

/// How long a case may run.
const LIMIT: Duration = Duration::from_secs(60);

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// How many of the OS pages of `[p, p + len)` are resident.
fn resident_pages(p: *mut u8, len: usize) -> usize {
    let ps = page_size();
    let start = p as usize & !(ps - 1);
    let pages = (p as usize + len - start).div_ceil(ps);
    let mut vec = vec![0u8; pages];
    // SAFETY: the range is mapped (a block of ours, or one just freed whose
    // segment is still live); `vec` has a byte per page.
    let rc = unsafe { libc::mincore(start as *mut libc::c_void, pages * ps, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore failed");
    vec.iter().filter(|&&v| v & 1 != 0).count()
}

fn all_zero(p: *const u8, len: usize) -> bool {
    // SAFETY: `p` is a live block of at least `len` bytes.
    unsafe { std::slice::from_raw_parts(p, len) }
        .iter()
        .all(|&b| b == 0)
}

fn fill(p: *mut u8, len: usize, byte: u8) {
    // SAFETY: `p` is a live block of at least `len` bytes.
    unsafe { std::ptr::write_bytes(p, byte, len) };
}

static SEEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn record(info: &fortalloc::ErrorInfo) {
    if info.kind == fortalloc::ErrorKind::DoubleFree {
        SEEN.store(info.address, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What the child that ran `case` printed, after checking it exited 0.
fn printed<'a>(o: &'a Finished, case: &str) -> &'a str {
    o.assert_success(case);
    &o.stdout
}

fn field(out: &str, name: &str) -> usize {
    let at = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {out}"));
    at.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn calloc_of_fresh_large_memory_touches_almost_none_of_it() {
    child("fresh-calloc")
        .limit(LIMIT)
        .run(|| {
            let p = fortalloc::zalloc(BIG);
            assert!(!p.is_null());
            // Counted before reading: a read maps the zero page.
            let resident = resident_pages(p, BIG);
            assert!(all_zero(p, BIG), "calloc memory not zero");
            println!("resident={resident} of {}", BIG / page_size());
        })
        .check(|o| {
            let out = printed(o, "fresh-calloc");
            let resident = field(out, "resident");
            // Its first page holds what the allocator writes; the rest is
            // untouched (the sealing build opens what the request needs,
            // still without touching it). Seals without zero-on-free are the
            // exception: a slot sealed with `mprotect` keeps old bytes, and
            // no record says which slots did, so `calloc` clears every large
            // block there.
            if !cfg!(feature = "seal-freed-large") || cfg!(feature = "zero-on-free") {
                assert!(
                    resident <= 2,
                    "calloc touched {resident} pages of fresh memory: {out}"
                );
            }
        });
}

#[test]
fn a_freed_large_block_goes_back_to_the_os_after_the_purge_delay() {
    child("purged-after-delay")
        .limit(LIMIT)
        .run(|| {
            // Long enough that the reads right after the free come first
            // on a loaded machine.
            fortalloc::set_purge_delay_ms(250);
            // A live neighbour keeps the segment (an empty one is released).
            let keep = fortalloc::malloc(BIG);
            // The segment the malloc after the delay takes a slot of.
            let other = fortalloc::malloc(100_000);
            let p = fortalloc::malloc(BIG);
            assert!(!p.is_null());
            fill(p, BIG, 0xa5);
            let before = resident_pages(p, BIG);
            let held = fortalloc::stats().committed_bytes;
            // SAFETY: freed once; only its mapping is looked at after (the
            // collect lets it out of the quarantine, if any).
            unsafe { fortalloc::free(p) };
            fortalloc::collect(false);
            let kept = resident_pages(p, BIG);
            let freed = fortalloc::stats().committed_bytes;
            std::thread::sleep(Duration::from_millis(600));
            // The purge runs on the allocator's slow path.
            let again = fortalloc::malloc(100_000);
            let after = resident_pages(p, BIG);
            let purged = fortalloc::stats().committed_bytes;
            let q = fortalloc::zalloc(BIG);
            let zero = all_zero(q, BIG);
            // SAFETY: both live, freed once.
            unsafe {
                fortalloc::free(q);
                fortalloc::free(again);
                fortalloc::free(other);
                fortalloc::free(keep);
            }
            println!(
                "before={before} kept={kept} after={after} zero={zero} \
                 held={held} freed={freed} purged={purged}"
            );
        })
        .check(|o| {
            let out = printed(o, "purged-after-delay");
            let before = field(out, "before");
            let after = field(out, "after");
            let pages = BIG / page_size();
            assert!(
                before >= pages - 1,
                "the block was not resident after writing: {out}"
            );
            // The sealing build seals a freed block at once instead, with
            // `mprotect` keeping the pages of one written whole (SECURITY.md
            // says why). Every other build, `guard-pages` too, leaves the
            // block as it was until the delay has passed (no seal, no wipe),
            // then purges it, and its committed bytes fall.
            if !cfg!(feature = "seal-freed-large") {
                let kept = field(out, "kept");
                assert!(kept >= pages - 1, "the freed block was not left resident: {out}");
                assert!(after <= 1, "{after} pages still resident after the delay: {out}");
                let (freed, purged) = (field(out, "freed"), field(out, "purged"));
                assert_eq!(field(out, "held"), freed, "counted until purged: {out}");
                // The 100,000-byte block taken meanwhile counts its slot,
                // at most 128 KiB, in a segment made before.
                assert!(
                    purged + BIG - 128 * 1024 <= freed,
                    "committed bytes did not fall by the block's: {out}"
                );
            }
            assert!(
                out.contains("zero=true"),
                "calloc after the purge not zero: {out}"
            );
        });
}

#[test]
fn calloc_of_reused_blocks_reads_zero() {
    child("reused-calloc")
        .limit(LIMIT)
        .run(|| {
            // Blocks written and freed, then asked again zeroed at once,
            // before any purge: huge and large ones (which no build but the
            // sealing one wipes), and small ones from pages whose free lists
            // now hold written blocks.
            fortalloc::set_purge_delay_ms(60_000);
            for size in [3_000_000, BIG, 200_000, 70_000, 3000, 100, 24] {
                let blocks: Vec<*mut u8> = (0..8).map(|_| fortalloc::malloc(size)).collect();
                for &b in &blocks {
                    fill(b, size, 0xff);
                }
                for &b in &blocks {
                    // SAFETY: each freed once.
                    unsafe { fortalloc::free(b) };
                }
                for _ in 0..8 {
                    let q = fortalloc::zalloc(size);
                    assert!(all_zero(q, size), "calloc({size}) of a reused block not zero");
                }
            }
            println!("all zero");
        })
        .check(|o| {
            assert!(printed(o, "reused-calloc").contains("all zero"));
        });
}

#[test]
fn a_second_free_of_a_large_block_is_reported_in_every_build() {
    child("double-free")
        .limit(LIMIT)
        .run(|| {
            fortalloc::set_error_handler(Some(record));
            // A live neighbour keeps the segment: the second free finds the
            // slot free, not memory fortalloc no longer has.
            let keep = fortalloc::malloc(BIG);
            let p = fortalloc::malloc(BIG);
            // SAFETY: the second free is the violation under test; the
            // handler makes the allocator ignore it.
            unsafe {
                fortalloc::free(p);
                fortalloc::free(p);
                fortalloc::free(keep);
            }
            let seen = SEEN.load(std::sync::atomic::Ordering::SeqCst);
            println!("reported={}", seen == p as usize);
        })
        .check(|o| {
            assert!(printed(o, "double-free").contains("reported=true"));
        });
}

#[test]
#[cfg_attr(not(feature = "double-free"), ignore = "needs --features double-free")]
fn a_second_free_of_a_huge_block_is_reported() {
    child("huge-double-free")
        .limit(LIMIT)
        .run(|| {
            fortalloc::set_error_handler(Some(record));
            // Its segment went back to the arena at the first free, left
            // as it was (or sealed): the stale header still says whose.
            let p = fortalloc::malloc(5 << 20);
            // SAFETY: the second free is the violation under test; the
            // handler makes the allocator ignore it.
            unsafe {
                fortalloc::free(p);
                fortalloc::free(p);
            }
            let seen = SEEN.load(std::sync::atomic::Ordering::SeqCst);
            println!("reported={}", seen == p as usize);
        })
        .check(|o| {
            assert!(printed(o, "huge-double-free").contains("reported=true"));
        });
}

/// The cache of freed large blocks is off in the hardened build (any
/// defence on).
const CACHED: bool = !(cfg!(feature = "guard-pages")
    || cfg!(feature = "encoded-freelist")
    || cfg!(feature = "random-order")
    || cfg!(feature = "double-free")
    || cfg!(feature = "canary")
    || cfg!(feature = "zero-on-free"));

#[test]
fn a_second_free_after_the_cache_gave_the_block_back_is_reported() {
    child("double-free-after-flush")
        .limit(LIMIT)
        .run(|| {
            fortalloc::set_error_handler(Some(record));
            let keep = fortalloc::malloc(BIG);
            let p = fortalloc::malloc(BIG);
            // SAFETY: the second free is the violation under test.
            unsafe {
                fortalloc::free(p);
                // Gives the cached block back to its slot.
                fortalloc::collect(false);
                fortalloc::free(p);
                fortalloc::free(keep);
            }
            let seen = SEEN.load(std::sync::atomic::Ordering::SeqCst);
            println!("reported={}", seen == p as usize);
        })
        .check(|o| {
            assert!(printed(o, "double-free-after-flush").contains("reported=true"));
        });
}

#[test]
fn a_second_free_after_threads_churned_the_class_is_reported() {
    child("double-free-churning")
        .limit(LIMIT)
        .run(|| {
            // Two threads churning one class take its lock against each
            // other, which turns their caches on; the second free of a
            // block that sits in one is reported.
            fortalloc::set_error_handler(Some(record));
            let size = 200_000;
            let keep = fortalloc::malloc(size);
            let churn = move || {
                for _ in 0..20_000 {
                    let a = fortalloc::malloc(size);
                    let b = fortalloc::malloc(size);
                    // SAFETY: each freed once.
                    unsafe {
                        fortalloc::free(a);
                        fortalloc::free(b);
                    }
                }
            };
            let other = std::thread::spawn(churn);
            churn();
            other.join().unwrap();
            let p = fortalloc::malloc(size);
            // SAFETY: the second free is the violation under test.
            unsafe {
                fortalloc::free(p);
                fortalloc::free(p);
                fortalloc::free(keep);
            }
            let seen = SEEN.load(std::sync::atomic::Ordering::SeqCst);
            println!("reported={}", seen == p as usize);
        })
        .check(|o| {
            assert!(printed(o, "double-free-churning").contains("reported=true"));
        });
}

#[test]
fn a_second_free_from_another_thread_is_reported() {
    child("double-free-other-thread")
        .limit(LIMIT)
        .run(|| {
            fortalloc::set_error_handler(Some(record));
            let keep = fortalloc::malloc(BIG);
            let p = fortalloc::malloc(BIG);
            // SAFETY: freed once here; the threads below free it again.
            unsafe { fortalloc::free(p) };
            let mut reported = Vec::new();
            // A thread that allocates no large block frees through the
            // lock; one that does, through its own cache.
            for allocates in [false, true] {
                SEEN.store(0, std::sync::atomic::Ordering::SeqCst);
                let addr = p as usize;
                std::thread::spawn(move || {
                    let own = if allocates {
                        fortalloc::malloc(BIG)
                    } else {
                        std::ptr::null_mut()
                    };
                    // SAFETY: the second free of `addr` is the violation
                    // under test; `own` is freed once.
                    unsafe {
                        fortalloc::free(addr as *mut u8);
                        fortalloc::free(own);
                    }
                })
                .join()
                .unwrap();
                reported.push(SEEN.load(std::sync::atomic::Ordering::SeqCst) == p as usize);
            }
            // SAFETY: freed once.
            unsafe { fortalloc::free(keep) };
            println!("reported={reported:?}");
        })
        .check(|o| {
            let out = printed(o, "double-free-other-thread");
            assert!(out.contains("reported=[true, true]"), "{out}");
        });
}

#[test]
fn a_freed_large_block_is_reused_by_its_thread_and_released_at_its_exit() {
    child("reuse-and-exit")
        .limit(LIMIT)
        .run(|| {
            fortalloc::set_purge_delay_ms(60_000);
            let keep = fortalloc::malloc(BIG);
            // A freed block comes back to the thread that freed it.
            let p = fortalloc::malloc(BIG);
            // SAFETY: freed once.
            unsafe { fortalloc::free(p) };
            let again = fortalloc::malloc(BIG);
            // A block a thread freed is in nobody else's way once the
            // thread is gone: its slot is the resident free one the next
            // malloc takes.
            let addr = std::thread::spawn(|| {
                let q = fortalloc::malloc(BIG);
                // SAFETY: freed once, into this thread's cache.
                unsafe { fortalloc::free(q) };
                q as usize
            })
            .join()
            .unwrap();
            let next = fortalloc::malloc(BIG);
            // SAFETY: each freed once.
            unsafe {
                fortalloc::free(next);
                fortalloc::free(again);
                fortalloc::free(keep);
            }
            println!("reused={} taken_after_exit={}", again == p, next as usize == addr);
        })
        .check(|o| {
            let out = printed(o, "reuse-and-exit");
            if CACHED {
                assert!(out.contains("reused=true taken_after_exit=true"), "{out}");
            }
        });
}

#[test]
fn counters_stay_right_and_collect_releases_cached_blocks() {
    child("counters")
        .limit(LIMIT)
        .run(|| {
            fortalloc::set_purge_delay_ms(60_000);
            // The counts are the process's: the test harness's main thread
            // prints this test's name as it starts, allocating, and under
            // load that can land in the middle of the counting (CI saw 8
            // allocations for 6). Start once the counts stand still.
            let mut before = fortalloc::stats();
            for _ in 0..100 {
                std::thread::sleep(std::time::Duration::from_millis(10));
                let now = fortalloc::stats();
                if (now.allocations, now.frees) == (before.allocations, before.frees) {
                    break;
                }
                before = now;
            }
            // In an array: a `Vec` would count an allocation of its own.
            let mut blocks = [std::ptr::null_mut(); 6];
            for (i, b) in blocks.iter_mut().enumerate() {
                *b = fortalloc::malloc(70_000 + i * 40_000);
            }
            let held = fortalloc::stats();
            for &b in &blocks {
                // SAFETY: each freed once.
                unsafe { fortalloc::free(b) };
            }
            let freed = fortalloc::stats();
            fortalloc::collect(true);
            let collected = fortalloc::stats();
            println!(
                "allocations={} frees={} segments_held={} segments_after={} segments_before={} in_use_after={} in_use_before={}",
                freed.allocations - before.allocations,
                freed.frees - before.frees,
                held.segments.current,
                collected.segments.current,
                before.segments.current,
                collected.bytes_in_use.current,
                before.bytes_in_use.current,
            );
        })
        .check(|o| {
            let out = printed(o, "counters");
            assert_eq!(field(out, "allocations"), 6, "{out}");
            assert_eq!(field(out, "frees"), 6, "{out}");
            assert!(
                field(out, "segments_held") > field(out, "segments_before"),
                "{out}"
            );
            assert_eq!(
                field(out, "segments_after"),
                field(out, "segments_before"),
                "{out}"
            );
            assert_eq!(field(out, "in_use_after"), field(out, "in_use_before"), "{out}");
        });
}

#[test]
fn a_fork_child_uses_the_forking_threads_cache() {
    child("fork")
        .limit(LIMIT)
        .run(|| {
            fortalloc::set_error_handler(Some(record));
            fortalloc::set_purge_delay_ms(60_000);
            let keep = fortalloc::malloc(BIG);
            let p = fortalloc::malloc(BIG);
            fill(p, BIG, 0x5a);
            // SAFETY: freed once, into this thread's cache.
            unsafe { fortalloc::free(p) };
            // SAFETY: the child only uses the allocator and `_exit`s.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                // The child has the forking thread's cache: the block comes
                // back, zeroed by `calloc`, and a second free of it is seen.
                let q = fortalloc::zalloc(BIG);
                let mut code = 0;
                if q != p {
                    code |= 1;
                }
                if !all_zero(q, BIG) {
                    code |= 2;
                }
                // SAFETY: the second free is the violation under test.
                unsafe {
                    fortalloc::free(q);
                    fortalloc::free(q);
                }
                if SEEN.load(std::sync::atomic::Ordering::SeqCst) != q as usize {
                    code |= 4;
                }
                // SAFETY: ends the child without the harness.
                unsafe { libc::_exit(code) };
            }
            let mut status = 0;
            // SAFETY: `pid` is our child; `status` a valid out-pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(r, pid);
            let child = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            };
            // The parent's own cache is untouched by the child's use.
            let q = fortalloc::malloc(BIG);
            // SAFETY: each freed once.
            unsafe {
                fortalloc::free(q);
                fortalloc::free(keep);
            }
            println!("child={child} parent_reused={}", q == p);
        })
        .check(|o| {
            let out = printed(o, "fork");
            if CACHED {
                assert!(out.contains("child=0 parent_reused=true"), "{out}");
            } else {
                // Without a cache the child takes some free slot; it still reads
                // zero from `calloc` and sees the second free.
                let child = field(out, "child");
                assert_eq!(child & !1, 0, "{out}");
            }
        });
}
