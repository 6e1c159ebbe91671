//! Calibrated probabilities: temperature scaling (Guo et al. 2017) fitted on the
//! validation split, and the figures that say whether a model's confidence can be
//! trusted: expected calibration error, Brier score, confidence when right and when wrong.
//!
//! One scalar `T` divides the logits; it changes no prediction, only how sure they are.
//! The exported graph carries it (folded into the last Gemm), so every engine serves
//! calibrated probabilities.

use scion_onnx::patch::Dense;

/// Bins of the expected calibration error (equal-width confidence bins).
pub const ECE_BINS: usize = 15;

/// The temperature minimising the validation cross-entropy of `logits / T`, searched
/// over `T ∈ [0.05, 20]` (golden section on `ln T`, where the loss is unimodal).
pub fn fit_temperature(logits: &[Vec<f32>], labels: &[usize]) -> f64 {
    let loss = |log_t: f64| nll(logits, labels, log_t.exp());
    let (mut lo, mut hi) = (0.05f64.ln(), 20f64.ln());
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let mut a = hi - phi * (hi - lo);
    let mut b = lo + phi * (hi - lo);
    let (mut fa, mut fb) = (loss(a), loss(b));
    for _ in 0..60 {
        if fa < fb {
            hi = b;
            b = a;
            fb = fa;
            a = hi - phi * (hi - lo);
            fa = loss(a);
        } else {
            lo = a;
            a = b;
            fa = fb;
            b = lo + phi * (hi - lo);
            fb = loss(b);
        }
    }
    ((lo + hi) / 2.0).exp()
}

/// Mean cross-entropy of `logits / t`.
pub fn nll(logits: &[Vec<f32>], labels: &[usize], t: f64) -> f64 {
    let mut total = 0f64;
    for (row, &y) in logits.iter().zip(labels) {
        let scaled: Vec<f64> = row.iter().map(|&v| f64::from(v) / t).collect();
        let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + scaled.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        total += lse - scaled[y];
    }
    total / labels.len().max(1) as f64
}

/// Softmax of `logits / t`, row by row.
pub fn probabilities(logits: &[Vec<f32>], t: f64) -> Vec<Vec<f32>> {
    logits
        .iter()
        .map(|row| {
            let scaled: Vec<f32> = row.iter().map(|&v| (f64::from(v) / t) as f32).collect();
            scion_edge::postprocess::softmax(&scaled)
        })
        .collect()
}

/// The last layer with `1 / t` folded in: `softmax(x W'ᵀ + b') = softmax((x Wᵀ + b) / t)`.
pub fn fold_temperature(layers: &mut [Dense], t: f64) {
    if let Some(last) = layers.last_mut() {
        let inv = (1.0 / t) as f32;
        last.weight.iter_mut().for_each(|w| *w *= inv);
        last.bias.iter_mut().for_each(|b| *b *= inv);
    }
}

/// How far confidence is from accuracy, and related figures.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reliability {
    /// Expected calibration error over [`ECE_BINS`] equal-width bins of top-1 confidence.
    pub ece: f64,
    /// Mean over images of `Σ_k (p_k − y_k)²`.
    pub brier: f64,
    /// Mean top-1 confidence of the images predicted right (`None`: there are none).
    pub mean_confidence_right: Option<f64>,
    /// Mean top-1 confidence of the images predicted wrong (`None`: there are none).
    pub mean_confidence_wrong: Option<f64>,
    /// Per bin: `(images, mean confidence, accuracy)`, for the reliability diagram.
    pub bins: Vec<(usize, f64, f64)>,
}

impl Reliability {
    /// Score row-major `probs` (`[labels.len(), classes]`) against `labels`.
    pub fn compute(probs: &[f32], labels: &[usize], classes: usize) -> Reliability {
        let mut bins = vec![(0usize, 0f64, 0f64); ECE_BINS];
        let (mut brier, mut right, mut wrong) = (0f64, (0f64, 0usize), (0f64, 0usize));
        for (row, &y) in probs.chunks_exact(classes.max(1)).zip(labels) {
            let top = crate::fit::argmax(row);
            let confidence = f64::from(row[top]);
            let hit = top == y;
            let bin = ((confidence * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
            bins[bin].0 += 1;
            bins[bin].1 += confidence;
            bins[bin].2 += if hit { 1.0 } else { 0.0 };
            let slot = if hit { &mut right } else { &mut wrong };
            slot.0 += confidence;
            slot.1 += 1;
            brier += row
                .iter()
                .enumerate()
                .map(|(k, &p)| {
                    let target = if k == y { 1.0 } else { 0.0 };
                    (f64::from(p) - target).powi(2)
                })
                .sum::<f64>();
        }
        let n = labels.len().max(1) as f64;
        let ece = bins
            .iter()
            .filter(|b| b.0 > 0)
            .map(|&(count, conf, acc)| {
                (count as f64 / n) * (conf / count as f64 - acc / count as f64).abs()
            })
            .sum();
        let mean = |(sum, count): (f64, usize)| (count > 0).then(|| sum / count as f64);
        Reliability {
            ece,
            brier: brier / n,
            mean_confidence_right: mean(right),
            mean_confidence_wrong: mean(wrong),
            bins: bins
                .into_iter()
                .map(|(count, conf, acc)| {
                    let c = count.max(1) as f64;
                    (count, conf / c, acc / c)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_undoes_a_known_overconfidence() {
        // Logits of a calibrated model (T = 1), then made 3x overconfident.
        let mut rng = scion_edge::rng::SplitMix64::new(5);
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..4000 {
            let row: Vec<f32> = (0..4).map(|_| rng.uniform(-2.0, 2.0)).collect();
            let p = scion_edge::postprocess::softmax(&row);
            // Draw the label from the calibrated probabilities.
            let u = rng.next_f32();
            let mut acc = 0.0;
            let y = p
                .iter()
                .position(|&q| {
                    acc += q;
                    u < acc
                })
                .unwrap_or(3);
            logits.push(row.iter().map(|v| v * 3.0).collect::<Vec<f32>>());
            labels.push(y);
        }
        let t = fit_temperature(&logits, &labels);
        assert!((t - 3.0).abs() < 0.3, "temperature {t}");
        let before = Reliability::compute(&probabilities(&logits, 1.0).concat(), &labels, 4);
        let after = Reliability::compute(&probabilities(&logits, t).concat(), &labels, 4);
        assert!(
            after.ece < before.ece / 2.0,
            "{} -> {}",
            before.ece,
            after.ece
        );
        assert!(after.ece < 0.03, "{}", after.ece);
    }

    #[test]
    fn reliability_of_a_small_known_case() {
        // Right at 0.9, wrong at 0.6.
        let probs = [0.9, 0.1, 0.6, 0.4];
        let r = Reliability::compute(&probs, &[0, 1], 2);
        assert!((r.brier - ((0.01 + 0.01) + (0.36 + 0.36)) / 2.0).abs() < 1e-6);
        assert_eq!(
            r.mean_confidence_right.map(|v| (v * 10.0).round()),
            Some(9.0)
        );
        assert_eq!(
            r.mean_confidence_wrong.map(|v| (v * 10.0).round()),
            Some(6.0)
        );
        // Bins: 0.9 right (|0.9 - 1| / 2), 0.6 wrong (|0.6 - 0| / 2).
        assert!((r.ece - (0.1 + 0.6) / 2.0).abs() < 1e-6, "{}", r.ece);
    }

    #[test]
    fn folding_the_temperature_scales_the_logits() {
        let mut layers = vec![Dense {
            weight: vec![1.0, 2.0, 3.0, 4.0],
            bias: vec![0.5, -0.5],
            inputs: 2,
            outputs: 2,
        }];
        fold_temperature(&mut layers, 2.0);
        assert_eq!(layers[0].weight, vec![0.5, 1.0, 1.5, 2.0]);
        assert_eq!(layers[0].bias, vec![0.25, -0.25]);
    }
}
