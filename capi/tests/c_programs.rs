//! The C library from the outside: C and C++ programs compiled here with
//! the system compilers, linked against libfortalloc.so and run under
//! `LD_PRELOAD`; real programs run with and without the preload and their
//! output compared byte for byte.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

#[path = "../../tests/common/mod.rs"]
mod common;

/// The directory cargo builds into (`target/debug` for `cargo test`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// libfortalloc.so of the current sources. `cargo test` does not build a
/// `cdylib` for its tests, and a library left by an earlier `cargo build`
/// may be stale, so it is built here once per run (a no-op when fresh).
fn library() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let lib = target_dir().join("libfortalloc.so");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "fortalloc-capi"])
            .status()
            .expect("cargo build");
        assert!(status.success());
        assert!(lib.exists(), "{} missing", lib.display());
        lib
    })
    .clone()
}

fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c").join(name)
}

/// Compiles `src` with `compiler` into `out`; `link` adds -lfortalloc.
fn compile(compiler: &str, src: &str, out: &str, link: bool, extra: &[&str]) -> PathBuf {
    let exe = scratch().join(out);
    let mut cmd = Command::new(compiler);
    cmd.arg("-O1")
        .arg("-Wno-alloc-size-larger-than")
        .arg("-Wno-use-after-free")
        .arg("-o")
        .arg(&exe)
        .arg(source(src))
        .args(extra)
        .arg("-pthread");
    if link {
        let dir = library().parent().expect("lib dir").to_path_buf();
        cmd.arg(format!("-L{}", dir.display()))
            .arg("-lfortalloc")
            .arg(format!("-Wl,-rpath,{}", dir.display()));
    }
    let out = cmd.output().expect("compiler");
    assert!(
        out.status.success(),
        "{compiler} {src}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn run(cmd: &mut Command, preload: bool) -> Output {
    if preload {
        cmd.env("LD_PRELOAD", library());
    }
    cmd.output().expect("run")
}

fn assert_ok(out: &Output, expect: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(expect),
        "status {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_export_linked() {
    let exe = compile("cc", "api.c", "api-linked", true, &[]);
    assert_ok(&run(&mut Command::new(exe), false), "all checks passed");
}

#[test]
fn every_export_preloaded() {
    let exe = compile("cc", "api.c", "api-plain", false, &[]);
    assert_ok(&run(&mut Command::new(&exe), true), "all checks passed");
    // Without the preload the same program fails its first check: the
    // checks really look at which library answers.
    assert!(!run(&mut Command::new(exe), false).status.success());
}

fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include")
}

/// The value after `row`'s name in the statistics table in `stderr`.
fn stats_value(stderr: &str, row: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("fortalloc: ")?.strip_prefix(row))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no `{row}` row: {stderr}"))
}

/// fortalloc.h in a strict C11 program that warnings fail, linked against
/// the library: each declared function called once, and the statistics it
/// prints name the process and count the program's blocks.
#[test]
fn the_header_compiles_strictly_and_its_functions_work() {
    let include = format!("-I{}", include_dir().display());
    let exe = compile(
        "cc",
        "header.c",
        "header",
        true,
        &["-std=c11", "-Wall", "-Wextra", "-Werror", &include],
    );
    let child = Command::new(&exe)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    assert_ok(&out, "header ok");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let heading = format!("fortalloc: statistics of process {pid} (");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&heading) && l.ends_with("header)")),
        "a heading with the pid and the program's name: {stderr}"
    );
    assert!(stats_value(&stderr, "allocations") >= 100, "{stderr}");
    assert!(stats_value(&stderr, "live blocks") >= 100, "{stderr}");
}

/// fortalloc.h is valid C++ (its own and after the C library's headers,
/// whose declarations of the same functions it must match).
#[test]
fn the_header_compiles_as_cxx() {
    if !have("c++") {
        eprintln!("skipped: no C++ compiler (c++) to check fortalloc.h with");
        return;
    }
    let header = include_dir().join("fortalloc.h");
    let out = Command::new("c++")
        .args(["-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-x", "c++"])
        .arg(&header)
        .output()
        .expect("c++");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let unit = scratch().join("header_after_libc.cc");
    let text = format!(
        "#include <stdlib.h>\n#include <malloc.h>\n#include \"{}\"\nint main() {{ fortalloc_print_stats(); return malloc_trim(0) == 1 ? 0 : 1; }}\n",
        header.display()
    );
    std::fs::write(&unit, text).expect("write");
    for std in ["-std=c++98", "-std=c++17"] {
        let out = Command::new("c++")
            .args(["-fsyntax-only", "-Wall", "-Wextra", "-Werror", std])
            .arg(&unit)
            .output()
            .expect("c++");
        assert!(
            out.status.success(),
            "{std}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn threads_with_cross_thread_frees_and_churn() {
    let exe = compile("cc", "threads.c", "threads", false, &[]);
    let out = run(Command::new(exe).env("FORTALLOC_SHOW_STATS", "1"), true);
    assert_ok(&out, "threads ok");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cross: u64 = stderr
        .lines()
        .find_map(|l| l.split("by a thread not the owner ").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no stats: {stderr}"));
    assert!(cross > 10_000, "frees crossed threads: {cross}");
}

#[test]
fn fork_from_a_multithreaded_parent() {
    let exe = compile("cc", "fork.c", "fork", false, &[]);
    assert_ok(&run(&mut Command::new(exe), true), "fork ok");
}

/// Issue 12: runs one of the `fork_*.c` races under the preload, killed
/// after a minute (a deadlock fails as "hung"), and checks it made all its
/// `forks` (the count follows `ok` in its last line).
fn fork_race(src: &str, out: &str, ok: &str, forks: u64) {
    let exe = compile("cc", src, out, false, &[]);
    common::assert_preloaded_count(&exe, &library(), ok, forks);
}

/// fork from four threads while others getline long lines from one FILE
/// and call fflush(NULL): all 300 forks (the program's MAX_FORKS) made.
#[test]
fn fork_beside_getline_and_fflush() {
    fork_race("fork_stdio.c", "fork_stdio", "fork stdio ok: ", 300);
}

/// fork from SIGUSR1/SIGUSR2 handlers into a single-threaded malloc loop:
/// all 500 forks (the program's MAX_FORKS) made.
#[test]
fn fork_from_signal_handlers() {
    fork_race("fork_signal.c", "fork_signal", "fork signal ok: ", 500);
}

#[test]
fn dlopen_of_a_library_with_tls() {
    let lib = scratch().join("libtls_test.so");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(source("tls_lib.c"))
        .output()
        .expect("cc");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exe = compile("cc", "dlopen_tls.c", "dlopen_tls", false, &["-ldl"]);
    assert_ok(&run(Command::new(exe).arg(&lib), true), "dlopen tls ok");
}

#[test]
fn cxx_operators() {
    let linked = compile("g++", "cxx.cc", "cxx-linked", true, &["-std=c++17"]);
    assert_ok(&run(&mut Command::new(linked), false), "c++ ok");
    let plain = compile("g++", "cxx.cc", "cxx-plain", false, &["-std=c++17"]);
    assert_ok(&run(&mut Command::new(plain), true), "c++ ok");
}

#[test]
fn the_library_really_owns_malloc_under_preload() {
    let out = run(
        Command::new("sh")
            .args(["-c", "echo hello | cat"])
            .env("FORTALLOC_SHOW_STATS", "1"),
        true,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let allocs: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("fortalloc: allocations"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no stats table: {stderr}"));
    assert!(allocs > 0, "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
}

/// Runs `cmd` with and without the preload; the outputs must be identical.
fn same_output(what: &str, mut make: impl FnMut() -> Command) {
    let plain = run(&mut make(), false);
    let fort = run(&mut make(), true);
    assert!(
        plain.status.success(),
        "{what} (glibc): {}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert!(
        fort.status.success(),
        "{what} (fortalloc): {}",
        String::from_utf8_lossy(&fort.stderr)
    );
    assert_eq!(plain.stdout, fort.stdout, "{what}: stdout differs");
    assert!(!plain.stdout.is_empty(), "{what}: printed something");
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

const PY: &str = "import json, collections\n\
d = {str(i): [i, str(i) * 7, {'k': i % 13}] for i in range(60000)}\n\
s = json.dumps(d, sort_keys=True)\n\
back = json.loads(s)\n\
c = collections.Counter(len(v[1]) for v in back.values())\n\
print(len(s), sorted(c.items())[:5], sum(v[0] for v in back.values()))\n";

#[test]
fn python() {
    same_output("python3", || {
        let mut c = Command::new("python3");
        c.args(["-c", PY]);
        c
    });
    same_output("python3 with PYTHONMALLOC=malloc", || {
        let mut c = Command::new("python3");
        c.args(["-c", PY]).env("PYTHONMALLOC", "malloc");
        c
    });
}

#[test]
fn gcc_compiling_a_generated_file() {
    let dir = scratch();
    let src = dir.join("gen.c");
    let mut text = String::from("#include <stdio.h>\n");
    for i in 0..400 {
        text.push_str(&format!(
            "static int f{i}(int x) {{ int a[16]; for (int j = 0; j < 16; j++) a[j] = x * {i} + j; return a[x & 15] ^ {i}; }}\n"
        ));
    }
    text.push_str("int main(void) { long s = 0;\n");
    for i in 0..400 {
        text.push_str(&format!("s += f{i}({i});\n"));
    }
    text.push_str("printf(\"%ld\\n\", s); return 0; }\n");
    std::fs::write(&src, text).expect("write source");
    for (tag, preload) in [("glibc", false), ("fortalloc", true)] {
        let exe = dir.join(format!("gen-{tag}"));
        let out = run(
            Command::new("gcc").arg("-O2").arg("-o").arg(&exe).arg(&src),
            preload,
        );
        assert!(
            out.status.success(),
            "gcc ({tag}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    same_output("the compiled program", || Command::new(dir.join("gen-fortalloc")));
    let a = run(&mut Command::new(dir.join("gen-glibc")), false);
    let b = run(&mut Command::new(dir.join("gen-fortalloc")), false);
    assert_eq!(
        a.stdout, b.stdout,
        "programs compiled under either allocator agree"
    );
}

#[test]
fn sort_of_a_generated_file() {
    let file = scratch().join("lines.txt");
    let mut text = String::new();
    let mut x: u64 = 7;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{:x} {}\n", x, x % 1000));
    }
    std::fs::write(&file, text).expect("write");
    same_output("sort", || {
        let mut c = Command::new("sort");
        c.arg(&file).env("LC_ALL", "C");
        c
    });
}

#[test]
fn perl() {
    same_output("perl", || {
        let mut c = Command::new("perl");
        c.args([
            "-e",
            "my %h; for my $i (1..200000) { $h{\"k$i\"} = \"v\" x ($i % 50); } \
             my $t = 0; $t += length($h{$_}) for keys %h; print scalar(keys %h), \" $t\\n\";",
        ]);
        c
    });
}

#[test]
fn sqlite3() {
    if !have("sqlite3") {
        // .ci/run installs it; a developer machine may not have it.
        eprintln!("skipped: sqlite3 not installed (apt-get install sqlite3)");
        return;
    }
    let dir = scratch();
    let sql = "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL);\n\
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000)\n\
        INSERT INTO t(name, v) SELECT printf('name-%05d', i), i * 0.5 FROM n;\n\
        CREATE INDEX t_name ON t(name);\n\
        SELECT count(*), sum(v), min(name), max(name) FROM t;\n\
        SELECT name FROM t WHERE name LIKE 'name-4%' ORDER BY v DESC LIMIT 3;\n";
    for tag in ["a", "b"] {
        let _ = std::fs::remove_file(dir.join(format!("{tag}.db")));
    }
    let mut tags = ["a", "b"].into_iter();
    same_output("sqlite3", || {
        let db = dir.join(format!("{}.db", tags.next().unwrap_or("c")));
        let mut c = Command::new("sqlite3");
        c.arg(db).arg(sql);
        c
    });
}

#[test]
fn git() {
    let dir = scratch().join("gitrepos");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut n = 0;
    same_output("git", || {
        n += 1;
        let repo = dir.join(format!("r{n}"));
        let script = format!(
            "set -e; git init -q {r}; cd {r}; \
             for i in $(seq 1 30); do seq $i 4000 > f$i.txt; git add f$i.txt; git commit -q -m \"c$i\"; done; \
             git gc -q; git log --format='%H %s' | head -5; git count-objects -v | grep -v size",
            r = repo.display()
        );
        let mut c = Command::new("sh");
        c.args(["-c", &script])
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1");
        c
    });
}
