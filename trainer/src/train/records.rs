//! What a training run writes besides the model: the card's summaries and references, the
//! data-set fingerprint, the checkpoint, the report files, and the key of a parity record.

use std::path::Path;

use scion_edge::engine::EngineKind;
use scion_onnx::card::ReferenceOutput;
use sha2::{Digest, Sha256};

use super::{TrainError, TrainReport};
use crate::dataset::Sample;
use crate::fit::{EpochRecord, Trained};
use crate::metrics::Metrics;

/// The card keeps totals and per-class figures; the full confusion matrix is in the report.
pub(super) fn summary_json(m: &Metrics) -> serde_json::Value {
    serde_json::json!({
        "images": m.images,
        "top1": m.top1,
        "top5": m.top5,
        "loss": m.loss,
        "per_class": m.per_class,
    })
}

pub(super) fn reference(sample: &Sample, probs: &[f32]) -> Result<ReferenceOutput, TrainError> {
    let bytes = std::fs::read(&sample.path).map_err(|e| TrainError::Report {
        path: sample.path.clone(),
        message: e.to_string(),
    })?;
    let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(3);
    Ok(ReferenceOutput {
        image_sha256: hex::encode(Sha256::digest(&bytes)),
        name: sample
            .path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
        top1: ranked[0].0,
        top: ranked,
    })
}

/// Names a parity result: the graph (weights included, card excluded), the engine, the
/// tolerance and the images.
pub(super) fn parity_key(
    model: &scion_onnx::pb::ModelProto,
    engine: EngineKind,
    tolerance: f32,
    dataset_fingerprint: &str,
) -> String {
    let mut graph_only = model.clone();
    graph_only.metadata_props.clear();
    let mut h = Sha256::new();
    h.update(scion_onnx::io::encode(&graph_only));
    h.update(format!(
        "\n{engine}\n{tolerance:e}\n{dataset_fingerprint}\nscion {}",
        env!("CARGO_PKG_VERSION")
    ));
    hex::encode(&h.finalize()[..16])
}

/// sha256 over the class names and the sorted (split, class, image hash) of every image used.
pub(super) fn fingerprint(
    classes: &[String],
    train: &[Sample],
    val: &[Sample],
) -> Result<String, TrainError> {
    let mut entries = Vec::new();
    for (split, samples) in [("train", train), ("val", val)] {
        for s in samples {
            let bytes = std::fs::read(&s.path).map_err(|e| TrainError::Report {
                path: s.path.clone(),
                message: e.to_string(),
            })?;
            entries.push(format!(
                "{split}\t{}\t{}",
                classes[s.class],
                hex::encode(Sha256::digest(&bytes))
            ));
        }
    }
    entries.sort();
    let mut h = Sha256::new();
    classes
        .iter()
        .for_each(|c| h.update(format!("class\t{c}\n")));
    entries.iter().for_each(|e| h.update(format!("{e}\n")));
    Ok(hex::encode(h.finalize()))
}

#[derive(serde::Serialize)]
struct Checkpoint<'a> {
    classes: &'a [String],
    epoch: usize,
    val_loss: f64,
    val_acc: f64,
    layers: Vec<serde_json::Value>,
    backbone: Vec<serde_json::Value>,
}

/// The best weights so far: the head as JSON (`checkpoint.json`) and, when backbone layers
/// train, their values as little-endian f32 in `checkpoint.backbone.f32`, named and sized
/// in the JSON. Each file is replaced atomically; the JSON is written last.
pub(super) fn write_checkpoint(
    path: &Path,
    trained: &Trained,
    classes: &[String],
    record: &EpochRecord,
) -> Result<(), TrainError> {
    let report = |path: &Path, e: std::io::Error| TrainError::Report {
        path: path.into(),
        message: e.to_string(),
    };
    let layers = &trained.layers;
    if !trained.backbone.is_empty() {
        let values = path.with_extension("backbone.f32");
        let bytes: Vec<u8> = trained
            .backbone
            .iter()
            .flat_map(|(_, v)| v.iter().flat_map(|x| x.to_le_bytes()))
            .collect();
        scion_onnx::io::write_atomically(&values, &bytes)
            .map_err(|e| report(&values, std::io::Error::other(e.to_string())))?;
    }
    let checkpoint = Checkpoint {
        backbone: trained
            .backbone
            .iter()
            .map(|(name, v)| serde_json::json!({ "name": name, "len": v.len() }))
            .collect(),
        classes,
        epoch: record.epoch,
        val_loss: record.val_loss,
        val_acc: record.val_acc,
        layers: layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "inputs": l.inputs, "outputs": l.outputs,
                    "weight": l.weight, "bias": l.bias,
                })
            })
            .collect(),
    };
    let json = serde_json::to_vec(&checkpoint).expect("a checkpoint serializes");
    scion_onnx::io::write_atomically(path, &json)
        .map_err(|e| report(path, std::io::Error::other(e.to_string())))
}

/// `metrics.json`, `history.json`, `parity.json`, `run.json`, `curves.png`, `confusion.png`
/// in the report folder. A missing font skips the plots with a warning; the numbers are
/// still written.
pub(super) fn write_reports(
    dir: &Path,
    report: &TrainReport,
    val: &[Sample],
    val_probs: &[Vec<f32>],
) -> Result<(), TrainError> {
    let write = |name: &str, value: &dyn erased::Json| -> Result<(), TrainError> {
        let path = dir.join(name);
        scion_onnx::io::write_atomically(&path, value.to_json().as_bytes()).map_err(|e| {
            TrainError::Report {
                path: path.clone(),
                message: e.to_string(),
            }
        })
    };
    write("metrics.json", &report.metrics)?;
    write("history.json", &report.history)?;
    write("parity.json", &report.parity)?;
    write(
        "run.json",
        &serde_json::json!({
            "unfreeze": report.unfreeze,
            "train_images": report.train_images,
            "val_images": report.val_images,
            "skipped": report.skipped.len(),
            "feature_seconds": report.feature_seconds,
            "fit_seconds": report.fit_seconds,
            "train_images_per_second": report.train_images_per_second,
            "trainable_backbone_values": report.trainable_backbone_values,
            "peak_rss_bytes": report.peak_rss_bytes,
            "epochs": report.history.len(),
            "best_epoch": report.best_epoch,
            "stop": report.stop,
            "top1": report.metrics.top1,
            "linear_head": report.linear_head,
            "lp_ft": report.lp_ft,
            "calibration": report.calibration,
            "uncalibrated": {
                "ece": report.uncalibrated.ece,
                "brier": report.uncalibrated.brier,
            },
            "unknown": report.unknown,
            "left_out": report.left_out,
        }),
    )?;
    let curves = if report.history.is_empty() {
        // The solved linear head has no epochs; its path over C is in run.json.
        Ok(())
    } else {
        crate::plots::curves(&report.history, report.best_epoch, &dir.join("curves.png"))
    };
    for result in [
        curves,
        crate::plots::confusion(&report.metrics, &dir.join("confusion.png")),
        crate::plots::reliability(&report.metrics, &dir.join("reliability.png")),
        worst_sheet(val, val_probs, &report.classes, &dir.join("worst.png")),
    ] {
        if let Err(e) = result {
            tracing::warn!("plot skipped: {e}");
        }
    }
    Ok(())
}

/// The validation images with the highest loss, worst first, six per row.
fn worst_sheet(
    val: &[Sample],
    probs: &[Vec<f32>],
    classes: &[String],
    path: &Path,
) -> Result<(), crate::plots::PlotError> {
    use crate::sheets::{Cell, Mark, Row, sheet, thumbnail};
    let mut losses: Vec<(f32, usize)> = probs
        .iter()
        .zip(val)
        .enumerate()
        .map(|(i, (p, s))| (-p[s.class].max(1e-12).ln(), i))
        .collect();
    losses.sort_by(|a, b| b.0.total_cmp(&a.0));
    let cells: Vec<Cell> = losses
        .iter()
        .take(24)
        .map(|&(loss, i)| {
            let predicted = crate::fit::argmax(&probs[i]);
            Cell {
                image: thumbnail(&val[i].path, 96),
                caption: format!(
                    "{} ({:.0}%)\nis {}, loss {loss:.1}",
                    classes[predicted],
                    100.0 * probs[i][predicted],
                    classes[val[i].class]
                ),
                mark: Some(if predicted == val[i].class {
                    Mark::Good
                } else {
                    Mark::Bad
                }),
            }
        })
        .collect();
    let rows: Vec<Row> = cells
        .chunks(6)
        .enumerate()
        .map(|(r, chunk)| Row {
            title: format!(
                "highest validation loss, {}-{}",
                6 * r + 1,
                6 * r + chunk.len()
            ),
            cells: chunk.to_vec(),
        })
        .collect();
    sheet(
        "validation images the model gets most wrong",
        &rows,
        96,
        path,
    )
    .map(drop)
}

mod erased {
    /// Pretty JSON of anything serialisable, behind a trait object.
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string_pretty(self).expect("report values serialize")
        }
    }
}
