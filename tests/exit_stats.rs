//! A Rust program using `FortAlloc` gets what the C library gets: its
//! `FORTALLOC_*` options are read when it loads, and
//! `FORTALLOC_SHOW_STATS=1` prints its statistics table at exit, headed by
//! its process id.

use std::process::Command;

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

const CHILD: &str = "EXIT_STATS_TEST_CHILD";

#[test]
fn show_stats_prints_the_table_at_exit() {
    if std::env::var_os(CHILD).is_some() {
        // Some allocations of its own, and its pid for the parent.
        let v: Vec<Box<u64>> = (0..1000).map(Box::new).collect();
        println!(
            "child pid {} sum {}",
            std::process::id(),
            v.iter().map(|b| **b).sum::<u64>()
        );
        return;
    }
    let run = |show: Option<&str>| {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args(["--exact", "show_stats_prints_the_table_at_exit", "--nocapture"])
            .env(CHILD, "1")
            .env_remove("FORTALLOC_SHOW_STATS");
        if let Some(v) = show {
            cmd.env("FORTALLOC_SHOW_STATS", v);
        }
        let out = cmd.output().expect("run the child");
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let pid = stdout
            .split("child pid ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("the child's pid")
            .to_owned();
        (pid, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (pid, stderr) = run(Some("1"));
    assert!(
        stderr.contains(&format!("fortalloc: statistics of process {pid} ")),
        "no table headed by {pid}: {stderr}"
    );
    let allocations = stderr
        .lines()
        .find_map(|l| l.strip_prefix("fortalloc: allocations"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .expect("an allocations row");
    assert!(allocations >= 1000, "{allocations}");
    let (_, quiet) = run(None);
    assert!(!quiet.contains("fortalloc: statistics"), "{quiet}");
}
