#![no_main]
//! Use-after-free writes and overflows, then more allocation: fortalloc
//! must never hand out memory outside its pages or overlapping a live block
//! (see `fortalloc_fuzz::corrupt`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fortalloc_fuzz::corrupt::run(&mut arbitrary::Unstructured::new(data));
});
