//! `scion quantize` on a model trained here on real Fashion-MNIST images with the real
//! EfficientNet-Lite0 backbone: QDQ nodes written, the card records calibration and the
//! per-class comparison, the INT8 model runs on ONNX Runtime, and a quantization that loses
//! accuracy is refused.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;
use scion_tests::{asset, ort_lib};

fn scion() -> Command {
    let mut cmd = Command::cargo_bin("scion").expect("binary built");
    cmd.env("ORT_DYLIB_PATH", ort_lib()).env_remove("RUST_LOG");
    cmd
}

/// Fashion-MNIST (6 training images of each class, the first 30 test images as the
/// validation split), and a model trained on it.
fn trained(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    scion_tests::fashion_mnist(&data, 6, 30);
    let model = dir.join("fmnist.onnx");
    scion()
        .arg("train")
        .arg("--backbone")
        .arg(asset("models/efficientnet-lite0.onnx"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&model)
        .arg("--cache")
        .arg(dir.join("cache"))
        .assert()
        .success();
    (data, model)
}

fn quantize(model: &Path, calibration: &Path, data: &Path, out: &Path) -> Command {
    let mut cmd = scion();
    cmd.arg("quantize")
        .arg("--model")
        .arg(model)
        .arg("--calibration")
        .arg(calibration)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out);
    cmd
}

#[test]
fn an_int8_model_is_written_with_its_calibration_and_comparison_or_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, model) = trained(dir.path());
    let out = dir.path().join("fmnist.int8.onnx");
    // 30 validation images: one flip is 3.3 points, so the gate is opened for this part.
    let run = quantize(&model, &data.join("train"), &data, &out)
        .args(["--max-drop", "100"])
        .assert()
        .success()
        .stdout(contains("activations and").and(contains("weights to INT8 (QDQ)")))
        .stdout(contains("calibrated on 60 images (percentile 99.9)"))
        .stdout(contains("validation (30 images): top-1 FP32"));
    let stdout = String::from_utf8_lossy(&run.get_output().stdout).into_owned();

    let fp32_bytes = std::fs::read(&model).expect("fp32");
    let int8_bytes = std::fs::read(&out).expect("int8 written");
    assert!(!scion_edge::engine::gpu::is_quantized(&fp32_bytes));
    assert!(
        scion_edge::engine::gpu::is_quantized(&int8_bytes),
        "QDQ nodes"
    );
    let int8 = scion_edge::Model::load(&out, &Default::default()).expect("INT8 model loads");
    let q = &int8.card.provenance.metrics.as_ref().expect("metrics")["quantization"];
    assert_eq!(q["method"], "percentile 99.9");
    assert_eq!(q["calibration"]["images"], 60);
    assert_eq!(
        q["calibration"]["fingerprint"].as_str().map(str::len),
        Some(64)
    );
    assert_eq!(
        q["validation"]["per_class"].as_array().map(Vec::len),
        Some(10)
    );
    let agreement = q["validation"]["agreement"].as_f64().expect("agreement");
    assert!(
        agreement >= 75.0,
        "INT8 keeps most FP32 answers: {agreement}%\n{stdout}"
    );
    // The reference outputs are the INT8 model's own, so a device's check passes.
    assert!(!int8.card.provenance.references.is_empty());

    // The INT8 model runs on ONNX Runtime's CPU provider through the normal path.
    let options = scion_edge::engine::EngineOptions {
        ort_library: Some(ort_lib()),
        ..Default::default()
    };
    let session = scion_edge::engine::prepare(
        scion_edge::engine::EngineKind::OrtCpu,
        &int8.spec(),
        &options,
    )
    .expect("ORT runs QDQ");
    let mut classifier = scion_edge::Classifier::new(session, int8.card.clone());
    for reference in &int8.card.provenance.references {
        let path = walkdir::WalkDir::new(&data)
            .into_iter()
            .flatten()
            .find(|e| e.file_name().to_string_lossy() == reference.name)
            .expect("reference image in the data")
            .into_path();
        let bytes = std::fs::read(path).expect("image");
        let input =
            scion_edge::preprocess::preprocess(&bytes, &int8.card.preprocessing).expect("pre");
        let probs = classifier.probabilities(input, 1).expect("runs").remove(0);
        for &(class, p) in &reference.top {
            assert!(
                (probs[class] - p).abs() < 1e-4,
                "{}: {class}",
                reference.name
            );
        }
    }

    // Ranges cut at the 1st percentile clip nearly everything: refused, nothing written.
    let refused = dir.path().join("refused.onnx");
    quantize(&model, &data.join("train"), &data, &refused)
        .args(["--percentile", "1", "--max-drop", "0"])
        .assert()
        .code(1)
        .stderr(contains("more than --max-drop 0").and(contains("not written")));
    assert!(!refused.exists());
}

#[test]
fn bad_quantize_input_gets_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("dir");
    let model = asset("models/efficientnet-lite0.onnx");
    quantize(&model, &empty, &empty, &dir.path().join("x.onnx"))
        .assert()
        .failure()
        .stderr(contains(format!(
            "calibration {}: no images there",
            empty.display()
        )));
    quantize(&model, &empty, &empty, &dir.path().join("x.onnx"))
        .args(["--percentile", "101"])
        .assert()
        .failure()
        .stderr(contains("--percentile 101"));
}
