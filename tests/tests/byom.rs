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
    for (set, extra, out) in [
        ("train", ["--per-class", "4"], "train"),
        ("test", ["--first", "40"], "val"),
    ] {
        run_ok(
            "scion",
            &[
                &"data",
                &"import-idx",
                &"--preset",
                &"fashion-mnist",
                &"--set",
                &set,
                &extra[0],
                &extra[1],
                &"--out",
                &dir.join(out),
            ],
        );
    }
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
    let options = zoo::Options {
        input_size: 64,
        width: 0.25,
        classes: 10,
        seed: 11,
    };
    for arch in Arch::ALL {
        for (style, preset) in [(Style::Torch, "torchvision"), (Style::Caffe2, "caffe")] {
            let name = format!("{}-{style:?}", arch.name());
            let source = dir.path().join(format!("{name}.src.onnx"));
            scion_onnx::io::save(&zoo::build(arch, style, &options).expect("build"), &source)
                .expect("save");
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
        }
    }
}

#[test]
fn alexnet_fc7_neighbours_by_tensor_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    fashion_mnist(&data);
    let options = zoo::Options {
        input_size: 64,
        width: 0.25,
        classes: 10,
        seed: 1,
    };
    let source = dir.path().join("alexnet.src.onnx");
    scion_onnx::io::save(
        &zoo::build(Arch::AlexNet, Style::Caffe2, &options).expect("build"),
        &source,
    )
    .expect("save");
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
    let index = dir.path().join("fc7.safetensors");
    let cache = dir.path().join("cache");
    run_ok(
        "scion",
        &[
            &"embed",
            &data.join("train"),
            &"--model",
            &model,
            &"--tensor",
            &fc7,
            &"--out",
            &index,
            &"--cache",
            &cache,
        ],
    );
    let query = std::fs::read_dir(data.join("val/bag"))
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
    let neighbours = found[0]["neighbours"].as_array().expect("neighbours");
    assert_eq!(neighbours.len(), 3);
    assert!(neighbours.iter().all(|n| n["distance"].as_f64().is_some()));
}
