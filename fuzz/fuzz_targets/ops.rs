#![no_main]
//! Sequences of allocator operations on several threads, checked against a
//! shadow model (see `fortalloc_fuzz::ops`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fortalloc_fuzz::ops::run(&mut arbitrary::Unstructured::new(data));
});
