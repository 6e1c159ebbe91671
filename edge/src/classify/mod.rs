//! The offline batch classifier: [`crate::pipeline`] feeds batched inference, results are
//! written as they finish, and a rerun after a crash completes the job with every input
//! exactly once.

pub mod inputs;
pub mod output;

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::classifier::Classifier;
use crate::engine::EngineError;
use crate::pipeline::for_each_batch;
use crate::postprocess::top_k;
use output::{OutputError, Record, Sink};

/// How to run a classification job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Files to classify (already expanded, sharded and filtered of finished ones).
    pub files: Vec<String>,
    /// Images per inference call.
    pub batch: usize,
    /// Classes reported per image.
    pub top_k: usize,
    /// Decode/preprocess threads.
    pub decode_threads: usize,
    /// Show a progress bar (only drawn on a terminal).
    pub progress: bool,
}

/// What a job did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Inputs classified.
    pub classified: usize,
    /// Inputs that failed (bad images, unreadable files).
    pub failed: usize,
    /// Wall time.
    pub elapsed: Duration,
}

/// A fatal job error: the output is consistent up to it, and a rerun resumes.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Writing results failed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// Inference failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Run `job` with `classifier`, writing every outcome to `sink`.
pub fn run(classifier: &mut Classifier, job: &Job, sink: &mut Sink) -> Result<Summary, JobError> {
    let start = Instant::now();
    let contract = classifier.card().preprocessing.clone();
    let bar = progress_bar(job);
    let engine = classifier.engine().to_string();
    let mut summary = Summary::default();
    // Both callbacks write results and count them; they take turns through one RefCell.
    let state = std::cell::RefCell::new((&mut summary, &mut *sink));
    for_each_batch(
        &job.files,
        &contract,
        job.batch,
        job.decode_threads,
        |batch| -> Result<(), JobError> {
            let n = batch.indices.len();
            let predictions = classifier.predict(batch.data, n)?;
            let labels = &classifier.card().labels;
            let records: Vec<Record> = batch
                .indices
                .iter()
                .zip(&predictions)
                .map(|(&i, p)| Record {
                    path: job.files[i].clone(),
                    top: Some(top_k(&p.probs, labels, job.top_k)),
                    unknown: p.unknown,
                    engine: Some(engine.clone()),
                    error: None,
                })
                .collect();
            let mut state = state.borrow_mut();
            state.1.write(&records)?;
            state.0.classified += n;
            bar.inc(n as u64);
            Ok(())
        },
        |i, error| {
            let path = &job.files[i];
            bar.suspend(|| tracing::warn!("{path}: {error}"));
            let mut state = state.borrow_mut();
            state.1.write(&[Record {
                path: path.clone(),
                top: None,
                unknown: None,
                engine: None,
                error: Some(error),
            }])?;
            state.0.failed += 1;
            bar.inc(1);
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    sink.finish()?;
    summary.elapsed = start.elapsed();
    Ok(summary)
}

fn progress_bar(job: &Job) -> ProgressBar {
    if !job.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(job.files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
