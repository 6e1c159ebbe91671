//! Where the head trains. One small module holds the only `cfg(feature = "cuda")` of the
//! trainer (the candle way): without the feature, asking for CUDA is a clear error rather
//! than code that silently runs elsewhere.

use burn::prelude::Device;

/// A compute device, as chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// burn's flex backend on all CPU cores; feature extraction by ONNX Runtime on the CPU.
    Cpu,
    /// burn's CUDA backend; feature extraction by ONNX Runtime's CUDA execution provider,
    /// or by ONNX Runtime on the CPU (with a warning) where that provider is missing.
    Cuda,
}

/// The device cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--device {requested}: {message}")]
pub struct DeviceError {
    /// What was asked for.
    pub requested: &'static str,
    /// Why it cannot be used.
    pub message: String,
}

impl DeviceKind {
    /// The burn device for training (head and backbone layers alike), with autodiff.
    pub fn training_device(self) -> Result<Device, DeviceError> {
        match self {
            DeviceKind::Cpu => Ok(Device::flex().autodiff()),
            DeviceKind::Cuda => cuda::device().map(Device::autodiff),
        }
    }

    /// The scion-edge engine that computes backbone features on this device.
    pub fn feature_engine(self) -> scion_edge::engine::EngineKind {
        match self {
            DeviceKind::Cpu => scion_edge::engine::EngineKind::OrtCpu,
            DeviceKind::Cuda => scion_edge::engine::EngineKind::Cuda,
        }
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::DeviceError;
    use burn::prelude::Device;

    /// burn's CUDA backend panics at the first tensor operation without a driver or a
    /// device, so the driver is asked first and its answer becomes the error.
    pub fn device() -> Result<Device, DeviceError> {
        let unusable = |message: String| DeviceError {
            requested: "cuda",
            message,
        };
        let devices = scion_edge::engine::platform::cuda_devices()
            .map_err(|why| unusable(format!("{why}; train with --device cpu")))?;
        let first = devices.first().ok_or_else(|| {
            unusable("the CUDA driver lists no device; train with --device cpu".into())
        })?;
        tracing::info!("training on CUDA device 0: {}", first.describe());
        Ok(Device::cuda(0))
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::DeviceError;
    use burn::prelude::Device;

    pub fn device() -> Result<Device, DeviceError> {
        Err(DeviceError {
            requested: "cuda",
            message: "scion was not compiled with CUDA (rebuild with `--features cuda` on a \
                      machine with the CUDA toolkit)"
                .into(),
        })
    }
}
