//! The offline batch classifier: parallel decode threads feed batched inference, results are
//! written as they finish, and a rerun after a crash completes the job with every input
//! exactly once.

pub mod inputs;
pub mod output;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};
use indicatif::{ProgressBar, ProgressStyle};

use crate::classifier::Classifier;
use crate::engine::EngineError;
use crate::postprocess::top_k;
use crate::preprocess::{preprocess, tensor_len};
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

type Decoded = (usize, Result<Vec<f32>, String>);

/// Run `job` with `classifier`, writing every outcome to `sink`.
pub fn run(classifier: &mut Classifier, job: &Job, sink: &mut Sink) -> Result<Summary, JobError> {
    let start = Instant::now();
    let contract = classifier.card().preprocessing.clone();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = bounded::<Decoded>(job.batch * 2 + job.decode_threads);
    let bar = progress_bar(job);
    let summary = std::thread::scope(|scope| {
        for _ in 0..job.decode_threads.max(1) {
            let tx = tx.clone();
            let (next, stop, contract, files) = (&next, &stop, &contract, &job.files);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    let result = std::fs::read(path)
                        .map_err(|e| e.to_string())
                        .and_then(|bytes| preprocess(&bytes, contract).map_err(|e| e.to_string()));
                    if tx.send((i, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let result = consume(classifier, job, sink, rx, &bar);
        stop.store(true, Ordering::Relaxed);
        result
    });
    bar.finish_and_clear();
    sink.finish()?;
    let mut summary = summary?;
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

/// The inference side: gather decoded images into batches, run, write.
fn consume(
    classifier: &mut Classifier,
    job: &Job,
    sink: &mut Sink,
    rx: Receiver<Decoded>,
    bar: &ProgressBar,
) -> Result<Summary, JobError> {
    let per_image = tensor_len(&classifier.card().preprocessing);
    let mut summary = Summary::default();
    let mut batch = Vec::with_capacity(job.batch * per_image);
    let mut members: Vec<usize> = Vec::with_capacity(job.batch);
    let engine = classifier.engine().to_string();
    let mut run_batch = |batch: &mut Vec<f32>,
                         members: &mut Vec<usize>,
                         summary: &mut Summary,
                         sink: &mut Sink|
     -> Result<(), JobError> {
        if members.is_empty() {
            return Ok(());
        }
        let n = members.len();
        let probs = classifier.probabilities(std::mem::take(batch), n)?;
        let labels = &classifier.card().labels;
        let records: Vec<Record> = members
            .iter()
            .zip(&probs)
            .map(|(&i, p)| Record {
                path: job.files[i].clone(),
                top: Some(top_k(p, labels, job.top_k)),
                engine: Some(engine.clone()),
                error: None,
            })
            .collect();
        sink.write(&records)?;
        summary.classified += n;
        bar.inc(n as u64);
        members.clear();
        batch.reserve(job.batch * per_image);
        Ok(())
    };
    for (i, decoded) in rx {
        match decoded {
            Ok(tensor) => {
                batch.extend_from_slice(&tensor);
                members.push(i);
                if members.len() == job.batch {
                    run_batch(&mut batch, &mut members, &mut summary, sink)?;
                }
            }
            Err(error) => {
                let path = &job.files[i];
                bar.suspend(|| tracing::warn!("{path}: {error}"));
                sink.write(&[Record {
                    path: path.clone(),
                    top: None,
                    engine: None,
                    error: Some(error),
                }])?;
                summary.failed += 1;
                bar.inc(1);
            }
        }
    }
    run_batch(&mut batch, &mut members, &mut summary, sink)?;
    Ok(summary)
}
