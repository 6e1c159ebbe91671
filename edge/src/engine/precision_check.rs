//! Reduced precision is checked, not trusted: an FP16 or INT8 engine must give the FP32
//! top-1 on a share of check images (the card's reference images, a validation split), or
//! it is refused with the figure and FP32 serves instead.

use std::fmt;

use scion_onnx::card::Preprocessing;

use super::{EngineError, EngineKind, Precision, Session, Tensor};
use crate::preprocess::preprocess;

/// The default share of check images that must agree: 99%.
pub const DEFAULT_MIN_AGREEMENT: f64 = 0.99;

/// A `--min-agreement` value: a share between 0 and 1.
pub fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "'{text}' is not a share between 0 and 1 (e.g. 0.99)"
        )),
    }
}

/// Images to check a reduced-precision engine on. They are kept encoded and go through the
/// one preprocessing function one at a time, so a thousand check images cost their file
/// sizes, not a thousand input tensors (600 MB at 224 x 224: too much for a Nano).
#[derive(Debug, Clone)]
pub struct CheckImages {
    /// The images: a name for messages and the file's bytes.
    pub images: Vec<(String, Vec<u8>)>,
    /// The model card's preprocessing.
    pub preprocessing: Preprocessing,
    /// The output whose arg-max is the top-1 (logits or probabilities).
    pub output: String,
    /// Where the images came from, for messages.
    pub source: String,
}

impl CheckImages {
    /// Whether there is nothing to check on.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The batch-1 input of each image, in order; `None` for an image that does not decode.
    pub fn inputs(&self) -> impl Iterator<Item = Option<Tensor>> + '_ {
        let shape = self.preprocessing.input_shape(1);
        self.images.iter().map(
            move |(name, bytes)| match preprocess(bytes, &self.preprocessing) {
                Ok(data) => Some(Tensor {
                    data,
                    shape: shape.clone(),
                }),
                Err(why) => {
                    tracing::warn!("check image {name}: {why}; left out of the check");
                    None
                }
            },
        )
    }
}

/// How a reduced-precision engine compared with FP32.
#[derive(Debug, Clone, PartialEq)]
pub struct Agreement {
    /// The engine checked.
    pub engine: EngineKind,
    /// Its precision.
    pub precision: Precision,
    /// The engine that gave the FP32 answers.
    pub reference: EngineKind,
    /// Images with the same top-1.
    pub agreeing: usize,
    /// Images checked.
    pub total: usize,
    /// Images left out because they do not decode.
    pub skipped: usize,
    /// The share required.
    pub min_agreement: f64,
    /// Where the images came from.
    pub source: String,
}

impl Agreement {
    /// The share of images with the FP32 top-1.
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.agreeing as f64 / self.total as f64
        }
    }

    /// Whether the engine may serve.
    pub fn accepted(&self) -> bool {
        self.fraction() >= self.min_agreement
    }
}

impl fmt::Display for Agreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} gives the FP32 top-1 ({} answers) on {} of {} check images from {} \
             ({:.1}%; {:.1}% required)",
            self.engine,
            self.precision,
            self.reference,
            self.agreeing,
            self.total,
            self.source,
            100.0 * self.fraction(),
            100.0 * self.min_agreement
        )?;
        if self.skipped > 0 {
            write!(f, "; {} undecodable images left out", self.skipped)?;
        }
        Ok(())
    }
}

fn top1(session: &mut dyn Session, input: &Tensor, output: &str) -> Result<usize, EngineError> {
    let outputs = session.run(input)?;
    let kind = session.kind();
    let tensor = outputs.get(output).ok_or_else(|| EngineError::Run {
        engine: kind,
        message: format!("no output '{output}'"),
    })?;
    tensor
        .data
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .ok_or_else(|| EngineError::Run {
            engine: kind,
            message: format!("output '{output}' is empty"),
        })
}

/// Run every check image on both sessions and count the images with the same top-1.
pub fn agreement(
    candidate: &mut dyn Session,
    reference: &mut dyn Session,
    images: &CheckImages,
    min_agreement: f64,
) -> Result<Agreement, EngineError> {
    let (mut agreeing, mut total, mut skipped) = (0, 0, 0);
    for input in images.inputs() {
        let Some(input) = input else {
            skipped += 1;
            continue;
        };
        total += 1;
        if top1(candidate, &input, &images.output)? == top1(reference, &input, &images.output)? {
            agreeing += 1;
        }
    }
    Ok(Agreement {
        engine: candidate.kind(),
        precision: candidate.precision(),
        reference: reference.kind(),
        agreeing,
        total,
        skipped,
        min_agreement,
        source: images.source.clone(),
    })
}
