//! Shape and constant inference over a CNN graph, with the batch kept symbolic.
//!
//! Every tensor gets its shape at batch 1, whether its first dimension *is* the batch
//! (what lets a fixed `[1, N]` Reshape be proven batch-agnostic), and, for small integer
//! tensors computed from shapes (`Shape → Gather → Unsqueeze → Concat`), its values with
//! the batch as a symbol. This is what the normalising patches fold and rewrite; it runs no
//! float arithmetic on weights beyond the constant nodes it folds.

use std::collections::{HashMap, HashSet};

use crate::builder::{tensor_values_f32, tensor_values_i64};
use crate::pb::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, tensor_proto};
use crate::{Error, Result, graph};

/// One element of an integer tensor computed from shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sym {
    /// A number.
    Known(i64),
    /// The batch size, whatever it will be.
    Batch,
}

/// The value of a tensor known before any image is seen.
#[derive(Debug, Clone, PartialEq)]
pub enum Const {
    /// Float values.
    Float(Vec<f32>),
    /// Integer values (shapes, axes, indices), possibly holding the batch.
    Int(Vec<Sym>),
}

impl Const {
    /// All integers, when none is the batch.
    pub fn known_ints(&self) -> Option<Vec<i64>> {
        match self {
            Const::Int(v) => v
                .iter()
                .map(|s| match s {
                    Sym::Known(k) => Some(*k),
                    Sym::Batch => None,
                })
                .collect(),
            Const::Float(_) => None,
        }
    }

    fn len(&self) -> usize {
        match self {
            Const::Float(v) => v.len(),
            Const::Int(v) => v.len(),
        }
    }
}

/// What is known of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    /// The shape at batch 1.
    pub shape: Vec<i64>,
    /// Whether the first dimension is the batch.
    pub batched: bool,
    /// The value, for constants and tensors computed only from constants and shapes
    /// (large float initializers are read from the graph instead, see [`Facts::value`]).
    pub value: Option<Const>,
    /// Whether the tensor is known without running the graph (initializers, constants).
    pub constant: bool,
}

/// Facts for every tensor the inference reached.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// By tensor name.
    pub tensors: HashMap<String, Fact>,
}

impl Facts {
    /// The fact for `tensor`.
    pub fn get(&self, tensor: &str) -> Option<&Fact> {
        self.tensors.get(tensor)
    }

    /// The shape at batch 1 of `tensor`.
    pub fn shape(&self, tensor: &str) -> Option<&[i64]> {
        self.tensors.get(tensor).map(|f| f.shape.as_slice())
    }
}

/// The default-domain opset of a model (`1` when none is declared).
pub fn opset(model: &ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(1, |o| o.version)
}

pub(crate) fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub(crate) fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

pub(crate) fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

pub(crate) fn attr_s(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

fn err(node: &NodeProto, what: impl std::fmt::Display) -> Error {
    Error::Graph(format!(
        "node '{}' ({}): {what}",
        display_name(node),
        node.op_type
    ))
}

/// A node's name for messages: its name, else its first output.
pub fn display_name(node: &NodeProto) -> &str {
    if node.name.is_empty() {
        node.output.first().map_or("", String::as_str)
    } else {
        &node.name
    }
}

/// The values of a tensor proto: floats, or integers of any integer type.
pub fn tensor_const(t: &TensorProto) -> Option<Const> {
    use tensor_proto::DataType as D;
    let dt = D::try_from(t.data_type).ok()?;
    match dt {
        D::Float => tensor_values_f32(t).map(Const::Float),
        D::Double => Some(Const::Float(if t.raw_data.is_empty() {
            t.double_data.iter().map(|v| *v as f32).collect()
        } else {
            t.raw_data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect()
        })),
        D::Int64 => Some(Const::Int(
            tensor_values_i64(t).into_iter().map(Sym::Known).collect(),
        )),
        D::Int32 | D::Int16 | D::Int8 | D::Uint8 | D::Uint16 | D::Bool => {
            let width = match dt {
                D::Int32 => 4,
                D::Int16 | D::Uint16 => 2,
                _ => 1,
            };
            let values: Vec<i64> = if t.raw_data.is_empty() {
                t.int32_data.iter().map(|v| i64::from(*v)).collect()
            } else {
                t.raw_data
                    .chunks_exact(width)
                    .map(|c| match (dt, width) {
                        (D::Int32, _) => i64::from(i32::from_le_bytes(c.try_into().expect("4"))),
                        (D::Int16, _) => i64::from(i16::from_le_bytes(c.try_into().expect("2"))),
                        (D::Uint16, _) => i64::from(u16::from_le_bytes(c.try_into().expect("2"))),
                        (D::Int8, _) => i64::from(c[0] as i8),
                        _ => i64::from(c[0]),
                    })
                    .collect()
            };
            Some(Const::Int(values.into_iter().map(Sym::Known).collect()))
        }
        _ => None,
    }
}

/// numpy-style broadcast of shapes.
fn broadcast(shapes: &[&[i64]]) -> Option<Vec<i64>> {
    let rank = shapes.iter().map(|s| s.len()).max()?;
    let mut out = vec![1i64; rank];
    for s in shapes {
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[rank - s.len() + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return None;
            }
        }
    }
    Some(out)
}

/// Most dimensions a tensor may have. ONNX sets no limit, but real models stay under 8,
/// and an operator asked for thousands makes shape inference quadratic (found by fuzzing:
/// an Unsqueeze with a long axes list took over a second).
const MAX_RANK: usize = 32;

/// An axis attribute checked against its tensor's rank: `[-rank, rank)`, or up to `rank`
/// itself where the operator allows it (Flatten). An axis past the tensor is the model's
/// error, not an index to follow (found by fuzzing: a Gather on axis 5 of a rank-4 tensor).
fn checked_axis(node: &NodeProto, axis: i64, rank: usize, up_to_rank: bool) -> Result<usize> {
    let r = rank as i64;
    let last = if up_to_rank { r } else { r - 1 };
    if axis < -r || axis > last {
        return Err(err(
            node,
            format!("axis {axis} is outside its rank-{rank} input"),
        ));
    }
    Ok(norm_axis(axis, rank))
}

fn norm_axis(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64).max(0) as usize
    } else {
        axis as usize
    }
}

/// Spatial output size of a convolution or pooling window, with `auto_pad` resolved.
/// Returns the size and the `(begin, end)` padding.
pub fn window_out(
    input: i64,
    kernel: i64,
    stride: i64,
    dilation: i64,
    pads: (i64, i64),
    auto_pad: &str,
    ceil_mode: bool,
) -> (i64, (i64, i64)) {
    let span = (kernel - 1) * dilation + 1;
    match auto_pad {
        "SAME_UPPER" | "SAME_LOWER" => {
            let out = (input + stride - 1) / stride;
            let total = ((out - 1) * stride + span - input).max(0);
            let small = total / 2;
            let pads = if auto_pad == "SAME_UPPER" {
                (small, total - small)
            } else {
                (total - small, small)
            };
            (out, pads)
        }
        "VALID" => ((input - span) / stride + 1, (0, 0)),
        _ => {
            let room = input + pads.0 + pads.1 - span;
            let out = if ceil_mode {
                (room + stride - 1) / stride + 1
            } else {
                room / stride + 1
            };
            (out, pads)
        }
    }
}

struct Ctx<'a> {
    opset: i64,
    facts: Facts,
    initializers: HashMap<&'a str, &'a TensorProto>,
}

impl Ctx<'_> {
    fn fact(&self, node: &NodeProto, k: usize) -> Result<&Fact> {
        let name = node
            .input
            .get(k)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| err(node, format!("input {k} is missing")))?;
        self.facts
            .tensors
            .get(name)
            .ok_or_else(|| err(node, format!("the shape of '{name}' is unknown")))
    }

    fn has_input(node: &NodeProto, k: usize) -> bool {
        node.input.get(k).is_some_and(|s| !s.is_empty())
    }

    /// The value of input `k`, reading float initializers from the graph.
    fn value(&self, node: &NodeProto, k: usize) -> Option<Const> {
        let name = node.input.get(k).filter(|s| !s.is_empty())?;
        let fact = self.facts.tensors.get(name)?;
        if let Some(v) = &fact.value {
            return Some(v.clone());
        }
        self.initializers
            .get(name.as_str())
            .and_then(|t| tensor_const(t))
    }

    /// Constant integers at input `k` (axes, shapes, pads), which may not hold the batch.
    fn ints_input(&self, node: &NodeProto, k: usize) -> Result<Option<Vec<i64>>> {
        if !Self::has_input(node, k) {
            return Ok(None);
        }
        match self.value(node, k) {
            Some(Const::Int(v)) => v
                .iter()
                .map(|s| match s {
                    Sym::Known(x) => Ok(*x),
                    Sym::Batch => Err(err(node, format!("input {k} depends on the batch size"))),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(Const::Float(v)) => Ok(Some(v.iter().map(|f| *f as i64).collect())),
            None => Err(err(node, format!("input {k} must be a constant"))),
        }
    }

    fn set(&mut self, name: &str, fact: Fact) {
        if !name.is_empty() {
            self.facts.tensors.insert(name.to_string(), fact);
        }
    }
}

/// Infer facts for every tensor of `model`. The single non-initializer input must have a
/// fully known shape except its first dimension (the batch); a symbolic height or width
/// is an error asking for the input size.
pub fn infer(model: &ModelProto) -> Result<Facts> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::Graph("the model has no graph".into()))?;
    let opset = opset(model);
    let initializers: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut ctx = Ctx {
        opset,
        facts: Facts::default(),
        initializers,
    };
    for t in &graph.initializer {
        // Dims from the file: negative or overflowing ones are refused before any use
        // (found by fuzzing: a product past 2^63).
        let elements = t
            .dims
            .iter()
            .try_fold(1i64, |n, &d| if d < 0 { None } else { n.checked_mul(d) })
            .ok_or_else(|| {
                Error::Graph(format!(
                    "initializer '{}': dims {:?} are not a tensor's",
                    t.name, t.dims
                ))
            })?;
        let small_or_int = t.data_type != tensor_proto::DataType::Float as i32 || elements <= 64;
        let value = if small_or_int { tensor_const(t) } else { None };
        ctx.set(
            &t.name,
            Fact {
                shape: t.dims.clone(),
                batched: false,
                value,
                constant: true,
            },
        );
    }
    for input in &graph.input {
        if ctx.initializers.contains_key(input.name.as_str()) {
            continue;
        }
        let shape = graph::value_shape(input)
            .ok_or_else(|| Error::Graph(format!("input '{}' has no tensor shape", input.name)))?;
        if shape.len() < 2 {
            return Err(Error::Graph(format!(
                "input '{}' has rank {}; an image input is [batch, ...]",
                input.name,
                shape.len()
            )));
        }
        let rest: Option<Vec<i64>> = shape[1..].iter().copied().collect();
        let rest = rest.ok_or_else(|| {
            Error::Graph(format!(
                "input '{}' has dynamic dimensions {:?}; give the input size (--input-size)",
                input.name,
                shape
                    .iter()
                    .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
                    .collect::<Vec<_>>()
            ))
        })?;
        let mut dims = vec![1];
        dims.extend(rest);
        ctx.set(
            &input.name,
            Fact {
                shape: dims,
                batched: true,
                value: None,
                constant: false,
            },
        );
    }
    for i in graph::topological_order(graph)? {
        let node = &graph.node[i];
        infer_node(&mut ctx, node)?;
        if let Some(output) = node.output.iter().find(|o| {
            ctx.facts
                .tensors
                .get(o.as_str())
                .is_some_and(|f| f.shape.len() > MAX_RANK)
        }) {
            return Err(err(
                node,
                format!("output '{output}' has more than {MAX_RANK} dimensions"),
            ));
        }
    }
    Ok(ctx.facts)
}

fn same_as_input(ctx: &Ctx<'_>, node: &NodeProto) -> Result<Fact> {
    let f = ctx.fact(node, 0)?;
    Ok(Fact {
        shape: f.shape.clone(),
        batched: f.batched,
        value: None,
        constant: f.constant,
    })
}

fn infer_node(ctx: &mut Ctx<'_>, node: &NodeProto) -> Result<()> {
    let op = node.op_type.as_str();
    if !node.domain.is_empty() && node.domain != "ai.onnx" {
        return Err(err(node, format!("operator domain '{}'", node.domain)));
    }
    let out = |shape: Vec<i64>, batched: bool| Fact {
        shape,
        batched,
        value: None,
        constant: false,
    };
    let fact = match op {
        "Relu"
        | "Clip"
        | "Sigmoid"
        | "Tanh"
        | "HardSigmoid"
        | "HardSwish"
        | "LeakyRelu"
        | "Elu"
        | "Selu"
        | "Softplus"
        | "Dropout"
        | "Identity"
        | "BatchNormalization"
        | "LRN"
        | "Softmax"
        | "LogSoftmax"
        | "Neg"
        | "Exp"
        | "Log"
        | "Sqrt"
        | "Erf"
        | "Abs"
        | "Reciprocal"
        | "InstanceNormalization"
        | "Mish"
        | "Gelu" => {
            let mut f = same_as_input(ctx, node)?;
            if f.constant && matches!(op, "Identity" | "Neg") {
                f.value = ctx.value(node, 0).map(|v| match (op, v) {
                    ("Neg", Const::Float(x)) => Const::Float(x.iter().map(|v| -v).collect()),
                    (_, v) => v,
                });
            } else {
                f.constant = false;
            }
            if op == "Dropout" && node.output.len() > 1 {
                let mask = f.clone();
                ctx.set(&node.output[1], mask);
            }
            f
        }
        "Cast" => {
            let mut f = same_as_input(ctx, node)?;
            let to = attr_i(node, "to", 1);
            f.value = ctx.value(node, 0).map(|v| cast(v, to));
            f.constant = f.value.is_some();
            f
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "PRelu" | "Sum" | "Max" | "Min" | "Mean" => {
            let facts: Vec<&Fact> = (0..node.input.len())
                .filter(|&k| Ctx::has_input(node, k))
                .map(|k| ctx.fact(node, k))
                .collect::<Result<_>>()?;
            let shapes: Vec<&[i64]> = facts.iter().map(|f| f.shape.as_slice()).collect();
            let shape = broadcast(&shapes)
                .ok_or_else(|| err(node, format!("shapes {shapes:?} do not broadcast")))?;
            let batched = facts
                .iter()
                .any(|f| f.batched && f.shape.len() == shape.len());
            let constant = facts.iter().all(|f| f.constant);
            let value = if constant {
                arithmetic(
                    op,
                    &(0..facts.len())
                        .map(|k| ctx.value(node, k))
                        .collect::<Vec<_>>(),
                )
            } else {
                None
            };
            Fact {
                constant: value.is_some(),
                value,
                ..out(shape, batched)
            }
        }
        "Conv" => {
            let x = ctx.fact(node, 0)?;
            let w = ctx.fact(node, 1)?;
            if x.shape.len() != 4 || w.shape.len() != 4 {
                return Err(err(
                    node,
                    format!("only 2-D convolutions (input {:?})", x.shape),
                ));
            }
            let kernel = attr_ints(node, "kernel_shape").unwrap_or_else(|| w.shape[2..].to_vec());
            let spatial = spatial_out(node, &x.shape, &kernel)?;
            let mut shape = vec![x.shape[0], w.shape[0]];
            shape.extend(spatial);
            out(shape, x.batched)
        }
        "MaxPool" | "AveragePool" | "LpPool" => {
            let x = ctx.fact(node, 0)?;
            let kernel =
                attr_ints(node, "kernel_shape").ok_or_else(|| err(node, "no kernel_shape"))?;
            if x.shape.len() != 4 {
                return Err(err(node, format!("only 2-D pooling (input {:?})", x.shape)));
            }
            let spatial = spatial_out(node, &x.shape, &kernel)?;
            let mut shape = x.shape[..2].to_vec();
            shape.extend(spatial);
            out(shape, x.batched)
        }
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let x = ctx.fact(node, 0)?;
            let mut shape = x.shape[..2.min(x.shape.len())].to_vec();
            shape.extend(std::iter::repeat_n(1, x.shape.len().saturating_sub(2)));
            out(shape, x.batched)
        }
        "Gemm" => {
            let a = ctx.fact(node, 0)?;
            let b = ctx.fact(node, 1)?;
            if a.shape.len() != 2 || b.shape.len() != 2 {
                return Err(err(
                    node,
                    format!("Gemm of shapes {:?} and {:?}", a.shape, b.shape),
                ));
            }
            let ta = attr_i(node, "transA", 0) != 0;
            let tb = attr_i(node, "transB", 0) != 0;
            let m = if ta { a.shape[1] } else { a.shape[0] };
            let n = if tb { b.shape[0] } else { b.shape[1] };
            out(vec![m, n], a.batched && !ta)
        }
        "MatMul" => {
            let a = ctx.fact(node, 0)?;
            let b = ctx.fact(node, 1)?;
            if a.shape.len() < 2 || b.shape.len() < 2 {
                return Err(err(node, "MatMul of vectors"));
            }
            let (ra, rb) = (a.shape.len(), b.shape.len());
            let lead = broadcast(&[&a.shape[..ra - 2], &b.shape[..rb - 2]])
                .ok_or_else(|| err(node, "MatMul batch dimensions do not broadcast"))?;
            let mut shape = lead;
            shape.push(a.shape[ra - 2]);
            shape.push(b.shape[rb - 1]);
            let batched = a.batched && shape.len() == ra;
            out(shape, batched)
        }
        "Flatten" => {
            let x = ctx.fact(node, 0)?;
            let axis = checked_axis(node, attr_i(node, "axis", 1), x.shape.len(), true)?;
            let outer: i64 = x.shape[..axis].iter().product();
            let inner: i64 = x.shape[axis..].iter().product();
            Fact {
                value: ctx.value(node, 0).filter(|_| x.constant),
                constant: x.constant,
                ..out(vec![outer, inner], x.batched && axis >= 1)
            }
        }
        "Reshape" => {
            let x = ctx.fact(node, 0)?.clone();
            let target = ctx
                .value(node, 1)
                .or_else(|| {
                    attr_ints(node, "shape")
                        .map(|v| Const::Int(v.into_iter().map(Sym::Known).collect()))
                })
                .ok_or_else(|| err(node, "the target shape is not known before running"))?;
            let Const::Int(target) = target else {
                return Err(err(node, "a float target shape"));
            };
            let allow_zero = attr_i(node, "allowzero", 0) != 0;
            let (shape, batched) = reshape_target(node, &x, &target, allow_zero)?;
            Fact {
                value: ctx.value(node, 0).filter(|_| x.constant),
                constant: x.constant,
                ..out(shape, batched)
            }
        }
        "Transpose" => {
            let x = ctx.fact(node, 0)?;
            let rank = x.shape.len();
            let perm = attr_ints(node, "perm").unwrap_or_else(|| (0..rank as i64).rev().collect());
            if perm.len() != rank {
                return Err(err(node, format!("perm {perm:?} for rank {rank}")));
            }
            let shape = perm.iter().map(|&p| x.shape[p as usize]).collect();
            let value = if x.constant {
                ctx.value(node, 0)
                    .map(|v| transpose_const(&v, &x.shape, &perm))
            } else {
                None
            };
            Fact {
                constant: value.is_some(),
                value,
                ..out(shape, x.batched && perm.first() == Some(&0))
            }
        }
        "Concat" => {
            let facts: Vec<&Fact> = (0..node.input.len())
                .filter(|&k| Ctx::has_input(node, k))
                .map(|k| ctx.fact(node, k))
                .collect::<Result<_>>()?;
            let first = facts.first().ok_or_else(|| err(node, "no inputs"))?;
            let rank = first.shape.len();
            let axis = checked_axis(node, attr_i(node, "axis", 1), rank, false)?;
            let mut shape = first.shape.clone();
            shape[axis] = facts
                .iter()
                .map(|f| f.shape.get(axis).copied().unwrap_or(0))
                .sum();
            let constant = facts.iter().all(|f| f.constant);
            let value = if constant && rank == 1 {
                let parts: Option<Vec<Const>> =
                    (0..facts.len()).map(|k| ctx.value(node, k)).collect();
                parts.and_then(concat_1d)
            } else {
                None
            };
            Fact {
                constant: value.is_some(),
                value,
                ..out(shape, axis != 0 && facts.iter().all(|f| f.batched))
            }
        }
        "Split" => {
            let x = ctx.fact(node, 0)?.clone();
            let axis = checked_axis(node, attr_i(node, "axis", 0), x.shape.len(), false)?;
            let n = node.output.len() as i64;
            let sizes = match ctx
                .ints_input(node, 1)?
                .or_else(|| attr_ints(node, "split"))
            {
                Some(s) => s,
                None => {
                    let d = x.shape[axis];
                    let each = (d + n - 1) / n;
                    (0..n).map(|i| each.min(d - i * each)).collect()
                }
            };
            if sizes.len() != node.output.len() || sizes.iter().sum::<i64>() != x.shape[axis] {
                return Err(err(node, format!("split {sizes:?} of {:?}", x.shape)));
            }
            for (o, s) in node.output.iter().zip(sizes) {
                let mut shape = x.shape.clone();
                shape[axis] = s;
                ctx.set(o, out(shape, x.batched && axis != 0));
            }
            return Ok(());
        }
        "Slice" => {
            let x = ctx.fact(node, 0)?.clone();
            let (starts, ends, axes, steps) = if ctx.opset < 10 {
                (
                    attr_ints(node, "starts").unwrap_or_default(),
                    attr_ints(node, "ends").unwrap_or_default(),
                    attr_ints(node, "axes"),
                    None,
                )
            } else {
                (
                    ctx.ints_input(node, 1)?.unwrap_or_default(),
                    ctx.ints_input(node, 2)?.unwrap_or_default(),
                    ctx.ints_input(node, 3)?,
                    ctx.ints_input(node, 4)?,
                )
            };
            let rank = x.shape.len();
            let axes: Vec<usize> = axes
                .unwrap_or_else(|| (0..starts.len() as i64).collect())
                .iter()
                .map(|&a| checked_axis(node, a, rank, false))
                .collect::<Result<_>>()?;
            let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
            if [ends.len(), axes.len(), steps.len()] != [starts.len(); 3] {
                return Err(err(node, "starts, ends, axes and steps differ in length"));
            }
            let mut shape = x.shape.clone();
            let mut ranges = Vec::new();
            for (k, &a) in axes.iter().enumerate() {
                let (s, e, st) = slice_range(x.shape[a], starts[k], ends[k], steps[k]);
                if st == 0 {
                    return Err(err(node, "a step of 0"));
                }
                // Elements in [s, e) (or (e, s] going down), one per |step|, without
                // overflowing on extreme steps.
                let span = if st > 0 { e - s } else { s - e }.max(0) as u64;
                shape[a] = if span == 0 {
                    0
                } else {
                    ((span - 1) / st.unsigned_abs() + 1) as i64
                };
                ranges.push((a, s, st));
            }
            let value = match ctx.value(node, 0).filter(|_| x.constant && rank == 1) {
                Some(v) if ranges.len() == 1 => {
                    Some(slice_1d(v, ranges[0].1, ranges[0].2, shape[0]))
                }
                _ => None,
            };
            let batched = x.batched && !axes.contains(&0);
            Fact {
                constant: value.is_some(),
                value,
                ..out(shape, batched)
            }
        }
        "Squeeze" | "Unsqueeze" => {
            let x = ctx.fact(node, 0)?.clone();
            let axes = if ctx.opset >= 13 {
                ctx.ints_input(node, 1)?
            } else {
                attr_ints(node, "axes")
            };
            let shape = if op == "Squeeze" {
                let axes: Option<Vec<usize>> = axes
                    .as_ref()
                    .map(|a| a.iter().map(|&v| norm_axis(v, x.shape.len())).collect());
                x.shape
                    .iter()
                    .enumerate()
                    .filter(|(i, d)| match &axes {
                        Some(a) => !a.contains(i),
                        // At batch 1 the batch is a 1 too, but it is never squeezed.
                        None => **d != 1 || (*i == 0 && x.batched),
                    })
                    .map(|(_, d)| *d)
                    .collect::<Vec<_>>()
            } else {
                let axes = axes.as_ref().ok_or_else(|| err(node, "no axes"))?;
                let rank = x.shape.len() + axes.len();
                if rank > MAX_RANK {
                    return Err(err(
                        node,
                        format!("{rank} dimensions: more than {MAX_RANK}"),
                    ));
                }
                let axes: Vec<usize> = axes
                    .iter()
                    .map(|&v| checked_axis(node, v, rank, false))
                    .collect::<Result<_>>()?;
                let mut rest = x.shape.iter();
                (0..rank)
                    .map(|i| {
                        if axes.contains(&i) {
                            1
                        } else {
                            *rest.next().unwrap_or(&1)
                        }
                    })
                    .collect()
            };
            let keeps_batch = match &axes {
                Some(a) if op == "Squeeze" => !a.iter().any(|&v| norm_axis(v, x.shape.len()) == 0),
                Some(a) => !a.iter().any(|&v| norm_axis(v, shape.len()) == 0),
                None => op == "Squeeze" && x.shape.first() != Some(&1),
            };
            Fact {
                value: ctx.value(node, 0).filter(|_| x.constant),
                constant: x.constant,
                ..out(shape, x.batched && keeps_batch)
            }
        }
        "Shape" => {
            let x = ctx.fact(node, 0)?;
            let mut v: Vec<Sym> = x.shape.iter().map(|&d| Sym::Known(d)).collect();
            if x.batched && !x.constant {
                v[0] = Sym::Batch;
            }
            // ONNX clamps both ends to the rank; a start past the end is an empty shape.
            let start = attr(node, "start").map_or(0, |a| norm_axis(a.i, v.len()).min(v.len()));
            let end = attr(node, "end").map_or(v.len(), |a| norm_axis(a.i, v.len()).min(v.len()));
            let v = v[start..end.max(start)].to_vec();
            Fact {
                shape: vec![v.len() as i64],
                batched: false,
                value: Some(Const::Int(v)),
                constant: true,
            }
        }
        "Gather" => {
            let x = ctx.fact(node, 0)?.clone();
            let idx = ctx.fact(node, 1)?.clone();
            let axis = checked_axis(node, attr_i(node, "axis", 0), x.shape.len(), false)?;
            let mut shape = x.shape[..axis].to_vec();
            shape.extend(&idx.shape);
            shape.extend(&x.shape[axis + 1..]);
            let value = match (ctx.value(node, 0), ctx.ints_input(node, 1).ok().flatten()) {
                (Some(v), Some(indices)) if x.shape.len() == 1 && x.constant => {
                    gather_1d(&v, &indices, x.shape[0])
                }
                _ => None,
            };
            Fact {
                constant: value.is_some(),
                value,
                ..out(shape, x.batched && axis != 0)
            }
        }
        "Constant" => {
            let value = constant_attr(node).ok_or_else(|| err(node, "no supported value"))?;
            let (shape, value) = value;
            Fact {
                shape,
                batched: false,
                value: Some(value),
                constant: true,
            }
        }
        "ConstantOfShape" => {
            let shape = ctx
                .ints_input(node, 0)?
                .ok_or_else(|| err(node, "no shape"))?;
            let n: i64 = shape.iter().product();
            let fill = attr(node, "value")
                .and_then(|a| a.t.as_ref())
                .and_then(tensor_const)
                .unwrap_or(Const::Float(vec![0.0]));
            let value = match fill {
                Const::Float(v) => {
                    Const::Float(vec![v.first().copied().unwrap_or(0.0); n as usize])
                }
                Const::Int(v) => Const::Int(vec![
                    v.first().copied().unwrap_or(Sym::Known(0));
                    n as usize
                ]),
            };
            Fact {
                shape,
                batched: false,
                value: Some(value),
                constant: true,
            }
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" => {
            let x = ctx.fact(node, 0)?.clone();
            let rank = x.shape.len();
            let axes = if (op == "ReduceSum" && ctx.opset >= 13) || ctx.opset >= 18 {
                ctx.ints_input(node, 1)?
            } else {
                attr_ints(node, "axes")
            };
            let axes: Vec<usize> = axes
                .unwrap_or_else(|| (0..rank as i64).collect())
                .iter()
                .map(|&a| norm_axis(a, rank))
                .collect();
            let keep = attr_i(node, "keepdims", 1) != 0;
            let shape = (0..rank)
                .filter_map(|i| match (axes.contains(&i), keep) {
                    (true, true) => Some(1),
                    (true, false) => None,
                    (false, _) => Some(x.shape[i]),
                })
                .collect();
            out(shape, x.batched && !axes.contains(&0))
        }
        "Pad" => {
            let x = ctx.fact(node, 0)?.clone();
            let pads = if ctx.opset >= 11 {
                ctx.ints_input(node, 1)?
            } else {
                attr_ints(node, "pads")
            }
            .ok_or_else(|| err(node, "no pads"))?;
            let rank = x.shape.len();
            if pads.len() != 2 * rank {
                return Err(err(node, format!("pads {pads:?} for rank {rank}")));
            }
            let shape = (0..rank)
                .map(|i| x.shape[i] + pads[i] + pads[i + rank])
                .collect();
            out(shape, x.batched && pads[0] == 0 && pads[rank] == 0)
        }
        other => return Err(err(node, format!("operator {other} is not supported"))),
    };
    let first = node.output.first().cloned().unwrap_or_default();
    ctx.set(&first, fact);
    Ok(())
}

fn spatial_out(node: &NodeProto, x: &[i64], kernel: &[i64]) -> Result<Vec<i64>> {
    let n = kernel.len();
    let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1; n]);
    let dilations = attr_ints(node, "dilations").unwrap_or_else(|| vec![1; n]);
    let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 2 * n]);
    let auto_pad = attr_s(node, "auto_pad").unwrap_or_default();
    let ceil = attr_i(node, "ceil_mode", 0) != 0;
    if strides.len() != n || dilations.len() != n || pads.len() != 2 * n || x.len() != n + 2 {
        return Err(err(node, "window attributes of the wrong length"));
    }
    let out: Vec<i64> = (0..n)
        .map(|i| {
            window_out(
                x[2 + i],
                kernel[i],
                strides[i],
                dilations[i],
                (pads[i], pads[i + n]),
                &auto_pad,
                ceil,
            )
            .0
        })
        .collect();
    if out.iter().any(|&o| o <= 0) {
        return Err(err(
            node,
            format!("the window {kernel:?} does not fit the input {x:?}"),
        ));
    }
    Ok(out)
}

fn reshape_target(
    node: &NodeProto,
    x: &Fact,
    target: &[Sym],
    allow_zero: bool,
) -> Result<(Vec<i64>, bool)> {
    let total: i64 = x.shape.iter().product();
    let mut shape = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, s) in target.iter().enumerate() {
        match *s {
            Sym::Batch => shape.push(1),
            Sym::Known(0) if !allow_zero => shape.push(
                *x.shape
                    .get(i)
                    .ok_or_else(|| err(node, "0 copies no dimension"))?,
            ),
            Sym::Known(-1) => {
                infer_at = Some(i);
                shape.push(1);
            }
            Sym::Known(v) => shape.push(v),
        }
    }
    if let Some(i) = infer_at {
        let known: i64 = shape.iter().product();
        shape[i] = if known == 0 { 0 } else { total / known };
    }
    if shape.iter().product::<i64>() != total {
        return Err(err(node, format!("{:?} cannot become {shape:?}", x.shape)));
    }
    // The batch stays first when the target keeps it there: copied (0), symbolic, or the
    // one dimension inferred while the rest matches the input's non-batch part.
    let rest_in: i64 = x.shape.iter().skip(1).product();
    let rest_out: i64 = shape.iter().skip(1).product();
    let batched = x.batched
        && match target.first() {
            Some(Sym::Batch) => true,
            Some(Sym::Known(0)) => !allow_zero,
            Some(Sym::Known(_)) => rest_in == rest_out,
            None => false,
        };
    Ok((shape, batched))
}

fn cast(v: Const, to: i64) -> Const {
    let float = to == tensor_proto::DataType::Float as i64
        || to == tensor_proto::DataType::Double as i64
        || to == tensor_proto::DataType::Float16 as i64;
    match (v, float) {
        (Const::Int(v), true) => match v
            .iter()
            .map(|s| match s {
                Sym::Known(k) => Some(*k as f32),
                Sym::Batch => None,
            })
            .collect::<Option<Vec<f32>>>()
        {
            Some(f) => Const::Float(f),
            None => Const::Int(v),
        },
        (Const::Float(v), false) => Const::Int(v.iter().map(|f| Sym::Known(*f as i64)).collect()),
        (v, _) => v,
    }
}

fn arithmetic(op: &str, values: &[Option<Const>]) -> Option<Const> {
    let values: Vec<&Const> = values.iter().map(|v| v.as_ref()).collect::<Option<_>>()?;
    if values.len() != 2 || !matches!(op, "Add" | "Sub" | "Mul" | "Div") {
        return None;
    }
    let (a, b) = (values[0], values[1]);
    let n = a.len().max(b.len());
    if !(a.len() == n || a.len() == 1) || !(b.len() == n || b.len() == 1) {
        return None;
    }
    let at = |v: &Const, i: usize| -> Option<f64> {
        let i = if v.len() == 1 { 0 } else { i };
        match v {
            Const::Float(x) => Some(f64::from(x[i])),
            Const::Int(x) => match x[i] {
                Sym::Known(k) => Some(k as f64),
                Sym::Batch => None,
            },
        }
    };
    let ints = matches!(a, Const::Int(_)) && matches!(b, Const::Int(_));
    let mut out_f = Vec::with_capacity(n);
    for i in 0..n {
        let (x, y) = (at(a, i)?, at(b, i)?);
        out_f.push(match op {
            "Add" => x + y,
            "Sub" => x - y,
            "Mul" => x * y,
            _ if ints => {
                if y == 0.0 {
                    return None;
                }
                (x / y).floor()
            }
            _ => x / y,
        });
    }
    Some(if ints {
        Const::Int(out_f.into_iter().map(|v| Sym::Known(v as i64)).collect())
    } else {
        Const::Float(out_f.into_iter().map(|v| v as f32).collect())
    })
}

fn concat_1d(parts: Vec<Const>) -> Option<Const> {
    if parts.iter().all(|p| matches!(p, Const::Int(_))) {
        Some(Const::Int(
            parts
                .into_iter()
                .flat_map(|p| match p {
                    Const::Int(v) => v,
                    Const::Float(_) => Vec::new(),
                })
                .collect(),
        ))
    } else if parts.iter().all(|p| matches!(p, Const::Float(_))) {
        Some(Const::Float(
            parts
                .into_iter()
                .flat_map(|p| match p {
                    Const::Float(v) => v,
                    Const::Int(_) => Vec::new(),
                })
                .collect(),
        ))
    } else {
        None
    }
}

fn slice_range(dim: i64, start: i64, end: i64, step: i64) -> (i64, i64, i64) {
    let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
    let fix = |v: i64| if v < 0 { v + dim } else { v };
    if step > 0 {
        (clamp(fix(start), 0, dim), clamp(fix(end), 0, dim), step)
    } else {
        (
            clamp(fix(start), 0, dim - 1),
            clamp(fix(end), -1, dim - 1),
            step,
        )
    }
}

fn slice_1d(v: Const, start: i64, step: i64, len: i64) -> Const {
    let idx: Vec<usize> = (0..len).map(|i| (start + i * step) as usize).collect();
    match v {
        Const::Float(x) => Const::Float(idx.iter().map(|&i| x[i]).collect()),
        Const::Int(x) => Const::Int(idx.iter().map(|&i| x[i]).collect()),
    }
}

fn gather_1d(v: &Const, indices: &[i64], len: i64) -> Option<Const> {
    let idx: Vec<usize> = indices
        .iter()
        .map(|&i| if i < 0 { i + len } else { i })
        .map(|i| usize::try_from(i).ok().filter(|&i| (i as i64) < len))
        .collect::<Option<_>>()?;
    Some(match v {
        Const::Float(x) => Const::Float(idx.iter().map(|&i| x[i]).collect()),
        Const::Int(x) => Const::Int(idx.iter().map(|&i| x[i]).collect()),
    })
}

fn transpose_const(v: &Const, shape: &[i64], perm: &[i64]) -> Const {
    let rank = shape.len();
    let mut strides = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1] as usize;
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p as usize] as usize).collect();
    let n: usize = out_shape.iter().product();
    let source = |mut flat: usize| -> usize {
        let mut src = 0;
        for axis in (0..rank).rev() {
            let coord = flat % out_shape[axis];
            flat /= out_shape[axis];
            src += coord * strides[perm[axis] as usize];
        }
        src
    };
    match v {
        Const::Float(x) => Const::Float((0..n).map(|i| x[source(i)]).collect()),
        Const::Int(x) => Const::Int((0..n).map(|i| x[source(i)]).collect()),
    }
}

fn constant_attr(node: &NodeProto) -> Option<(Vec<i64>, Const)> {
    let a = node.attribute.first()?;
    match a.name.as_str() {
        "value" => {
            let t = a.t.as_ref()?;
            Some((t.dims.clone(), tensor_const(t)?))
        }
        "value_float" => Some((vec![], Const::Float(vec![a.f]))),
        "value_floats" => Some((vec![a.floats.len() as i64], Const::Float(a.floats.clone()))),
        "value_int" => Some((vec![], Const::Int(vec![Sym::Known(a.i)]))),
        "value_ints" => Some((
            vec![a.ints.len() as i64],
            Const::Int(a.ints.iter().map(|&v| Sym::Known(v)).collect()),
        )),
        _ => None,
    }
}

/// The tensors that depend on the graph's image input (activations), as opposed to
/// constants and shapes computed from constants.
pub fn activations(graph: &GraphProto) -> Result<HashSet<String>> {
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut reached: HashSet<String> = graph
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .map(|i| i.name.clone())
        .collect();
    for i in graph::topological_order(graph)? {
        let n = &graph.node[i];
        if n.op_type != "Shape" && n.input.iter().any(|t| reached.contains(t)) {
            reached.extend(n.output.iter().cloned());
        }
    }
    Ok(reached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_onnx_formulas() {
        assert_eq!(window_out(224, 7, 2, 1, (3, 3), "", false), (112, (3, 3)));
        assert_eq!(
            window_out(112, 3, 2, 1, (0, 0), "SAME_UPPER", false),
            (56, (0, 1))
        );
        assert_eq!(
            window_out(112, 3, 2, 1, (0, 0), "SAME_LOWER", false),
            (56, (1, 0))
        );
        assert_eq!(window_out(10, 3, 1, 1, (0, 0), "VALID", false), (8, (0, 0)));
        // ceil_mode keeps the last partial window (SqueezeNet, GoogLeNet).
        assert_eq!(window_out(55, 3, 2, 1, (0, 0), "", true), (27, (0, 0)));
        assert_eq!(window_out(56, 3, 2, 1, (0, 0), "", true), (28, (0, 0)));
        assert_eq!(window_out(56, 3, 2, 1, (0, 0), "", false), (27, (0, 0)));
    }

    #[test]
    fn constants_transpose_and_broadcast() {
        let v = Const::Int((0..6).map(Sym::Known).collect());
        assert_eq!(
            transpose_const(&v, &[2, 3], &[1, 0]),
            Const::Int([0, 3, 1, 4, 2, 5].into_iter().map(Sym::Known).collect())
        );
        assert_eq!(
            broadcast(&[&[1, 4, 1, 1], &[2, 4, 3, 3]]),
            Some(vec![2, 4, 3, 3])
        );
        assert_eq!(broadcast(&[&[4], &[2, 3]]), None);
    }
}
