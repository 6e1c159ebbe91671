//! The camera service's core loop: latest frame → the one preprocessing function (the
//! card's contract) → engine → softmax/top-k → temporal smoothing and hysteresis → sinks.
//! Frame records and label-change events are handed to a sink callback (JSON lines in
//! the CLI). The loop stops on the stop flag (SIGTERM, Ctrl-C), after `max_frames`, or
//! when a finite source ends.

pub mod smoothing;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::classifier::Classifier;
use crate::engine::EngineError;
use crate::postprocess::{Ranked, top_k};
use crate::preprocess::{preprocess_decoded, tensor_len};
use crate::source::{FrameSource, SourceError, SourceErrorKind};
use smoothing::{Smoother, SmoothingConfig};

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Smoothing and hysteresis.
    pub smoothing: SmoothingConfig,
    /// Labels per frame record.
    pub top_k: usize,
    /// Stop after this many classified frames (None: run until stopped).
    pub max_frames: Option<u64>,
    /// How long one wait for a frame may take before the stop flag is checked again.
    pub poll: Duration,
    /// Emit only label-change events, not a record per frame.
    pub events_only: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            smoothing: SmoothingConfig::default(),
            top_k: 3,
            max_frames: None,
            poll: Duration::from_millis(200),
            events_only: false,
        }
    }
}

/// Milliseconds spent in each stage of one frame.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StageTimes {
    /// Preprocessing (resize, normalise).
    pub preprocess_ms: f64,
    /// The engine.
    pub inference_ms: f64,
    /// Softmax, top-k, smoothing.
    pub post_ms: f64,
    /// From the frame's arrival to its result.
    pub total_ms: f64,
}

/// What the loop emits.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Output {
    /// One classified frame.
    Frame {
        /// The source's frame number.
        seq: u64,
        /// Frames the source dropped before this one because the model was busy.
        dropped: u64,
        /// The frame's most likely labels (not smoothed).
        top: Vec<Ranked>,
        /// The announced (smoothed) label.
        label: Option<String>,
        /// Stage timings.
        latency: StageTimes,
        /// The engine that ran it.
        engine: String,
    },
    /// The announced label changed.
    Event {
        /// The frame that caused it.
        seq: u64,
        /// The label before.
        from: Option<String>,
        /// The label now (None: no label is confident).
        to: Option<String>,
        /// Its smoothed probability.
        prob: f32,
    },
}

/// Totals of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServeStats {
    /// Frames classified.
    pub frames: u64,
    /// Frames the source dropped (a newer one arrived while the model was busy).
    pub dropped: u64,
    /// Label-change events.
    pub events: u64,
    /// Per-frame latency (arrival to result), milliseconds, in order.
    pub latencies_ms: Vec<f64>,
    /// Inference time per frame, milliseconds.
    pub inference_ms: Vec<f64>,
}

impl ServeStats {
    /// The `q` quantile (0..=1) of `values`.
    pub fn quantile(values: &[f64], q: f64) -> f64 {
        if values.is_empty() {
            return 0.0;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = (q * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }
}

/// Why the loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The source cannot be used (bad URI, not compiled).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A frame could not be preprocessed.
    #[error("preprocessing a frame: {0}")]
    Preprocess(String),
    /// The sink failed (disk full, closed pipe).
    #[error("writing output: {0}")]
    Sink(#[from] std::io::Error),
}

/// Classify frames from `source` until stopped; every output goes to `sink`.
pub fn run(
    source: &mut dyn FrameSource,
    classifier: &mut Classifier,
    config: &ServeConfig,
    stop: &AtomicBool,
    sink: &mut dyn FnMut(&Output) -> std::io::Result<()>,
) -> Result<ServeStats, ServeError> {
    let contract = classifier.card().preprocessing.clone();
    let labels = classifier.card().labels.clone();
    let engine = classifier.engine().to_string();
    let label_of = |i: Option<usize>| i.map(|i| labels.get(i).cloned().unwrap_or_default());
    let mut smoother = Smoother::new(config.smoothing);
    let mut stats = ServeStats::default();
    let mut input = vec![0.0f32; tensor_len(&contract)];
    while !stop.load(Ordering::Relaxed) && config.max_frames.is_none_or(|m| stats.frames < m) {
        let frame = match source.next_frame(config.poll) {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(e) if e.kind() == SourceErrorKind::Ended => {
                tracing::info!("{e}: stopping");
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let started = Instant::now();
        preprocess_decoded(&frame.image, &contract, &mut input)
            .map_err(|e| ServeError::Preprocess(e.to_string()))?;
        let preprocessed = Instant::now();
        let probs = classifier
            .probabilities(input.clone(), 1)?
            .pop()
            .unwrap_or_default();
        let inferred = Instant::now();
        let top = top_k(&probs, &labels, config.top_k);
        let change = smoother.update(&probs);
        let done = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        let latency = StageTimes {
            preprocess_ms: ms(started, preprocessed),
            inference_ms: ms(preprocessed, inferred),
            post_ms: ms(inferred, done),
            total_ms: ms(frame.captured, done),
        };
        stats.frames += 1;
        stats.dropped += frame.dropped;
        stats.latencies_ms.push(latency.total_ms);
        stats.inference_ms.push(latency.inference_ms);
        if !config.events_only {
            sink(&Output::Frame {
                seq: frame.sequence,
                dropped: frame.dropped,
                top,
                label: label_of(smoother.current()),
                latency,
                engine: engine.clone(),
            })?;
        }
        if let Some(change) = change {
            stats.events += 1;
            sink(&Output::Event {
                seq: frame.sequence,
                from: label_of(change.from),
                to: label_of(change.to),
                prob: change.prob,
            })?;
        }
    }
    Ok(stats)
}
