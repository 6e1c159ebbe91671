//! Training the head on cached features: mini-batch cross-entropy with AdamW or SGD, a
//! cosine learning-rate schedule, early stopping on validation loss and the best epoch's
//! weights kept. Deterministic on the CPU for a given seed: the shuffles come from
//! [`SplitMix64`], the initial weights and dropout masks from the seeded device.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams, SgdConfig, momentum::MomentumConfig};
use burn::prelude::*;
use scion_edge::rng::SplitMix64;
use scion_onnx::patch::Dense;

use crate::head::{Head, HeadSpec, apply_dense};

/// The optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with decoupled weight decay.
    Adamw,
    /// Stochastic gradient descent with Nesterov-free momentum 0.9.
    Sgd,
}

/// How to train.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FitConfig {
    /// Shape of the head.
    pub head: HeadSpec,
    /// Maximum number of passes over the training set.
    pub epochs: usize,
    /// Peak learning rate (the cosine schedule decays it to zero over `epochs`).
    pub lr: f64,
    /// Mini-batch size.
    pub batch: usize,
    /// Seed for initial weights, shuffles and dropout.
    pub seed: u64,
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// Weight decay (decoupled for AdamW, L2 for SGD).
    pub weight_decay: f64,
    /// Label smoothing of the training loss (0: none).
    pub label_smoothing: f32,
    /// Dropout before the output layer of an MLP head.
    pub dropout: f64,
    /// Stop after this many epochs without a better validation loss (0: never).
    pub patience: usize,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            head: HeadSpec::Linear,
            epochs: 40,
            lr: 1e-3,
            batch: 64,
            seed: 0,
            optimizer: OptimizerKind::Adamw,
            weight_decay: 1e-4,
            label_smoothing: 0.0,
            dropout: 0.2,
            patience: 8,
        }
    }
}

/// Features and labels of one split: `features` is row-major `[labels.len(), dim]`.
#[derive(Debug, Clone, Copy)]
pub struct Split<'a> {
    /// Row-major features.
    pub features: &'a [f32],
    /// Class index per row.
    pub labels: &'a [usize],
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Learning rate at the start of the epoch.
    pub lr: f64,
    /// Mean training loss (with label smoothing and dropout, as optimised).
    pub train_loss: f64,
    /// Training accuracy of the batches as they were trained.
    pub train_acc: f64,
    /// Validation cross-entropy of the head after the epoch.
    pub val_loss: f64,
    /// Validation top-1 after the epoch.
    pub val_acc: f64,
}

/// Why training ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// All epochs ran.
    Completed,
    /// Validation loss stopped improving for `patience` epochs.
    EarlyStopped,
    /// The user interrupted (Ctrl-C); the best epoch so far is kept.
    Interrupted,
}

/// A trained head.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The best epoch's layers.
    pub layers: Vec<Dense>,
    /// The best epoch (lowest validation loss), 1-based; 0 if no epoch finished.
    pub best_epoch: usize,
    /// Every finished epoch.
    pub history: Vec<EpochRecord>,
    /// Why training ended.
    pub stop: StopReason,
}

/// Training cannot start.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// The inputs are inconsistent or empty.
    #[error("{0}")]
    Input(String),
}

/// What [`fit`] reports while it runs.
pub trait FitObserver {
    /// A mini-batch finished (`done` of `total` in this epoch).
    fn batch(&mut self, _epoch: usize, _done: usize, _total: usize) {}
    /// An epoch finished; `best` holds the head when it is the best so far.
    fn epoch(&mut self, _record: &EpochRecord, _best: Option<&[Dense]>) {}
}

impl FitObserver for () {}

/// What the head learns from.
#[derive(Debug, Clone, Copy)]
pub struct TrainingData<'a> {
    /// One or more feature views of the same training images (row-major, `dim` wide),
    /// used in turn, one per epoch.
    pub train_views: &'a [&'a [f32]],
    /// Class of each training image.
    pub train_labels: &'a [usize],
    /// The validation split that selects the best epoch.
    pub val: Split<'a>,
    /// Feature length.
    pub dim: usize,
    /// Number of classes.
    pub classes: usize,
}

/// Train a head on `data` and keep the epoch with the lowest validation loss. `interrupt`
/// is polled between batches.
pub fn fit(
    data: &TrainingData<'_>,
    config: &FitConfig,
    device: &Device,
    interrupt: &AtomicBool,
    observer: &mut dyn FitObserver,
) -> Result<Fitted, FitError> {
    let TrainingData {
        train_views,
        train_labels,
        val,
        dim,
        classes,
    } = *data;
    let n = train_labels.len();
    if n == 0 || val.labels.is_empty() {
        return Err(FitError::Input(
            "training needs at least one training and one validation image".into(),
        ));
    }
    if classes < 2 {
        return Err(FitError::Input(format!(
            "training needs at least 2 classes, found {classes}"
        )));
    }
    if train_views.is_empty() || train_views.iter().any(|v| v.len() != n * dim) {
        return Err(FitError::Input(format!(
            "every training view must hold {n} x {dim} features"
        )));
    }
    if val.features.len() != val.labels.len() * dim {
        return Err(FitError::Input(format!(
            "validation features must hold {} x {dim} values",
            val.labels.len()
        )));
    }
    if let Some(&bad) = train_labels
        .iter()
        .chain(val.labels)
        .find(|&&c| c >= classes)
    {
        return Err(FitError::Input(format!(
            "label {bad} out of range for {classes} classes"
        )));
    }

    device.seed(config.seed);
    let mut head = Head::new(config.head, dim, classes, config.dropout, device);
    let mut optimizer = match config.optimizer {
        OptimizerKind::Adamw => AdamWConfig::new()
            .with_weight_decay(config.weight_decay as f32)
            .init(),
        OptimizerKind::Sgd => SgdConfig::new()
            .with_weight_decay(Some(burn::optim::decay::WeightDecayConfig::new(
                config.weight_decay as f32,
            )))
            .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
            .init(),
    };
    let smoothing = (config.label_smoothing > 0.0).then_some(config.label_smoothing);
    let loss_fn = CrossEntropyLossConfig::new()
        .with_smoothing(smoothing)
        .init(device);

    let batch = config.batch.max(1);
    let steps_per_epoch = n.div_ceil(batch);
    let total_steps = (steps_per_epoch * config.epochs).max(1);
    let mut rng = SplitMix64::new(config.seed ^ 0x5C10_0F17);
    let mut order: Vec<usize> = (0..n).collect();
    let mut history = Vec::new();
    let mut best: Option<(f64, usize, Vec<Dense>)> = None;
    let mut stop = StopReason::Completed;
    let mut step = 0usize;

    'epochs: for epoch in 1..=config.epochs {
        let started = Instant::now();
        let view = train_views[(epoch - 1) % train_views.len()];
        rng.shuffle(&mut order);
        let epoch_lr = cosine(config.lr, step, total_steps);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for (b, chunk) in order.chunks(batch).enumerate() {
            if interrupt.load(Ordering::Relaxed) {
                stop = StopReason::Interrupted;
                break 'epochs;
            }
            let mut xs = Vec::with_capacity(chunk.len() * dim);
            chunk
                .iter()
                .for_each(|&i| xs.extend_from_slice(&view[i * dim..(i + 1) * dim]));
            let ys: Vec<i64> = chunk.iter().map(|&i| train_labels[i] as i64).collect();
            let x = Tensor::<2>::from_data(TensorData::new(xs, [chunk.len(), dim]), device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(ys.clone(), [chunk.len()]), device);
            let logits = head.forward(x);
            let predicted: Vec<i64> = logits
                .clone()
                .argmax(1)
                .into_data()
                .try_into_vec_as::<i64>()
                .expect("argmax gives integers");
            correct += predicted.iter().zip(&ys).filter(|(p, y)| p == y).count();
            let loss = loss_fn.forward(logits, y);
            let loss_value: f32 = loss
                .clone()
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("loss is a float")[0];
            loss_sum += f64::from(loss_value) * chunk.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = optimizer.step(cosine(config.lr, step, total_steps), head, grads);
            step += 1;
            observer.batch(epoch, b + 1, steps_per_epoch);
        }
        let layers = head.to_dense();
        let (val_loss, val_acc) = evaluate(&layers, val, dim);
        let record = EpochRecord {
            epoch,
            lr: epoch_lr,
            train_loss: loss_sum / n as f64,
            train_acc: correct as f64 / n as f64,
            val_loss,
            val_acc,
        };
        tracing::debug!(?record, seconds = started.elapsed().as_secs_f64(), "epoch");
        let improved = best.as_ref().is_none_or(|(l, _, _)| val_loss < *l);
        if improved {
            best = Some((val_loss, epoch, layers));
        }
        observer.epoch(
            &record,
            improved.then(|| &best.as_ref().expect("just set").2[..]),
        );
        history.push(record);
        let best_epoch = best.as_ref().map_or(0, |b| b.1);
        if config.patience > 0 && epoch - best_epoch >= config.patience {
            stop = StopReason::EarlyStopped;
            break;
        }
    }
    let (best_epoch, layers) = match best {
        Some((_, epoch, layers)) => (epoch, layers),
        None => (0, head.to_dense()),
    };
    Ok(Fitted {
        layers,
        best_epoch,
        history,
        stop,
    })
}

/// The cosine schedule: `peak` at step 0, decaying to 0 at `total`.
fn cosine(peak: f64, step: usize, total: usize) -> f64 {
    peak * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos())
}

/// Mean cross-entropy and top-1 of `layers` on a split.
pub fn evaluate(layers: &[Dense], split: Split<'_>, dim: usize) -> (f64, f64) {
    let (mut loss, mut correct) = (0.0f64, 0usize);
    for (row, &label) in split.features.chunks_exact(dim).zip(split.labels) {
        let probs = scion_edge::postprocess::softmax(&apply_dense(layers, row));
        loss -= f64::from(probs[label].max(1e-12)).ln();
        if argmax(&probs) == label {
            correct += 1;
        }
    }
    let n = split.labels.len().max(1) as f64;
    (loss / n, correct as f64 / n)
}

/// Index of the largest value (the first one on ties).
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}
