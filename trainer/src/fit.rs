//! Training the head on cached features: mini-batch cross-entropy with AdamW or SGD, a
//! cosine learning-rate schedule, early stopping on validation loss and the best epoch's
//! weights kept. Deterministic on the CPU for a given seed: the shuffles come from
//! [`SplitMix64`], the initial weights and dropout masks from the seeded device.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{
    AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig, momentum::MomentumConfig,
};
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

/// How the classes weigh in the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeight {
    /// Every image counts the same.
    #[default]
    None,
    /// Each class counts the same in total (scikit-learn's `balanced`:
    /// `n / (classes · n_c)` per image).
    Balanced,
}

/// How mini-batches are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampler {
    /// Every image once per epoch, shuffled.
    #[default]
    Shuffle,
    /// As many draws per epoch as images, with replacement, each class equally likely.
    /// (The full-batch linear head weighs classes instead, which is the same in
    /// expectation.)
    Balanced,
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
    /// Steps of linear learning-rate warm-up before the cosine decay (0: none).
    pub warmup_steps: usize,
    /// Class weights of the loss.
    pub class_weight: ClassWeight,
    /// How batches are drawn.
    pub sampler: Sampler,
    /// The linear head's grid of `C` (inverse L2 strength, scikit-learn's meaning); one
    /// value fixes it.
    pub grid: Vec<f64>,
    /// Retrain the linear head on training + validation images at the chosen `C`.
    pub refit: bool,
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
            warmup_steps: 0,
            class_weight: ClassWeight::None,
            sampler: Sampler::Shuffle,
            grid: crate::linear::DEFAULT_GRID.to_vec(),
            refit: false,
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

/// Trained weights: the head's layers and, when the backbone trained too, the backbone
/// initializers that changed (by name), to be written back into the ONNX.
#[derive(Debug, Clone, Default)]
pub struct Trained {
    /// The head.
    pub layers: Vec<Dense>,
    /// Changed backbone initializers.
    pub backbone: Vec<(String, Vec<f32>)>,
}

/// The outcome of training.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The best epoch's weights.
    pub trained: Trained,
    /// The best epoch (lowest validation loss), 1-based; 0 if no epoch finished.
    pub best_epoch: usize,
    /// Every finished epoch.
    pub history: Vec<EpochRecord>,
    /// Why training ended.
    pub stop: StopReason,
    /// Validation logits of the best epoch, one row per validation image.
    pub val_logits: Vec<Vec<f32>>,
}

/// Training cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// The inputs are inconsistent or empty.
    #[error("{0}")]
    Input(String),
    /// A training input could not be prepared or the network could not run.
    #[error("{0}")]
    Step(String),
}

/// What the training loop reports while it runs.
pub trait FitObserver {
    /// A mini-batch finished (`done` of `total` in this epoch).
    fn batch(&mut self, _epoch: usize, _done: usize, _total: usize) {}
    /// An epoch finished; `best` holds the weights when they are the best so far.
    fn epoch(&mut self, _record: &EpochRecord, _best: Option<&Trained>) {}
}

impl FitObserver for () {}

/// What the training loop drives: the head alone on cached features, or the backbone's
/// unfrozen layers with it (see `finetune`). One loop, so schedules, early stopping,
/// checkpoints and curves are the same whatever trains.
pub trait Learner {
    /// Class of each training example.
    fn train_labels(&self) -> &[usize];
    /// One optimisation step on the training examples `batch` at learning rate `lr`;
    /// returns the summed loss and the number predicted right.
    fn train_batch(
        &mut self,
        epoch: usize,
        batch: &[usize],
        lr: f64,
    ) -> Result<(f64, usize), FitError>;
    /// Class logits of every validation example, in order.
    fn validate(&mut self) -> Result<Vec<Vec<f32>>, FitError>;
    /// The current weights.
    fn snapshot(&self) -> Trained;
    /// The current weights are the best so far: keep them to return to.
    fn mark_best(&mut self) {}
    /// Go back to the weights last marked best (so what follows sees the exported model).
    fn restore_best(&mut self) {}
}

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

/// Check labels and sizes before training starts.
pub fn check_labels(
    train_labels: &[usize],
    val_labels: &[usize],
    classes: usize,
) -> Result<(), FitError> {
    if train_labels.is_empty() || val_labels.is_empty() {
        return Err(FitError::Input(
            "training needs at least one training and one validation image".into(),
        ));
    }
    if classes < 2 {
        return Err(FitError::Input(format!(
            "training needs at least 2 classes, found {classes}"
        )));
    }
    if let Some(&bad) = train_labels
        .iter()
        .chain(val_labels)
        .find(|&&c| c >= classes)
    {
        return Err(FitError::Input(format!(
            "label {bad} out of range for {classes} classes"
        )));
    }
    Ok(())
}

/// The optimizer `config` names, for any module.
pub fn optimizer(config: &FitConfig) -> ModuleOptimizer {
    match config.optimizer {
        OptimizerKind::Adamw => AdamWConfig::new()
            .with_weight_decay(config.weight_decay as f32)
            .init(),
        OptimizerKind::Sgd => SgdConfig::new()
            .with_weight_decay(Some(burn::optim::decay::WeightDecayConfig::new(
                config.weight_decay as f32,
            )))
            .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
            .init(),
    }
}

/// The training loss `config` asks for, class weights derived from `train_labels`.
pub fn loss_function(
    config: &FitConfig,
    train_labels: &[usize],
    classes: usize,
    device: &Device,
) -> CrossEntropyLoss {
    let smoothing = (config.label_smoothing > 0.0).then_some(config.label_smoothing);
    CrossEntropyLossConfig::new()
        .with_smoothing(smoothing)
        .with_weights(class_weights(config.class_weight, train_labels, classes))
        .init(device)
}

/// Per-class loss weights (`None`: all 1).
pub fn class_weights(
    kind: ClassWeight,
    train_labels: &[usize],
    classes: usize,
) -> Option<Vec<f32>> {
    match kind {
        ClassWeight::None => None,
        ClassWeight::Balanced => {
            let counts = crate::linear::class_counts(train_labels, classes);
            Some(
                (0..classes)
                    .map(|c| crate::linear::balanced_weight(&counts, c, train_labels.len()))
                    .collect(),
            )
        }
    }
}

/// Summed loss and number right of one batch's `logits` against `labels`, plus the loss
/// tensor to differentiate.
pub fn batch_loss(
    loss_fn: &CrossEntropyLoss,
    logits: Tensor<2>,
    labels: &[usize],
) -> (Tensor<1>, f64, usize) {
    let device = logits.device();
    let ys: Vec<i64> = labels.iter().map(|&c| c as i64).collect();
    let predicted: Vec<i64> = logits
        .clone()
        .argmax(1)
        .into_data()
        .try_into_vec_as::<i64>()
        .expect("argmax gives integers");
    let correct = predicted.iter().zip(&ys).filter(|(p, y)| p == y).count();
    let y = Tensor::<1, Int>::from_data(TensorData::new(ys, [labels.len()]), &device);
    let loss = loss_fn.forward(logits, y);
    let value: f32 = loss
        .clone()
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("loss is a float")[0];
    (loss, f64::from(value) * labels.len() as f64, correct)
}

/// The head alone on cached features.
struct HeadLearner<'a> {
    data: TrainingData<'a>,
    head: Head,
    optimizer: ModuleOptimizer,
    loss_fn: CrossEntropyLoss,
    device: Device,
}

impl Learner for HeadLearner<'_> {
    fn train_labels(&self) -> &[usize] {
        self.data.train_labels
    }

    fn train_batch(
        &mut self,
        epoch: usize,
        batch: &[usize],
        lr: f64,
    ) -> Result<(f64, usize), FitError> {
        let dim = self.data.dim;
        let view = self.data.train_views[(epoch - 1) % self.data.train_views.len()];
        let mut xs = Vec::with_capacity(batch.len() * dim);
        batch
            .iter()
            .for_each(|&i| xs.extend_from_slice(&view[i * dim..(i + 1) * dim]));
        let labels: Vec<usize> = batch.iter().map(|&i| self.data.train_labels[i]).collect();
        let x = Tensor::<2>::from_data(TensorData::new(xs, [batch.len(), dim]), &self.device);
        let (loss, loss_sum, correct) = batch_loss(&self.loss_fn, self.head.forward(x), &labels);
        let grads = GradientsParams::from_grads(loss.backward(), &self.head);
        self.head = self.optimizer.step(lr, self.head.clone(), grads);
        Ok((loss_sum, correct))
    }

    fn validate(&mut self) -> Result<Vec<Vec<f32>>, FitError> {
        let layers = self.head.to_dense();
        Ok(self
            .data
            .val
            .features
            .chunks_exact(self.data.dim)
            .map(|row| apply_dense(&layers, row))
            .collect())
    }

    fn snapshot(&self) -> Trained {
        Trained {
            layers: self.head.to_dense(),
            backbone: Vec::new(),
        }
    }
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
    check_labels(train_labels, val.labels, classes)?;
    let n = train_labels.len();
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
    device.seed(config.seed);
    let mut learner = HeadLearner {
        data: *data,
        head: Head::new(config.head, dim, classes, config.dropout, device),
        optimizer: optimizer(config),
        loss_fn: loss_function(config, train_labels, classes, device),
        device: device.clone(),
    };
    train_loop(&mut learner, val.labels, config, interrupt, observer)
}

/// The training loop every learner shares: shuffled mini-batches, a per-step cosine
/// schedule, validation after each epoch, the best epoch kept, early stopping, and Ctrl-C
/// polled between batches.
pub fn train_loop(
    learner: &mut dyn Learner,
    val_labels: &[usize],
    config: &FitConfig,
    interrupt: &AtomicBool,
    observer: &mut dyn FitObserver,
) -> Result<Fitted, FitError> {
    let train_labels = learner.train_labels().to_vec();
    let n = train_labels.len();
    let classes = train_labels.iter().max().map_or(0, |m| m + 1);
    let counts = crate::linear::class_counts(&train_labels, classes);
    let batch = config.batch.max(1);
    let steps_per_epoch = n.div_ceil(batch);
    let total_steps = (steps_per_epoch * config.epochs).max(1);
    let mut rng = SplitMix64::new(config.seed ^ 0x5C10_0F17);
    let mut order: Vec<usize> = (0..n).collect();
    let mut history = Vec::new();
    let mut best: Option<(f64, usize, Trained, Vec<Vec<f32>>)> = None;
    let mut stop = StopReason::Completed;
    let mut step = 0usize;

    'epochs: for epoch in 1..=config.epochs {
        let started = Instant::now();
        match config.sampler {
            Sampler::Shuffle => rng.shuffle(&mut order),
            Sampler::Balanced => balanced_draws(&train_labels, &counts, &mut rng, &mut order),
        }
        let schedule = |step| {
            if step < config.warmup_steps {
                config.lr * (step + 1) as f64 / config.warmup_steps as f64
            } else {
                cosine(config.lr, step, total_steps)
            }
        };
        let epoch_lr = schedule(step);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for (b, chunk) in order.chunks(batch).enumerate() {
            if interrupt.load(Ordering::Relaxed) {
                stop = StopReason::Interrupted;
                break 'epochs;
            }
            let (l, c) = learner.train_batch(epoch, chunk, schedule(step))?;
            loss_sum += l;
            correct += c;
            step += 1;
            observer.batch(epoch, b + 1, steps_per_epoch);
        }
        let logits = learner.validate()?;
        let (val_loss, val_acc) = crate::linear::score_logits(&logits, val_labels);
        let record = EpochRecord {
            epoch,
            lr: epoch_lr,
            train_loss: loss_sum / n as f64,
            train_acc: correct as f64 / n as f64,
            val_loss,
            val_acc,
        };
        tracing::debug!(?record, seconds = started.elapsed().as_secs_f64(), "epoch");
        let improved = best.as_ref().is_none_or(|b| val_loss < b.0);
        if improved {
            best = Some((val_loss, epoch, learner.snapshot(), logits));
            learner.mark_best();
        }
        observer.epoch(
            &record,
            improved.then(|| &best.as_ref().expect("just set").2),
        );
        history.push(record);
        let best_epoch = best.as_ref().map_or(0, |b| b.1);
        if config.patience > 0 && epoch - best_epoch >= config.patience {
            stop = StopReason::EarlyStopped;
            break;
        }
    }
    learner.restore_best();
    let (best_epoch, trained, val_logits) = match best {
        Some((_, epoch, trained, logits)) => (epoch, trained, logits),
        None => (0, learner.snapshot(), learner.validate()?),
    };
    Ok(Fitted {
        trained,
        best_epoch,
        history,
        stop,
        val_logits,
    })
}

/// One epoch of the balanced sampler: `order.len()` draws with replacement, each class
/// equally likely, then an image of it uniformly.
fn balanced_draws(labels: &[usize], counts: &[usize], rng: &mut SplitMix64, order: &mut [usize]) {
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); counts.len()];
    labels
        .iter()
        .enumerate()
        .for_each(|(i, &c)| members[c].push(i));
    let present: Vec<&Vec<usize>> = members.iter().filter(|m| !m.is_empty()).collect();
    for slot in order.iter_mut() {
        let class = present[(rng.next_u64() % present.len() as u64) as usize];
        *slot = class[(rng.next_u64() % class.len() as u64) as usize];
    }
}

/// The cosine schedule: `peak` at step 0, decaying to 0 at `total`.
fn cosine(peak: f64, step: usize, total: usize) -> f64 {
    peak * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos())
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
