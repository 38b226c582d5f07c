//! The allocator: thread-local heaps and their page queues, pages carved
//! into blocks, segments that hold the pages, the arenas segments come
//! from, large and huge blocks, and the thread code that creates heaps,
//! abandons them at exit and reclaims what they left. These call each
//! other, as mimalloc's files do behind one internal header; below them
//! are `meta` (types and layout), `harden` (the defences' hooks) and `os`.
//!
//! A malloc goes `alloc` -> the thread's `heap` (its direct table, then
//! its `page_queue` for the size class) -> a `page`'s free list; when the
//! page runs dry the heap asks `segment` for a fresh page, and `segment`
//! asks `arena` for memory. A free finds the block's segment and page by
//! address arithmetic (`meta::segment`) and pushes the block on that
//! page's list (its own thread's or, from another thread, the atomic one).

pub mod alloc;
pub mod arena;
pub mod fork;
pub mod heap;
pub mod huge;
pub mod init;
pub mod large;
pub mod page;
pub mod page_queue;
pub mod segment;
pub mod thread;
