//! The graph part of the "unknown" rule: distances from an image's features to each class
//! prototype, computed by the model itself so every engine gives the same numbers and the
//! parity check covers them.
//!
//! `z = (features - mean) * inv_std`, then `‖z - p_c‖` for every prototype `p_c`, as
//! `sqrt(max(‖z‖² - 2 z·p_c + ‖p_c‖², 0))` with one Gemm. Only ops that exist unchanged
//! since opset 7 are used (no axes attributes), so any imported backbone can carry it.

use crate::pb::GraphProto;
use crate::{Error, Result, builder};

/// Prototypes in standardised feature space.
#[derive(Debug, Clone, PartialEq)]
pub struct Prototypes {
    /// Per-feature mean subtracted first.
    pub mean: Vec<f32>,
    /// Per-feature `1 / std` multiplied next.
    pub inv_std: Vec<f32>,
    /// Row-major `[classes, dim]` prototypes.
    pub centres: Vec<f32>,
    /// Number of prototypes.
    pub classes: usize,
}

pub(crate) fn add_distances(
    graph: &mut GraphProto,
    features: &str,
    prototypes: &Prototypes,
    output: &str,
) -> Result<()> {
    let dim = prototypes.mean.len();
    let k = prototypes.classes;
    if dim == 0 || prototypes.inv_std.len() != dim || prototypes.centres.len() != k * dim {
        return Err(Error::Graph(format!(
            "prototype distances: {k} prototypes of {dim} values do not fit the sizes given"
        )));
    }
    if !crate::graph::producers(graph).contains_key(features)
        && !crate::graph::source_tensors(graph).contains(features)
    {
        return Err(Error::Graph(format!(
            "prototype distances: no tensor '{features}'"
        )));
    }
    if graph.output.iter().any(|o| o.name == output) {
        return Err(Error::Graph(format!(
            "prototype distances: the model already has an output '{output}'"
        )));
    }
    let name = |s: &str| format!("{output}.{s}");
    let squared_norms: Vec<f32> = prototypes
        .centres
        .chunks_exact(dim)
        .map(|p| p.iter().map(|v| v * v).sum())
        .collect();
    for (n, dims, values) in [
        (name("mean"), vec![1, dim as i64], prototypes.mean.clone()),
        (
            name("inv_std"),
            vec![1, dim as i64],
            prototypes.inv_std.clone(),
        ),
        (
            name("centres"),
            vec![k as i64, dim as i64],
            prototypes.centres.clone(),
        ),
        (name("centre_norms"), vec![k as i64], squared_norms),
        (name("ones"), vec![dim as i64, 1], vec![1.0; dim]),
    ] {
        graph
            .initializer
            .push(builder::tensor_f32(&n, &dims, values));
    }
    let nodes = [
        (
            "Sub",
            "centred",
            vec![features.to_string(), name("mean")],
            vec![],
        ),
        ("Mul", "z", vec![name("centred"), name("inv_std")], vec![]),
        ("Mul", "z2", vec![name("z"), name("z")], vec![]),
        ("MatMul", "z_norm", vec![name("z2"), name("ones")], vec![]),
        (
            "Gemm",
            "cross",
            vec![name("z"), name("centres"), name("centre_norms")],
            vec![
                builder::attr_int("transB", 1),
                builder::attr_float("alpha", -2.0),
            ],
        ),
        (
            "Add",
            "squared",
            vec![name("cross"), name("z_norm")],
            vec![],
        ),
        ("Relu", "clamped", vec![name("squared")], vec![]),
    ];
    for (op, out, inputs, attrs) in nodes {
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        graph
            .node
            .push(builder::node(op, &name(out), &inputs, &[&name(out)], attrs));
    }
    graph.node.push(builder::node(
        "Sqrt",
        output,
        &[&name("clamped")],
        &[output],
        vec![],
    ));
    let batch: builder::Dim = Err("batch");
    graph
        .output
        .push(builder::value_info_f32(output, &[batch, Ok(k as i64)]));
    Ok(())
}
