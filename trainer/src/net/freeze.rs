//! Which backbone layers train: `--unfreeze last:N | from:TENSOR | all | none`. Blocks
//! are found from the graph itself ([`scion_onnx::blocks`]): nodes grouped by the module
//! path their names carry (`blocks.3.…`, `/features/3/…`, `/layer4/layer4.1/…`), or,
//! for unnamed graphs, structural blocks (residual and branch units, conv-bn-relu runs,
//! dense layers), counting only those with a convolution or dense layer.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use scion_onnx::pb::GraphProto;

use super::NetError;

/// What to unfreeze.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfreeze {
    /// Nothing: only the head trains.
    None,
    /// The last N blocks before the feature tensor.
    Last(usize),
    /// Every layer computed from this tensor on.
    From(String),
    /// Every layer.
    All,
}

impl FromStr for Unfreeze {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Unfreeze::None),
            "all" => Ok(Unfreeze::All),
            _ => {
                if let Some(n) = s.strip_prefix("last:") {
                    n.parse()
                        .map(Unfreeze::Last)
                        .map_err(|_| format!("'{n}' is not a number of blocks (e.g. last:2)"))
                } else if let Some(t) = s.strip_prefix("from:").filter(|t| !t.is_empty()) {
                    Ok(Unfreeze::From(t.to_string()))
                } else {
                    Err(format!("'{s}': use none, all, last:N or from:TENSOR"))
                }
            }
        }
    }
}

impl fmt::Display for Unfreeze {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfreeze::None => f.write_str("none"),
            Unfreeze::All => f.write_str("all"),
            Unfreeze::Last(n) => write!(f, "last:{n}"),
            Unfreeze::From(t) => write!(f, "from:{t}"),
        }
    }
}

pub use scion_onnx::blocks::Block;

/// The blocks of `graph` up to (and including) the producer of `until`: module paths
/// where names carry them, otherwise structural blocks (see [`scion_onnx::blocks`]).
pub fn blocks(graph: &GraphProto, until: &str) -> Result<Vec<Block>, NetError> {
    Ok(scion_onnx::blocks::blocks(graph, until)?)
}

/// The float initializers that train under `policy`, for a backbone read up to `until`.
pub fn trainable(
    graph: &GraphProto,
    policy: &Unfreeze,
    until: &str,
) -> Result<HashSet<String>, NetError> {
    let blocks = blocks(graph, until)?;
    let all = || blocks.iter().flat_map(|b| b.initializers.iter().cloned());
    Ok(match policy {
        Unfreeze::None => HashSet::new(),
        Unfreeze::All => all().collect(),
        Unfreeze::Last(n) => {
            if *n > blocks.len() {
                return Err(NetError::Shape(format!(
                    "--unfreeze last:{n}: the backbone has {} blocks up to '{until}'",
                    blocks.len()
                )));
            }
            blocks[blocks.len() - n..]
                .iter()
                .flat_map(|b| b.initializers.iter().cloned())
                .collect()
        }
        Unfreeze::From(tensor) => {
            // Every node that depends on `tensor`.
            let known = graph.node.iter().any(|n| n.output.contains(tensor))
                || graph.input.iter().any(|i| &i.name == tensor);
            if !known {
                return Err(NetError::Shape(format!(
                    "--unfreeze from:{tensor}: no tensor of that name"
                )));
            }
            let mut reached: HashSet<&str> = HashSet::from([tensor.as_str()]);
            let mut names = HashSet::new();
            for n in scion_onnx::graph::topological_order(graph)? {
                let node = &graph.node[n];
                if node.input.iter().any(|i| reached.contains(i.as_str())) {
                    reached.extend(node.output.iter().map(String::as_str));
                    names.extend(
                        node.input
                            .iter()
                            .enumerate()
                            .filter(|(k, _)| !scion_onnx::blocks::constant_input(&node.op_type, *k))
                            .map(|(_, i)| i.clone()),
                    );
                }
            }
            let floats: HashSet<String> = all().collect();
            names.into_iter().filter(|n| floats.contains(n)).collect()
        }
    })
}

/// Where the layers that train begin: the one tensor, computed by frozen layers, that
/// everything trainable up to `until` depends on. Frozen layers before it can run once,
/// on any engine, and their output be cached. `None` when training reaches back to the
/// graph input or the trained part reads more than one frozen tensor (a skip connection
/// across the cut): then the whole graph runs, frozen layers included.
pub fn boundary(
    graph: &GraphProto,
    trainable: &HashSet<String>,
    until: &str,
) -> Result<Option<String>, NetError> {
    let producers = scion_onnx::graph::producers(graph);
    let mut needed = HashSet::new();
    let mut stack = vec![until];
    while let Some(t) = stack.pop() {
        if let Some(&p) = producers.get(t)
            && needed.insert(p)
        {
            stack.extend(graph.node[p].input.iter().map(String::as_str));
        }
    }
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut trained_outputs: HashSet<&str> = HashSet::new();
    let mut region = Vec::new();
    for n in scion_onnx::graph::topological_order(graph)? {
        let node = &graph.node[n];
        if needed.contains(&n)
            && node
                .input
                .iter()
                .any(|i| trainable.contains(i) || trained_outputs.contains(i.as_str()))
        {
            trained_outputs.extend(node.output.iter().map(String::as_str));
            region.push(n);
        }
    }
    let mut frozen_inputs: Vec<&str> = Vec::new();
    for &n in &region {
        for (k, i) in graph.node[n].input.iter().enumerate() {
            let frozen = !i.is_empty()
                && !initializers.contains(i.as_str())
                && !trained_outputs.contains(i.as_str())
                && !scion_onnx::blocks::constant_input(&graph.node[n].op_type, k);
            if frozen && !frozen_inputs.contains(&i.as_str()) {
                frozen_inputs.push(i);
            }
        }
    }
    let graph_inputs: HashSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    Ok(match frozen_inputs[..] {
        [only] if !graph_inputs.contains(only) => Some(only.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_print() {
        for s in ["none", "all", "last:2", "from:blocks.10"] {
            assert_eq!(s.parse::<Unfreeze>().expect("valid").to_string(), s);
        }
        assert!("last:x".parse::<Unfreeze>().is_err());
        assert!("from:".parse::<Unfreeze>().is_err());
        assert!("everything".parse::<Unfreeze>().is_err());
    }
}
