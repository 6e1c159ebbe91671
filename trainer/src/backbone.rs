//! The frozen pretrained network: its card (preprocessing), its hash, and the feature
//! tensor the new head reads, found automatically or named with `--feature-tensor`.

use std::path::{Path, PathBuf};

use scion_edge::engine::{self, EngineKind, EngineOptions, ModelSpec, Policy, Session, Tensor};
use scion_edge::{ContractOverrides, Model};
use scion_onnx::patch::Patch;
use sha2::{Digest, Sha256};

/// The backbone cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    /// Loading or checking the model failed.
    #[error(transparent)]
    Model(#[from] scion_edge::model::ModelError),
    /// The feature tensor is missing or ambiguous.
    #[error("{path}: {message}")]
    Features {
        /// The backbone file.
        path: PathBuf,
        /// What is wrong, with the candidates.
        message: String,
    },
    /// The engine could not run it.
    #[error(transparent)]
    Engine(#[from] scion_edge::engine::EngineError),
}

/// A loaded backbone.
pub struct Backbone {
    /// The model as loaded (bytes, graph, card).
    pub model: Model,
    /// sha256 of the file, which keys the feature cache.
    pub sha256: String,
    /// The tensor the head reads.
    pub feature_tensor: String,
    /// The backbone cut at the feature tensor: what feature extraction runs.
    pub cut_bytes: Vec<u8>,
}

impl Backbone {
    /// Load `path` and find its feature tensor (or check the one given).
    pub fn load(path: &Path, feature_tensor: Option<&str>) -> Result<Backbone, BackboneError> {
        let model = Model::load(path, &ContractOverrides::default())?;
        Self::from_model(model, feature_tensor, "--feature-tensor")
    }

    /// A model already loaded, cut at `feature_tensor` (or the one found in the graph);
    /// errors name `flag` as the option that chose the tensor.
    pub fn from_model(
        model: Model,
        feature_tensor: Option<&str>,
        flag: &str,
    ) -> Result<Backbone, BackboneError> {
        let path = model.path.clone();
        let sha256 = hex::encode(Sha256::digest(&model.bytes));
        let graph = model.proto.graph.clone().unwrap_or_default();
        let features_err = |message: String| BackboneError::Features {
            path: path.clone(),
            message,
        };
        // The card's feature output (written by import), else the input of the last
        // classifier layer found in the graph, pooled to channel means when spatial.
        let card_features = model
            .card
            .tensors
            .features
            .clone()
            .filter(|t| graph.output.iter().any(|o| &o.name == t));
        let (tensor, pooled) = match (feature_tensor, card_features) {
            (Some(name), _) => (name.to_string(), false),
            (None, Some(name)) => (name, false),
            (None, None) => {
                let found = scion_onnx::features::find(&model.proto)
                    .map_err(|e| features_err(format!("{e}; pass one with {flag} NAME")))?;
                (found.tensor, found.pooled)
            }
        };
        let mut cut = model.proto.clone();
        Patch::CutAt {
            outputs: vec![tensor.clone()],
        }
        .apply(&mut cut)
        .map_err(|e| features_err(format!("{flag} {tensor}: {e}")))?;
        let mut backbone = Backbone {
            sha256,
            feature_tensor: tensor,
            cut_bytes: scion_onnx::io::encode(&cut),
            model,
        };
        if pooled {
            backbone.pool_spatial()?;
        }
        Ok(backbone)
    }

    /// Compute the channel means of the (spatial) feature tensor instead of the tensor
    /// itself; the feature tensor becomes `<tensor>:mean`, which keys its own cache.
    pub fn pool_spatial(&mut self) -> Result<(), BackboneError> {
        let mut cut =
            scion_onnx::io::decode(&self.cut_bytes).map_err(|e| BackboneError::Features {
                path: self.model.path.clone(),
                message: e.to_string(),
            })?;
        let output = format!("{}:mean", self.feature_tensor);
        Patch::PoolSpatial {
            tensor: self.feature_tensor.clone(),
            output: output.clone(),
            keep_outputs: false,
        }
        .apply(&mut cut)
        .map_err(|e| BackboneError::Features {
            path: self.model.path.clone(),
            message: e.to_string(),
        })?;
        self.cut_bytes = scion_onnx::io::encode(&cut);
        self.feature_tensor = output;
        Ok(())
    }

    /// A session computing the feature tensor on `kind`. A GPU engine that cannot start
    /// (an ONNX Runtime without its provider, say: the CUDA head trainer does not need one)
    /// falls back to ONNX Runtime on the CPU with a warning; `Session::kind` says which ran.
    pub fn feature_session(
        &self,
        kind: EngineKind,
        options: &EngineOptions,
    ) -> Result<Box<dyn Session>, BackboneError> {
        let outputs = [self.feature_tensor.clone()];
        let spec = ModelSpec {
            bytes: &self.cut_bytes,
            input: &self.model.card.tensors.input,
            outputs: &outputs,
            input_shape: self.model.card.preprocessing.input_shape(1),
        };
        if kind == EngineKind::OrtCpu || kind == EngineKind::Tract {
            return Ok(engine::prepare(kind, &spec, options)?);
        }
        let policy = Policy {
            order: vec![kind, EngineKind::OrtCpu],
            strict: false,
        };
        Ok(policy.select(&spec, options)?.session)
    }

    /// Shape of the feature tensor for one image, measured by running a blank image.
    pub fn feature_shape(&self, session: &mut dyn Session) -> Result<Vec<usize>, BackboneError> {
        let shape = self.model.card.preprocessing.input_shape(1);
        let input = Tensor {
            data: vec![0.0; shape.iter().product()],
            shape,
        };
        let outputs = session.run(&input)?;
        let features =
            outputs
                .get(&self.feature_tensor)
                .ok_or_else(|| BackboneError::Features {
                    path: self.model.path.clone(),
                    message: format!("no output '{}'", self.feature_tensor),
                })?;
        Ok(features.shape.clone())
    }

    /// Length of the feature vector; a tensor that is not `[batch, n]` is refused with a
    /// hint.
    pub fn feature_dim(&self, session: &mut dyn Session) -> Result<usize, BackboneError> {
        let shape = self.feature_shape(session)?;
        match shape[..] {
            [1, n] if n > 0 => Ok(n),
            _ => Err(BackboneError::Features {
                path: self.model.path.clone(),
                message: format!(
                    "feature tensor '{}' has shape {:?}, expected [batch, n]: pick a pooled or \
                     flattened tensor with --feature-tensor",
                    self.feature_tensor, shape
                ),
            }),
        }
    }
}
