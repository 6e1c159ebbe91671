//! What the frame loop shares with the rest of the service: the latest result, metrics,
//! the event stream, the preview frame, and a control channel into the loop (model swaps,
//! uploaded images). The loop owns the model; everyone else talks to it through here, so
//! there is one session in memory and a swap happens between two frames, never inside one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use super::Output;
use super::collect::Collector;
use super::metrics::Metrics;
use crate::classifier::Classifier;
use crate::postprocess::Ranked;
use crate::preprocess::RgbImage;

/// Which model is serving.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ModelInfo {
    /// The card's name.
    pub name: String,
    /// sha256 of the ONNX file, hex.
    pub sha256: String,
    /// Where it was loaded from.
    pub path: String,
    /// The engine running it.
    pub engine: String,
    /// The precision that engine was built for (`fp32` except TensorRT's FP16/INT8).
    pub precision: String,
    /// The options handed to the execution provider, `key=value`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_options: Option<String>,
    /// How a reduced-precision engine compared with FP32, when it was checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision_check: Option<String>,
    /// Number of classes.
    pub classes: usize,
    /// What the page shows of the card (left out of `/healthz` and `/v1/model`).
    #[serde(skip)]
    pub summary: CardSummary,
}

/// The part of a model card the device's page shows.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CardSummary {
    /// Class labels, in output order.
    pub labels: Vec<String>,
    /// Validation figures recorded at training (images, top-1, top-5, loss).
    pub validation: Option<serde_json::Value>,
    /// The calibration temperature folded into the graph, if any.
    pub temperature: Option<f32>,
    /// Whether the card carries an "unknown" rule.
    pub unknown_rule: bool,
}

impl CardSummary {
    /// Read off a card.
    pub fn of(card: &scion_onnx::card::ModelCard) -> CardSummary {
        let validation = card
            .provenance
            .metrics
            .as_ref()
            .and_then(|m| m.get("validation"))
            .map(|v| {
                let mut v = v.clone();
                if let Some(map) = v.as_object_mut() {
                    map.remove("per_class");
                }
                v
            });
        CardSummary {
            labels: card.labels.clone(),
            validation,
            temperature: card.calibration.as_ref().map(|c| c.temperature),
            unknown_rule: card.unknown.is_some(),
        }
    }
}

impl ModelInfo {
    /// The identity of a loaded model, and how `classifier` runs it.
    pub fn of(
        model: &crate::model::Model,
        path: &std::path::Path,
        classifier: &crate::Classifier,
    ) -> ModelInfo {
        use sha2::Digest;
        ModelInfo {
            name: model.card.name.clone(),
            sha256: hex::encode(sha2::Sha256::digest(&model.bytes)),
            path: path.display().to_string(),
            engine: classifier.engine().to_string(),
            precision: classifier.precision().as_str().to_string(),
            provider_options: classifier.provider_options(),
            precision_check: classifier.agreement().map(|a| {
                format!(
                    "{a}: {}",
                    if a.accepted() {
                        "accepted"
                    } else {
                        "refused, FP32 serves"
                    }
                )
            }),
            classes: model.card.labels.len(),
            summary: CardSummary::of(&model.card),
        }
    }

    /// The short id frame records carry (first 12 hex digits of the file's sha256).
    pub fn id(&self) -> &str {
        &self.sha256[..self.sha256.len().min(12)]
    }
}

/// A model ready to serve: a prepared session and what identifies it.
pub struct Prepared {
    /// The session with the model's card.
    pub classifier: Classifier,
    /// Its identity.
    pub info: ModelInfo,
}

/// A request into the loop.
pub enum Control {
    /// Serve this model from the next frame on; the reply says it happened.
    Swap(Box<Prepared>, crossbeam_channel::Sender<()>),
    /// Save the next frame into the capture folder under its announced label.
    Capture(crossbeam_channel::Sender<Result<Captured, String>>),
    /// Classify one image with the serving model.
    Classify(
        RgbImage,
        crossbeam_channel::Sender<Result<Classified, String>>,
    ),
}

/// A saved frame (capture button, `POST /v1/capture`).
#[derive(Debug, Clone, Serialize)]
pub struct Captured {
    /// The JPEG written.
    pub path: std::path::PathBuf,
    /// The folder it went into: the model's guess (the frame's top-1, or `unknown`).
    pub label: String,
    /// The frame's sequence number.
    pub seq: u64,
}

/// The answer to an uploaded image.
#[derive(Debug, Clone, Serialize)]
pub struct Classified {
    /// Best labels first.
    pub top: Vec<Ranked>,
    /// Whether the image shows none of the classes (absent without a rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<bool>,
    /// The model that answered (short id).
    pub model: String,
    /// The engine.
    pub engine: String,
    /// Inference time.
    pub inference_ms: f64,
}

/// A frame for the preview stream, with what was said about it.
#[derive(Debug)]
pub struct PreviewFrame {
    /// The frame.
    pub image: RgbImage,
    /// The announced label, if any.
    pub label: Option<String>,
    /// The frame's own top-1 and its probability.
    pub top1: Option<(String, f32)>,
    /// Sequence number.
    pub seq: u64,
}

/// Something worth telling whoever watches, besides label changes: model swaps, source
/// reconnects, captures (the page's events list, `event: notice` on `/v1/events`).
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// `model`, `source` or `capture`.
    pub kind: &'static str,
    /// One line for people.
    pub message: String,
}

/// The shared state. Cheap to update per frame; readers never block the loop for long.
pub struct Hub {
    started: Instant,
    notices: broadcast::Sender<Notice>,
    collector: std::sync::OnceLock<std::sync::Arc<Collector>>,
    metrics: Mutex<Metrics>,
    latest: Mutex<Option<(Output, Instant)>>,
    model: Mutex<Option<ModelInfo>>,
    events: broadcast::Sender<Output>,
    preview: watch::Sender<Option<std::sync::Arc<PreviewFrame>>>,
    control_tx: crossbeam_channel::Sender<Control>,
    control_rx: crossbeam_channel::Receiver<Control>,
    last_alive: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Hub {
        let (control_tx, control_rx) = crossbeam_channel::bounded(16);
        Hub {
            started: Instant::now(),
            notices: broadcast::channel(64).0,
            collector: std::sync::OnceLock::new(),
            metrics: Mutex::new(Metrics::default()),
            latest: Mutex::new(None),
            model: Mutex::new(None),
            events: broadcast::channel(256).0,
            preview: watch::channel(None).0,
            control_tx,
            control_rx,
            last_alive: AtomicU64::new(0),
        }
    }

    /// Metrics, for an update or a render.
    pub fn metrics(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.metrics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest frame record and how long ago it came.
    pub fn latest(&self) -> Option<(Output, f64)> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest
            .as_ref()
            .map(|(o, at)| (o.clone(), at.elapsed().as_secs_f64()))
    }

    /// The announced label of the latest frame and how long ago it came, without copying
    /// the whole record (the GPIO actions poll this every few milliseconds).
    pub fn announced(&self) -> Option<(Option<String>, f64)> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest.as_ref().map(|(o, at)| {
            let label = match o {
                Output::Frame { label, .. } => label.clone(),
                Output::Event { .. } => None,
            };
            (label, at.elapsed().as_secs_f64())
        })
    }

    /// Seconds since the last classified frame.
    pub fn last_frame_age(&self) -> Option<f64> {
        self.latest().map(|(_, age)| age)
    }

    /// The serving model.
    pub fn model(&self) -> Option<ModelInfo> {
        self.model.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Record which model serves now.
    pub fn set_model(&self, info: ModelInfo) {
        *self.model.lock().unwrap_or_else(|p| p.into_inner()) = Some(info);
    }

    /// Seconds since the hub was made (the service's uptime).
    pub fn uptime(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Tell watchers something (no watcher is fine).
    pub fn notice(&self, kind: &'static str, message: String) {
        let _ = self.notices.send(Notice { kind, message });
    }

    /// Subscribe to notices.
    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// Give the service its image collector (once, at start).
    pub fn set_collector(&self, collector: std::sync::Arc<Collector>) {
        let _ = self.collector.set(collector);
    }

    /// The image collector, when `capture_dir` is set.
    pub fn collector(&self) -> Option<&std::sync::Arc<Collector>> {
        self.collector.get()
    }

    /// Subscribe to label-change events.
    pub fn subscribe(&self) -> broadcast::Receiver<Output> {
        self.events.subscribe()
    }

    /// Subscribe to preview frames (frames are only kept while someone watches).
    pub fn preview(&self) -> watch::Receiver<Option<std::sync::Arc<PreviewFrame>>> {
        self.preview.subscribe()
    }

    /// Whether anyone watches the preview.
    pub fn preview_wanted(&self) -> bool {
        self.preview.receiver_count() > 0
    }

    /// Hand the preview a frame.
    pub fn set_preview(&self, frame: PreviewFrame) {
        self.preview.send_replace(Some(std::sync::Arc::new(frame)));
    }

    /// Send a request into the loop and wait up to `timeout` for its answer on `reply`.
    pub fn ask<T>(
        &self,
        request: Control,
        reply: &crossbeam_channel::Receiver<T>,
        timeout: std::time::Duration,
    ) -> Result<T, &'static str> {
        self.control_tx
            .send_timeout(request, timeout)
            .map_err(|_| "the frame loop is not taking requests (busy or stopped)")?;
        reply
            .recv_timeout(timeout)
            .map_err(|_| "the frame loop did not answer in time (busy or stopped)")
    }

    /// Save the next frame into the capture folder (button, HTTP); blocks up to `timeout`.
    pub fn capture(&self, timeout: std::time::Duration) -> Result<Captured, String> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let captured = self
            .ask(Control::Capture(reply), &answer, timeout)
            .map_err(str::to_string)??;
        self.notice(
            "capture",
            format!("captured frame {} into {}/", captured.seq, captured.label),
        );
        Ok(captured)
    }

    /// The loop's end of the control channel.
    pub(crate) fn requests(&self) -> &crossbeam_channel::Receiver<Control> {
        &self.control_rx
    }

    /// The loop records a frame record and publishes events.
    pub(crate) fn record(&self, output: &Output) {
        match output {
            Output::Frame { .. } => {
                *self.latest.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((output.clone(), Instant::now()));
            }
            Output::Event { .. } => {
                self.metrics().events += 1;
                // No subscriber is fine: nobody listens.
                let _ = self.events.send(output.clone());
            }
        }
    }

    /// The loop is alive (for the watchdog): milliseconds since start of the last sign.
    pub(crate) fn alive(&self) {
        self.last_alive
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Seconds since the loop last showed it is alive.
    pub fn loop_silence(&self) -> f64 {
        let last = self.last_alive.load(Ordering::Relaxed);
        (self.started.elapsed().as_millis() as u64).saturating_sub(last) as f64 / 1e3
    }
}
