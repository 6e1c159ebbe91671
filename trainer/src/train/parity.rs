//! The parity check of an export: the exported file, run on every engine through the
//! edge's own pipeline, must reproduce the trainer's outputs on the validation set.

use std::path::PathBuf;
use std::time::Instant;

use scion_edge::Classifier;
use scion_edge::engine::EngineKind;
use scion_onnx::pb::ModelProto;

use super::records::parity_key;
use super::{BackboneError, TrainError, TrainJob, TrainObserver};
use crate::score::{Parity, parity, score};

/// Check the model saved at `job.out` (whose graph is `model`) on `job.parity_engines`
/// against the trainer's `expected` probabilities for `val_paths`. A GPU engine that
/// cannot start here is not checked and says why in the second list; the device checks
/// it again when it loads the model.
pub(super) fn check_parity(
    job: &TrainJob,
    model: &ModelProto,
    val_paths: &[PathBuf],
    expected: &[Vec<f32>],
    expected_unknown: Option<&[f32]>,
    dataset_fingerprint: &str,
    observer: &mut dyn TrainObserver,
) -> Result<(Vec<Parity>, Vec<String>), TrainError> {
    let exported = scion_edge::Model::load(&job.out, &scion_edge::ContractOverrides::default())
        .map_err(BackboneError::from)?;
    let (mut parities, mut unchecked) = (Vec::new(), Vec::new());
    for &kind in &job.parity_engines {
        // A check of the very same graph on the very same images is not repeated: training
        // is deterministic, so an unchanged rerun exports identical weights.
        let record = job.cache_dir.join("parity").join(format!(
            "{}.json",
            parity_key(model, kind, job.tolerance, dataset_fingerprint)
        ));
        let cached = std::fs::read(&record)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Parity>(&bytes).ok())
            .filter(|p| p.passed);
        let (p, how) = match cached {
            Some(p) => (p, "same graph and images already checked".to_string()),
            None => {
                let started = Instant::now();
                let session = match scion_edge::engine::prepare(kind, &exported.spec(), &job.engine)
                {
                    Ok(session) => session,
                    Err(why) if matches!(kind, EngineKind::Cuda | EngineKind::TensorRt) => {
                        let note = format!("parity on {kind}: not checked: {why}");
                        observer.finished(&note);
                        unchecked.push(note);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let mut classifier = Classifier::new(session, exported.card.clone());
                observer.stage(&format!("parity ({kind})"), Some(val_paths.len()));
                let scored = score(
                    &mut classifier,
                    val_paths,
                    job.extract_batch,
                    job.threads,
                    &mut |done| observer.progress(done),
                )?;
                let p = parity(&scored, expected, expected_unknown, job.tolerance);
                if p.passed {
                    let _ = std::fs::create_dir_all(record.parent().expect("a folder"));
                    let json = serde_json::to_vec(&p).expect("parity serializes");
                    if let Err(e) = scion_onnx::io::write_atomically(&record, &json) {
                        tracing::warn!("{}: {e}", record.display());
                    }
                }
                (p, format!("{:.1}s", started.elapsed().as_secs_f64()))
            }
        };
        observer.finished(&format!(
            "parity on {kind}: {} images, {} top-1 mismatches, max |Δp| {:.2e} (tolerance {:.0e}){}: {} ({how})",
            p.images,
            p.top1_mismatches,
            p.max_prob_diff,
            p.tolerance,
            p.max_unknown_score_diff
                .map(|d| format!(", unknown score within {d:.1e}"))
                .unwrap_or_default(),
            if p.passed { "ok" } else { "FAILED" }
        ));
        parities.push(p);
    }
    Ok((parities, unchecked))
}
