//! GPU execution providers of ONNX Runtime. Registration code exists only with the
//! `cuda` / `tensorrt` features; without them each returns a "not compiled" error, so no
//! `cfg` spreads into callers.

use ort::ep::ExecutionProviderDispatch;

use super::{EngineError, EngineKind};

/// The execution provider for `kind`, failing loudly (never silently running on CPU).
pub(super) fn execution_provider(
    kind: EngineKind,
) -> Result<Option<ExecutionProviderDispatch>, EngineError> {
    match kind {
        EngineKind::OrtCpu | EngineKind::Tract => Ok(None),
        EngineKind::Cuda => cuda().map(Some),
        EngineKind::TensorRt => tensorrt().map(Some),
    }
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<ExecutionProviderDispatch, EngineError> {
    Ok(ort::ep::CUDA::default().build().error_on_failure())
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<ExecutionProviderDispatch, EngineError> {
    Err(EngineError::NotCompiled {
        engine: EngineKind::Cuda,
        feature: "cuda",
    })
}

#[cfg(feature = "tensorrt")]
fn tensorrt() -> Result<ExecutionProviderDispatch, EngineError> {
    Ok(ort::ep::TensorRT::default().build().error_on_failure())
}

#[cfg(not(feature = "tensorrt"))]
fn tensorrt() -> Result<ExecutionProviderDispatch, EngineError> {
    Err(EngineError::NotCompiled {
        engine: EngineKind::TensorRt,
        feature: "tensorrt",
    })
}
