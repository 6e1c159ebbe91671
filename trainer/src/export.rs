//! Export: the trained head grafted onto the backbone (cut at its feature tensor) as one
//! ONNX model with outputs `logits`, `probs` and the features, and a card that says how to
//! feed it, what it was trained on and what it should output for a few reference images.

use std::path::Path;

use scion_edge::Model;
use scion_onnx::card::{Calibration, ModelCard, Provenance, ReferenceOutput, UnknownRule};
use scion_onnx::distance::Prototypes;
use scion_onnx::patch::{Dense, Patch};
use scion_onnx::pb::ModelProto;

/// What goes into the card besides the backbone's preprocessing.
#[derive(Debug, Clone)]
pub struct ExportInfo {
    /// Model name (e.g. the output file stem).
    pub name: String,
    /// Class names, in output order.
    pub labels: Vec<String>,
    /// sha256 of the backbone file.
    pub backbone_sha256: String,
    /// Fingerprint of the training data.
    pub dataset_fingerprint: String,
    /// The training configuration.
    pub training: serde_json::Value,
    /// Validation metrics (and, after the check, parity).
    pub metrics: serde_json::Value,
    /// Reference images and their expected outputs.
    pub references: Vec<ReferenceOutput>,
    /// The temperature already folded into `layers`.
    pub calibration: Option<Calibration>,
    /// The unknown rule and the prototypes its distance output is computed from.
    pub unknown: Option<(UnknownRule, Prototypes)>,
}

/// Graft `layers` onto `backbone` at `feature_tensor` and write the card.
pub fn build(
    backbone: &Model,
    feature_tensor: &str,
    layers: &[Dense],
    info: ExportInfo,
) -> scion_onnx::Result<ModelProto> {
    let mut model = backbone.proto.clone();
    Patch::GraftHead {
        features: feature_tensor.to_string(),
        layers: layers.to_vec(),
    }
    .apply(&mut model)?;
    if let Some((rule, prototypes)) = &info.unknown {
        Patch::PrototypeDistance {
            features: feature_tensor.to_string(),
            prototypes: prototypes.clone(),
            output: rule.distance_tensor.clone(),
        }
        .apply(&mut model)?;
    }
    // Only the new card describes this model.
    model
        .metadata_props
        .retain(|p| p.key != scion_onnx::card::CARD_KEY);
    let source = &backbone.card;
    let mut card = ModelCard {
        name: info.name,
        labels: info.labels,
        preprocessing: source.preprocessing.clone(),
        tensors: source.tensors.clone(),
        provenance: Provenance {
            created_by: format!("scion train {}", env!("CARGO_PKG_VERSION")),
            source: format!(
                "{} (backbone {}), {}",
                source.name,
                backbone.path.display(),
                source.provenance.source
            ),
            source_sha256: source.provenance.source_sha256.clone(),
            backbone_sha256: Some(info.backbone_sha256),
            dataset_fingerprint: Some(info.dataset_fingerprint),
            training: Some(info.training),
            metrics: Some(info.metrics),
            references: info.references,
            license: source.provenance.license.clone(),
        },
        calibration: info.calibration,
        unknown: info.unknown.map(|(rule, _)| rule),
        ..source.clone()
    };
    card.tensors.features = Some(feature_tensor.to_string());
    card.tensors.logits = Some("logits".into());
    card.tensors.probs = Some("probs".into());
    card.validate()?;
    card.check_against(&model)?;
    card.write_to(&mut model);
    Ok(model)
}

/// Replace the card's metrics (e.g. with the parity result) and save atomically.
pub fn save_with_metrics(
    model: &mut ModelProto,
    metrics: serde_json::Value,
    path: &Path,
) -> scion_onnx::Result<()> {
    let mut card = ModelCard::from_model(model)?
        .ok_or_else(|| scion_onnx::Error::Card("the exported model lost its card".into()))?;
    card.provenance.metrics = Some(metrics);
    card.write_to(model);
    scion_onnx::io::save(model, path)
}
