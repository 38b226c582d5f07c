#![no_main]
//! The C entry points with hostile arguments (see `fortalloc_fuzz::capi`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fortalloc_fuzz::capi::run(&mut arbitrary::Unstructured::new(data));
});
