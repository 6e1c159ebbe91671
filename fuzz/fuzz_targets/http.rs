#![no_main]

// The HTTP API in-process: see src/http/mod.rs for the input layout and the promises checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = scion_fuzz::http::exchange(data);
});
