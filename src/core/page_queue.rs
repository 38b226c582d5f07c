//! Per-heap queues of pages, one per bin plus one for full pages, and the
//! direct table that the malloc fast path indexes by word size.

use core::ptr;

use crate::core::heap::{Heap, EMPTY_PAGE_PTR, FULL_QUEUE};
use crate::meta::constants::{SMALL_SIZE_MAX, WORD};
use crate::meta::list::{Linked, List};
use crate::meta::page::Page;
use crate::meta::size_class::{bin_of_wsize, BLOCK_SIZE};

/// A queue of pages (linked by `Page::next`/`prev`).
pub type PageQueue = List<Page, InQueue>;

/// The list kind of the page queues.
pub struct InQueue;

// SAFETY: `next` and `prev` are a page's queue links, written only here.
unsafe impl Linked<InQueue> for Page {
    #[inline(always)]
    unsafe fn links(page: *mut Page) -> (*mut *mut Page, *mut *mut Page) {
        // SAFETY: `page` is live (this fn's contract).
        unsafe { (ptr::addr_of_mut!((*page).next), ptr::addr_of_mut!((*page).prev)) }
    }
}

/// Queue index a page sits on.
///
/// # Safety
/// `page` must be valid.
#[inline]
pub unsafe fn queue_index(page: *const Page) -> usize {
    // SAFETY: plain reads of owner fields.
    unsafe {
        if (*page).in_full {
            FULL_QUEUE
        } else {
            (*page).bin as usize
        }
    }
}

/// Points the direct-table entries of `bin` at its queue's first page.
///
/// # Safety
/// `heap` must be the calling thread's heap.
#[inline]
unsafe fn update_direct(heap: *mut Heap, bin: usize) {
    if bin == FULL_QUEUE {
        return;
    }
    let bsize = BLOCK_SIZE[bin];
    if bsize > SMALL_SIZE_MAX {
        return;
    }
    // SAFETY: the heap is ours; word sizes up to bsize/WORD <= SMALL_WSIZE_MAX
    // index the direct table in bounds.
    unsafe {
        let first = (*heap).queues[bin].first;
        let page = if first.is_null() { EMPTY_PAGE_PTR } else { first };
        let start = if bin == 1 {
            1
        } else {
            BLOCK_SIZE[bin - 1] / WORD + 1
        };
        for w in start..=bsize / WORD {
            (*heap).direct[w] = page;
        }
        if bin == bin_of_wsize(0) {
            (*heap).direct[0] = page;
        }
    }
}

/// Puts `page` at the front of queue `qi`.
///
/// # Safety
/// `page` must belong to `heap` and be on no queue.
pub unsafe fn push_front(heap: *mut Heap, qi: usize, page: *mut Page) {
    // SAFETY: queue nodes are pages of this heap.
    unsafe {
        (*heap).queues[qi].push_front(page);
        update_direct(heap, qi);
    }
}

/// Appends `page` to the end of queue `qi`.
///
/// # Safety
/// `page` must belong to `heap` and be on no queue.
pub unsafe fn push_back(heap: *mut Heap, qi: usize, page: *mut Page) {
    // SAFETY: queue nodes are pages of this heap.
    unsafe {
        let q = &mut (*heap).queues[qi];
        let was_empty = q.is_empty();
        q.push_back(page);
        if was_empty {
            update_direct(heap, qi);
        }
    }
}

/// Takes `page` off queue `qi`.
///
/// # Safety
/// `page` must be on queue `qi` of `heap`.
pub unsafe fn remove(heap: *mut Heap, qi: usize, page: *mut Page) {
    // SAFETY: queue nodes are pages of this heap.
    unsafe {
        let q = &mut (*heap).queues[qi];
        let was_first = q.first == page;
        q.remove(page);
        if was_first {
            update_direct(heap, qi);
        }
    }
}

/// Moves `page` to the front of its queue, so the fast path finds it.
///
/// # Safety
/// `page` must be on its queue in `heap`.
pub unsafe fn move_to_front(heap: *mut Heap, page: *mut Page) {
    // SAFETY: `page` is on its queue in `heap` (this fn's contract), so
    // both are live and the unlink/push keep the queue whole.
    unsafe {
        let qi = queue_index(page);
        if (*heap).queues[qi].first == page {
            return;
        }
        remove(heap, qi, page);
        push_front(heap, qi, page);
    }
}
