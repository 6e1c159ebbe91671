//! Which pretrained representation suits your data: a linear probe (a softmax classifier
//! on frozen, standardised features) scored by stratified k-fold cross-validation. The
//! same head trainer as `scion train`, so a probe's figure predicts what training a head
//! on that backbone gives.

use std::sync::atomic::AtomicBool;

use burn::prelude::Device;
use scion_edge::rng::SplitMix64;

use crate::fit::{FitConfig, FitError, Split, TrainingData, fit};

/// The cross-validated score of one representation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeScore {
    /// Accuracy on each held-out fold, after the last epoch (no epoch is picked on the
    /// held-out fold, so the figure is not optimistic).
    pub fold_accuracy: Vec<f64>,
    /// Mean over folds.
    pub mean: f64,
    /// Standard deviation over folds.
    pub std: f64,
}

/// Folds for stratified cross-validation: every class spread evenly, shuffled by `seed`.
pub fn stratified_folds(labels: &[usize], folds: usize, seed: u64) -> Vec<usize> {
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut fold = vec![0; labels.len()];
    let mut rng = SplitMix64::new(seed);
    let mut offset = 0;
    for class in 0..classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        rng.shuffle(&mut members);
        for (j, &i) in members.iter().enumerate() {
            fold[i] = (j + offset) % folds;
        }
        offset += members.len();
    }
    fold
}

/// Cross-validate a linear head on `features` (`labels.len() x dim`; classes are
/// `0..=max(labels)`): `folds` folds, each trained with `config` (its patience is ignored:
/// every fold trains all epochs). Setting `interrupt` stops it with an error: a fold cut
/// short would give a score that means nothing.
pub fn cross_validate(
    features: &[f32],
    dim: usize,
    labels: &[usize],
    folds: usize,
    config: &FitConfig,
    device: &Device,
    interrupt: &AtomicBool,
) -> Result<ProbeScore, FitError> {
    if folds < 2 || labels.len() < folds {
        return Err(FitError::Input(format!(
            "{folds}-fold cross-validation needs at least 2 folds and {folds} images, got {}",
            labels.len()
        )));
    }
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let fold_of = stratified_folds(labels, folds, config.seed);
    let config = FitConfig {
        patience: 0,
        ..config.clone()
    };
    let mut fold_accuracy = Vec::with_capacity(folds);
    for fold in 0..folds {
        let (train, held): (Vec<usize>, Vec<usize>) =
            (0..labels.len()).partition(|&i| fold_of[i] != fold);
        let (mean, scale) = standardiser(features, dim, &train);
        let take = |rows: &[usize]| -> Vec<f32> {
            rows.iter()
                .flat_map(|&i| {
                    features[i * dim..(i + 1) * dim]
                        .iter()
                        .zip(mean.iter().zip(&scale))
                        .map(|(x, (m, s))| (x - m) * s)
                })
                .collect()
        };
        let (train_x, held_x) = (take(&train), take(&held));
        let train_y: Vec<usize> = train.iter().map(|&i| labels[i]).collect();
        let held_y: Vec<usize> = held.iter().map(|&i| labels[i]).collect();
        let fitted = fit(
            &TrainingData {
                train_views: &[&train_x],
                train_labels: &train_y,
                val: Split {
                    features: &held_x,
                    labels: &held_y,
                },
                dim,
                classes,
            },
            &config,
            device,
            interrupt,
            &mut (),
        )?;
        if interrupt.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(FitError::Input(format!(
                "interrupted in fold {} of {folds}",
                fold + 1
            )));
        }
        let last = fitted
            .history
            .last()
            .ok_or_else(|| FitError::Input("interrupted before the first epoch".into()))?;
        fold_accuracy.push(last.val_acc);
    }
    let mean = fold_accuracy.iter().sum::<f64>() / folds as f64;
    let var = fold_accuracy
        .iter()
        .map(|a| (a - mean).powi(2))
        .sum::<f64>()
        / folds as f64;
    Ok(ProbeScore {
        fold_accuracy,
        mean,
        std: var.sqrt(),
    })
}

/// Per-feature mean and inverse standard deviation over `rows` (constant features get
/// scale 0, so they vanish instead of exploding).
fn standardiser(features: &[f32], dim: usize, rows: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let mut mean = vec![0.0f64; dim];
    let mut sq = vec![0.0f64; dim];
    for &i in rows {
        for (j, &x) in features[i * dim..(i + 1) * dim].iter().enumerate() {
            mean[j] += f64::from(x);
            sq[j] += f64::from(x) * f64::from(x);
        }
    }
    let n = rows.len().max(1) as f64;
    let scale = mean
        .iter()
        .zip(&sq)
        .map(|(m, s)| {
            let var = s / n - (m / n).powi(2);
            if var > 1e-12 {
                (1.0 / var.sqrt()) as f32
            } else {
                0.0
            }
        })
        .collect();
    (mean.iter().map(|m| (m / n) as f32).collect(), scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_stratified_and_cover_everything() {
        let labels: Vec<usize> = (0..30).map(|i| i % 3).collect();
        let folds = stratified_folds(&labels, 5, 1);
        for f in 0..5 {
            for c in 0..3 {
                let n = (0..30).filter(|&i| folds[i] == f && labels[i] == c).count();
                assert_eq!(n, 2, "fold {f} class {c}");
            }
        }
    }
}
