//! Normalisation: BatchNormalization (the opset 7 `spatial`, 9, 14 `training_mode` and
//! 15 forms read alike: inference uses the running statistics, training the batch's) and
//! LRN across channels.

use burn::tensor::Tensor;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::{AvgPoolOptions, PadMode};
use scion_onnx::pb::NodeProto;

use super::{Inputs, NetError, Op, Value, bad, float, int};

pub(super) fn parse(node: &NodeProto) -> Result<Option<Op>, NetError> {
    Ok(Some(match node.op_type.as_str() {
        "BatchNormalization" => {
            if int(node, "spatial", 1) == 0 {
                return Err(bad(node, "spatial = 0 (per-activation statistics)"));
            }
            Op::BatchNorm {
                epsilon: f64::from(float(node, "epsilon", 1e-5)),
                momentum: f64::from(float(node, "momentum", 0.9)),
            }
        }
        "LRN" => {
            let size = int(node, "size", 0);
            if size < 1 {
                return Err(bad(node, "size must be positive"));
            }
            Op::Lrn {
                size: size as usize,
                alpha: float(node, "alpha", 1e-4),
                beta: float(node, "beta", 0.75),
                bias: float(node, "bias", 1.0),
            }
        }
        _ => return Ok(None),
    }))
}

type Stats = Option<super::BatchStats>;

pub(super) fn batch_norm(
    op: &Op,
    inputs: &mut Inputs,
    training: bool,
) -> Result<(Value, Stats), NetError> {
    let Op::BatchNorm { epsilon, .. } = op else {
        unreachable!("not a batch norm")
    };
    let x = inputs
        .take(0, "BatchNormalization")?
        .r4("BatchNormalization input")?;
    let scale = inputs.take(1, "BatchNormalization")?.r1("scale")?;
    let bias = inputs.take(2, "BatchNormalization")?.r1("bias")?;
    let running_mean = inputs.take(3, "BatchNormalization")?.r1("mean")?;
    let running_var = inputs.take(4, "BatchNormalization")?.r1("var")?;
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
    let y = (x - channel(mean)) / channel(var.add_scalar(*epsilon)).sqrt() * channel(scale)
        + channel(bias);
    Ok((Value::R4(y), stats))
}

/// `x / (bias + alpha / size · Σ x²)^beta`, the sum over `size` neighbouring channels
/// (⌊(size-1)/2⌋ before, ⌈(size-1)/2⌉ after), as an average pool over the channel axis.
pub(super) fn lrn(op: &Op, inputs: &mut Inputs) -> Result<Value, NetError> {
    let Op::Lrn {
        size,
        alpha,
        beta,
        bias,
    } = op
    else {
        unreachable!("not an LRN")
    };
    let x = inputs.take(0, "LRN")?.r4("LRN")?;
    let [n, c, h, w] = x.dims();
    let squares = x.clone().powi_scalar(2).reshape([n, 1, c, h * w]);
    let before = (size - 1) / 2;
    let after = size - 1 - before;
    let padded = squares.pad([(before, after), (0, 0)], PadMode::Constant(0.0));
    let options = AvgPoolOptions {
        kernel_size: [*size, 1],
        stride: [1, 1],
        padding: [(0, 0), (0, 0)],
        count_include_pad: true,
        ceil_mode: false,
    };
    let sums = avg_pool2d(padded, options).mul_scalar(*size as f32);
    let denominator = sums
        .mul_scalar(alpha / *size as f32)
        .add_scalar(*bias)
        .powf_scalar(*beta)
        .reshape([n, c, h, w]);
    Ok(Value::R4(x / denominator))
}
