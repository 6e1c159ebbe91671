//! A prepared model plus its card: batches of preprocessed images in, probabilities out.
//! Shared by the batch classifier, the parity checks and (later) the service.

use scion_onnx::ModelCard;
use scion_onnx::card::UnknownRule;

use crate::engine::precision_check::Agreement;
use crate::engine::{EngineError, EngineKind, Precision, Selected, Session, Tensor};
use crate::postprocess::softmax;

/// Runs a model and turns its outputs into per-image probabilities.
pub struct Classifier {
    session: Box<dyn Session>,
    card: ModelCard,
    /// The card's rejection rule, unless switched off.
    unknown: Option<UnknownRule>,
    /// How a reduced-precision engine compared with FP32, when it was checked.
    agreement: Option<Agreement>,
}

/// The label of an image outside every class.
pub const UNKNOWN: &str = "unknown";

/// One image's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Class probabilities.
    pub probs: Vec<f32>,
    /// Whether the image is outside every class (`None`: the model has no rule, or it
    /// is switched off).
    pub unknown: Option<bool>,
    /// How far outside the rule the image is (`> 1`: rejected), when there is a rule.
    pub unknown_score: Option<f32>,
}

impl Classifier {
    /// Wrap a session with the card of the model it runs.
    pub fn new(session: Box<dyn Session>, card: ModelCard) -> Self {
        let unknown = card.unknown.clone();
        Classifier {
            session,
            card,
            unknown,
            agreement: None,
        }
    }

    /// Wrap what a policy selected, keeping its precision check.
    pub fn from_selected(selected: Selected, card: ModelCard) -> Self {
        let mut classifier = Classifier::new(selected.session, card);
        classifier.agreement = selected.agreement;
        classifier
    }

    /// The precision the engine was built for.
    pub fn precision(&self) -> Precision {
        self.session.precision()
    }

    /// The options handed to the execution provider, `key=value`.
    pub fn provider_options(&self) -> Option<String> {
        self.session.provider_options()
    }

    /// The reduced-precision check, when one ran.
    pub fn agreement(&self) -> Option<&Agreement> {
        self.agreement.as_ref()
    }

    /// Apply the card's "unknown" rule (the default when the card has one) or not.
    pub fn with_unknown(mut self, enabled: bool) -> Self {
        self.set_unknown(enabled);
        self
    }

    /// Apply the card's "unknown" rule or not.
    pub fn set_unknown(&mut self, enabled: bool) {
        self.unknown = if enabled {
            self.card.unknown.clone()
        } else {
            None
        };
    }

    /// The labels an answer can carry: the card's, then `unknown` when the rule is on.
    pub fn answer_labels(&self) -> Vec<String> {
        let mut labels = self.card.labels.clone();
        if self.unknown.is_some() {
            labels.push(UNKNOWN.into());
        }
        labels
    }

    /// Whether answers can be "unknown".
    pub fn rejects_unknown(&self) -> bool {
        self.unknown.is_some()
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
        Ok(self
            .predict(batch, n)?
            .into_iter()
            .map(|p| p.probs)
            .collect())
    }

    /// Probabilities and the "unknown" verdict for each of the `n` images in `batch`.
    pub fn predict(&mut self, batch: Vec<f32>, n: usize) -> Result<Vec<Prediction>, EngineError> {
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
        let probs = if let Some(name) = &self.card.tensors.probs {
            let t = outputs.get(name).ok_or_else(|| missing(name))?;
            rows(t)
        } else {
            let name = self
                .card
                .tensors
                .logits
                .as_deref()
                .ok_or_else(|| missing("logits"))?;
            let t = outputs.get(name).ok_or_else(|| missing(name))?;
            rows(t).iter().map(|r| softmax(r)).collect()
        };
        let Some(rule) = &self.unknown else {
            return Ok(probs
                .into_iter()
                .map(|probs| Prediction {
                    probs,
                    unknown: None,
                    unknown_score: None,
                })
                .collect());
        };
        let distances = outputs
            .get(&rule.distance_tensor)
            .ok_or_else(|| missing(&rule.distance_tensor))?;
        Ok(probs
            .into_iter()
            .zip(rows(distances))
            .map(|(probs, d)| {
                let top = probs.iter().copied().fold(0.0, f32::max);
                Prediction {
                    unknown: Some(rule.rejects(top, &d)),
                    unknown_score: Some(rule.score(top, &d)),
                    probs,
                }
            })
            .collect())
    }
}
