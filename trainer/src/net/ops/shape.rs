//! Shape operators (Reshape, Flatten, Transpose of any rank up to 5 (ShuffleNet's
//! channel shuffle), Squeeze/Unsqueeze in their attribute (opset < 13) and input forms,
//! Split, Slice, Concat on any axis, Pad), reductions (ReduceMean, Softmax with its
//! opset-dependent axis rule) and dense layers (Gemm, MatMul).

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::ops::PadMode;
use scion_onnx::pb::NodeProto;

use super::super::value::{each_pair, each_rank};
use super::{Constants, Inputs, NetError, Op, Value, bad, float, int, ints, scalar_input, string};

fn norm_axis(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64).max(0) as usize
    } else {
        axis as usize
    }
}

pub(super) fn parse(node: &NodeProto, constants: &Constants<'_>) -> Result<Option<Op>, NetError> {
    let opset = constants.opset;
    let axes = |k: usize| -> Result<Vec<i64>, NetError> {
        Ok(if opset >= 13 {
            constants.ints_input(node, k)?.unwrap_or_default()
        } else {
            ints(node, "axes").unwrap_or_default()
        })
    };
    Ok(Some(match node.op_type.as_str() {
        "Flatten" => Op::Flatten {
            axis: int(node, "axis", 1),
        },
        "Reshape" => {
            let shape = constants
                .ints_input(node, 1)?
                .or_else(|| ints(node, "shape"));
            Op::Reshape {
                shape: shape.ok_or_else(|| bad(node, "the target shape must be a constant"))?,
            }
        }
        "Transpose" => Op::Transpose {
            perm: ints(node, "perm")
                .unwrap_or_default()
                .iter()
                .map(|&p| p as usize)
                .collect(),
        },
        "Squeeze" => Op::Squeeze { axes: axes(1)? },
        "Unsqueeze" => {
            let axes = axes(1)?;
            if axes.is_empty() {
                return Err(bad(node, "no axes"));
            }
            Op::Unsqueeze { axes }
        }
        "Split" => {
            let sizes = if opset >= 13 {
                constants.ints_input(node, 1)?
            } else {
                ints(node, "split")
            }
            .unwrap_or_default();
            Op::Split {
                axis: int(node, "axis", 0),
                sizes: sizes.iter().map(|&s| s.max(0) as usize).collect(),
                parts: node.output.len().max(1),
            }
        }
        "Slice" => {
            let (starts, ends, axes, steps) = if opset < 10 {
                (
                    ints(node, "starts").unwrap_or_default(),
                    ints(node, "ends").unwrap_or_default(),
                    ints(node, "axes"),
                    None,
                )
            } else {
                (
                    constants.ints_input(node, 1)?.unwrap_or_default(),
                    constants.ints_input(node, 2)?.unwrap_or_default(),
                    constants.ints_input(node, 3)?,
                    constants.ints_input(node, 4)?,
                )
            };
            if steps.as_ref().is_some_and(|s| s.iter().any(|&v| v != 1)) {
                return Err(bad(node, "steps other than 1"));
            }
            let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
            if starts.len() != ends.len() || axes.len() != starts.len() {
                return Err(bad(node, "starts, ends and axes of different lengths"));
            }
            Op::Slice {
                ranges: axes
                    .into_iter()
                    .zip(starts)
                    .zip(ends)
                    .map(|((a, s), e)| (a, s, e))
                    .collect(),
            }
        }
        "Concat" => Op::Concat {
            axis: int(node, "axis", 1),
        },
        "Gemm" => Op::Gemm {
            alpha: float(node, "alpha", 1.0),
            beta: float(node, "beta", 1.0),
            trans_a: int(node, "transA", 0) != 0,
            trans_b: int(node, "transB", 0) != 0,
        },
        "MatMul" => Op::MatMul,
        "Softmax" => Op::Softmax {
            axis: int(node, "axis", if opset >= 13 { -1 } else { 1 }),
            coerce_2d: opset < 13,
        },
        "ReduceMean" => Op::ReduceMean {
            axes: if opset >= 18 {
                constants.ints_input(node, 1)?.unwrap_or_default()
            } else {
                ints(node, "axes").unwrap_or_default()
            },
            keep_dims: int(node, "keepdims", 1) != 0,
        },
        "Pad" => {
            let mode = string(node, "mode");
            if mode.as_deref().is_some_and(|m| m != "constant") {
                return Err(bad(node, "only constant padding"));
            }
            let value = if opset >= 11 {
                scalar_input(node, 2, constants, 0.0)?
            } else {
                float(node, "value", 0.0)
            };
            if value != 0.0 {
                return Err(bad(node, "only zero padding"));
            }
            let p = if opset >= 11 {
                constants.ints_input(node, 1)?
            } else {
                ints(node, "pads")
            }
            .ok_or_else(|| bad(node, "pads must be constant"))?;
            match p.as_slice() {
                [0, 0, t, l, 0, 0, b, r] if [t, l, b, r].iter().all(|v| **v >= 0) => Op::Pad {
                    pads: [(*t as usize, *b as usize), (*l as usize, *r as usize)],
                },
                other => return Err(bad(node, &format!("pads {other:?} (NCHW spatial only)"))),
            }
        }
        "Identity" => Op::Identity,
        _ => return Ok(None),
    }))
}

/// Reshape `x` to `shape` (ONNX rules: 0 copies, -1 infers).
fn reshape(x: Value, shape: &[i64]) -> Result<Value, NetError> {
    let dims = x.dims();
    let total: usize = dims.iter().product();
    let mut out: Vec<usize> = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            0 => out.push(
                *dims
                    .get(i)
                    .ok_or_else(|| NetError::Shape(format!("Reshape: no dimension {i} to copy")))?,
            ),
            -1 => {
                infer = Some(i);
                out.push(1);
            }
            s if s > 0 => out.push(s as usize),
            s => return Err(NetError::Shape(format!("Reshape: dimension {s}"))),
        }
    }
    if let Some(i) = infer {
        let known: usize = out.iter().product();
        out[i] = total / known.max(1);
    }
    if out.iter().product::<usize>() != total {
        return Err(NetError::Shape(format!(
            "Reshape: {dims:?} cannot become {shape:?}"
        )));
    }
    x.reshape(&out)
}

fn transpose(x: Value, perm: &[usize]) -> Result<Value, NetError> {
    let rank = x.rank();
    let perm: Vec<usize> = if perm.is_empty() {
        (0..rank).rev().collect()
    } else {
        perm.to_vec()
    };
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if sorted != (0..rank).collect::<Vec<_>>() {
        return Err(NetError::Shape(format!(
            "Transpose: perm {perm:?} for rank {rank}"
        )));
    }
    let p = |n: usize| perm[n];
    Ok(match x {
        Value::R1(t) => Value::R1(t),
        Value::R2(t) => Value::R2(t.permute([p(0), p(1)])),
        Value::R3(t) => Value::R3(t.permute([p(0), p(1), p(2)])),
        Value::R4(t) => Value::R4(t.permute([p(0), p(1), p(2), p(3)])),
        Value::R5(t) => Value::R5(t.permute([p(0), p(1), p(2), p(3), p(4)])),
    })
}

fn narrow(x: Value, axis: usize, start: usize, len: usize) -> Value {
    each_rank!(x, t => t.narrow(axis, start, len))
}

fn concat(parts: Vec<Value>, axis: i64) -> Result<Value, NetError> {
    let rank = parts.first().map_or(1, Value::rank);
    let axis = norm_axis(axis, rank);
    macro_rules! cat {
        ($variant:ident) => {{
            let ts = parts
                .into_iter()
                .map(|p| match p {
                    Value::$variant(t) => Ok(t),
                    other => Err(NetError::Shape(format!(
                        "Concat of mixed ranks ({:?})",
                        other.dims()
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Value::$variant(Tensor::cat(ts, axis))
        }};
    }
    Ok(match rank {
        1 => cat!(R1),
        2 => cat!(R2),
        3 => cat!(R3),
        4 => cat!(R4),
        _ => cat!(R5),
    })
}

pub(super) fn split(op: &Op, inputs: &mut Inputs) -> Result<Vec<Value>, NetError> {
    let Op::Split { axis, sizes, parts } = op else {
        unreachable!("not a split")
    };
    let x = inputs.take(0, "Split")?;
    let dims = x.dims();
    let axis = norm_axis(*axis, dims.len());
    let d = dims[axis];
    let sizes: Vec<usize> = if sizes.is_empty() {
        let each = d.div_ceil(*parts);
        (0..*parts)
            .map(|i| each.min(d - (i * each).min(d)))
            .collect()
    } else {
        sizes.clone()
    };
    if sizes.iter().sum::<usize>() != d {
        return Err(NetError::Shape(format!(
            "Split: sizes {sizes:?} of an axis of {d}"
        )));
    }
    let mut start = 0;
    Ok(sizes
        .into_iter()
        .map(|len| {
            let part = narrow(x.clone(), axis, start, len);
            start += len;
            part
        })
        .collect())
}

pub(super) fn apply(op: &Op, inputs: &mut Inputs) -> Result<Value, NetError> {
    Ok(match op {
        Op::Flatten { axis } => {
            let x = inputs.take(0, "Flatten")?;
            let dims = x.dims();
            let axis = norm_axis(*axis, dims.len()).min(dims.len());
            let outer: usize = dims[..axis].iter().product();
            let inner: usize = dims[axis..].iter().product();
            x.reshape(&[outer, inner])?
        }
        Op::Reshape { shape } => reshape(inputs.take(0, "Reshape")?, shape)?,
        Op::Transpose { perm } => transpose(inputs.take(0, "Transpose")?, perm)?,
        Op::Squeeze { axes } => {
            let x = inputs.take(0, "Squeeze")?;
            let dims = x.dims();
            let axes: Vec<usize> = axes.iter().map(|&a| norm_axis(a, dims.len())).collect();
            let kept: Vec<usize> = dims
                .iter()
                .enumerate()
                .filter(|(i, d)| {
                    if axes.is_empty() {
                        // The batch is never squeezed, even when it is 1.
                        **d != 1 || *i == 0
                    } else {
                        !axes.contains(i)
                    }
                })
                .map(|(_, d)| *d)
                .collect();
            x.reshape(&kept)?
        }
        Op::Unsqueeze { axes } => {
            let x = inputs.take(0, "Unsqueeze")?;
            let dims = x.dims();
            let rank = dims.len() + axes.len();
            let axes: Vec<usize> = axes.iter().map(|&a| norm_axis(a, rank)).collect();
            let mut rest = dims.into_iter();
            let shape: Vec<usize> = (0..rank)
                .map(|i| {
                    if axes.contains(&i) {
                        1
                    } else {
                        rest.next().unwrap_or(1)
                    }
                })
                .collect();
            x.reshape(&shape)?
        }
        Op::Slice { ranges } => {
            let mut x = inputs.take(0, "Slice")?;
            for &(axis, start, end) in ranges {
                let dims = x.dims();
                let axis = norm_axis(axis, dims.len());
                let d = dims[axis] as i64;
                let fix = |v: i64| (if v < 0 { v + d } else { v }).clamp(0, d);
                let (s, e) = (fix(start), fix(end));
                x = narrow(x, axis, s as usize, (e - s).max(0) as usize);
            }
            x
        }
        Op::Concat { axis } => {
            let parts = std::mem::replace(inputs, Inputs(Vec::new())).all();
            concat(parts, *axis)?
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let mut a = inputs.take(0, "Gemm")?.r2("Gemm A")?;
            let mut b = inputs.take(1, "Gemm")?.r2("Gemm B")?;
            if *trans_a {
                a = a.transpose();
            }
            if *trans_b {
                b = b.transpose();
            }
            let mut y = a.matmul(b);
            if *alpha != 1.0 {
                y = y.mul_scalar(*alpha);
            }
            match inputs.maybe(2) {
                Some(c) => {
                    let c = if *beta != 1.0 {
                        each_rank!(c, t => t.mul_scalar(*beta))
                    } else {
                        c
                    };
                    Value::R2(y).zip(c, |p| each_pair!(p, a, b => a + b))?
                }
                None => Value::R2(y),
            }
        }
        Op::MatMul => {
            let a = inputs.take(0, "MatMul")?.r2("MatMul A")?;
            let b = inputs.take(1, "MatMul")?.r2("MatMul B")?;
            Value::R2(a.matmul(b))
        }
        Op::Softmax { axis, coerce_2d } => {
            let x = inputs.take(0, "Softmax")?;
            let dims = x.dims();
            let axis = norm_axis(*axis, dims.len());
            if *coerce_2d && axis + 1 < dims.len() {
                let outer: usize = dims[..axis].iter().product();
                let inner: usize = dims[axis..].iter().product();
                let flat = x.reshape(&[outer, inner])?.r2("Softmax")?;
                Value::R2(softmax(flat, 1)).reshape(&dims)?
            } else {
                each_rank!(x, t => softmax(t, axis))
            }
        }
        Op::ReduceMean { axes, keep_dims } => {
            let x = inputs.take(0, "ReduceMean")?;
            let dims = x.dims();
            let mut axes: Vec<usize> = if axes.is_empty() {
                (0..dims.len()).collect()
            } else {
                axes.iter().map(|&a| norm_axis(a, dims.len())).collect()
            };
            axes.sort_unstable();
            let mut y = x;
            for &a in &axes {
                y = each_rank!(y, t => t.mean_dim(a));
            }
            if *keep_dims {
                y
            } else {
                let kept: Vec<usize> = dims
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, d)| *d)
                    .collect();
                y.reshape(if kept.is_empty() { &[1] } else { &kept })?
            }
        }
        Op::Pad { pads } => {
            let x = inputs.take(0, "Pad")?.r4("Pad")?;
            Value::R4(x.pad(*pads, PadMode::Constant(0.0)))
        }
        Op::Identity => inputs.take(0, "Identity")?,
        _ => unreachable!("not a shape op"),
    })
}
