//! `Block`: one raw heap allocation, malloc-style (uninitialised, aligned as `malloc` would),
//! that carries a tag stamped into its first and last bytes and checks it back before it is freed.
//!
//! The workloads that imitate C allocator benchmarks use it instead of `Box<[u8]>` so that no
//! zeroing (`alloc_zeroed`) blurs the allocator's own cost, and so that a block handed out twice,
//! or written over by a neighbour, is caught: `Drop` verifies the stamp and exits the worker
//! process (code 3) on a mismatch.
//!
//! Only bytes this type wrote are ever read: the stamp (the first `min(size, 8)` bytes and the
//! last), bytes written by `poke` into the stamp, and the page bytes `touch` wrote.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;

use crate::verify::corrupt;

/// The largest alignment a `Block` asks for: what `malloc` guarantees on 64-bit Linux.
pub const MAX_ALIGN: usize = 16;

/// The bytes at the start of a block that hold its tag.
const HEAD: usize = 8;

/// An owned, uninitialised heap allocation of `size` bytes with a tag stamped into it.
pub struct Block {
    ptr: NonNull<u8>,
    size: usize,
    tag: u64,
    /// The step `touch` wrote one byte per, 0 if it never ran.
    touched_step: usize,
}

// SAFETY: a `Block` uniquely owns its allocation (like `Box<[u8]>`), and the global allocator is
// thread-safe, so moving it to another thread and freeing it there is sound.
unsafe impl Send for Block {}

impl Block {
    /// Allocates `size` bytes (at least 1) and stamps `tag` into them.
    pub fn new(size: usize, tag: u64) -> Block {
        let layout = layout_for(size);
        // SAFETY: `layout` has a non-zero size (`layout_for` rounds 0 up to 1).
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        let mut block = Block {
            ptr,
            size: layout.size(),
            tag,
            touched_step: 0,
        };
        let head = tag.to_le_bytes();
        for (i, &byte) in head.iter().enumerate().take(block.head_len()) {
            block.write(i, byte);
        }
        if block.size > HEAD {
            block.write(block.size - 1, tail_byte(tag));
        }
        block
    }

    /// The size asked for (at least 1).
    pub fn size(&self) -> usize {
        self.size
    }

    /// The tag stamped into the block.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// Writes `value` at byte `index` of the stamp's head (`index < min(size, 8)`); volatile, so
    /// repeated writes are not merged away. The stamp check expects the tag's bytes back there.
    pub fn poke(&mut self, index: usize, value: u8) {
        assert!(index < self.head_len(), "poke outside the stamp's head");
        self.write(index, value);
    }

    /// Reads byte `index` of the stamp's head (`index < min(size, 8)`), volatile.
    pub fn peek(&self, index: usize) -> u8 {
        assert!(index < self.head_len(), "peek outside the stamp's head");
        self.read(index)
    }

    /// Writes one byte per `step` bytes between the stamp's head and its last byte (a page
    /// toucher for big blocks), each a function of the tag and the offset.
    pub fn touch(&mut self, step: usize) {
        self.touched_step = step.max(1);
        for offset in self.touched_offsets() {
            self.write(offset, touch_byte(self.tag, offset));
        }
    }

    /// Verifies the bytes the last `touch` wrote; calls `corrupt` on a mismatch.
    pub fn check_touched(&self, what: &str) {
        for offset in self.touched_offsets() {
            if self.read(offset) != touch_byte(self.tag, offset) {
                corrupt(what, self.tag);
            }
        }
    }

    /// Checks the stamp; calls `corrupt` (which exits the process) on a mismatch.
    pub fn check(&self, what: &str) {
        let head = self.tag.to_le_bytes();
        for (i, &expected) in head.iter().enumerate().take(self.head_len()) {
            if self.read(i) != expected {
                corrupt(what, self.tag);
            }
        }
        if self.size > HEAD && self.read(self.size - 1) != tail_byte(self.tag) {
            corrupt(what, self.tag);
        }
    }

    fn head_len(&self) -> usize {
        self.size.min(HEAD)
    }

    /// The offsets `touch` writes: none until it ran.
    fn touched_offsets(&self) -> impl Iterator<Item = usize> {
        let end = if self.touched_step == 0 { 0 } else { self.size - 1 };
        (HEAD..end).step_by(self.touched_step.max(1))
    }

    fn write(&mut self, index: usize, value: u8) {
        assert!(index < self.size);
        // SAFETY: `index < size`, so the byte lies inside our live allocation, which we own
        // exclusively through `&mut self`.
        unsafe { self.ptr.as_ptr().add(index).write_volatile(value) }
    }

    /// Reads a byte this type wrote before (see the module's doc: callers only pass stamp or
    /// touched offsets).
    fn read(&self, index: usize) -> u8 {
        assert!(index < self.size);
        // Every caller passes an offset `new` (stamp), `poke` (stamp head) or `touch` (touched
        // offsets, recorded by `touched_step`) has written.
        // SAFETY: `index < size`: the byte lies inside our live allocation, and is initialised.
        unsafe { self.ptr.as_ptr().add(index).read_volatile() }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.check("block stamp at free");
        // SAFETY: `ptr` came from `alloc` with exactly this layout and is freed only here, once.
        unsafe { dealloc(self.ptr.as_ptr(), layout_for(self.size)) }
    }
}

/// `size` (at least 1) with the largest power-of-two alignment up to `MAX_ALIGN` that does not
/// exceed it, as Rust types' layouts have: an alignment above the size would send `System` to
/// `posix_memalign` instead of `malloc`.
fn layout_for(size: usize) -> Layout {
    let size = size.max(1);
    let align = MAX_ALIGN.min(1 << size.ilog2());
    match Layout::from_size_align(size, align) {
        Ok(layout) => layout,
        Err(_) => panic!("block size {size} too large"),
    }
}

fn tail_byte(tag: u64) -> u8 {
    (tag as u8) ^ 0xA5
}

fn touch_byte(tag: u64, offset: usize) -> u8 {
    (tag as u8).wrapping_add((offset >> 12) as u8) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_survive_and_touch_checks() {
        for size in [0, 1, 7, 8, 9, 100, 5000, 70_000] {
            let mut b = Block::new(size, 0x1234_5678_9abc_def0 ^ size as u64);
            b.check("test");
            b.check_touched("test");
            b.touch(4096);
            b.check_touched("test");
            b.check("test");
            assert!(b.size() >= size);
        }
    }

    #[test]
    fn poke_and_peek_the_head() {
        let mut b = Block::new(8, 0x0102_0304_0506_0708);
        assert_eq!(b.peek(0), 0x08);
        b.poke(0, 0x08);
        assert_eq!(b.peek(0), 0x08);
    }

    #[test]
    fn layouts_are_malloc_like() {
        assert_eq!(layout_for(0).align(), 1);
        assert_eq!(layout_for(12).align(), 8);
        assert_eq!(layout_for(100).align(), 16);
    }

    #[test]
    fn blocks_move_between_threads() {
        let blocks: Vec<Block> = (0..100).map(|i| Block::new(16 + i, i as u64)).collect();
        std::thread::spawn(move || drop(blocks)).join().unwrap();
    }
}
