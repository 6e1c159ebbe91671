//! Fine-tuning and training from scratch through the CLI, on real weights and real
//! Fashion-MNIST images: trained weights are written back into the exported ONNX and pass
//! the parity check; micro-batches make the same step as one batch; the transfer
//! experiment writes its table and chart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::PredicateBooleanExt;
use predicates::str::contains;
use scion_onnx::builder::tensor_values_f32;
use scion_tests::{asset, ort_lib};

fn scion() -> Command {
    let mut cmd = Command::cargo_bin("scion").expect("binary built");
    cmd.env("ORT_DYLIB_PATH", ort_lib()).env_remove("RUST_LOG");
    cmd
}

/// `per_class` training and `val` validation images of the first `classes` classes.
fn fmnist(root: &Path, per_class: usize, val: usize, classes: usize) {
    for (split, args) in [
        ("train", ["--per-class".to_string(), per_class.to_string()]),
        ("val", ["--per-class".to_string(), val.to_string()]),
    ] {
        let mut cmd = scion();
        cmd.args(["data", "import-idx", "--preset", "fashion-mnist"]);
        if split == "val" {
            cmd.args(["--set", "test"]);
        }
        cmd.args(args)
            .arg("--out")
            .arg(root.join(split))
            .assert()
            .success();
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join(split))
            .expect("read")
            .flatten()
            .map(|e| e.path())
            .collect();
        dirs.sort();
        for extra in dirs.into_iter().skip(classes) {
            std::fs::remove_dir_all(extra).expect("remove class");
        }
    }
}

/// `scion train` of `backbone` on `data` into `out`, with its cache beside `out`.
fn train(backbone: &Path, data: &Path, out: &Path) -> Command {
    let mut cmd = scion();
    cmd.arg("train")
        .arg("--backbone")
        .arg(backbone)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .arg("--cache")
        .arg(out.with_file_name("cache"));
    cmd
}

/// An untrained small CNN for 32 px inputs, at `path`.
fn small_cnn(path: &Path) {
    Command::cargo_bin("scion-edge")
        .expect("binary built")
        .args(["import", "small-cnn", "--input-size", "32", "--out"])
        .arg(path)
        .assert()
        .success();
}

fn initializers(path: &Path) -> HashMap<String, Vec<f32>> {
    let model = scion_onnx::io::load(path).expect("model");
    model
        .graph
        .expect("graph")
        .initializer
        .iter()
        .filter_map(|t| tensor_values_f32(t).map(|v| (t.name.clone(), v)))
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn run_json(report: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(report.join("run.json")).expect("run.json"))
        .expect("json")
}

#[test]
fn unfrozen_blocks_train_are_written_back_and_pass_parity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    fmnist(&data, 6, 4, 3);
    let backbone = asset("models/efficientnet-lite0.onnx");
    let tune = |out: &Path, extra: &[&str]| {
        train(&backbone, &data, out)
            // An MLP head trains by mini-batches from the start (no probe to fall back on),
            // without dropout so micro-batches see the same network as whole batches.
            .args(["--unfreeze", "last:2", "--epochs", "1", "--batch", "8"])
            .args(["--head", "mlp:8", "--dropout", "0"])
            .args(extra)
            .assert()
            .success()
            .stdout(contains("parity ort-cpu"))
            .stdout(contains("parity tract"))
            .stdout(contains("FAILED").not())
    };
    let whole = dir.path().join("whole.onnx");
    tune(&whole, &["--optimizer", "sgd", "--lr", "0.05"]);

    // The last two blocks changed, everything before them did not, and the old classifier
    // is gone.
    let before = initializers(&backbone);
    let after = initializers(&whole);
    let changed: Vec<&String> = before
        .iter()
        .filter(|(name, v)| after.get(*name).is_some_and(|a| max_diff(a, v) > 0.0))
        .map(|(name, _)| name)
        .collect();
    assert!(!changed.is_empty(), "no backbone weight changed");
    assert!(
        changed
            .iter()
            .all(|n| n.starts_with("blocks.15") || n.starts_with("head")),
        "{changed:?}"
    );
    assert!(changed.iter().any(|n| n.starts_with("blocks.15")));
    assert_eq!(before["stem.weight"], after["stem.weight"]);
    assert!(!after.contains_key("classifier.weight"));

    let report = dir.path().join("whole.report");
    let run = run_json(&report);
    assert_eq!(run["unfreeze"], "last:2");
    let trained = run["trainable_backbone_values"].as_u64().expect("count");
    assert!(trained > 100_000, "{trained}");
    // The checkpoint holds the same backbone values, sized as its JSON says.
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("checkpoint.json")).expect("read"))
            .expect("json");
    let lens: u64 = checkpoint["backbone"]
        .as_array()
        .expect("backbone list")
        .iter()
        .map(|e| e["len"].as_u64().expect("len"))
        .sum();
    let bytes = std::fs::metadata(report.join("checkpoint.backbone.f32"))
        .expect("values")
        .len();
    assert_eq!(bytes, 4 * lens);

    // Gradient accumulation: micro-batches of 3 make the same SGD step as batches of 8.
    let micro = dir.path().join("micro.onnx");
    tune(
        &micro,
        &["--optimizer", "sgd", "--lr", "0.05", "--micro-batch", "3"],
    );
    let accumulated = initializers(&micro);
    for name in &changed {
        let d = max_diff(&after[*name], &accumulated[*name]);
        assert!(d < 1e-5, "{name}: {d}");
    }
}

#[test]
fn lp_ft_starts_from_the_probe_and_exports_the_better_of_the_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    fmnist(&data, 6, 5, 3);
    let backbone = asset("models/efficientnet-lite0.onnx");
    let out = dir.path().join("lpft.onnx");
    train(&backbone, &data, &out)
        .args(["--unfreeze", "last:2", "--epochs", "2", "--batch", "8"])
        .assert()
        .success()
        .stderr(contains("linear head: C = "))
        .stderr(contains("LP-FT: probe val top-1"))
        .stdout(contains("FAILED").not());
    let run = run_json(&dir.path().join("lpft.report"));
    let lp = &run["lp_ft"];
    let (probe, tuned) = (
        lp["probe_loss"].as_f64().expect("loss"),
        lp["tuned_loss"].as_f64().expect("loss"),
    );
    let exported = initializers(&out);
    let changed = initializers(&backbone)
        .iter()
        .any(|(name, v)| exported.get(name).is_some_and(|a| max_diff(a, v) > 0.0));
    match lp["exported"].as_str() {
        Some("fine-tuned") => assert!(tuned < probe && changed, "{lp}"),
        Some("probe") => assert!(probe <= tuned && !changed, "{lp}"),
        other => panic!("exported {other:?}"),
    }
}

#[test]
fn a_small_cnn_trains_from_scratch_with_batch_norm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    fmnist(&data, 12, 6, 3);
    let small = dir.path().join("small.onnx");
    small_cnn(&small);
    train(&small, &data, &dir.path().join("m.onnx"))
        .args(["--from-scratch", "--epochs", "3", "--batch", "8"])
        .assert()
        .success()
        .stdout(contains("parity tract"))
        .stdout(contains("ok"));
    let after = initializers(&dir.path().join("m.onnx"));
    // Batch norm ran in training mode: its running statistics moved away from the
    // initial 0 and 1, and were written back.
    for name in ["blocks.0.bn.mean", "blocks.2.bn.var"] {
        let initial = if name.ends_with("mean") { 0.0 } else { 1.0 };
        assert!(
            after[name].iter().any(|v| (v - initial).abs() > 1e-3),
            "{name} did not change"
        );
    }
    let run = run_json(&dir.path().join("m.report"));
    assert_eq!(run["unfreeze"], "from-scratch");

    // --freeze-batch-norm: the layers train, their statistics stay where they were.
    let frozen = dir.path().join("frozen.onnx");
    train(&small, &data, &frozen)
        .args(["--from-scratch", "--freeze-batch-norm", "--epochs", "1"])
        .assert()
        .success();
    let before = initializers(&small);
    let after = initializers(&frozen);
    assert_eq!(after["blocks.0.bn.mean"], before["blocks.0.bn.mean"]);
    assert_eq!(after["blocks.2.bn.var"], before["blocks.2.bn.var"]);
    assert!(
        max_diff(
            &after["blocks.1.conv.weight"],
            &before["blocks.1.conv.weight"]
        ) > 0.0
    );
}

#[test]
fn the_transfer_experiment_writes_a_table_and_a_chart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    fmnist(&data, 8, 4, 3);
    let small = dir.path().join("small.onnx");
    small_cnn(&small);
    let out = dir.path().join("experiment");
    scion()
        .args(["experiment", "transfer", "--backbone"])
        .arg(&small)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .args(["--epochs", "2", "--unfreeze", "last:1"])
        .assert()
        .success()
        .stdout(contains("| head-only |"))
        .stdout(contains("| unfreeze-last-1 |"))
        .stdout(contains("| from-scratch |"));
    let table = std::fs::read_to_string(out.join("transfer.md")).expect("table");
    assert_eq!(table.lines().count(), 2 + 3, "{table}");
    let results: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("transfer.json")).expect("json"))
            .expect("parse");
    assert_eq!(results.len(), 3);
    for r in &results {
        assert!(r["parity_passed"].as_bool().expect("bool"), "{r}");
        assert!(Path::new(r["model"].as_str().expect("path")).is_file());
    }
    assert_eq!(results[0]["trainable_backbone_values"], 0);
    assert!(
        results[1]["trainable_backbone_values"].as_u64()
            < results[2]["trainable_backbone_values"].as_u64()
    );
    let png = std::fs::read(out.join("transfer.png")).expect("chart");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000);

    // A policy the backbone cannot satisfy is refused with the flag's name.
    scion()
        .args(["experiment", "transfer", "--backbone"])
        .arg(&small)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args(["--unfreeze", "last:9", "--no-scratch"])
        .assert()
        .code(1)
        .stderr(contains("--unfreeze last:9"));
}
