//! The new head that replaces the backbone's classifier: one dense layer (`linear`) or a
//! hidden layer with ReLU and dropout before it (`mlp:N`). Trained with burn, exported as
//! plain [`Dense`] layers that the ONNX graft turns into `Gemm` nodes.

use std::fmt;
use std::str::FromStr;

use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::prelude::*;
use scion_onnx::patch::Dense;

/// The shape of the head, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadSpec {
    /// Features → classes.
    Linear,
    /// Features → `hidden` (ReLU, dropout) → classes.
    Mlp {
        /// Width of the hidden layer.
        hidden: usize,
    },
}

impl FromStr for HeadSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "linear" {
            return Ok(HeadSpec::Linear);
        }
        if let Some(width) = s.strip_prefix("mlp:") {
            return match width.parse::<usize>() {
                Ok(hidden) if hidden > 0 => Ok(HeadSpec::Mlp { hidden }),
                _ => Err(format!(
                    "'{width}' is not a hidden-layer width (a positive integer, e.g. mlp:512)"
                )),
            };
        }
        Err(format!("'{s}' is not a head: use 'linear' or 'mlp:N'"))
    }
}

impl fmt::Display for HeadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadSpec::Linear => f.write_str("linear"),
            HeadSpec::Mlp { hidden } => write!(f, "mlp:{hidden}"),
        }
    }
}

/// The trainable head.
#[derive(Module, Debug)]
pub struct Head {
    layers: Vec<Linear>,
    activation: Relu,
    dropout: Dropout,
}

impl Head {
    /// A freshly initialised head for `inputs` features and `classes` outputs. Initial
    /// weights come from the device's generator: seed the device first for repeatable runs.
    pub fn new(
        spec: HeadSpec,
        inputs: usize,
        classes: usize,
        dropout: f64,
        device: &Device,
    ) -> Head {
        let widths = match spec {
            HeadSpec::Linear => vec![(inputs, classes)],
            HeadSpec::Mlp { hidden } => vec![(inputs, hidden), (hidden, classes)],
        };
        Head {
            layers: widths
                .into_iter()
                .map(|(i, o)| LinearConfig::new(i, o).init(device))
                .collect(),
            activation: Relu::new(),
            dropout: DropoutConfig::new(dropout).init(),
        }
    }

    /// A head holding `layers` (e.g. a solved linear probe) to train further.
    pub fn from_dense(layers: &[Dense], dropout: f64, device: &Device) -> Head {
        use burn::module::Param;
        Head {
            layers: layers
                .iter()
                .map(|l| {
                    // burn keeps `[in, out]`.
                    let mut w = vec![0.0f32; l.inputs * l.outputs];
                    for o in 0..l.outputs {
                        for i in 0..l.inputs {
                            w[i * l.outputs + o] = l.weight[o * l.inputs + i];
                        }
                    }
                    Linear {
                        weight: Param::from_tensor(Tensor::from_data(
                            TensorData::new(w, [l.inputs, l.outputs]),
                            device,
                        )),
                        bias: Some(Param::from_tensor(Tensor::from_data(
                            TensorData::new(l.bias.clone(), [l.outputs]),
                            device,
                        ))),
                    }
                })
                .collect(),
            activation: Relu::new(),
            dropout: DropoutConfig::new(dropout).init(),
        }
    }

    /// The dropout probability.
    pub fn dropout_prob(&self) -> f64 {
        self.dropout.prob
    }

    /// Logits `[batch, classes]` for features `[batch, inputs]`.
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        let mut x = features;
        for (i, layer) in self.layers.iter().enumerate() {
            if i > 0 {
                x = self.dropout.forward(x);
            }
            x = layer.forward(x);
            if i < last {
                x = self.activation.forward(x);
            }
        }
        x
    }

    /// The layers as plain row-major `[out, in]` matrices (burn keeps `[in, out]`).
    pub fn to_dense(&self) -> Vec<Dense> {
        self.layers
            .iter()
            .map(|layer| {
                let [inputs, outputs] = layer.weight.val().dims();
                let w: Vec<f32> = layer
                    .weight
                    .val()
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .expect("linear weights are f32");
                let mut weight = vec![0.0; inputs * outputs];
                for i in 0..inputs {
                    for o in 0..outputs {
                        weight[o * inputs + i] = w[i * outputs + o];
                    }
                }
                let bias = match &layer.bias {
                    Some(b) => b
                        .val()
                        .into_data()
                        .try_into_vec_as::<f32>()
                        .expect("bias is f32"),
                    None => vec![0.0; outputs],
                };
                Dense {
                    weight,
                    bias,
                    inputs,
                    outputs,
                }
            })
            .collect()
    }
}

/// The head applied on the CPU in plain Rust: what the exported graph computes, used to
/// score cached features without a burn device.
pub fn apply_dense(layers: &[Dense], features: &[f32]) -> Vec<f32> {
    let mut x = features.to_vec();
    for (i, layer) in layers.iter().enumerate() {
        let mut y = layer.bias.clone();
        for (o, out) in y.iter_mut().enumerate() {
            let row = &layer.weight[o * layer.inputs..(o + 1) * layer.inputs];
            *out += row.iter().zip(&x).map(|(w, v)| w * v).sum::<f32>();
        }
        if i + 1 < layers.len() {
            y.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        x = y;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_specs_parse_and_print() {
        assert_eq!("linear".parse::<HeadSpec>(), Ok(HeadSpec::Linear));
        assert_eq!(
            "mlp:512".parse::<HeadSpec>(),
            Ok(HeadSpec::Mlp { hidden: 512 })
        );
        assert_eq!(HeadSpec::Mlp { hidden: 64 }.to_string(), "mlp:64");
        assert!("mlp:0".parse::<HeadSpec>().is_err());
        assert!(
            "mlp:x"
                .parse::<HeadSpec>()
                .expect_err("not a width")
                .contains("'x'")
        );
        assert!(
            "conv"
                .parse::<HeadSpec>()
                .expect_err("not a head")
                .contains("linear")
        );
    }

    #[test]
    fn dense_export_computes_what_burn_computes() {
        let device = Device::flex();
        device.seed(7);
        for spec in [HeadSpec::Linear, HeadSpec::Mlp { hidden: 5 }] {
            let head = Head::new(spec, 6, 3, 0.0, &device);
            let x: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
            let burn_out: Vec<f32> = head
                .forward(Tensor::from_data(
                    TensorData::new(x.clone(), [2, 6]),
                    &device,
                ))
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("f32");
            let dense = head.to_dense();
            assert_eq!(Head::from_dense(&dense, 0.0, &device).to_dense(), dense);
            for r in 0..2 {
                let ours = apply_dense(&dense, &x[r * 6..(r + 1) * 6]);
                for (a, b) in ours.iter().zip(&burn_out[r * 3..(r + 1) * 3]) {
                    assert!((a - b).abs() < 1e-5, "{spec}: {a} vs {b}");
                }
            }
        }
    }
}
