//! `scion train` end to end: data set → cached backbone features → head → export → parity
//! check on every engine. The CLI adds progress bars and Ctrl-C; tests drive it directly.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use scion_edge::engine::{EngineKind, EngineOptions};
use scion_onnx::patch::Dense;

mod parity;
mod records;

use parity::check_parity;

use records::{fingerprint, reference, summary_json, write_checkpoint, write_reports};

use crate::backbone::{Backbone, BackboneError};
use crate::dataset::{Dataset, DatasetError, Sample};
use crate::device::{DeviceError, DeviceKind};
use crate::features::{CacheKey, FeatureCache, FeatureError, extract};
use crate::fit::{
    EpochRecord, FitConfig, FitError, FitObserver, Fitted, Split, StopReason, TrainingData, fit,
};
use crate::head::apply_dense;
use crate::loader::{Loader, View};
use crate::metrics::Metrics;
use crate::score::Parity;
use scion_edge::augment::Augmentation;

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
    /// Features computed now vs. found in the cache.
    pub features_computed: usize,
    /// Features found in the cache.
    pub features_cached: usize,
    /// Seconds spent on features.
    pub feature_seconds: f64,
    /// Seconds spent training the head.
    pub fit_seconds: f64,
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
}

impl TrainReport {
    /// Whether every parity check passed.
    pub fn parity_passed(&self) -> bool {
        self.parity.iter().all(|p| p.passed)
    }
}

#[derive(Default)]
struct FeatureTotals {
    computed: usize,
    cached: usize,
    skipped: Vec<(PathBuf, String)>,
}

impl FeatureTotals {
    fn add(&mut self, stats: &crate::features::ExtractStats) {
        self.computed += stats.computed;
        self.cached += stats.cached;
        self.skipped.extend(stats.failed.iter().cloned());
    }
}

struct Relay<'a> {
    inner: &'a mut dyn TrainObserver,
    checkpoint: PathBuf,
    classes: &'a [String],
    error: Option<TrainError>,
}

impl FitObserver for Relay<'_> {
    fn batch(&mut self, epoch: usize, done: usize, total: usize) {
        self.inner.batch(epoch, done, total)
    }
    fn epoch(&mut self, record: &EpochRecord, best: Option<&[Dense]>) {
        if let Some(layers) = best
            && let Err(e) = write_checkpoint(&self.checkpoint, layers, self.classes, record)
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
    if dataset.val.is_empty() {
        return Err(TrainError::Data(format!(
            "{}: no validation images (add a val/ folder or raise --val-split)",
            job.data.display()
        )));
    }
    let training_device = job.device.training_device()?;
    let backbone = Backbone::load(&job.backbone, job.feature_tensor.as_deref())?;
    std::fs::create_dir_all(&job.report_dir).map_err(|e| report_err(&job.report_dir, &e))?;

    // Features: the eval view of every image, plus augmented views of the training images.
    let started = Instant::now();
    let mut session = backbone.feature_session(job.device.feature_engine(), &job.engine)?;
    let dim = backbone.feature_dim(session.as_mut())?;
    let loader = Loader::new(
        backbone.model.card.preprocessing.clone(),
        job.keep_decoded || job.aug_views > 1,
    );
    let mut totals = FeatureTotals::default();
    let mut features_of = |name: &str,
                           samples: &[Sample],
                           view: View,
                           observer: &mut dyn TrainObserver|
     -> Result<Vec<Option<Vec<f32>>>, TrainError> {
        let key = CacheKey {
            backbone_sha256: backbone.sha256.clone(),
            preprocessing: backbone.model.card.preprocessing.clone(),
            feature_tensor: backbone.feature_tensor.clone(),
            view: view.key(),
        };
        let mut cache = FeatureCache::open(&job.cache_dir, &key, dim)?;
        let paths: Vec<PathBuf> = samples.iter().map(|s| s.path.clone()).collect();
        observer.stage(&format!("features ({name})"), Some(paths.len()));
        let extracted = extract(
            &paths,
            &loader,
            &view,
            &backbone.feature_tensor,
            session.as_mut(),
            &mut cache,
            job.extract_batch,
            job.threads,
            &mut |done| observer.progress(done) && !interrupt.load(Ordering::Relaxed),
        )?;
        let s = &extracted.stats;
        let mut line = format!(
            "{name}: {} images, {} computed, {} cached, {} skipped",
            paths.len(),
            s.computed,
            s.cached,
            s.failed.len()
        );
        if s.computed > 0 {
            let t = &s.throughput;
            line.push_str(&format!(
                "; loader {:.0} images/s on {} threads, engine {:.0} images/s: {} bound",
                t.loader_rate(),
                t.threads,
                t.consumer_rate(),
                if t.loader_bound() { "loader" } else { "engine" }
            ));
        }
        observer.finished(&line);
        totals.add(&extracted.stats);
        Ok(extracted.features)
    };
    let mut train_views = Vec::new();
    if job.aug_views == 0 {
        train_views.push(features_of("train", &dataset.train, View::Eval, observer)?);
    }
    for index in 0..job.aug_views {
        let view = View::Augmented {
            augmentation: Augmentation::default(),
            seed: job.fit.seed,
            index,
        };
        let name = format!("train, view {}/{}", index + 1, job.aug_views);
        train_views.push(features_of(&name, &dataset.train, view, observer)?);
    }
    let val_features = features_of("val", &dataset.val, View::Eval, observer)?;
    let feature_seconds = started.elapsed().as_secs_f64();
    drop(session);
    // An image is used when every view of it could be computed.
    let train_kept: Vec<usize> = (0..dataset.train.len())
        .filter(|&i| train_views.iter().all(|v| v[i].is_some()))
        .collect();
    let train_y: Vec<usize> = train_kept.iter().map(|&i| dataset.train[i].class).collect();
    let train_x: Vec<Vec<f32>> = train_views
        .iter()
        .map(|v| {
            train_kept
                .iter()
                .flat_map(|&i| v[i].clone().expect("kept"))
                .collect()
        })
        .collect();
    let train_kept: Vec<Sample> = train_kept
        .iter()
        .map(|&i| dataset.train[i].clone())
        .collect();
    let (mut val_x, mut val_y, mut val_kept) = (Vec::new(), Vec::new(), Vec::new());
    for (sample, f) in dataset.val.iter().zip(val_features) {
        if let Some(f) = f {
            val_x.extend(f);
            val_y.push(sample.class);
            val_kept.push(sample.clone());
        }
    }
    for (split, y) in [("training", &train_y), ("validation", &val_y)] {
        if y.is_empty() {
            return Err(TrainError::Data(format!(
                "no readable {split} images in {}",
                job.data.display()
            )));
        }
    }
    let present: std::collections::BTreeSet<usize> = train_y.iter().copied().collect();
    if present.len() < 2 {
        return Err(TrainError::Data(format!(
            "{}: fewer than two classes have readable training images",
            job.data.display()
        )));
    }

    // Head.
    let started = Instant::now();
    observer.stage("training", Some(job.fit.epochs));
    let mut relay = Relay {
        inner: observer,
        checkpoint: job.report_dir.join("checkpoint.json"),
        classes: &dataset.classes,
        error: None,
    };
    let views: Vec<&[f32]> = train_x.iter().map(Vec::as_slice).collect();
    let data = TrainingData {
        train_views: &views,
        train_labels: &train_y,
        val: Split {
            features: &val_x,
            labels: &val_y,
        },
        dim,
        classes: dataset.classes.len(),
    };
    let fitted: Fitted = fit(&data, &job.fit, &training_device, interrupt, &mut relay)?;
    if let Some(e) = relay.error {
        return Err(e);
    }
    let fit_seconds = started.elapsed().as_secs_f64();
    observer.finished(&format!(
        "trained {} epochs in {fit_seconds:.1}s ({}); best epoch {}",
        fitted.history.len(),
        match fitted.stop {
            StopReason::Completed => "all epochs",
            StopReason::EarlyStopped => "early stop",
            StopReason::Interrupted => "interrupted",
        },
        fitted.best_epoch
    ));

    // Metrics as the trainer sees them.
    let expected: Vec<Vec<f32>> = val_x
        .chunks_exact(dim)
        .map(|row| scion_edge::postprocess::softmax(&apply_dense(&fitted.layers, row)))
        .collect();
    let flat: Vec<f32> = expected.iter().flatten().copied().collect();
    let metrics = Metrics::compute(&flat, &val_y, &dataset.classes);

    // Export.
    let training = serde_json::json!({
        "fit": job.fit,
        "device": job.device,
        "feature_tensor": backbone.feature_tensor,
        "val_split": job.val_split,
        "aug_views": job.aug_views,
        "split_here": dataset.split_here,
        "train_images": train_y.len(),
        "val_images": val_y.len(),
        "best_epoch": fitted.best_epoch,
        "stop": fitted.stop,
    });
    let references = val_kept
        .iter()
        .zip(&expected)
        .take(4)
        .map(|(s, p)| reference(s, p))
        .collect::<Result<Vec<_>, _>>()?;
    let dataset_fingerprint = fingerprint(&dataset.classes, &train_kept, &val_kept)?;
    let name = job
        .out
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let mut model = crate::export::build(
        &backbone.model,
        &backbone.feature_tensor,
        &fitted.layers,
        crate::export::ExportInfo {
            name,
            labels: dataset.classes.clone(),
            backbone_sha256: backbone.sha256.clone(),
            dataset_fingerprint: dataset_fingerprint.clone(),
            training,
            metrics: serde_json::json!({ "validation": summary_json(&metrics) }),
            references,
        },
    )?;
    scion_onnx::io::save(&model, &job.out)?;

    // Parity on every engine.
    let val_paths: Vec<PathBuf> = val_kept.iter().map(|s| s.path.clone()).collect();
    let parities = check_parity(
        job,
        &model,
        &val_paths,
        &expected,
        &dataset_fingerprint,
        observer,
    )?;
    crate::export::save_with_metrics(
        &mut model,
        serde_json::json!({ "validation": summary_json(&metrics), "parity": parities }),
        &job.out,
    )?;

    totals.skipped.sort();
    totals.skipped.dedup();
    let report = TrainReport {
        classes: dataset.classes.clone(),
        train_images: train_y.len(),
        val_images: val_y.len(),
        skipped: totals.skipped,
        features_computed: totals.computed,
        features_cached: totals.cached,
        feature_seconds,
        fit_seconds,
        history: fitted.history,
        best_epoch: fitted.best_epoch,
        stop: fitted.stop,
        metrics,
        parity: parities,
        model: job.out.clone(),
    };
    write_reports(&job.report_dir, &report)?;
    Ok(report)
}
