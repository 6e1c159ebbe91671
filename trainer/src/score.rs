//! Running an exported model over image files on one engine, as `scion eval` and the export
//! parity check do: the edge's own pipeline and classifier, so the numbers are the device's.

use std::path::PathBuf;

use scion_edge::Classifier;
use scion_edge::engine::{EngineError, EngineKind};
use scion_edge::pipeline::for_each_batch;

use crate::fit::argmax;

/// Probabilities per image (`None` where the image could not be read), and the failures.
#[derive(Debug, Clone)]
pub struct Scored {
    /// The engine that ran.
    pub engine: EngineKind,
    /// Per input, in order.
    pub probs: Vec<Option<Vec<f32>>>,
    /// Per input, how far outside the card's unknown rule it is (`> 1`: rejected); `None`
    /// without a rule or for an unreadable image.
    pub unknown_scores: Vec<Option<f32>>,
    /// Unreadable images and why.
    pub failed: Vec<(PathBuf, String)>,
}

/// Score `paths` with `classifier`; `progress` hears the images done and stops the work by
/// returning false (then the result holds what was scored).
pub fn score(
    classifier: &mut Classifier,
    paths: &[PathBuf],
    batch: usize,
    threads: usize,
    progress: &mut dyn FnMut(usize) -> bool,
) -> Result<Scored, EngineError> {
    let contract = classifier.card().preprocessing.clone();
    let batch = batch.min(classifier.engine().max_useful_batch()).max(1);
    let mut probs = vec![None; paths.len()];
    let mut unknown_scores = vec![None; paths.len()];
    let mut failed = Vec::new();
    // Both callbacks count; they take turns, so a Cell suffices.
    let done = std::cell::Cell::new(0usize);
    let stopped = for_each_batch(
        paths,
        &contract,
        batch,
        threads,
        |b| -> Result<(), Option<EngineError>> {
            let n = b.indices.len();
            let rows = classifier.predict(b.data, n).map_err(Some)?;
            for (&i, row) in b.indices.iter().zip(rows) {
                probs[i] = Some(row.probs);
                unknown_scores[i] = row.unknown_score;
            }
            done.set(done.get() + n);
            if progress(done.get()) {
                Ok(())
            } else {
                Err(None)
            }
        },
        |i, error| {
            failed.push((paths[i].clone(), error));
            done.set(done.get() + 1);
            Ok(())
        },
    );
    if let Err(Some(e)) = stopped {
        return Err(e);
    }
    failed.sort();
    Ok(Scored {
        engine: classifier.engine(),
        probs,
        unknown_scores,
        failed,
    })
}

/// How one engine's outputs compare with the trainer's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Parity {
    /// The engine.
    pub engine: String,
    /// Images compared.
    pub images: usize,
    /// Images whose top-1 differs from the trainer's.
    pub top1_mismatches: usize,
    /// Largest absolute difference of any probability.
    pub max_prob_diff: f32,
    /// The tolerance on probabilities.
    pub tolerance: f32,
    /// Largest relative difference of the unknown rule's score (from the graph's
    /// prototype distances) against the trainer's, when the model has a rule.
    #[serde(default)]
    pub max_unknown_score_diff: Option<f32>,
    /// Whether top-1 agrees everywhere and every probability is within the tolerance
    /// (and every unknown score within [`UNKNOWN_SCORE_TOLERANCE`]).
    pub passed: bool,
}

/// Largest relative difference allowed between an engine's unknown score and the trainer's.
pub const UNKNOWN_SCORE_TOLERANCE: f32 = 1e-3;

/// Compare `scored` with the trainer's `expected` probabilities (and unknown scores) for
/// the same images.
pub fn parity(
    scored: &Scored,
    expected: &[Vec<f32>],
    expected_unknown: Option<&[f32]>,
    tolerance: f32,
) -> Parity {
    let max_unknown_score_diff = expected_unknown.map(|want| {
        scored
            .unknown_scores
            .iter()
            .zip(want)
            .map(|(got, &w)| match got {
                Some(g) => (g - w).abs() / w.abs().max(1e-6),
                None => f32::INFINITY,
            })
            .fold(0.0f32, f32::max)
    });
    let (mut images, mut mismatches, mut max_diff) = (0usize, 0usize, 0.0f32);
    for (got, want) in scored.probs.iter().zip(expected) {
        let Some(got) = got else { continue };
        images += 1;
        if argmax(got) != argmax(want) {
            mismatches += 1;
        }
        for (a, b) in got.iter().zip(want) {
            max_diff = max_diff.max((a - b).abs());
        }
    }
    // An image the trainer scored but the engine could not read is a failure too.
    let unread = expected.len() - images;
    Parity {
        engine: scored.engine.to_string(),
        images,
        top1_mismatches: mismatches + unread,
        max_prob_diff: max_diff,
        tolerance,
        max_unknown_score_diff,
        passed: mismatches + unread == 0
            && max_diff <= tolerance
            && max_unknown_score_diff.is_none_or(|d| d <= UNKNOWN_SCORE_TOLERANCE),
    }
}
