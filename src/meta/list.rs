//! One intrusive doubly linked list, for the heap's page queues and its
//! two lists of segments: the nodes carry their own links, so nothing is
//! allocated, and a node (a segment) can be on lists of several kinds at
//! once, one pair of link fields per kind.

use core::marker::PhantomData;
use core::ptr;

/// A node type with a pair of link fields for lists of kind `K` (a marker
/// type naming which list).
///
/// # Safety
/// `links` must return pointers to two distinct fields of `*node` that no
/// code other than lists of kind `K` writes.
pub unsafe trait Linked<K> {
    /// Pointers to the node's `next` and `prev` fields for lists of kind `K`.
    ///
    /// # Safety
    /// `node` must point to a live node.
    unsafe fn links(node: *mut Self) -> (*mut *mut Self, *mut *mut Self);
}

/// A list's two ends (null when empty).
pub struct List<T, K> {
    pub first: *mut T,
    pub last: *mut T,
    kind: PhantomData<K>,
}

impl<T, K> Clone for List<T, K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T, K> Copy for List<T, K> {}

impl<T: Linked<K>, K> List<T, K> {
    pub const fn new() -> Self {
        List {
            first: ptr::null_mut(),
            last: ptr::null_mut(),
            kind: PhantomData,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_null()
    }

    /// Puts `node` first.
    ///
    /// # Safety
    /// `node` must be live and on no list of kind `K`; every node on this
    /// list live.
    pub unsafe fn push_front(&mut self, node: *mut T) {
        // SAFETY: `node` and the first node are live per the caller.
        unsafe {
            let (next, prev) = T::links(node);
            *prev = ptr::null_mut();
            *next = self.first;
            if self.first.is_null() {
                self.last = node;
            } else {
                *T::links(self.first).1 = node;
            }
        }
        self.first = node;
    }

    /// Puts `node` last.
    ///
    /// # Safety
    /// As for [`List::push_front`].
    pub unsafe fn push_back(&mut self, node: *mut T) {
        // SAFETY: `node` and the last node are live per the caller.
        unsafe {
            let (next, prev) = T::links(node);
            *next = ptr::null_mut();
            *prev = self.last;
            if self.last.is_null() {
                self.first = node;
            } else {
                *T::links(self.last).0 = node;
            }
        }
        self.last = node;
    }

    /// Takes `node` off the list; its links are left null.
    ///
    /// # Safety
    /// `node` must be on this list, every node on it live.
    pub unsafe fn remove(&mut self, node: *mut T) {
        // SAFETY: `node` and its neighbours are live nodes of this list.
        unsafe {
            let (next, prev) = T::links(node);
            if (*prev).is_null() {
                self.first = *next;
            } else {
                *T::links(*prev).0 = *next;
            }
            if (*next).is_null() {
                self.last = *prev;
            } else {
                *T::links(*next).1 = *prev;
            }
            *next = ptr::null_mut();
            *prev = ptr::null_mut();
        }
    }

    /// The node after `node` (null after the last).
    ///
    /// # Safety
    /// `node` must be a live node of a list of kind `K`.
    pub unsafe fn next(node: *mut T) -> *mut T {
        // SAFETY: `node` is a live node of a list of kind `K` (this fn's
        // contract), so its links are readable.
        unsafe { *T::links(node).0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    struct Two;
    struct N {
        next: *mut N,
        prev: *mut N,
        v: u32,
    }
    // SAFETY: the two fields are N's own and used only by lists.
    unsafe impl Linked<Two> for N {
        unsafe fn links(n: *mut N) -> (*mut *mut N, *mut *mut N) {
            // SAFETY: `n` is live (this fn's contract).
            unsafe { (ptr::addr_of_mut!((*n).next), ptr::addr_of_mut!((*n).prev)) }
        }
    }

    fn values(l: &List<N, Two>) -> Vec<u32> {
        let mut out = Vec::new();
        let mut n = l.first;
        while !n.is_null() {
            // SAFETY: nodes of the test's list are live.
            unsafe {
                out.push((*n).v);
                n = List::<N, Two>::next(n);
            }
        }
        out
    }

    #[test]
    fn pushes_and_removes_keep_both_ends_and_links_right() {
        let mut nodes: Vec<N> = (0..4)
            .map(|v| N {
                next: ptr::null_mut(),
                prev: ptr::null_mut(),
                v,
            })
            .collect();
        let p: Vec<*mut N> = nodes.iter_mut().map(|n| n as *mut N).collect();
        let mut l = List::<N, Two>::new();
        // SAFETY: the nodes live in `nodes` for the whole test.
        unsafe {
            l.push_back(p[1]);
            l.push_front(p[0]);
            l.push_back(p[2]);
            l.push_back(p[3]);
            assert_eq!(values(&l), [0, 1, 2, 3]);
            l.remove(p[0]);
            assert_eq!((values(&l), l.first, l.last), (std::vec![1, 2, 3], p[1], p[3]));
            l.remove(p[3]);
            l.remove(p[2]);
            assert_eq!((values(&l), l.first, l.last), (std::vec![1], p[1], p[1]));
            assert!((*p[2]).next.is_null() && (*p[2]).prev.is_null());
            l.remove(p[1]);
        }
        assert!(l.is_empty() && l.last.is_null());
    }
}
