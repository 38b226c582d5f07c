//! The C side of the benchmark: C workloads (bench/c/*.c) and real programs
//! run under `LD_PRELOAD` with fortalloc's C library (plain and the
//! presets `secure` and `secure-max`),
//! Debian's libmimalloc (2.0), libjemalloc and libtcmalloc_minimal
//! (gperftools), mimalloc 2.3 built here from the C sources the
//! `libmimalloc-sys` crate vendors (plain and with `MI_SECURE=4`), and
//! with no preload (glibc), interleaved run by run. C workloads are
//! compared with mimalloc and with mimalloc-secure (with the presets'
//! verdicts against the targets), real programs with glibc; the
//! latency workload also gets a table of per-call percentiles.
//!
//! cargo run --release -p fortalloc-bench --bin cbench [-- --quick | --runs N]
//!     [--only JOB,JOB] [--libs LIB,LIB]
//!
//! `--only` keeps the named jobs (e.g. `latency,skewed-mass`), `--libs` the named allocators
//! (e.g. `fortalloc,fortalloc-secure,mimalloc-secure`; `system` is glibc).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use fortalloc_bench::cbench::{
    build_capi, build_launcher, build_mimalloc, compile, parse_maxrss_kb, render, Cell, Job, Lib,
};
use fortalloc_bench::latency;

const DEBIAN_LIBS: &str = "/usr/lib/x86_64-linux-gnu";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 3 } else { 5 });
    let scale = if quick { "0.3" } else { "1" };
    let list = |flag: &str| -> Option<Vec<String>> {
        let i = args.iter().position(|a| a == flag)?;
        Some(
            args.get(i + 1)?
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
        )
    };
    let only_jobs = list("--only");
    let only_libs = list("--libs");

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out_dir = root.join("target/bench/c");
    std::fs::create_dir_all(&out_dir).expect("target/bench/c");

    // Every program runs under the launcher, which reports its peak RSS (see measure).
    let launcher = out_dir.join("launch");
    build_launcher(&root.join("bench/c/launch.c"), &launcher);
    let mut libs = libraries(&root, &launcher);
    let mut jobs = jobs(&root, &out_dir, scale);
    if let Some(names) = &only_libs {
        libs.retain(|l| names.iter().any(|n| n == l.name));
    }
    if let Some(names) = &only_jobs {
        jobs.retain(|j| names.iter().any(|n| n == j.name));
    }
    if libs.is_empty() || jobs.is_empty() {
        eprintln!("cbench: no allocator or no job left to run (see --libs and --only)");
        std::process::exit(2);
    }
    let mut cells: Vec<Vec<Cell>> = vec![vec![Cell::default(); libs.len()]; jobs.len()];
    let mut expected: Vec<Option<Vec<u8>>> = vec![None; jobs.len()];

    for run in 0..runs {
        for (j, job) in jobs.iter().enumerate() {
            for k in 0..libs.len() {
                let l = (k + run) % libs.len();
                let lib = &libs[l];
                if lib.path.is_none() && lib.name != "system" {
                    continue;
                }
                let (secs, rss_kb, ok, stdout) = measure(&launcher, job, lib);
                let cell = &mut cells[j][l];
                if !ok {
                    cell.failed = true;
                }
                if job.latency {
                    match latency::parse(&String::from_utf8_lossy(&stdout)) {
                        Some(l) => cell.latency.push(l),
                        None => cell.failed = true,
                    }
                }
                if job.compare_output {
                    match &expected[j] {
                        None => expected[j] = Some(stdout),
                        Some(e) if *e != stdout => cell.failed = true,
                        Some(_) => {}
                    }
                }
                cell.secs.push(secs);
                cell.rss_kb.push(rss_kb);
            }
            eprintln!("[run {}/{runs}] {}", run + 1, job.name);
        }
    }
    let table = render(&jobs, &libs, &cells);
    println!("{table}");
    let _ = std::fs::write(root.join("target/bench/results-c.md"), &table);
}

/// The allocators: glibc (no preload), fortalloc's library (built here),
/// Debian's mimalloc 2.0, jemalloc and tcmalloc (installed with apt if
/// missing and we are root). Each preload is checked to really provide
/// `malloc` to a program started through `launcher`, as the measured ones are.
fn libraries(root: &Path, launcher: &Path) -> Vec<Lib> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Each preset in its own target directory, so the three libraries exist side by side.
    for (features, dir) in [
        (&[][..], None),
        (&["secure".to_string()][..], Some("target/secure")),
        (&["secure-max".to_string()][..], Some("target/secure-max")),
    ] {
        build_capi(&cargo, root, features, dir);
    }
    let c_dir = root.join("target/bench/c");
    let mimalloc_23 = build_mimalloc(&cargo, root, &c_dir.join("libmimalloc-2.3.so"), &[]);
    let mimalloc_secure = build_mimalloc(
        &cargo,
        root,
        &c_dir.join("libmimalloc-secure.so"),
        &["-DMI_SECURE=4"],
    );
    let debian = |file: &str| PathBuf::from(DEBIAN_LIBS).join(file);
    // (library, Debian package); tcmalloc is gperftools' minimal build
    // (no heap profiler), the one meant for LD_PRELOAD.
    let packaged = [
        ("libmimalloc.so.2", "libmimalloc2.0"),
        ("libjemalloc.so.2", "libjemalloc2"),
        ("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
    ];
    let missing: Vec<&str> = packaged
        .iter()
        .filter(|(lib, _)| !debian(lib).exists())
        .map(|&(_, package)| package)
        .collect();
    if !missing.is_empty() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            eprintln!("cbench: installing {} with apt-get", missing.join(" "));
            let _ = Command::new("apt-get")
                .args(["install", "-y", "-qq"])
                .args(&missing)
                .stdout(Stdio::null())
                .status();
        } else {
            eprintln!(
                "cbench: missing Debian libs; run: apt-get install {}",
                missing.join(" ")
            );
        }
    }
    let candidates = [
        ("system", None, "libc.so"),
        (
            "fortalloc",
            Some(root.join("target/release/libfortalloc.so")),
            "libfortalloc",
        ),
        (
            "fortalloc-secure",
            Some(root.join("target/secure/release/libfortalloc.so")),
            "secure/release/libfortalloc",
        ),
        (
            "fortalloc-secure-max",
            Some(root.join("target/secure-max/release/libfortalloc.so")),
            "secure-max/release/libfortalloc",
        ),
        ("mimalloc", Some(debian("libmimalloc.so.2")), "libmimalloc.so"),
        ("mimalloc-2.3", mimalloc_23, "libmimalloc-2.3"),
        ("mimalloc-secure", mimalloc_secure, "libmimalloc-secure"),
        ("jemalloc", Some(debian("libjemalloc.so.2")), "libjemalloc"),
        (
            "tcmalloc",
            Some(debian("libtcmalloc_minimal.so.4")),
            "libtcmalloc_minimal",
        ),
    ];
    let which = root.join("target/bench/c/which_malloc");
    compile(&root.join("bench/c/which_malloc.c"), &which);
    candidates
        .into_iter()
        .map(|(name, path, marker)| {
            let path = path.filter(|p| p.exists());
            let mut cmd = Command::new(launcher);
            cmd.arg(&which);
            if let Some(p) = &path {
                cmd.env("LD_PRELOAD", p);
            }
            let owner = cmd
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let in_effect = owner.contains(marker);
            if !in_effect {
                eprintln!("cbench: {name}: malloc comes from {owner:?}, not {marker}: column left out");
            }
            Lib {
                name,
                path: if in_effect { path } else { None },
                missing: !in_effect,
            }
        })
        .collect()
}

fn jobs(root: &Path, out: &Path, scale: &str) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (name, file, extra) in [
        ("larson", "larson", None),
        ("xmalloc", "xmalloc", None),
        ("tree", "tree", None),
        ("simple-1t", "simple", Some("1")),
        ("simple-2t", "simple", Some("2")),
        ("cache-scratch", "cache_scratch", None),
        ("realloc", "realloc_grow", None),
        ("mixed", "mixed", None),
        ("threads-256", "threads256", None),
        ("realloc-strings", "realloc_strings", None),
        ("mstress", "mstress", None),
        ("thread-churn", "thread_churn", None),
        ("skewed-mass", "skewed_mass", None),
        ("large-churn", "large_churn", None),
        ("big-blocks", "big_blocks", None),
        ("latency", "latency", None),
    ] {
        let exe = out.join(file);
        compile(&root.join("bench/c").join(format!("{file}.c")), &exe);
        let mut argv = vec![exe.display().to_string(), scale.to_string()];
        argv.extend(extra.map(String::from));
        jobs.push(Job {
            name,
            program: false,
            argv,
            compare_output: false,
            latency: file == "latency",
            dir: out.to_path_buf(),
        });
    }
    // Real programs, each on generated input; outputs must match glibc's.
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "python3".into());
    let lines: String = (0..200_000u64)
        .map(|i| format!("{:x} {}\n", i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i % 977))
        .collect();
    std::fs::write(out.join("lines.txt"), lines).expect("lines");
    let mut gen = String::from("#include <stdio.h>\n");
    for i in 0..600 {
        gen.push_str(&format!(
            "int f{i}(int x) {{ int a[32]; for (int j = 0; j < 32; j++) a[j] = x * {i} + j * j; return a[x & 31] ^ {i}; }}\n"
        ));
    }
    std::fs::write(out.join("gen.c"), gen).expect("gen.c");
    let sql = "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL);\
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)\
        INSERT INTO t(name, v) SELECT printf('name-%06d', i), i * 0.5 FROM n;\
        CREATE INDEX t_name ON t(name);\
        SELECT count(*), sum(v), min(name), max(name) FROM t WHERE name LIKE 'name-1%';";
    let programs: [(&'static str, Vec<String>); 5] = [
        (
            "python3 json",
            vec![
                python,
                "-c".into(),
                "import json\nd=[{'k':i,'s':str(i)*5,'l':list(range(i%20))} for i in range(300000)]\ns=json.dumps(d)\nprint(len(s), len(json.loads(s)))".into(),
            ],
        ),
        ("sort", vec!["sort".into(), out.join("lines.txt").display().to_string()]),
        (
            "gcc -O2",
            vec!["gcc".into(), "-O2".into(), "-c".into(), "-o".into(), "/dev/null".into(), out.join("gen.c").display().to_string()],
        ),
        ("sqlite3", vec!["sqlite3".into(), ":memory:".into(), sql.into()]),
        (
            "perl",
            vec![
                "perl".into(),
                "-e".into(),
                "my %h; for my $i (1..400000) { $h{\"k$i\"} = \"v\" x ($i % 40); } my $t = 0; $t += length($h{$_}) for keys %h; print scalar(keys %h), \" $t\\n\";".into(),
            ],
        ),
    ];
    for (name, argv) in programs {
        jobs.push(Job {
            name,
            program: true,
            argv,
            compare_output: true,
            latency: false,
            dir: out.to_path_buf(),
        });
    }
    jobs
}

/// Runs a job once under `lib`: wall seconds, peak RSS (KiB), success,
/// stdout.
///
/// The program runs under `launcher` (bench/c/launch.c), which forks it and
/// reports its `ru_maxrss`. cbench does not start it itself because Linux
/// carries the high-water RSS of the image a process execs from into the new
/// program's `ru_maxrss`: std's posix_spawn is a vfork, so every program
/// started from here reported at least cbench's own peak (several MiB). Forked
/// from the tiny launcher, it starts from nearly nothing. Reading the
/// program's `VmHWM` just before it exits would need a hook inside it (a
/// second preload) or ptrace, and would change what runs.
///
/// The time is as before: from spawning (now the launcher) to reaping it,
/// which adds the launcher's own start, fork and exit (about 0.07 ms) to
/// every run, the same for every allocator.
fn measure(launcher: &Path, job: &Job, lib: &Lib) -> (f64, u64, bool, Vec<u8>) {
    let mut cmd = Command::new(launcher);
    // The launcher gives the program this stdin and stdout and puts its
    // stderr on /dev/null; our stderr pipe carries only the launcher's report.
    cmd.args(&job.argv)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The launcher is static (no dynamic loader), so LD_PRELOAD acts only
    // on the program, which inherits it with the rest of the environment.
    match &lib.path {
        Some(p) => cmd.env("LD_PRELOAD", p),
        None => cmd.env_remove("LD_PRELOAD"),
    };
    let start = Instant::now();
    let Ok(mut child) = cmd.spawn() else {
        return (0.0, 0, false, Vec::new());
    };
    let mut stdout = Vec::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = std::io::Read::read_to_end(&mut s, &mut stdout);
    }
    // The launcher closed its stdout, so the read above ended with the
    // program; its report follows once it has reaped the program.
    let mut report = Vec::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = std::io::Read::read_to_end(&mut s, &mut report);
    }
    let status = child.wait();
    let secs = start.elapsed().as_secs_f64();
    let rss_kb = parse_maxrss_kb(&report);
    let ok = status.is_ok_and(|s| s.success()) && rss_kb.is_some();
    (secs, rss_kb.unwrap_or(0), ok, stdout)
}
