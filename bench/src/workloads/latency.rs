//! `latency`: the C workload `c/latency.c` in Rust. One thread keeps 50,000 blocks live and
//! replaces a random one per step (90% 16..512 B, 9% 512 B..32 KiB, 1% 32 KiB..4 MiB; in a band
//! each power-of-two octave equally likely, the size uniform inside it; the same xorshift and
//! seed as the C program, so the same sizes), timing every `dealloc` and every `alloc` alone
//! into arrays written before the first timed call. Its percentiles go to the worker's output
//! (`crate::latency`); the checksum is the sum of the sizes.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};

use super::scaled;
use crate::latency::{elapsed, percentiles, set_report, Clock, Latency};
use crate::verify::corrupt;

pub const ABOUT: &str = "50K live blocks 16 B..4 MiB, each alloc and free timed: percentiles";

const LIVE: usize = 50_000;
const STEPS: usize = 2_000_000;

/// The C workloads' xorshift64 (`rnd` in c/common.h).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A size in `2^lo .. 2^hi`: an octave picked uniformly, then a size uniform inside it.
    fn octaves(&mut self, lo: u32, hi: u32) -> usize {
        let e = lo + (self.next() % u64::from(hi - lo)) as u32;
        (1usize << e) + (self.next() % (1u64 << e)) as usize
    }

    fn size(&mut self) -> usize {
        match self.next() % 100 {
            0..=89 => self.octaves(4, 9),
            90..=98 => self.octaves(9, 15),
            _ => self.octaves(15, 22),
        }
    }
}

/// A live block: malloc-like (uninitialised, 16-aligned), its first and last bytes written.
struct Slot {
    ptr: *mut u8,
    size: usize,
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 16).unwrap_or_else(|_| panic!("block size {size}"))
}

fn first(size: usize) -> u8 {
    size as u8
}

fn last(size: usize) -> u8 {
    ((size >> 3) as u8) ^ 0x5a
}

impl Slot {
    /// Writes the block's first and last bytes.
    fn stamp(ptr: *mut u8, size: usize) -> Slot {
        if ptr.is_null() {
            handle_alloc_error(layout(size));
        }
        // SAFETY: `ptr` is a live allocation of `size` (at least 16) bytes that we own.
        unsafe {
            ptr.write_volatile(first(size));
            ptr.add(size - 1).write_volatile(last(size));
        }
        Slot { ptr, size }
    }

    /// Checks the bytes `stamp` wrote; exits the worker on a mismatch.
    fn check(&self) {
        // SAFETY: both bytes lie in our live allocation and were written by `stamp`.
        let (a, b) = unsafe {
            (
                self.ptr.read_volatile(),
                self.ptr.add(self.size - 1).read_volatile(),
            )
        };
        if a != first(self.size) || b != last(self.size) {
            corrupt("latency block", self.size as u64);
        }
    }
}

pub fn run(scale: f64) -> u64 {
    let steps = scaled(STEPS, scale);
    // Written now (not zeroed, which could leave them untouched), so no page fault lands in a
    // timed call.
    let mut t_alloc = vec![u32::MAX; steps];
    let mut t_free = vec![u32::MAX; steps];
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut live: Vec<Slot> = (0..LIVE)
        .map(|_| {
            let size = rng.size();
            // SAFETY: `layout(size)` has a non-zero size.
            Slot::stamp(unsafe { alloc(layout(size)) }, size)
        })
        .collect();
    let mut sum = 0u64;
    let clock = Clock::start();
    for i in 0..steps {
        let k = (rng.next() % LIVE as u64) as usize;
        let size = rng.size();
        let old = &live[k];
        old.check();
        let a = Clock::ticks();
        // SAFETY: `old.ptr` came from `alloc` with this layout and is freed once: the slot is
        // overwritten below.
        unsafe { dealloc(old.ptr, layout(old.size)) };
        let b = Clock::ticks();
        // SAFETY: `layout(size)` has a non-zero size.
        let ptr = unsafe { alloc(layout(size)) };
        let c = Clock::ticks();
        t_free[i] = elapsed(a, b);
        t_alloc[i] = elapsed(b, c);
        live[k] = Slot::stamp(ptr, size);
        sum = sum.wrapping_add(size as u64);
    }
    let ns_per_tick = clock.ns_per_tick();
    let timer = f64::from(Clock::floor_ticks()) * ns_per_tick;
    for slot in live.drain(..) {
        slot.check();
        // SAFETY: allocated with this layout, freed once here.
        unsafe { dealloc(slot.ptr, layout(slot.size)) };
    }
    set_report(Latency {
        malloc: percentiles(&mut t_alloc, ns_per_tick),
        free: percentiles(&mut t_free, ns_per_tick),
        timer_ns: timer,
    });
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fall_in_their_bands_in_proportion() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut bands = [0usize; 3];
        for _ in 0..100_000 {
            let s = rng.size();
            assert!((16..4 << 20).contains(&s), "{s}");
            bands[match s {
                0..512 => 0,
                512..32768 => 1,
                _ => 2,
            }] += 1;
        }
        // 90/9/1 per cent, give or take sampling noise.
        assert!((89_000..91_000).contains(&bands[0]), "{bands:?}");
        assert!((8_500..9_500).contains(&bands[1]), "{bands:?}");
        assert!((800..1_200).contains(&bands[2]), "{bands:?}");
    }

    #[test]
    fn leaves_a_report() {
        assert!(run(0.001) > 0);
        let report = crate::latency::take_report().expect("a report");
        assert!(report.malloc.windows(2).all(|w| w[0] <= w[1]), "{report:?}");
        assert!(report.free[4] > 0.0, "{report:?}");
    }
}
