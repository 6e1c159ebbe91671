//! tract: pure Rust, no shared library, always available; the CPU fallback.

use tract_onnx::prelude::*;

use super::{EngineError, EngineKind, EngineOptions, ModelSpec, Outputs, Session, Tensor};

/// A model optimised by tract for the CPU, with a symbolic batch dimension.
pub struct TractSession {
    plan: Arc<TypedRunnableModel>,
    outputs: Vec<String>,
}

fn prepare_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Prepare {
        engine: EngineKind::Tract,
        message: format!("{e:#}"),
    }
}

impl TractSession {
    /// Parse and optimise the model.
    pub fn prepare(model: &ModelSpec<'_>, _options: &EngineOptions) -> Result<Self, EngineError> {
        let plan = tract_onnx::onnx()
            .model_for_read(&mut &model.bytes[..])
            .map_err(prepare_err)?
            .into_optimized()
            .map_err(prepare_err)?
            .into_runnable()
            .map_err(prepare_err)?;
        Ok(TractSession {
            plan,
            outputs: model.outputs.to_vec(),
        })
    }
}

impl Session for TractSession {
    fn kind(&self) -> EngineKind {
        EngineKind::Tract
    }

    fn run(&mut self, input: &Tensor) -> Result<Outputs, EngineError> {
        let run_err = |e: anyhow::Error| EngineError::Run {
            engine: EngineKind::Tract,
            message: format!("{e:#}"),
        };
        let tensor = tract_ndarray::ArrayD::from_shape_vec(input.shape.clone(), input.data.clone())
            .map_err(|e| run_err(e.into()))?
            .into_tensor();
        let results = self.plan.run(tvec!(tensor.into())).map_err(run_err)?;
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
