#![no_main]

use scion_fuzz::graph::{FuzzModel, encode};

libfuzzer_sys::fuzz_target!(|model: FuzzModel| {
    let _ = scion_fuzz::entries::onnx_model(&encode(&model));
});
