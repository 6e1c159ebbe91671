//! "None of my classes": the rejection rule a deployed classifier needs so it does not
//! name one of its classes for a frame that shows none of them. Two signals, both fitted
//! on the validation split: the calibrated top-1 probability (low for images between
//! classes) and the distance in standardised feature space to the nearest class
//! prototype (large for images unlike anything trained on — the signal that catches
//! another domain, where softmax is often confidently wrong).

use scion_onnx::card::UnknownRule;
use scion_onnx::distance::Prototypes;

use crate::linear::Standardizer;

/// Fewest validation images per class for fitting thresholds.
pub const MIN_PER_CLASS: usize = 5;

/// Name of the graph output holding the distances.
pub const DISTANCE_OUTPUT: &str = "prototype_distance";

/// Per-class means of the standardised training features.
pub fn prototypes(train: &[f32], labels: &[usize], dim: usize, classes: usize) -> Prototypes {
    let standardizer = Standardizer::fit(train, dim);
    let mut centres = vec![0f64; classes * dim];
    let mut counts = vec![0usize; classes];
    for (row, &c) in train.chunks_exact(dim).zip(labels) {
        counts[c] += 1;
        for j in 0..dim {
            centres[c * dim + j] +=
                f64::from((row[j] - standardizer.mean[j]) / standardizer.std[j]);
        }
    }
    let centres = centres
        .iter()
        .enumerate()
        .map(|(i, v)| (v / counts[i / dim].max(1) as f64) as f32)
        .collect();
    Prototypes {
        inv_std: standardizer.std.iter().map(|s| 1.0 / s).collect(),
        mean: standardizer.mean,
        centres,
        classes,
    }
}

/// Distances from each row of `features` to each prototype, as the graph computes them.
pub fn distances(prototypes: &Prototypes, features: &[f32]) -> Vec<Vec<f32>> {
    let dim = prototypes.mean.len();
    features
        .chunks_exact(dim)
        .map(|row| {
            let z: Vec<f32> = row
                .iter()
                .zip(&prototypes.mean)
                .zip(&prototypes.inv_std)
                .map(|((x, m), s)| (x - m) * s)
                .collect();
            prototypes
                .centres
                .chunks_exact(dim)
                .map(|p| {
                    z.iter()
                        .zip(p)
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum::<f32>()
                        .sqrt()
                })
                .collect()
        })
        .collect()
}

/// How far beyond the boundary images the thresholds sit (probability: absolute; distance:
/// relative).
const BOUNDARY_MARGIN: f32 = 1e-4;

/// Fit both thresholds on validation images (`top_probs` calibrated, `distances` per
/// class) so the rule keeps at least `recall` of them, loosening both together; or say
/// why no rule can be fitted.
pub fn fit_rule(
    top_probs: &[f32],
    distances: &[Vec<f32>],
    labels: &[usize],
    classes: usize,
    recall: f32,
) -> Result<UnknownRule, String> {
    let counts = crate::linear::class_counts(labels, classes);
    if let Some((c, &n)) = counts.iter().enumerate().find(|(_, n)| **n < MIN_PER_CLASS) {
        return Err(format!(
            "class {c} has {n} validation images; the unknown rule needs at least \
             {MIN_PER_CLASS} per class"
        ));
    }
    let nearest: Vec<f32> = distances
        .iter()
        .map(|d| d.iter().copied().fold(f32::INFINITY, f32::min))
        .collect();
    let quantile = |values: &[f32], q: f64| -> f32 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f32::total_cmp);
        let i = ((q * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1);
        sorted[i]
    };
    let n = labels.len();
    let mut q = f64::from(recall);
    loop {
        // Just outside the boundary images, so that the last digits another engine computes
        // differently (parity allows 1e-3 on the score) do not flip them: the share kept on
        // validation is the share kept on the device.
        let max_distance = quantile(&nearest, q) * (1.0 + BOUNDARY_MARGIN);
        let min_prob = quantile(top_probs, 1.0 - q) - BOUNDARY_MARGIN;
        let rule = UnknownRule {
            min_prob,
            distance_tensor: DISTANCE_OUTPUT.into(),
            max_distance,
            recall,
            val_rejected: 0.0,
            images: n,
        };
        let rejected = top_probs
            .iter()
            .zip(distances)
            .filter(|(p, d)| rule.rejects(**p, d))
            .count();
        let kept = 1.0 - rejected as f64 / n as f64;
        if kept >= f64::from(recall) || q >= 1.0 {
            return Ok(UnknownRule {
                val_rejected: rejected as f32 / n as f32,
                ..rule
            });
        }
        q = (q + 0.001).min(1.0);
    }
}

/// Area under the ROC curve of `score` separating `outside` (positives) from `inside`
/// images: the chance that a random outside image scores higher (ties count half).
pub fn auroc(inside: &[f32], outside: &[f32]) -> f64 {
    if inside.is_empty() || outside.is_empty() {
        return f64::NAN;
    }
    let mut all: Vec<(f32, bool)> = inside
        .iter()
        .map(|&s| (s, false))
        .chain(outside.iter().map(|&s| (s, true)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mann-Whitney U with mid-ranks for ties.
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += all[i..=j].iter().filter(|e| e.1).count() as f64 * mid;
        i = j + 1;
    }
    let (p, q) = (outside.len() as f64, inside.len() as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_of_known_orders() {
        assert_eq!(auroc(&[0.1, 0.2], &[0.3, 0.4]), 1.0);
        assert_eq!(auroc(&[0.3, 0.4], &[0.1, 0.2]), 0.0);
        assert_eq!(auroc(&[0.5], &[0.5]), 0.5);
        assert!((auroc(&[0.1, 0.3], &[0.2, 0.4]) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn prototype_distances_are_euclidean_in_standardised_space() {
        // Two classes in 2-D.
        let train = [0.0, 0.0, 2.0, 0.0, 0.0, 4.0, 2.0, 4.0];
        let labels = [0, 0, 1, 1];
        let p = prototypes(&train, &labels, 2, 2);
        // mean (1, 2), std (1, 2): class 0 centre (0, -1) in z space, class 1 (0, 1).
        assert_eq!(p.centres, vec![0.0, -1.0, 0.0, 1.0]);
        let d = distances(&p, &[1.0, 2.0]);
        assert!((d[0][0] - 1.0).abs() < 1e-6 && (d[0][1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn the_rule_keeps_the_asked_share_and_refuses_tiny_classes() {
        let n = 200;
        let probs: Vec<f32> = (0..n).map(|i| 0.5 + 0.5 * (i as f32 / n as f32)).collect();
        let dists: Vec<Vec<f32>> = (0..n).map(|i| vec![((i * 37) % n) as f32, 1e3]).collect();
        let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let rule = fit_rule(&probs, &dists, &labels, 2, 0.95).expect("fits");
        assert!(rule.val_rejected <= 0.05 + 1e-6, "{rule:?}");
        assert!(rule.val_rejected > 0.03, "{rule:?}");
        let err = fit_rule(&probs[..6], &dists[..6], &labels[..6], 2, 0.95).expect_err("tiny");
        assert!(err.contains("at least 5"), "{err}");
    }
}
