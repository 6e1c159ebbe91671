//! Classification metrics from predicted probabilities: top-1, top-5 (with five classes or
//! more), per-class precision and recall, the confusion matrix and its most confused
//! pairs, the majority-class baseline, and calibration ([`Reliability`]).

pub use crate::calibrate::Reliability;

/// Metrics of one evaluation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    /// Number of images scored.
    pub images: usize,
    /// Fraction whose most probable class is the true one.
    pub top1: f64,
    /// Fraction whose true class is among the five most probable (five classes or more).
    pub top5: Option<f64>,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Per class, in label order.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Top-1 of always answering the most common class: the floor any model must beat.
    #[serde(default)]
    pub majority_baseline: f64,
    /// The largest off-diagonal confusion counts, most first (up to five).
    #[serde(default)]
    pub most_confused: Vec<Confused>,
    /// Calibration figures (ECE, Brier, confidence when right and wrong).
    #[serde(default)]
    pub reliability: Reliability,
}

/// One often-confused pair.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Confused {
    /// The true class.
    pub truth: String,
    /// What it was taken for.
    pub predicted: String,
    /// How many times.
    pub count: usize,
}

/// Precision and recall of one class.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassMetrics {
    /// The class name.
    pub label: String,
    /// Images of this class.
    pub support: usize,
    /// Of the images predicted as this class, the fraction that are (0 when none is).
    pub precision: f64,
    /// Of the images of this class, the fraction predicted as it (0 when there are none).
    pub recall: f64,
}

impl Metrics {
    /// Score `probs` (row-major `[labels.len(), classes.len()]`) against `labels`.
    pub fn compute(probs: &[f32], labels: &[usize], classes: &[String]) -> Metrics {
        let k = classes.len();
        let mut confusion = vec![vec![0usize; k]; k];
        let (mut top5_hits, mut loss) = (0usize, 0.0f64);
        for (row, &truth) in probs.chunks_exact(k).zip(labels) {
            let predicted = crate::fit::argmax(row);
            confusion[truth][predicted] += 1;
            let above = row.iter().filter(|&&p| p > row[truth]).count();
            if above < 5 {
                top5_hits += 1;
            }
            loss -= f64::from(row[truth].max(1e-12)).ln();
        }
        let n = labels.len();
        let denominator = n.max(1) as f64;
        let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
        let per_class = (0..k)
            .map(|c| {
                let support: usize = confusion[c].iter().sum();
                let predicted: usize = confusion.iter().map(|row| row[c]).sum();
                let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
                ClassMetrics {
                    label: classes[c].clone(),
                    support,
                    precision: ratio(confusion[c][c], predicted),
                    recall: ratio(confusion[c][c], support),
                }
            })
            .collect();
        let largest = confusion
            .iter()
            .map(|row| row.iter().sum::<usize>())
            .max()
            .unwrap_or(0);
        let mut pairs: Vec<Confused> = (0..k)
            .flat_map(|t| (0..k).map(move |p| (t, p)))
            .filter(|&(t, p)| t != p && confusion[t][p] > 0)
            .map(|(t, p)| Confused {
                truth: classes[t].clone(),
                predicted: classes[p].clone(),
                count: confusion[t][p],
            })
            .collect();
        pairs.sort_by_key(|p| std::cmp::Reverse(p.count));
        pairs.truncate(5);
        Metrics {
            images: n,
            top1: correct as f64 / denominator,
            top5: (k >= 5).then_some(top5_hits as f64 / denominator),
            loss: loss / denominator,
            per_class,
            majority_baseline: largest as f64 / denominator,
            most_confused: pairs,
            reliability: Reliability::compute(probs, labels, k),
            confusion,
        }
    }

    /// A few lines for the terminal: totals, then the weakest classes by recall.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} images: top-1 {:.2}%{} (majority class {:.1}%), loss {:.4}, ECE {:.3}, Brier {:.3}",
            self.images,
            100.0 * self.top1,
            self.top5
                .map(|t| format!(", top-5 {:.2}%", 100.0 * t))
                .unwrap_or_default(),
            100.0 * self.majority_baseline,
            self.loss,
            self.reliability.ece,
            self.reliability.brier,
        );
        let mut weakest: Vec<&ClassMetrics> = self.per_class.iter().collect();
        weakest.sort_by(|a, b| a.recall.total_cmp(&b.recall));
        let names: Vec<String> = weakest
            .iter()
            .take(3)
            .map(|c| format!("{} {:.0}%", c.label, 100.0 * c.recall))
            .collect();
        s.push_str(&format!("; lowest recall: {}", names.join(", ")));
        if let Some(c) = self.most_confused.first() {
            s.push_str(&format!(
                "; most confused: {} taken for {} ({}x)",
                c.truth, c.predicted, c.count
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_a_small_known_case() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        // Truths a, a, b, c; predictions a, b, b, b.
        let probs = [
            0.7, 0.2, 0.1, //
            0.3, 0.6, 0.1, //
            0.1, 0.8, 0.1, //
            0.2, 0.5, 0.3,
        ];
        let m = Metrics::compute(&probs, &[0, 0, 1, 2], &classes);
        assert_eq!(
            m.confusion,
            vec![vec![1, 1, 0], vec![0, 1, 0], vec![0, 1, 0]]
        );
        assert_eq!(m.top1, 0.5);
        assert_eq!(m.top5, None);
        assert_eq!(m.per_class[0].precision, 1.0);
        assert_eq!(m.per_class[0].recall, 0.5);
        assert!((m.per_class[1].precision - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.per_class[1].recall, 1.0);
        assert_eq!(m.per_class[2].precision, 0.0);
        assert_eq!(m.majority_baseline, 0.5);
        assert_eq!(m.most_confused.len(), 2);
        assert_eq!(
            (m.most_confused[0].truth.as_str(), m.most_confused[0].count),
            ("a", 1)
        );
        let expected_loss = -(0.7f64.ln() + 0.3f64.ln() + 0.8f64.ln() + 0.3f64.ln()) / 4.0;
        assert!((m.loss - expected_loss).abs() < 1e-6);
    }

    #[test]
    fn top5_counts_ranks_not_values() {
        let classes: Vec<String> = (0..6).map(|c| c.to_string()).collect();
        let probs = [0.3, 0.2, 0.15, 0.15, 0.1, 0.1];
        // Class 5 ties with class 4 for fifth place: within the top 5.
        assert_eq!(Metrics::compute(&probs, &[5], &classes).top5, Some(1.0));
        let probs = [0.3, 0.2, 0.15, 0.15, 0.12, 0.08];
        assert_eq!(Metrics::compute(&probs, &[5], &classes).top5, Some(0.0));
    }
}
