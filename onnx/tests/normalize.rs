//! Normalisation, the feature finder and block discovery on the classic architectures in
//! both export styles users bring (seeded random weights: no pretrained ones exist
//! offline; the structure is what is tested).

use scion_onnx::blocks::blocks;
use scion_onnx::builder::{self, attr_int, node, tensor_f32, tensor_i64};
use scion_onnx::pb::{GraphProto, ModelProto, OperatorSetIdProto};
use scion_onnx::zoo::{self, Arch, Style};
use scion_onnx::{features, graph, infer, normalize};

fn options() -> zoo::Options {
    zoo::Options {
        input_size: 64,
        width: 0.25,
        classes: 10,
        seed: 7,
    }
}

fn normalised(arch: Arch, style: Style) -> (ModelProto, Vec<String>) {
    let mut model = zoo::build(arch, style, &options()).expect("build");
    let changes = normalize::normalize(&mut model, None)
        .unwrap_or_else(|e| panic!("{} {style:?}: {e}", arch.name()));
    (model, changes)
}

#[test]
fn every_architecture_normalises_to_one_kind_of_graph() {
    for arch in Arch::ALL {
        for style in [Style::Torch, Style::Caffe2] {
            let (model, changes) = normalised(arch, style);
            let what = format!("{} {style:?}", arch.name());
            let g = model.graph.as_ref().expect("graph");
            for op in [
                "Dropout",
                "Identity",
                "Constant",
                "ConstantOfShape",
                "Shape",
                "Gather",
            ] {
                assert!(
                    !g.node.iter().any(|n| n.op_type == op),
                    "{what}: a {op} is left"
                );
            }
            // One input, the image, with a symbolic batch; every output too.
            assert_eq!(g.input.len(), 1, "{what}");
            for v in g.input.iter().chain(&g.output) {
                let shape = graph::value_shape(v).expect("shape");
                assert_eq!(shape[0], None, "{what}: {} has a fixed batch", v.name);
            }
            assert!(model.ir_version >= 4, "{what}");
            // Every Reshape target is a constant that copies or infers the batch.
            let facts = infer::infer(&model).expect("infer");
            for n in g.node.iter().filter(|n| n.op_type == "Reshape") {
                let target = facts.get(&n.input[1]).and_then(|f| f.value.clone());
                let first = target.and_then(|t| t.known_ints()).map(|v| v[0]);
                assert!(matches!(first, Some(0 | -1)), "{what}: {first:?}");
            }
            if style == Style::Caffe2 {
                let said = changes.join("\n");
                assert!(
                    said.contains("graph inputs made constants"),
                    "{what}: {said}"
                );
                assert!(said.contains("Dropout"), "{what}: {said}");
                assert!(
                    said.contains("batch-agnostic") || arch == Arch::SqueezeNet11,
                    "{what}: {said}"
                );
            }
        }
    }
}

#[test]
fn the_feature_tensor_is_the_lectures_fc7() {
    for arch in Arch::ALL {
        for style in [Style::Torch, Style::Caffe2] {
            let (model, _) = normalised(arch, style);
            let what = format!("{} {style:?}", arch.name());
            let f = features::find(&model).unwrap_or_else(|e| panic!("{what}: {e}"));
            let g = model.graph.as_ref().expect("graph");
            let producer = graph::producers(g)[f.tensor.as_str()];
            let op = g.node[producer].op_type.as_str();
            match arch {
                // The second fully connected layer's ReLU, behind the (removed) Dropout.
                Arch::AlexNet | Arch::Vgg16 => {
                    assert_eq!(op, "Relu", "{what}");
                    assert_eq!(f.shape, vec![1, 1024], "{what}");
                    assert!(!f.pooled);
                }
                // A 1x1 convolution classifier: its input, pooled to channel means.
                Arch::SqueezeNet11 => {
                    assert_eq!(op, "Concat", "{what}");
                    assert!(f.pooled && f.shape.len() == 4, "{what}: {f:?}");
                }
                // The pooled trunk.
                _ => {
                    assert!(matches!(op, "Flatten" | "Reshape"), "{what}: {op}");
                    assert_eq!(f.shape.len(), 2, "{what}");
                    assert!(!f.pooled);
                }
            }
        }
    }
}

#[test]
fn blocks_are_the_architectures_units_named_or_not() {
    // (architecture, blocks up to the features): torch-style names and caffe2's unnamed
    // nodes give the same units where the structure alone decides them.
    let expected = [
        (Arch::AlexNet, 7),
        (Arch::Vgg16, 15),
        (Arch::ResNet18, 9),
        (Arch::ResNet50, 17),
        (Arch::GoogLeNet, 12),
        (Arch::ShuffleNetV2, 18),
    ];
    for (arch, count) in expected {
        for style in [Style::Torch, Style::Caffe2] {
            let (model, _) = normalised(arch, style);
            let f = features::find(&model).expect("features");
            let g = model.graph.as_ref().expect("graph");
            let found = blocks(g, &f.tensor).expect("blocks");
            assert_eq!(
                found.len(),
                count,
                "{} {style:?}: {:?}",
                arch.name(),
                found.iter().map(|b| &b.name).collect::<Vec<_>>()
            );
            // Every float initializer the features need belongs to exactly one block.
            let mut all: Vec<&String> = found.iter().flat_map(|b| &b.initializers).collect();
            let n = all.len();
            all.sort();
            all.dedup();
            assert_eq!(
                all.len(),
                n,
                "{} {style:?}: shared initializers",
                arch.name()
            );
        }
    }
    // last:2 on AlexNet is fc6 and fc7; on ResNet-50 the last two bottlenecks.
    let (model, _) = normalised(Arch::AlexNet, Style::Caffe2);
    let f = features::find(&model).expect("features");
    let g = model.graph.as_ref().expect("graph");
    let found = blocks(g, &f.tensor).expect("blocks");
    for b in &found[found.len() - 2..] {
        assert!(
            b.nodes.iter().any(|&n| g.node[n].op_type == "Gemm")
                && !b.nodes.iter().any(|&n| g.node[n].op_type == "Conv"),
            "{b:?}"
        );
    }
    let (model, _) = normalised(Arch::ResNet50, Style::Torch);
    let f = features::find(&model).expect("features");
    let found = blocks(model.graph.as_ref().expect("graph"), &f.tensor).expect("blocks");
    let names: Vec<&str> = found.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        &names[names.len() - 2..],
        ["layer4/layer4.1", "layer4/layer4.2"]
    );
}

fn tiny(
    nodes: Vec<scion_onnx::pb::NodeProto>,
    inits: Vec<scion_onnx::pb::TensorProto>,
    input: &[builder::Dim<'_>],
    opset: i64,
) -> ModelProto {
    ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: inits,
            input: vec![builder::value_info_f32("x", input)],
            output: vec![builder::value_info_f32("y", &[Ok(1), Err("?")])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn bad_graphs_are_refused_naming_the_node_or_flag() {
    // A Reshape whose first entry is not the batch.
    let model = tiny(
        vec![node("Reshape", "odd_view", &["x", "shape"], &["y"], vec![])],
        vec![tensor_i64("shape", &[2], &[3, 16])],
        &[Ok(1), Ok(3), Ok(4), Ok(4)],
        13,
    );
    let err = normalize::normalize(&mut model.clone(), None).expect_err("unprovable");
    let message = err.to_string();
    assert!(
        message.contains("odd_view") && message.contains("batch"),
        "{message}"
    );
    // A symbolic height and width without a size.
    let model = tiny(
        vec![node("GlobalAveragePool", "gap", &["x"], &["y"], vec![])],
        vec![],
        &[Err("n"), Ok(3), Err("h"), Err("w")],
        13,
    );
    let err = normalize::normalize(&mut model.clone(), None).expect_err("dynamic");
    assert!(err.to_string().contains("--input-size"), "{err}");
    let mut sized = model.clone();
    normalize::normalize(&mut sized, Some(vec![1, 3, 32, 32])).expect("with a size");
    // Opsets outside 7..=21, and operators of other domains.
    let err = normalize::normalize(
        &mut tiny(vec![], vec![], &[Ok(1), Ok(3), Ok(4), Ok(4)], 6),
        None,
    )
    .expect_err("opset 6");
    assert!(err.to_string().contains("opset 6"), "{err}");
    let mut custom = tiny(
        vec![node("FusedConv", "fused", &["x"], &["y"], vec![])],
        vec![],
        &[Ok(1), Ok(3), Ok(4), Ok(4)],
        13,
    );
    custom.graph.as_mut().expect("graph").node[0].domain = "com.microsoft".into();
    let err = normalize::normalize(&mut custom, None).expect_err("domain");
    assert!(
        err.to_string().contains("fused") && err.to_string().contains("com.microsoft"),
        "{err}"
    );
}

#[test]
fn shape_chains_fold_and_fixed_batches_become_dynamic() {
    // x.view(x.size(0), -1) as torch.onnx writes it, after a Constant and a Cast.
    let nodes = vec![
        node("Shape", "shape", &["x"], &["s"], vec![]),
        node("Constant", "zero", &[], &["zero"], vec![]),
        node(
            "Gather",
            "gather",
            &["s", "zero"],
            &["b"],
            vec![attr_int("axis", 0)],
        ),
        node("Unsqueeze", "unsqueeze", &["b", "axes"], &["b1"], vec![]),
        node(
            "Cast",
            "cast",
            &["minus_one"],
            &["m1"],
            vec![attr_int("to", 7)],
        ),
        node(
            "Concat",
            "concat",
            &["b1", "m1"],
            &["target"],
            vec![attr_int("axis", 0)],
        ),
        node("Reshape", "view", &["x", "target"], &["flat"], vec![]),
        node("Dropout", "drop", &["flat"], &["d"], vec![]),
        node(
            "Gemm",
            "fc",
            &["d", "w"],
            &["y"],
            vec![attr_int("transB", 1)],
        ),
    ];
    let mut zero = nodes[1].clone();
    zero.attribute.push(scion_onnx::pb::AttributeProto {
        name: "value".into(),
        r#type: scion_onnx::pb::attribute_proto::AttributeType::Tensor as i32,
        t: Some(tensor_i64("", &[], &[0])),
        ..Default::default()
    });
    let mut nodes = nodes;
    nodes[1] = zero;
    let mut model = tiny(
        nodes,
        vec![
            tensor_i64("axes", &[1], &[0]),
            tensor_f32("minus_one", &[1], vec![-1.0]),
            tensor_f32("w", &[2, 48], vec![0.5; 96]),
        ],
        &[Ok(1), Ok(3), Ok(4), Ok(4)],
        13,
    );
    let changes = normalize::normalize(&mut model, None).expect("normalise");
    let said = changes.join("\n");
    assert!(said.contains("constant nodes folded"), "{said}");
    assert!(said.contains("1 Dropout"), "{said}");
    assert!(said.contains("batch dimension made dynamic"), "{said}");
    let g = model.graph.as_ref().expect("graph");
    let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(ops, ["Reshape", "Gemm"]);
    let target = g
        .initializer
        .iter()
        .find(|t| t.name == g.node[0].input[1])
        .expect("a constant target");
    assert_eq!(builder::tensor_values_i64(target), vec![0, -1]);
    assert_eq!(graph::value_shape(&g.output[0]), Some(vec![None, Some(2)]));
}
