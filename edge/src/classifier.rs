//! A prepared model plus its card: batches of preprocessed images in, probabilities out.
//! Shared by the batch classifier, the parity checks and (later) the service.

use scion_onnx::ModelCard;

use crate::engine::{EngineError, EngineKind, Session, Tensor};
use crate::postprocess::softmax;

/// Runs a model and turns its outputs into per-image probabilities.
pub struct Classifier {
    session: Box<dyn Session>,
    card: ModelCard,
}

impl Classifier {
    /// Wrap a session with the card of the model it runs.
    pub fn new(session: Box<dyn Session>, card: ModelCard) -> Self {
        Classifier { session, card }
    }

    /// The engine doing the work.
    pub fn engine(&self) -> EngineKind {
        self.session.kind()
    }

    /// The card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Probabilities for each of the `n` images in `batch` (their tensors back to back):
    /// the model's probs output when the card names one, else softmax of its logits.
    pub fn probabilities(
        &mut self,
        batch: Vec<f32>,
        n: usize,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let input = Tensor {
            shape: self.card.preprocessing.input_shape(n),
            data: batch,
        };
        let outputs = self.session.run(&input)?;
        let kind = self.session.kind();
        let missing = |name: &str| EngineError::Run {
            engine: kind,
            message: format!("the model produced no output '{name}'"),
        };
        let rows = |t: &Tensor| -> Vec<Vec<f32>> {
            let classes = t.data.len() / n.max(1);
            t.data.chunks(classes.max(1)).map(<[f32]>::to_vec).collect()
        };
        if let Some(name) = &self.card.tensors.probs {
            let t = outputs.get(name).ok_or_else(|| missing(name))?;
            return Ok(rows(t));
        }
        let name = self
            .card
            .tensors
            .logits
            .as_deref()
            .ok_or_else(|| missing("logits"))?;
        let t = outputs.get(name).ok_or_else(|| missing(name))?;
        Ok(rows(t).iter().map(|r| softmax(r)).collect())
    }
}
