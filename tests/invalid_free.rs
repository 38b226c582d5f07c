//! Every build rejects `free` of a pointer fortalloc does not own, and of a
//! pointer into the middle of a block, with one line on stderr and abort().
//! Each violation runs in a child process (this binary re-run with
//! `FA_TEST_CASE` set); the parent asserts the signal and the message,
//! down to the address.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

static A_STATIC: [u64; 4] = [1, 2, 3, 4];

struct Outcome {
    signal: Option<i32>,
    code: Option<i32>,
    stderr: String,
    stdout: String,
}

fn run_case(case: &str) -> Outcome {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("FA_TEST_CASE", case)
        .output()
        .expect("spawn child");
    Outcome {
        signal: out.status.signal(),
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// Asserts the child aborted with exactly one fortalloc line, naming the
/// address it printed and containing `detail`.
fn assert_rejected(case: &str, detail: &str) {
    let o = run_case(case);
    assert_eq!(
        o.signal,
        Some(libc::SIGABRT),
        "{case}: {} / {}",
        o.stderr,
        o.stdout
    );
    let addr = o
        .stdout
        .split_once("addr=")
        .map(|(_, a)| a.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("{case}: no address printed: {}", o.stdout));
    let lines: Vec<&str> = o.stderr.lines().filter(|l| l.starts_with("fortalloc:")).collect();
    assert_eq!(lines.len(), 1, "{case}: one line: {}", o.stderr);
    let expect = format!("fortalloc: invalid free at {addr} (");
    assert!(
        lines[0].starts_with(&expect),
        "{case}: wanted `{expect}`: {}",
        lines[0]
    );
    assert!(
        lines[0].contains(detail),
        "{case}: wanted `{detail}`: {}",
        lines[0]
    );
}

fn say(p: usize) {
    use std::io::Write;
    println!("addr={p:#x}");
    std::io::stdout().flush().expect("flush");
}

/// The dispatcher the children run; a no-op in the parent.
#[test]
fn child() {
    let Ok(case) = std::env::var("FA_TEST_CASE") else {
        return;
    };
    let bad: usize = match case.as_str() {
        "stack" => {
            let x = std::hint::black_box([0u64; 4]);
            x.as_ptr() as usize
        }
        "static" => A_STATIC.as_ptr() as usize,
        "libc-malloc" => {
            // SAFETY: plain libc malloc; the block is leaked into the child's
            // violation.
            unsafe { libc::malloc(64) as usize }
        }
        "mmap" => {
            // SAFETY: a fresh anonymous mapping of our own.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    1 << 20,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            p as usize + 4096
        }
        "wild-low" => 0x10000,
        "wild-high" => 0x7fff_0000_1230,
        "small+8" | "small+1" => {
            let p = fortalloc::malloc(48) as usize;
            p + if case == "small+8" { 8 } else { 1 }
        }
        "medium+4096" => fortalloc::malloc(20 << 10) as usize + 4096,
        "large+64k" => fortalloc::malloc(1 << 20) as usize + (64 << 10),
        "huge+1m" => fortalloc::malloc(8 << 20) as usize + (1 << 20),
        "huge+4096" => fortalloc::malloc(8 << 20) as usize + 4096,
        "control" => {
            let p = fortalloc::malloc(48);
            // SAFETY: a live block freed once: the control case must exit 0.
            unsafe { fortalloc::free(p) };
            println!("freed cleanly");
            return;
        }
        other => panic!("unknown case {other}"),
    };
    say(bad);
    // SAFETY: deliberately invalid: this child process is expected to abort
    // before anything is freed.
    unsafe { fortalloc::free(bad as *mut u8) };
    println!("not rejected");
}

#[test]
fn a_stack_address() {
    assert_rejected("stack", "not allocated by fortalloc");
}

#[test]
fn a_static() {
    assert_rejected("static", "not allocated by fortalloc");
}

#[test]
fn a_libc_block() {
    assert_rejected("libc-malloc", "not allocated by fortalloc");
}

#[test]
fn an_address_in_someone_elses_mapping() {
    assert_rejected("mmap", "not allocated by fortalloc");
}

#[test]
fn wild_addresses() {
    assert_rejected("wild-low", "not allocated by fortalloc");
    assert_rejected("wild-high", "not allocated by fortalloc");
}

#[test]
fn interior_pointers_of_small_blocks() {
    assert_rejected("small+8", "interior pointer");
    assert_rejected("small+1", "interior pointer");
}

#[test]
fn interior_pointer_of_a_medium_block() {
    assert_rejected("medium+4096", "interior pointer");
}

#[test]
fn interior_pointer_of_a_large_block() {
    assert_rejected("large+64k", "interior pointer");
}

#[test]
fn interior_pointers_of_a_huge_block() {
    // Past the block's first segment the map has no entry: reported as not
    // ours, which is also a rejection; within it, as interior.
    assert_rejected("huge+4096", "interior pointer");
    let o = run_case("huge+1m");
    assert_eq!(o.signal, Some(libc::SIGABRT), "{}", o.stderr);
    assert!(o.stderr.contains("fortalloc: invalid free at"), "{}", o.stderr);
}

#[test]
fn a_valid_free_is_not_rejected() {
    let o = run_case("control");
    assert_eq!(o.code, Some(0), "{} / {}", o.stderr, o.stdout);
    assert!(o.stdout.contains("freed cleanly"));
    assert!(!o.stderr.contains("fortalloc:"), "{}", o.stderr);
}
