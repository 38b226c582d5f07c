//! The latency workloads' report: the line c/latency.c and the Rust workload print, its
//! nearest-rank percentiles, medians over runs, and the table that judges the presets.

use std::path::Path;
use std::process::Command;

use fortalloc_bench::latency::{self, percentiles, Judged, Latency};

#[test]
fn percentiles_are_nearest_rank() {
    // 1..=1000 shuffled: p50 is the 500th value, p99 the 990th, p99.9 the 999th, and with
    // fewer than 10,000 samples p99.99 is the maximum.
    let mut samples: Vec<u32> = (1..=1000).map(|i| (i * 7919) % 1000 + 1).collect();
    assert_eq!(
        percentiles(&mut samples, 1.0),
        [500.0, 990.0, 999.0, 1000.0, 1000.0]
    );
    assert_eq!(
        percentiles(&mut [10, 30, 20], 0.5),
        [10.0, 15.0, 15.0, 15.0, 15.0]
    );
    assert_eq!(percentiles(&mut [], 1.0), [0.0; 5]);
}

#[test]
fn latency_lines_round_trip_and_malformed_ones_are_refused() {
    let l = Latency {
        malloc: [12.0, 80.0, 310.0, 2500.0, 90000.0],
        free: [9.0, 60.0, 200.0, 1200.0, 40000.0],
        timer_ns: 20.0,
    };
    let out = format!("something else\n{}\n", l.line("rdtsc"));
    assert_eq!(latency::parse(&out), Some(l));
    assert_eq!(
        latency::parse("latency clock=rdtsc timer_ns=20 malloc_ns=1,2,3,4 free_ns=1,2,3,4,5"),
        None
    );
    assert_eq!(latency::parse("latency timer_ns=20 malloc_ns=1,2,3,4,5"), None);
    assert_eq!(latency::parse("time_ns=5 peak_rss_kb=1"), None);
}

#[test]
fn medians_over_runs_are_per_percentile() {
    let run = |x: f64| Latency {
        malloc: [x, 2.0 * x, 3.0 * x, 4.0 * x, 5.0 * x],
        free: [x; 5],
        timer_ns: x,
    };
    let m = Latency::median_of(&[run(1.0), run(10.0), run(3.0)]).unwrap();
    assert_eq!(m.malloc, [3.0, 6.0, 9.0, 12.0, 15.0]);
    assert_eq!(Latency::median_of(&[]), None);
}

#[test]
fn latency_table_judges_p99_and_p999_against_the_reference() {
    let l = |p99: f64, p999: f64| {
        Some(Latency {
            malloc: [10.0, p99, p999, 1000.0, 5000.0],
            free: [10.0, p99, p999, 1000.0, 5000.0],
            timer_ns: 20.0,
        })
    };
    let rows = [
        ("mimalloc-secure", l(100.0, 400.0)),
        ("fortalloc-secure", l(90.0, 400.0)),
        ("fortalloc-secure-max", l(150.0, 800.0)),
        ("jemalloc", None),
    ];
    let judged = [
        Judged {
            name: "fortalloc-secure",
            target: Some(1.0),
        },
        Judged {
            name: "fortalloc-secure-max",
            target: Some(1.0),
        },
    ];
    let t = latency::render("latency", &rows, "mimalloc-secure", &judged);
    assert!(
        t.contains("| fortalloc-secure | 10 | 90 | 400 | 1000 | 5000 | 10 | 90 | 400 | 1000 | 5000 | 20 |"),
        "{t}"
    );
    assert!(t.contains("| jemalloc | - |"), "{t}");
    assert!(
        t.contains("| fortalloc-secure | 0.90x | 1.00x | 0.90x | 1.00x | PASS"),
        "{t}"
    );
    assert!(
        t.contains("| fortalloc-secure-max | 1.50x | 2.00x | 1.50x | 2.00x | FAIL"),
        "{t}"
    );
}

#[test]
fn the_c_latency_program_reports_ordered_percentiles() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let exe = dir.join("latency");
    fortalloc_bench::cbench::compile(&Path::new(env!("CARGO_MANIFEST_DIR")).join("c/latency.c"), &exe);
    let out = Command::new(&exe).arg("0.005").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let l = latency::parse(&String::from_utf8_lossy(&out.stdout)).expect("a latency line");
    assert!(l.malloc.windows(2).all(|w| w[0] <= w[1]), "{l:?}");
    assert!(l.free.windows(2).all(|w| w[0] <= w[1]), "{l:?}");
    assert!(l.malloc[0] > 0.0 && l.timer_ns >= 0.0, "{l:?}");
    // Untimed, it prints nothing.
    let quiet = Command::new(&exe).args(["0.005", "untimed"]).output().unwrap();
    assert!(quiet.status.success() && quiet.stdout.is_empty(), "{quiet:?}");
}
