//! The allocators the harness knows: each one worker binary built with one `alloc-*` feature.

/// One allocator: its name on the command line and in the table, and the Cargo feature of
/// `fortalloc-bench` that makes it the worker's global allocator.
#[derive(Debug, PartialEq, Eq)]
pub struct Allocator {
    pub name: &'static str,
    pub feature: &'static str,
    pub about: &'static str,
}

/// The reference for the ratios in the table's cells: mimalloc 2.x, the faster mimalloc on this
/// machine. `mimalloc-v3` ratios are printed as extra rows.
pub const REFERENCE: &str = "mimalloc-v2";
/// The other mimalloc, also compared against in the summary rows.
pub const SECOND_REFERENCE: &str = "mimalloc-v3";

/// Every allocator, in table column order.
pub static ALL: &[Allocator] = &[
    Allocator {
        name: "fortalloc",
        feature: "alloc-fortalloc",
        about: "this crate",
    },
    Allocator {
        name: "fortalloc-secure",
        feature: "alloc-fortalloc-secure",
        about: "this crate, feature secure (the recommended hardened preset)",
    },
    Allocator {
        name: "fortalloc-secure-max",
        feature: "alloc-fortalloc-secure-max",
        about: "this crate, feature secure-max (every hardening defence)",
    },
    Allocator {
        name: "system",
        feature: "alloc-system",
        about: "std::alloc::System (glibc malloc)",
    },
    Allocator {
        name: "mimalloc-v2",
        feature: "alloc-mimalloc-v2",
        about: "mimalloc crate, feature v2 (mimalloc 2.x)",
    },
    Allocator {
        name: "mimalloc-v3",
        feature: "alloc-mimalloc",
        about: "mimalloc crate, default features (mimalloc 3.x)",
    },
    Allocator {
        name: "mimalloc-secure",
        feature: "alloc-mimalloc-secure",
        about: "mimalloc crate, features v2 + secure",
    },
    Allocator {
        name: "jemalloc",
        feature: "alloc-jemalloc",
        about: "tikv-jemallocator",
    },
    Allocator {
        name: "snmalloc",
        feature: "alloc-snmalloc",
        about: "snmalloc-rs, built with the cc crate",
    },
];

/// The allocator called `name`.
pub fn find(name: &str) -> Option<&'static Allocator> {
    ALL.iter().find(|a| a.name == name)
}
