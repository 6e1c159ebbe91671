//! Element-wise operators: activations (Relu, Clip in its attribute (opset 6) and input
//! (opset 11+) forms, Sigmoid, Tanh, HardSigmoid, HardSwish, LeakyRelu, PRelu, Elu),
//! broadcasting arithmetic (Add, Sub, Mul, Div, n-ary Sum) and Dropout.

use burn::tensor::Distribution;
use burn::tensor::activation::{elu, hard_sigmoid, hard_swish, leaky_relu, relu, sigmoid};
use scion_onnx::pb::NodeProto;

use super::super::value::{each_pair, each_rank};
use super::{Constants, Inputs, NetError, Op, Value, attr, float, scalar_input};

pub(super) fn parse(node: &NodeProto, constants: &Constants<'_>) -> Result<Option<Op>, NetError> {
    Ok(Some(match node.op_type.as_str() {
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
        "Tanh" => Op::Tanh,
        "HardSigmoid" => Op::HardSigmoid {
            alpha: float(node, "alpha", 0.2),
            beta: float(node, "beta", 0.5),
        },
        "HardSwish" => Op::HardSwish,
        "LeakyRelu" => Op::LeakyRelu {
            alpha: float(node, "alpha", 0.01),
        },
        "PRelu" => Op::PRelu,
        "Elu" => Op::Elu {
            alpha: float(node, "alpha", 1.0),
        },
        "Add" => Op::Add,
        "Sub" => Op::Sub,
        "Mul" => Op::Mul,
        "Div" => Op::Div,
        "Sum" => Op::Sum,
        "Dropout" => Op::Dropout {
            ratio: match node.input.get(1).filter(|s| !s.is_empty()) {
                Some(_) => scalar_input(node, 1, constants, 0.5)?,
                None => float(node, "ratio", 0.5),
            },
        },
        _ => return Ok(None),
    }))
}

pub(super) fn apply(op: &Op, inputs: &mut Inputs, training: bool) -> Result<Value, NetError> {
    let name = format!("{op:?}");
    let what = name.split([' ', '{']).next().unwrap_or("op").to_string();
    let mut x = || inputs.take(0, &what);
    Ok(match op {
        Op::Relu => each_rank!(x()?, t => relu(t)),
        Op::Clip { min, max } => each_rank!(x()?, t => t.clamp(*min, *max)),
        Op::Sigmoid => each_rank!(x()?, t => sigmoid(t)),
        Op::Tanh => each_rank!(x()?, t => t.tanh()),
        Op::HardSigmoid { alpha, beta } => {
            each_rank!(x()?, t => hard_sigmoid(t, f64::from(*alpha), f64::from(*beta)))
        }
        Op::HardSwish => each_rank!(x()?, t => hard_swish(t)),
        Op::LeakyRelu { alpha } => each_rank!(x()?, t => leaky_relu(t, f64::from(*alpha))),
        Op::Elu { alpha } => each_rank!(x()?, t => elu(t, f64::from(*alpha))),
        Op::PRelu => {
            // relu(x) - slope · relu(-x), the slope broadcast like any operand.
            let x = inputs.take(0, "PRelu")?;
            let slope = inputs.take(1, "PRelu")?;
            let positive = each_rank!(x.clone(), t => relu(t));
            let negative = each_rank!(x, t => relu(t.neg()));
            let scaled = negative.zip(slope, |p| each_pair!(p, a, b => a * b))?;
            positive.zip(scaled, |p| each_pair!(p, a, b => a - b))?
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let a = inputs.take(0, &what)?;
            let b = inputs.take(1, &what)?;
            match op {
                Op::Add => a.zip(b, |p| each_pair!(p, a, b => a + b))?,
                Op::Sub => a.zip(b, |p| each_pair!(p, a, b => a - b))?,
                Op::Mul => a.zip(b, |p| each_pair!(p, a, b => a * b))?,
                _ => a.zip(b, |p| each_pair!(p, a, b => a / b))?,
            }
        }
        Op::Sum => {
            let mut parts = std::mem::replace(inputs, Inputs(Vec::new()))
                .all()
                .into_iter();
            let first = parts
                .next()
                .ok_or_else(|| NetError::Shape("Sum: no inputs".into()))?;
            parts.try_fold(first, |acc, v| acc.zip(v, |p| each_pair!(p, a, b => a + b)))?
        }
        Op::Dropout { ratio } => {
            let x = x()?;
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
        _ => unreachable!("not an element-wise op"),
    })
}
