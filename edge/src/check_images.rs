//! The images a reduced-precision engine is checked on, preprocessed by the one
//! preprocessing function: a folder (a validation split, `--check-images`) or the model
//! store's copies of the card's reference images.

use std::path::{Path, PathBuf};

use crate::engine::precision_check::CheckImages;
use crate::model::Model;

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

fn check_images(model: &Model, images: Vec<(String, Vec<u8>)>, source: String) -> CheckImages {
    CheckImages {
        images,
        preprocessing: model.card.preprocessing.clone(),
        output: answer_output(model),
        source,
    }
}

/// Up to `limit` images under `dir`, found as `classify` finds them, in path order, so
/// every run checks the same ones. A file that cannot be read is an error naming it; one
/// that does not decode is left out of the check and counted.
pub fn from_folder(model: &Model, dir: &Path, limit: usize) -> Result<CheckImages, String> {
    let mut paths: Vec<PathBuf> = crate::classify::inputs::expand(&[dir.display().to_string()])
        .files
        .into_iter()
        .map(Into::into)
        .collect();
    if paths.is_empty() {
        return Err(format!("check images {}: no images there", dir.display()));
    }
    paths.truncate(limit);
    Ok(check_images(
        model,
        read_all(&paths)?,
        dir.display().to_string(),
    ))
}

/// The images at `paths` (a validation split, say), described as `source` in messages.
pub fn from_paths(model: &Model, paths: &[PathBuf], source: String) -> Result<CheckImages, String> {
    Ok(check_images(model, read_all(paths)?, source))
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<(String, Vec<u8>)>, String> {
    paths
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((path.display().to_string(), bytes))
        })
        .collect()
}

/// The card's reference images found in `references` (named by their sha256); those
/// missing are skipped, as the store's reference check does.
pub fn from_references(model: &Model, references: &Path) -> CheckImages {
    let images = model
        .card
        .provenance
        .references
        .iter()
        .filter_map(|r| {
            let path = references.join(&r.image_sha256);
            std::fs::read(&path)
                .ok()
                .map(|bytes| (path.display().to_string(), bytes))
        })
        .collect();
    check_images(
        model,
        images,
        format!("the card's reference images in {}", references.display()),
    )
}
