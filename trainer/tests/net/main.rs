//! The differentiable ONNX interpreter: its forward pass against tract on the real
//! backbone, and its gradients against finite differences on a small graph that uses every
//! operator family; per family and per architecture in `ops`.

mod ops;

use std::collections::HashSet;

use burn::prelude::*;
use scion_edge::engine::{self, EngineKind, EngineOptions};
use scion_onnx::builder::{self, attr_float, attr_int, attr_ints, node, tensor_f32, tensor_i64};
use scion_onnx::pb::{GraphProto, ModelProto};
use scion_tests::{asset, ort_lib};
use scion_trainer::net::{LoadOptions, Program, Value};

fn lite0() -> scion_edge::Model {
    scion_edge::Model::load(
        &asset("models/efficientnet-lite0.onnx"),
        &scion_edge::ContractOverrides::default(),
    )
    .expect("backbone")
}

#[test]
fn burn_forward_of_lite0_matches_tract() {
    let model = lite0();
    let photos = ["gold_fish.jpg", "puppy.jpg", "tent.jpg"];
    let data: Vec<f32> = photos
        .iter()
        .flat_map(|p| {
            let bytes = std::fs::read(asset(&format!("assets/photos/{p}"))).expect("photo");
            scion_edge::preprocess::preprocess(&bytes, &model.card.preprocessing).expect("pre")
        })
        .collect();
    let shape = model.card.preprocessing.input_shape(photos.len());
    let options = EngineOptions {
        threads: 2,
        ort_library: Some(ort_lib()),
        spin_wait: false,
        ..Default::default()
    };
    let mut tract = engine::prepare(EngineKind::Tract, &model.spec(), &options).expect("tract");
    let reference = tract
        .run(&engine::Tensor {
            shape: shape.clone(),
            data: data.clone(),
        })
        .expect("run");
    let reference = &reference.get("logits").expect("logits").data;

    let device = Device::flex();
    let (program, params) =
        Program::load(&model.proto, &LoadOptions::default(), &device).expect("interpretable");
    let input = Tensor::<4>::from_data(
        TensorData::new(data, [shape[0], shape[1], shape[2], shape[3]]),
        &device,
    );
    let out = program.forward(&params, input, false).expect("forward");
    let logits: Vec<f32> = out.outputs["logits"]
        .clone()
        .flatten()
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32");
    assert_eq!(logits.len(), reference.len());
    let max_diff = logits
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff < 1e-4, "burn vs tract: max |Δlogit| {max_diff}");
}

/// Input [2, 3, 6, 6] → Pad → Conv 3x3 (asymmetric pads) → BatchNorm → Clip (ReLU6) →
/// Mul by Sigmoid (swish) → depthwise Conv + Add (residual) → MaxPool → AveragePool → Sub/Div
/// by constants → GlobalAveragePool → Flatten → Gemm ─┐
///                                     └→ Reshape → MatMul ─┴→ Concat → Relu → Softmax
fn tiny_graph() -> ModelProto {
    let values = |n: usize, seed: u32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761) ^ seed).wrapping_mul(40503) % 1000) as f32
                    / 1000.0
                    - 0.5
            })
            .collect()
    };
    let initializer = vec![
        tensor_f32("w1", &[4, 3, 3, 3], values(108, 1)),
        tensor_f32("b1", &[4], values(4, 2)),
        tensor_f32(
            "bn.scale",
            &[4],
            values(4, 3).iter().map(|v| v + 1.0).collect(),
        ),
        tensor_f32("bn.bias", &[4], values(4, 4)),
        tensor_f32("bn.mean", &[4], values(4, 5)),
        tensor_f32(
            "bn.var",
            &[4],
            values(4, 6).iter().map(|v| v + 1.0).collect(),
        ),
        tensor_f32("relu6.min", &[], vec![0.0]),
        tensor_f32("relu6.max", &[], vec![6.0]),
        tensor_f32("dw", &[4, 1, 3, 3], values(36, 7)),
        tensor_f32("shift", &[1, 4, 1, 1], values(4, 8)),
        tensor_f32("two", &[], vec![2.0]),
        tensor_f32("fc.w", &[3, 4], values(12, 9)),
        tensor_f32("fc.b", &[3], values(3, 10)),
        tensor_f32("mm.w", &[4, 2], values(8, 11)),
        tensor_i64("pads", &[8], &[0, 0, 1, 0, 0, 0, 0, 1]),
        tensor_i64("shape", &[2], &[0, -1]),
    ];
    let nodes = vec![
        node("Pad", "pad", &["input", "pads"], &["padded"], vec![]),
        node(
            "Conv",
            "conv",
            &["padded", "w1", "b1"],
            &["c1"],
            vec![
                attr_ints("pads", &[1, 0, 0, 1]),
                attr_ints("kernel_shape", &[3, 3]),
            ],
        ),
        node(
            "BatchNormalization",
            "bn",
            &["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"],
            &["b"],
            vec![attr_float("epsilon", 1e-3)],
        ),
        node(
            "Clip",
            "relu6",
            &["b", "relu6.min", "relu6.max"],
            &["r"],
            vec![],
        ),
        node("Sigmoid", "sig", &["r"], &["s"], vec![]),
        node("Mul", "swish", &["r", "s"], &["sw"], vec![]),
        node(
            "Conv",
            "dwconv",
            &["sw", "dw"],
            &["d"],
            vec![attr_ints("pads", &[1, 1, 1, 1]), attr_int("group", 4)],
        ),
        node("Add", "residual", &["d", "sw"], &["res"], vec![]),
        node(
            "MaxPool",
            "maxpool",
            &["res"],
            &["mp"],
            vec![
                attr_ints("kernel_shape", &[2, 2]),
                attr_ints("strides", &[1, 1]),
            ],
        ),
        node(
            "AveragePool",
            "avgpool",
            &["mp"],
            &["ap"],
            vec![
                attr_ints("kernel_shape", &[2, 2]),
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[0, 0, 1, 1]),
            ],
        ),
        node("Sub", "sub", &["ap", "shift"], &["sh"], vec![]),
        node("Div", "div", &["sh", "two"], &["dv"], vec![]),
        node("GlobalAveragePool", "gap", &["dv"], &["g"], vec![]),
        node("Flatten", "flatten", &["g"], &["f"], vec![]),
        node("Identity", "id", &["f"], &["fi"], vec![]),
        node(
            "Gemm",
            "fc",
            &["fi", "fc.w", "fc.b"],
            &["fc"],
            vec![attr_int("transB", 1), attr_float("alpha", 0.5)],
        ),
        node("Reshape", "reshape", &["g", "shape"], &["g2"], vec![]),
        node("MatMul", "mm", &["g2", "mm.w"], &["m"], vec![]),
        node(
            "Concat",
            "cat",
            &["fc", "m"],
            &["cat"],
            vec![attr_int("axis", 1)],
        ),
        node("Relu", "relu", &["cat"], &["rl"], vec![]),
        node(
            "Softmax",
            "softmax",
            &["rl"],
            &["out"],
            vec![attr_int("axis", 1)],
        ),
    ];
    ModelProto {
        ir_version: builder::IR_VERSION,
        opset_import: vec![builder::default_opset()],
        graph: Some(GraphProto {
            name: "tiny".into(),
            node: nodes,
            initializer,
            input: vec![builder::value_info_f32(
                "input",
                &[Ok(2), Ok(3), Ok(6), Ok(6)],
            )],
            output: vec![builder::value_info_f32("out", &[Ok(2), Ok(5)])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn input(device: &Device) -> Tensor<4> {
    let data: Vec<f32> = (0..216)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(data, [2, 3, 6, 6]), device)
}

/// A scalar loss with a different weight on every output.
fn loss(out: Value) -> Tensor<1> {
    let t = out.flatten();
    let n = t.dims()[0];
    let w: Vec<f32> = (0..n).map(|i| (i as f32 + 1.0) * 0.3).collect();
    (t.clone() * Tensor::from_data(TensorData::new(w, [n]), &t.device())).sum()
}

fn loss_value(model: &ModelProto, trainable: &HashSet<String>, training: bool) -> f64 {
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
    let out = program
        .forward(&params, input(&device), training)
        .expect("forward");
    let v: Vec<f32> = loss(out.outputs["out"].clone())
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32");
    f64::from(v[0])
}

#[test]
fn gradients_match_finite_differences_for_every_operator() {
    let model = tiny_graph();
    let trainable: HashSet<String> = [
        "w1", "b1", "bn.scale", "bn.bias", "dw", "fc.w", "fc.b", "mm.w",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Inference-mode batch norm (frozen statistics), then training mode (batch statistics).
    for training in [false, true] {
        let device = Device::flex().autodiff();
        let (program, params) = Program::load(
            &model,
            &LoadOptions {
                trainable: trainable.clone(),
                ..Default::default()
            },
            &device,
        )
        .expect("load");
        let out = program
            .forward(&params, input(&device), training)
            .expect("forward");
        let grads = loss(out.outputs["out"].clone()).backward();
        let names: Vec<String> = program.parameters().iter().map(|p| p.0.clone()).collect();
        for (index, name) in names.iter().enumerate() {
            let grad = params.grad(index, &grads);
            if !trainable.contains(name) {
                assert!(grad.is_none(), "{name} is frozen but got a gradient");
                continue;
            }
            let grad = grad.unwrap_or_else(|| panic!("{name}: no gradient"));
            let largest = grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
            if training && name == "b1" {
                // Batch statistics subtract the batch mean: a bias before them cancels.
                assert!(
                    largest < 1e-5,
                    "b1 should not matter in training mode: {largest}"
                );
                continue;
            }
            assert!(
                largest > 1e-3,
                "{name}: gradients all but zero ({largest}); the check would be vacuous"
            );
            let init = model
                .graph
                .as_ref()
                .expect("graph")
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
                    loss_value(&m, &trainable, training)
                };
                let numeric = (nudged(eps) - nudged(-eps)) / (2.0 * f64::from(eps));
                let analytic = f64::from(grad[k]);
                assert!(
                    (numeric - analytic).abs() <= 2e-3 + 2e-2 * numeric.abs(),
                    "{name}[{k}] (training {training}): autodiff {analytic} vs finite difference {numeric}"
                );
            }
        }
    }
}

#[test]
fn an_unsupported_operator_is_named_with_its_node() {
    let mut model = tiny_graph();
    model.graph.as_mut().expect("graph").node[4].op_type = "Resize".into();
    let err = Program::load(&model, &LoadOptions::default(), &Device::flex())
        .expect_err("Resize is not supported");
    let message = err.to_string();
    assert!(
        message.contains("Resize") && message.contains("'sig'"),
        "{message}"
    );
}

#[test]
fn lite0_blocks_unfreeze_policies_and_write_back() {
    use scion_onnx::patch::Patch;
    use scion_trainer::net::freeze::{Unfreeze, blocks, boundary, trainable};
    let model = lite0();
    let graph = model.proto.graph.as_ref().expect("graph");
    let found = blocks(graph, "features").expect("blocks");
    let names: Vec<&str> = found.iter().map(|b| b.name.as_str()).collect();
    // The stem, the 16 MBConv blocks of Lite0, the 1x1 head convolution.
    assert_eq!(names.len(), 18, "{names:?}");
    assert_eq!(
        (names[0], names[1], names[16], names[17]),
        ("stem", "blocks.0", "blocks.15", "head")
    );

    let last2 = trainable(graph, &Unfreeze::Last(2), "features").expect("last:2");
    let expected: HashSet<String> = found[16..]
        .iter()
        .flat_map(|b| b.initializers.iter().cloned())
        .collect();
    assert_eq!(last2, expected);
    assert!(
        last2
            .iter()
            .all(|n| n.starts_with("blocks.15") || n.starts_with("head")),
        "{last2:?}"
    );
    assert!(
        trainable(graph, &Unfreeze::None, "features")
            .expect("none")
            .is_empty()
    );
    let all = trainable(graph, &Unfreeze::All, "features").expect("all");
    assert!(all.len() > last2.len() && all.is_superset(&last2));
    assert!(
        !all.iter().any(|n| n.starts_with("classifier")),
        "the old head is not the backbone's"
    );
    // from: the first output of block 15 on = block 15 minus whatever reads only its input.
    let block15_first = &graph.node[found[16].nodes[0]].output[0];
    let from = trainable(graph, &Unfreeze::From(block15_first.clone()), "features").expect("from");
    assert!(!from.is_empty() && from.is_subset(&last2), "{from:?}");
    // Where training starts: the output of block 14, which block 15 (and its residual,
    // if any) reads; frozen layers before it are run once and cached.
    let start = boundary(graph, &last2, "features").expect("boundary");
    let block14_outputs: Vec<&String> = found[15]
        .nodes
        .iter()
        .flat_map(|&n| &graph.node[n].output)
        .collect();
    assert!(
        start.as_ref().is_some_and(|s| block14_outputs.contains(&s)),
        "{start:?}"
    );
    assert_eq!(boundary(graph, &all, "features").expect("all"), None);
    let err = trainable(graph, &Unfreeze::Last(40), "features").expect_err("too many");
    assert!(err.to_string().contains("has 18 blocks"), "{err}");
    let err = trainable(graph, &Unfreeze::From("nope".into()), "features").expect_err("unknown");
    assert!(err.to_string().contains("from:nope"), "{err}");

    // Write back: new values land in the graph the interpreter and the engines read.
    let head_weight = found[17].initializers[0].clone();
    let original = builder::tensor_values_f32(
        graph
            .initializer
            .iter()
            .find(|t| t.name == head_weight)
            .expect("weight"),
    )
    .expect("f32");
    let mut edited = model.proto.clone();
    let doubled: Vec<f32> = original.iter().map(|v| v * 2.0).collect();
    Patch::SetInitializers {
        values: vec![(head_weight.clone(), doubled.clone())],
    }
    .apply(&mut edited)
    .expect("write back");
    let (program, params) =
        Program::load(&edited, &LoadOptions::default(), &Device::flex()).expect("load");
    let index = program
        .parameters()
        .iter()
        .position(|p| p.0 == head_weight)
        .expect("parameter");
    assert_eq!(params.values()[index], doubled);
    let err = Patch::SetInitializers {
        values: vec![(head_weight, vec![1.0; 3])],
    }
    .apply(&mut edited)
    .expect_err("wrong size");
    assert!(err.to_string().contains("not 3"), "{err}");
}
