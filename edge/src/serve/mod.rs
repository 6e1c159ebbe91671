//! The camera service's core loop: latest frame → the one preprocessing function (the
//! card's contract) → engine → softmax/top-k → temporal smoothing and hysteresis → sinks.
//! Frame records and label-change events are handed to a sink callback (JSON lines in
//! the CLI). The loop stops on the stop flag (SIGTERM, Ctrl-C), after `max_frames`, or
//! when a finite source ends.

pub mod collect;
pub mod hub;
pub mod metrics;
pub mod smoothing;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::classifier::Prediction;
use crate::engine::EngineError;
use crate::postprocess::{Ranked, top_k};
use crate::preprocess::{RgbImage, preprocess_decoded, tensor_len};
use crate::source::{FrameSource, SourceError, SourceErrorKind};
use hub::{Captured, Classified, Control, Hub, Prepared, PreviewFrame};
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
    /// Apply the model's unknown rule: "unknown" becomes a label like the others for
    /// smoothing, events and sinks.
    pub unknown: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            smoothing: SmoothingConfig::default(),
            top_k: 3,
            max_frames: None,
            poll: Duration::from_millis(50),
            events_only: false,
            unknown: true,
        }
    }
}

/// Milliseconds spent in each stage of one frame.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StageTimes {
    /// From the frame's arrival to the start of its processing.
    pub capture_ms: f64,
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
        /// Whether the frame shows none of the classes (absent without a rule).
        #[serde(skip_serializing_if = "Option::is_none")]
        unknown: Option<bool>,
        /// The announced (smoothed) label.
        label: Option<String>,
        /// Stage timings.
        latency: StageTimes,
        /// The engine that ran it.
        engine: String,
        /// The model that ran it (first 12 hex digits of its file's sha256).
        model: String,
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

impl Output {
    /// The frame it is about.
    pub fn seq(&self) -> u64 {
        match self {
            Output::Frame { seq, .. } | Output::Event { seq, .. } => *seq,
        }
    }
}

/// Totals of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServeStats {
    /// Frames classified.
    pub frames: u64,
    /// Frames the source dropped (a newer one arrived while the model was busy).
    pub dropped: u64,
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

/// The model the loop serves, with what it derives from the card.
struct Serving {
    prepared: Prepared,
    contract: scion_onnx::card::Preprocessing,
    labels: Vec<String>,
    input: Vec<f32>,
    smoother: Smoother,
}

impl Serving {
    fn new(mut prepared: Prepared, config: &ServeConfig) -> Serving {
        prepared.classifier.set_unknown(config.unknown);
        let smoothing = config.smoothing;
        let labels = prepared.classifier.answer_labels();
        let card = prepared.classifier.card();
        let contract = card.preprocessing.clone();
        Serving {
            input: vec![0.0; tensor_len(&contract)],
            contract,
            labels,
            prepared,
            smoother: Smoother::new(smoothing),
        }
    }

    fn label(&self, i: Option<usize>) -> Option<String> {
        i.map(|i| self.labels.get(i).cloned().unwrap_or_default())
    }

    /// The answer for one decoded image, with the instant preprocessing ended.
    fn predict(&mut self, image: &RgbImage) -> Result<(Prediction, Instant), ServeError> {
        preprocess_decoded(image, &self.contract, &mut self.input)
            .map_err(|e| ServeError::Preprocess(e.to_string()))?;
        let preprocessed = Instant::now();
        let prediction = self
            .prepared
            .classifier
            .predict(self.input.clone(), 1)?
            .pop()
            .unwrap_or(Prediction {
                probs: Vec::new(),
                unknown: None,
                unknown_score: None,
            });
        Ok((prediction, preprocessed))
    }
}

/// Classify frames from `source` with `model` until stopped; every output goes to `sink`
/// and to the `hub` (latest result, metrics, events, preview). Requests from the hub (model
/// swaps, uploaded images) are served between frames.
pub fn run(
    source: &mut dyn FrameSource,
    model: Prepared,
    config: &ServeConfig,
    hub: &Hub,
    stop: &AtomicBool,
    sink: &mut dyn FnMut(&Output) -> std::io::Result<()>,
) -> Result<ServeStats, ServeError> {
    let mut serving = Serving::new(model, config);
    hub.set_model(serving.prepared.info.clone());
    let mut stats = ServeStats::default();
    let mut captures = Vec::new();
    while !stop.load(Ordering::Relaxed) && config.max_frames.is_none_or(|m| stats.frames < m) {
        hub.alive();
        while let Ok(request) = hub.requests().try_recv() {
            serving = serve_request(request, serving, config, hub, sink, &mut captures)?;
        }
        let reconnects = source.reconnects();
        let frame = source.next_frame(config.poll);
        if source.reconnects() > reconnects {
            hub.notice(
                "source",
                format!(
                    "the frame source reopened ({} reconnects)",
                    source.reconnects()
                ),
            );
        }
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                hub.metrics().reconnects = source.reconnects();
                continue;
            }
            Err(e) if e.kind() == SourceErrorKind::Ended => {
                tracing::info!("{e}: stopping");
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let started = Instant::now();
        let (prediction, preprocessed) = serving.predict(&frame.image)?;
        let inferred = Instant::now();
        let probs = &prediction.probs;
        let top = top_k(probs, &serving.labels[..probs.len()], config.top_k);
        // With a rule, "unknown" is one more state to smooth over: all of a rejected
        // frame's weight goes to it.
        let change = match prediction.unknown {
            None => serving.smoother.update(probs),
            Some(unknown) => {
                let mut states = if unknown {
                    vec![0.0; probs.len()]
                } else {
                    probs.clone()
                };
                states.push(if unknown { 1.0 } else { 0.0 });
                serving.smoother.update(&states)
            }
        };
        let done = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        let latency = StageTimes {
            capture_ms: ms(frame.captured, started),
            preprocess_ms: ms(started, preprocessed),
            inference_ms: ms(preprocessed, inferred),
            post_ms: ms(inferred, done),
            total_ms: ms(frame.captured, done),
        };
        stats.frames += 1;
        stats.dropped += frame.dropped;
        stats.latencies_ms.push(latency.total_ms);
        stats.inference_ms.push(latency.inference_ms);
        {
            let mut metrics = hub.metrics();
            let s = |v: f64| v / 1e3;
            metrics.frame(
                [
                    s(latency.capture_ms),
                    s(latency.preprocess_ms),
                    s(latency.inference_ms),
                    s(latency.post_ms),
                ],
                s(latency.total_ms),
                frame.dropped,
                done,
            );
            metrics.reconnects = reconnects.max(source.reconnects());
        }
        let label = serving.label(serving.smoother.current());
        let record = Output::Frame {
            seq: frame.sequence,
            dropped: frame.dropped,
            top,
            unknown: prediction.unknown,
            label: label.clone(),
            latency,
            engine: serving.prepared.info.engine.clone(),
            model: serving.prepared.info.id().to_string(),
        };
        hub.record(&record);
        if !config.events_only {
            sink(&record)?;
        }
        let label_changed = change.is_some();
        if let Some(change) = change {
            let event = Output::Event {
                seq: frame.sequence,
                from: serving.label(change.from),
                to: serving.label(change.to),
                prob: change.prob,
            };
            hub.record(&event);
            sink(&event)?;
        }
        collect(
            hub,
            &serving,
            &prediction,
            &record,
            label_changed,
            &frame.image,
            &mut captures,
            done,
        );
        if hub.preview_wanted() {
            let top1 = match &record {
                Output::Frame { top, .. } => top.first().map(|r| (r.label.clone(), r.prob)),
                Output::Event { .. } => None,
            };
            hub.set_preview(PreviewFrame {
                image: frame.image,
                label,
                top1,
                seq: frame.sequence,
            });
        }
    }
    Ok(stats)
}

/// Hand the frame to the collector when a person asked for it (`captures`) or a policy
/// wants it; the collector writes on its own thread.
#[allow(clippy::too_many_arguments)]
fn collect(
    hub: &Hub,
    serving: &Serving,
    prediction: &Prediction,
    record: &Output,
    label_changed: bool,
    image: &RgbImage,
    captures: &mut Vec<crossbeam_channel::Sender<Result<Captured, String>>>,
    now: Instant,
) {
    let Output::Frame {
        seq, top, label, ..
    } = record
    else {
        return;
    };
    let Some(collector) = hub.collector() else {
        for reply in captures.drain(..) {
            let _ = reply.send(Err("capture is off: set `capture_dir`".to_string()));
        }
        return;
    };
    let due = collector.due(
        collect::FrameFacts {
            top1: top.first().map_or(0.0, |r| r.prob),
            unknown: prediction.unknown == Some(true),
            label_changed,
        },
        now,
    );
    let sidecar = |policy| {
        collect::sidecar(
            *seq,
            policy,
            &serving.labels,
            &prediction.probs,
            top,
            prediction.unknown,
            prediction.unknown_score,
            label.clone(),
            &serving.prepared.info,
        )
    };
    for reply in captures.drain(..) {
        collector.submit(image.clone(), sidecar(collect::Policy::Button), Some(reply));
    }
    if let Some(policy) = due {
        collector.submit(image.clone(), sidecar(policy), None);
    }
}

/// Serve one request from the hub; returns the (possibly new) serving model.
fn serve_request(
    request: Control,
    mut serving: Serving,
    config: &ServeConfig,
    hub: &Hub,
    sink: &mut dyn FnMut(&Output) -> std::io::Result<()>,
    captures: &mut Vec<crossbeam_channel::Sender<Result<Captured, String>>>,
) -> Result<Serving, ServeError> {
    match request {
        Control::Capture(reply) => {
            // Answered with the next frame, which is the current view.
            captures.push(reply);
            Ok(serving)
        }
        Control::Swap(prepared, done) => {
            let from = serving.prepared.info.clone();
            let announced = serving.label(serving.smoother.current());
            let next = Serving::new(*prepared, config);
            tracing::info!(
                "now serving {} ({}, {}) instead of {} ({})",
                next.prepared.info.name,
                next.prepared.info.id(),
                next.prepared.info.engine,
                from.name,
                from.id()
            );
            hub.set_model(next.prepared.info.clone());
            hub.metrics().model_swaps += 1;
            hub.notice(
                "model",
                format!(
                    "now serving {} ({}) instead of {} ({})",
                    next.prepared.info.name,
                    next.prepared.info.id(),
                    from.name,
                    from.id()
                ),
            );
            if announced.is_some() {
                // The new model starts unsure; say so rather than keep a stale label.
                let event = Output::Event {
                    seq: hub.latest().map_or(0, |(o, _)| o.seq()),
                    from: announced,
                    to: None,
                    prob: 0.0,
                };
                hub.record(&event);
                sink(&event)?;
            }
            let _ = done.send(());
            Ok(next)
        }
        Control::Classify(image, reply) => {
            let started = Instant::now();
            let answer = serving
                .predict(&image)
                .map(|(p, _)| Classified {
                    top: top_k(&p.probs, &serving.labels[..p.probs.len()], config.top_k),
                    unknown: p.unknown,
                    model: serving.prepared.info.id().to_string(),
                    engine: serving.prepared.info.engine.clone(),
                    inference_ms: started.elapsed().as_secs_f64() * 1e3,
                })
                .map_err(|e| e.to_string());
            hub.metrics().uploads += 1;
            let _ = reply.send(answer);
            Ok(serving)
        }
    }
}
