//! `fork()` that never deadlocks.
//!
//! A child inherits a copy of the parent's memory but only the thread that
//! called `fork`. The usual answer (glibc's, and fortalloc's until issue
//! 12) is a `pthread_atfork` prepare handler that takes every allocator
//! lock, so the child's copy is consistent. That handler runs before libc
//! takes its own locks for `fork` (glibc: the stdio list lock), which
//! orders fortalloc's locks *before* libc's, while ordinary code orders
//! them after: a thread in `getline` holds its `FILE` lock while `realloc`
//! waits for an allocator lock. With a third thread in `fflush(NULL)`
//! (holding the list lock, waiting for that `FILE`) the three wait on each
//! other for ever. And a `fork` from a signal handler that interrupted
//! `malloc` waits in the prepare handler for a lock its own thread holds.
//!
//! So fortalloc holds no lock across `fork` at all: there is no prepare or
//! parent handler, and the parent is never slowed or blocked by one. The
//! child handler repairs what the missing threads left behind. A global
//! lock's word names its owner's thread (see `lock.rs`):
//!
//! - free: the structure is consistent, nothing to do;
//! - held by the forking thread itself (a `fork` from a signal handler
//!   that interrupted the allocator): that code resumes when the handler
//!   returns and finishes its update, so it is left alone;
//! - held by any other thread: that thread does not exist in the child and
//!   may have been half-way through an update. The structure is set aside
//!   (the heap pool and the abandoned list start empty; the arenas there
//!   are retired: what they hold stays valid and is freed, but their free
//!   slices are no longer handed out) and the lock is freed. The child
//!   leaks what was set aside, bounded by what the parent had; most
//!   children `exec` soon.
//!
//! State kept without a lock is made safe the same way: a key or option
//! set-up caught mid-way starts again; pages of the forking thread's heap
//! that a vanished thread had marked "delayed free in progress" get their
//! mark back (the owner would otherwise wait for it for ever); the
//! hardened build's random generators are reseeded, so sibling children
//! do not share their parent's future choices. A thread's cache of freed
//! large blocks needs nothing: only its thread touches it, so the forking
//! thread's is whole (or made whole when an interrupted update resumes)
//! and the vanished threads' leak, as their live blocks do.
//!
//! The handler is registered once per process, at the first heap's
//! creation (so Rust programs get it with no call of their own) or when
//! the C library loads, whichever comes first.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::core::{arena, heap, thread};
use crate::{harden, options, os};

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Registers the child handler, once per process.
pub fn install() {
    if INSTALLED.load(Ordering::Relaxed) || INSTALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    os::at_fork_child(child);
}

/// Runs in the child after every `fork`, on its only thread.
///
/// # Safety
/// Only as the `fork` child handler: on the child's only thread, before
/// anything else in the child runs.
unsafe extern "C" fn child() {
    thread::after_fork();
    arena::after_fork();
    crate::core::large::after_fork();
    options::after_fork();
    harden::after_fork();
    let heap = thread::heap();
    if heap != heap::EMPTY_HEAP_PTR {
        // SAFETY: the calling thread's own initialised heap, and no other
        // thread exists in the child.
        unsafe { heap::after_fork(heap) };
    }
    // The vanished threads' quarantines keep no claim on the process
    // bound: their blocks leak with their heaps.
    // SAFETY: an initialised heap is this thread's, read by it alone.
    harden::Quarantine::after_fork((heap != heap::EMPTY_HEAP_PTR).then(|| unsafe { &(*heap).quarantine }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::lock::{Holder, SpinLock};
    use std::sync::mpsc;

    /// Forks; the child runs `child_body` and exits with its result (0 for
    /// success); the parent waits a bounded time (see the body) and returns the exit code,
    /// or panics if the child hung.
    fn fork_and_wait(child_body: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only calls the allocator and `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = child_body();
            // SAFETY: ends the child without running the parent's atexit
            // handlers or test harness.
            unsafe { libc::_exit(code) };
        }
        for _ in 0..2000 {
            let mut status = 0;
            // SAFETY: `pid` is our child; `status` a valid out-pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                assert!(libc::WIFEXITED(status), "child died: {status:#x}");
                return libc::WEXITSTATUS(status);
            }
            std::thread::sleep(core::time::Duration::from_millis(10));
        }
        // SAFETY: `pid` is our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("the fork child hung");
    }

    /// The handler is installed with the first heap: makes sure there is one.
    fn ensure_handler() {
        // SAFETY: a block just allocated, freed once.
        unsafe { crate::core::alloc::free(crate::core::alloc::malloc(16)) };
    }

    /// Holds `lock` on another thread while `f` runs.
    fn with_lock_held_elsewhere<R>(lock: &'static SpinLock, f: impl FnOnce() -> R) -> R {
        ensure_handler();
        let (held_tx, held_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let _g = lock.lock();
            held_tx.send(()).expect("send");
            let _ = done_rx.recv();
        });
        held_rx.recv().expect("lock taken");
        let r = f();
        done_tx.send(()).expect("send");
        t.join().expect("holder");
        r
    }

    #[test]
    fn a_child_allocates_while_a_vanished_thread_held_the_arena_lock() {
        let code = with_lock_held_elsewhere(&arena::LOCK, || {
            fork_and_wait(|| {
                if arena::LOCK.holder() != Holder::Nobody {
                    return 2;
                }
                // A new segment's worth, from a fresh (unretired) arena.
                let p = crate::core::alloc::malloc(8 << 20);
                let q = crate::core::alloc::malloc(100);
                if p.is_null() || q.is_null() {
                    return 3;
                }
                // SAFETY: both are live blocks of at least their sizes.
                unsafe {
                    p.write_bytes(1, 8 << 20);
                    crate::core::alloc::free(p);
                    crate::core::alloc::free(q);
                }
                0
            })
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn a_child_starts_threads_while_vanished_threads_held_the_pool_and_abandoned_locks() {
        let code = with_lock_held_elsewhere(&thread::POOL_LOCK, || {
            with_lock_held_elsewhere(&thread::ABANDONED_LOCK, || {
                fork_and_wait(|| {
                    // A thread that allocates takes a heap from the pool and,
                    // leaving blocks behind, abandons its segments.
                    let t = std::thread::spawn(|| crate::core::alloc::malloc(48) as usize);
                    let Ok(p) = t.join() else { return 2 };
                    // SAFETY: a live block from the exited thread.
                    unsafe { crate::core::alloc::free(p as *mut u8) };
                    i32::from(thread::POOL_LOCK.holder() != Holder::Nobody)
                })
            })
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn a_lock_the_forking_thread_holds_is_left_to_it() {
        ensure_handler();
        let g = arena::LOCK.lock();
        let code = fork_and_wait(|| {
            // The handler ran before this (as it would inside a signal
            // handler that interrupted the holder); it must have left the
            // lock, and the arenas, to their holder.
            let retired = arena::retired_count();
            i32::from(arena::LOCK.holder() != Holder::Me || retired != 0)
        });
        drop(g);
        assert_eq!(code, 0);
    }

    #[test]
    fn a_child_draws_from_a_new_seed() {
        ensure_handler();
        let _ = harden::shared_next();
        let before = harden::shared_state();
        let code = fork_and_wait(|| {
            // Without a reseed the state is the parent's, moved on by at
            // most the draws other test threads made meanwhile.
            let now = harden::shared_state();
            i32::from(harden::draws_between(before, now, 100_000).is_none())
        });
        // The hardened build reseeds; the plain one has no secrets to
        // protect and leaves the state as it was.
        assert_eq!(code, i32::from(harden::HARDENED));
    }
}
