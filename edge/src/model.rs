//! A model ready for the engines: the ONNX bytes, the parsed graph and its card (embedded,
//! or built from flags for a user's own ONNX without one).

use std::path::{Path, PathBuf};

use scion_onnx::card::{
    CARD_VERSION, ColorOrder, Layout, ModelCard, Preprocessing, Resize, ResizeFilter, TensorNames,
};
use scion_onnx::{ModelProto, io};

use crate::engine::ModelSpec;

/// Why a model cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file is unreadable or not a valid ONNX model.
    #[error(transparent)]
    Format(#[from] scion_onnx::Error),
    /// The model has no card and no contract was given by flags.
    #[error(
        "{0}: the model has no scion card; run `scion-edge import onnx {0} --out MODEL.onnx` \
         to attach one (or, where the command takes them, give its contract with --labels, \
         --input-size, --resize-shorter, --mean, --std)"
    )]
    NoCard(PathBuf),
    /// The card (or flags) do not match the graph.
    #[error("{path}: {message}")]
    Contract {
        /// The model file.
        path: PathBuf,
        /// What does not match.
        message: String,
    },
}

/// A contract given on the command line, for models without a card.
#[derive(Debug, Clone, Default)]
pub struct ContractOverrides {
    /// One label per line.
    pub labels_file: Option<PathBuf>,
    /// Crop size (square).
    pub input_size: Option<u32>,
    /// Shorter side before cropping.
    pub resize_shorter: Option<u32>,
    /// Mean per channel, in 0..=255 units times `scale`.
    pub mean: Option<[f32; 3]>,
    /// Std per channel.
    pub std: Option<[f32; 3]>,
    /// Scale applied to 0..=255.
    pub scale: Option<f32>,
    /// Feed BGR instead of RGB.
    pub bgr: bool,
}

impl ContractOverrides {
    fn is_empty(&self) -> bool {
        self.labels_file.is_none()
            && self.input_size.is_none()
            && self.resize_shorter.is_none()
            && self.mean.is_none()
            && self.std.is_none()
            && self.scale.is_none()
            && !self.bgr
    }
}

/// A loaded model.
#[derive(Debug, Clone)]
pub struct Model {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The file's bytes, handed to engines.
    pub bytes: Vec<u8>,
    /// The parsed graph.
    pub proto: ModelProto,
    /// Its card.
    pub card: ModelCard,
    /// Whether the card came from the file (true) or from flags.
    pub card_embedded: bool,
    /// Output names in graph order.
    pub outputs: Vec<String>,
}

impl Model {
    /// Load and check a model; a card-less model needs `overrides`.
    pub fn load(path: &Path, overrides: &ContractOverrides) -> Result<Model, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| scion_onnx::Error::Io {
            path: path.into(),
            source: e,
        })?;
        Self::from_bytes(path, bytes, overrides)
    }

    /// Build from bytes already read.
    pub fn from_bytes(
        path: &Path,
        bytes: Vec<u8>,
        overrides: &ContractOverrides,
    ) -> Result<Model, ModelError> {
        let proto = io::decode(&bytes).map_err(|e| match e {
            scion_onnx::Error::Malformed { reason, .. } => scion_onnx::Error::Malformed {
                path: path.into(),
                reason,
            },
            other => other,
        })?;
        let contract_err = |e: scion_onnx::Error| ModelError::Contract {
            path: path.into(),
            message: e.to_string(),
        };
        let embedded = ModelCard::from_model(&proto).map_err(contract_err)?;
        let card_embedded = embedded.is_some();
        let card = match embedded {
            Some(card) if overrides.is_empty() => card,
            Some(card) => apply_overrides(card, overrides)?,
            None if overrides.is_empty() => return Err(ModelError::NoCard(path.into())),
            None => card_from_flags(&proto, overrides, path)?,
        };
        card.check_against(&proto).map_err(contract_err)?;
        let outputs = proto
            .graph
            .as_ref()
            .map(|g| g.output.iter().map(|o| o.name.clone()).collect())
            .unwrap_or_default();
        Ok(Model {
            path: path.into(),
            bytes,
            proto,
            card,
            card_embedded,
            outputs,
        })
    }

    /// What the engines need.
    pub fn spec(&self) -> ModelSpec<'_> {
        ModelSpec {
            bytes: &self.bytes,
            input: &self.card.tensors.input,
            outputs: &self.outputs,
            input_shape: self.card.preprocessing.input_shape(1),
        }
    }
}

/// One label per non-empty line; an unreadable or empty file is an error naming it.
pub(crate) fn read_labels(path: &Path) -> Result<Vec<String>, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Contract {
        path: path.into(),
        message: format!("cannot read labels: {e}"),
    })?;
    let labels: Vec<String> = text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if labels.is_empty() {
        return Err(ModelError::Contract {
            path: path.into(),
            message: "the labels file is empty".into(),
        });
    }
    Ok(labels)
}

impl ContractOverrides {
    /// Apply the preprocessing fields given (all but the labels) to a contract.
    pub fn apply_to(&self, p: &mut Preprocessing) {
        if let Some(size) = self.input_size {
            p.crop = Some([size, size]);
        }
        if let Some(size) = self.resize_shorter {
            p.resize = Resize::ShorterSide { size };
        }
        if let Some(m) = self.mean {
            p.mean = m;
        }
        if let Some(s) = self.std {
            p.std = s;
        }
        if let Some(s) = self.scale {
            p.scale = s;
        }
        if self.bgr {
            p.color = ColorOrder::Bgr;
        }
    }
}

fn apply_overrides(mut card: ModelCard, o: &ContractOverrides) -> Result<ModelCard, ModelError> {
    o.apply_to(&mut card.preprocessing);
    if let Some(f) = &o.labels_file {
        card.labels = read_labels(f)?;
    }
    Ok(card)
}

/// A card for a model that has none: input and first output from the graph, the rest from
/// flags with ImageNet/torchvision defaults.
fn card_from_flags(
    proto: &ModelProto,
    o: &ContractOverrides,
    path: &Path,
) -> Result<ModelCard, ModelError> {
    let graph = proto.graph.as_ref().ok_or_else(|| ModelError::Contract {
        path: path.into(),
        message: "no graph".into(),
    })?;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let input = graph
        .input
        .iter()
        .find(|i| !initializers.contains(i.name.as_str()))
        .ok_or_else(|| ModelError::Contract {
            path: path.into(),
            message: "the graph has no input".into(),
        })?;
    let size = o
        .input_size
        .or_else(|| {
            scion_onnx::graph::value_shape(input)
                .and_then(|s| s.get(2).copied().flatten())
                .map(|v| v as u32)
        })
        .unwrap_or(224);
    let labels = match &o.labels_file {
        Some(f) => read_labels(f)?,
        None => {
            return Err(ModelError::Contract {
                path: path.into(),
                message: "a model without a card needs --labels FILE".into(),
            });
        }
    };
    let card = ModelCard {
        version: CARD_VERSION,
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        labels,
        preprocessing: Preprocessing {
            color: if o.bgr {
                ColorOrder::Bgr
            } else {
                ColorOrder::Rgb
            },
            resize: Resize::ShorterSide {
                size: o
                    .resize_shorter
                    .unwrap_or((size as f32 / 0.875).round() as u32),
            },
            filter: ResizeFilter::Bilinear,
            crop: Some([size, size]),
            scale: o.scale.unwrap_or(1.0 / 255.0),
            mean: o.mean.unwrap_or([0.485, 0.456, 0.406]),
            std: o.std.unwrap_or([0.229, 0.224, 0.225]),
            layout: Layout::Nchw,
        },
        tensors: TensorNames {
            input: input.name.clone(),
            features: None,
            logits: graph.output.first().map(|o| o.name.clone()),
            probs: None,
        },
        provenance: Default::default(),
        calibration: None,
        unknown: None,
    };
    card.validate().map_err(|e| ModelError::Contract {
        path: path.into(),
        message: e.to_string(),
    })?;
    Ok(card)
}
