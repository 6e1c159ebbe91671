//! Graph edits as patches applied to a model (the tract way): each patch is a value that
//! says what it does, so a pipeline of edits can be logged, tested and replayed.

use std::collections::HashSet;

use crate::pb::{GraphProto, ModelProto, ValueInfoProto, tensor_shape_proto, type_proto};
use crate::{Error, Result, graph};

/// One edit of a model's graph.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// Keep only what is needed to compute `outputs`, which become the graph outputs.
    CutAt {
        /// Tensors that become the outputs, in order.
        outputs: Vec<String>,
    },
    /// Reduce a `[batch, C, H, W]` tensor to its channel means `[batch, C]` (global average
    /// pooling, then flatten) and make that the only graph output: what a conv layer's
    /// "units" are when they are ranked, searched or embedded.
    PoolSpatial {
        /// The spatial tensor.
        tensor: String,
        /// Name of the pooled output.
        output: String,
        /// Keep the existing outputs and add the pooled one after them (an imported
        /// model's feature output), instead of making it the only output.
        keep_outputs: bool,
    },
    /// Expose an intermediate tensor as an extra graph output.
    AddOutput {
        /// The tensor to expose.
        tensor: String,
    },
    /// Initializers also listed as graph inputs (IR 3 exports) become plain constants.
    InitializersAsConstants,
    /// Give the image input this shape (batch first, as 1), for symbolic heights/widths.
    FixInputShape {
        /// The full shape, e.g. `[1, 3, 224, 224]`.
        dims: Vec<i64>,
    },
    /// Replace nodes computable before any image is seen by initializers; Reshape
    /// targets computed from the batch size become `[0, …]`.
    FoldConstants,
    /// Remove Dropout and Identity, which do nothing at inference.
    RemoveInferenceNoOps,
    /// Drop nodes, initializers and inputs that no output needs.
    PruneUnused,
    /// Rewrite fixed `[1, …]` Reshape targets of batch-1 exports to `[0, …]`; an error
    /// where the batch cannot be proven.
    BatchAgnosticReshapes,
    /// Write the graph outputs' inferred shapes (batch symbolic).
    TypedOutputs,
    /// Make the first dimension of every input and output symbolic, so any batch size runs.
    DynamicBatch {
        /// Name of the symbolic dimension, e.g. `batch`.
        symbol: String,
    },
    /// Rename a graph input and every reference to it.
    RenameInput {
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// Rename a graph output and every reference to it.
    RenameOutput {
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// Replace float initializers' values by name (fine-tuned weights written back); each
    /// must exist and keep its element count.
    SetInitializers {
        /// `(name, values)` pairs.
        values: Vec<(String, Vec<f32>)>,
    },
    /// Replace the classifier: cut the graph at `features`, then add dense `layers`
    /// (ReLU between them) and a Softmax. Outputs become `logits`, `probs`, `features`.
    GraftHead {
        /// The feature tensor the head reads (`[batch, in]`).
        features: String,
        /// Dense layers, first to last.
        layers: Vec<Dense>,
    },
    /// Static INT8 in the QDQ format: each Conv and Gemm gets its activation quantized per
    /// tensor (symmetric, at the calibrated `|x|` threshold given for it) and its weight per
    /// output channel. See [`crate::quantize`].
    QuantizeQdq {
        /// `(activation, threshold)` for every tensor of
        /// [`crate::quantize::activation_tensors`].
        thresholds: Vec<(String, f32)>,
        /// The outputs whose computation is quantized (the class scores); nodes only other
        /// outputs need stay float. Empty: every Conv and Gemm.
        outputs: Vec<String>,
    },
    /// Add an output of distances from `features` (`[batch, dim]`) to class prototypes in
    /// standardised feature space: what the card's "unknown" rule reads.
    PrototypeDistance {
        /// The feature tensor.
        features: String,
        /// The prototypes and the standardisation.
        prototypes: crate::distance::Prototypes,
        /// Name of the new `[batch, classes]` output.
        output: String,
    },
}

/// A dense layer `y = x W^T + b`, as trained by the head trainer.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// Row-major `[out, in]` weights.
    pub weight: Vec<f32>,
    /// `[out]` bias.
    pub bias: Vec<f32>,
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
}

impl Patch {
    /// Apply this patch to `model`. On error the model is left unchanged.
    pub fn apply(&self, model: &mut ModelProto) -> Result<()> {
        self.apply_with_report(model).map(|_| ())
    }

    /// Apply this patch, and say what it changed (`None`: nothing worth saying).
    pub fn apply_with_report(&self, model: &mut ModelProto) -> Result<Option<String>> {
        use crate::normalize as n;
        if model.graph.is_none() {
            return Err(Error::Graph("the model has no graph".into()));
        }
        let mut edited_model = model.clone();
        let edited = edited_model.graph.as_mut().expect("checked");
        let report = match self {
            Patch::CutAt { outputs } => cut_at(edited, outputs).map(|_| None)?,
            Patch::AddOutput { tensor } => add_output(edited, tensor).map(|_| None)?,
            Patch::PoolSpatial {
                tensor,
                output,
                keep_outputs,
            } => pool_spatial(edited, tensor, output, *keep_outputs).map(|_| None)?,
            Patch::DynamicBatch { symbol } => dynamic_batch(edited, symbol),
            Patch::RenameInput { from, to } => {
                require(edited.input.iter().any(|i| &i.name == from), "input", from)?;
                rename_tensor(edited, from, to).map(|_| None)?
            }
            Patch::RenameOutput { from, to } => {
                require(
                    edited.output.iter().any(|o| &o.name == from),
                    "output",
                    from,
                )?;
                rename_tensor(edited, from, to).map(|_| None)?
            }
            Patch::GraftHead { features, layers } => {
                graft_head(edited, features, layers).map(|_| None)?
            }
            Patch::SetInitializers { values } => set_initializers(edited, values).map(|_| None)?,
            Patch::PrototypeDistance {
                features,
                prototypes,
                output,
            } => crate::distance::add_distances(edited, features, prototypes, output)
                .map(|_| None)?,
            Patch::QuantizeQdq {
                thresholds,
                outputs,
            } => {
                let weights =
                    crate::quantize::quantize_qdq(&mut edited_model, thresholds, outputs)?;
                Some(format!(
                    "quantized {} activations and {} weights to INT8 (QDQ)",
                    thresholds.len(),
                    weights.len()
                ))
            }
            Patch::InitializersAsConstants => n::initializers_as_constants(&mut edited_model),
            Patch::FixInputShape { dims } => n::fix_input_shape(edited, dims)?,
            Patch::RemoveInferenceNoOps => n::remove_inference_no_ops(edited),
            Patch::PruneUnused => n::prune_unused(edited),
            Patch::FoldConstants => n::fold_constants(&mut edited_model)?,
            Patch::BatchAgnosticReshapes => n::batch_agnostic_reshapes(&mut edited_model)?,
            Patch::TypedOutputs => n::typed_outputs(&mut edited_model)?,
        };
        graph::topological_order(edited_model.graph.as_ref().expect("checked"))?;
        *model = edited_model;
        Ok(report)
    }
}

/// Apply patches in order; stops at the first failure.
pub fn apply_all(model: &mut ModelProto, patches: &[Patch]) -> Result<()> {
    patches.iter().try_for_each(|p| p.apply(model))
}

fn set_initializers(graph: &mut GraphProto, values: &[(String, Vec<f32>)]) -> Result<()> {
    for (name, v) in values {
        let t = graph
            .initializer
            .iter_mut()
            .find(|t| &t.name == name)
            .ok_or_else(|| Error::Graph(format!("no initializer named '{name}'")))?;
        let count = crate::builder::tensor_values_f32(t)
            .ok_or_else(|| Error::Graph(format!("initializer '{name}' is not f32")))?
            .len();
        if count != v.len() {
            return Err(Error::Graph(format!(
                "initializer '{name}' holds {count} values, not {}",
                v.len()
            )));
        }
        *t = crate::builder::tensor_f32(name, &t.dims.clone(), v.clone());
    }
    Ok(())
}

fn require(found: bool, what: &str, name: &str) -> Result<()> {
    if found {
        Ok(())
    } else {
        Err(Error::Graph(format!(
            "the graph has no {what} named '{name}'"
        )))
    }
}

fn known_value_info(graph: &GraphProto, tensor: &str) -> Option<ValueInfoProto> {
    graph
        .output
        .iter()
        .chain(graph.value_info.iter())
        .chain(graph.input.iter())
        .find(|v| v.name == tensor)
        .cloned()
}

fn untyped_f32(tensor: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: tensor.into(),
        r#type: Some(crate::pb::TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: crate::pb::tensor_proto::DataType::Float as i32,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn cut_at(graph: &mut GraphProto, outputs: &[String]) -> Result<()> {
    if outputs.is_empty() {
        return Err(Error::Graph("cut: no output tensors given".into()));
    }
    let producer = graph::producers(graph);
    let sources = graph::source_tensors(graph);
    for o in outputs {
        if !producer.contains_key(o.as_str()) && !sources.contains(o.as_str()) {
            return Err(Error::Graph(format!(
                "cut: no tensor named '{o}' in the graph; candidates: [{}]",
                graph::similar_tensors(graph, o, 12).join(", ")
            )));
        }
    }
    let (needed_nodes, needed_tensors) =
        graph::needed_for(graph, outputs.iter().map(String::as_str));
    let new_outputs: Vec<ValueInfoProto> = outputs
        .iter()
        .map(|o| known_value_info(graph, o).unwrap_or_else(|| untyped_f32(o)))
        .collect();
    let mut index = 0;
    graph.node.retain(|_| {
        index += 1;
        needed_nodes.contains(&(index - 1))
    });
    graph
        .initializer
        .retain(|t| needed_tensors.contains(&t.name));
    graph.input.retain(|i| needed_tensors.contains(&i.name));
    graph
        .value_info
        .retain(|v| needed_tensors.contains(&v.name));
    graph.output = new_outputs;
    Ok(())
}

/// Names the grafted head uses for its tensors; a backbone using them is refused.
const HEAD_OUTPUTS: [&str; 2] = ["logits", "probs"];

fn graft_head(graph: &mut GraphProto, features: &str, layers: &[Dense]) -> Result<()> {
    use crate::builder;
    if layers.is_empty() {
        return Err(Error::Graph("graft: the head has no layers".into()));
    }
    for pair in layers.windows(2) {
        if pair[0].outputs != pair[1].inputs {
            return Err(Error::Graph(format!(
                "graft: a layer of {} outputs feeds a layer of {} inputs",
                pair[0].outputs, pair[1].inputs
            )));
        }
    }
    for (i, l) in layers.iter().enumerate() {
        if l.weight.len() != l.inputs * l.outputs || l.bias.len() != l.outputs {
            return Err(Error::Graph(format!(
                "graft: layer {i} has weights of the wrong size"
            )));
        }
    }
    cut_at(graph, &[features.to_string()])?;
    let taken = |n: &str| {
        graph::producers(graph).contains_key(n) || graph::source_tensors(graph).contains(n)
    };
    if let Some(n) = HEAD_OUTPUTS.iter().find(|n| taken(n)) {
        return Err(Error::Graph(format!(
            "graft: the backbone already has a tensor '{n}'"
        )));
    }
    let mut x = features.to_string();
    for (i, layer) in layers.iter().enumerate() {
        let last = i + 1 == layers.len();
        let (w, b) = (format!("head.{i}.weight"), format!("head.{i}.bias"));
        graph.initializer.push(builder::tensor_f32(
            &w,
            &[layer.outputs as i64, layer.inputs as i64],
            layer.weight.clone(),
        ));
        graph.initializer.push(builder::tensor_f32(
            &b,
            &[layer.outputs as i64],
            layer.bias.clone(),
        ));
        let out = if last {
            "logits".to_string()
        } else {
            format!("head.{i}.linear")
        };
        graph.node.push(builder::node(
            "Gemm",
            &format!("head.{i}"),
            &[&x, &w, &b],
            &[&out],
            vec![builder::attr_int("transB", 1)],
        ));
        x = out;
        if !last {
            let relu = format!("head.{i}.relu");
            graph
                .node
                .push(builder::node("Relu", &relu, &[&x], &[&relu], vec![]));
            x = relu;
        }
    }
    graph.node.push(builder::node(
        "Softmax",
        "probs",
        &["logits"],
        &["probs"],
        vec![builder::attr_int("axis", 1)],
    ));
    let classes = layers.last().map_or(0, |l| l.outputs) as i64;
    let features_info = graph
        .output
        .first()
        .cloned()
        .unwrap_or_else(|| untyped_f32(features));
    let batch: builder::Dim = Err("batch");
    graph.output = vec![
        builder::value_info_f32("logits", &[batch, Ok(classes)]),
        builder::value_info_f32("probs", &[batch, Ok(classes)]),
        features_info,
    ];
    Ok(())
}

fn pool_spatial(
    graph: &mut GraphProto,
    tensor: &str,
    output: &str,
    keep_outputs: bool,
) -> Result<()> {
    use crate::builder::{attr_int, node};
    let exists = graph::producers(graph).contains_key(tensor)
        || graph::source_tensors(graph).contains(tensor);
    require(exists, "tensor", tensor)?;
    let pooled = format!("{output}/pooled");
    graph.node.push(node(
        "GlobalAveragePool",
        &format!("{output}/pool"),
        &[tensor],
        &[&pooled],
        vec![],
    ));
    graph.node.push(node(
        "Flatten",
        &format!("{output}/flatten"),
        &[&pooled],
        &[output],
        vec![attr_int("axis", 1)],
    ));
    if keep_outputs {
        graph.output.push(untyped_f32(output));
    } else {
        graph.output = vec![untyped_f32(output)];
    }
    Ok(())
}

fn add_output(graph: &mut GraphProto, tensor: &str) -> Result<()> {
    if graph.output.iter().any(|o| o.name == tensor) {
        return Ok(());
    }
    let exists = graph::producers(graph).contains_key(tensor)
        || graph::source_tensors(graph).contains(tensor);
    require(exists, "tensor", tensor)?;
    let info = graph
        .value_info
        .iter()
        .find(|v| v.name == tensor)
        .cloned()
        .unwrap_or_else(|| untyped_f32(tensor));
    graph.output.push(info);
    Ok(())
}

fn dynamic_batch(graph: &mut GraphProto, symbol: &str) -> Option<String> {
    use tensor_shape_proto::dimension::Value;
    let initializers: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let mut fixed = 0;
    let mut set_first_dim = |v: &mut ValueInfoProto| {
        if let Some(type_proto::Value::TensorType(t)) =
            v.r#type.as_mut().and_then(|t| t.value.as_mut())
            && let Some(first) = t.shape.as_mut().and_then(|s| s.dim.first_mut())
        {
            if matches!(first.value, Some(Value::DimValue(_))) {
                fixed += 1;
            }
            first.value = Some(Value::DimParam(symbol.into()));
        }
    };
    graph
        .input
        .iter_mut()
        .filter(|i| !initializers.contains(&i.name))
        .for_each(&mut set_first_dim);
    graph.output.iter_mut().for_each(&mut set_first_dim);
    // Intermediate shapes recorded with a fixed batch would contradict the new inputs.
    graph.value_info.clear();
    (fixed > 0)
        .then(|| format!("batch dimension made dynamic ('{symbol}') on {fixed} inputs/outputs"))
}

fn rename_tensor(graph: &mut GraphProto, from: &str, to: &str) -> Result<()> {
    if from == to {
        return Ok(());
    }
    let taken =
        graph::producers(graph).contains_key(to) || graph::source_tensors(graph).contains(to);
    if taken {
        return Err(Error::Graph(format!(
            "rename: '{to}' is already a tensor of the graph"
        )));
    }
    let swap = |s: &mut String| {
        if s == from {
            *s = to.to_string();
        }
    };
    for n in &mut graph.node {
        n.input.iter_mut().for_each(swap);
        n.output.iter_mut().for_each(swap);
    }
    for v in graph
        .input
        .iter_mut()
        .chain(graph.output.iter_mut())
        .chain(graph.value_info.iter_mut())
    {
        swap(&mut v.name);
    }
    graph.initializer.iter_mut().for_each(|t| swap(&mut t.name));
    Ok(())
}
