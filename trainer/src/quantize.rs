//! `scion quantize`: static INT8 of an exported model in the QDQ format, calibrated on the
//! user's own images. The calibration images go through the one preprocessing function
//! and ONNX Runtime on the CPU; the graph rewrite is `scion-onnx`'s `Patch::QuantizeQdq`.

use std::path::{Path, PathBuf};

use scion_edge::Model;
use scion_edge::engine::{self, EngineKind, EngineOptions, ModelSpec, Tensor};
use scion_edge::pipeline::for_each_batch;
use scion_onnx::patch::Patch;
use scion_onnx::quantize::{Histogram, activation_tensors};
use sha2::{Digest, Sha256};

/// How an activation's range is chosen from what calibration saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeMethod {
    /// The largest `|x|`: no clipping, coarse steps when there are outliers.
    MinMax,
    /// The `|x|` below which this percentage of the values lie.
    Percentile(f64),
    /// TensorRT's entropy calibration: the threshold whose quantization loses the least
    /// information (KL divergence).
    Entropy,
}

impl RangeMethod {
    /// The name the card records.
    pub fn describe(self) -> String {
        match self {
            RangeMethod::MinMax => "minmax".into(),
            RangeMethod::Percentile(p) => format!("percentile {p}"),
            RangeMethod::Entropy => "entropy".into(),
        }
    }
}

/// Why quantization failed.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// No usable calibration image.
    #[error("calibration {dir}: {message}")]
    Calibration {
        /// The folder.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    /// The graph cannot be quantized.
    #[error(transparent)]
    Graph(#[from] scion_onnx::Error),
}

/// What calibration measured.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// Images used.
    pub images: usize,
    /// Images that could not be read, and why.
    pub skipped: Vec<(PathBuf, String)>,
    /// sha256 over the sorted content hashes of the images used.
    pub fingerprint: String,
    /// `(activation, |x| threshold)`.
    pub thresholds: Vec<(String, f32)>,
}

/// The images under `dir` (recursively, in path order), at most `limit`.
pub fn calibration_images(dir: &Path, limit: usize) -> Result<Vec<PathBuf>, QuantizeError> {
    let mut paths: Vec<PathBuf> =
        scion_edge::classify::inputs::expand(&[dir.display().to_string()])
            .files
            .into_iter()
            .map(PathBuf::from)
            .collect();
    if paths.is_empty() {
        return Err(QuantizeError::Calibration {
            dir: dir.into(),
            message: "no images there".into(),
        });
    }
    // An even spread over the folder, not its first classes only.
    if paths.len() > limit {
        let step = paths.len() as f64 / limit as f64;
        paths = (0..limit)
            .map(|i| paths[(i as f64 * step) as usize].clone())
            .collect();
    }
    Ok(paths)
}

/// The outputs whose computation is quantized: the class scores. The unknown rule's
/// distances stay float, so rejection works as the card says.
pub fn class_outputs(model: &Model) -> Vec<String> {
    let tensors = &model.card.tensors;
    [&tensors.logits, &tensors.probs]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
}

/// Measure the activation ranges of `model` on `images` (two passes for histograms).
pub fn calibrate(
    model: &Model,
    images: &[PathBuf],
    method: RangeMethod,
    options: &EngineOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Calibration, QuantizeError> {
    let graph = model.proto.graph.as_ref().ok_or_else(|| {
        QuantizeError::Graph(scion_onnx::Error::Graph("the model has no graph".into()))
    })?;
    let input = model.card.tensors.input.clone();
    let targets = activation_tensors(graph, &class_outputs(model));
    let mut probe = model.proto.clone();
    let fetched: Vec<String> = targets.iter().filter(|t| **t != input).cloned().collect();
    for tensor in &fetched {
        Patch::AddOutput {
            tensor: tensor.clone(),
        }
        .apply(&mut probe)?;
    }
    let bytes = scion_onnx::io::encode(&probe);
    let spec = ModelSpec {
        bytes: &bytes,
        input: &input,
        outputs: &fetched,
        input_shape: model.card.preprocessing.input_shape(1),
    };
    let mut session = engine::prepare(EngineKind::OrtCpu, &spec, options)?;
    let contract = &model.card.preprocessing;
    let shape1 = contract.input_shape(1);
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let passes = if method == RangeMethod::MinMax { 1 } else { 2 };
    let mut max = vec![0f32; targets.len()];
    let mut histograms: Vec<Histogram> = Vec::new();
    let mut skipped = Vec::new();
    let mut hashes = Vec::new();
    for pass in 0..passes {
        if pass == 1 {
            histograms = max.iter().map(|m| Histogram::new(*m)).collect();
        }
        let mut done = 0;
        let result = for_each_batch(
            images,
            contract,
            8,
            threads,
            |batch| -> Result<(), engine::EngineError> {
                let n = batch.indices.len();
                let mut shape = shape1.clone();
                shape[0] = n;
                let tensor = Tensor {
                    shape,
                    data: batch.data,
                };
                let outputs = session.run(&tensor)?;
                for (i, target) in targets.iter().enumerate() {
                    let values = if *target == input {
                        &tensor.data
                    } else {
                        match outputs.get(target) {
                            Some(t) => &t.data,
                            None => continue,
                        }
                    };
                    if pass == 0 {
                        max[i] = values.iter().fold(max[i], |m, v| m.max(v.abs()));
                    } else {
                        histograms[i].add(values);
                    }
                }
                done += n;
                progress(done + pass * images.len());
                Ok(())
            },
            |i, reason| {
                if pass == 0 {
                    skipped.push((images[i].clone(), reason));
                }
                Ok(())
            },
        );
        result?;
    }
    for path in images {
        if skipped.iter().any(|(p, _)| p == path) {
            continue;
        }
        if let Ok(bytes) = std::fs::read(path) {
            hashes.push(hex::encode(Sha256::digest(&bytes)));
        }
    }
    if hashes.is_empty() {
        return Err(QuantizeError::Calibration {
            dir: images.first().cloned().unwrap_or_default(),
            message: "no calibration image could be read".into(),
        });
    }
    hashes.sort();
    let fingerprint = hex::encode(Sha256::digest(hashes.join("\n").as_bytes()));
    let thresholds = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let threshold = match method {
                RangeMethod::MinMax => max[i],
                RangeMethod::Percentile(p) => histograms[i].percentile(p),
                RangeMethod::Entropy => histograms[i].entropy_threshold(),
            };
            tracing::debug!(
                tensor = %t,
                max = max[i],
                threshold,
                method = %method.describe(),
                "activation range"
            );
            (t.clone(), threshold)
        })
        .collect();
    Ok(Calibration {
        images: hashes.len(),
        skipped,
        fingerprint,
        thresholds,
    })
}

/// Top-1 accuracy of FP32 and INT8 per class, and how often they agree.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Comparison {
    /// Images scored by both.
    pub images: usize,
    /// FP32 top-1 accuracy, %.
    pub fp32_top1: f64,
    /// INT8 top-1 accuracy, %.
    pub int8_top1: f64,
    /// FP32 minus INT8, points.
    pub drop: f64,
    /// Images where both give the same top-1, %.
    pub agreement: f64,
    /// `(class, images, fp32 %, int8 %)`.
    pub per_class: Vec<(String, usize, f64, f64)>,
}

/// Compare per-image top-1s of the two models against `labels`.
pub fn compare(classes: &[String], labels: &[usize], fp32: &[usize], int8: &[usize]) -> Comparison {
    let pct = |n: usize, d: usize| {
        if d == 0 {
            0.0
        } else {
            100.0 * n as f64 / d as f64
        }
    };
    let n = labels.len();
    let right = |pred: &[usize]| pred.iter().zip(labels).filter(|(p, l)| p == l).count();
    let agree = fp32.iter().zip(int8).filter(|(a, b)| a == b).count();
    let per_class = classes
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let idx: Vec<usize> = (0..n).filter(|&i| labels[i] == c).collect();
            let hits = |pred: &[usize]| idx.iter().filter(|&&i| pred[i] == c).count();
            (
                name.clone(),
                idx.len(),
                pct(hits(fp32), idx.len()),
                pct(hits(int8), idx.len()),
            )
        })
        .collect();
    let (a32, a8) = (pct(right(fp32), n), pct(right(int8), n));
    Comparison {
        images: n,
        fp32_top1: a32,
        int8_top1: a8,
        drop: a32 - a8,
        agreement: pct(agree, n),
        per_class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_comparison_counts_per_class_and_agreement() {
        let classes = vec!["a".to_string(), "b".to_string()];
        let labels = [0, 0, 1, 1];
        let c = compare(&classes, &labels, &[0, 0, 1, 0], &[0, 1, 1, 0]);
        assert_eq!(c.fp32_top1, 75.0);
        assert_eq!(c.int8_top1, 50.0);
        assert_eq!(c.drop, 25.0);
        assert_eq!(c.agreement, 75.0);
        assert_eq!(
            c.per_class,
            vec![
                ("a".to_string(), 2, 100.0, 50.0),
                ("b".to_string(), 2, 50.0, 50.0)
            ]
        );
    }
}
