#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = scion_fuzz::entries::image_decode(data);
});
