//! The classic ImageNet architectures, built as ONNX with seeded He-random weights in the
//! two export styles users bring: torch.onnx-like (opset 17, dynamic batch, `/module/Op`
//! names, `x.view(x.size(0), -1)` as Shape→Gather→Unsqueeze→Concat→Reshape) and
//! caffe2/model-zoo-like (opset 9, IR 3, batch 1, unnamed nodes, weights as graph inputs,
//! Constant and ConstantOfShape nodes, Dropout before each fully connected layer, fixed
//! `[1, N]` Reshapes, Sum for residuals, a final Softmax).
//!
//! No pretrained weights for these exist offline; the structure is what scion's import,
//! feature finder, interpreter and block discovery are tested on. `width` scales every
//! channel count so tests stay small.

mod nets;

use std::collections::HashMap;

use crate::builder::{self, attr_float, attr_int, attr_ints, node, tensor_f32, tensor_i64};
use crate::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, attribute_proto,
};
use crate::{Error, Result};

pub use nets::Arch;

/// How the file looks, as written by one exporter or the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `torch.onnx.export`, opset 17, dynamic batch.
    Torch,
    /// The ONNX model zoo's caffe2 exports, opset 9, IR 3, batch 1.
    Caffe2,
}

impl std::str::FromStr for Style {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "torch" => Ok(Style::Torch),
            "caffe2" => Ok(Style::Caffe2),
            other => Err(format!("unknown style '{other}' (torch or caffe2)")),
        }
    }
}

/// What to build.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Square input size.
    pub input_size: i64,
    /// Channel multiplier (1.0 = the published widths).
    pub width: f32,
    /// Classes of the classifier.
    pub classes: i64,
    /// Seed of the weights.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            input_size: 224,
            width: 1.0,
            classes: 1000,
            seed: 0,
        }
    }
}

/// Build `arch` in `style`.
pub fn build(arch: Arch, style: Style, options: &Options) -> Result<ModelProto> {
    let mut net = Net::new(style, options);
    let logits = nets::build(arch, &mut net)?;
    net.finish(arch.name(), &logits)
}

/// A graph under construction, tracking every activation's `[C, H, W]`.
pub struct Net {
    style: Style,
    options: Options,
    nodes: Vec<NodeProto>,
    initializers: Vec<crate::pb::TensorProto>,
    shapes: HashMap<String, [i64; 3]>,
    scope: Vec<String>,
    counter: usize,
    rng: u64,
}

impl Net {
    fn new(style: Style, options: &Options) -> Net {
        let mut net = Net {
            style,
            options: *options,
            nodes: Vec::new(),
            initializers: Vec::new(),
            shapes: HashMap::new(),
            scope: Vec::new(),
            counter: 0,
            rng: options.seed ^ 0x5C10_2002,
        };
        let s = options.input_size;
        net.shapes.insert("input".into(), [3, s, s]);
        net
    }

    /// The style being written.
    pub fn style(&self) -> Style {
        self.style
    }

    /// A channel count scaled by the width, kept a multiple of 4 (groups and splits).
    pub fn ch(&self, c: i64) -> i64 {
        (((c as f32 * self.options.width) / 4.0).round() as i64).max(1) * 4
    }

    /// `[C, H, W]` of an activation.
    pub fn shape(&self, x: &str) -> [i64; 3] {
        self.shapes[x]
    }

    /// Run `f` with `name` pushed on the module path (torch-style names).
    pub fn scoped<T>(&mut self, name: &str, f: impl FnOnce(&mut Net) -> Result<T>) -> Result<T> {
        self.scope.push(name.to_string());
        let r = f(self);
        self.scope.pop();
        r
    }

    fn normal(&mut self) -> f32 {
        let mut next = || {
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let (u1, u2) = (next().max(1e-12), next());
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// Names for a new node of `op`: (node name, output tensor, parameter prefix).
    fn names(&mut self, op: &str, base: &str) -> (String, String, String) {
        self.counter += 1;
        match self.style {
            Style::Torch => {
                let path = self.scope.join("/");
                let node = if path.is_empty() {
                    format!("/{op}_{}", self.counter)
                } else {
                    format!("/{path}/{op}")
                };
                let node = if self.nodes.iter().any(|n| n.name == node) {
                    format!("{node}_{}", self.counter)
                } else {
                    node
                };
                let params = if path.is_empty() {
                    format!("{base}{}", self.counter)
                } else {
                    format!("{}.{base}{}", path.replace('/', "."), self.counter)
                };
                (node.clone(), format!("{node}_output_0"), params)
            }
            Style::Caffe2 => {
                let t = format!("{base}_{}", self.counter);
                (String::new(), t.clone(), t)
            }
        }
    }

    /// Add a weight tensor in the style's storage: an initializer (torch; caffe2 conv
    /// weights, also listed as graph inputs), a Constant node (caffe2 dense layers) or a
    /// ConstantOfShape (caffe2 constant fills).
    fn weight(&mut self, name: &str, dims: &[i64], values: Vec<f32>, storage: Storage) -> String {
        match (self.style, storage) {
            (Style::Caffe2, Storage::Constant) => {
                self.nodes.push(NodeProto {
                    op_type: "Constant".into(),
                    output: vec![name.into()],
                    attribute: vec![AttributeProto {
                        name: "value".into(),
                        r#type: attribute_proto::AttributeType::Tensor as i32,
                        t: Some(tensor_f32("", dims, values)),
                        ..Default::default()
                    }],
                    ..Default::default()
                });
            }
            (Style::Caffe2, Storage::Fill(v)) => {
                let shape = format!("{name}_shape");
                self.initializers
                    .push(tensor_i64(&shape, &[dims.len() as i64], dims));
                self.nodes.push(NodeProto {
                    op_type: "ConstantOfShape".into(),
                    input: vec![shape],
                    output: vec![name.into()],
                    attribute: vec![AttributeProto {
                        name: "value".into(),
                        r#type: attribute_proto::AttributeType::Tensor as i32,
                        t: Some(tensor_f32("", &[1], vec![v])),
                        ..Default::default()
                    }],
                    ..Default::default()
                });
            }
            _ => self.initializers.push(tensor_f32(name, dims, values)),
        }
        name.to_string()
    }

    fn push(
        &mut self,
        op: &str,
        name: String,
        inputs: &[&str],
        out: &str,
        attrs: Vec<AttributeProto>,
    ) {
        self.nodes.push(node(op, &name, inputs, &[out], attrs));
    }

    /// A convolution (He-normal weights, small random bias when `bias`).
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: &str,
        out_ch: i64,
        kernel: i64,
        stride: i64,
        pad: i64,
        groups: i64,
        bias: bool,
    ) -> String {
        self.conv_with(
            x,
            out_ch,
            kernel,
            stride,
            Padding::Explicit(pad),
            groups,
            bias,
        )
    }

    /// A convolution with `auto_pad` SAME_UPPER (tf2onnx-style).
    pub fn conv_same(
        &mut self,
        x: &str,
        out_ch: i64,
        kernel: i64,
        stride: i64,
        groups: i64,
    ) -> String {
        self.conv_with(x, out_ch, kernel, stride, Padding::SameUpper, groups, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn conv_with(
        &mut self,
        x: &str,
        out_ch: i64,
        kernel: i64,
        stride: i64,
        padding: Padding,
        groups: i64,
        bias: bool,
    ) -> String {
        let [c, h, w] = self.shape(x);
        let (node_name, out, p) = self.names("Conv", "conv");
        let fan_in = (c / groups) * kernel * kernel;
        let std = (2.0 / fan_in as f32).sqrt();
        let n = out_ch * (c / groups) * kernel * kernel;
        let values: Vec<f32> = (0..n).map(|_| self.normal() * std).collect();
        let wname = self.weight(
            &format!("{p}.weight"),
            &[out_ch, c / groups, kernel, kernel],
            values,
            Storage::Initializer,
        );
        let mut inputs = vec![x.to_string(), wname];
        if bias {
            let b: Vec<f32> = (0..out_ch).map(|_| self.normal() * 0.05).collect();
            inputs.push(self.weight(&format!("{p}.bias"), &[out_ch], b, Storage::Initializer));
        }
        let mut attrs = vec![
            attr_ints("kernel_shape", &[kernel, kernel]),
            attr_ints("strides", &[stride, stride]),
        ];
        if groups > 1 {
            attrs.push(attr_int("group", groups));
        }
        let (oh, ow) = match padding {
            Padding::Explicit(pad) => {
                attrs.push(attr_ints("pads", &[pad, pad, pad, pad]));
                (
                    (h + 2 * pad - kernel) / stride + 1,
                    (w + 2 * pad - kernel) / stride + 1,
                )
            }
            Padding::SameUpper => {
                attrs.push(builder::attr_string("auto_pad", "SAME_UPPER"));
                ((h + stride - 1) / stride, (w + stride - 1) / stride)
            }
        };
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.push("Conv", node_name, &refs, &out, attrs);
        self.shapes.insert(out.clone(), [out_ch, oh, ow]);
        out
    }

    fn same(&mut self, x: &str, out: &str) {
        let s = self.shape(x);
        self.shapes.insert(out.to_string(), s);
    }

    /// A unary op with attributes, same shape.
    pub fn unary(&mut self, op: &str, x: &str, attrs: Vec<AttributeProto>) -> String {
        let (name, out, _) = self.names(op, &op.to_ascii_lowercase());
        self.push(op, name, &[x], &out, attrs);
        self.same(x, &out);
        out
    }

    /// ReLU.
    pub fn relu(&mut self, x: &str) -> String {
        self.unary("Relu", x, vec![])
    }

    /// ReLU6 as Clip: bounds as inputs (opset 11+) or attributes (opset 9).
    pub fn relu6(&mut self, x: &str) -> String {
        match self.style {
            Style::Torch => {
                let (name, out, p) = self.names("Clip", "clip");
                let lo = format!("{p}.min");
                let hi = format!("{p}.max");
                self.initializers.push(tensor_f32(&lo, &[], vec![0.0]));
                self.initializers.push(tensor_f32(&hi, &[], vec![6.0]));
                self.push("Clip", name, &[x, &lo, &hi], &out, vec![]);
                self.same(x, &out);
                out
            }
            Style::Caffe2 => self.unary(
                "Clip",
                x,
                vec![attr_float("min", 0.0), attr_float("max", 6.0)],
            ),
        }
    }

    /// HardSwish: the op (opset 14+), or HardSigmoid × x before it.
    pub fn hardswish(&mut self, x: &str) -> String {
        match self.style {
            Style::Torch => self.unary("HardSwish", x, vec![]),
            Style::Caffe2 => {
                let s = self.hardsigmoid(x);
                self.binary("Mul", x, &s)
            }
        }
    }

    /// HardSigmoid with torch's slope 1/6.
    pub fn hardsigmoid(&mut self, x: &str) -> String {
        self.unary(
            "HardSigmoid",
            x,
            vec![attr_float("alpha", 1.0 / 6.0), attr_float("beta", 0.5)],
        )
    }

    /// Batch normalisation; `scale` < 1 damps residual branches so deep random networks
    /// stay in range. Caffe2 style stores the parameters as ConstantOfShape fills.
    pub fn bn(&mut self, x: &str, scale: f32) -> String {
        let [c, _, _] = self.shape(x);
        let (name, out, p) = self.names("BatchNormalization", "bn");
        let mut inputs = Vec::new();
        for (suffix, fill, jitter) in [
            ("weight", scale, 0.1 * scale),
            ("bias", 0.0, 0.05),
            ("running_mean", 0.0, 0.05),
            ("running_var", 1.0, 0.0),
        ] {
            let values: Vec<f32> = (0..c).map(|_| fill + jitter * self.normal()).collect();
            inputs.push(self.weight(&format!("{p}.{suffix}"), &[c], values, Storage::Fill(fill)));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let mut all = vec![x];
        all.extend(refs);
        self.push(
            "BatchNormalization",
            name,
            &all,
            &out,
            vec![attr_float("epsilon", 1e-5)],
        );
        self.same(x, &out);
        out
    }

    /// Conv, batch norm, ReLU.
    pub fn conv_bn_relu(&mut self, x: &str, out_ch: i64, k: i64, s: i64, p: i64) -> String {
        let c = self.conv(x, out_ch, k, s, p, 1, false);
        let b = self.bn(&c, 1.0);
        self.relu(&b)
    }

    /// Local response normalisation (AlexNet, GoogLeNet).
    pub fn lrn(&mut self, x: &str) -> String {
        self.unary(
            "LRN",
            x,
            vec![
                attr_int("size", 5),
                attr_float("alpha", 1e-4),
                attr_float("beta", 0.75),
                attr_float("bias", 1.0),
            ],
        )
    }

    /// Max or average pooling.
    pub fn pool(&mut self, op: &str, x: &str, k: i64, s: i64, p: i64, ceil: bool) -> String {
        let [c, h, w] = self.shape(x);
        let (name, out, _) = self.names(op, &op.to_ascii_lowercase());
        let size = |d: i64| {
            let room = d + 2 * p - k;
            if ceil {
                (room + s - 1) / s + 1
            } else {
                room / s + 1
            }
        };
        let mut attrs = vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("strides", &[s, s]),
        ];
        match (ceil, self.style) {
            (true, Style::Torch) => {
                attrs.push(attr_ints("pads", &[p, p, p, p]));
                attrs.push(attr_int("ceil_mode", 1));
            }
            // Opset 9 has no ceil_mode: caffe2 exports pad the end instead.
            (true, Style::Caffe2) => {
                let end = |d: i64| p + (size(d) - 1) * s + k - d - 2 * p;
                attrs.push(attr_ints("pads", &[p, p, end(h), end(w)]));
            }
            (false, _) => attrs.push(attr_ints("pads", &[p, p, p, p])),
        }
        self.push(op, name, &[x], &out, attrs);
        self.shapes.insert(out.clone(), [c, size(h), size(w)]);
        out
    }

    /// Global average pooling to `[C, 1, 1]`: GlobalAveragePool (torch) or an AveragePool
    /// over the whole map (caffe2).
    pub fn global_pool(&mut self, x: &str) -> String {
        let [c, h, w] = self.shape(x);
        match self.style {
            Style::Torch => {
                let (name, out, _) = self.names("GlobalAveragePool", "pool");
                self.push("GlobalAveragePool", name, &[x], &out, vec![]);
                self.shapes.insert(out.clone(), [c, 1, 1]);
                out
            }
            Style::Caffe2 => {
                let (name, out, _) = self.names("AveragePool", "pool");
                self.push(
                    "AveragePool",
                    name,
                    &[x],
                    &out,
                    vec![
                        attr_ints("kernel_shape", &[h, w]),
                        attr_ints("strides", &[1, 1]),
                    ],
                );
                self.shapes.insert(out.clone(), [c, 1, 1]);
                out
            }
        }
    }

    /// Squeeze-excitation: channel means, two 1x1 convolutions, a gate.
    pub fn squeeze_excite(&mut self, x: &str, reduced: i64) -> String {
        let [c, _, _] = self.shape(x);
        let pooled = match self.style {
            Style::Torch => self.global_pool(x),
            Style::Caffe2 => {
                let (name, out, _) = self.names("ReduceMean", "mean");
                self.push(
                    "ReduceMean",
                    name,
                    &[x],
                    &out,
                    vec![attr_ints("axes", &[2, 3]), attr_int("keepdims", 1)],
                );
                self.shapes.insert(out.clone(), [c, 1, 1]);
                out
            }
        };
        let a = self.conv(&pooled, reduced, 1, 1, 0, 1, true);
        let a = self.relu(&a);
        let b = self.conv(&a, c, 1, 1, 0, 1, true);
        let gate = self.hardsigmoid(&b);
        self.binary("Mul", x, &gate)
    }

    /// An element-wise op of two activations (shape of the first).
    pub fn binary(&mut self, op: &str, a: &str, b: &str) -> String {
        let (name, out, _) = self.names(op, &op.to_ascii_lowercase());
        self.push(op, name, &[a, b], &out, vec![]);
        self.same(a, &out);
        out
    }

    /// A residual join: Add (torch) or Sum (caffe2).
    pub fn residual(&mut self, a: &str, b: &str) -> String {
        match self.style {
            Style::Torch => self.binary("Add", a, b),
            Style::Caffe2 => self.binary("Sum", a, b),
        }
    }

    /// Concatenate channels.
    pub fn concat(&mut self, xs: &[String]) -> String {
        let [_, h, w] = self.shape(&xs[0]);
        let c: i64 = xs.iter().map(|x| self.shape(x)[0]).sum();
        let (name, out, _) = self.names("Concat", "concat");
        let refs: Vec<&str> = xs.iter().map(String::as_str).collect();
        self.push("Concat", name, &refs, &out, vec![attr_int("axis", 1)]);
        self.shapes.insert(out.clone(), [c, h, w]);
        out
    }

    /// Split channels in two halves: Split with a `split` input (opset 13+), or two
    /// Slices with attributes (opset 9).
    pub fn halves(&mut self, x: &str) -> (String, String) {
        let [c, h, w] = self.shape(x);
        let half = c / 2;
        match self.style {
            Style::Torch => {
                let (name, out, p) = self.names("Split", "split");
                let sizes = format!("{p}.split");
                self.initializers
                    .push(tensor_i64(&sizes, &[2], &[half, c - half]));
                let (a, b) = (format!("{out}_a"), format!("{out}_b"));
                self.nodes.push(node(
                    "Split",
                    &name,
                    &[x, &sizes],
                    &[&a, &b],
                    vec![attr_int("axis", 1)],
                ));
                self.shapes.insert(a.clone(), [half, h, w]);
                self.shapes.insert(b.clone(), [c - half, h, w]);
                (a, b)
            }
            Style::Caffe2 => {
                let mut parts = Vec::new();
                for (start, end) in [(0, half), (half, c)] {
                    let (name, out, _) = self.names("Slice", "slice");
                    self.push(
                        "Slice",
                        name,
                        &[x],
                        &out,
                        vec![
                            attr_ints("starts", &[start]),
                            attr_ints("ends", &[end]),
                            attr_ints("axes", &[1]),
                        ],
                    );
                    self.shapes.insert(out.clone(), [end - start, h, w]);
                    parts.push(out);
                }
                let b = parts.pop().expect("two");
                (parts.pop().expect("two"), b)
            }
        }
    }

    /// A Reshape to `[batch, rest…]`: the batch from Shape→Gather→Unsqueeze→Concat (torch)
    /// or a fixed 1 (caffe2).
    fn reshape_batch(&mut self, x: &str, rest: &[i64]) -> String {
        let (name, out, p) = self.names("Reshape", "reshape");
        let target = match self.style {
            Style::Torch => {
                let shape = format!("{out}_shape");
                let batch = format!("{out}_batch");
                let batch1 = format!("{out}_batch1");
                let target = format!("{out}_target");
                let (zero, axes, rest_name) = (
                    format!("{p}.zero"),
                    format!("{p}.axes"),
                    format!("{p}.rest"),
                );
                self.initializers.push(tensor_i64(&zero, &[], &[0]));
                self.initializers.push(tensor_i64(&axes, &[1], &[0]));
                self.initializers
                    .push(tensor_i64(&rest_name, &[rest.len() as i64], rest));
                self.nodes.push(node(
                    "Shape",
                    &format!("{name}_shape"),
                    &[x],
                    &[&shape],
                    vec![],
                ));
                self.nodes.push(node(
                    "Gather",
                    &format!("{name}_gather"),
                    &[&shape, &zero],
                    &[&batch],
                    vec![attr_int("axis", 0)],
                ));
                self.nodes.push(node(
                    "Unsqueeze",
                    &format!("{name}_unsqueeze"),
                    &[&batch, &axes],
                    &[&batch1],
                    vec![],
                ));
                self.nodes.push(node(
                    "Concat",
                    &format!("{name}_concat"),
                    &[&batch1, &rest_name],
                    &[&target],
                    vec![attr_int("axis", 0)],
                ));
                target
            }
            Style::Caffe2 => {
                let target = format!("{out}_shape");
                let mut dims = vec![1];
                dims.extend(rest);
                self.initializers
                    .push(tensor_i64(&target, &[dims.len() as i64], &dims));
                target
            }
        };
        self.push("Reshape", name, &[x, &target], &out, vec![]);
        out
    }

    /// To `[batch, C*H*W]` for a dense layer: Flatten (torch, `flatten_op`), the
    /// view(size(0), -1) pattern (torch), or a fixed Reshape (caffe2).
    pub fn flatten(&mut self, x: &str, flatten_op: bool) -> String {
        let [c, h, w] = self.shape(x);
        let out = if self.style == Style::Torch && flatten_op {
            let (name, out, _) = self.names("Flatten", "flatten");
            self.push("Flatten", name, &[x], &out, vec![attr_int("axis", 1)]);
            out
        } else {
            let rest = if self.style == Style::Torch {
                -1
            } else {
                c * h * w
            };
            self.reshape_batch(x, &[rest])
        };
        self.shapes.insert(out.clone(), [c * h * w, 1, 1]);
        out
    }

    /// ShuffleNet's channel shuffle: Reshape to 5-D, Transpose, Reshape back.
    pub fn channel_shuffle(&mut self, x: &str, groups: i64) -> String {
        let [c, h, w] = self.shape(x);
        let five = self.reshape_batch(x, &[groups, c / groups, h, w]);
        let (name, out, _) = self.names("Transpose", "transpose");
        self.push(
            "Transpose",
            name,
            &[&five],
            &out,
            vec![attr_ints("perm", &[0, 2, 1, 3, 4])],
        );
        let rest = if self.style == Style::Torch { -1 } else { c };
        let back = self.reshape_batch(&out, &[rest, h, w]);
        self.shapes.insert(back.clone(), [c, h, w]);
        back
    }

    /// A fully connected layer (`[batch, in] → [batch, out]`); caffe2 style puts a
    /// Dropout before it and holds the weights in a Constant node.
    pub fn fc(&mut self, x: &str, out_features: i64) -> String {
        let [c, _, _] = self.shape(x);
        let x = if self.style == Style::Caffe2 {
            let (name, out, _) = self.names("Dropout", "drop");
            let mask = format!("{out}_mask");
            self.nodes.push(node(
                "Dropout",
                &name,
                &[x],
                &[&out, &mask],
                vec![attr_float("ratio", 0.5)],
            ));
            self.same(x, &out);
            out
        } else {
            x.to_string()
        };
        let (name, out, p) = self.names("Gemm", "fc");
        let std = (2.0 / c as f32).sqrt();
        let values: Vec<f32> = (0..out_features * c).map(|_| self.normal() * std).collect();
        let wname = self.weight(
            &format!("{p}.weight"),
            &[out_features, c],
            values,
            Storage::Constant,
        );
        let b: Vec<f32> = (0..out_features).map(|_| self.normal() * 0.05).collect();
        let bname = self.weight(
            &format!("{p}.bias"),
            &[out_features],
            b,
            Storage::Initializer,
        );
        self.push(
            "Gemm",
            name,
            &[&x, &wname, &bname],
            &out,
            vec![
                attr_int("transB", 1),
                attr_float("alpha", 1.0),
                attr_float("beta", 1.0),
            ],
        );
        self.shapes.insert(out.clone(), [out_features, 1, 1]);
        out
    }

    fn finish(mut self, name: &str, logits: &str) -> Result<ModelProto> {
        let classes = self.options.classes;
        let size = self.options.input_size;
        let (output, opset, ir, batch): (String, i64, i64, builder::Dim) = match self.style {
            Style::Torch => (logits.to_string(), 17, 8, Err("batch_size")),
            Style::Caffe2 => {
                self.nodes.push(node(
                    "Softmax",
                    "",
                    &[logits],
                    &["prob"],
                    vec![attr_int("axis", 1)],
                ));
                ("prob".into(), 9, 3, Ok(1))
            }
        };
        let mut input = vec![builder::value_info_f32(
            "input",
            &[batch, Ok(3), Ok(size), Ok(size)],
        )];
        if self.style == Style::Caffe2 {
            // IR 3: every initializer is also a graph input.
            input.extend(self.initializers.iter().map(|t| {
                let dims: Vec<builder::Dim> = t.dims.iter().map(|&d| Ok(d)).collect();
                let mut v = builder::value_info_f32(&t.name, &dims);
                if let Some(crate::pb::type_proto::Value::TensorType(tt)) =
                    v.r#type.as_mut().and_then(|t| t.value.as_mut())
                {
                    tt.elem_type = t.data_type;
                }
                v
            }));
        }
        let model = ModelProto {
            ir_version: ir,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            producer_name: match self.style {
                Style::Torch => "pytorch".into(),
                Style::Caffe2 => "onnx-caffe2".into(),
            },
            doc_string: format!(
                "{name} with seeded He-random weights (seed {}, width {}), {:?} export style; \
                 built by scion for tests, not pretrained",
                self.options.seed, self.options.width, self.style
            ),
            graph: Some(GraphProto {
                name: name.into(),
                node: self.nodes,
                initializer: self.initializers,
                input,
                output: vec![builder::value_info_f32(&output, &[batch, Ok(classes)])],
                ..Default::default()
            }),
            ..Default::default()
        };
        crate::io::validate(&model).map_err(|e| Error::Import(format!("{name}: {e}")))?;
        Ok(model)
    }
}

#[derive(Debug, Clone, Copy)]
enum Storage {
    Initializer,
    Constant,
    Fill(f32),
}

#[derive(Debug, Clone, Copy)]
enum Padding {
    Explicit(i64),
    SameUpper,
}
