//! `capi`: the C library's entry points with hostile arguments — sizes near
//! `usize::MAX`, alignments that are not powers of two, `calloc` products
//! that overflow, `realloc` to 0, `posix_memalign` edge cases — each must
//! return what POSIX and glibc define and set `errno` as defined, and never
//! crash.
//!
//! The library is loaded with `dlopen` (`RTLD_LOCAL`, so this process's own
//! `malloc` stays glibc's) from `$FORTALLOC_CAPI_LIB`, or
//! `target/release/libfortalloc.so` of the workspace, built on demand.

use std::ffi::{c_int, c_void, CString};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};

type Malloc = unsafe extern "C" fn(usize) -> *mut c_void;
type Calloc = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type Realloc = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type ReallocArray = unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void;
type Free = unsafe extern "C" fn(*mut c_void);
type PosixMemalign = unsafe extern "C" fn(*mut *mut c_void, usize, usize) -> c_int;
type AlignedAlloc = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type UsableSize = unsafe extern "C" fn(*mut c_void) -> usize;
type Trim = unsafe extern "C" fn(usize) -> c_int;

/// The library's functions.
pub struct Api {
    malloc: Malloc,
    calloc: Calloc,
    realloc: Realloc,
    reallocarray: ReallocArray,
    free: Free,
    posix_memalign: PosixMemalign,
    aligned_alloc: AlignedAlloc,
    memalign: AlignedAlloc,
    usable: UsableSize,
    trim: Trim,
}

fn library_path() -> String {
    if let Ok(p) = std::env::var("FORTALLOC_CAPI_LIB") {
        return p;
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let lib = format!("{root}/target/release/libfortalloc.so");
    if !std::path::Path::new(&lib).exists() {
        let status = std::process::Command::new("cargo")
            .current_dir(root)
            .args(["build", "--release", "-p", "fortalloc-capi"])
            .status()
            .expect("cargo build of the C library");
        assert!(status.success());
    }
    lib
}

/// Loads the library once.
pub fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let path = CString::new(library_path()).expect("path");
        // SAFETY: dlopen with a valid path; RTLD_LOCAL keeps its symbols
        // out of this process's global scope.
        let h = unsafe { libc_dlopen(path.as_ptr(), RTLD_NOW | RTLD_LOCAL) };
        assert!(!h.is_null(), "dlopen of the C library failed");
        let sym = |name: &str| {
            let c = CString::new(name).expect("name");
            // SAFETY: `h` is a live handle, `c` a valid C string.
            let p = unsafe { libc_dlsym(h, c.as_ptr()) };
            assert!(!p.is_null(), "{name} missing");
            p
        };
        // SAFETY: each symbol is the C function of that name, whose
        // signature the type spells out.
        unsafe {
            Api {
                malloc: std::mem::transmute::<*mut c_void, Malloc>(sym("malloc")),
                calloc: std::mem::transmute::<*mut c_void, Calloc>(sym("calloc")),
                realloc: std::mem::transmute::<*mut c_void, Realloc>(sym("realloc")),
                reallocarray: std::mem::transmute::<*mut c_void, ReallocArray>(sym("reallocarray")),
                free: std::mem::transmute::<*mut c_void, Free>(sym("free")),
                posix_memalign: std::mem::transmute::<*mut c_void, PosixMemalign>(sym("posix_memalign")),
                aligned_alloc: std::mem::transmute::<*mut c_void, AlignedAlloc>(sym("aligned_alloc")),
                memalign: std::mem::transmute::<*mut c_void, AlignedAlloc>(sym("memalign")),
                usable: std::mem::transmute::<*mut c_void, UsableSize>(sym("malloc_usable_size")),
                trim: std::mem::transmute::<*mut c_void, Trim>(sym("malloc_trim")),
            }
        }
    })
}

const RTLD_NOW: c_int = 2;
const RTLD_LOCAL: c_int = 0;
const ENOMEM: c_int = 12;
const EINVAL: c_int = 22;

extern "C" {
    #[link_name = "dlopen"]
    fn libc_dlopen(path: *const std::ffi::c_char, flags: c_int) -> *mut c_void;
    #[link_name = "dlsym"]
    fn libc_dlsym(handle: *mut c_void, name: *const std::ffi::c_char) -> *mut c_void;
    fn __errno_location() -> *mut c_int;
}

fn errno() -> c_int {
    // SAFETY: this thread's errno slot.
    unsafe { *__errno_location() }
}

fn clear_errno() {
    // SAFETY: as above.
    unsafe { *__errno_location() = 0 }
}

/// A size that likes the edges.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Size {
    Small(u16),
    NearMax(u16),
    Pow2(u8),
    Any(usize),
}

impl Size {
    fn get(self) -> usize {
        match self {
            Size::Small(n) => n as usize,
            Size::NearMax(k) => usize::MAX - k as usize,
            Size::Pow2(b) => 1usize.wrapping_shl(b as u32 % 64),
            Size::Any(n) => n,
        }
    }
}

#[derive(Arbitrary, Debug)]
pub enum Call {
    Malloc(Size),
    Calloc(Size, Size),
    Realloc(Size, Size),
    ReallocArray(Size, Size, Size),
    PosixMemalign(Size, Size),
    AlignedAlloc(Size, Size),
    Memalign(Size, Size),
}

/// Sizes up to this are expected to succeed on this machine.
const SURELY_FITS: usize = 64 << 20;
/// Sizes from this are impossible (fortalloc's limit is isize::MAX / 2).
const IMPOSSIBLE: usize = isize::MAX as usize / 2 + 1;

/// Checks a returned block: usable, writable, aligned; then frees it.
fn use_and_free(api: &Api, p: *mut c_void, size: usize, align: usize) {
    assert!(!p.is_null());
    assert_eq!(p as usize % align.max(1), 0, "alignment {align}");
    // SAFETY: a live block from the library of at least `size` bytes.
    unsafe {
        assert!((api.usable)(p) >= size);
        if size > 0 {
            *(p as *mut u8) = 1;
            *(p as *mut u8).add(size.min(SURELY_FITS) - 1) = 2;
        }
        (api.free)(p);
    }
}

pub fn run(u: &mut Unstructured) -> arbitrary::Result<()> {
    let api = api();
    let result = calls(api, u);
    // What one input freed goes back to the OS before the next: a calloc
    // of up to 64 MiB is wiped and stays resident in the arena for its
    // purge delay, and at hundreds of such calls a second the cache alone
    // came near libFuzzer's 2 GiB RSS limit (2,034 MiB in one CI run, over
    // it in another). A leak still grows RSS from input to input.
    // SAFETY: `malloc_trim` takes any pad and touches no live block.
    unsafe { (api.trim)(0) };
    result
}

fn calls(api: &Api, u: &mut Unstructured) -> arbitrary::Result<()> {
    let mut calls = 0;
    while !u.is_empty() && calls < 64 {
        calls += 1;
        // SAFETY: the library's functions called with any integers and
        // pointers they returned; that is their contract.
        unsafe {
            match Call::arbitrary(u)? {
                Call::Malloc(n) => {
                    let n = n.get();
                    clear_errno();
                    let p = (api.malloc)(n);
                    if n >= IMPOSSIBLE {
                        assert!(p.is_null() && errno() == ENOMEM, "malloc({n})");
                    } else if n <= SURELY_FITS {
                        use_and_free(api, p, n, if n > 8 { 16 } else { 8 });
                    } else if !p.is_null() {
                        (api.free)(p);
                    } else {
                        assert_eq!(errno(), ENOMEM);
                    }
                }
                Call::Calloc(a, b) => {
                    let (a, b) = (a.get(), b.get());
                    clear_errno();
                    let p = (api.calloc)(a, b);
                    match a.checked_mul(b) {
                        None => assert!(p.is_null() && errno() == ENOMEM, "calloc({a}, {b}) overflow"),
                        Some(t) if t >= IMPOSSIBLE => assert!(p.is_null() && errno() == ENOMEM),
                        Some(t) if t <= SURELY_FITS => {
                            assert!(!p.is_null());
                            let bytes = std::slice::from_raw_parts(p as *const u8, t.min(4096));
                            assert!(bytes.iter().all(|&x| x == 0), "calloc not zeroed");
                            use_and_free(api, p, t, 8);
                        }
                        Some(_) => {
                            if !p.is_null() {
                                (api.free)(p);
                            }
                        }
                    }
                }
                Call::Realloc(a, b) | Call::ReallocArray(a, b, Size::Small(1)) => {
                    let (a, b) = (a.get() % SURELY_FITS, b.get());
                    let p = (api.malloc)(a);
                    assert!(!p.is_null());
                    if a > 0 {
                        *(p as *mut u8) = 0x5a;
                    }
                    clear_errno();
                    let q = (api.realloc)(p, b);
                    if b == 0 {
                        assert!(q.is_null(), "realloc(p, 0) frees and returns NULL");
                    } else if b >= IMPOSSIBLE {
                        assert!(q.is_null() && errno() == ENOMEM);
                        (api.free)(p);
                    } else if b <= SURELY_FITS {
                        assert!(!q.is_null());
                        if a > 0 {
                            assert_eq!(*(q as *const u8), 0x5a, "contents kept");
                        }
                        use_and_free(api, q, b, 1);
                    } else if q.is_null() {
                        (api.free)(p);
                    } else {
                        (api.free)(q);
                    }
                }
                Call::ReallocArray(a, b, c) => {
                    let (b, c) = (b.get(), c.get());
                    let p = (api.malloc)(a.get() % 4096);
                    clear_errno();
                    let q = (api.reallocarray)(p, b, c);
                    match b.checked_mul(c) {
                        None => {
                            assert!(q.is_null() && errno() == ENOMEM, "reallocarray overflow");
                            (api.free)(p);
                        }
                        Some(0) => assert!(q.is_null()),
                        Some(t) if t >= IMPOSSIBLE => {
                            assert!(q.is_null());
                            (api.free)(p);
                        }
                        Some(t) if t <= SURELY_FITS => use_and_free(api, q, t, 1),
                        Some(_) => {
                            if q.is_null() {
                                (api.free)(p)
                            } else {
                                (api.free)(q)
                            }
                        }
                    }
                }
                Call::PosixMemalign(align, size) => {
                    let (align, size) = (align.get(), size.get());
                    let sentinel = 0x1234 as *mut c_void;
                    let mut out = sentinel;
                    let rc = (api.posix_memalign)(&mut out, align, size);
                    let valid = align.is_power_of_two() && align % 8 == 0;
                    if !valid {
                        assert_eq!(rc, EINVAL, "posix_memalign align {align}");
                        assert_eq!(out, sentinel, "*memptr untouched on error");
                    } else if size >= IMPOSSIBLE || align >= IMPOSSIBLE {
                        assert_eq!(rc, ENOMEM);
                        assert_eq!(out, sentinel);
                    } else if rc == 0 {
                        if size <= SURELY_FITS && align <= SURELY_FITS {
                            use_and_free(api, out, size, align);
                        } else {
                            (api.free)(out);
                        }
                    } else {
                        assert_eq!(rc, ENOMEM);
                        assert_eq!(out, sentinel);
                    }
                }
                Call::AlignedAlloc(align, size) | Call::Memalign(align, size) => {
                    let (align, size) = (align.get(), size.get());
                    clear_errno();
                    let p = (api.aligned_alloc)(align, size);
                    if !align.is_power_of_two() {
                        assert!(p.is_null() && errno() == EINVAL, "aligned_alloc align {align}");
                    } else if size >= IMPOSSIBLE || align >= IMPOSSIBLE {
                        assert!(p.is_null() && errno() == ENOMEM);
                    } else if !p.is_null() {
                        if size <= SURELY_FITS && align <= SURELY_FITS {
                            use_and_free(api, p, size, align);
                        } else {
                            (api.free)(p);
                        }
                    }
                    // memalign: a bad alignment is rounded up, never EINVAL
                    // unless it has no power of two above it.
                    clear_errno();
                    let m = (api.memalign)(align, size.min(SURELY_FITS));
                    if align > usize::MAX / 2 + 1 {
                        assert!(m.is_null() && errno() == EINVAL);
                    } else if align <= SURELY_FITS {
                        use_and_free(api, m, size.min(SURELY_FITS), align.max(1).next_power_of_two());
                    } else if !m.is_null() {
                        (api.free)(m);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    #[test]
    fn hostile_arguments_get_posix_answers() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0xca);
        for _ in 0..200 {
            let len = rng.gen_range(0..600);
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = super::run(&mut arbitrary::Unstructured::new(&data));
        }
    }
}
