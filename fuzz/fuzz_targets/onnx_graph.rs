#![no_main]

use scion_fuzz::graph::{FuzzModel, encode};

libfuzzer_sys::fuzz_target!(|model: FuzzModel| {
    let bytes = encode(&model);
    // `SCION_FUZZ_SAVE=FILE` with an artifact as the input keeps the model it generated,
    // as an ONNX file for `fuzz/regressions/onnx_graph/`.
    if let Some(path) = std::env::var_os("SCION_FUZZ_SAVE") {
        let _ = std::fs::write(path, &bytes);
    }
    let _ = scion_fuzz::entries::onnx_model(&bytes);
});
