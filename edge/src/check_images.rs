//! The images a reduced-precision engine is checked on, preprocessed by the one
//! preprocessing function: a folder (a validation split, `--check-images`) or the model
//! store's copies of the card's reference images.

use std::path::Path;

use crate::engine::Tensor;
use crate::engine::precision_check::CheckImages;
use crate::model::Model;
use crate::preprocess::preprocess;

/// The output whose arg-max is the model's answer.
fn answer_output(model: &Model) -> String {
    let tensors = &model.card.tensors;
    tensors
        .probs
        .clone()
        .or_else(|| tensors.logits.clone())
        .or_else(|| model.outputs.first().cloned())
        .unwrap_or_default()
}

fn tensor(model: &Model, bytes: &[u8]) -> Result<Tensor, String> {
    let contract = &model.card.preprocessing;
    Ok(Tensor {
        shape: contract.input_shape(1),
        data: preprocess(bytes, contract).map_err(|e| e.to_string())?,
    })
}

/// Up to `limit` images under `dir` (found as `classify` finds them, in path order, so
/// every run checks the same ones). An unreadable image is an error naming it: a check set must be sound.
pub fn from_folder(model: &Model, dir: &Path, limit: usize) -> Result<CheckImages, String> {
    let mut paths: Vec<std::path::PathBuf> =
        crate::classify::inputs::expand(&[dir.display().to_string()])
            .files
            .into_iter()
            .map(Into::into)
            .collect();
    if paths.is_empty() {
        return Err(format!("check images {}: no images there", dir.display()));
    }
    paths.truncate(limit);
    let inputs = paths
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            tensor(model, &bytes).map_err(|e| format!("{}: {e}", path.display()))
        })
        .collect::<Result<_, String>>()?;
    Ok(CheckImages {
        inputs,
        output: answer_output(model),
        source: dir.display().to_string(),
    })
}

/// The card's reference images found in `references` (named by their sha256); those
/// missing are skipped, as the store's reference check does.
pub fn from_references(model: &Model, references: &Path) -> CheckImages {
    let inputs = model
        .card
        .provenance
        .references
        .iter()
        .filter_map(|r| std::fs::read(references.join(&r.image_sha256)).ok())
        .filter_map(|bytes| tensor(model, &bytes).ok())
        .collect();
    CheckImages {
        inputs,
        output: answer_output(model),
        source: format!("the card's reference images in {}", references.display()),
    }
}
