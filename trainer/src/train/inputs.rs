//! What the trained layers read: cached tensors computed by a frozen backbone (its
//! features for a head, or the output of the frozen prefix when backbone layers train),
//! or the images themselves when the whole network trains. Unreadable images are dropped
//! here, once, for every later stage.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use scion_edge::augment::Augmentation;
use scion_edge::engine::Session;
use scion_edge::pipeline::for_each_prepared;
use sha2::{Digest, Sha256};

use super::{TrainError, TrainJob, TrainObserver};
use crate::backbone::Backbone;
use crate::dataset::{Dataset, Sample};
use crate::features::{CacheKey, ExtractStats, FeatureCache, ImageHash, extract};
use crate::loader::{Loader, View};

/// Features or images counted as they were prepared.
#[derive(Default)]
pub(super) struct Totals {
    pub computed: usize,
    pub cached: usize,
    pub skipped: Vec<(PathBuf, String)>,
    /// The engine that computed backbone features, when a frozen backbone did.
    pub feature_engine: Option<scion_edge::engine::EngineKind>,
}

impl Totals {
    fn add(&mut self, stats: &ExtractStats) {
        self.computed += stats.computed;
        self.cached += stats.cached;
        self.skipped.extend(stats.failed.iter().cloned());
    }
}

/// The usable examples of both splits.
pub(super) struct Prepared {
    pub train: Vec<Sample>,
    pub train_labels: Vec<usize>,
    pub val: Vec<Sample>,
    pub val_labels: Vec<usize>,
    pub source: Source,
}

/// Where the examples' tensors are.
pub(super) enum Source {
    /// Computed by a frozen backbone: one flat `n x len` block per training view, and the
    /// validation block; `shape` is one example's.
    Cached {
        train_views: Vec<Vec<f32>>,
        val: Vec<f32>,
        shape: Vec<usize>,
    },
    /// The images, with their content hashes.
    Images {
        train: Vec<ImageHash>,
        val: Vec<ImageHash>,
    },
}

/// Run `backbone` (cut at the tensor the trained layers read) over every image: the eval
/// view, or `job.aug_views` augmented views of the training images; cached on disk.
pub(super) fn cached(
    job: &TrainJob,
    dataset: &Dataset,
    backbone: &Backbone,
    loader: &Loader,
    totals: &mut Totals,
    interrupt: &AtomicBool,
    observer: &mut dyn TrainObserver,
) -> Result<Prepared, TrainError> {
    let mut session = backbone.feature_session(job.device.feature_engine(), &job.engine)?;
    totals.feature_engine = Some(session.kind());
    let shape = backbone.feature_shape(session.as_mut())?;
    let len: usize = shape.iter().skip(1).product();
    let mut stage = |name: &str,
                     samples: &[Sample],
                     view: View,
                     observer: &mut dyn TrainObserver|
     -> Result<Vec<Option<Vec<f32>>>, TrainError> {
        views_of(
            job,
            backbone,
            session.as_mut(),
            len,
            loader,
            (name, samples, view),
            totals,
            interrupt,
            observer,
        )
    };
    let mut train_views = Vec::new();
    if job.aug_views == 0 {
        train_views.push(stage("train", &dataset.train, View::Eval, observer)?);
    }
    for index in 0..job.aug_views {
        let view = View::Augmented {
            augmentation: Augmentation::default(),
            seed: job.fit.seed,
            index,
        };
        let name = format!("train, view {}/{}", index + 1, job.aug_views);
        train_views.push(stage(&name, &dataset.train, view, observer)?);
    }
    let val_features = stage("val", &dataset.val, View::Eval, observer)?;
    // An image is used when every view of it could be computed.
    let train_kept: Vec<usize> = (0..dataset.train.len())
        .filter(|&i| train_views.iter().all(|v| v[i].is_some()))
        .collect();
    let train_x: Vec<Vec<f32>> = train_views
        .into_iter()
        .map(|mut v| {
            train_kept
                .iter()
                .flat_map(|&i| v[i].take().expect("kept"))
                .collect()
        })
        .collect();
    let train: Vec<Sample> = train_kept
        .iter()
        .map(|&i| dataset.train[i].clone())
        .collect();
    let (mut val_x, mut val) = (Vec::new(), Vec::new());
    for (sample, f) in dataset.val.iter().zip(val_features) {
        if let Some(f) = f {
            val_x.extend(f);
            val.push(sample.clone());
        }
    }
    Ok(Prepared {
        train_labels: train.iter().map(|s| s.class).collect(),
        val_labels: val.iter().map(|s| s.class).collect(),
        train,
        val,
        source: Source::Cached {
            train_views: train_x,
            val: val_x,
            shape: shape[1..].to_vec(),
        },
    })
}

#[allow(clippy::too_many_arguments)]
fn views_of(
    job: &TrainJob,
    backbone: &Backbone,
    session: &mut dyn Session,
    len: usize,
    loader: &Loader,
    (name, samples, view): (&str, &[Sample], View),
    totals: &mut Totals,
    interrupt: &AtomicBool,
    observer: &mut dyn TrainObserver,
) -> Result<Vec<Option<Vec<f32>>>, TrainError> {
    let key = CacheKey {
        backbone_sha256: backbone.sha256.clone(),
        preprocessing: backbone.model.card.preprocessing.clone(),
        feature_tensor: backbone.feature_tensor.clone(),
        view: view.key(),
    };
    let mut cache = FeatureCache::open(&job.cache_dir, &key, len)?;
    let paths: Vec<PathBuf> = samples.iter().map(|s| s.path.clone()).collect();
    observer.stage(&format!("features ({name})"), Some(paths.len()));
    let extracted = extract(
        &paths,
        loader,
        &view,
        &backbone.feature_tensor,
        session,
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
}

/// Decode every image once (kept in the loader's memory for the epochs to come), drop
/// the unreadable ones, and keep each image's content hash.
pub(super) fn images(
    job: &TrainJob,
    dataset: &Dataset,
    loader: &Loader,
    totals: &mut Totals,
    interrupt: &AtomicBool,
    observer: &mut dyn TrainObserver,
) -> Result<Prepared, TrainError> {
    let all: Vec<&Sample> = dataset.train.iter().chain(&dataset.val).collect();
    observer.stage("decoding images", Some(all.len()));
    let hashes: Vec<Result<ImageHash, String>> = all
        .iter()
        .map(|s| {
            std::fs::read(&s.path)
                .map(|b| -> ImageHash { Sha256::digest(&b).into() })
                .map_err(|e| e.to_string())
        })
        .collect();
    let mut failed: Vec<Option<String>> = hashes.iter().map(|h| h.clone().err()).collect();
    let readable: Vec<usize> = (0..all.len()).filter(|&i| failed[i].is_none()).collect();
    let mut done = 0;
    let mut stopped = false;
    for_each_prepared(
        readable.len(),
        loader.tensor_len(),
        job.extract_batch.max(1),
        job.threads,
        |j| {
            let i = readable[j];
            let hash = hashes[i].as_ref().expect("readable");
            loader.prepare(&all[i].path, hash, &View::Eval)
        },
        |b| -> Result<(), TrainError> {
            done += b.indices.len();
            if !observer.progress(done) || interrupt.load(Ordering::Relaxed) {
                stopped = true;
            }
            Ok(())
        },
        |j, error| {
            failed[readable[j]] = Some(error);
            Ok(())
        },
    )?;
    if stopped {
        return Err(crate::features::FeatureError::Interrupted.into());
    }
    let (mut prepared_train, mut prepared_val) = (Vec::new(), Vec::new());
    let (mut train_hashes, mut val_hashes) = (Vec::new(), Vec::new());
    for (i, sample) in all.iter().enumerate() {
        if let Some(reason) = &failed[i] {
            tracing::warn!("{}: skipped: {reason}", sample.path.display());
            totals.skipped.push((sample.path.clone(), reason.clone()));
            continue;
        }
        let hash = *hashes[i].as_ref().expect("readable");
        if i < dataset.train.len() {
            prepared_train.push((*sample).clone());
            train_hashes.push(hash);
        } else {
            prepared_val.push((*sample).clone());
            val_hashes.push(hash);
        }
    }
    totals.computed += readable.len();
    observer.finished(&format!(
        "decoded {} images, {} skipped",
        all.len() - totals.skipped.len(),
        totals.skipped.len()
    ));
    Ok(Prepared {
        train_labels: prepared_train.iter().map(|s| s.class).collect(),
        val_labels: prepared_val.iter().map(|s| s.class).collect(),
        train: prepared_train,
        val: prepared_val,
        source: Source::Images {
            train: train_hashes,
            val: val_hashes,
        },
    })
}
