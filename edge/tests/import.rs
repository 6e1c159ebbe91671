//! `scion-edge import onnx` on the classic architectures in both export styles (seeded
//! random weights; the structure is what is tested), and its refusals.

mod common;

use std::path::{Path, PathBuf};

use common::scion_edge;
use predicates::str::contains;
use scion_edge::engine::{EngineKind, EngineOptions};
use scion_edge::import::{ImportOptions, Labels, Preset, import_onnx};
use scion_onnx::zoo::{self, Arch, Style};

fn write_zoo(dir: &Path, arch: Arch, style: Style) -> PathBuf {
    let options = zoo::Options {
        input_size: 64,
        width: 0.25,
        classes: 10,
        seed: 3,
    };
    let model = zoo::build(arch, style, &options).expect("build");
    let path = dir.join(format!("{}-{style:?}.onnx", arch.name()));
    scion_onnx::io::save(&model, &path).expect("save");
    path
}

fn options(preset: Preset) -> ImportOptions {
    ImportOptions {
        preset,
        labels: Labels::Default,
        feature_tensor: None,
        contract: Default::default(),
        name: None,
        engine: EngineOptions {
            threads: 1,
            ort_library: Some(common::ort_lib()),
            spin_wait: false,
            ..Default::default()
        },
        tolerance: 1e-4,
    }
}

#[test]
fn every_architecture_imports_and_both_engines_agree_with_the_source() {
    let dir = tempfile::tempdir().expect("tmp");
    for arch in Arch::ALL {
        for (style, preset) in [
            (Style::Torch, Preset::Torchvision),
            (Style::Caffe2, Preset::Caffe),
        ] {
            let what = format!("{} {style:?}", arch.name());
            let source = write_zoo(dir.path(), arch, style);
            let report =
                import_onnx(&source, &options(preset)).unwrap_or_else(|e| panic!("{what}: {e}"));
            // ONNX Runtime and tract, batch 1 and 4, against the source on ONNX Runtime.
            assert_eq!(report.checks.len(), 4, "{what}");
            for c in &report.checks {
                let d = c
                    .max_diff
                    .as_ref()
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(*d <= 1e-4, "{what}: {} batch {}: {d}", c.engine, c.batch);
            }
            assert!(report.checks.iter().any(|c| c.engine == EngineKind::Tract));
            let card = &report.card;
            assert_eq!(card.labels.len(), 10);
            assert_eq!(
                card.tensors.features.as_deref(),
                Some(report.feature_output.as_str())
            );
            assert!(
                report.untrainable.is_none(),
                "{what}: {:?}",
                report.untrainable
            );
            assert!(report.blocks.len() >= 7, "{what}: {:?}", report.blocks);
            // Caffe2 exports end in a softmax: probs and the logits before it.
            assert_eq!(
                card.tensors.probs.is_some(),
                style == Style::Caffe2,
                "{what}"
            );
            let provenance = card.provenance.training.as_ref().expect("import record");
            assert_eq!(provenance["preset"], preset.name());
            assert_eq!(
                card.provenance.source_sha256.as_deref(),
                Some(
                    scion_onnx::import::sha256_hex(&std::fs::read(&source).expect("read")).as_str()
                )
            );
            // What the engines load is a scion model now.
            let bytes = scion_onnx::io::encode(&report.model);
            let model = scion_edge::Model::from_bytes(&source, bytes, &Default::default())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(model.card_embedded);
        }
    }
}

#[test]
fn the_cli_writes_a_card_and_says_what_it_changed() {
    let dir = tempfile::tempdir().expect("tmp");
    let source = write_zoo(dir.path(), Arch::AlexNet, Style::Caffe2);
    let out = dir.path().join("alexnet.onnx");
    let labels = dir.path().join("labels.txt");
    std::fs::write(
        &labels,
        (0..10).map(|i| format!("thing {i}\n")).collect::<String>(),
    )
    .expect("labels");
    scion_edge()
        .args(["import", "onnx"])
        .arg(&source)
        .arg("--out")
        .arg(&out)
        .args(["--preset", "caffe", "--labels"])
        .arg(&labels)
        .assert()
        .success()
        .stdout(contains(
            "initializers listed as graph inputs made constants",
        ))
        .stdout(contains("removed for inference"))
        .stdout(contains("fixed-batch Reshape targets made batch-agnostic"))
        .stdout(contains("read by classifier"))
        .stdout(contains("blocks:    7"))
        .stdout(contains("tract    batch 4"));
    scion_edge()
        .args(["info", "--no-engines"])
        .arg(&out)
        .assert()
        .success()
        .stdout(contains("thing 0"))
        .stdout(contains("\"color\":\"bgr\""));
    // A card-less model: info describes it without --labels and names the fix; train
    // refuses it in one line naming the import.
    scion_edge()
        .args(["info"])
        .arg(&source)
        .assert()
        .success()
        .stdout(contains("card:     none (run `scion-edge import onnx"))
        .stdout(contains("features: 'relu_"));
    scion_edge()
        .args(["classify", "--model"])
        .arg(&source)
        .arg(common::photo("tent.jpg"))
        .assert()
        .code(1)
        .stderr(contains("scion-edge import onnx"));
}

#[test]
fn bad_sources_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("never.onnx");
    let import = |source: &Path, extra: &[&str]| {
        let mut cmd = scion_edge();
        cmd.args(["import", "onnx"])
            .arg(source)
            .arg("--out")
            .arg(&out)
            .args(extra);
        cmd
    };
    // A truncated file.
    let source = write_zoo(dir.path(), Arch::ResNet18, Style::Torch);
    let bytes = std::fs::read(&source).expect("read");
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    import(&truncated, &[])
        .assert()
        .code(1)
        .stderr(contains("truncated.onnx"));
    // Not an image classifier: a 2-D input.
    use scion_onnx::builder::{self, node, tensor_f32};
    let mut model = scion_onnx::pb::ModelProto {
        ir_version: 8,
        opset_import: vec![builder::default_opset()],
        graph: Some(scion_onnx::pb::GraphProto {
            node: vec![node("MatMul", "mm", &["x", "w"], &["y"], vec![])],
            initializer: vec![tensor_f32("w", &[4, 2], vec![0.1; 8])],
            input: vec![builder::value_info_f32("x", &[Err("n"), Ok(4)])],
            output: vec![builder::value_info_f32("y", &[Err("n"), Ok(2)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    let tabular = dir.path().join("tabular.onnx");
    scion_onnx::io::save(&model, &tabular).expect("save");
    import(&tabular, &[])
        .assert()
        .code(1)
        .stderr(contains("not an image classifier"));
    // Dynamic spatial dimensions without --input-size, then with it.
    let graph = model.graph.as_mut().expect("graph");
    graph.node = vec![
        node("GlobalAveragePool", "gap", &["x"], &["p"], vec![]),
        node("Flatten", "flat", &["p"], &["f"], vec![]),
        node(
            "Gemm",
            "fc",
            &["f", "w"],
            &["y"],
            vec![builder::attr_int("transB", 1)],
        ),
    ];
    graph.initializer = vec![tensor_f32("w", &[2, 3], vec![0.1; 6])];
    graph.input = vec![builder::value_info_f32(
        "x",
        &[Err("n"), Ok(3), Err("h"), Err("w")],
    )];
    let dynamic = dir.path().join("dynamic.onnx");
    scion_onnx::io::save(&model, &dynamic).expect("save");
    import(&dynamic, &[])
        .assert()
        .code(1)
        .stderr(contains("--input-size"));
    import(&dynamic, &["--input-size", "32"]).assert().success();
    std::fs::remove_file(&out).expect("written with a size");
    // External data that is missing.
    let mut external = scion_onnx::io::load(&source).expect("load");
    let t = &mut external.graph.as_mut().expect("graph").initializer[0];
    let name = t.name.clone();
    t.raw_data.clear();
    t.data_location = scion_onnx::pb::tensor_proto::DataLocation::External as i32;
    t.external_data = vec![builder::metadata("location", "weights.bin")];
    let external_path = dir.path().join("external.onnx");
    scion_onnx::io::save(&external, &external_path).expect("save");
    import(&external_path, &[])
        .assert()
        .code(1)
        .stderr(contains("weights.bin"))
        .stderr(contains(name.as_str()));
    // External data that points out of the model's folder is refused, not read.
    let outside = tempfile::tempdir().expect("tempdir");
    let secret = outside.path().join("secret.bin");
    std::fs::write(&secret, vec![7u8; 1 << 16]).expect("secret");
    std::os::unix::fs::symlink(&secret, dir.path().join("planted.bin")).expect("symlink");
    for (location, why) in [
        (secret.display().to_string(), "not a plain relative path"),
        ("../secret.bin".to_string(), "not a plain relative path"),
        ("planted.bin".to_string(), "leads out of the model's folder"),
    ] {
        let t = &mut external.graph.as_mut().expect("graph").initializer[0];
        t.external_data = vec![builder::metadata("location", &location)];
        scion_onnx::io::save(&external, &external_path).expect("save");
        import(&external_path, &[])
            .assert()
            .code(1)
            .stderr(contains(why))
            .stderr(contains(name.as_str()));
    }
    // An op neither engine runs.
    let mut alien = scion_onnx::io::load(&source).expect("load");
    let g = alien.graph.as_mut().expect("graph");
    let relu = g
        .node
        .iter()
        .position(|n| n.op_type == "Relu")
        .expect("a relu");
    g.node[relu].op_type = "NoSuchOp".into();
    let alien_path = dir.path().join("alien.onnx");
    scion_onnx::io::save(&alien, &alien_path).expect("save");
    import(&alien_path, &[])
        .assert()
        .code(1)
        .stderr(contains("NoSuchOp"));
    // Labels that do not fit.
    let labels = dir.path().join("three.txt");
    std::fs::write(&labels, "a\nb\nc\n").expect("labels");
    import(&source, &["--labels", labels.to_str().expect("utf-8")])
        .assert()
        .code(1)
        .stderr(contains("3 labels"))
        .stderr(contains("10 classes"));
    // A feature tensor that does not exist lists candidates.
    import(&source, &["--feature-tensor", "fc7"])
        .assert()
        .code(1)
        .stderr(contains("--feature-tensor fc7"))
        .stderr(contains("candidates"));
    assert!(!out.exists(), "a refused import wrote {}", out.display());
}

/// A tf2onnx-style model: an NHWC input transposed to NCHW inside the graph.
pub fn nhwc(dir: &Path) -> PathBuf {
    use scion_onnx::builder::{self, attr_ints, node};
    let source = write_zoo(dir, Arch::MobileNetV2, Style::Torch);
    let mut model = scion_onnx::io::load(&source).expect("load");
    let g = model.graph.as_mut().expect("graph");
    for n in g.node.iter_mut() {
        for i in n.input.iter_mut().filter(|i| *i == "input") {
            *i = "input_nchw".into();
        }
    }
    g.node.insert(
        0,
        node(
            "Transpose",
            "nhwc_to_nchw",
            &["input"],
            &["input_nchw"],
            vec![attr_ints("perm", &[0, 3, 1, 2])],
        ),
    );
    g.input = vec![builder::value_info_f32(
        "input",
        &[Err("unk__0"), Ok(64), Ok(64), Ok(3)],
    )];
    let path = dir.join("keras-like.onnx");
    scion_onnx::io::save(&model, &path).expect("save");
    path
}

#[test]
fn an_nhwc_model_imports_with_the_tf_preset() {
    let dir = tempfile::tempdir().expect("tmp");
    let source = nhwc(dir.path());
    let report = import_onnx(&source, &options(Preset::Tf)).expect("import");
    let p = &report.card.preprocessing;
    assert_eq!(p.layout, scion_onnx::card::Layout::Nhwc);
    assert_eq!(p.input_shape(1), vec![1, 64, 64, 3]);
    assert_eq!((p.mean, p.std), ([0.5; 3], [0.5; 3]));
    for c in &report.checks {
        let d = c.max_diff.as_ref().expect("runs");
        assert!(*d <= 1e-4, "{} batch {}: {d}", c.engine, c.batch);
    }
    // The torchvision preset reads the same file as NCHW, which its input is not.
    let err = import_onnx(&source, &options(Preset::Torchvision)).expect_err("not NCHW");
    assert!(err.to_string().contains("--preset tf"), "{err}");
}
