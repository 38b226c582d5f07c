//! Thread exit abandons segments that still hold live blocks; other threads
//! free into them and reclaim them, so their memory is not stranded.
//! One test per binary: RSS is process-wide.

use std::time::Duration;

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .expect("rss")
        .parse()
        .expect("number");
    // SAFETY: sysconf has no memory-safety preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

#[test]
fn blocks_outliving_their_thread_are_freed_and_their_memory_returned() {
    fortalloc::collect(true);
    let start = rss_bytes();

    // Each thread leaves ~64 MiB of blocks of mixed size classes behind.
    let mut survivors: Vec<(usize, usize)> = Vec::new();
    for t in 0..4usize {
        let blocks = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut total = 0;
            let mut i = 0usize;
            while total < 64 << 20 {
                let size = match i % 10 {
                    0..=6 => 16 + (i * 37) % 1000,
                    7 | 8 => 2000 + (i * 101) % 60_000,
                    _ => 100_000 + (i * 7919) % 900_000,
                };
                let p = fortalloc::malloc(size);
                assert!(!p.is_null());
                // SAFETY: `p` is a fresh block of `size` bytes.
                unsafe { std::ptr::write_bytes(p, (t * 31 + i) as u8, size) };
                out.push((p as usize, size));
                total += size;
                i += 1;
            }
            out
        })
        .join()
        .expect("thread");
        survivors.extend(blocks);
    }
    let high = rss_bytes();
    assert!(
        high > start + (200 << 20),
        "the blocks were really touched: {start} -> {high}"
    );

    // Free from this thread, interleaved with allocations that make it
    // reclaim abandoned segments; contents must have survived untouched.
    for (n, &(p, size)) in survivors.iter().enumerate() {
        // SAFETY: every pointer is a live block of `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, size) };
        let first = bytes[0];
        assert!(bytes.iter().all(|&b| b == first), "block {n} corrupted");
        // SAFETY: freed exactly once.
        unsafe { fortalloc::free(p as *mut u8) };
        if n % 1000 == 0 {
            std::hint::black_box(fortalloc::malloc(100 + n % 5000));
        }
    }
    fortalloc::collect(true);
    std::thread::sleep(Duration::from_millis(30));
    fortalloc::collect(true);
    let end = rss_bytes();
    assert!(
        end < start + (24 << 20),
        "memory of exited threads went back to the OS: start {start}, high {high}, end {end}"
    );
}
