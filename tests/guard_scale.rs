//! The hardened build at heap sizes where one `mprotect` guard per page
//! would exhaust `vm.max_map_count`: with page-table guard markers every
//! guard is in place and the process keeps a handful of mappings; with the
//! `mprotect` fallback (forced) guards are thinned within the mapping
//! budget, and neither fortalloc's allocations nor the program's own
//! `mmap` ever fail because of them. Each case runs in a child process
//! (`common::child`), so its heap is its own.
//!
//! Presets: `secure` and `secure-max`.

mod common;

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

/// Lines of /proc/self/maps, counted without allocating much.
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("maps")
        .lines()
        .count()
}

/// Holds `bytes` of live 1 KiB blocks (each written whole), frees every
/// other one and refills the holes, then maps 1 MiB for the program and
/// prints what it saw.
fn fill(bytes: usize) {
    const BLOCK: usize = 1024;
    let n = bytes / BLOCK;
    let mut blocks: Vec<*mut u8> = Vec::with_capacity(n);
    for i in 0..n {
        let p = fortalloc::malloc(BLOCK);
        assert!(!p.is_null(), "malloc failed after {i} blocks");
        // SAFETY: a fresh block of BLOCK bytes.
        unsafe { p.write_bytes(i as u8, BLOCK) };
        blocks.push(p);
    }
    for p in blocks.iter().step_by(2) {
        // SAFETY: each block is live and freed once.
        unsafe { fortalloc::free(*p) };
    }
    for (i, p) in blocks.iter_mut().enumerate().step_by(2) {
        *p = fortalloc::malloc(BLOCK);
        assert!(!p.is_null(), "refill failed at {i}");
        // SAFETY: as above.
        unsafe { p.write_bytes(1, BLOCK) };
    }
    // SAFETY: an anonymous mapping of our own, unmapped right after.
    let program_map = unsafe {
        let m = libc::mmap(
            std::ptr::null_mut(),
            1 << 20,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        let ok = m != libc::MAP_FAILED;
        if ok {
            libc::munmap(m, 1 << 20);
        }
        ok
    };
    let s = fortalloc::stats();
    println!(
        "held={} mappings={} program_mmap={} markers={} mprotect={} skipped={}",
        n,
        mappings(),
        program_map,
        s.guard_markers,
        s.guard_protects,
        s.guards_skipped
    );
}

/// Runs `fill` of `gib` GiB as `case` in a child with `env`, which must
/// exit 0, and `check`s its report line's numbers, looked up by name.
#[track_caller]
fn run(case: &str, gib: f64, env: &[(&str, &str)], check: impl FnOnce(&dyn Fn(&str) -> u64)) {
    common::child(case)
        .envs(env)
        .run(|| fill((gib * (1u64 << 30) as f64) as usize))
        .check(|out| {
            out.assert_success(&format!("{gib} GiB {env:?}"));
            // The harness may print its own words before the report on its
            // line.
            let line = out
                .stdout
                .lines()
                .find_map(|l| l.find("held=").map(|at| l[at..].to_string()))
                .unwrap_or_else(|| panic!("no report: {}", out.stdout));
            check(&|key: &str| {
                let v = line
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                    .unwrap_or_else(|| panic!("{key} in {line}"));
                match v {
                    "true" => 1,
                    "false" => 0,
                    v => v.parse().unwrap_or_else(|_| panic!("{key} in {line}")),
                }
            })
        });
}

/// More live small blocks than one `mprotect` per page guard could ever
/// hold (each 64 KiB page has a guard: 3 GiB is about 50,000 of them, and
/// two mappings each would pass the default limit of 65,530).
#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn three_gib_of_small_blocks_with_every_guard_and_few_mappings() {
    run("3 GiB", 3.0, &[("FORTALLOC_GUARDS", "auto")], |r| {
        assert_eq!(r("program_mmap"), 1);
        if common::kernel_has_guard_markers() {
            assert!(r("markers") > 45_000, "markers {}", r("markers"));
            assert_eq!(r("skipped"), 0);
            assert!(r("mappings") < 1000, "mappings {}", r("mappings"));
        } else {
            // The fallback: thinned within the budget, never failing.
            assert!(r("mappings") < 40_000, "mappings {}", r("mappings"));
        }
    });
}

/// The fallback forced, with a budget of 1,500 mappings: 512 MiB of small
/// blocks want about 8,000 guards; the rest are skipped and counted, and
/// the program can still map memory.
#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn the_mprotect_fallback_thins_guards_within_its_budget() {
    run(
        "0.5 GiB",
        0.5,
        &[("FORTALLOC_GUARDS", "mprotect"), ("FORTALLOC_MAP_BUDGET", "1500")],
        |r| {
            assert_eq!(r("program_mmap"), 1);
            assert_eq!(r("markers"), 0);
            assert!(r("mprotect") > 100, "mprotect {}", r("mprotect"));
            assert!(r("skipped") > 1000, "skipped {}", r("skipped"));
            assert!(r("mappings") <= 1600, "mappings {}", r("mappings"));
        },
    );
}
