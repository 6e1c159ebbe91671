//! Read-only queries over an ONNX graph.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::pb::{GraphProto, NodeProto, TensorProto, ValueInfoProto};
use crate::{Error, Result};

/// Tensors available before any node runs: graph inputs and initializers.
pub fn source_tensors(graph: &GraphProto) -> HashSet<&str> {
    graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .chain(graph.initializer.iter().map(|t| t.name.as_str()))
        .collect()
}

/// Map from tensor name to the index of the node that produces it.
pub fn producers(graph: &GraphProto) -> HashMap<&str, usize> {
    let mut map = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            map.insert(out.as_str(), i);
        }
    }
    map
}

/// Up to `limit` tensor names (node outputs) a user who typed `wanted` may have meant:
/// those sharing the most words and numbers with it first (`block.3.conv` finds
/// `blocks.3.project.conv`), then the graph's last tensors, which is where features
/// usually are. For error messages that list candidates.
pub fn similar_tensors(graph: &GraphProto, wanted: &str, limit: usize) -> Vec<String> {
    let tokens = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
            .collect()
    };
    let wanted = tokens(wanted);
    let outputs: Vec<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter())
        .filter(|o| !o.is_empty())
        .map(String::as_str)
        .collect();
    let score = |name: &str| -> usize {
        let have = tokens(name);
        wanted
            .iter()
            .map(|w| {
                if have.contains(w) {
                    2
                } else if w.len() >= 2 && have.iter().any(|h| h.contains(w.as_str())) {
                    1
                } else {
                    0
                }
            })
            .sum()
    };
    let mut scored: Vec<(usize, &str)> = outputs
        .iter()
        .map(|o| (score(o), *o))
        .filter(|(s, _)| *s > 0)
        .collect();
    // Stable: equal scores stay in graph order.
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    let mut found: Vec<String> = scored
        .into_iter()
        .take(limit)
        .map(|(_, o)| o.to_string())
        .collect();
    for o in outputs.iter().rev() {
        if found.len() >= limit {
            break;
        }
        if !found.iter().any(|f| f == o) {
            found.push(o.to_string());
        }
    }
    found
}

/// What computing `outputs` needs: the indices of the nodes, and every tensor they read
/// or write on the way (the outputs included).
pub fn needed_for<'a>(
    graph: &GraphProto,
    outputs: impl IntoIterator<Item = &'a str>,
) -> (HashSet<usize>, HashSet<String>) {
    let producer = producers(graph);
    let mut nodes = HashSet::new();
    let mut tensors: HashSet<String> = HashSet::new();
    let mut stack: Vec<String> = outputs.into_iter().map(str::to_string).collect();
    while let Some(t) = stack.pop() {
        if !tensors.insert(t.clone()) {
            continue;
        }
        if let Some(&p) = producer.get(t.as_str())
            && nodes.insert(p)
        {
            stack.extend(
                graph.node[p]
                    .input
                    .iter()
                    .filter(|s| !s.is_empty())
                    .cloned(),
            );
        }
    }
    (nodes, tensors)
}

/// Indices of the nodes that read `tensor`.
pub fn consumers(graph: &GraphProto, tensor: &str) -> Vec<usize> {
    graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| n.input.iter().any(|i| i == tensor))
        .map(|(i, _)| i)
        .collect()
}

/// The initializers that `node` reads (weights, biases, constant shapes).
pub fn initializers_of<'a>(graph: &'a GraphProto, node: &NodeProto) -> Vec<&'a TensorProto> {
    let by_name: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    node.input
        .iter()
        .filter_map(|i| by_name.get(i.as_str()).copied())
        .collect()
}

/// Node indices in an order where every node comes after the producers of its inputs.
///
/// Fails, naming the tensor, when a node reads something nothing produces (a truncated
/// or hand-edited model) or when the graph has a cycle.
pub fn topological_order(graph: &GraphProto) -> Result<Vec<usize>> {
    let sources = source_tensors(graph);
    let producer = producers(graph);
    let mut pending = vec![0usize; graph.node.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); graph.node.len()];
    for (i, node) in graph.node.iter().enumerate() {
        for input in node.input.iter().filter(|s| !s.is_empty()) {
            if let Some(&p) = producer.get(input.as_str()) {
                pending[i] += 1;
                dependents[p].push(i);
            } else if !sources.contains(input.as_str()) {
                return Err(Error::Graph(format!(
                    "node '{}' ({}) reads '{}', which no input, initializer or node provides",
                    node.name, node.op_type, input
                )));
            }
        }
    }
    let mut ready: VecDeque<usize> = (0..graph.node.len()).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(graph.node.len());
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &d in &dependents[i] {
            pending[d] -= 1;
            if pending[d] == 0 {
                ready.push_back(d);
            }
        }
    }
    if order.len() != graph.node.len() {
        return Err(Error::Graph("the graph has a cycle".into()));
    }
    for out in &graph.output {
        if !producer.contains_key(out.name.as_str()) && !sources.contains(out.name.as_str()) {
            return Err(Error::Graph(format!(
                "graph output '{}' is produced by no node",
                out.name
            )));
        }
    }
    Ok(order)
}

/// Shape of a value as known to the model: `Some(dim)` for fixed sizes, `None` for
/// symbolic or unknown ones.
pub fn value_shape(info: &ValueInfoProto) -> Option<Vec<Option<i64>>> {
    use crate::pb::tensor_shape_proto::dimension::Value;
    use crate::pb::type_proto::Value as TypeValue;
    let TypeValue::TensorType(t) = info.r#type.as_ref()?.value.as_ref()? else {
        return None;
    };
    let shape = t.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(Value::DimValue(v)) if v > 0 => Some(v),
                _ => None,
            })
            .collect(),
    )
}

/// Where the classifier starts: the tensor the final Gemm/MatMul reads, and that layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureTensor {
    /// Name of the penultimate ("FC7") feature tensor.
    pub tensor: String,
    /// Name of the final classifier node that reads it.
    pub classifier_node: String,
}

const POOLING_OPS: &[&str] = &[
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Flatten",
    "Reshape",
    "ReduceMean",
    "Squeeze",
    "AveragePool",
];
const PASS_THROUGH_OPS: &[&str] = &[
    "Add", "Softmax", "Identity", "Reshape", "Flatten", "Squeeze",
];

/// Find the penultimate feature tensor: the input of the last Gemm/MatMul whose result
/// reaches a graph output (through at most a bias Add, Softmax, Identity or reshape),
/// and which is itself produced by global pooling or a flatten.
///
/// On failure the error lists every Gemm/MatMul input as a candidate, so the user can pass
/// one by name.
pub fn find_feature_tensor(graph: &GraphProto) -> Result<FeatureTensor> {
    let producer = producers(graph);
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let order = topological_order(graph)?;
    let mut candidates = Vec::new();
    for &i in order.iter().rev() {
        let node = &graph.node[i];
        if node.op_type != "Gemm" && node.op_type != "MatMul" {
            continue;
        }
        let Some(data_input) = node
            .input
            .iter()
            .find(|n| !initializers.contains(n.as_str()))
        else {
            continue;
        };
        candidates.push(data_input.clone());
        if !reaches_output(graph, &node.output[0]) {
            continue;
        }
        let from_pooling = producer
            .get(data_input.as_str())
            .is_some_and(|&p| POOLING_OPS.contains(&graph.node[p].op_type.as_str()));
        if from_pooling {
            return Ok(FeatureTensor {
                tensor: data_input.clone(),
                classifier_node: node.name.clone(),
            });
        }
    }
    Err(Error::Graph(format!(
        "cannot find the feature tensor (the input of a final Gemm/MatMul after global pooling); \
         candidates: [{}]; name one explicitly",
        candidates.join(", ")
    )))
}

fn reaches_output(graph: &GraphProto, tensor: &str) -> bool {
    let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut frontier = vec![tensor.to_string()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for t in &frontier {
            if outputs.contains(t.as_str()) {
                return true;
            }
            for c in consumers(graph, t) {
                let n = &graph.node[c];
                if PASS_THROUGH_OPS.contains(&n.op_type.as_str()) {
                    next.extend(n.output.iter().cloned());
                }
            }
        }
        frontier = next;
    }
    false
}
