//! The blocks of a backbone, as `--unfreeze last:N` counts them: module paths where the
//! node names carry them (`blocks.3.…`, `/features/3/…`, `/layer4/layer4.1/…`), otherwise
//! structural blocks found from the graph itself (a residual Add/Sum or a Concat of
//! branches with everything between its fork and join, a convolution with the batch norm,
//! activation and pooling after it, a fully connected layer with its activation).

use std::collections::{HashMap, HashSet};

use crate::pb::GraphProto;
use crate::{Error, Result, graph, infer};

/// A group of nodes that forms one block of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The module path shared by the nodes' names, or the first layer's name.
    pub name: String,
    /// Node indices, in topological order.
    pub nodes: Vec<usize>,
    /// Float initializers the nodes read (weights, biases, batch-norm parameters).
    pub initializers: Vec<String>,
}

/// The operators scion's differentiable interpreter (`scion-trainer`'s `net`) trains
/// through; a backbone with any other op on the path to its features trains head-only.
/// The trainer's tests check that each of these parses there.
pub const INTERPRETED_OPS: &[&str] = &[
    "Conv",
    "BatchNormalization",
    "Relu",
    "Clip",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "LRN",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sum",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "AveragePool",
    "MaxPool",
    "ReduceMean",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Split",
    "Slice",
    "Gemm",
    "MatMul",
    "Concat",
    "Dropout",
    "Softmax",
    "Pad",
    "Identity",
];

/// Whether input `index` of an `op_type` node is a compile-time constant read when the node
/// is parsed (bounds, shapes, pads, axes, ratios), rather than a tensor or a weight.
pub fn constant_input(op_type: &str, index: usize) -> bool {
    matches!(
        (op_type, index),
        ("Clip", 1 | 2)
            | ("Reshape", 1)
            | ("Pad", 1..)
            | ("Dropout", 1..)
            | (
                "Squeeze" | "Unsqueeze" | "Split" | "ReduceMean" | "ReduceSum",
                1
            )
            | ("Slice", 1..)
    )
}

/// The module path of a node name: the first component, plus the second when it carries
/// a number and either the first does not (`blocks.3`, `features/3`) or the second
/// extends it (`layer4/layer4.1`, `features/features.12`); `inception5b/branch1` stays
/// `inception5b`.
pub fn module_path(name: &str) -> String {
    // PyTorch's exporter writes `/a/b/Op`; scion's importer and others write `a.b.op`.
    let separator = if name.contains('/') { '/' } else { '.' };
    let parts: Vec<&str> = name.split(separator).filter(|p| !p.is_empty()).collect();
    let digit = |s: &str| s.chars().any(|c| c.is_ascii_digit());
    match parts.as_slice() {
        [] => String::new(),
        [first, second, ..] if digit(second) && (!digit(first) || second.starts_with(first)) => {
            format!("{first}{separator}{second}")
        }
        [first, ..] => first.to_string(),
    }
}

fn learns(graph: &GraphProto, floats: &HashSet<&str>, n: usize) -> bool {
    let node = &graph.node[n];
    matches!(node.op_type.as_str(), "Conv" | "Gemm" | "MatMul")
        && node
            .input
            .iter()
            .skip(1)
            .any(|i| floats.contains(i.as_str()))
}

/// The blocks of `graph` up to (and including) the producer of `until`. Layers without
/// weights of their own (batch norm, activations, pooling) join the block before them.
pub fn blocks(graph: &GraphProto, until: &str) -> Result<Vec<Block>> {
    let order = graph::topological_order(graph)?;
    let floats: HashSet<&str> = graph
        .initializer
        .iter()
        .filter(|t| crate::builder::tensor_values_f32(t).is_some())
        .map(|t| t.name.as_str())
        .collect();
    let producers = graph::producers(graph);
    if !producers.contains_key(until) {
        return Err(Error::Graph(format!("no node produces '{until}'")));
    }
    let (needed, _) = graph::needed_for(graph, [until]);
    let activations = infer::activations(graph)?;
    let nodes: Vec<usize> = order
        .into_iter()
        .filter(|n| needed.contains(n))
        .filter(|&n| graph.node[n].input.iter().any(|i| activations.contains(i)))
        .collect();
    let groups = by_module_path(graph, &nodes, &floats)
        .unwrap_or_else(|| structural(graph, &nodes, &activations, until, &floats));
    Ok(groups
        .into_iter()
        .map(|(name, nodes)| {
            let mut initializers: Vec<String> = Vec::new();
            for &n in &nodes {
                let node = &graph.node[n];
                for (k, i) in node.input.iter().enumerate() {
                    if floats.contains(i.as_str())
                        && !constant_input(&node.op_type, k)
                        && !initializers.contains(i)
                    {
                        initializers.push(i.clone());
                    }
                }
            }
            Block {
                name,
                nodes,
                initializers,
            }
        })
        .collect())
}

/// Merge groups without a weighted layer into the group before them (or after, at the
/// start), keeping order.
fn merge_unweighted(
    graph: &GraphProto,
    floats: &HashSet<&str>,
    groups: Vec<(String, Vec<usize>)>,
) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let mut pending: Vec<usize> = Vec::new();
    for (name, nodes) in groups {
        let weighted = nodes.iter().any(|&n| learns(graph, floats, n));
        if !weighted {
            match out.last_mut() {
                Some(last) => last.1.extend(nodes),
                None => pending.extend(nodes),
            }
            continue;
        }
        let mut all = std::mem::take(&mut pending);
        all.extend(nodes);
        out.push((name, all));
    }
    if let Some(last) = out.last_mut() {
        last.1.extend(pending);
    }
    for g in &mut out {
        g.1.sort_unstable();
    }
    out
}

/// Groups by module path, when every node is named, the names give at least two
/// weighted groups, and each group is one contiguous run of the topological order.
fn by_module_path(
    graph: &GraphProto,
    nodes: &[usize],
    floats: &HashSet<&str>,
) -> Option<Vec<(String, Vec<usize>)>> {
    if nodes.iter().any(|&n| graph.node[n].name.is_empty()) {
        return None;
    }
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut seen = HashSet::new();
    for &n in nodes {
        let path = module_path(&graph.node[n].name);
        match groups.last_mut() {
            Some(last) if last.0 == path => last.1.push(n),
            _ => {
                if !seen.insert(path.clone()) {
                    return None;
                }
                groups.push((path, vec![n]));
            }
        }
    }
    let merged = merge_unweighted(graph, floats, groups);
    (merged.len() >= 2).then_some(merged)
}

/// Segments between the points where exactly one activation is alive (every path from
/// the input passes through it), then unweighted segments merged into their neighbour.
fn structural(
    graph: &GraphProto,
    nodes: &[usize],
    activations: &HashSet<String>,
    until: &str,
    floats: &HashSet<&str>,
) -> Vec<(String, Vec<usize>)> {
    let mut remaining: HashMap<&str, usize> = HashMap::new();
    for &n in nodes {
        for i in &graph.node[n].input {
            if activations.contains(i) {
                *remaining.entry(i.as_str()).or_default() += 1;
            }
        }
    }
    *remaining.entry(until).or_default() += 1;
    let mut live: HashSet<&str> = HashSet::new();
    let mut segments: Vec<Vec<usize>> = vec![Vec::new()];
    for &n in nodes {
        let node = &graph.node[n];
        for i in &node.input {
            if let Some(r) = remaining.get_mut(i.as_str())
                && activations.contains(i)
            {
                *r = r.saturating_sub(1);
                if *r == 0 {
                    live.remove(i.as_str());
                }
            }
        }
        for o in &node.output {
            if remaining.get(o.as_str()).is_some_and(|&r| r > 0) {
                live.insert(o.as_str());
            }
        }
        segments.last_mut().expect("one segment").push(n);
        if live.len() <= 1 {
            segments.push(Vec::new());
        }
    }
    let groups = segments
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            let name = s
                .iter()
                .find(|&&n| learns(graph, floats, n))
                .map(|&n| infer::display_name(&graph.node[n]).to_string())
                .unwrap_or_default();
            (name, s)
        })
        .collect();
    merge_unweighted(graph, floats, groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_of_common_exporters() {
        assert_eq!(module_path("blocks.3.expand"), "blocks.3");
        assert_eq!(module_path("/features/3/conv/0/Conv"), "features/3");
        assert_eq!(
            module_path("/layer4/layer4.1/conv1/Conv"),
            "layer4/layer4.1"
        );
        assert_eq!(module_path("/inception5b/branch1/conv/Conv"), "inception5b");
        assert_eq!(module_path("stem.conv"), "stem");
        assert_eq!(module_path(""), "");
    }
}
