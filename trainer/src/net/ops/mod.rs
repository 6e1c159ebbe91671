//! The ONNX operators a CNN uses, parsed once from a node's attributes (and constant
//! inputs) into an [`Op`], then applied with burn's differentiable tensor operations.
//! One file per family: convolution and pooling, normalisation, element-wise, shape.

mod conv;
mod elementwise;
mod norm;
mod shape;

use std::collections::HashMap;

use burn::tensor::Tensor;
use scion_onnx::pb::{NodeProto, attribute_proto::AttributeType};

use super::NetError;
use super::value::Value;

pub use conv::{AutoPad, Window};

/// Every operator the interpreter knows, with its attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// 2-D convolution.
    Conv {
        /// Strides, padding, dilations.
        window: Window,
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
    /// Local response normalisation across channels.
    Lrn {
        /// Channels in the window.
        size: usize,
        /// Scale.
        alpha: f32,
        /// Exponent.
        beta: f32,
        /// Offset.
        bias: f32,
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
    /// tanh(x).
    Tanh,
    /// max(0, min(1, alpha x + beta)).
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// x · HardSigmoid(x) with alpha 1/6, beta 1/2.
    HardSwish,
    /// x, or alpha x below 0.
    LeakyRelu {
        /// Slope below 0.
        alpha: f32,
    },
    /// x, or slope · x below 0, the slope a tensor.
    PRelu,
    /// x, or alpha (e^x - 1) below 0.
    Elu {
        /// Scale below 0.
        alpha: f32,
    },
    /// Element-wise sum with broadcasting.
    Add,
    /// Element-wise difference.
    Sub,
    /// Element-wise product.
    Mul,
    /// Element-wise quotient.
    Div,
    /// Sum of any number of inputs.
    Sum,
    /// Mean over the spatial axes, kept as 1x1.
    GlobalAveragePool,
    /// Max over the spatial axes, kept as 1x1.
    GlobalMaxPool,
    /// Average pooling.
    AveragePool {
        /// Window.
        kernel: [usize; 2],
        /// Strides and padding.
        window: Window,
        /// Whether padding counts in the average.
        count_include_pad: bool,
    },
    /// Max pooling.
    MaxPool {
        /// Window.
        kernel: [usize; 2],
        /// Strides, padding, dilations.
        window: Window,
    },
    /// Mean over axes.
    ReduceMean {
        /// The axes (all when empty).
        axes: Vec<i64>,
        /// Keep reduced axes as 1.
        keep_dims: bool,
    },
    /// Collapse to 2-D at `axis`.
    Flatten {
        /// Axis (negative counts from the end).
        axis: i64,
    },
    /// Reshape to a constant shape (0 copies, -1 infers).
    Reshape {
        /// Target shape.
        shape: Vec<i64>,
    },
    /// Permute axes.
    Transpose {
        /// The permutation (reversed axes when empty).
        perm: Vec<usize>,
    },
    /// Remove axes of size 1.
    Squeeze {
        /// The axes (every size-1 axis but the batch when empty).
        axes: Vec<i64>,
    },
    /// Insert axes of size 1.
    Unsqueeze {
        /// The axes, in the output's numbering.
        axes: Vec<i64>,
    },
    /// Split along an axis into parts (several outputs).
    Split {
        /// The axis.
        axis: i64,
        /// Part sizes (equal parts when empty).
        sizes: Vec<usize>,
        /// Number of outputs.
        parts: usize,
    },
    /// A range along axes (step 1).
    Slice {
        /// `(axis, start, end)` per sliced axis, as given (negative counts from the end).
        ranges: Vec<(i64, i64, i64)>,
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
        /// Axis (negative counts from the end).
        axis: i64,
    },
    /// Random zeroing while training; identity otherwise.
    Dropout {
        /// Drop probability.
        ratio: f32,
    },
    /// Softmax along `axis`; before opset 13 over everything from `axis` on, as 2-D.
    Softmax {
        /// Axis.
        axis: i64,
        /// Opset < 13: coerce to 2-D at `axis`.
        coerce_2d: bool,
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
/// is parsed (bounds, shapes, pads, axes, ratios), rather than a tensor or a weight. One
/// table, in `scion-onnx`, shared with block discovery.
pub(crate) fn constant_input(op_type: &str, index: usize) -> bool {
    scion_onnx::blocks::constant_input(op_type, index)
}

/// What parsing a node may read besides its attributes: integer and float initializers
/// by name (shapes, bounds, axes), and the model's opset (attribute forms changed).
pub struct Constants<'a> {
    /// Integer initializers.
    pub ints: &'a HashMap<String, Vec<i64>>,
    /// Float initializers.
    pub floats: &'a HashMap<String, Vec<f32>>,
    /// The default-domain opset.
    pub opset: i64,
}

impl Constants<'_> {
    /// Constant integers at input `index`, if the node has that input.
    fn ints_input(&self, node: &NodeProto, index: usize) -> Result<Option<Vec<i64>>, NetError> {
        match node.input.get(index).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(name) => self
                .ints
                .get(name)
                .cloned()
                .map(Some)
                .ok_or_else(|| bad(node, &format!("input '{name}' must be a constant"))),
        }
    }
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

fn string(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

fn pair(node: &NodeProto, name: &str, default: usize) -> Result<[usize; 2], NetError> {
    match ints(node, name).as_deref() {
        None => Ok([default; 2]),
        Some([a, b]) if *a >= 0 && *b >= 0 => Ok([*a as usize, *b as usize]),
        Some(other) => Err(bad(node, &format!("{name} {other:?} (2-D only)"))),
    }
}

fn bad(node: &NodeProto, what: &str) -> NetError {
    NetError::Unsupported(format!(
        "node '{}' ({}): {what}",
        scion_onnx::infer::display_name(node),
        node.op_type
    ))
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
        let op = conv::parse(node)?
            .or(norm::parse(node)?)
            .or(elementwise::parse(node, constants)?)
            .or(shape::parse(node, constants)?);
        op.ok_or_else(|| {
            NetError::Unsupported(format!(
                "operator {} (node '{}') is not supported",
                node.op_type,
                scion_onnx::infer::display_name(node)
            ))
        })
    }

    /// How many outputs the op writes.
    pub fn outputs(&self) -> usize {
        match self {
            Op::Split { parts, .. } => *parts,
            _ => 1,
        }
    }

    /// Apply to `inputs` (absent optional inputs are `None`). `training` turns on dropout
    /// and batch statistics; batch norm then also returns the batch mean and variance.
    pub fn apply(
        &self,
        inputs: Vec<Option<Value>>,
        training: bool,
    ) -> Result<(Vec<Value>, Option<BatchStats>), NetError> {
        let mut inputs = Inputs(inputs);
        let one = |v: Value| Ok((vec![v], None));
        match self {
            Op::Conv { .. }
            | Op::AveragePool { .. }
            | Op::MaxPool { .. }
            | Op::GlobalAveragePool
            | Op::GlobalMaxPool => one(conv::apply(self, &mut inputs)?),
            Op::BatchNorm { .. } => {
                let (y, stats) = norm::batch_norm(self, &mut inputs, training)?;
                Ok((vec![y], stats))
            }
            Op::Lrn { .. } => one(norm::lrn(self, &mut inputs)?),
            Op::Split { .. } => Ok((shape::split(self, &mut inputs)?, None)),
            Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Slice { .. }
            | Op::Concat { .. }
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::Pad { .. }
            | Op::Softmax { .. }
            | Op::ReduceMean { .. }
            | Op::Identity => one(shape::apply(self, &mut inputs)?),
            _ => one(elementwise::apply(self, &mut inputs, training)?),
        }
    }
}

/// A training-mode batch norm's batch mean and variance.
pub type BatchStats = (Tensor<1>, Tensor<1>);

/// A node's inputs, taken one at a time.
pub(crate) struct Inputs(Vec<Option<Value>>);

impl Inputs {
    fn take(&mut self, i: usize, what: &str) -> Result<Value, NetError> {
        self.0
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| NetError::Shape(format!("{what}: missing input {i}")))
    }

    fn maybe(&mut self, i: usize) -> Option<Value> {
        self.0.get_mut(i).and_then(Option::take)
    }

    fn all(self) -> Vec<Value> {
        self.0.into_iter().flatten().collect()
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
        opset: 13,
    };
    !matches!(Op::parse(&node, &constants), Err(NetError::Unsupported(m)) if m.contains("is not supported"))
}

#[cfg(test)]
mod tests {
    use super::supported;

    #[test]
    fn every_operator_that_block_discovery_promises_is_known() {
        // scion-edge's import reports a backbone as fine-tunable from this list.
        for op in scion_onnx::blocks::INTERPRETED_OPS {
            assert!(supported(op), "{op}");
        }
        for op in ["LSTM", "Resize", "Gather", "Shape"] {
            assert!(!supported(op), "{op}");
        }
    }
}
