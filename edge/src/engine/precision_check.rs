//! Reduced precision is checked, not trusted: an FP16 or INT8 engine must give the FP32
//! top-1 on a share of check images (the card's reference images, a validation split), or
//! it is refused with the figure and FP32 serves instead.

use std::fmt;

use super::{EngineError, EngineKind, Precision, Session, Tensor};

/// The default share of check images that must agree: 99%.
pub const DEFAULT_MIN_AGREEMENT: f64 = 0.99;

/// Images to check a reduced-precision engine on, preprocessed, one per tensor.
#[derive(Debug, Clone, Default)]
pub struct CheckImages {
    /// Batch-1 inputs, as the model takes them.
    pub inputs: Vec<Tensor>,
    /// The output whose arg-max is the top-1 (logits or probabilities).
    pub output: String,
    /// Where the images came from, for messages.
    pub source: String,
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
        )
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
    let mut agreeing = 0;
    for input in &images.inputs {
        if top1(candidate, input, &images.output)? == top1(reference, input, &images.output)? {
            agreeing += 1;
        }
    }
    Ok(Agreement {
        engine: candidate.kind(),
        precision: candidate.precision(),
        reference: reference.kind(),
        agreeing,
        total: images.inputs.len(),
        min_agreement,
        source: images.source.clone(),
    })
}
