//! Finding the lecture's "FC7": the input of the last classifier layer. The search walks
//! back from the class output through what follows a classifier (softmax, reshapes,
//! pooling, a bias add, an activation) to the last Gemm/MatMul — or a 1x1 convolution,
//! as in SqueezeNet and caffe-style DenseNet, whose input is then pooled to channel means.
//! AlexNet and VGG give the second fully connected layer's ReLU, ResNet and MobileNet the
//! pooled trunk. A headless trunk gives its own (pooled) output.

use std::collections::HashSet;

use crate::pb::{GraphProto, ModelProto};
use crate::{Error, Result, graph, infer};

/// The feature tensor of a classifier or trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// The tensor the classifier reads.
    pub tensor: String,
    /// Its shape at batch 1.
    pub shape: Vec<i64>,
    /// Whether it is spatial (`[batch, C, H, W]`), so that its channel means are the
    /// feature vector.
    pub pooled: bool,
    /// The classifier node, when there is one.
    pub classifier: Option<String>,
    /// The graph output the search started from.
    pub output: String,
}

/// Ops between a classifier layer and the class output.
const AFTER_CLASSIFIER: &[&str] = &[
    "Softmax",
    "LogSoftmax",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Identity",
    "Dropout",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "AveragePool",
    "ReduceMean",
    "Relu",
    "Add",
    "Transpose",
];

/// Find the feature tensor of `model` (best after [`crate::normalize::normalize`]). On
/// failure the error lists the candidates with their shapes.
pub fn find(model: &ModelProto) -> Result<Features> {
    let facts = infer::infer(model)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::Graph("the model has no graph".into()))?;
    find_in(graph, &facts)
}

/// [`find`] with the graph's facts already inferred.
pub fn find_in(graph: &GraphProto, facts: &infer::Facts) -> Result<Features> {
    let constants: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let producers = graph::producers(graph);
    let output = graph
        .output
        .first()
        .ok_or_else(|| Error::Graph("the graph has no outputs".into()))?
        .name
        .clone();
    let data_input = |n: usize| -> Option<String> {
        graph.node[n]
            .input
            .iter()
            .find(|i| !i.is_empty() && !constants.contains(i.as_str()))
            .cloned()
    };
    let mut t = output.clone();
    for _ in 0..32 {
        let Some(&p) = producers.get(t.as_str()) else {
            break;
        };
        let node = &graph.node[p];
        let op = node.op_type.as_str();
        let weighted = node
            .input
            .iter()
            .skip(1)
            .any(|i| constants.contains(i.as_str()));
        let is_classifier = match op {
            "Gemm" | "MatMul" => weighted,
            "Conv" => {
                weighted
                    && node
                        .input
                        .get(1)
                        .and_then(|w| facts.shape(w))
                        .is_some_and(|s| s.len() == 4 && s[2] == 1 && s[3] == 1)
            }
            _ => false,
        };
        if is_classifier {
            let tensor = data_input(p).ok_or_else(|| {
                Error::Graph(format!(
                    "classifier '{}' reads no tensor",
                    infer::display_name(node)
                ))
            })?;
            let shape = facts.shape(&tensor).unwrap_or_default().to_vec();
            return Ok(Features {
                pooled: shape.len() == 4,
                tensor,
                shape,
                classifier: Some(infer::display_name(node).to_string()),
                output,
            });
        }
        let add_of_constant = op == "Add"
            && node
                .input
                .iter()
                .filter(|i| constants.contains(i.as_str()))
                .count()
                == 1;
        if !AFTER_CLASSIFIER.contains(&op) || (op == "Add" && !add_of_constant) {
            break;
        }
        match data_input(p) {
            Some(next) => t = next,
            None => break,
        }
    }
    // No classifier: a trunk. Its output (pooled when spatial) is the feature vector.
    let shape = facts.shape(&output).unwrap_or_default().to_vec();
    let headless = producers.get(output.as_str()).is_some_and(|&p| {
        matches!(
            graph.node[p].op_type.as_str(),
            "GlobalAveragePool"
                | "GlobalMaxPool"
                | "Flatten"
                | "Reshape"
                | "Squeeze"
                | "ReduceMean"
        )
    }) || shape.len() == 4;
    if headless && (shape.len() == 2 || shape.len() == 4) {
        return Ok(Features {
            pooled: shape.len() == 4,
            tensor: output.clone(),
            shape,
            classifier: None,
            output,
        });
    }
    Err(Error::Graph(format!(
        "cannot find the feature tensor (the input of the last Gemm/MatMul or 1x1 Conv \
         before '{output}'); candidates: [{}]; name one with --feature-tensor",
        candidates(graph, facts, 12).join(", ")
    )))
}

/// Up to `limit` tensors that could be features, latest first, with their shapes: 2-D
/// activations and spatial ones.
pub fn candidates(graph: &GraphProto, facts: &infer::Facts, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(order) = graph::topological_order(graph) else {
        return out;
    };
    for &n in order.iter().rev() {
        for o in &graph.node[n].output {
            if let Some(f) = facts.get(o)
                && !f.constant
                && (f.shape.len() == 2 || f.shape.len() == 4)
                && out.len() < limit
            {
                out.push(format!("{o} {:?}", f.shape));
            }
        }
    }
    out
}
