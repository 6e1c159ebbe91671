//! The backbone-training branch of a job: the interpreted backbone (from where training
//! starts to the feature tensor) and a new head, fed from cached frozen-prefix outputs or
//! from images, through the shared training loop.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;

use burn::prelude::Device;
use scion_edge::augment::Augmentation;

use super::inputs::{Prepared, Source};
use super::quality::{LpFtReport, SplitFeatures, lp_ft_report, solve_linear_head};
use super::{TrainError, TrainJob, TrainObserver};
use crate::backbone::Backbone;
use crate::dataset::Sample;
use crate::features::ImageHash;
use crate::finetune::{FineTune, TrunkInputs};
use crate::fit::{Fitted, Trained, check_labels, train_loop};
use crate::head::HeadSpec;
use crate::loader::Loader;
use crate::net::{LoadOptions, Program};

/// Where training starts and what trains.
pub(super) struct Start<'a> {
    /// The tensor the trained layers read (`None`: the image input).
    pub tensor: Option<&'a str>,
    /// The initializers that train.
    pub trainable: HashSet<String>,
}

/// What fine-tuning produced.
pub(super) struct Tuned {
    /// The exported weights (the fine-tuned model, or the probe when it did better).
    pub fitted: Fitted,
    /// Backbone values that trained.
    pub trainable_values: usize,
    /// Features of both splits under the exported weights.
    pub features: SplitFeatures,
    /// LP-FT's two candidates, when the head is linear and the backbone pretrained.
    pub lp_ft: Option<LpFtReport>,
}

/// Train the backbone's unfrozen layers with a head. A linear head on a pretrained
/// backbone starts as the converged probe on the frozen features (LP-FT, Kumar et al.
/// 2022), with a one-epoch warm-up, so fine-tuning starts where head-only training ends;
/// the probe is exported instead when fine-tuning does not lower the calibrated
/// validation loss.
#[allow(clippy::too_many_arguments)]
pub(super) fn fine_tune(
    job: &TrainJob,
    backbone: &Backbone,
    prepared: &Prepared,
    classes: usize,
    source: Source,
    start: Start<'_>,
    loader: &Loader,
    device: &Device,
    interrupt: &AtomicBool,
    observer: &mut dyn TrainObserver,
) -> Result<Tuned, TrainError> {
    check_labels(&prepared.train_labels, &prepared.val_labels, classes)?;
    let net_err =
        |e: crate::net::NetError| TrainError::Data(format!("{}: {e}", job.backbone.display()));
    let outputs = [backbone.feature_tensor.clone()];
    let options = LoadOptions {
        trainable: start.trainable,
        start: start.tensor,
        outputs: Some(&outputs),
        freeze_batch_norm: job.freeze_batch_norm,
    };
    let (program, mut params) =
        Program::load(&backbone.model.proto, &options, device).map_err(net_err)?;
    if job.from_scratch {
        program.initialise(&mut params, job.fit.seed);
    }
    let trainable_values = params.trainable_len();
    let (train, val) = match source {
        Source::Cached {
            train_views,
            val,
            shape,
        } => {
            if shape.is_empty() || shape.len() > 4 {
                return Err(TrainError::Data(format!(
                    "'{}' has shape {shape:?}; fine-tuning starts at a tensor of 1 to 4 \
                     dimensions per image",
                    start.tensor.unwrap_or_default()
                )));
            }
            (
                TrunkInputs::Cached {
                    views: train_views,
                    shape: shape.clone(),
                },
                TrunkInputs::Cached {
                    views: vec![val],
                    shape,
                },
            )
        }
        Source::Images { train, val } => {
            let with_paths = |samples: &[Sample], hashes: &[ImageHash]| {
                samples
                    .iter()
                    .zip(hashes)
                    .map(|(s, h)| (s.path.clone(), *h))
                    .collect::<Vec<_>>()
            };
            (
                TrunkInputs::Images {
                    loader,
                    images: with_paths(&prepared.train, &train),
                    augment: (job.aug_views > 0).then_some((Augmentation::default(), job.fit.seed)),
                    threads: job.threads,
                },
                TrunkInputs::Images {
                    loader,
                    images: with_paths(&prepared.val, &val),
                    augment: None,
                    threads: job.threads,
                },
            )
        }
    };
    let mut learner = FineTune::new(
        program,
        params,
        &backbone.feature_tensor,
        classes,
        &job.fit,
        job.tune.clone(),
        train,
        &prepared.train_labels,
        val,
        device,
    )?;
    let classes_present = classes;
    let lp = if job.fit.head == HeadSpec::Linear && !job.from_scratch {
        observer.stage("features for the linear probe", None);
        let train = learner.features(false)?;
        let val = learner.features(true)?;
        let dim = val.len() / prepared.val_labels.len().max(1);
        let (_, probe) = solve_linear_head(
            &job.fit,
            &train,
            &prepared.train_labels,
            &val,
            &prepared.val_labels,
            dim,
            classes_present,
            interrupt,
            observer,
        )?;
        learner.set_head(std::slice::from_ref(&probe.dense));
        Some((probe, SplitFeatures { train, val, dim }))
    } else {
        None
    };
    let mut config = job.fit.clone();
    if lp.is_some() {
        config.warmup_steps = prepared.train_labels.len().div_ceil(config.batch.max(1));
    }
    observer.stage("training", Some(config.epochs));
    let fitted = train_loop(
        &mut learner,
        &prepared.val_labels,
        &config,
        interrupt,
        observer,
    )?;
    let tuned_features = || -> Result<SplitFeatures, TrainError> {
        let train = learner.features(false)?;
        let val = learner.features(true)?;
        let dim = val.len() / prepared.val_labels.len().max(1);
        Ok(SplitFeatures { train, val, dim })
    };
    let Some((probe, probe_features)) = lp else {
        return Ok(Tuned {
            features: tuned_features()?,
            fitted,
            trainable_values,
            lp_ft: None,
        });
    };
    let report = lp_ft_report(&probe, &fitted.val_logits, &prepared.val_labels);
    observer.finished(&format!(
        "LP-FT: probe val top-1 {:.2}% (calibrated loss {:.4}), fine-tuned {:.2}% ({:.4}): exporting the {}",
        100.0 * report.probe_top1,
        report.probe_loss,
        100.0 * report.tuned_top1,
        report.tuned_loss,
        report.exported
    ));
    if report.exported == "probe" {
        let fitted = Fitted {
            trained: Trained {
                layers: vec![probe.dense.clone()],
                backbone: Vec::new(),
            },
            val_logits: probe.val_logits.clone(),
            ..fitted
        };
        return Ok(Tuned {
            fitted,
            trainable_values,
            features: probe_features,
            lp_ft: Some(report),
        });
    }
    Ok(Tuned {
        features: tuned_features()?,
        fitted,
        trainable_values,
        lp_ft: Some(report),
    })
}
