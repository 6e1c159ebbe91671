//! Engines: one trait that separates "prepare once" (parse, optimise, pick a device) from
//! "run many" (a batch of NCHW f32 in, named outputs out), and an ordered selection policy
//! with explicit, logged fallback. The engine actually used is always reported.

pub mod cache;
pub mod gpu;
pub mod ort_engine;
pub mod platform;
pub mod precision_check;
pub mod provider_options;
pub mod tract_engine;

pub use provider_options::{GpuOptions, Precision};

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A dense f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// The named outputs of one run, in the model's output order.
#[derive(Debug, Clone, Default)]
pub struct Outputs(pub Vec<(String, Tensor)>);

impl Outputs {
    /// The output called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// The engines scion knows, in the order of the default policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// ONNX Runtime with the TensorRT execution provider.
    TensorRt,
    /// ONNX Runtime with the CUDA execution provider.
    Cuda,
    /// ONNX Runtime on the CPU.
    OrtCpu,
    /// tract, pure Rust, always available.
    Tract,
}

impl EngineKind {
    /// Every kind, best first.
    pub const ALL: [EngineKind; 4] = [
        EngineKind::TensorRt,
        EngineKind::Cuda,
        EngineKind::OrtCpu,
        EngineKind::Tract,
    ];

    /// Stable name used on the command line and in outputs.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::TensorRt => "tensorrt",
            EngineKind::Cuda => "cuda",
            EngineKind::OrtCpu => "ort-cpu",
            EngineKind::Tract => "tract",
        }
    }

    /// The largest batch worth sending. tract's convolutions get slower per image as the
    /// batch grows (Lite0 on 2 cores: 27 images/s at batch 1, 16 at 4, 9 at 32, while ONNX
    /// Runtime gains a little), so tract gets one image at a time.
    pub fn max_useful_batch(self) -> usize {
        match self {
            EngineKind::Tract => 1,
            _ => usize::MAX,
        }
    }

    /// Whether support for this engine was compiled into this binary.
    pub fn compiled(self) -> bool {
        match self {
            EngineKind::TensorRt => cfg!(feature = "tensorrt"),
            EngineKind::Cuda => cfg!(feature = "cuda"),
            EngineKind::OrtCpu | EngineKind::Tract => true,
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tensorrt" | "trt" => Ok(EngineKind::TensorRt),
            "cuda" => Ok(EngineKind::Cuda),
            "ort-cpu" | "ort" | "onnxruntime" => Ok(EngineKind::OrtCpu),
            "tract" => Ok(EngineKind::Tract),
            other => Err(format!(
                "unknown engine '{other}' (expected tensorrt, cuda, ort-cpu or tract)"
            )),
        }
    }
}

/// Why an engine could not be prepared or run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// This binary was built without the feature the engine needs.
    #[error("{engine}: not compiled in (rebuild scion-edge with `--features {feature}`)")]
    NotCompiled {
        /// The engine.
        engine: EngineKind,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error("ONNX Runtime library: {0}")]
    Library(String),
    /// The engine rejected the model.
    #[error("{engine}: cannot prepare the model: {message}")]
    Prepare {
        /// The engine.
        engine: EngineKind,
        /// The engine's message.
        message: String,
    },
    /// Inference failed.
    #[error("{engine}: inference failed: {message}")]
    Run {
        /// The engine.
        engine: EngineKind,
        /// The engine's message.
        message: String,
    },
}

/// Settings shared by all engines.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Threads for intra-op parallelism; 0 lets the engine decide.
    pub threads: usize,
    /// Explicit path of `libonnxruntime.so` (else `ORT_DYLIB_PATH`, else beside the binary).
    pub ort_library: Option<PathBuf>,
    /// Let idle engine threads spin-wait for the next run. Lowest latency for a lone
    /// model, but on a small CPU the spinning steals the cores that decode images, so it
    /// is off by default.
    pub spin_wait: bool,
    /// The precision asked for TensorRT (none: `board_precision`). The other engines run
    /// the model's own types.
    pub precision: Option<Precision>,
    /// The board's precision, used when none is asked (INT8 only for QDQ models).
    pub board_precision: Precision,
    /// CUDA and TensorRT settings.
    pub gpu: GpuOptions,
    /// Where TensorRT engines are kept between starts (none: built at every start).
    pub cache: Option<cache::EngineCache>,
    /// The share of check images on which a reduced-precision engine must give the FP32
    /// top-1, else it is refused and FP32 serves.
    pub min_agreement: f64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: 0,
            ort_library: None,
            spin_wait: false,
            precision: None,
            board_precision: Precision::Fp32,
            gpu: GpuOptions::default(),
            cache: None,
            min_agreement: precision_check::DEFAULT_MIN_AGREEMENT,
        }
    }
}

/// What an engine needs to know about a model.
#[derive(Debug, Clone)]
pub struct ModelSpec<'a> {
    /// The serialized ONNX model.
    pub bytes: &'a [u8],
    /// The image input's name.
    pub input: &'a str,
    /// Output names, in graph order.
    pub outputs: &'a [String],
    /// Input shape for one image (batch dimension 1), from the card.
    pub input_shape: Vec<usize>,
}

/// A prepared model: runs batches, many times.
pub trait Session: Send {
    /// Which engine runs this session.
    fn kind(&self) -> EngineKind;
    /// Run one batch (NCHW or as the card says) through the model.
    fn run(&mut self, input: &Tensor) -> Result<Outputs, EngineError>;
    /// The precision the engine was built for (only TensorRT builds below FP32).
    fn precision(&self) -> Precision {
        Precision::Fp32
    }
    /// The options handed to the execution provider, `key=value` (none for CPU engines).
    fn provider_options(&self) -> Option<String> {
        None
    }
}

/// Prepare `model` on exactly the engine `kind`.
pub fn prepare(
    kind: EngineKind,
    model: &ModelSpec<'_>,
    options: &EngineOptions,
) -> Result<Box<dyn Session>, EngineError> {
    match kind {
        EngineKind::Tract => Ok(Box::new(tract_engine::TractSession::prepare(
            model, options,
        )?)),
        EngineKind::OrtCpu | EngineKind::Cuda | EngineKind::TensorRt => Ok(Box::new(
            ort_engine::OrtSession::prepare(kind, model, options)?,
        )),
    }
}

/// An engine that was passed over, and why.
#[derive(Debug)]
pub struct Fallback {
    /// The engine tried.
    pub engine: EngineKind,
    /// Why it was not used.
    pub reason: EngineError,
}

/// The result of a policy: the session and the engines passed over before it.
pub struct Selected {
    /// The session to run.
    pub session: Box<dyn Session>,
    /// Engines tried first, with the reason each was skipped.
    pub fallbacks: Vec<Fallback>,
    /// How a reduced-precision engine compared with FP32, when it was checked. A refused
    /// engine leaves its figure here and `session` is the FP32 build.
    pub agreement: Option<precision_check::Agreement>,
}

/// How a policy prepares one engine: [`prepare`], or a stand-in in tests.
pub type PrepareFn<'a> = dyn Fn(EngineKind, &ModelSpec<'_>, &EngineOptions) -> Result<Box<dyn Session>, EngineError>
    + 'a;

/// An ordered list of engines to try, with fallback unless strict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Engines in order of preference.
    pub order: Vec<EngineKind>,
    /// Refuse to fall back: the first engine or an error.
    pub strict: bool,
}

impl Default for Policy {
    /// `tensorrt > cuda > ort-cpu > tract`, skipping what this binary was built without.
    fn default() -> Self {
        Policy {
            order: EngineKind::ALL
                .into_iter()
                .filter(|k| k.compiled())
                .collect(),
            strict: false,
        }
    }
}

impl Policy {
    /// Prefer `engine`, then the default order; `strict` refuses any fallback.
    pub fn prefer(engine: EngineKind, strict: bool) -> Policy {
        let mut order = vec![engine];
        order.extend(Policy::default().order.into_iter().filter(|k| *k != engine));
        Policy { order, strict }
    }

    /// Whether an engine of this policy can build below FP32 (TensorRT, compiled in), so
    /// check images are worth preparing.
    pub fn may_reduce_precision(&self) -> bool {
        self.tried()
            .iter()
            .any(|k| *k == EngineKind::TensorRt && k.compiled())
    }

    /// The engines this policy may try: the first only when strict.
    fn tried(&self) -> &[EngineKind] {
        if self.strict {
            &self.order[..1.min(self.order.len())]
        } else {
            &self.order[..]
        }
    }

    /// Prepare the model on the first engine that accepts it. Every engine passed over is
    /// logged with its reason (a warning, except engines simply not compiled in).
    pub fn select(
        &self,
        model: &ModelSpec<'_>,
        options: &EngineOptions,
    ) -> Result<Selected, EngineError> {
        self.select_with(model, options, None, &prepare)
    }

    /// [`Policy::select`], then check a reduced-precision engine on `check` against FP32
    /// answers; below `options.min_agreement` it is refused and rebuilt at FP32.
    pub fn select_checked(
        &self,
        model: &ModelSpec<'_>,
        options: &EngineOptions,
        check: Option<&precision_check::CheckImages>,
    ) -> Result<Selected, EngineError> {
        self.select_with(model, options, check, &prepare)
    }

    /// The policy with its engine preparation given, so tests can stand a CPU engine in for
    /// a reduced-precision one.
    pub fn select_with(
        &self,
        model: &ModelSpec<'_>,
        options: &EngineOptions,
        check: Option<&precision_check::CheckImages>,
        prepare: &PrepareFn<'_>,
    ) -> Result<Selected, EngineError> {
        let mut selected = self.first_accepting(model, options, prepare)?;
        let precision = selected.session.precision();
        if precision == Precision::Fp32 {
            return Ok(selected);
        }
        let Some(check) = check.filter(|c| !c.is_empty()) else {
            tracing::warn!(
                "{} {precision} is not checked against FP32: no check images (pass \
                 --check-images, set engine.check_images, or add the card's reference images \
                 to the model store)",
                selected.session.kind()
            );
            return Ok(selected);
        };
        let fp32 = EngineOptions {
            precision: Some(Precision::Fp32),
            ..options.clone()
        };
        // FP32 answers from the cheapest engine that gives them: not another TensorRT build.
        let reference_policy = Policy {
            order: [EngineKind::Cuda, EngineKind::OrtCpu, EngineKind::Tract]
                .into_iter()
                .filter(|k| k.compiled())
                .collect(),
            strict: false,
        };
        let mut reference = reference_policy.first_accepting(model, &fp32, prepare)?;
        let agreement = precision_check::agreement(
            selected.session.as_mut(),
            reference.session.as_mut(),
            check,
            options.min_agreement,
        )?;
        if agreement.accepted() {
            tracing::info!("{agreement}: accepted");
        } else {
            tracing::warn!("{agreement}: refused; building FP32 instead");
            selected.session = prepare(selected.session.kind(), model, &fp32)?;
        }
        selected.agreement = Some(agreement);
        Ok(selected)
    }

    fn first_accepting(
        &self,
        model: &ModelSpec<'_>,
        options: &EngineOptions,
        prepare: &PrepareFn<'_>,
    ) -> Result<Selected, EngineError> {
        let mut fallbacks = Vec::new();
        for &kind in self.tried() {
            match prepare(kind, model, options) {
                Ok(session) => {
                    tracing::info!(engine = %kind, precision = %session.precision(), "engine selected");
                    return Ok(Selected {
                        session,
                        fallbacks,
                        agreement: None,
                    });
                }
                Err(reason) => {
                    if self.strict {
                        return Err(reason);
                    }
                    match reason {
                        EngineError::NotCompiled { .. } => {
                            tracing::debug!("{reason}; trying the next engine")
                        }
                        _ => tracing::warn!("{reason}; trying the next engine"),
                    }
                    fallbacks.push(Fallback {
                        engine: kind,
                        reason,
                    });
                }
            }
        }
        Err(fallbacks
            .pop()
            .map(|f| f.reason)
            .unwrap_or(EngineError::Prepare {
                engine: EngineKind::Tract,
                message: "the engine policy is empty".into(),
            }))
    }
}
