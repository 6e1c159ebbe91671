//! tract: pure Rust, no shared library, always available; the CPU fallback.
//!
//! tract optimises much better with concrete shapes than with a symbolic batch (measured
//! here: ~8x faster on EfficientNet-Lite0), so a plan is compiled per batch size seen and
//! cached; a batch job sees at most two sizes (the batch and the remainder).

use std::collections::HashMap;

use tract_onnx::prelude::*;

use super::{EngineError, EngineKind, EngineOptions, ModelSpec, Outputs, Session, Tensor};

/// A model parsed by tract, with optimised plans per input shape.
pub struct TractSession {
    model: InferenceModel,
    plans: HashMap<Vec<usize>, Arc<TypedRunnableModel>>,
    outputs: Vec<String>,
}

fn prepare_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Prepare {
        engine: EngineKind::Tract,
        message: format!("{e:#}"),
    }
}

fn run_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Run {
        engine: EngineKind::Tract,
        message: format!("{e:#}"),
    }
}

impl TractSession {
    /// Parse the model, and check that tract can optimise it (with a batch of one), so an
    /// unsupported model fails here, where the policy can fall back, not mid-job.
    pub fn prepare(model: &ModelSpec<'_>, _options: &EngineOptions) -> Result<Self, EngineError> {
        let parsed = tract_onnx::onnx()
            .model_for_read(&mut &model.bytes[..])
            .map_err(prepare_err)?;
        let mut session = TractSession {
            model: parsed,
            plans: HashMap::new(),
            outputs: model.outputs.to_vec(),
        };
        session.plan(&model.input_shape).map_err(|e| match e {
            EngineError::Run { engine, message } => EngineError::Prepare { engine, message },
            other => other,
        })?;
        Ok(session)
    }

    fn plan(&mut self, shape: &[usize]) -> Result<Arc<TypedRunnableModel>, EngineError> {
        if let Some(plan) = self.plans.get(shape) {
            return Ok(plan.clone());
        }
        let plan = self
            .model
            .clone()
            .with_input_fact(0, f32::fact(shape).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(run_err)?;
        self.plans.insert(shape.to_vec(), plan.clone());
        Ok(plan)
    }
}

impl Session for TractSession {
    fn kind(&self) -> EngineKind {
        EngineKind::Tract
    }

    fn run(&mut self, input: &Tensor) -> Result<Outputs, EngineError> {
        let plan = self.plan(&input.shape)?;
        let tensor = tract_ndarray::ArrayD::from_shape_vec(input.shape.clone(), input.data.clone())
            .map_err(run_err)?
            .into_tensor();
        let results = plan.run(tvec!(tensor.into())).map_err(run_err)?;
        let mut outputs = Vec::with_capacity(self.outputs.len());
        for (name, value) in self.outputs.iter().zip(results.iter()) {
            let view = value.to_plain_array_view::<f32>().map_err(run_err)?;
            outputs.push((
                name.clone(),
                Tensor {
                    shape: view.shape().to_vec(),
                    data: view.iter().copied().collect(),
                },
            ));
        }
        Ok(Outputs(outputs))
    }
}
