//! The thread's heap pointer in thread-local storage, as a macro: this
//! layer owns how the slot is reached, the allocator above it owns what
//! the slot holds ([`thread_slot!`] is invoked once, in `core::thread`).
//!
//! By default a const-initialised `std::thread_local!`, which in an
//! executable (Rust's `#[global_allocator]`) is one `fs:`-relative load. In
//! a shared library the compiler must assume the library may be
//! `dlopen`ed and uses the general-dynamic model: a call to
//! `__tls_get_addr` on every malloc and free. The C library turns on the
//! `tls-initial-exec` feature instead (x86_64 Linux): the slot is declared
//! in assembly and reached with the initial-exec model, one load of its
//! offset from the GOT plus one `fs:` load, as glibc does for its own
//! malloc state. Measured through `LD_PRELOAD` on a malloc/free loop of
//! 16-128 byte blocks: see docs/PERFORMANCE.md, "Initial-exec TLS in the C
//! library".
//!
//! Initial-exec TLS is what a preloaded or linked library gets anyway; a
//! library `dlopen`ed later takes it from glibc's reserve of static TLS
//! (8 bytes here), which is what the option is for.

/// Declares module `$name` with `get() -> *mut $ty` and `set(*mut $ty)`
/// for this thread's slot, which starts as the address of the static
/// `$empty` (`$empty_ptr` is that address as a constant). Invoke it once:
/// the initial-exec slot has a fixed symbol name.
#[cfg(all(feature = "tls-initial-exec", target_arch = "x86_64", target_os = "linux"))]
macro_rules! thread_slot {
    ($name:ident: *mut $ty:ty = $empty:path, $empty_ptr:expr) => {
        mod $name {
            use super::*;

            // The slot: 8 bytes of initialised TLS whose initial value is
            // the static empty value (relocated by the dynamic loader like
            // any data).
            core::arch::global_asm!(
                ".pushsection .tdata,\"awT\",@progbits",
                ".p2align 3",
                // Global so code inlined into other crates' objects links
                // to it; hidden so a shared library does not export it.
                ".globl fortalloc_tls_heap",
                ".hidden fortalloc_tls_heap",
                ".type fortalloc_tls_heap, @object",
                ".size fortalloc_tls_heap, 8",
                "fortalloc_tls_heap:",
                ".quad {empty}",
                ".popsection",
                empty = sym $empty,
            );

            #[inline(always)]
            fn slot() -> *mut *mut $ty {
                let offset: usize;
                let base: usize;
                // `fs:0` holds the thread pointer's own address on x86_64
                // Linux; the loader sets the GOT entry of an initial-exec
                // TLS symbol.
                // SAFETY: reads the slot's GOT offset and the thread
                // pointer; neither touches memory the program owns.
                unsafe {
                    core::arch::asm!(
                        "mov {off}, qword ptr [rip + fortalloc_tls_heap@GOTTPOFF]",
                        "mov {base}, qword ptr fs:[0]",
                        off = out(reg) offset,
                        base = out(reg) base,
                        options(nostack, readonly, pure, preserves_flags),
                    );
                }
                (base.wrapping_add(offset)) as *mut *mut $ty
            }

            /// One `fs:`-relative load through the slot's offset, where
            /// going through [`slot`] took a third instruction to form the
            /// address; this runs on every malloc and free.
            #[inline(always)]
            pub fn get() -> *mut $ty {
                let value: *mut $ty;
                // `readonly` without `pure` keeps the load after any `set`.
                // The slot's offset comes from the GOT (set by the loader,
                // as in `slot`).
                // SAFETY: the GOT entry is the loader's; the slot read is
                // this thread's own 8 bytes of TLS.
                unsafe {
                    core::arch::asm!(
                        "mov {h}, qword ptr [rip + fortalloc_tls_heap@GOTTPOFF]",
                        "mov {h}, qword ptr fs:[{h}]",
                        h = out(reg) value,
                        options(nostack, readonly, preserves_flags),
                    );
                }
                value
            }

            #[inline(always)]
            pub fn set(value: *mut $ty) {
                // SAFETY: `slot` is this thread's own 8 bytes of TLS (see
                // `slot`), which hold a pointer.
                unsafe { *slot() = value }
            }
        }
    };
}

#[cfg(not(all(feature = "tls-initial-exec", target_arch = "x86_64", target_os = "linux")))]
macro_rules! thread_slot {
    ($name:ident: *mut $ty:ty = $empty:path, $empty_ptr:expr) => {
        mod $name {
            use super::*;
            use core::cell::Cell;

            std::thread_local! {
                // Const-initialised and without a destructor, so std
                // stores it as a plain `#[thread_local]` static: it never
                // allocates or registers anything.
                static SLOT: Cell<*mut $ty> = const { Cell::new($empty_ptr) };
            }

            #[inline(always)]
            pub fn get() -> *mut $ty {
                SLOT.with(|h| h.get())
            }

            #[inline(always)]
            pub fn set(value: *mut $ty) {
                SLOT.with(|h| h.set(value));
            }
        }
    };
}

pub(crate) use thread_slot;
