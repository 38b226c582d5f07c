//! The workloads: each a function of a scale factor (1.0 = the default size) that runs to
//! completion, checks its own results (exiting the process on corruption, see `verify`) and
//! returns a checksum for the worker to `black_box`.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

mod big_blocks;
mod cache_scratch;
mod larson;
mod latency;
mod mixed_churn;
mod prodcons;
mod realloc_vec;
mod rust_service;
mod rust_shaped;
mod skewed;
mod skewed_mass;
mod small;
mod strings;

/// One named workload.
pub struct Workload {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(f64) -> u64,
}

/// Every workload, in the order the report lists them.
pub static ALL: &[Workload] = &[
    Workload {
        name: "larson",
        about: larson::ABOUT,
        run: larson::run,
    },
    Workload {
        name: "prodcons",
        about: prodcons::ABOUT,
        run: prodcons::run,
    },
    Workload {
        name: "cache-scratch",
        about: cache_scratch::ABOUT,
        run: cache_scratch::run,
    },
    Workload {
        name: "mixed-churn",
        about: mixed_churn::ABOUT,
        run: mixed_churn::run,
    },
    Workload {
        name: "skewed",
        about: skewed::ABOUT,
        run: skewed::run,
    },
    Workload {
        name: "skewed-mass",
        about: skewed_mass::ABOUT,
        run: skewed_mass::run,
    },
    Workload {
        name: "small-1t",
        about: small::ABOUT_1T,
        run: small::run_1t,
    },
    Workload {
        name: "small-nt",
        about: small::ABOUT_NT,
        run: small::run_nt,
    },
    Workload {
        name: "realloc-vec",
        about: realloc_vec::ABOUT,
        run: realloc_vec::run,
    },
    Workload {
        name: "big-blocks",
        about: big_blocks::ABOUT,
        run: big_blocks::run,
    },
    Workload {
        name: "strings",
        about: strings::ABOUT,
        run: strings::run,
    },
    Workload {
        name: "rust-shaped",
        about: rust_shaped::ABOUT,
        run: rust_shaped::run,
    },
    Workload {
        name: "rust-service",
        about: rust_service::ABOUT,
        run: rust_service::run,
    },
    Workload {
        name: "latency",
        about: latency::ABOUT,
        run: latency::run,
    },
];

/// The workload called `name`.
pub fn find(name: &str) -> Option<&'static Workload> {
    ALL.iter().find(|w| w.name == name)
}

/// `base` times `scale`, at least 1.
pub fn scaled(base: usize, scale: f64) -> usize {
    ((base as f64 * scale).round() as usize).max(1)
}

/// The deterministic generator of one workload thread.
pub fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

/// A size drawn log-uniformly from `2^lo_log2 ..= 2^hi_log2`.
pub fn log_uniform(rng: &mut SmallRng, lo_log2: u32, hi_log2: u32) -> usize {
    let exp: f64 = rng.gen_range(lo_log2 as f64..=hi_log2 as f64);
    exp.exp2() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_runs_small() {
        for w in ALL {
            let sum = (w.run)(0.01);
            assert!(sum > 0, "{} returned an empty checksum", w.name);
        }
    }

    #[test]
    fn names_are_unique_and_found() {
        for w in ALL {
            assert!(std::ptr::eq(find(w.name).unwrap(), w));
        }
        assert!(find("nope").is_none());
    }

    #[test]
    fn log_uniform_stays_in_range() {
        let mut r = rng(1);
        for _ in 0..1000 {
            let s = log_uniform(&mut r, 4, 10);
            assert!((16..=1024).contains(&s));
        }
    }
}
