//! Normalising a user's ONNX into the one kind of model scion works with: constants
//! folded, inference-only clean-up, unused parts dropped, a batch dimension that is
//! really dynamic. Each step is a [`Patch`](crate::patch::Patch); [`normalize`] applies
//! them in order and says what each changed.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::builder::{self, tensor_f32};
use crate::infer::{self, Const, Sym};
use crate::patch::Patch;
use crate::pb::{GraphProto, ModelProto, TensorProto, tensor_proto};
use crate::{Error, Result, graph};

/// The opsets of the default domain scion reads: what torch.onnx, the model zoo and
/// tf2onnx write.
pub const OPSETS: std::ops::RangeInclusive<i64> = 7..=21;

/// Refuse opsets and operator domains outside what the engines and the normalisation
/// understand.
pub fn check_opset(model: &ModelProto) -> Result<()> {
    let version = infer::opset(model);
    if !OPSETS.contains(&version) {
        return Err(Error::Graph(format!(
            "opset {version} is not supported (scion reads opsets {}-{}); re-export the model \
             with an opset in that range",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    if let Some(graph) = &model.graph
        && let Some(n) = graph
            .node
            .iter()
            .find(|n| !n.domain.is_empty() && n.domain != "ai.onnx")
    {
        return Err(Error::Graph(format!(
            "node '{}' ({}) is in domain '{}', which neither engine is guaranteed to run; \
             export with standard ONNX operators",
            infer::display_name(n),
            n.op_type,
            n.domain
        )));
    }
    Ok(())
}

/// Initializers that are also listed as graph inputs (IR 3 exports) become plain
/// constants: an image model is never fed its weights. The IR version rises to 4, the
/// first where an initializer need not be an input.
pub(crate) fn initializers_as_constants(model: &mut ModelProto) -> Option<String> {
    let graph = model.graph.as_mut()?;
    let names: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let before = graph.input.len();
    graph.input.retain(|i| !names.contains(&i.name));
    let removed = before - graph.input.len();
    let old_ir = model.ir_version;
    model.ir_version = model.ir_version.max(4);
    let mut parts = Vec::new();
    if removed > 0 {
        parts.push(format!(
            "{removed} initializers listed as graph inputs made constants"
        ));
    }
    if old_ir != model.ir_version {
        parts.push(format!("IR version {old_ir} → {}", model.ir_version));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The initializer for a folded value; `None` when the value does not fill its shape
/// (inference on a malformed graph can say so: found by fuzzing, 27 values for a shape
/// of 81), so that node is left unfolded rather than written as a corrupt tensor.
fn to_tensor(name: &str, shape: &[i64], value: &Const) -> Option<TensorProto> {
    let len = match value {
        Const::Float(v) => v.len(),
        Const::Int(v) => v.len(),
    };
    let elements = shape
        .iter()
        .try_fold(1i64, |n, &d| if d < 0 { None } else { n.checked_mul(d) })?;
    if usize::try_from(elements).ok() != Some(len) {
        return None;
    }
    match value {
        Const::Float(v) => Some(tensor_f32(name, shape, v.clone())),
        Const::Int(_) => Some(builder::tensor_i64(name, shape, &value.known_ints()?)),
    }
}

/// Replace every node whose outputs are known before any image is seen (Constant,
/// ConstantOfShape, Shape→Gather→Unsqueeze→Concat chains, Cast, arithmetic on constants)
/// by initializers; a Reshape target that holds the batch at position 0 becomes `[0, …]`.
pub(crate) fn fold_constants(model: &mut ModelProto) -> Result<Option<String>> {
    let facts = infer::infer(model)?;
    let graph = model.graph.as_mut().expect("checked by infer");
    let outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let mut folded: BTreeMap<String, usize> = BTreeMap::new();
    let mut new_inits = Vec::new();
    let mut keep = Vec::with_capacity(graph.node.len());
    let mut rewritten = 0;
    for mut node in std::mem::take(&mut graph.node) {
        let foldable = !node.output.is_empty()
            && node.output.iter().all(|o| {
                !outputs.contains(o)
                    && facts.get(o).is_some_and(|f| {
                        f.constant
                            && f.value.as_ref().is_some_and(
                                |v| !matches!(v, Const::Int(x) if x.contains(&Sym::Batch)),
                            )
                    })
            });
        let tensors: Option<Vec<TensorProto>> = foldable
            .then(|| {
                node.output
                    .iter()
                    .map(|o| {
                        let f = facts.get(o)?;
                        to_tensor(o, &f.shape, f.value.as_ref()?)
                    })
                    .collect()
            })
            .flatten();
        if let Some(tensors) = tensors {
            new_inits.extend(tensors);
            *folded.entry(node.op_type.clone()).or_default() += 1;
            continue;
        }
        if node.op_type == "Reshape"
            && let Some(target) = node.input.get(1).and_then(|t| facts.get(t))
            && !graph
                .initializer
                .iter()
                .any(|t| Some(&t.name) == node.input.get(1))
            && let Some(Const::Int(values)) = &target.value
            && values.first() == Some(&Sym::Batch)
            && values[1..].iter().all(|v| matches!(v, Sym::Known(_)))
        {
            let mut known = vec![0i64];
            known.extend(values[1..].iter().map(|v| match v {
                Sym::Known(k) => *k,
                Sym::Batch => unreachable!("checked"),
            }));
            let name = format!("{}.batch_agnostic", node.input[1]);
            new_inits.push(builder::tensor_i64(&name, &[known.len() as i64], &known));
            node.input[1] = name;
            rewritten += 1;
        }
        keep.push(node);
    }
    graph.node = keep;
    let mut seen: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    for t in new_inits {
        if seen.insert(t.name.clone()) {
            graph.initializer.push(t);
        }
    }
    let total: usize = folded.values().sum();
    let mut parts = Vec::new();
    if total > 0 {
        parts.push(format!(
            "{total} constant nodes folded ({})",
            folded
                .iter()
                .map(|(op, n)| format!("{op} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if rewritten > 0 {
        parts.push(format!(
            "{rewritten} Reshape targets computed from the batch size made constant [0, …]"
        ));
    }
    Ok((!parts.is_empty()).then(|| parts.join("; ")))
}

/// Dropout and Identity do nothing at inference: their readers read the input instead.
pub(crate) fn remove_inference_no_ops(graph: &mut GraphProto) -> Option<String> {
    let outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let mut alias: HashMap<String, String> = HashMap::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut keep = Vec::with_capacity(graph.node.len());
    for mut node in std::mem::take(&mut graph.node) {
        for i in node.input.iter_mut() {
            if let Some(a) = alias.get(i) {
                *i = a.clone();
            }
        }
        let no_op = matches!(node.op_type.as_str(), "Dropout" | "Identity")
            && !node.input.is_empty()
            && !node.output.is_empty()
            && !outputs.contains(&node.output[0]);
        if no_op {
            alias.insert(node.output[0].clone(), node.input[0].clone());
            *counts.entry(node.op_type.clone()).or_default() += 1;
            continue;
        }
        if node.op_type == "Dropout" {
            // A graph output: keep the name, drop the randomness.
            node.op_type = "Identity".into();
            node.input.truncate(1);
            node.output.truncate(1);
            node.attribute.clear();
            *counts.entry("Dropout".into()).or_default() += 1;
        }
        keep.push(node);
    }
    graph.node = keep;
    let total: usize = counts.values().sum();
    (total > 0).then(|| {
        format!(
            "removed for inference: {}",
            counts
                .iter()
                .map(|(op, n)| format!("{n} {op}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Drop nodes, initializers, inputs and value infos that no graph output needs.
pub(crate) fn prune_unused(graph: &mut GraphProto) -> Option<String> {
    let outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let (needed_nodes, needed) = graph::needed_for(graph, outputs.iter().map(String::as_str));
    let (nodes, inits) = (graph.node.len(), graph.initializer.len());
    let mut index = 0;
    graph.node.retain(|_| {
        index += 1;
        needed_nodes.contains(&(index - 1))
    });
    graph.initializer.retain(|t| needed.contains(&t.name));
    let inputs = graph.input.len();
    let images: Vec<String> = graph.input.iter().map(|i| i.name.clone()).collect();
    // The image input stays even if (absurdly) unused, so the model keeps its interface.
    graph
        .input
        .retain(|i| needed.contains(&i.name) || images.first() == Some(&i.name));
    graph.value_info.retain(|v| needed.contains(&v.name));
    let (dn, di, dx) = (
        nodes - graph.node.len(),
        inits - graph.initializer.len(),
        inputs - graph.input.len(),
    );
    (dn + di + dx > 0)
        .then(|| format!("dropped as unused: {dn} nodes, {di} initializers, {dx} inputs"))
}

/// Give the image input a fixed shape (batch 1), for models exported with a symbolic
/// height and width.
pub(crate) fn fix_input_shape(graph: &mut GraphProto, dims: &[i64]) -> Result<Option<String>> {
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let input = graph
        .input
        .iter_mut()
        .find(|i| !inits.contains(i.name.as_str()))
        .ok_or_else(|| Error::Graph("the graph has no image input".into()))?;
    let old = graph::value_shape(input);
    if let Some(old) = &old
        && old.len() != dims.len()
    {
        return Err(Error::Graph(format!(
            "input '{}' has rank {}, not {}",
            input.name,
            old.len(),
            dims.len()
        )));
    }
    let conflict = old.as_ref().is_some_and(|old| {
        old.iter()
            .zip(dims)
            .skip(1)
            .any(|(o, d)| o.is_some_and(|o| o != *d))
    });
    if conflict {
        return Err(Error::Graph(format!(
            "input '{}' is fixed at {:?}; it cannot take {:?}",
            input.name,
            old.unwrap_or_default(),
            &dims[1..]
        )));
    }
    if old
        .as_ref()
        .is_some_and(|o| o.iter().skip(1).all(Option::is_some))
    {
        return Ok(None);
    }
    let batch: builder::Dim = Err("batch");
    let shape: Vec<builder::Dim> = std::iter::once(batch)
        .chain(dims[1..].iter().map(|&d| Ok(d)))
        .collect();
    *input = builder::value_info_f32(&input.name, &shape);
    Ok(Some(format!(
        "input '{}' given the size {:?}",
        input.name,
        &dims[1..]
    )))
}

/// Fixed Reshape targets whose first entry is the batch of a batch-1 export (`[1, N]`,
/// `[1, g, c, h, w]`) become `[0, …]`, so any batch runs. A target where the batch cannot
/// be proven (the rest does not match the input's non-batch part) is an error naming
/// the node.
pub(crate) fn batch_agnostic_reshapes(model: &mut ModelProto) -> Result<Option<String>> {
    let facts = infer::infer(model)?;
    let graph = model.graph.as_mut().expect("checked by infer");
    let mut rewritten = Vec::new();
    let mut new_inits = Vec::new();
    for node in graph.node.iter_mut().filter(|n| n.op_type == "Reshape") {
        let Some(x) = node.input.first().and_then(|t| facts.get(t)) else {
            continue;
        };
        if !x.batched || x.constant {
            continue;
        }
        let Some(target_name) = node.input.get(1).cloned() else {
            continue;
        };
        let Some(target) = facts
            .get(&target_name)
            .and_then(|f| f.value.as_ref())
            .and_then(Const::known_ints)
        else {
            continue;
        };
        let allow_zero = infer::attr_i(node, "allowzero", 0) != 0;
        let rest_in: i64 = x.shape.iter().skip(1).product();
        let out = facts.shape(&node.output[0]).unwrap_or_default();
        let rest_out: i64 = out.iter().skip(1).product();
        match target.first() {
            Some(0) if !allow_zero => continue,
            Some(-1) if rest_in == rest_out => continue,
            Some(1) if rest_in == rest_out && target.iter().skip(1).all(|&d| d != 0) => {
                let mut fixed = target.clone();
                fixed[0] = 0;
                let name = format!("{target_name}.batch_agnostic");
                new_inits.push(builder::tensor_i64(&name, &[fixed.len() as i64], &fixed));
                rewritten.push(format!("{target:?} → {fixed:?}"));
                node.input[1] = name;
            }
            _ => {
                return Err(Error::Graph(format!(
                    "node '{}' (Reshape): the target {target:?} of the input {:?} does not keep \
                     the batch first, so the batch cannot be made dynamic; re-export with \
                     x.flatten(1) or a dynamic batch",
                    infer::display_name(node),
                    x.shape
                )));
            }
        }
    }
    let mut seen: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    for t in new_inits {
        if seen.insert(t.name.clone()) {
            graph.initializer.push(t);
        }
    }
    Ok((!rewritten.is_empty()).then(|| {
        format!(
            "{} fixed-batch Reshape targets made batch-agnostic ({})",
            rewritten.len(),
            rewritten.join(", ")
        )
    }))
}

/// Write the graph outputs' shapes (batch symbolic) from inference, so the card's checks
/// and every reader see the class count.
pub(crate) fn typed_outputs(model: &mut ModelProto) -> Result<Option<String>> {
    let facts = infer::infer(model)?;
    let graph = model.graph.as_mut().expect("checked by infer");
    for o in graph.output.iter_mut() {
        if let Some(f) = facts.get(&o.name) {
            let dims: Vec<builder::Dim> = f
                .shape
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if i == 0 && f.batched {
                        Err("batch")
                    } else {
                        Ok(d)
                    }
                })
                .collect();
            *o = builder::value_info_f32(&o.name, &dims);
        }
    }
    Ok(None)
}

/// Inline tensors stored in external data files (models over 2 GiB, or exported with
/// `save_as_external_data`), read from `dir`. A missing file is an error naming it, and so
/// is a location outside `dir` (absolute, `..`, or a link out of it): a model must not make
/// the importer read `/etc/shadow` into its weights.
pub fn inline_external_data(model: &mut ModelProto, dir: &std::path::Path) -> Result<usize> {
    let Some(graph) = model.graph.as_mut() else {
        return Ok(0);
    };
    let mut count = 0;
    for t in graph
        .initializer
        .iter_mut()
        .filter(|t| t.data_location == tensor_proto::DataLocation::External as i32)
    {
        let get = |k: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == k)
                .map(|e| e.value.clone())
        };
        let location = get("location").ok_or_else(|| {
            Error::Graph(format!(
                "initializer '{}': external data without a location",
                t.name
            ))
        })?;
        let offset: u64 = get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
        let length: Option<u64> = get("length").and_then(|v| v.parse().ok());
        let path = external_path(dir, &location).map_err(|why| {
            Error::Graph(format!(
                "initializer '{}': external data location '{location}' {why}",
                t.name
            ))
        })?;
        let bytes = std::fs::read(&path).map_err(|e| {
            Error::Graph(format!(
                "initializer '{}': external data file {}: {e}",
                t.name,
                path.display()
            ))
        })?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = match length {
            None => Some(bytes.len()),
            Some(l) => usize::try_from(l).ok().and_then(|l| start.checked_add(l)),
        }
        .unwrap_or(usize::MAX);
        if end > bytes.len() || start > end {
            return Err(Error::Graph(format!(
                "initializer '{}': {} holds {} bytes, not {}..{end}",
                t.name,
                path.display(),
                bytes.len(),
                start
            )));
        }
        t.raw_data = bytes[start..end].to_vec();
        t.data_location = tensor_proto::DataLocation::Default as i32;
        t.external_data.clear();
        count += 1;
    }
    Ok(count)
}

/// `location` under `dir`, refused when it is absolute, climbs with `..`, or resolves (through
/// links) outside `dir`.
fn external_path(
    dir: &std::path::Path,
    location: &str,
) -> std::result::Result<std::path::PathBuf, String> {
    use std::path::Component;
    let relative = std::path::Path::new(location);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err("is not a plain relative path inside the model's folder".into());
    }
    let path = dir.join(relative);
    if let (Ok(real), Ok(root)) = (path.canonicalize(), dir.canonicalize())
        && !real.starts_with(&root)
    {
        return Err(format!(
            "leads out of the model's folder (to {})",
            real.display()
        ));
    }
    Ok(path)
}

/// The normalising patches, in the order [`normalize`] applies them.
pub fn patches(input_dims: Option<Vec<i64>>) -> Vec<Patch> {
    let mut p = vec![Patch::InitializersAsConstants];
    if let Some(dims) = input_dims {
        p.push(Patch::FixInputShape { dims });
    }
    p.extend([
        Patch::FoldConstants,
        Patch::RemoveInferenceNoOps,
        Patch::PruneUnused,
        Patch::BatchAgnosticReshapes,
        Patch::DynamicBatch {
            symbol: "batch".into(),
        },
        Patch::TypedOutputs,
    ]);
    p
}

/// Normalise `model` in place; returns one line per step that changed something.
pub fn normalize(model: &mut ModelProto, input_dims: Option<Vec<i64>>) -> Result<Vec<String>> {
    check_opset(model)?;
    let mut changes = Vec::new();
    for patch in patches(input_dims) {
        if let Some(change) = patch.apply_with_report(model)? {
            changes.push(change);
        }
    }
    Ok(changes)
}
