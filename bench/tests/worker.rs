//! The worker binary as the driver uses it: its report line (time, peak RSS, page faults), its allocator's name, and the
//! exit code of corruption.

use std::process::Command;

fn worker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_worker"))
}

#[test]
fn reports_time_peak_rss_and_faults() {
    let output = worker().args(["larson", "0.01"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "{stdout}");
    assert!(
        fields[0]
            .strip_prefix("time_ns=")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert!(fields[1]
        .strip_prefix("peak_rss_kb=")
        .unwrap()
        .parse::<u64>()
        .is_ok());
    // Any run takes some page faults (its own binary's pages, at least).
    assert!(fields[2].strip_prefix("minflt=").unwrap().parse::<u64>().unwrap() > 0);
    assert!(fields[3].starts_with("alloc="));
}

#[test]
fn names_its_allocator() {
    let output = worker().arg("--which").output().unwrap();
    assert!(output.status.success());
    // Built without an alloc-* feature, as `cargo test` builds it: the system allocator.
    assert_eq!(String::from_utf8(output.stdout).unwrap().trim(), "system");
}

#[test]
fn corruption_exits_3() {
    let output = worker().arg("--selftest-corruption").output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(fortalloc_bench::verify::CORRUPTION_EXIT_CODE)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("CORRUPTION"));
}

#[test]
fn rejects_bad_arguments() {
    for args in [&["nope", "1"][..], &["larson", "-1"], &["larson"]] {
        assert_eq!(
            worker().args(args).output().unwrap().status.code(),
            Some(2),
            "{args:?}"
        );
    }
}
