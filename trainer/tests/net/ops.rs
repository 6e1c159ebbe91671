//! The interpreter's operator families, each on a small graph: the forward pass against
//! ONNX Runtime, the backward pass against finite differences. Then every classic
//! architecture (both export styles, seeded random weights), imported, against ONNX
//! Runtime.

use std::collections::HashSet;

use burn::prelude::*;
use scion_edge::engine::{self, EngineKind, EngineOptions, ModelSpec};
use scion_onnx::builder::{
    self, attr_float, attr_int, attr_ints, node, tensor_f32, tensor_i64, value_info_f32,
};
use scion_onnx::pb::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
use scion_tests::ort_lib;
use scion_trainer::net::{LoadOptions, Program, Value};

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            (((i as u32).wrapping_mul(2654435761) ^ seed).wrapping_mul(40503) % 1000) as f32
                / 1000.0
                - 0.5
        })
        .collect()
}

fn model(
    opset: i64,
    nodes: Vec<NodeProto>,
    initializer: Vec<scion_onnx::pb::TensorProto>,
    input: [usize; 4],
) -> ModelProto {
    let dims: Vec<builder::Dim> = input.iter().map(|&d| Ok(d as i64)).collect();
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer,
            input: vec![value_info_f32("input", &dims)],
            output: vec![value_info_f32("out", &[Err("n"), Err("k")])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn input_data(shape: [usize; 4]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect()
}

fn interpreted(model: &ModelProto, trainable: &HashSet<String>, shape: [usize; 4]) -> Vec<f32> {
    let device = Device::flex();
    let (program, params) = Program::load(
        model,
        &LoadOptions {
            trainable: trainable.clone(),
            ..Default::default()
        },
        &device,
    )
    .expect("load");
    let x = Tensor::<4>::from_data(TensorData::new(input_data(shape), shape), &device);
    let out = program.forward(&params, x, false).expect("forward");
    out.outputs["out"]
        .clone()
        .flatten()
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32")
}

fn onnx_runtime(model: &ModelProto, shape: [usize; 4]) -> Vec<f32> {
    let bytes = scion_onnx::io::encode(model);
    let outputs = ["out".to_string()];
    let spec = ModelSpec {
        bytes: &bytes,
        input: "input",
        outputs: &outputs,
        input_shape: shape.to_vec(),
    };
    let options = EngineOptions {
        threads: 1,
        ort_library: Some(ort_lib()),
        spin_wait: false,
        ..Default::default()
    };
    let mut session = engine::prepare(EngineKind::OrtCpu, &spec, &options).expect("ort");
    let out = session
        .run(&engine::Tensor {
            shape: shape.to_vec(),
            data: input_data(shape),
        })
        .expect("run");
    out.get("out").expect("out").data.clone()
}

fn loss(out: Value) -> Tensor<1> {
    let t = out.flatten();
    let n = t.dims()[0];
    let w: Vec<f32> = (0..n).map(|i| ((i % 7) as f32 + 1.0) * 0.3).collect();
    (t.clone() * Tensor::from_data(TensorData::new(w, [n]), &t.device())).sum()
}

fn loss_value(model: &ModelProto, shape: [usize; 4]) -> f64 {
    let out = interpreted(model, &HashSet::new(), shape);
    let t = Tensor::<1>::from_data(TensorData::new(out.clone(), [out.len()]), &Device::flex());
    let v: Vec<f32> = loss(Value::R1(t))
        .into_data()
        .try_into_vec_as()
        .expect("f32");
    f64::from(v[0])
}

/// Forward against ONNX Runtime, then each trainable initializer's gradient against
/// central differences at three positions.
fn check(family: &str, model: &ModelProto, trainable: &[&str], shape: [usize; 4]) {
    let trainable: HashSet<String> = trainable.iter().map(|s| s.to_string()).collect();
    let ours = interpreted(model, &trainable, shape);
    let reference = onnx_runtime(model, shape);
    assert_eq!(ours.len(), reference.len(), "{family}: output sizes");
    let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff <= 1e-4 * scale,
        "{family}: interpreter vs ONNX Runtime max |Δ| {diff} (scale {scale})"
    );
    let device = Device::flex().autodiff();
    let (program, params) = Program::load(
        model,
        &LoadOptions {
            trainable: trainable.clone(),
            ..Default::default()
        },
        &device,
    )
    .expect("load");
    let x = Tensor::<4>::from_data(TensorData::new(input_data(shape), shape), &device);
    let out = program.forward(&params, x, false).expect("forward");
    let grads = loss(out.outputs["out"].clone()).backward();
    let graph = model.graph.as_ref().expect("graph");
    for (index, (name, _)) in program.parameters().iter().enumerate() {
        if !trainable.contains(name) {
            continue;
        }
        let grad = params
            .grad(index, &grads)
            .unwrap_or_else(|| panic!("{family}: {name} has no gradient"));
        let largest = grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        assert!(largest > 1e-3, "{family}: {name}: gradients all but zero");
        let init = graph
            .initializer
            .iter()
            .position(|t| &t.name == name)
            .expect("initializer");
        for k in [0, grad.len() / 2, grad.len() - 1] {
            let eps = 1e-2f32;
            let nudged = |delta: f32| {
                let mut m = model.clone();
                let t = &mut m.graph.as_mut().expect("graph").initializer[init];
                let mut v = builder::tensor_values_f32(t).expect("f32");
                v[k] += delta;
                *t = tensor_f32(name, &t.dims.clone(), v);
                loss_value(&m, shape)
            };
            let numeric = (nudged(eps) - nudged(-eps)) / (2.0 * f64::from(eps));
            let analytic = f64::from(grad[k]);
            assert!(
                (numeric - analytic).abs() <= 3e-3 + 3e-2 * numeric.abs(),
                "{family}: {name}[{k}]: autodiff {analytic} vs finite difference {numeric}"
            );
        }
    }
}

/// `c = Conv(input, w)` with a 1x1 kernel: the trainable layer in front of the ops tested.
fn pointwise_conv() -> NodeProto {
    node(
        "Conv",
        "conv",
        &["input", "w"],
        &["c"],
        vec![attr_ints("kernel_shape", &[1, 1])],
    )
}

#[test]
fn convolution_and_pooling() {
    // auto_pad SAME_UPPER and VALID, MaxPool ceil_mode, AveragePool count_include_pad,
    // both global pools.
    let m = model(
        13,
        vec![
            node(
                "Conv",
                "same",
                &["input", "w1", "b1"],
                &["c1"],
                vec![
                    attr_ints("kernel_shape", &[3, 3]),
                    attr_ints("strides", &[2, 2]),
                    builder::attr_string("auto_pad", "SAME_UPPER"),
                ],
            ),
            node(
                "MaxPool",
                "ceil",
                &["c1"],
                &["p1"],
                vec![
                    attr_ints("kernel_shape", &[2, 2]),
                    attr_ints("strides", &[2, 2]),
                    attr_int("ceil_mode", 1),
                ],
            ),
            node(
                "AveragePool",
                "avg",
                &["c1"],
                &["p2"],
                vec![
                    attr_ints("kernel_shape", &[3, 3]),
                    attr_ints("pads", &[1, 1, 1, 1]),
                    attr_int("count_include_pad", 1),
                ],
            ),
            node(
                "Conv",
                "valid",
                &["p2", "w2"],
                &["c2v"],
                vec![
                    attr_ints("kernel_shape", &[2, 2]),
                    builder::attr_string("auto_pad", "VALID"),
                ],
            ),
            node(
                "Conv",
                "lower",
                &["c2v", "w3"],
                &["c2"],
                vec![
                    attr_ints("kernel_shape", &[2, 2]),
                    attr_ints("strides", &[2, 2]),
                    builder::attr_string("auto_pad", "SAME_LOWER"),
                ],
            ),
            node("GlobalMaxPool", "gmp", &["p1"], &["g1"], vec![]),
            node("GlobalAveragePool", "gap", &["c2"], &["g2"], vec![]),
            node(
                "Concat",
                "cat",
                &["g1", "g2"],
                &["g"],
                vec![attr_int("axis", 1)],
            ),
            node(
                "Flatten",
                "flat",
                &["g"],
                &["out"],
                vec![attr_int("axis", -3)],
            ),
        ],
        vec![
            tensor_f32("w1", &[4, 3, 3, 3], values(108, 1)),
            tensor_f32("b1", &[4], values(4, 2)),
            tensor_f32("w2", &[5, 4, 2, 2], values(80, 3)),
            tensor_f32("w3", &[5, 5, 2, 2], values(100, 13)),
        ],
        [2, 3, 9, 9],
    );
    check("conv/pool", &m, &["w1", "b1", "w2", "w3"], [2, 3, 9, 9]);
}

#[test]
fn normalisation_in_each_opset_form() {
    let bn_inits = |c: usize| {
        vec![
            tensor_f32(
                "scale",
                &[c as i64],
                values(c, 4).iter().map(|v| v + 1.0).collect(),
            ),
            tensor_f32("bias", &[c as i64], values(c, 5)),
            tensor_f32("mean", &[c as i64], values(c, 6)),
            tensor_f32(
                "var",
                &[c as i64],
                values(c, 7).iter().map(|v| v + 1.0).collect(),
            ),
        ]
    };
    for (opset, bn_attrs) in [
        (7, vec![attr_int("spatial", 1), attr_float("epsilon", 1e-3)]),
        (9, vec![attr_float("epsilon", 1e-3)]),
        (
            14,
            vec![attr_int("training_mode", 0), attr_float("momentum", 0.8)],
        ),
        (15, vec![attr_int("training_mode", 0)]),
    ] {
        let mut inits = vec![tensor_f32("w", &[6, 3, 3, 3], values(162, 8))];
        inits.extend(bn_inits(6));
        let m = model(
            opset,
            vec![
                node(
                    "Conv",
                    "conv",
                    &["input", "w"],
                    &["c"],
                    vec![attr_ints("kernel_shape", &[3, 3])],
                ),
                node(
                    "LRN",
                    "lrn5",
                    &["c"],
                    &["l5"],
                    vec![
                        attr_int("size", 5),
                        attr_float("alpha", 0.1),
                        attr_float("beta", 0.75),
                        attr_float("bias", 2.0),
                    ],
                ),
                node(
                    "LRN",
                    "lrn3",
                    &["l5"],
                    &["l2"],
                    vec![attr_int("size", 3), attr_float("alpha", 0.2)],
                ),
                node(
                    "BatchNormalization",
                    "bn",
                    &["l2", "scale", "bias", "mean", "var"],
                    &["b"],
                    bn_attrs,
                ),
                node("Flatten", "flat", &["b"], &["out"], vec![]),
            ],
            inits,
            [2, 3, 5, 5],
        );
        check(
            &format!("norm (opset {opset})"),
            &m,
            &["w", "scale", "bias"],
            [2, 3, 5, 5],
        );
    }
}

#[test]
fn element_wise_activations_and_arithmetic() {
    let m = model(
        14,
        vec![
            pointwise_conv(),
            node(
                "LeakyRelu",
                "leaky",
                &["c"],
                &["a1"],
                vec![attr_float("alpha", 0.1)],
            ),
            node("PRelu", "prelu", &["c", "slope"], &["a2"], vec![]),
            node(
                "Elu",
                "elu",
                &["c"],
                &["a3"],
                vec![attr_float("alpha", 0.7)],
            ),
            node("Tanh", "tanh", &["c"], &["a4"], vec![]),
            node(
                "HardSigmoid",
                "hsig",
                &["c"],
                &["a5"],
                vec![attr_float("alpha", 0.3), attr_float("beta", 0.4)],
            ),
            node("HardSwish", "hswish", &["c"], &["a6"], vec![]),
            node("Clip", "clip", &["c", "lo", "hi"], &["a7"], vec![]),
            node("Sum", "sum", &["a1", "a2", "a3", "a4"], &["s"], vec![]),
            node("Mul", "mul", &["a5", "a6"], &["m"], vec![]),
            node("Sub", "sub", &["s", "m"], &["d"], vec![]),
            node("Div", "div", &["d", "two"], &["q"], vec![]),
            node("Add", "add", &["q", "a7"], &["r"], vec![]),
            node("Sigmoid", "sig", &["r"], &["g"], vec![]),
            node("Relu", "relu", &["g"], &["rr"], vec![]),
            node("Flatten", "flat", &["rr"], &["out"], vec![]),
        ],
        vec![
            tensor_f32(
                "w",
                &[4, 3, 1, 1],
                values(12, 9).iter().map(|v| v * 6.0).collect(),
            ),
            tensor_f32("slope", &[4, 1, 1], values(4, 10)),
            tensor_f32("lo", &[], vec![-0.5]),
            tensor_f32("hi", &[], vec![0.8]),
            tensor_f32("two", &[1, 4, 1, 1], vec![2.0, 3.0, 4.0, 5.0]),
        ],
        [2, 3, 3, 3],
    );
    check("element-wise", &m, &["w", "slope"], [2, 3, 3, 3]);
    // Clip's bounds as attributes (before opset 11).
    let m = model(
        9,
        vec![
            pointwise_conv(),
            node(
                "Clip",
                "relu6",
                &["c"],
                &["r"],
                vec![attr_float("min", -0.3), attr_float("max", 0.6)],
            ),
            node("Flatten", "flat", &["r"], &["out"], vec![]),
        ],
        vec![tensor_f32(
            "w",
            &[4, 3, 1, 1],
            values(12, 14).iter().map(|v| v * 3.0).collect(),
        )],
        [2, 3, 3, 3],
    );
    check("clip (opset 9)", &m, &["w"], [2, 3, 3, 3]);
}

#[test]
fn shapes_splits_slices_and_the_rank_five_shuffle() {
    let m = model(
        13,
        vec![
            pointwise_conv(),
            node(
                "Split",
                "split",
                &["c", "halves"],
                &["a", "b"],
                vec![attr_int("axis", 1)],
            ),
            node(
                "Concat",
                "cat",
                &["b", "a"],
                &["ba"],
                vec![attr_int("axis", 1)],
            ),
            node("Reshape", "five", &["ba", "five_shape"], &["r5"], vec![]),
            node(
                "Transpose",
                "shuffle",
                &["r5"],
                &["t5"],
                vec![attr_ints("perm", &[0, 2, 1, 3, 4])],
            ),
            node("Reshape", "four", &["t5", "four_shape"], &["r4"], vec![]),
            node(
                "Slice",
                "slice",
                &["r4", "starts", "ends", "axes"],
                &["sl"],
                vec![],
            ),
            node(
                "ReduceMean",
                "mean",
                &["sl"],
                &["rm"],
                vec![attr_ints("axes", &[3]), attr_int("keepdims", 0)],
            ),
            node("Unsqueeze", "unsq", &["rm", "axis3"], &["u"], vec![]),
            node("Squeeze", "sq", &["u", "axis3"], &["sq"], vec![]),
            node(
                "Transpose",
                "swap",
                &["sq"],
                &["tt"],
                vec![attr_ints("perm", &[0, 2, 1])],
            ),
            node("Flatten", "flat", &["tt"], &["f"], vec![]),
            node(
                "Softmax",
                "softmax",
                &["f"],
                &["out"],
                vec![attr_int("axis", 1)],
            ),
        ],
        vec![
            tensor_f32(
                "w",
                &[8, 3, 1, 1],
                values(24, 11).iter().map(|v| v * 4.0).collect(),
            ),
            tensor_i64("halves", &[2], &[4, 4]),
            tensor_i64("five_shape", &[5], &[0, 2, 4, 3, 3]),
            tensor_i64("four_shape", &[4], &[0, -1, 3, 3]),
            tensor_i64("starts", &[1], &[1]),
            tensor_i64("ends", &[1], &[3]),
            tensor_i64("axes", &[1], &[2]),
            tensor_i64("axis3", &[1], &[3]),
        ],
        [2, 3, 3, 3],
    );
    check("shape", &m, &["w"], [2, 3, 3, 3]);
    // Before opset 13 Softmax normalises everything from its axis on, as one row.
    let m = model(
        11,
        vec![
            pointwise_conv(),
            node(
                "Softmax",
                "softmax",
                &["c"],
                &["s"],
                vec![attr_int("axis", 1)],
            ),
            node("Flatten", "flat", &["s"], &["out"], vec![]),
        ],
        vec![tensor_f32(
            "w",
            &[4, 3, 1, 1],
            values(12, 12).iter().map(|v| v * 4.0).collect(),
        )],
        [2, 3, 2, 2],
    );
    check("softmax (opset 11)", &m, &["w"], [2, 3, 2, 2]);
}

#[test]
fn every_architecture_runs_in_the_interpreter_as_on_onnx_runtime() {
    use scion_onnx::zoo::{self, Arch, Style};
    let options = zoo::Options {
        input_size: 64,
        width: 0.25,
        classes: 10,
        seed: 5,
    };
    for arch in Arch::ALL {
        for style in [Style::Torch, Style::Caffe2] {
            let what = format!("{} {style:?}", arch.name());
            let mut m = zoo::build(arch, style, &options).expect("build");
            scion_onnx::normalize::normalize(&mut m, None).expect("normalise");
            let output = m.graph.as_ref().expect("graph").output[0].name.clone();
            scion_onnx::patch::Patch::RenameOutput {
                from: output,
                to: "out".into(),
            }
            .apply(&mut m)
            .expect("rename");
            let shape = [2, 3, 64, 64];
            let ours = interpreted(&m, &HashSet::new(), shape);
            let reference = onnx_runtime(&m, shape);
            let scale = reference.iter().fold(1.0f32, |a, v| a.max(v.abs()));
            let diff = ours
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                diff <= 1e-4 * scale,
                "{what}: interpreter vs ONNX Runtime max |Δ| {diff} (scale {scale})"
            );
        }
    }
}
