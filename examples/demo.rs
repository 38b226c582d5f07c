//! fortalloc doing its job: a program whose global allocator is fortalloc
//! allocates from several threads, frees across threads, and gives memory
//! back to the OS afterwards (resident set size read from /proc).

use std::time::Instant;

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    pages * page / (1024.0 * 1024.0)
}

fn main() {
    println!("fortalloc demo");
    println!("  start:                         RSS {:7.1} MiB", rss_mib());

    // 1. Small objects: a tight allocate/free loop.
    let t = Instant::now();
    let mut live: Vec<Box<[u8]>> = Vec::with_capacity(1000);
    for i in 0..5_000_000usize {
        let b = vec![i as u8; 16 + i % 240].into_boxed_slice();
        if live.len() == 1000 {
            live.swap_remove(i % 1000);
        }
        live.push(b);
    }
    drop(live);
    println!(
        "  5M small allocations:          {:7.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    // 2. Objects allocated on one thread and freed on another.
    let t = Instant::now();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u64>>(1024);
    let consumer = std::thread::spawn(move || rx.iter().map(|v| v.len()).sum::<usize>());
    for i in 0..1_000_000usize {
        tx.send(vec![i as u64; 1 + i % 31]).unwrap();
    }
    drop(tx);
    let total = consumer.join().unwrap();
    println!(
        "  1M cross-thread frees:         {:7.1} ms ({total} u64 values received)",
        t.elapsed().as_secs_f64() * 1e3
    );

    // 3. A burst of 512 MiB, then memory goes back to the OS.
    let mut burst: Vec<Vec<u8>> = (0..8192).map(|i| vec![i as u8; 64 * 1024]).collect();
    println!("  512 MiB burst allocated:       RSS {:7.1} MiB", rss_mib());
    for (i, b) in burst.iter().enumerate() {
        assert!(b.iter().all(|&x| x == i as u8), "contents survived");
        // SAFETY: `b` is a live allocation made through the global allocator.
        assert!(unsafe { fortalloc::usable_size(b.as_ptr()) } >= b.len());
    }
    burst.clear();
    burst.shrink_to_fit();
    std::thread::sleep(std::time::Duration::from_millis(50));
    for i in 0..200_000usize {
        std::hint::black_box(vec![0u8; i % 512]);
    }
    println!("  freed, after the purge delay:  RSS {:7.1} MiB", rss_mib());
    fortalloc::collect(true);
    println!("  after collect(true):           RSS {:7.1} MiB", rss_mib());
}
