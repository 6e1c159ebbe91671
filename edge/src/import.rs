//! `scion-edge import onnx`: a user's own ONNX classifier or trunk (torch.onnx, the ONNX
//! model zoo, tf2onnx) made into a self-describing scion model. The graph is normalised by
//! `scion-onnx` patches, the feature tensor found, a card attached, and the result checked
//! on ONNX Runtime and tract against the source model before anything is written.

use std::path::{Path, PathBuf};

use scion_onnx::card::{
    CARD_VERSION, ColorOrder, Layout, ModelCard, Preprocessing, Provenance, Resize, ResizeFilter,
    TensorNames,
};
use scion_onnx::features::Features;
use scion_onnx::patch::Patch;
use scion_onnx::pb::ModelProto;

use crate::engine::{self, EngineKind, EngineOptions, ModelSpec};

/// Why an import failed. Every message names the file, node or flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The source file cannot be read or is not ONNX.
    #[error("{path}: {source}")]
    Format {
        /// The source file.
        path: PathBuf,
        /// What is wrong.
        source: scion_onnx::Error,
    },
    /// The graph is not something scion can use as an image model.
    #[error("{path}: {message}")]
    Unusable {
        /// The source file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An engine disagrees with the source, or cannot run the result.
    #[error("{path}: check failed: {message}")]
    Check {
        /// The source file.
        path: PathBuf,
        /// What disagreed.
        message: String,
    },
}

/// A family's preprocessing contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// torchvision: RGB, shorter side 256 for a 224 crop, ImageNet mean/std on 0..1.
    Torchvision,
    /// Caffe: BGR, 0..255 minus the mean pixel.
    Caffe,
    /// Inception: 299 px, (x - 0.5) / 0.5 on 0..1.
    Inception,
    /// TensorFlow/Keras through tf2onnx: NHWC input, (x - 0.5) / 0.5 on 0..1.
    Tf,
    /// EfficientNet-Lite: (x - 127) / 128.
    Lite,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "torchvision" | "torch" => Preset::Torchvision,
            "caffe" | "caffe2" => Preset::Caffe,
            "inception" => Preset::Inception,
            "tf" | "keras" => Preset::Tf,
            "lite" => Preset::Lite,
            other => {
                return Err(format!(
                    "unknown preset '{other}' (torchvision, caffe, inception, tf or lite)"
                ));
            }
        })
    }
}

impl Preset {
    /// The name written into the card.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Torchvision => "torchvision",
            Preset::Caffe => "caffe",
            Preset::Inception => "inception",
            Preset::Tf => "tf",
            Preset::Lite => "lite",
        }
    }

    fn layout(self) -> Layout {
        if self == Preset::Tf {
            Layout::Nhwc
        } else {
            Layout::Nchw
        }
    }

    /// The contract for a square `size` crop.
    pub fn contract(self, size: u32) -> Preprocessing {
        let shorter = (size as f32 / 0.875).round() as u32;
        let (color, scale, mean, std) = match self {
            Preset::Torchvision => (
                ColorOrder::Rgb,
                1.0 / 255.0,
                [0.485, 0.456, 0.406],
                [0.229, 0.224, 0.225],
            ),
            Preset::Caffe => (ColorOrder::Bgr, 1.0, [103.94, 116.78, 123.68], [1.0; 3]),
            Preset::Inception | Preset::Tf => (ColorOrder::Rgb, 1.0 / 255.0, [0.5; 3], [0.5; 3]),
            Preset::Lite => (ColorOrder::Rgb, 1.0, [127.0; 3], [128.0; 3]),
        };
        Preprocessing {
            color,
            resize: Resize::ShorterSide { size: shorter },
            filter: ResizeFilter::Bilinear,
            crop: Some([size, size]),
            scale,
            mean,
            std,
            layout: self.layout(),
        }
    }
}

/// Labels for the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Labels {
    /// The 1,000 ImageNet-1k names.
    ImageNet,
    /// One per line.
    File(PathBuf),
    /// ImageNet names for 1,000 classes, `class N` otherwise.
    Default,
}

/// What `import onnx` is told.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The contract family.
    pub preset: Preset,
    /// Labels.
    pub labels: Labels,
    /// The feature tensor, instead of the one found.
    pub feature_tensor: Option<String>,
    /// Contract fields that override the preset's, as `info` and `classify` take them;
    /// `input_size` is required where the graph's is symbolic (its `labels_file` is not
    /// read: see `labels`).
    pub contract: crate::ContractOverrides,
    /// The model's name in the card (default: the file stem).
    pub name: Option<String>,
    /// Engines for the check.
    pub engine: EngineOptions,
    /// Largest |Δ| allowed between an engine and the source, relative to the output's
    /// scale (max(1, max |output|)).
    pub tolerance: f32,
}

/// One engine's agreement with the source.
#[derive(Debug, Clone)]
pub struct EngineCheck {
    /// The engine.
    pub engine: EngineKind,
    /// The batch size run.
    pub batch: usize,
    /// Largest |Δ| against the source, relative to the output's scale; `Err` when the
    /// engine could not run the model.
    pub max_diff: Result<f32, String>,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// One line per normalising step that changed something.
    pub changes: Vec<String>,
    /// The feature tensor and its shape.
    pub features: Features,
    /// The card's feature output (pooled when the tensor is spatial).
    pub feature_output: String,
    /// The blocks `--unfreeze last:N` counts, first to last.
    pub blocks: Vec<String>,
    /// The first operator on the path to the features that the interpreter cannot
    /// train through (`None`: every one can).
    pub untrainable: Option<String>,
    /// Engine checks.
    pub checks: Vec<EngineCheck>,
    /// The card written.
    pub card: ModelCard,
    /// The model written.
    pub model: ModelProto,
}

fn unusable(path: &Path, message: impl Into<String>) -> ImportError {
    ImportError::Unusable {
        path: path.into(),
        message: message.into(),
    }
}

/// The image input: the one graph input that is not an initializer, 4-D float.
fn image_input(model: &ModelProto, path: &Path) -> Result<(String, Vec<Option<i64>>), ImportError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| unusable(path, "no graph"))?;
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .collect();
    let [input] = inputs[..] else {
        return Err(unusable(
            path,
            format!(
                "not an image classifier: {} graph inputs ({}), one image input expected",
                inputs.len(),
                inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    use scion_onnx::pb::type_proto::Value;
    let float = matches!(
        input.r#type.as_ref().and_then(|t| t.value.as_ref()),
        Some(Value::TensorType(t)) if t.elem_type == scion_onnx::pb::tensor_proto::DataType::Float as i32
    );
    let shape = scion_onnx::graph::value_shape(input).unwrap_or_default();
    if !float || shape.len() != 4 {
        return Err(unusable(
            path,
            format!(
                "not an image classifier: input '{}' is not a 4-D float tensor",
                input.name
            ),
        ));
    }
    Ok((input.name.clone(), shape))
}

fn read_labels(path: &Path) -> Result<Vec<String>, ImportError> {
    crate::model::read_labels(path).map_err(|e| match e {
        crate::model::ModelError::Contract { message, .. } => {
            unusable(path, format!("--labels: {message}"))
        }
        other => unusable(path, format!("--labels: {other}")),
    })
}

/// Import `source`: normalise, find features, attach a card, check on the engines. Returns
/// the model to write; nothing is written here.
pub fn import_onnx(source: &Path, options: &ImportOptions) -> Result<ImportReport, ImportError> {
    let bytes = std::fs::read(source).map_err(|e| ImportError::Format {
        path: source.into(),
        source: scion_onnx::Error::Graph(e.to_string()),
    })?;
    let dir = source.parent().unwrap_or(Path::new("."));
    let graph = import_graph(&bytes, source, dir, options)?;
    let checks = check_engines(
        source,
        graph.source_bytes.as_deref().unwrap_or(&bytes),
        &graph.model,
        &graph.class_output,
        &graph.card,
        options,
    )?;
    let (blocks, untrainable) =
        describe_training(&graph.model, &graph.features, &graph.feature_output);
    Ok(ImportReport {
        changes: graph.changes,
        features: graph.features,
        feature_output: graph.feature_output,
        blocks,
        untrainable,
        checks,
        card: graph.card,
        model: graph.model,
    })
}

/// The graph half of an import, before any engine runs: what a foreign file's bytes meet
/// first, so it is what the fuzzer drives.
pub struct ImportedGraph {
    /// The normalised model with its card written.
    pub model: ModelProto,
    /// The card.
    pub card: ModelCard,
    /// One line per normalising step that changed something.
    pub changes: Vec<String>,
    /// The feature tensor found.
    pub features: Features,
    /// The card's feature output.
    pub feature_output: String,
    /// The class-score output.
    pub class_output: String,
    /// The source with external data inlined, when it had any (engines read from memory).
    pub source_bytes: Option<Vec<u8>>,
}

/// Most classes a model may have. ImageNet-21k has 21,843; each class gets a label in the
/// card, and a million of them made a 14 MB card whose parse alone took most of a second
/// (found by fuzzing), so the bound leaves room for the largest real heads and no more.
const MAX_CLASSES: usize = 100_000;

/// Decode, inline external data from `dir`, normalise, find the features and write the
/// card; `source` names the file in errors.
pub fn import_graph(
    bytes: &[u8],
    source: &Path,
    dir: &Path,
    options: &ImportOptions,
) -> Result<ImportedGraph, ImportError> {
    let format = |e: scion_onnx::Error| ImportError::Format {
        path: source.into(),
        source: e,
    };
    let mut model = scion_onnx::io::decode(bytes).map_err(format)?;
    let inlined = scion_onnx::normalize::inline_external_data(&mut model, dir).map_err(format)?;
    // ONNX Runtime reads the source from memory, where external files cannot be found.
    let source_bytes = (inlined > 0).then(|| scion_onnx::io::encode(&model));
    let source_record = serde_json::json!({
        "producer": format!("{} {}", model.producer_name, model.producer_version).trim(),
        "opset": scion_onnx::infer::opset(&model),
        "ir_version": model.ir_version,
    });
    scion_onnx::normalize::check_opset(&model).map_err(format)?;
    let made_constant = Patch::InitializersAsConstants
        .apply_with_report(&mut model)
        .map_err(format)?;
    let (input, shape) = image_input(&model, source)?;
    let layout = options.preset.layout();
    let (h_axis, w_axis) = if layout == Layout::Nhwc {
        (1, 2)
    } else {
        (2, 3)
    };
    let channel_axis = if layout == Layout::Nhwc { 3 } else { 1 };
    if let Some(c) = shape[channel_axis].filter(|&c| c != 3) {
        let hint = if layout == Layout::Nchw && shape[3] == Some(3) {
            " (it looks NHWC: use --preset tf)"
        } else {
            ""
        };
        return Err(unusable(
            source,
            format!(
                "input '{input}' has {c} channels where the {} preset feeds 3{hint}",
                options.preset.name()
            ),
        ));
    }
    let size = match (options.contract.input_size, shape[h_axis], shape[w_axis]) {
        (Some(s), _, _) => s as i64,
        (None, Some(h), Some(w)) if h == w => h,
        (None, Some(h), Some(w)) => {
            return Err(unusable(
                source,
                format!(
                    "input '{input}' is {h}x{w}; scion's contract is square; give --input-size"
                ),
            ));
        }
        _ => {
            return Err(unusable(
                source,
                format!(
                    "input '{input}' has a dynamic height or width; give --input-size (e.g. --input-size 224)"
                ),
            ));
        }
    };
    let dims = if layout == Layout::Nhwc {
        vec![1, size, size, 3]
    } else {
        vec![1, 3, size, size]
    };
    let mut changes: Vec<String> = made_constant.into_iter().collect();
    changes.extend(scion_onnx::normalize::normalize(&mut model, Some(dims)).map_err(format)?);
    let graph = model.graph.as_ref().expect("normalised");
    let class_output = graph.output[0].name.clone();

    let facts = scion_onnx::infer::infer(&model).map_err(format)?;
    let classes = facts
        .shape(&class_output)
        .and_then(|s| s.last().copied())
        .unwrap_or(0);
    // A class count from a shape is the model's word; labels are made for each, so it is
    // bounded before anything is allocated (found by fuzzing: a dimension of 2^40).
    let classes = usize::try_from(classes)
        .ok()
        .filter(|&n| (1..=MAX_CLASSES).contains(&n))
        .ok_or_else(|| {
            unusable(
                source,
                format!(
                    "output '{class_output}' has {classes} classes; a classifier has 1 to \
                     {MAX_CLASSES}"
                ),
            )
        })?;
    let features = match &options.feature_tensor {
        Some(t) => {
            let shape = facts.shape(t).map(<[i64]>::to_vec).ok_or_else(|| {
                unusable(
                    source,
                    format!(
                        "--feature-tensor {t}: no such tensor; candidates: [{}]",
                        scion_onnx::features::candidates(graph, &facts, 12).join(", ")
                    ),
                )
            })?;
            Features {
                pooled: shape.len() == 4,
                tensor: t.clone(),
                shape,
                classifier: None,
                output: class_output.clone(),
            }
        }
        None => scion_onnx::features::find_in(graph, &facts).map_err(format)?,
    };
    // Outputs: the class scores, the logits before a final softmax, the features.
    let producers = scion_onnx::graph::producers(graph);
    let softmax_input = producers
        .get(class_output.as_str())
        .map(|&p| &graph.node[p])
        .filter(|n| n.op_type == "Softmax")
        .and_then(|n| n.input.first().cloned());
    let taken = |name: &str| {
        scion_onnx::graph::producers(model.graph.as_ref().expect("graph")).contains_key(name)
    };
    let feature_output = if features.pooled {
        let name = if taken("features") {
            "scion.features"
        } else {
            "features"
        }
        .to_string();
        Patch::PoolSpatial {
            tensor: features.tensor.clone(),
            output: name.clone(),
            keep_outputs: true,
        }
        .apply(&mut model)
        .map_err(format)?;
        changes.push(format!(
            "feature output '{name}': channel means of '{}' {:?}",
            features.tensor, features.shape
        ));
        name
    } else {
        Patch::AddOutput {
            tensor: features.tensor.clone(),
        }
        .apply(&mut model)
        .map_err(format)?;
        features.tensor.clone()
    };
    if let Some(logits) = &softmax_input {
        Patch::AddOutput {
            tensor: logits.clone(),
        }
        .apply(&mut model)
        .map_err(format)?;
    }
    Patch::TypedOutputs.apply(&mut model).map_err(format)?;
    let labels = match &options.labels {
        Labels::File(f) => read_labels(f)?,
        Labels::ImageNet => scion_onnx::import::imagenet_labels(),
        Labels::Default if classes == 1000 => scion_onnx::import::imagenet_labels(),
        Labels::Default => (0..classes).map(|i| format!("class {i}")).collect(),
    };
    if labels.len() != classes {
        return Err(unusable(
            source,
            format!(
                "--labels: {} labels, but output '{class_output}' has {classes} classes",
                labels.len()
            ),
        ));
    }
    let mut preprocessing = options.preset.contract(size as u32);
    options.contract.apply_to(&mut preprocessing);
    let name = options.name.clone().unwrap_or_else(|| {
        source
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    let card = ModelCard {
        version: CARD_VERSION,
        name,
        labels,
        preprocessing,
        tensors: TensorNames {
            input: input.clone(),
            features: Some(feature_output.clone()),
            logits: Some(
                softmax_input
                    .clone()
                    .unwrap_or_else(|| class_output.clone()),
            ),
            probs: softmax_input.as_ref().map(|_| class_output.clone()),
        },
        provenance: Provenance {
            created_by: format!("scion-edge import onnx {}", env!("CARGO_PKG_VERSION")),
            source: source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source_sha256: Some(scion_onnx::import::sha256_hex(bytes)),
            training: Some(serde_json::json!({
                "preset": options.preset.name(),
                "producer": source_record["producer"],
                "opset": source_record["opset"],
                "ir_version": source_record["ir_version"],
                "feature_tensor": features.tensor,
            })),
            ..Default::default()
        },
        calibration: None,
        unknown: None,
    };
    card.validate().map_err(format)?;
    card.check_against(&model).map_err(format)?;
    card.write_to(&mut model);
    Ok(ImportedGraph {
        model,
        card,
        changes,
        features,
        feature_output,
        class_output,
        source_bytes,
    })
}

/// Inputs for the check: seeded values in the range a normalised image has.
fn check_inputs(shape: &[usize], n: usize) -> Vec<f32> {
    let mut rng = crate::rng::SplitMix64::new(0x1A4C_0DE5);
    let len: usize = shape.iter().product::<usize>() * n;
    (0..len)
        .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0)
        .collect()
}

fn check_engines(
    source: &Path,
    source_bytes: &[u8],
    model: &ModelProto,
    output: &str,
    card: &ModelCard,
    options: &ImportOptions,
) -> Result<Vec<EngineCheck>, ImportError> {
    let check_err = |message: String| ImportError::Check {
        path: source.into(),
        message,
    };
    const N: usize = 4;
    let one = card.preprocessing.input_shape(1);
    let data = check_inputs(&one, N);
    let per_image: usize = one.iter().product();
    // The source on ONNX Runtime, one image at a time (model-zoo files have batch 1). The
    // normalisation keeps the input's name; the session is dropped before the others start.
    let outputs = [output.to_string()];
    let spec = ModelSpec {
        bytes: source_bytes,
        input: &card.tensors.input,
        outputs: &outputs,
        input_shape: one.clone(),
    };
    let mut reference_session = engine::prepare(EngineKind::OrtCpu, &spec, &options.engine)
        .map_err(|e| check_err(format!("the source model on ONNX Runtime: {e}")))?;
    let mut reference = Vec::new();
    for i in 0..N {
        let out = reference_session
            .run(&engine::Tensor {
                shape: one.clone(),
                data: data[i * per_image..(i + 1) * per_image].to_vec(),
            })
            .map_err(|e| check_err(format!("the source model on ONNX Runtime: {e}")))?;
        let t = out
            .get(output)
            .ok_or_else(|| check_err(format!("the source gave no '{output}'")))?;
        reference.extend_from_slice(&t.data);
    }
    drop(reference_session);
    let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let bytes = scion_onnx::io::encode(model);
    let mut checks = Vec::new();
    for kind in [EngineKind::OrtCpu, EngineKind::Tract] {
        let spec = ModelSpec {
            bytes: &bytes,
            input: &card.tensors.input,
            outputs: &outputs,
            input_shape: one.clone(),
        };
        let mut session = engine::prepare(kind, &spec, &options.engine).map_err(|e| e.to_string());
        for batch in [1, N] {
            let max_diff = match session.as_mut() {
                Err(e) => Err(e.clone()),
                Ok(s) => run_batches(s.as_mut(), &one, &data, batch, N, output, &reference)
                    .map(|d| d / scale),
            };
            if let Ok(d) = max_diff
                && d > options.tolerance
            {
                return Err(check_err(format!(
                    "{kind} at batch {batch} differs from the source by {d:.2e} (relative), \
                     more than {:.0e}",
                    options.tolerance
                )));
            }
            checks.push(EngineCheck {
                engine: kind,
                batch,
                max_diff,
            });
        }
    }
    if checks
        .iter()
        .filter(|c| c.engine == EngineKind::OrtCpu)
        .any(|c| c.max_diff.is_err())
    {
        let why = checks
            .iter()
            .find_map(|c| c.max_diff.as_ref().err().cloned())
            .unwrap_or_default();
        return Err(check_err(format!(
            "ONNX Runtime cannot run the normalised model: {why}"
        )));
    }
    Ok(checks)
}

fn run_batches(
    session: &mut dyn engine::Session,
    one: &[usize],
    data: &[f32],
    batch: usize,
    n: usize,
    output: &str,
    reference: &[f32],
) -> Result<f32, String> {
    let per_image: usize = one.iter().product();
    let mut got = Vec::with_capacity(reference.len());
    for start in (0..n).step_by(batch) {
        let mut shape = one.to_vec();
        shape[0] = batch;
        let out = session
            .run(&engine::Tensor {
                shape,
                data: data[start * per_image..(start + batch) * per_image].to_vec(),
            })
            .map_err(|e| e.to_string())?;
        got.extend_from_slice(
            &out.get(output)
                .ok_or_else(|| format!("no output '{output}'"))?
                .data,
        );
    }
    if got.len() != reference.len() {
        return Err(format!(
            "{} values instead of the source's {}",
            got.len(),
            reference.len()
        ));
    }
    Ok(got
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max))
}

/// The blocks `--unfreeze` counts, and the first node the interpreter cannot train
/// through.
fn describe_training(
    model: &ModelProto,
    features: &Features,
    feature_output: &str,
) -> (Vec<String>, Option<String>) {
    let graph = model.graph.as_ref().expect("graph");
    let until = if features.pooled {
        &features.tensor
    } else {
        feature_output
    };
    let blocks = scion_onnx::blocks::blocks(graph, until)
        .map(|b| b.into_iter().map(|b| b.name).collect())
        .unwrap_or_default();
    let (needed, _) = scion_onnx::graph::needed_for(graph, [until]);
    let untrainable = scion_onnx::graph::topological_order(graph)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| needed.contains(n))
        .map(|n| &graph.node[n])
        .find(|n| !scion_onnx::blocks::INTERPRETED_OPS.contains(&n.op_type.as_str()))
        .map(|n| {
            format!(
                "{} at node '{}'",
                n.op_type,
                scion_onnx::infer::display_name(n)
            )
        });
    (blocks, untrainable)
}
