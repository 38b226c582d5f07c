//! Without randomness from the kernel the hardened build stops with a
//! message instead of running with guessable secrets; the plain build,
//! which draws none, carries on. The child blocks `getrandom(2)` and
//! `open` of `/dev/urandom` with a seccomp filter, then starts a thread,
//! whose new heap draws its seed.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;
use common::child;

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

/// Whether this build draws seeds for each thread's heap.
const SEEDS_PER_HEAP: bool = cfg!(any(feature = "random-order", feature = "quarantine"));

#[test]
fn no_kernel_randomness_stops_the_hardened_build() {
    child("no-randomness")
        .run(|| {
            block_randomness();
            let t = std::thread::spawn(|| std::hint::black_box(vec![7u8; 100]).len());
            assert_eq!(t.join().expect("thread"), 100);
            println!("thread allocated");
        })
        .check(|o| {
            if SEEDS_PER_HEAP {
                assert!(!o.status.success(), "the child went on: {}", o.stdout);
                assert!(
                    o.stderr.contains("fortalloc: no randomness from the kernel"),
                    "no message: {}",
                    o.stderr
                );
                assert!(!o.stdout.contains("thread allocated"), "{}", o.stdout);
            } else {
                o.assert_success("no-randomness");
                assert!(o.stdout.contains("thread allocated"), "{}", o.stdout);
            }
        });
}

/// Installs a seccomp filter: `getrandom` fails with ENOSYS, `open` and
/// `openat` with EACCES, everything else is allowed.
fn block_randomness() {
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let ld_nr = libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    };
    let jeq = |nr: libc::c_long, skip_to_errno: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: skip_to_errno,
        jf: 0,
        k: nr as u32,
    };
    let ret = |v: u32| libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: v,
    };
    let mut prog = [
        ld_nr,
        jeq(libc::SYS_getrandom, 3),
        jeq(libc::SYS_openat, 3),
        jeq(libc::SYS_open, 2),
        ret(RET_ALLOW),
        ret(RET_ERRNO | libc::ENOSYS as u32),
        ret(RET_ERRNO | libc::EACCES as u32),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; `fprog` points at `prog`, which outlives
    // them (the kernel copies the filter).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
    }
}
