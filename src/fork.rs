//! `fork()` support. A child inherits a copy of memory but only the forking
//! thread; a global lock held by another thread at that instant would stay
//! locked in the child for ever. The C library registers these three with
//! `pthread_atfork` so the forking thread holds every global lock across the
//! fork, and both sides release them after.
//!
//! Lock order (also the order every other path nests them in, if at all):
//! heap pool, abandoned list, arenas.

use crate::{arena, thread};

/// Before `fork`: takes every global lock.
pub fn fork_prepare() {
    thread::POOL_LOCK.acquire();
    thread::ABANDONED_LOCK.acquire();
    arena::LOCK.acquire();
}

/// After `fork`, in the parent: releases what [`fork_prepare`] took.
pub fn fork_parent() {
    arena::LOCK.release();
    thread::ABANDONED_LOCK.release();
    thread::POOL_LOCK.release();
}

/// After `fork`, in the child: releases what [`fork_prepare`] took. The
/// other threads' heaps stay as they were: their segments keep their owner
/// and their live blocks; freeing such a block in the child takes the remote
/// path, which needs no lock.
pub fn fork_child() {
    fork_parent();
}
