//! The ONNX operators a CNN uses, parsed once from a node's attributes (and constant
//! inputs) into an [`Op`], then applied with burn's differentiable tensor operations.

use std::collections::HashMap;

use burn::tensor::activation::{relu, sigmoid, softmax};
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions, PadMode};
use burn::tensor::{Distribution, Tensor};
use scion_onnx::pb::{NodeProto, attribute_proto::AttributeType};

use super::NetError;
use super::value::{BinaryOperands, Value, each_pair, each_rank};

/// Every operator the interpreter knows, with its attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// 2-D convolution.
    Conv {
        /// Strides.
        strides: [usize; 2],
        /// `(begin, end)` padding per spatial axis.
        pads: [(usize, usize); 2],
        /// Dilations.
        dilations: [usize; 2],
        /// Groups (channels for depthwise).
        groups: usize,
    },
    /// Batch normalisation.
    BatchNorm {
        /// Added to the variance.
        epsilon: f64,
        /// Weight of the old running statistics in an update.
        momentum: f64,
    },
    /// max(x, 0).
    Relu,
    /// Clamp to `[min, max]` (ReLU6 is `Clip(0, 6)`).
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// 1 / (1 + e^-x).
    Sigmoid,
    /// Element-wise sum with broadcasting.
    Add,
    /// Element-wise difference.
    Sub,
    /// Element-wise product.
    Mul,
    /// Element-wise quotient.
    Div,
    /// Mean over the spatial axes, kept as 1x1.
    GlobalAveragePool,
    /// Average pooling.
    AveragePool {
        /// Window.
        kernel: [usize; 2],
        /// Strides.
        strides: [usize; 2],
        /// Padding.
        pads: [(usize, usize); 2],
        /// Whether padding counts in the average.
        count_include_pad: bool,
        /// Ceil instead of floor for the output size.
        ceil_mode: bool,
    },
    /// Max pooling.
    MaxPool {
        /// Window.
        kernel: [usize; 2],
        /// Strides.
        strides: [usize; 2],
        /// Padding.
        pads: [(usize, usize); 2],
        /// Dilations.
        dilations: [usize; 2],
        /// Ceil instead of floor for the output size.
        ceil_mode: bool,
    },
    /// Collapse to 2-D at `axis`.
    Flatten {
        /// Axis.
        axis: usize,
    },
    /// Reshape to a constant shape (0 copies, -1 infers).
    Reshape {
        /// Target shape.
        shape: Vec<i64>,
    },
    /// `alpha * A' B' + beta * C`.
    Gemm {
        /// Scale of the product.
        alpha: f32,
        /// Scale of C.
        beta: f32,
        /// Transpose A.
        trans_a: bool,
        /// Transpose B.
        trans_b: bool,
    },
    /// Matrix product of 2-D tensors.
    MatMul,
    /// Concatenate along `axis`.
    Concat {
        /// Axis (non-negative).
        axis: i64,
    },
    /// Random zeroing while training; identity otherwise.
    Dropout {
        /// Drop probability.
        ratio: f32,
    },
    /// Softmax along `axis`.
    Softmax {
        /// Axis.
        axis: i64,
    },
    /// Constant zero padding of the last two axes of a rank-4 tensor.
    Pad {
        /// `(begin, end)` for height and width.
        pads: [(usize, usize); 2],
    },
    /// y = x.
    Identity,
}

/// Whether input `index` of an `op_type` node is a compile-time constant read when the node
/// is parsed (bounds, shapes, pads, ratios), rather than a tensor or a weight.
pub(crate) fn constant_input(op_type: &str, index: usize) -> bool {
    matches!(
        (op_type, index),
        ("Clip", 1 | 2) | ("Reshape", 1) | ("Pad", 1..) | ("Dropout", 1..)
    )
}

/// Inputs that are compile-time constants (shapes, bounds, pads): integer and float
/// initializers by name.
pub struct Constants<'a> {
    /// Integer initializers.
    pub ints: &'a HashMap<String, Vec<i64>>,
    /// Float initializers.
    pub floats: &'a HashMap<String, Vec<f32>>,
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a scion_onnx::pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

fn float(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name)
        .filter(|a| a.r#type == AttributeType::Ints as i32 || !a.ints.is_empty())
        .map(|a| a.ints.clone())
}

fn pair(node: &NodeProto, name: &str, default: usize) -> Result<[usize; 2], NetError> {
    match ints(node, name).as_deref() {
        None => Ok([default; 2]),
        Some([a, b]) if *a >= 0 && *b >= 0 => Ok([*a as usize, *b as usize]),
        Some(other) => Err(bad(node, &format!("{name} {other:?} (2-D only)"))),
    }
}

fn pads(node: &NodeProto) -> Result<[(usize, usize); 2], NetError> {
    let auto = attr(node, "auto_pad").map(|a| String::from_utf8_lossy(&a.s).into_owned());
    if let Some(mode) = auto.filter(|m| m != "NOTSET" && m != "VALID") {
        return Err(bad(
            node,
            &format!("auto_pad {mode} (export explicit pads)"),
        ));
    }
    match ints(node, "pads").as_deref() {
        None => Ok([(0, 0); 2]),
        Some([t, l, b, r]) if [t, l, b, r].iter().all(|p| **p >= 0) => {
            Ok([(*t as usize, *b as usize), (*l as usize, *r as usize)])
        }
        Some(other) => Err(bad(node, &format!("pads {other:?}"))),
    }
}

fn bad(node: &NodeProto, what: &str) -> NetError {
    NetError::Unsupported(format!("node '{}' ({}): {what}", node.name, node.op_type))
}

fn scalar_input(
    node: &NodeProto,
    index: usize,
    constants: &Constants<'_>,
    default: f32,
) -> Result<f32, NetError> {
    match node.input.get(index).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(name) => match constants.floats.get(name).map(Vec::as_slice) {
            Some([v]) => Ok(*v),
            _ => Err(bad(
                node,
                &format!("input '{name}' must be a constant scalar"),
            )),
        },
    }
}

impl Op {
    /// Parse a node; an operator or attribute the interpreter cannot run is an error naming
    /// the node.
    pub fn parse(node: &NodeProto, constants: &Constants<'_>) -> Result<Op, NetError> {
        Ok(match node.op_type.as_str() {
            "Conv" => {
                if ints(node, "kernel_shape").is_some_and(|k| k.len() != 2) {
                    return Err(bad(node, "only 2-D convolutions"));
                }
                Op::Conv {
                    strides: pair(node, "strides", 1)?,
                    pads: pads(node)?,
                    dilations: pair(node, "dilations", 1)?,
                    groups: int(node, "group", 1).max(1) as usize,
                }
            }
            "BatchNormalization" => Op::BatchNorm {
                epsilon: f64::from(float(node, "epsilon", 1e-5)),
                momentum: f64::from(float(node, "momentum", 0.9)),
            },
            "Relu" => Op::Relu,
            "Clip" => {
                let (min, max) = if attr(node, "min").is_some() || attr(node, "max").is_some() {
                    (float(node, "min", f32::MIN), float(node, "max", f32::MAX))
                } else {
                    (
                        scalar_input(node, 1, constants, f32::MIN)?,
                        scalar_input(node, 2, constants, f32::MAX)?,
                    )
                };
                Op::Clip { min, max }
            }
            "Sigmoid" => Op::Sigmoid,
            "Add" => Op::Add,
            "Sub" => Op::Sub,
            "Mul" => Op::Mul,
            "Div" => Op::Div,
            "GlobalAveragePool" => Op::GlobalAveragePool,
            "AveragePool" => Op::AveragePool {
                kernel: pair(node, "kernel_shape", 1)?,
                strides: pair(node, "strides", 1)?,
                pads: pads(node)?,
                count_include_pad: int(node, "count_include_pad", 0) != 0,
                ceil_mode: int(node, "ceil_mode", 0) != 0,
            },
            "MaxPool" => Op::MaxPool {
                kernel: pair(node, "kernel_shape", 1)?,
                strides: pair(node, "strides", 1)?,
                pads: pads(node)?,
                dilations: pair(node, "dilations", 1)?,
                ceil_mode: int(node, "ceil_mode", 0) != 0,
            },
            "Flatten" => {
                let axis = int(node, "axis", 1);
                if axis < 0 {
                    return Err(bad(node, "a negative axis"));
                }
                Op::Flatten {
                    axis: axis as usize,
                }
            }
            "Reshape" => {
                let name = node.input.get(1).cloned().unwrap_or_default();
                let shape = constants
                    .ints
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| bad(node, &format!("shape '{name}' must be a constant")))?;
                Op::Reshape { shape }
            }
            "Gemm" => Op::Gemm {
                alpha: float(node, "alpha", 1.0),
                beta: float(node, "beta", 1.0),
                trans_a: int(node, "transA", 0) != 0,
                trans_b: int(node, "transB", 0) != 0,
            },
            "MatMul" => Op::MatMul,
            "Concat" => Op::Concat {
                axis: int(node, "axis", 1),
            },
            "Dropout" => Op::Dropout {
                ratio: match node.input.get(1).filter(|s| !s.is_empty()) {
                    Some(_) => scalar_input(node, 1, constants, 0.5)?,
                    None => float(node, "ratio", 0.5),
                },
            },
            "Softmax" => Op::Softmax {
                axis: int(node, "axis", -1),
            },
            "Pad" => {
                let mode = attr(node, "mode").map(|a| String::from_utf8_lossy(&a.s).into_owned());
                if mode.as_deref().is_some_and(|m| m != "constant") {
                    return Err(bad(node, "only constant padding"));
                }
                if scalar_input(node, 2, constants, 0.0)? != 0.0 {
                    return Err(bad(node, "only zero padding"));
                }
                let name = node.input.get(1).cloned().unwrap_or_default();
                let p = constants
                    .ints
                    .get(&name)
                    .cloned()
                    .or_else(|| ints(node, "pads"))
                    .ok_or_else(|| bad(node, "pads must be constant"))?;
                match p.as_slice() {
                    [0, 0, t, l, 0, 0, b, r] if [t, l, b, r].iter().all(|v| **v >= 0) => Op::Pad {
                        pads: [(*t as usize, *b as usize), (*l as usize, *r as usize)],
                    },
                    other => return Err(bad(node, &format!("pads {other:?} (NCHW spatial only)"))),
                }
            }
            "Identity" => Op::Identity,
            other => {
                return Err(NetError::Unsupported(format!(
                    "operator {other} (node '{}') is not supported",
                    node.name
                )));
            }
        })
    }

    /// Apply to `inputs` (absent optional inputs are `None`). `training` turns on dropout
    /// and batch statistics; batch norm then also returns the batch mean and variance.
    pub fn apply(
        &self,
        mut inputs: Vec<Option<Value>>,
        training: bool,
    ) -> Result<(Value, Option<(Tensor<1>, Tensor<1>)>), NetError> {
        let mut take = |i: usize, what: &str| -> Result<Value, NetError> {
            inputs
                .get_mut(i)
                .and_then(Option::take)
                .ok_or_else(|| NetError::Shape(format!("{what}: missing input {i}")))
        };
        let out = match self {
            Op::Conv {
                strides,
                pads,
                dilations,
                groups,
            } => {
                let x = take(0, "Conv")?.r4("Conv input")?;
                let w = take(1, "Conv")?.r4("Conv weight")?;
                let b = take(2, "Conv")
                    .ok()
                    .map(|b| b.r1("Conv bias"))
                    .transpose()?;
                let options = ConvOptions {
                    stride: *strides,
                    padding: *pads,
                    dilation: *dilations,
                    groups: *groups,
                };
                Value::R4(conv2d(x, w, b, options))
            }
            Op::BatchNorm { epsilon, .. } => {
                let x = take(0, "BatchNormalization")?.r4("BatchNormalization input")?;
                let scale = take(1, "BatchNormalization")?.r1("scale")?;
                let bias = take(2, "BatchNormalization")?.r1("bias")?;
                let running_mean = take(3, "BatchNormalization")?.r1("mean")?;
                let running_var = take(4, "BatchNormalization")?.r1("var")?;
                let c = scale.dims()[0];
                let channel = |t: Tensor<1>| t.reshape([1, c, 1, 1]);
                let (mean, var, stats) = if training {
                    let [n, _, h, w] = x.dims();
                    let per_channel = x.clone().swap_dims(0, 1).reshape([c, n * h * w]);
                    let mean = per_channel.clone().mean_dim(1);
                    let var = (per_channel - mean.clone()).powi_scalar(2).mean_dim(1);
                    let (mean, var) = (mean.reshape([c]), var.reshape([c]));
                    (mean.clone(), var.clone(), Some((mean, var)))
                } else {
                    (running_mean, running_var, None)
                };
                let y = (x - channel(mean)) / channel(var.add_scalar(*epsilon)).sqrt()
                    * channel(scale)
                    + channel(bias);
                return Ok((Value::R4(y), stats));
            }
            Op::Relu => each_rank!(take(0, "Relu")?, t => relu(t)),
            Op::Clip { min, max } => each_rank!(take(0, "Clip")?, t => t.clamp(*min, *max)),
            Op::Sigmoid => each_rank!(take(0, "Sigmoid")?, t => sigmoid(t)),
            Op::Add => take(0, "Add")?.zip(take(1, "Add")?, |p| each_pair!(p, a, b => a + b))?,
            Op::Sub => take(0, "Sub")?.zip(take(1, "Sub")?, |p| each_pair!(p, a, b => a - b))?,
            Op::Mul => take(0, "Mul")?.zip(take(1, "Mul")?, |p| each_pair!(p, a, b => a * b))?,
            Op::Div => take(0, "Div")?.zip(take(1, "Div")?, |p| each_pair!(p, a, b => a / b))?,
            Op::GlobalAveragePool => {
                let x = take(0, "GlobalAveragePool")?.r4("GlobalAveragePool")?;
                Value::R4(x.mean_dim(3).mean_dim(2))
            }
            Op::AveragePool {
                kernel,
                strides,
                pads,
                count_include_pad,
                ceil_mode,
            } => {
                let x = take(0, "AveragePool")?.r4("AveragePool")?;
                let options = AvgPoolOptions {
                    kernel_size: *kernel,
                    stride: *strides,
                    padding: *pads,
                    count_include_pad: *count_include_pad,
                    ceil_mode: *ceil_mode,
                };
                Value::R4(avg_pool2d(x, options))
            }
            Op::MaxPool {
                kernel,
                strides,
                pads,
                dilations,
                ceil_mode,
            } => {
                let x = take(0, "MaxPool")?.r4("MaxPool")?;
                let options = MaxPoolOptions {
                    kernel_size: *kernel,
                    stride: *strides,
                    padding: *pads,
                    dilation: *dilations,
                    ceil_mode: *ceil_mode,
                };
                Value::R4(max_pool2d(x, options))
            }
            Op::Flatten { axis } => {
                let x = take(0, "Flatten")?;
                let dims = x.dims();
                let axis = (*axis).min(dims.len());
                let outer: usize = dims[..axis].iter().product();
                let inner: usize = dims[axis..].iter().product();
                x.reshape(&[outer, inner])?
            }
            Op::Reshape { shape } => {
                let x = take(0, "Reshape")?;
                let dims = x.dims();
                let total: usize = dims.iter().product();
                let mut out: Vec<usize> = Vec::with_capacity(shape.len());
                let mut infer = None;
                for (i, &s) in shape.iter().enumerate() {
                    match s {
                        0 => out.push(*dims.get(i).ok_or_else(|| {
                            NetError::Shape(format!("Reshape: no dimension {i} to copy"))
                        })?),
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
                x.reshape(&out)?
            }
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let mut a = take(0, "Gemm")?.r2("Gemm A")?;
                let mut b = take(1, "Gemm")?.r2("Gemm B")?;
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
                match take(2, "Gemm") {
                    Ok(c) => {
                        let c = if *beta != 1.0 {
                            each_rank!(c, t => t.mul_scalar(*beta))
                        } else {
                            c
                        };
                        Value::R2(y).zip(c, |p| each_pair!(p, a, b => a + b))?
                    }
                    Err(_) => Value::R2(y),
                }
            }
            Op::MatMul => {
                let a = take(0, "MatMul")?.r2("MatMul A")?;
                let b = take(1, "MatMul")?.r2("MatMul B")?;
                Value::R2(a.matmul(b))
            }
            Op::Concat { axis } => {
                let parts: Vec<Value> = inputs.into_iter().flatten().collect();
                let rank = parts.first().map_or(1, Value::rank);
                let axis = if *axis < 0 { rank as i64 + axis } else { *axis } as usize;
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
                match rank {
                    1 => cat!(R1),
                    2 => cat!(R2),
                    3 => cat!(R3),
                    _ => cat!(R4),
                }
            }
            Op::Dropout { ratio } => {
                let x = take(0, "Dropout")?;
                if training && *ratio > 0.0 {
                    let keep = 1.0 - f64::from(*ratio);
                    each_rank!(x, t => {
                        let mask = t.random_like(Distribution::Bernoulli(keep));
                        t * mask / keep
                    })
                } else {
                    x
                }
            }
            Op::Softmax { axis } => {
                let x = take(0, "Softmax")?;
                let rank = x.rank() as i64;
                let axis = if *axis < 0 { rank + axis } else { *axis } as usize;
                each_rank!(x, t => softmax(t, axis))
            }
            Op::Pad { pads } => {
                let x = take(0, "Pad")?.r4("Pad")?;
                Value::R4(x.pad(*pads, PadMode::Constant(0.0)))
            }
            Op::Identity => take(0, "Identity")?,
        };
        Ok((out, None))
    }
}

/// Shorthand used by the interpreter's tests: the operator of an ONNX op type with default
/// attributes.
#[cfg(test)]
pub(crate) fn supported(op_type: &str) -> bool {
    let node = NodeProto {
        op_type: op_type.into(),
        ..Default::default()
    };
    let empty_i = HashMap::new();
    let empty_f = HashMap::new();
    let constants = Constants {
        ints: &empty_i,
        floats: &empty_f,
    };
    !matches!(Op::parse(&node, &constants), Err(NetError::Unsupported(m)) if m.contains("is not supported"))
}

#[cfg(test)]
mod tests {
    use super::supported;

    #[test]
    fn every_operator_of_the_cnn_families_is_known() {
        for op in [
            "Conv",
            "BatchNormalization",
            "Relu",
            "Clip",
            "Sigmoid",
            "Mul",
            "Add",
            "Sub",
            "Div",
            "GlobalAveragePool",
            "AveragePool",
            "MaxPool",
            "Flatten",
            "Gemm",
            "MatMul",
            "Concat",
            "Dropout",
            "Softmax",
            "Identity",
        ] {
            assert!(supported(op), "{op}");
        }
        // Reshape and Pad need constant inputs: known, but refused without them.
        for op in ["LSTM", "Resize", "HardSwish"] {
            assert!(!supported(op), "{op}");
        }
    }
}
