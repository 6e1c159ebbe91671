//! Fine-tuning: the backbone's unfrozen layers (run by the [`crate::net`] interpreter) and
//! the head train together, the backbone at a lower learning rate. The frozen part in
//! front of them is not re-run every epoch: its output is computed once by the edge
//! engine and cached like head features, so `--unfreeze last:2` costs little more than a
//! head. When everything trains (`all`, `--from-scratch`) the images go through the whole
//! network, prepared per batch by the loader with a fresh augmentation each epoch.

use std::path::PathBuf;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use scion_edge::augment::Augmentation;

use crate::features::ImageHash;
use crate::fit::{FitConfig, FitError, Learner, Trained, batch_loss, loss_function, optimizer};
use crate::head::Head;
use crate::loader::{Loader, View};
use crate::net::{GraphParams, Program, Value};

/// Where the first trained layer's input comes from.
pub enum TrunkInputs<'a> {
    /// Precomputed tensors (the cached output of the frozen prefix), `shape` each; one
    /// or more views of every example (flat, row-major), used in turn, one per epoch.
    Cached {
        /// The views.
        views: Vec<Vec<f32>>,
        /// `[channels, height, width]` of one example.
        shape: Vec<usize>,
    },
    /// Images, prepared per batch.
    Images {
        /// The loader (keep decoded images in memory: each image is used every epoch).
        loader: &'a Loader,
        /// Each image and its content hash.
        images: Vec<(PathBuf, ImageHash)>,
        /// Augment training images (a new view per epoch), seeded.
        augment: Option<(Augmentation, u64)>,
        /// Preparing threads.
        threads: usize,
    },
}

impl TrunkInputs<'_> {
    /// Number of examples.
    pub fn len(&self) -> usize {
        match self {
            TrunkInputs::Cached { views, shape } => views
                .first()
                .map_or(0, |v| v.len() / shape.iter().product::<usize>()),
            TrunkInputs::Images { images, .. } => images.len(),
        }
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inputs of `indices` for `epoch` (1-based), as one batch.
    fn batch(&self, epoch: usize, indices: &[usize], device: &Device) -> Result<Value, FitError> {
        match self {
            TrunkInputs::Cached { views, shape } => {
                let len: usize = shape.iter().product();
                let view = &views[(epoch.max(1) - 1) % views.len()];
                let mut xs = Vec::with_capacity(indices.len() * len);
                indices
                    .iter()
                    .for_each(|&i| xs.extend_from_slice(&view[i * len..(i + 1) * len]));
                let mut dims = vec![indices.len()];
                dims.extend(shape.iter().copied());
                let n = xs.len();
                let flat = Tensor::<1>::from_data(TensorData::new(xs, [n]), device);
                Value::from_flat(flat, &dims).map_err(|e| FitError::Step(e.to_string()))
            }
            TrunkInputs::Images {
                loader,
                images,
                augment,
                threads,
            } => {
                let view = match augment {
                    Some((augmentation, seed)) if epoch > 0 => View::Augmented {
                        augmentation: *augmentation,
                        seed: *seed,
                        index: epoch - 1,
                    },
                    _ => View::Eval,
                };
                let len = loader.tensor_len();
                let mut xs = vec![0.0f32; indices.len() * len];
                let per_thread = indices.len().div_ceil((*threads).max(1)).max(1);
                std::thread::scope(|scope| {
                    let workers: Vec<_> = xs
                        .chunks_mut(per_thread * len)
                        .zip(indices.chunks(per_thread))
                        .map(|(out, idx)| {
                            scope.spawn(move || -> Result<(), FitError> {
                                for (slot, &i) in out.chunks_mut(len).zip(idx) {
                                    let (path, hash) = &images[i];
                                    let t = loader.prepare(path, hash, &view).map_err(|e| {
                                        FitError::Step(format!("{}: {e}", path.display()))
                                    })?;
                                    slot.copy_from_slice(&t);
                                }
                                Ok(())
                            })
                        })
                        .collect();
                    workers
                        .into_iter()
                        .try_for_each(|w| w.join().expect("a loader thread panicked"))
                })?;
                let shape = loader.contract().input_shape(indices.len());
                Ok(Value::R4(Tensor::from_data(
                    TensorData::new(xs, [shape[0], shape[1], shape[2], shape[3]]),
                    device,
                )))
            }
        }
    }
}

/// The trained part: the unfrozen backbone layers and the head.
#[derive(Module, Debug)]
pub struct TunedNet {
    trunk: GraphParams,
    head: Head,
}

/// How the backbone trains besides the shared [`FitConfig`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct TuneConfig {
    /// The backbone's learning rate is the head's times this.
    pub backbone_lr_scale: f64,
    /// Examples per forward/backward pass; gradients of a batch's micro-batches are
    /// summed before one optimizer step (0: the whole batch at once). Bounds memory.
    pub micro_batch: usize,
    /// Examples per evaluation pass.
    pub eval_batch: usize,
}

impl Default for TuneConfig {
    fn default() -> Self {
        TuneConfig {
            backbone_lr_scale: 0.1,
            micro_batch: 0,
            eval_batch: 32,
        }
    }
}

/// Backbone layers and head, trained together.
pub struct FineTune<'a> {
    program: Program,
    net: TunedNet,
    feature_tensor: String,
    trunk_optimizer: ModuleOptimizer,
    head_optimizer: ModuleOptimizer,
    loss_fn: CrossEntropyLoss,
    tune: TuneConfig,
    train: TrunkInputs<'a>,
    train_labels: &'a [usize],
    val: TrunkInputs<'a>,
    device: Device,
    best: Option<TunedNet>,
}

impl<'a> FineTune<'a> {
    /// Set up training of `program` (whose parameters are `trunk`, returning
    /// `feature_tensor`) with a new head of `classes` outputs.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        program: Program,
        trunk: GraphParams,
        feature_tensor: &str,
        classes: usize,
        config: &FitConfig,
        tune: TuneConfig,
        train: TrunkInputs<'a>,
        train_labels: &'a [usize],
        val: TrunkInputs<'a>,
        device: &Device,
    ) -> Result<FineTune<'a>, FitError> {
        if val.is_empty() || train.len() != train_labels.len() {
            return Err(FitError::Input(
                "fine-tuning needs validation examples and one label per training example".into(),
            ));
        }
        // The feature length, from one validation example.
        let probe = program
            .forward(&trunk.clone().no_grad(), val.batch(0, &[0], device)?, false)
            .map_err(|e| FitError::Step(e.to_string()))?;
        let dim = match probe.outputs.get(feature_tensor) {
            Some(v) => v.dims().iter().skip(1).product(),
            None => return Err(FitError::Step(format!("no output '{feature_tensor}'"))),
        };
        device.seed(config.seed);
        Ok(FineTune {
            program,
            net: TunedNet {
                trunk,
                head: Head::new(config.head, dim, classes, config.dropout, device),
            },
            feature_tensor: feature_tensor.to_string(),
            trunk_optimizer: optimizer(config),
            head_optimizer: optimizer(config),
            loss_fn: loss_function(config, train_labels, classes, device),
            tune,
            train,
            train_labels,
            val,
            device: device.clone(),
            best: None,
        })
    }

    /// Start from this head (a converged linear probe: LP-FT) instead of a random one.
    pub fn set_head(&mut self, layers: &[scion_onnx::patch::Dense]) {
        self.net.head = Head::from_dense(layers, self.net.head.dropout_prob(), &self.device);
    }

    /// The feature tensor of every training (eval view) or validation example under the
    /// current weights, row-major, in inference mode.
    pub fn features(&self, validation: bool) -> Result<Vec<f32>, FitError> {
        let net = self.net.clone().no_grad();
        let inputs = if validation { &self.val } else { &self.train };
        let indices: Vec<usize> = (0..inputs.len()).collect();
        let mut out = Vec::new();
        for chunk in indices.chunks(self.tune.eval_batch.max(1)) {
            let x = inputs.batch(0, chunk, &self.device)?;
            let forward = self
                .program
                .forward(&net.trunk, x, false)
                .map_err(|e| FitError::Step(e.to_string()))?;
            let value = forward
                .outputs
                .get(&self.feature_tensor)
                .ok_or_else(|| FitError::Step(format!("no output '{}'", self.feature_tensor)))?;
            out.extend(
                value
                    .clone()
                    .flatten()
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .expect("features are f32"),
            );
        }
        Ok(out)
    }

    /// Logits of one batch, and the running statistics it produced.
    fn logits(
        &self,
        net: &TunedNet,
        x: Value,
        training: bool,
    ) -> Result<(Tensor<2>, Vec<(usize, Tensor<1>)>), FitError> {
        let forward = self
            .program
            .forward(&net.trunk, x, training)
            .map_err(|e| FitError::Step(e.to_string()))?;
        let features = forward
            .outputs
            .get(&self.feature_tensor)
            .cloned()
            .ok_or_else(|| FitError::Step(format!("no output '{}'", self.feature_tensor)))?;
        let features = match features {
            Value::R2(t) => t,
            Value::R5(t) => t.flatten(1, 4),
            Value::R4(t) => t.flatten(1, 3),
            Value::R3(t) => t.flatten(1, 2),
            Value::R1(_) => {
                return Err(FitError::Step(format!(
                    "'{}' has no batch axis",
                    self.feature_tensor
                )));
            }
        };
        Ok((net.head.forward(features), forward.running_stats))
    }
}

impl Learner for FineTune<'_> {
    fn train_labels(&self) -> &[usize] {
        self.train_labels
    }

    fn train_batch(
        &mut self,
        epoch: usize,
        batch: &[usize],
        lr: f64,
    ) -> Result<(f64, usize), FitError> {
        let micro = match self.tune.micro_batch {
            0 => batch.len(),
            m => m,
        };
        let mut trunk_grads = GradientsAccumulator::<GraphParams>::new();
        let mut head_grads = GradientsAccumulator::<Head>::new();
        let (mut loss_sum, mut correct) = (0.0, 0);
        for part in batch.chunks(micro) {
            let x = self.train.batch(epoch, part, &self.device)?;
            let (logits, stats) = self.logits(&self.net, x, true)?;
            let labels: Vec<usize> = part.iter().map(|&i| self.train_labels[i]).collect();
            let (loss, l, c) = batch_loss(&self.loss_fn, logits, &labels);
            loss_sum += l;
            correct += c;
            // Each micro-batch's mean loss, weighted by its share: the sum is the batch mean.
            let loss = loss.mul_scalar(part.len() as f64 / batch.len() as f64);
            let mut grads = loss.backward();
            trunk_grads.accumulate(
                &self.net.trunk,
                GradientsParams::from_module(&mut grads, &self.net.trunk),
            );
            head_grads.accumulate(
                &self.net.head,
                GradientsParams::from_module(&mut grads, &self.net.head),
            );
            for (index, value) in stats {
                self.net.trunk.set(index, value);
            }
        }
        let TunedNet { trunk, head } = self.net.clone();
        let trunk =
            self.trunk_optimizer
                .step(lr * self.tune.backbone_lr_scale, trunk, trunk_grads.grads());
        let head = self.head_optimizer.step(lr, head, head_grads.grads());
        self.net = TunedNet { trunk, head };
        Ok((loss_sum, correct))
    }

    fn validate(&mut self) -> Result<Vec<Vec<f32>>, FitError> {
        let net = self.net.clone().no_grad();
        let n = self.val.len();
        let indices: Vec<usize> = (0..n).collect();
        let mut rows = Vec::with_capacity(n);
        for chunk in indices.chunks(self.tune.eval_batch.max(1)) {
            let x = self.val.batch(0, chunk, &self.device)?;
            let (logits, _) = self.logits(&net, x, false)?;
            let values = logits
                .detach()
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("logits are f32");
            let classes = values.len() / chunk.len();
            rows.extend(values.chunks_exact(classes).map(<[f32]>::to_vec));
        }
        Ok(rows)
    }

    fn snapshot(&self) -> Trained {
        Trained {
            layers: self.net.head.to_dense(),
            backbone: self.net.trunk.trained(&self.program),
        }
    }

    fn mark_best(&mut self) {
        self.best = Some(self.net.clone());
    }

    fn restore_best(&mut self) {
        if let Some(best) = self.best.clone() {
            self.net = best;
        }
    }
}
