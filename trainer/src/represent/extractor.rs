//! Any tensor of any model with a card, for a list of images: the backbone cut at that
//! tensor (pooled to channel means when it is spatial), run through the edge's engines and
//! the card's preprocessing, and cached like the training features (a second run, or a
//! `scion train` on the same backbone and tensor, reuses them).

use std::path::{Path, PathBuf};

use scion_edge::engine::{EngineKind, EngineOptions, Session};

use crate::backbone::{Backbone, BackboneError};
use crate::features::{CacheKey, Extracted, FeatureCache, FeatureError, extract};
use crate::loader::{Loader, View};

/// What to do with a spatial (`[C, H, W]`) tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Spatial {
    /// One value per channel (the mean over positions): a conv layer's units.
    Mean,
    /// Every value, flattened (large: C x H x W per image).
    Flatten,
}

/// How features are computed.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Folder of cached features.
    pub cache_dir: PathBuf,
    /// The engine (ONNX Runtime on the CPU, or its CUDA provider).
    pub engine: EngineKind,
    /// Engine settings (library path, threads).
    pub engine_options: EngineOptions,
    /// Decode threads.
    pub threads: usize,
    /// Images per engine call.
    pub batch: usize,
}

/// A model cut at one tensor, ready to compute it for images.
pub struct Extractor {
    /// The model and the tensor computed.
    pub backbone: Backbone,
    /// The tensor as the user named it (before pooling).
    pub tensor: String,
    /// One image's shape of that tensor (without the batch dimension), before pooling.
    pub shape: Vec<usize>,
    /// Values per image actually computed (after pooling).
    pub dim: usize,
    session: Box<dyn Session>,
    loader: Loader,
    options: ExtractOptions,
}

impl Extractor {
    /// Load `model` and cut it at `tensor` (default: the card's feature tensor, else the
    /// one found in the graph); `flag` names the option that chose the tensor in errors.
    pub fn open(
        model: &Path,
        tensor: Option<&str>,
        flag: &str,
        spatial: Spatial,
        options: &ExtractOptions,
    ) -> Result<Extractor, BackboneError> {
        let loaded = scion_edge::Model::load(model, &Default::default())?;
        let tensor = tensor
            .map(String::from)
            .or_else(|| loaded.card.tensors.features.clone());
        let mut backbone = Backbone::from_model(loaded, tensor.as_deref(), flag)?;
        let tensor = backbone.feature_tensor.clone();
        let mut session = backbone.feature_session(options.engine, &options.engine_options)?;
        let shape = backbone.feature_shape(session.as_mut())?[1..].to_vec();
        if shape.len() == 3 && spatial == Spatial::Mean {
            backbone.pool_spatial()?;
            session = backbone.feature_session(options.engine, &options.engine_options)?;
        }
        let dim = if backbone.feature_tensor == tensor {
            shape.iter().product()
        } else {
            shape[0]
        };
        if dim == 0 {
            return Err(BackboneError::Features {
                path: model.into(),
                message: format!("{flag} {tensor}: the tensor is empty ({shape:?})"),
            });
        }
        let loader = Loader::new(backbone.model.card.preprocessing.clone(), false);
        Ok(Extractor {
            backbone,
            tensor,
            shape,
            dim,
            session,
            loader,
            options: options.clone(),
        })
    }

    /// Whether the tensor was reduced to channel means.
    pub fn pooled(&self) -> bool {
        self.backbone.feature_tensor != self.tensor
    }

    /// Number of units: channels of a spatial tensor, values of a flat one.
    pub fn units(&self) -> usize {
        if self.shape.len() == 3 {
            self.shape[0]
        } else {
            self.dim
        }
    }

    /// sha256 of the model file: what says two embeddings are comparable.
    pub fn model_sha256(&self) -> &str {
        &self.backbone.sha256
    }

    /// The tensor for every path (`None` for unreadable images, which are counted and
    /// logged), computing only what the cache lacks. `progress` hears how many are done
    /// and stops the work by returning false.
    pub fn features(
        &mut self,
        paths: &[PathBuf],
        progress: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Extracted, FeatureError> {
        let key = CacheKey {
            backbone_sha256: self.backbone.sha256.clone(),
            preprocessing: self.backbone.model.card.preprocessing.clone(),
            feature_tensor: self.backbone.feature_tensor.clone(),
            view: View::Eval.key(),
        };
        let mut cache = FeatureCache::open(&self.options.cache_dir, &key, self.dim)?;
        extract(
            paths,
            &self.loader,
            &View::Eval,
            &self.backbone.feature_tensor,
            self.session.as_mut(),
            &mut cache,
            self.options.batch.max(1),
            self.options.threads.max(1),
            progress,
        )
    }
}
