//! Convolution and pooling: Conv, MaxPool, AveragePool, GlobalAveragePool,
//! GlobalMaxPool, with explicit pads or `auto_pad` (SAME_UPPER, SAME_LOWER, VALID)
//! resolved from the input's size at run time, and `ceil_mode`.

use burn::tensor::Tensor;
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use scion_onnx::pb::NodeProto;

use super::{Inputs, NetError, Op, Value, bad, int, ints, pair, string};

/// How padding is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPad {
    /// The explicit `pads`.
    NotSet,
    /// Output = ceil(input / stride), extra padding at the end.
    SameUpper,
    /// Output = ceil(input / stride), extra padding at the start.
    SameLower,
    /// No padding.
    Valid,
}

/// Strides, padding and dilations of a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Strides.
    pub strides: [usize; 2],
    /// `(begin, end)` padding per spatial axis (with [`AutoPad::NotSet`]).
    pub pads: [(usize, usize); 2],
    /// Dilations.
    pub dilations: [usize; 2],
    /// Padding policy.
    pub auto_pad: AutoPad,
    /// Ceil instead of floor for the output size (pooling).
    pub ceil_mode: bool,
}

impl Window {
    fn parse(node: &NodeProto) -> Result<Window, NetError> {
        let auto_pad = match string(node, "auto_pad").as_deref() {
            None | Some("NOTSET") | Some("") => AutoPad::NotSet,
            Some("SAME_UPPER") => AutoPad::SameUpper,
            Some("SAME_LOWER") => AutoPad::SameLower,
            Some("VALID") => AutoPad::Valid,
            Some(other) => return Err(bad(node, &format!("auto_pad {other}"))),
        };
        let pads = match ints(node, "pads").as_deref() {
            None => [(0, 0); 2],
            Some([t, l, b, r]) if [t, l, b, r].iter().all(|p| **p >= 0) => {
                [(*t as usize, *b as usize), (*l as usize, *r as usize)]
            }
            Some(other) => return Err(bad(node, &format!("pads {other:?}"))),
        };
        Ok(Window {
            strides: pair(node, "strides", 1)?,
            pads,
            dilations: pair(node, "dilations", 1)?,
            auto_pad,
            ceil_mode: int(node, "ceil_mode", 0) != 0,
        })
    }

    /// The `(begin, end)` padding for an input of `size` and a `kernel`.
    pub fn resolve(&self, size: [usize; 2], kernel: [usize; 2]) -> [(usize, usize); 2] {
        let mode = match self.auto_pad {
            AutoPad::NotSet => return self.pads,
            AutoPad::SameUpper => "SAME_UPPER",
            AutoPad::SameLower => "SAME_LOWER",
            AutoPad::Valid => "VALID",
        };
        [0, 1].map(|i| {
            let (_, (b, e)) = scion_onnx::infer::window_out(
                size[i] as i64,
                kernel[i] as i64,
                self.strides[i] as i64,
                self.dilations[i] as i64,
                (0, 0),
                mode,
                false,
            );
            (b as usize, e as usize)
        })
    }
}

pub(super) fn parse(node: &NodeProto) -> Result<Option<Op>, NetError> {
    Ok(Some(match node.op_type.as_str() {
        "Conv" => {
            if ints(node, "kernel_shape").is_some_and(|k| k.len() != 2) {
                return Err(bad(node, "only 2-D convolutions"));
            }
            Op::Conv {
                window: Window::parse(node)?,
                groups: int(node, "group", 1).max(1) as usize,
            }
        }
        "AveragePool" => Op::AveragePool {
            kernel: pair(node, "kernel_shape", 1)?,
            window: Window::parse(node)?,
            count_include_pad: int(node, "count_include_pad", 0) != 0,
        },
        "MaxPool" => {
            if node.output.len() > 1 && !node.output[1].is_empty() {
                return Err(bad(node, "the indices output"));
            }
            Op::MaxPool {
                kernel: pair(node, "kernel_shape", 1)?,
                window: Window::parse(node)?,
            }
        }
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "GlobalMaxPool" => Op::GlobalMaxPool,
        _ => return Ok(None),
    }))
}

pub(super) fn apply(op: &Op, inputs: &mut Inputs) -> Result<Value, NetError> {
    let size = |x: &Tensor<4>| {
        let d = x.dims();
        [d[2], d[3]]
    };
    Ok(Value::R4(match op {
        Op::Conv { window, groups } => {
            let x = inputs.take(0, "Conv")?.r4("Conv input")?;
            let w = inputs.take(1, "Conv")?.r4("Conv weight")?;
            let b = inputs.maybe(2).map(|b| b.r1("Conv bias")).transpose()?;
            let wd = w.dims();
            let padding = window.resolve(size(&x), [wd[2], wd[3]]);
            let options = ConvOptions {
                stride: window.strides,
                padding,
                dilation: window.dilations,
                groups: *groups,
            };
            conv2d(x, w, b, options)
        }
        Op::AveragePool {
            kernel,
            window,
            count_include_pad,
        } => {
            let x = inputs.take(0, "AveragePool")?.r4("AveragePool")?;
            let options = AvgPoolOptions {
                kernel_size: *kernel,
                stride: window.strides,
                padding: window.resolve(size(&x), *kernel),
                count_include_pad: *count_include_pad,
                ceil_mode: window.ceil_mode,
            };
            avg_pool2d(x, options)
        }
        Op::MaxPool { kernel, window } => {
            let x = inputs.take(0, "MaxPool")?.r4("MaxPool")?;
            let options = MaxPoolOptions {
                kernel_size: *kernel,
                stride: window.strides,
                padding: window.resolve(size(&x), *kernel),
                dilation: window.dilations,
                ceil_mode: window.ceil_mode,
            };
            max_pool2d(x, options)
        }
        Op::GlobalAveragePool => {
            let x = inputs
                .take(0, "GlobalAveragePool")?
                .r4("GlobalAveragePool")?;
            x.mean_dim(3).mean_dim(2)
        }
        Op::GlobalMaxPool => {
            let x = inputs.take(0, "GlobalMaxPool")?.r4("GlobalMaxPool")?;
            x.max_dim(3).max_dim(2)
        }
        _ => unreachable!("not a window op"),
    }))
}
