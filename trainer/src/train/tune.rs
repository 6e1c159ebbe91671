//! The backbone-training branch of a job: the interpreted backbone (from where training
//! starts to the feature tensor) and a new head, fed from cached frozen-prefix outputs or
//! from images, through the shared training loop.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;

use burn::prelude::Device;
use scion_edge::augment::Augmentation;

use super::inputs::{Prepared, Source};
use super::{TrainError, TrainJob};
use crate::backbone::Backbone;
use crate::dataset::Sample;
use crate::features::ImageHash;
use crate::finetune::{FineTune, TrunkInputs};
use crate::fit::{FitObserver, Fitted, check_labels, train_loop};
use crate::loader::Loader;
use crate::net::{LoadOptions, Program};

/// Where training starts and what trains.
pub(super) struct Start<'a> {
    /// The tensor the trained layers read (`None`: the image input).
    pub tensor: Option<&'a str>,
    /// The initializers that train.
    pub trainable: HashSet<String>,
}

/// Train the backbone's unfrozen layers with a new head; returns the result and how many
/// backbone values trained.
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
    observer: &mut dyn FitObserver,
) -> Result<(Fitted, usize), TrainError> {
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
    let fitted = train_loop(
        &mut learner,
        &prepared.val_labels,
        &job.fit,
        interrupt,
        observer,
    )?;
    Ok((fitted, trainable_values))
}
