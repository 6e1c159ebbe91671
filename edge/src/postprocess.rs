//! From engine outputs to answers: probabilities and top-k.

use serde::{Deserialize, Serialize};

/// One ranked class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    /// Label from the card.
    pub label: String,
    /// Class index.
    pub index: usize,
    /// Probability.
    pub prob: f32,
}

/// Numerically stable softmax of one row.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` most probable classes, best first (ties broken by lower index).
pub fn top_k(probs: &[f32], labels: &[String], k: usize) -> Vec<Ranked> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    idx.into_iter()
        .take(k)
        .map(|i| Ranked {
            label: labels
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("class {i}")),
            index: i,
            prob: probs[i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let p = softmax(&[1000.0, 1000.0, -1000.0]);
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[1] - 0.5).abs() < 1e-6 && p[2] == 0.0);
    }

    #[test]
    fn top_k_orders_by_probability() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let t = top_k(&[0.2, 0.5, 0.3], &labels, 2);
        assert_eq!(t.iter().map(|r| r.index).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(t[0].label, "b");
    }
}
