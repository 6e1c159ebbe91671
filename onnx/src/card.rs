//! The model card: everything an engine or tool must know to use a model correctly,
//! stored as JSON in the ONNX `metadata_props` under [`CARD_KEY`].
//!
//! Nobody hard-codes mean/std, input size or label order: the trainer or importer writes
//! the card, every engine and tool reads it.

use serde::{Deserialize, Serialize};

use crate::pb::ModelProto;
use crate::{Error, Result, builder};

/// The `metadata_props` key holding the card's JSON.
pub const CARD_KEY: &str = "scion.card";
/// The card format this build writes and understands.
pub const CARD_VERSION: u32 = 1;

/// A self-description of a classification model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Card format version; a reader refuses versions newer than it knows.
    pub version: u32,
    /// Human name of the model, e.g. `efficientnet-lite0`.
    pub name: String,
    /// Class labels in output order.
    pub labels: Vec<String>,
    /// The exact preprocessing the model was trained with.
    pub preprocessing: Preprocessing,
    /// Names of the tensors that matter.
    pub tensors: TensorNames,
    /// Where the model came from.
    #[serde(default)]
    pub provenance: Provenance,
    /// The temperature the probabilities were calibrated with (already applied in the
    /// graph: engines use the probs output as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// When to answer "none of my classes". A reader that does not know the field
    /// always names a class, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<UnknownRule>,
}

/// Temperature scaling fitted on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// The logits were divided by this before the softmax (folded into the last layer).
    pub temperature: f32,
    /// Validation images it was fitted on.
    pub images: usize,
    /// Expected calibration error (15 bins) on them before and after.
    pub ece_before: f32,
    /// After.
    pub ece_after: f32,
}

/// The rejection rule: an image is "unknown" when its top probability is below
/// `min_prob` or its features are farther than `max_distance` from every class
/// prototype (the graph's `distance_tensor` output, one distance per class).
/// Both thresholds are fitted on validation images to keep `recall` of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnknownRule {
    /// Smallest top-1 probability accepted.
    pub min_prob: f32,
    /// Graph output holding `[batch, classes]` distances to the class prototypes.
    pub distance_tensor: String,
    /// Largest distance to the nearest prototype accepted.
    pub max_distance: f32,
    /// Share of validation images the thresholds were set to keep.
    pub recall: f32,
    /// Share of validation images the rule actually rejects.
    pub val_rejected: f32,
    /// Validation images it was fitted on.
    pub images: usize,
}

impl UnknownRule {
    /// Whether an image with top probability `top_prob` and distances `distances` to the
    /// prototypes is outside every class.
    pub fn rejects(&self, top_prob: f32, distances: &[f32]) -> bool {
        let nearest = distances.iter().copied().fold(f32::INFINITY, f32::min);
        top_prob < self.min_prob || nearest > self.max_distance
    }

    /// A score that grows with how far outside the rule an image is (`> 1`: rejected), for
    /// ranking images by how unknown they are (AUROC).
    pub fn score(&self, top_prob: f32, distances: &[f32]) -> f32 {
        let nearest = distances.iter().copied().fold(f32::INFINITY, f32::min);
        let by_distance = nearest / self.max_distance.max(f32::MIN_POSITIVE);
        let by_prob = self.min_prob / top_prob.max(f32::MIN_POSITIVE);
        by_distance.max(by_prob)
    }
}

/// Channel order of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorOrder {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red (Caffe/OpenCV-trained models).
    Bgr,
}

/// Resampling filter for resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeFilter {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear (triangle) with antialiasing when downscaling, as Pillow does.
    Bilinear,
    /// Bicubic (Catmull-Rom) with antialiasing.
    Bicubic,
    /// Lanczos3 with antialiasing.
    Lanczos3,
}

/// How the decoded image is resized before cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum Resize {
    /// Scale so that the shorter side equals `size`, keeping the aspect ratio.
    ShorterSide {
        /// Target length of the shorter side, in pixels.
        size: u32,
    },
    /// Scale to exactly `width` x `height`, ignoring the aspect ratio.
    Exact {
        /// Target width.
        width: u32,
        /// Target height.
        height: u32,
    },
}

/// Memory layout of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Batch, channel, height, width.
    Nchw,
    /// Batch, height, width, channel.
    Nhwc,
}

/// The preprocessing contract. Pixel values `x` in 0..=255 become `(x * scale - mean) / std`
/// per channel, in the stated colour order.
///
/// Unknown fields are refused: a field this build does not understand could change the
/// numbers, and a silent mismatch is the failure this card exists to prevent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    /// Channel order.
    pub color: ColorOrder,
    /// Resize step.
    pub resize: Resize,
    /// Resampling filter of the resize step.
    pub filter: ResizeFilter,
    /// Centre crop `[width, height]` after resizing; `None` means no crop.
    pub crop: Option<[u32; 2]>,
    /// Multiplier applied to 0..=255 values before mean/std.
    pub scale: f32,
    /// Per-channel mean, subtracted after scaling.
    pub mean: [f32; 3],
    /// Per-channel standard deviation, divided by last.
    pub std: [f32; 3],
    /// Tensor layout.
    pub layout: Layout,
}

impl Preprocessing {
    /// Width and height of the tensor this contract produces.
    pub fn output_size(&self) -> (u32, u32) {
        match (self.crop, self.resize) {
            (Some([w, h]), _) => (w, h),
            (None, Resize::Exact { width, height }) => (width, height),
            (None, Resize::ShorterSide { size }) => (size, size),
        }
    }

    /// Shape of the input tensor for a batch of `n` images.
    pub fn input_shape(&self, n: usize) -> Vec<usize> {
        let (w, h) = self.output_size();
        match self.layout {
            Layout::Nchw => vec![n, 3, h as usize, w as usize],
            Layout::Nhwc => vec![n, h as usize, w as usize, 3],
        }
    }

    /// Check the contract for values that cannot work.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Card(format!("preprocessing: {m}")));
        if self.std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return bad("std must be finite and non-zero");
        }
        if !self.scale.is_finite() || self.scale == 0.0 {
            return bad("scale must be finite and non-zero");
        }
        if let Some([w, h]) = self.crop {
            if w == 0 || h == 0 {
                return bad("crop must be positive");
            }
            if let Resize::ShorterSide { size } = self.resize
                && (w > size || h > size)
            {
                return bad("crop is larger than the resized shorter side");
            }
        }
        match self.resize {
            Resize::ShorterSide { size: 0 } | Resize::Exact { width: 0, .. } => bad("resize to 0"),
            Resize::Exact { height: 0, .. } => bad("resize to 0"),
            _ => Ok(()),
        }
    }
}

/// Tensor names of the model's interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorNames {
    /// The image input.
    pub input: String,
    /// Penultimate features, if exposed.
    pub features: Option<String>,
    /// Raw class scores, if exposed.
    pub logits: Option<String>,
    /// Class probabilities, if exposed (otherwise consumers apply softmax to logits).
    pub probs: Option<String>,
}

/// An image and the output expected for it, so a device can check it runs the model
/// exactly as it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceOutput {
    /// Content sha256 of the image file.
    pub image_sha256: String,
    /// File name, for people.
    pub name: String,
    /// Expected top-1 class index.
    pub top1: usize,
    /// Expected top-k probabilities, `(class, prob)`.
    pub top: Vec<(usize, f32)>,
}

/// Provenance: where weights and data came from, how it was trained, how well it did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// What produced this model, e.g. `scion-edge import 0.1.0`.
    #[serde(default)]
    pub created_by: String,
    /// Where the weights came from (a package name, a path).
    #[serde(default)]
    pub source: String,
    /// sha256 of the source weights file.
    #[serde(default)]
    pub source_sha256: Option<String>,
    /// sha256 of the backbone ONNX this model was built on.
    #[serde(default)]
    pub backbone_sha256: Option<String>,
    /// Fingerprint of the training data set.
    #[serde(default)]
    pub dataset_fingerprint: Option<String>,
    /// Training configuration, as written by the trainer.
    #[serde(default)]
    pub training: Option<serde_json::Value>,
    /// Validation metrics.
    #[serde(default)]
    pub metrics: Option<serde_json::Value>,
    /// Reference images and their expected outputs.
    #[serde(default)]
    pub references: Vec<ReferenceOutput>,
    /// Licence of the weights.
    #[serde(default)]
    pub license: Option<String>,
}

impl ModelCard {
    /// Read the card from a model: `Ok(None)` if it has none, an error if it has one that
    /// cannot be read.
    pub fn from_model(model: &ModelProto) -> Result<Option<ModelCard>> {
        let Some(entry) = model.metadata_props.iter().find(|p| p.key == CARD_KEY) else {
            return Ok(None);
        };
        Self::from_json(&entry.value).map(Some)
    }

    /// Parse and validate a card from JSON.
    pub fn from_json(json: &str) -> Result<ModelCard> {
        let version = serde_json::from_str::<serde_json::Value>(json)
            .map_err(|e| Error::Card(format!("not JSON: {e}")))?
            .get("version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| Error::Card("no version".into()))?;
        if version > CARD_VERSION as u64 {
            return Err(Error::Card(format!(
                "version {version} is newer than this build understands ({CARD_VERSION}); upgrade scion"
            )));
        }
        let card: ModelCard = serde_json::from_str(json).map_err(|e| Error::Card(e.to_string()))?;
        card.validate()?;
        Ok(card)
    }

    /// Check internal consistency.
    pub fn validate(&self) -> Result<()> {
        self.preprocessing.validate()?;
        if self.tensors.input.is_empty() {
            return Err(Error::Card("no input tensor name".into()));
        }
        if self.tensors.logits.is_none() && self.tensors.probs.is_none() {
            return Err(Error::Card(
                "neither a logits nor a probs tensor is named".into(),
            ));
        }
        if let Some(c) = &self.calibration
            && !(c.temperature > 0.0 && c.temperature.is_finite())
        {
            return Err(Error::Card(format!(
                "calibration: temperature {} must be positive",
                c.temperature
            )));
        }
        if let Some(u) = &self.unknown {
            let valid = |v: f32| v.is_finite() && v >= 0.0;
            if !valid(u.min_prob) || u.min_prob > 1.0 || !valid(u.max_distance) {
                return Err(Error::Card(format!(
                    "unknown: thresholds min_prob {} and max_distance {} are out of range",
                    u.min_prob, u.max_distance
                )));
            }
            if u.distance_tensor.is_empty() {
                return Err(Error::Card("unknown: no distance tensor named".into()));
            }
        }
        Ok(())
    }

    /// Check the card against the graph it describes: the named tensors exist as graph
    /// inputs/outputs and the label count matches the class dimension when it is known.
    pub fn check_against(&self, model: &ModelProto) -> Result<()> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| Error::Card("the model has no graph".into()))?;
        if !graph.input.iter().any(|i| i.name == self.tensors.input) {
            return Err(Error::Card(format!(
                "input '{}' is not a graph input",
                self.tensors.input
            )));
        }
        let distances = self.unknown.as_ref().map(|u| u.distance_tensor.clone());
        for name in [
            &self.tensors.logits,
            &self.tensors.probs,
            &self.tensors.features,
            &distances,
        ]
        .into_iter()
        .flatten()
        {
            let Some(out) = graph.output.iter().find(|o| &o.name == name) else {
                return Err(Error::Card(format!(
                    "output '{name}' is not a graph output"
                )));
            };
            let is_class_output = Some(name) == self.tensors.logits.as_ref()
                || Some(name) == self.tensors.probs.as_ref()
                || Some(name) == distances.as_ref();
            if is_class_output
                && let Some(Some(classes)) =
                    crate::graph::value_shape(out).and_then(|s| s.last().copied())
                && classes as usize != self.labels.len()
            {
                return Err(Error::Card(format!(
                    "output '{name}' has {classes} classes but the card lists {} labels",
                    self.labels.len()
                )));
            }
        }
        Ok(())
    }

    /// Serialize to JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a card always serializes")
    }

    /// Write this card into a model's `metadata_props`, replacing any previous card.
    pub fn write_to(&self, model: &mut ModelProto) {
        model.metadata_props.retain(|p| p.key != CARD_KEY);
        model
            .metadata_props
            .push(builder::metadata(CARD_KEY, &self.to_json()));
    }
}
