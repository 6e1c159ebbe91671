//! GPU execution providers of ONNX Runtime: the plan (precision, option strings, cache
//! entry) is plain code that runs and is tested everywhere; only registering it needs the
//! `cuda` / `tensorrt` features, and without them each kind returns a "not compiled"
//! error, so no `cfg` spreads into callers.

use ort::ep::ExecutionProviderDispatch;

use super::cache::{CacheEntry, EngineCache, EngineKey};
use super::provider_options::{self, Precision};
use super::{EngineError, EngineKind, EngineOptions, ModelSpec, platform};

/// What a session's execution providers will be asked to do.
#[derive(Debug, Clone, Default)]
pub struct ProviderPlan {
    /// The precision the engine builds for.
    pub precision: Precision,
    /// TensorRT's options, when TensorRT runs.
    pub tensorrt: Option<Vec<(&'static str, String)>>,
    /// The CUDA provider's options (also behind TensorRT, for what it cannot run).
    pub cuda: Option<Vec<(&'static str, String)>>,
    /// The engine cache entry in use.
    pub cache: Option<(EngineCache, CacheEntry)>,
}

impl ProviderPlan {
    /// `tensorrt: k=v ...; cuda: k=v ...`, or none for the CPU.
    pub fn describe(&self) -> Option<String> {
        let parts: Vec<String> = [("tensorrt", &self.tensorrt), ("cuda", &self.cuda)]
            .into_iter()
            .filter_map(|(name, options)| {
                options
                    .as_ref()
                    .map(|o| format!("{name}: {}", provider_options::describe(o)))
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// The text every "INT8 without QDQ nodes" refusal carries.
pub const INT8_NEEDS_QDQ: &str = "INT8 needs a model quantized with QDQ nodes \
    (QuantizeLinear/DequantizeLinear): make one with `scion quantize --model M.onnx \
    --calibration DIR --data DATA --out M.int8.onnx`, or ask for fp16";

/// The precision TensorRT builds: a QDQ model is INT8 by construction; an explicit ask
/// otherwise wins; the board's INT8 default means FP16 for a model without QDQ nodes.
pub fn resolve_precision(
    asked: Option<Precision>,
    board: Precision,
    quantized: bool,
) -> Result<Precision, String> {
    match (asked, quantized) {
        (Some(p), true) if p != Precision::Int8 => {
            tracing::warn!(
                "precision {p}: the model is quantized (QDQ nodes), so TensorRT builds it as INT8"
            );
            Ok(Precision::Int8)
        }
        (_, true) => Ok(Precision::Int8),
        (Some(Precision::Int8), false) => Err(format!("precision int8: {INT8_NEEDS_QDQ}")),
        (Some(p), false) => Ok(p),
        (None, false) if board == Precision::Int8 => Ok(Precision::Fp16),
        (None, false) => Ok(board),
    }
}

/// Whether the model has QuantizeLinear / DequantizeLinear nodes.
pub fn is_quantized(model_bytes: &[u8]) -> bool {
    scion_onnx::io::decode(model_bytes).is_ok_and(|m| {
        m.graph.as_ref().is_some_and(|g| {
            g.node
                .iter()
                .any(|n| n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear")
        })
    })
}

/// The cache key of `model` on this machine, or why the engine cannot be cached safely
/// (a GPU or TensorRT that cannot be identified could change without the key noticing).
pub fn engine_key(
    model: &ModelSpec<'_>,
    precision: Precision,
    options: &EngineOptions,
    onnxruntime: &str,
) -> Result<EngineKey, String> {
    use sha2::{Digest, Sha256};
    let tensorrt = platform::tensorrt_version()?;
    let devices = platform::cuda_devices()?;
    let device = devices
        .iter()
        .find(|d| d.ordinal == options.gpu.device_id as i32)
        .ok_or_else(|| {
            format!(
                "the CUDA driver lists no device {} ({} devices)",
                options.gpu.device_id,
                devices.len()
            )
        })?;
    Ok(EngineKey {
        model_sha256: hex::encode(Sha256::digest(model.bytes)),
        input_shape: model.input_shape.clone(),
        precision,
        dla_core: options.gpu.dla_core,
        onnxruntime: onnxruntime.to_string(),
        tensorrt,
        gpu: device.describe(),
    })
}

/// The plan for running `model` on `kind`.
pub fn plan(
    kind: EngineKind,
    model: &ModelSpec<'_>,
    options: &EngineOptions,
    onnxruntime: &str,
) -> Result<ProviderPlan, EngineError> {
    match kind {
        EngineKind::OrtCpu | EngineKind::Tract => Ok(ProviderPlan::default()),
        EngineKind::Cuda => Ok(ProviderPlan {
            cuda: Some(provider_options::cuda_options(&options.gpu)),
            ..ProviderPlan::default()
        }),
        EngineKind::TensorRt => {
            let precision = resolve_precision(
                options.precision,
                options.board_precision,
                is_quantized(model.bytes),
            )
            .map_err(|message| EngineError::Prepare {
                engine: kind,
                message,
            })?;
            let cache = options.cache.as_ref().and_then(|cache| {
                let entry = engine_key(model, precision, options, onnxruntime)
                    .and_then(|key| cache.entry(&key).map_err(|e| e.to_string()));
                match entry {
                    Ok(entry) => Some((cache.clone(), entry)),
                    Err(why) => {
                        tracing::warn!(
                            "engine cache {}: {why}; building the engine without a cache \
                             (every start builds it again)",
                            cache.dir.display()
                        );
                        None
                    }
                }
            });
            if let Some((_, entry)) = &cache {
                if entry.reused {
                    tracing::info!("engine cache: reusing {}", entry.dirs.engines.display());
                } else {
                    tracing::info!(
                        "engine cache: building a {precision} engine into {} (minutes on a \
                         small board, once per model and key)",
                        entry.dirs.engines.display()
                    );
                }
            }
            Ok(ProviderPlan {
                precision,
                tensorrt: Some(provider_options::tensorrt_options(
                    &options.gpu,
                    precision,
                    cache.as_ref().map(|(_, e)| &e.dirs),
                )),
                cuda: Some(provider_options::cuda_options(&options.gpu)),
                cache,
            })
        }
    }
}

/// Fails for an engine this binary cannot register, before any library is loaded.
pub(super) fn require_compiled(kind: EngineKind) -> Result<(), EngineError> {
    match kind {
        EngineKind::Cuda if !kind.compiled() => Err(EngineError::NotCompiled {
            engine: kind,
            feature: "cuda",
        }),
        EngineKind::TensorRt if !kind.compiled() => Err(EngineError::NotCompiled {
            engine: kind,
            feature: "tensorrt",
        }),
        _ => Ok(()),
    }
}

/// The execution providers of `plan`, in order (TensorRT, then CUDA for what TensorRT
/// leaves), each failing loudly rather than silently running on the CPU.
pub(super) fn execution_providers(
    plan: &ProviderPlan,
) -> Result<Vec<ExecutionProviderDispatch>, EngineError> {
    let mut providers = Vec::new();
    if let Some(options) = &plan.tensorrt {
        providers.push(tensorrt(options)?);
    }
    if let Some(options) = &plan.cuda {
        providers.push(cuda(options)?);
    }
    Ok(providers)
}

#[cfg(feature = "cuda")]
fn cuda(options: &[(&'static str, String)]) -> Result<ExecutionProviderDispatch, EngineError> {
    use ort::ep::ArbitrarilyConfigurableExecutionProvider;
    let mut ep = ort::ep::CUDA::default();
    for (key, value) in options {
        ep = ep.with_arbitrary_config(key, value);
    }
    Ok(ep.build().error_on_failure())
}

#[cfg(not(feature = "cuda"))]
fn cuda(_: &[(&'static str, String)]) -> Result<ExecutionProviderDispatch, EngineError> {
    Err(EngineError::NotCompiled {
        engine: EngineKind::Cuda,
        feature: "cuda",
    })
}

#[cfg(feature = "tensorrt")]
fn tensorrt(options: &[(&'static str, String)]) -> Result<ExecutionProviderDispatch, EngineError> {
    use ort::ep::ArbitrarilyConfigurableExecutionProvider;
    let mut ep = ort::ep::TensorRT::default();
    for (key, value) in options {
        ep = ep.with_arbitrary_config(key, value);
    }
    Ok(ep.build().error_on_failure())
}

#[cfg(not(feature = "tensorrt"))]
fn tensorrt(_: &[(&'static str, String)]) -> Result<ExecutionProviderDispatch, EngineError> {
    Err(EngineError::NotCompiled {
        engine: EngineKind::TensorRt,
        feature: "tensorrt",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_follows_the_ask_the_model_and_the_board() {
        use Precision::*;
        assert_eq!(
            resolve_precision(None, Int8, false),
            Ok(Fp16),
            "Xavier, float model"
        );
        assert_eq!(
            resolve_precision(None, Int8, true),
            Ok(Int8),
            "Xavier, QDQ model"
        );
        assert_eq!(resolve_precision(None, Fp16, false), Ok(Fp16), "Nano");
        assert_eq!(resolve_precision(Some(Fp32), Int8, false), Ok(Fp32));
        assert_eq!(resolve_precision(Some(Fp16), Fp16, true), Ok(Int8));
        let err = resolve_precision(Some(Int8), Fp16, false).expect_err("must be refused");
        assert!(
            err.contains("scion quantize") && err.contains("QDQ"),
            "{err}"
        );
    }

    #[test]
    fn the_cpu_plan_has_no_providers_and_cuda_has_its_options() {
        let model = ModelSpec {
            bytes: b"",
            input: "x",
            outputs: &[],
            input_shape: vec![1, 3, 8, 8],
        };
        let options = EngineOptions::default();
        let cpu = plan(EngineKind::OrtCpu, &model, &options, "ort").expect("must work");
        assert!(cpu.describe().is_none() && cpu.precision == Precision::Fp32);
        let cuda = plan(EngineKind::Cuda, &model, &options, "ort").expect("must work");
        assert_eq!(
            cuda.describe().as_deref(),
            Some(
                "cuda: device_id=0 cudnn_conv_algo_search=EXHAUSTIVE \
                 arena_extend_strategy=kNextPowerOfTwo"
            )
        );
    }

    #[test]
    fn int8_without_qdq_nodes_is_refused_before_any_build() {
        let model = ModelSpec {
            bytes: b"not even onnx",
            input: "x",
            outputs: &[],
            input_shape: vec![1, 3, 8, 8],
        };
        let options = EngineOptions {
            precision: Some(Precision::Int8),
            ..EngineOptions::default()
        };
        let err = plan(EngineKind::TensorRt, &model, &options, "ort")
            .expect_err("must be refused")
            .to_string();
        assert!(
            err.starts_with("tensorrt: cannot prepare the model: precision int8"),
            "{err}"
        );
        assert!(err.contains("scion quantize"), "{err}");
    }

    #[test]
    fn without_an_identifiable_gpu_the_engine_is_built_uncached() {
        // No CUDA driver or TensorRT here: the cache is skipped with a warning, not used
        // with a key that could not tell two GPUs apart.
        if platform::cuda_devices().is_ok() && platform::tensorrt_version().is_ok() {
            return; // a GPU machine: the key would be complete
        }
        let tmp = tempfile::tempdir().expect("must work");
        let model = ModelSpec {
            bytes: b"model",
            input: "x",
            outputs: &[],
            input_shape: vec![1, 3, 8, 8],
        };
        let options = EngineOptions {
            precision: Some(Precision::Fp16),
            cache: Some(EngineCache {
                dir: tmp.path().to_path_buf(),
                budget_bytes: u64::MAX,
            }),
            ..EngineOptions::default()
        };
        let plan = plan(EngineKind::TensorRt, &model, &options, "ort").expect("must work");
        assert!(plan.cache.is_none());
        let trt = plan.tensorrt.expect("must work");
        assert!(trt.contains(&("trt_engine_cache_enable", "0".to_string())));
        assert!(trt.contains(&("trt_fp16_enable", "1".to_string())));
    }
}
