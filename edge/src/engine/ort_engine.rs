//! ONNX Runtime through `ort`, loading `libonnxruntime.so` at run time (`load-dynamic`), so
//! the same binary runs with the CPU wheel's library on a workstation and the JetPack build
//! (CUDA, TensorRT) on a Jetson.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::Session as OrtInner;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use super::{
    EngineError, EngineKind, EngineOptions, ModelSpec, Outputs, Precision, Session, Tensor,
};

/// Environment variable naming the ONNX Runtime library, as `ort` itself uses.
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";
const LIBRARY_NAME: &str = "libonnxruntime.so";

/// The process-wide ONNX Runtime environment: loaded once, kept alive for the process.
static RUNTIME: OnceLock<Result<(PathBuf, ort::environment::Environment), String>> =
    OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Where to look for the library, in order: the explicit path, `ORT_DYLIB_PATH`, then beside
/// the executable (`./libonnxruntime.so*`, `../lib/libonnxruntime.so*`).
pub fn library_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    if let Some(p) = std::env::var_os(ORT_DYLIB_ENV).filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        for d in [dir.clone(), dir.join("../lib")] {
            out.push(d.join(LIBRARY_NAME));
            if let Ok(entries) = std::fs::read_dir(&d) {
                let mut versioned: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so."))
                    })
                    .collect();
                versioned.sort();
                out.extend(versioned);
            }
        }
    }
    out
}

/// Load the library once. Returns the path it was loaded from and the environment.
pub fn ensure_runtime(
    explicit: Option<&Path>,
) -> Result<(&'static Path, &'static ort::environment::Environment), EngineError> {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let result = RUNTIME.get_or_init(|| {
        let candidates = library_candidates(explicit);
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            return Err(format!(
                "not found (looked at: {}); set {ORT_DYLIB_ENV} or pass --ort-lib",
                if candidates.is_empty() {
                    "nothing".to_string()
                } else {
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
        };
        let env = ort::init_from(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .with_name("scion")
            .build()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        tracing::debug!(library = %path.display(), "ONNX Runtime loaded");
        Ok((path.clone(), env))
    });
    result
        .as_ref()
        .map(|(p, env)| (p.as_path(), env))
        .map_err(|e| EngineError::Library(e.clone()))
}

/// A model prepared by ONNX Runtime on one execution provider.
pub struct OrtSession {
    kind: EngineKind,
    session: OrtInner,
    input: String,
    outputs: Vec<String>,
    precision: Precision,
    provider_options: Option<String>,
}

/// ONNX Runtime's build string (version, commit), once the library is loaded.
pub fn build_info(explicit: Option<&Path>) -> Result<String, EngineError> {
    ensure_runtime(explicit)?;
    Ok(ort::info().to_string())
}

impl OrtSession {
    /// Load the library if needed, register the execution provider for `kind` (failing
    /// rather than silently running on the CPU), and build the session.
    pub fn prepare(
        kind: EngineKind,
        model: &ModelSpec<'_>,
        options: &EngineOptions,
    ) -> Result<Self, EngineError> {
        super::gpu::require_compiled(kind)?;
        let (_, environment) = ensure_runtime(options.ort_library.as_deref())?;
        let plan = super::gpu::plan(kind, model, options, ort::info())?;
        let providers = super::gpu::execution_providers(&plan)?;
        let prepare_err = |e: ort::Error| EngineError::Prepare {
            engine: kind,
            message: e.to_string(),
        };
        let mut builder = OrtInner::builder(environment)
            .map_err(prepare_err)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| prepare_err(e.into()))?;
        builder = builder
            .with_intra_op_spinning(options.spin_wait)
            .map_err(|e| prepare_err(e.into()))?;
        if options.threads > 0 {
            builder = builder
                .with_intra_threads(options.threads)
                .map_err(|e| prepare_err(e.into()))?;
        }
        if !providers.is_empty() {
            builder = builder
                .with_execution_providers(providers)
                .map_err(|e| prepare_err(e.into()))?;
        }
        let started = std::time::Instant::now();
        let session = builder
            .commit_from_memory(model.bytes)
            .map_err(prepare_err)?;
        if let Some((cache, entry)) = &plan.cache {
            tracing::info!(
                "{kind} engine ready in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            match cache.prune(&entry.dirs.engines) {
                Ok(pruned) if !pruned.removed.is_empty() => tracing::info!(
                    "engine cache: pruned {} old entries to {} MiB",
                    pruned.removed.len(),
                    pruned.bytes / (1024 * 1024)
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("{e}; not pruned"),
            }
        }
        Ok(OrtSession {
            kind,
            session,
            input: model.input.to_string(),
            outputs: model.outputs.to_vec(),
            precision: plan.precision,
            provider_options: plan.describe(),
        })
    }
}

impl Session for OrtSession {
    fn kind(&self) -> EngineKind {
        self.kind
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn provider_options(&self) -> Option<String> {
        self.provider_options.clone()
    }

    fn run(&mut self, input: &Tensor) -> Result<Outputs, EngineError> {
        let kind = self.kind;
        let run_err = |e: ort::Error| EngineError::Run {
            engine: kind,
            message: e.to_string(),
        };
        let shape: Vec<i64> = input.shape.iter().map(|&d| d as i64).collect();
        let value = TensorRef::from_array_view((shape, input.data.as_slice())).map_err(run_err)?;
        let results = self
            .session
            .run(ort::inputs![self.input.as_str() => value])
            .map_err(run_err)?;
        let mut outputs = Vec::with_capacity(self.outputs.len());
        for name in &self.outputs {
            let (shape, data) = results[name.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(run_err)?;
            outputs.push((
                name.clone(),
                Tensor {
                    shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
                    data: data.to_vec(),
                },
            ));
        }
        Ok(Outputs(outputs))
    }
}
