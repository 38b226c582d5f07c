//! How many kernel mappings a heap needs: allocates about 1 GiB in blocks of
//! one size and prints the count of lines in /proc/self/maps. With
//! `--features secure` every guard page splits a mapping, which is what
//! SECURITY.md's numbers against `vm.max_map_count` come from.
//!
//! cargo run --release --example mapcount --features secure -- 64

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count())
}

fn main() {
    let size: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let total: usize = 1 << 30;
    let before = maps();
    let count = total / size;
    let mut blocks: Vec<*mut u8> = Vec::with_capacity(count);
    for _ in 0..count {
        let p = fortalloc::malloc(size);
        assert!(!p.is_null());
        blocks.push(p);
    }
    let after = maps();
    println!(
        "{count} blocks of {size} B (1 GiB): {} mappings before, {after} after: {} per GiB",
        before,
        after - before
    );
    for p in blocks {
        // SAFETY: each block came from fortalloc::malloc and is freed once.
        unsafe { fortalloc::free(p) };
    }
}
