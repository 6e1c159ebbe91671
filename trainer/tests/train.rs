//! `scion train` and `scion eval` on real weights and real Fashion-MNIST images: bad input,
//! skipped files, determinism and Ctrl-C. (The accuracy scenario is in `scion-tests`.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;
use scion_tests::{asset, ort_lib};

fn backbone() -> PathBuf {
    asset("models/efficientnet-lite0.onnx")
}

fn scion() -> Command {
    let mut cmd = Command::cargo_bin("scion").expect("binary built");
    cmd.env("ORT_DYLIB_PATH", ort_lib()).env_remove("RUST_LOG");
    cmd
}

/// Fashion-MNIST: `per_class` training images of each class (the first `classes` classes)
/// under `root/<class>/`.
fn fmnist(root: &Path, per_class: usize, classes: usize) {
    scion()
        .args([
            "data",
            "import-idx",
            "--preset",
            "fashion-mnist",
            "--per-class",
        ])
        .arg(per_class.to_string())
        .arg("--out")
        .arg(root)
        .assert()
        .success();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("read")
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for extra in dirs.into_iter().skip(classes) {
        std::fs::remove_dir_all(extra).expect("remove class");
    }
}

fn train(data: &Path, out: &Path, cache: &Path) -> Command {
    let mut cmd = scion();
    cmd.arg("train")
        .arg("--backbone")
        .arg(backbone())
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .arg("--cache")
        .arg(cache);
    cmd
}

#[test]
fn bad_input_gets_an_error_that_names_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, out, cache) = (
        dir.path().join("data"),
        dir.path().join("m.onnx"),
        dir.path().join("cache"),
    );
    fmnist(&data, 3, 1);
    train(&data, &out, &cache)
        .assert()
        .code(1)
        .stderr(contains("only one class ('ankle_boot')"));

    let split = dir.path().join("split");
    fmnist(&split.join("train"), 3, 3);
    fmnist(&split.join("val"), 3, 2);
    train(&split, &out, &cache)
        .assert()
        .code(1)
        .stderr(contains(
            "the classes of val/ differ from train/: missing [\"coat\"]",
        ));

    fmnist(&data, 3, 2);
    train(&data, &out, &cache)
        .args(["--feature-tensor", "no_such_tensor"])
        .assert()
        .code(1)
        .stderr(contains("--feature-tensor no_such_tensor").and(contains("no tensor named")));
    train(&data, &out, &cache)
        .args(["--device", "cuda"])
        .assert()
        .code(1)
        .stderr(contains("--device cuda: scion was not compiled with CUDA"));
    train(&data, &out, &cache)
        .args(["--head", "mlp:wide"])
        .assert()
        .code(2)
        .stderr(contains("'wide' is not a hidden-layer width"));
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("a")).expect("mkdir");
    std::fs::create_dir_all(empty.join("b")).expect("mkdir");
    train(&empty, &out, &cache)
        .assert()
        .code(1)
        .stderr(contains("class 'a' has no images"));
    assert!(!out.exists(), "no model is written on error");
}

#[test]
fn unreadable_images_are_skipped_and_counted_and_the_run_is_repeatable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, cache) = (dir.path().join("data"), dir.path().join("cache"));
    fmnist(&data, 8, 3);
    std::fs::write(data.join("bag/broken.png"), b"not a png at all").expect("write");
    let jpeg = std::fs::read(asset("assets/photos/puppy.jpg")).expect("photo");
    std::fs::write(data.join("coat/cut.jpg"), &jpeg[..jpeg.len() / 2]).expect("write");

    let run = |name: &str| {
        let out = dir.path().join(format!("{name}.onnx"));
        train(&data, &out, &cache)
            .args(["--epochs", "6", "--head", "mlp:16", "--seed", "3"])
            .assert()
            .success()
            .stderr(contains("2 unreadable images skipped"))
            .stderr(contains("broken.png: skipped"))
            .stdout(contains("parity ort-cpu").and(contains("parity tract")));
        std::fs::read_to_string(dir.path().join(format!("{name}.report/history.json")))
            .expect("history")
    };
    let first = run("first");
    let second = run("second");
    assert_eq!(first, second, "same seed, same data: same training history");
    let history: serde_json::Value = serde_json::from_str(&first).expect("json");
    assert_eq!(history.as_array().map(Vec::len), Some(6));

    // The second run found every feature in the cache.
    let model = scion_edge::Model::load(
        &dir.path().join("second.onnx"),
        &scion_edge::ContractOverrides::default(),
    )
    .expect("exported model loads");
    assert_eq!(model.outputs, ["logits", "probs", "features"]);
    assert_eq!(model.card.labels, ["ankle_boot", "bag", "coat"]);
    let training = model.card.provenance.training.as_ref().expect("training");
    assert_eq!(
        training["fit"]["head"],
        serde_json::json!({"mlp": {"hidden": 16}})
    );
    let metrics = model.card.provenance.metrics.as_ref().expect("metrics");
    assert_eq!(metrics["parity"].as_array().map(Vec::len), Some(2));
    assert_eq!(metrics["parity_unchecked"], serde_json::json!([]));
    assert_eq!(training["feature_engine"], "ort-cpu");
    assert!(metrics["parity"][0]["passed"].as_bool().expect("bool"));
    assert_eq!(model.card.provenance.references.len(), 4);
    assert!(model.card.provenance.backbone_sha256.is_some());

    scion()
        .args(["eval", "--model"])
        .arg(dir.path().join("second.onnx"))
        .arg("--data")
        .arg(&data)
        .args(["--engine", "tract"])
        .assert()
        .success()
        .stdout(contains("on tract FP32:").and(contains("top-1")));

    // Only TensorRT builds below FP32: ONNX Runtime on the CPU answers FP32, unchecked.
    let eval = scion()
        .args(["eval", "--model"])
        .arg(dir.path().join("second.onnx"))
        .arg("--data")
        .arg(&data)
        .args(["--engine", "ort-cpu", "--precision", "fp16", "--json"])
        .assert()
        .success();
    let eval: serde_json::Value =
        serde_json::from_slice(&eval.get_output().stdout).expect("eval json");
    assert_eq!(eval["engine"], "ort-cpu");
    assert_eq!(eval["precision"], "fp32");
    assert!(eval["precision_check"].is_null(), "{eval}");
    scion()
        .args(["eval", "--model"])
        .arg(dir.path().join("second.onnx"))
        .arg("--data")
        .arg(&data)
        .args(["--min-agreement", "1.5"])
        .assert()
        .failure()
        .stderr(contains("--min-agreement").and(contains("between 0 and 1")));
}

#[test]
fn ctrl_c_during_training_exports_the_best_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, cache, out) = (
        dir.path().join("data"),
        dir.path().join("cache"),
        dir.path().join("m.onnx"),
    );
    fmnist(&data, 6, 2);
    let bin = assert_cmd::cargo::cargo_bin("scion");
    let mut child = std::process::Command::new(bin)
        .args(["train", "--backbone"])
        .arg(backbone())
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .arg("--cache")
        .arg(&cache)
        .args(["--epochs", "1000000", "--patience", "0", "--batch", "2"])
        .args(["--head", "mlp:8"])
        .env("ORT_DYLIB_PATH", ort_lib())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start scion train");
    let checkpoint = dir.path().join("m.report/checkpoint.json");
    let started = Instant::now();
    while !checkpoint.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let started = Instant::now();
    let output = loop {
        if let Some(_status) = child.try_wait().expect("wait") {
            break child.wait_with_output().expect("output");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "still running 2 minutes after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let model = scion_edge::Model::load(&out, &scion_edge::ContractOverrides::default())
        .expect("the interrupted run's model loads");
    let training = model.card.provenance.training.expect("training");
    assert_eq!(training["stop"], "interrupted");
    assert!(training["best_epoch"].as_u64().expect("epoch") >= 1);
}

#[test]
fn calibration_and_the_unknown_rule_need_enough_validation_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, cache) = (dir.path().join("data"), dir.path().join("cache"));
    fmnist(&data, 10, 3);
    let out = dir.path().join("few.onnx");
    // 20% of 10 per class: 2 validation images each, too few to fit either.
    train(&data, &out, &cache)
        .assert()
        .success()
        .stderr(contains("calibration left out").and(contains("at least 5 per class")));
    let card = scion_edge::Model::load(&out, &scion_edge::ContractOverrides::default())
        .expect("model")
        .card;
    assert!(card.calibration.is_none() && card.unknown.is_none());
    let training = card.provenance.training.expect("training");
    assert!(
        training["left_out"]
            .as_array()
            .expect("reasons")
            .iter()
            .any(|r| r
                .as_str()
                .is_some_and(|r| r.starts_with("unknown rule left out"))),
        "{training}"
    );

    // Half of each class held out: 5 each, enough. Balanced weights and a refit.
    let out = dir.path().join("refit.onnx");
    train(&data, &out, &cache)
        .args([
            "--val-split",
            "0.5",
            "--class-weight",
            "balanced",
            "--refit",
        ])
        .args(["--c", "0.01,0.1,1"])
        .assert()
        .success()
        .stderr(contains("refit on training + validation images"));
    let card = scion_edge::Model::load(&out, &scion_edge::ContractOverrides::default())
        .expect("model")
        .card;
    assert!(
        card.calibration.is_some() && card.unknown.is_some(),
        "{card:?}"
    );
    let training = card.provenance.training.expect("training");
    assert_eq!(training["fit"]["class_weight"], "balanced");
    assert_eq!(training["linear_head"]["refit"], true);
    assert_eq!(
        training["linear_head"]["grid"].as_array().map(Vec::len),
        Some(6),
        "3 values of C, two scalings"
    );
}

#[test]
fn quality_flags_refuse_what_cannot_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, cache, out) = (
        dir.path().join("data"),
        dir.path().join("cache"),
        dir.path().join("m.onnx"),
    );
    fmnist(&data, 4, 2);
    train(&data, &out, &cache)
        .args(["--refit", "--val-split", "0"])
        .assert()
        .code(1)
        .stderr(contains("--refit needs a validation split").and(contains("--val-split")));
    train(&data, &out, &cache)
        .args(["--refit", "--unfreeze", "last:1"])
        .assert()
        .code(1)
        .stderr(contains("--refit retrains the linear head").and(contains("--unfreeze")));
    train(&data, &out, &cache)
        .args(["--unknown-recall", "1.5"])
        .assert()
        .code(1)
        .stderr(contains("--unknown-recall 1.5"));
    train(&data, &out, &cache)
        .args(["--c", "0.1,-1"])
        .assert()
        .code(1)
        .stderr(contains("--c takes positive numbers"));
    assert!(!out.exists(), "no model is written on error");
}
