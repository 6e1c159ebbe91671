//! Bring your own model, end to end as a user runs it: an ONNX file of a classic
//! architecture in torch.onnx or model-zoo (caffe2) style (seeded random weights — no
//! pretrained ones exist offline; the structure is what is tested) → `scion-edge import
//! onnx` → `scion train` (head only) with its parity check → `scion train --unfreeze
//! last:1` with write-back and parity → `scion embed` / `scion similar` on the FC7 tensor
//! by name.

use std::path::Path;

use scion_onnx::zoo::{self, Arch, Style};
use scion_tests::run_ok;

fn fashion_mnist(dir: &Path) {
    scion_tests::fashion_mnist(dir, 4, 40);
}

/// Write `arch` in `style` (64 px, quarter width, 10 classes) as a card-less ONNX file.
fn write_source(dir: &Path, arch: Arch, style: Style, seed: u64) -> std::path::PathBuf {
    let options = zoo::Options {
        input_size: 64,
        width: 0.25,
        classes: 10,
        seed,
    };
    let source = dir.join(format!("{}-{style:?}.src.onnx", arch.name()));
    scion_onnx::io::save(&zoo::build(arch, style, &options).expect("build"), &source)
        .expect("save");
    source
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn every_architecture_imports_trains_a_head_and_fine_tunes() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    fashion_mnist(&data);
    let cache = dir.path().join("cache");
    for arch in Arch::ALL {
        for (style, preset) in [(Style::Torch, "torchvision"), (Style::Caffe2, "caffe")] {
            let name = format!("{}-{style:?}", arch.name());
            let source = write_source(dir.path(), arch, style, 11);
            let backbone = dir.path().join(format!("{name}.onnx"));
            let imported = run_ok(
                "scion-edge",
                &[
                    &"import",
                    &"onnx",
                    &source,
                    &"--out",
                    &backbone,
                    &"--preset",
                    &preset,
                ],
            );
            assert!(stdout(&imported).contains("tract    batch 4"), "{name}");
            for (suffix, extra) in [("head", vec![]), ("ft", vec!["--unfreeze", "last:1"])] {
                let out = dir.path().join(format!("{name}.{suffix}.onnx"));
                let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
                    &"train",
                    &"--backbone",
                    &backbone,
                    &"--data",
                    &data,
                    &"--out",
                    &out,
                    &"--epochs",
                    &"1",
                    &"--cache",
                    &cache,
                ];
                for e in &extra {
                    args.push(e);
                }
                let trained = run_ok("scion", &args);
                let text = stdout(&trained);
                assert!(
                    text.matches("mismatches").count() >= 2 && !text.contains("FAILED"),
                    "{name} {suffix}: {text}"
                );
                if suffix == "ft" {
                    let run: serde_json::Value = serde_json::from_str(
                        &std::fs::read_to_string(
                            dir.path().join(format!("{name}.ft.report/run.json")),
                        )
                        .expect("run.json"),
                    )
                    .expect("json");
                    assert!(
                        run["trainable_backbone_values"].as_u64().unwrap_or(0) > 0,
                        "{name}: nothing of the backbone trained"
                    );
                }
            }
            // The FC7 tensor by name (the import records which one it found).
            let card =
                scion_onnx::ModelCard::from_model(&scion_onnx::io::load(&backbone).expect("load"))
                    .expect("card")
                    .expect("a card");
            let training = card.provenance.training.expect("import record");
            let fc7 = training["feature_tensor"].as_str().expect("feature tensor");
            let neighbours =
                neighbours_by_tensor(dir.path(), &data.join("val"), &backbone, fc7, &cache);
            assert_eq!(neighbours.len(), 3, "{name}");
            let nearest = neighbours[0]["distance"].as_f64().expect("distance");
            assert!(nearest < 1e-3, "{name}: the query itself is at {nearest}");
        }
    }
}

#[test]
fn alexnet_fc7_neighbours_by_tensor_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    fashion_mnist(&data);
    let source = write_source(dir.path(), Arch::AlexNet, Style::Caffe2, 1);
    let model = dir.path().join("alexnet.onnx");
    run_ok(
        "scion-edge",
        &[
            &"import",
            &"onnx",
            &source,
            &"--out",
            &model,
            &"--preset",
            &"caffe",
        ],
    );
    // fc7's ReLU, found by import and named in the card.
    let card = scion_onnx::ModelCard::from_model(&scion_onnx::io::load(&model).expect("load"))
        .expect("card")
        .expect("a card");
    let fc7 = card.tensors.features.expect("features");
    assert!(fc7.starts_with("relu_"), "{fc7}");
    let cache = dir.path().join("cache");
    let neighbours = neighbours_by_tensor(dir.path(), &data.join("train"), &model, &fc7, &cache);
    assert_eq!(neighbours.len(), 3);
    assert!(neighbours.iter().all(|n| n["distance"].as_f64().is_some()));
}

/// `scion embed --tensor TENSOR` of `images`, then `scion similar -k 3` of one of them:
/// its neighbours (the image itself first, at distance 0).
fn neighbours_by_tensor(
    dir: &Path,
    images: &Path,
    model: &Path,
    tensor: &str,
    cache: &Path,
) -> Vec<serde_json::Value> {
    let index = dir.join(format!(
        "{}.safetensors",
        model.file_stem().expect("name").to_string_lossy()
    ));
    run_ok(
        "scion",
        &[
            &"embed",
            &images,
            &"--model",
            &model,
            &"--tensor",
            &tensor,
            &"--out",
            &index,
            &"--cache",
            &cache,
        ],
    );
    let query = std::fs::read_dir(images.join("bag"))
        .expect("bags")
        .flatten()
        .next()
        .expect("a bag")
        .path();
    let out = run_ok(
        "scion",
        &[
            &"similar",
            &"--index",
            &index,
            &"--query",
            &query,
            &"-k",
            &"3",
            &"--format",
            &"json",
        ],
    );
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    found[0]["neighbours"]
        .as_array()
        .expect("neighbours")
        .clone()
}

#[test]
fn an_op_the_interpreter_lacks_still_trains_a_head_and_names_itself_for_unfreeze() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    fashion_mnist(&data);
    let mut model = scion_onnx::io::load(write_source(dir.path(), Arch::ResNet18, Style::Torch, 2))
        .expect("load");
    let g = model.graph.as_mut().expect("graph");
    let last_relu = g
        .node
        .iter()
        .rposition(|n| n.op_type == "Relu")
        .expect("a relu");
    g.node[last_relu].op_type = "Softplus".into();
    let node_name = g.node[last_relu].name.clone();
    let source = dir.path().join("resnet18-softplus.src.onnx");
    scion_onnx::io::save(&model, &source).expect("save");
    let backbone = dir.path().join("resnet18-softplus.onnx");
    let imported = run_ok(
        "scion-edge",
        &[&"import", &"onnx", &source, &"--out", &backbone],
    );
    let said = stdout(&imported);
    assert!(
        said.contains("head only") && said.contains("Softplus"),
        "{said}"
    );
    // The card-less source is refused by train in one line naming the import.
    let refused = std::process::Command::new(scion_tests::binary("scion"))
        .args(["train", "--epochs", "1", "--backbone"])
        .arg(&source)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("never.onnx"))
        .env("ORT_DYLIB_PATH", scion_tests::ort_lib())
        .output()
        .expect("run scion");
    assert_eq!(refused.status.code(), Some(1));
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        text.contains("no scion card") && text.contains("scion-edge import onnx"),
        "{text}"
    );
    let cache = dir.path().join("cache");
    let head = dir.path().join("head.onnx");
    run_ok(
        "scion",
        &[
            &"train",
            &"--backbone",
            &backbone,
            &"--data",
            &data,
            &"--out",
            &head,
            &"--epochs",
            &"1",
            &"--cache",
            &cache,
        ],
    );
    let refused = std::process::Command::new(scion_tests::binary("scion"))
        .args([
            "train",
            "--unfreeze",
            "last:1",
            "--epochs",
            "1",
            "--backbone",
        ])
        .arg(&backbone)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("ft.onnx"))
        .arg("--cache")
        .arg(&cache)
        .env("ORT_DYLIB_PATH", scion_tests::ort_lib())
        .output()
        .expect("run scion");
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    let text = stdout(&refused);
    assert!(
        text.contains("Softplus") && text.contains(&node_name),
        "{text}"
    );
}
