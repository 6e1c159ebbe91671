//! `scion train` end to end: data set → cached backbone features → head → export → parity
//! check on every engine. The CLI adds progress bars and Ctrl-C; tests drive it directly.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use scion_edge::engine::{EngineKind, EngineOptions};

mod inputs;
mod parity;
mod quality;
mod records;
mod tune;

use quality::SplitFeatures;
pub use quality::{LpFtReport, ProbeReport};

use parity::check_parity;

use records::{fingerprint, reference, summary_json, write_checkpoint, write_reports};

use crate::backbone::{Backbone, BackboneError};
use crate::dataset::{Dataset, DatasetError};
use crate::device::{DeviceError, DeviceKind};
use crate::features::FeatureError;
use crate::finetune::TuneConfig;
use crate::fit::{
    EpochRecord, FitConfig, FitError, FitObserver, Fitted, Split, StopReason, Trained,
    TrainingData, fit,
};
use crate::head::HeadSpec;
use crate::loader::Loader;
use crate::metrics::Metrics;
use crate::net::NetError;
use crate::net::freeze::{self, Unfreeze};
use crate::score::Parity;
use inputs::{Source, Totals};
use scion_onnx::patch::Patch;

/// Everything `scion train` needs.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// The backbone ONNX (with a card).
    pub backbone: PathBuf,
    /// The labelled image folder.
    pub data: PathBuf,
    /// Where the exported model goes.
    pub out: PathBuf,
    /// Folder for metrics, plots and the checkpoint.
    pub report_dir: PathBuf,
    /// Feature cache folder.
    pub cache_dir: PathBuf,
    /// The feature tensor, when it cannot be found automatically.
    pub feature_tensor: Option<String>,
    /// Fraction of each class held out for validation when there is no `val` folder.
    pub val_split: f32,
    /// How to train the head (its seed also splits the data).
    pub fit: FitConfig,
    /// Which backbone layers train with the head.
    pub unfreeze: Unfreeze,
    /// Re-initialise the whole backbone (He init) and train every layer.
    pub from_scratch: bool,
    /// Backbone learning-rate scale, micro-batches.
    pub tune: TuneConfig,
    /// Keep batch norms in inference mode even where their layer trains.
    pub freeze_batch_norm: bool,
    /// Where training and feature extraction run.
    pub device: DeviceKind,
    /// Decode threads.
    pub threads: usize,
    /// Images per backbone call.
    pub extract_batch: usize,
    /// Keep decoded images in memory (always on with more than one augmented view).
    pub keep_decoded: bool,
    /// Augmented views of each training image (0: train on the eval view); epochs use
    /// them in turn.
    pub aug_views: usize,
    /// Engine settings (threads, ONNX Runtime library).
    pub engine: EngineOptions,
    /// Engines the export is checked on.
    pub parity_engines: Vec<EngineKind>,
    /// Largest allowed probability difference in the parity check.
    pub tolerance: f32,
    /// Share of validation images the unknown rule keeps (`None`: no rule).
    pub unknown_recall: Option<f32>,
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The data set.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// The backbone.
    #[error(transparent)]
    Backbone(#[from] BackboneError),
    /// Feature extraction or its cache.
    #[error(transparent)]
    Features(#[from] FeatureError),
    /// The compute device.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The head could not be trained.
    #[error(transparent)]
    Fit(#[from] FitError),
    /// Writing the model.
    #[error(transparent)]
    Export(#[from] scion_onnx::Error),
    /// An engine failed while checking the export.
    #[error(transparent)]
    Engine(#[from] scion_edge::engine::EngineError),
    /// Writing reports.
    #[error("{path}: {message}")]
    Report {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Too few usable images.
    #[error("{0}")]
    Data(String),
}

/// What the job reports as it goes (the CLI draws progress bars from it).
pub trait TrainObserver: FitObserver {
    /// A stage starts; `total` items if countable.
    fn stage(&mut self, _name: &str, _total: Option<usize>) {}
    /// Items done in the current stage; return false to stop.
    fn progress(&mut self, _done: usize) -> bool {
        true
    }
    /// A stage ends with a line of summary.
    fn finished(&mut self, _summary: &str) {}
}

impl TrainObserver for () {}

/// What a finished job did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainReport {
    /// Class names.
    pub classes: Vec<String>,
    /// Training and validation images used.
    pub train_images: usize,
    /// Validation images used.
    pub val_images: usize,
    /// Images skipped as unreadable, with reasons.
    pub skipped: Vec<(PathBuf, String)>,
    /// Features (or decoded images) computed now.
    pub features_computed: usize,
    /// Features found in the cache.
    pub features_cached: usize,
    /// Seconds spent on features.
    pub feature_seconds: f64,
    /// Seconds spent training.
    pub fit_seconds: f64,
    /// Training images processed per second (forward and backward).
    pub train_images_per_second: f64,
    /// Backbone values that trained (0 for a head alone).
    pub trainable_backbone_values: usize,
    /// What trained: `none` (the head), `last:N`, `from:T`, `all` or `from-scratch`.
    pub unfreeze: String,
    /// Peak resident memory of the process at the end of the run.
    pub peak_rss_bytes: Option<u64>,
    /// Per-epoch history.
    pub history: Vec<EpochRecord>,
    /// The epoch exported.
    pub best_epoch: usize,
    /// Why training ended.
    pub stop: StopReason,
    /// Validation metrics of the exported head, as the trainer computed them.
    pub metrics: Metrics,
    /// Parity of the exported model on each engine.
    pub parity: Vec<Parity>,
    /// The exported model.
    pub model: PathBuf,
    /// The linear head's regularisation path (head-only linear runs).
    pub linear_head: Option<quality::ProbeReport>,
    /// LP-FT's probe and fine-tuned candidates (`--unfreeze` with a linear head).
    pub lp_ft: Option<quality::LpFtReport>,
    /// The temperature scaling, if fitted.
    pub calibration: Option<scion_onnx::card::Calibration>,
    /// Reliability of the validation probabilities before calibration.
    pub uncalibrated: crate::calibrate::Reliability,
    /// The unknown rule, if fitted.
    pub unknown: Option<scion_onnx::card::UnknownRule>,
    /// What was left out and why (calibration, the unknown rule).
    pub left_out: Vec<String>,
}

impl TrainReport {
    /// Whether every parity check passed.
    pub fn parity_passed(&self) -> bool {
        self.parity.iter().all(|p| p.passed)
    }
}

struct Relay<'a> {
    inner: &'a mut dyn TrainObserver,
    checkpoint: PathBuf,
    classes: &'a [String],
    error: Option<TrainError>,
}

impl TrainObserver for Relay<'_> {
    fn stage(&mut self, name: &str, total: Option<usize>) {
        self.inner.stage(name, total)
    }
    fn progress(&mut self, done: usize) -> bool {
        self.inner.progress(done)
    }
    fn finished(&mut self, summary: &str) {
        self.inner.finished(summary)
    }
}

impl FitObserver for Relay<'_> {
    fn batch(&mut self, epoch: usize, done: usize, total: usize) {
        self.inner.batch(epoch, done, total)
    }
    fn epoch(&mut self, record: &EpochRecord, best: Option<&Trained>) {
        if let Some(trained) = best
            && let Err(e) = write_checkpoint(&self.checkpoint, trained, self.classes, record)
        {
            self.error.get_or_insert(e);
        }
        self.inner.epoch(record, best)
    }
}

/// Run the whole job. `interrupt` (Ctrl-C) ends training early; the best epoch is still
/// exported and checked.
pub fn run(
    job: &TrainJob,
    interrupt: &AtomicBool,
    observer: &mut dyn TrainObserver,
) -> Result<TrainReport, TrainError> {
    let report_err = |path: &Path, e: &dyn std::fmt::Display| TrainError::Report {
        path: path.into(),
        message: e.to_string(),
    };
    let dataset = Dataset::open(&job.data, job.val_split, job.fit.seed)?;
    if dataset.val.is_empty() && job.fit.refit {
        return Err(TrainError::Data(format!(
            "--refit needs a validation split to choose C on: {} has none (add a val/ \
             folder or set --val-split above 0)",
            job.data.display()
        )));
    }
    if dataset.val.is_empty() {
        return Err(TrainError::Data(format!(
            "{}: no validation images (add a val/ folder or raise --val-split)",
            job.data.display()
        )));
    }
    let training_device = job.device.training_device()?;
    let backbone = Backbone::load(&job.backbone, job.feature_tensor.as_deref())?;
    std::fs::create_dir_all(&job.report_dir).map_err(|e| report_err(&job.report_dir, &e))?;
    let graph = backbone.model.proto.graph.clone().unwrap_or_default();
    let policy = if job.from_scratch {
        Unfreeze::All
    } else {
        job.unfreeze.clone()
    };
    let net_err = |e: NetError| TrainError::Data(format!("{}: {e}", job.backbone.display()));
    let trainable = trainable_in(job, &backbone, &policy)?;
    // Where the trained layers begin: the head reads features; unfrozen layers read the
    // output of the frozen prefix, or the images when everything trains.
    let start = match policy {
        Unfreeze::None => Some(backbone.feature_tensor.clone()),
        _ if job.from_scratch => None,
        _ => freeze::boundary(&graph, &trainable, &backbone.feature_tensor).map_err(net_err)?,
    };

    // Inputs.
    let started = Instant::now();
    let loader = Loader::new(
        backbone.model.card.preprocessing.clone(),
        job.keep_decoded || job.aug_views > 1 || start.is_none(),
    );
    let mut totals = Totals::default();
    let mut prepared = match &start {
        Some(tensor) => {
            let cut = if *tensor == backbone.feature_tensor {
                None
            } else {
                Some(Backbone::load(&job.backbone, Some(tensor))?)
            };
            inputs::cached(
                job,
                &dataset,
                cut.as_ref().unwrap_or(&backbone),
                &loader,
                &mut totals,
                interrupt,
                observer,
            )?
        }
        None => inputs::images(job, &dataset, &loader, &mut totals, interrupt, observer)?,
    };
    let feature_seconds = started.elapsed().as_secs_f64();
    for (split, y) in [
        ("training", &prepared.train_labels),
        ("validation", &prepared.val_labels),
    ] {
        if y.is_empty() {
            return Err(TrainError::Data(format!(
                "no readable {split} images in {}",
                job.data.display()
            )));
        }
    }
    let present: std::collections::BTreeSet<usize> =
        prepared.train_labels.iter().copied().collect();
    if present.len() < 2 {
        return Err(TrainError::Data(format!(
            "{}: fewer than two classes have readable training images",
            job.data.display()
        )));
    }

    // Training.
    let started = Instant::now();
    let mut relay = Relay {
        inner: observer,
        checkpoint: job.report_dir.join("checkpoint.json"),
        classes: &dataset.classes,
        error: None,
    };
    let classes = dataset.classes.len();
    let mut trainable_values = 0;
    let (mut probe, mut lp_ft) = (None, None);
    // The tensors move into training; what stays in `prepared` are the samples.
    let source = std::mem::replace(
        &mut prepared.source,
        Source::Images {
            train: Vec::new(),
            val: Vec::new(),
        },
    );
    let (fitted, features): (Fitted, SplitFeatures) = match (source, policy) {
        (
            Source::Cached {
                train_views,
                val,
                shape,
            },
            Unfreeze::None,
        ) => {
            let dim = shape.iter().product();
            let fitted = if job.fit.head == HeadSpec::Linear {
                // Every view of a training image is one more row of the same problem.
                let rows: Vec<f32> = train_views.concat();
                let labels: Vec<usize> = train_views
                    .iter()
                    .flat_map(|_| prepared.train_labels.iter().copied())
                    .collect();
                let (fitted, solved) = quality::solve_linear_head(
                    &job.fit,
                    &rows,
                    &labels,
                    &val,
                    &prepared.val_labels,
                    dim,
                    classes,
                    interrupt,
                    &mut relay,
                )?;
                probe = Some(ProbeReport::of(&solved));
                fitted
            } else {
                relay.stage("training", Some(job.fit.epochs));
                let views: Vec<&[f32]> = train_views.iter().map(Vec::as_slice).collect();
                let data = TrainingData {
                    train_views: &views,
                    train_labels: &prepared.train_labels,
                    val: Split {
                        features: &val,
                        labels: &prepared.val_labels,
                    },
                    dim,
                    classes,
                };
                fit(&data, &job.fit, &training_device, interrupt, &mut relay)?
            };
            let train = train_views.into_iter().next().unwrap_or_default();
            (fitted, SplitFeatures { train, val, dim })
        }
        (source, _) => {
            let tuned = tune::fine_tune(
                job,
                &backbone,
                &prepared,
                classes,
                source,
                tune::Start {
                    tensor: start.as_deref(),
                    trainable,
                },
                &loader,
                &training_device,
                interrupt,
                &mut relay,
            )?;
            trainable_values = tuned.trainable_values;
            lp_ft = tuned.lp_ft;
            (tuned.fitted, tuned.features)
        }
    };
    if let Some(e) = relay.error {
        return Err(e);
    }
    let fit_seconds = started.elapsed().as_secs_f64();
    let trained_images = prepared.train.len() * fitted.history.len().max(1);
    if !fitted.history.is_empty() {
        observer.finished(&format!(
            "trained {} epochs in {fit_seconds:.1}s ({:.0} images/s, {}); best epoch {}",
            fitted.history.len(),
            trained_images as f64 / fit_seconds.max(1e-9),
            match fitted.stop {
                StopReason::Completed => "all epochs",
                StopReason::EarlyStopped => "early stop",
                StopReason::Interrupted => "interrupted",
            },
            fitted.best_epoch
        ));
    }

    // Calibration and the unknown rule, on the validation split.
    let mut layers = fitted.trained.layers.clone();
    let trust = quality::fit_trust(
        &mut layers,
        &features,
        &prepared.train_labels,
        &fitted.val_logits,
        &prepared.val_labels,
        classes,
        job.unknown_recall,
    );
    for why in &trust.omitted {
        if !why.ends_with("--unknown off") {
            tracing::warn!("{why}");
        }
    }
    let temperature = trust
        .calibration
        .as_ref()
        .map_or(1.0, |c| f64::from(c.temperature));
    // Metrics as the trainer sees them (before any refit, so they stay honest).
    let shown = crate::calibrate::probabilities(&fitted.val_logits, temperature);
    let flat: Vec<f32> = shown.iter().flatten().copied().collect();
    let metrics = Metrics::compute(&flat, &prepared.val_labels, &dataset.classes);
    let expected = &trust.val_probs;
    if let Some((rule, _)) = &trust.unknown {
        observer.finished(&format!(
            "unknown rule: top-1 probability below {:.3} or prototype distance above {:.2}; \
             rejects {:.1}% of validation images (target ≤ {:.0}%)",
            rule.min_prob,
            rule.max_distance,
            100.0 * rule.val_rejected,
            100.0 * (1.0 - rule.recall)
        ));
    }

    // Export.
    let training = serde_json::json!({
        "fit": job.fit,
        "device": job.device,
        "feature_engine": totals.feature_engine.map(EngineKind::name),
        "feature_tensor": backbone.feature_tensor,
        "unfreeze": policy_name(job),
        "trained_from": start,
        "tune": job.tune,
        "freeze_batch_norm": job.freeze_batch_norm,
        "val_split": job.val_split,
        "aug_views": job.aug_views,
        "split_here": dataset.split_here,
        "train_images": prepared.train.len(),
        "val_images": prepared.val.len(),
        "best_epoch": fitted.best_epoch,
        "stop": fitted.stop,
        "linear_head": probe,
        "lp_ft": lp_ft,
        "left_out": trust.omitted,
    });
    let references = prepared
        .val
        .iter()
        .zip(expected)
        .take(4)
        .map(|(s, p)| reference(s, p))
        .collect::<Result<Vec<_>, _>>()?;
    let dataset_fingerprint = fingerprint(&dataset.classes, &prepared.train, &prepared.val)?;
    let name = job
        .out
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let mut source_model = backbone.model.clone();
    if !fitted.trained.backbone.is_empty() {
        Patch::SetInitializers {
            values: fitted.trained.backbone.clone(),
        }
        .apply(&mut source_model.proto)?;
    }
    let mut model = crate::export::build(
        &source_model,
        &backbone.feature_tensor,
        &layers,
        crate::export::ExportInfo {
            name,
            labels: dataset.classes.clone(),
            backbone_sha256: backbone.sha256.clone(),
            dataset_fingerprint: dataset_fingerprint.clone(),
            training,
            metrics: serde_json::json!({ "validation": summary_json(&metrics) }),
            references,
            calibration: trust.calibration.clone(),
            unknown: trust.unknown.clone(),
        },
    )?;
    drop(source_model);
    scion_onnx::io::save(&model, &job.out)?;

    // Parity on every engine.
    let val_paths: Vec<PathBuf> = prepared.val.iter().map(|s| s.path.clone()).collect();
    let (parities, parity_unchecked) = check_parity(
        job,
        &model,
        &val_paths,
        expected,
        trust.val_unknown_scores.as_deref(),
        &dataset_fingerprint,
        observer,
    )?;
    crate::export::save_with_metrics(
        &mut model,
        serde_json::json!({
            "validation": summary_json(&metrics),
            "parity": parities,
            "parity_unchecked": parity_unchecked,
        }),
        &job.out,
    )?;

    totals.skipped.sort();
    totals.skipped.dedup();
    let report = TrainReport {
        classes: dataset.classes.clone(),
        train_images: prepared.train.len(),
        val_images: prepared.val.len(),
        skipped: totals.skipped,
        features_computed: totals.computed,
        features_cached: totals.cached,
        feature_seconds,
        fit_seconds,
        train_images_per_second: trained_images as f64 / fit_seconds.max(1e-9),
        trainable_backbone_values: trainable_values,
        unfreeze: policy_name(job),
        peak_rss_bytes: peak_rss_bytes(),
        history: fitted.history,
        best_epoch: fitted.best_epoch,
        stop: fitted.stop,
        metrics,
        parity: parities,
        model: job.out.clone(),
        linear_head: probe,
        lp_ft,
        calibration: trust.calibration,
        uncalibrated: trust.before,
        unknown: trust.unknown.map(|(rule, _)| rule),
        left_out: trust.omitted.into_iter().chain(parity_unchecked).collect(),
    };
    write_reports(&job.report_dir, &report, &prepared.val, &shown)?;
    Ok(report)
}

/// Check, before any work, that `policy` finds layers to train in the job's backbone.
pub fn check_policy(job: &TrainJob, policy: &Unfreeze) -> Result<(), TrainError> {
    let backbone = Backbone::load(&job.backbone, job.feature_tensor.as_deref())?;
    trainable_in(job, &backbone, policy).map(drop)
}

/// The initializers `policy` trains in `backbone`; an error when it finds none.
fn trainable_in(
    job: &TrainJob,
    backbone: &Backbone,
    policy: &Unfreeze,
) -> Result<HashSet<String>, TrainError> {
    let graph = backbone.model.proto.graph.as_ref();
    let trainable = freeze::trainable(
        graph.unwrap_or(&Default::default()),
        policy,
        &backbone.feature_tensor,
    )
    .map_err(|e| TrainError::Data(format!("{}: {e}", job.backbone.display())))?;
    if *policy != Unfreeze::None && trainable.is_empty() {
        return Err(TrainError::Data(format!(
            "--unfreeze {policy}: no trainable layer found in {}",
            job.backbone.display()
        )));
    }
    Ok(trainable)
}

/// How the run trained, in words for the card and the report.
fn policy_name(job: &TrainJob) -> String {
    if job.from_scratch {
        "from-scratch".into()
    } else {
        job.unfreeze.to_string()
    }
}

/// The process's peak resident memory so far (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Start measuring the peak resident memory afresh (Linux: write 5 to `clear_refs`), so
/// runs in one process each get their own peak. Best effort.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
