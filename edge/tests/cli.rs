//! `scion-edge` as a user runs it: real model, real photos, real ONNX Runtime.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{records, scion_edge, stderr_text, stdout_records};

fn model_arg() -> String {
    common::model().to_string_lossy().into_owned()
}

#[test]
fn classify_writes_one_record_per_photo_naming_the_engine() {
    let out = scion_edge()
        .args([
            "classify",
            "--model",
            &model_arg(),
            "-k",
            "3",
            "--engine",
            "ort-cpu",
            "--require",
        ])
        .arg(common::photos())
        .assert()
        .success();
    let recs = stdout_records(&out);
    assert_eq!(recs.len(), 9);
    for r in &recs {
        assert_eq!(r["engine"], "ort-cpu");
        assert_eq!(r["top"].as_array().expect("top").len(), 3);
    }
    let goldfish = recs
        .iter()
        .find(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("gold_fish.jpg"))
        })
        .expect("goldfish record");
    assert_eq!(goldfish["top"][0]["label"], "goldfish, Carassius auratus");
    assert_eq!(goldfish["top"][0]["index"], 1);
    let stderr = stderr_text(&out);
    assert!(
        stderr.contains("ort-cpu"),
        "the engine used is logged: {stderr}"
    );
}

#[test]
fn bad_inputs_become_error_records_and_exit_status_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.jpg");
    std::fs::copy(common::photo("puppy.jpg"), &good).expect("copy");
    let jpeg = std::fs::read(common::photo("guitar.jpg")).expect("read");
    std::fs::write(dir.path().join("truncated.jpg"), &jpeg[..jpeg.len() / 3]).expect("write");
    std::fs::write(dir.path().join("notes.jpg"), b"shopping list: eggs").expect("write");
    std::fs::write(dir.path().join("empty.png"), b"").expect("write");
    std::os::unix::fs::symlink("/nonexistent/target.jpg", dir.path().join("dangling.jpg"))
        .expect("symlink");
    let missing = dir.path().join("no-such-file.jpg");

    let out = scion_edge()
        .args(["classify", "--model", &model_arg()])
        .arg(dir.path())
        .arg(&missing)
        .assert()
        .code(2);
    let recs = stdout_records(&out);
    let by_name: HashMap<String, &serde_json::Value> = recs
        .iter()
        .map(|r| {
            let p = r["path"].as_str().expect("path");
            (
                Path::new(p)
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
                r,
            )
        })
        .collect();
    assert_eq!(by_name.len(), recs.len(), "each input once");
    assert!(by_name["good.jpg"]["top"].is_array());
    for bad in [
        "truncated.jpg",
        "notes.jpg",
        "empty.png",
        "no-such-file.jpg",
    ] {
        let r = by_name
            .get(bad)
            .unwrap_or_else(|| panic!("a record for {bad}: {recs:?}"));
        assert!(
            r["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{bad}: {r}"
        );
        assert!(r.get("top").is_none());
    }
    let stderr = stderr_text(&out);
    assert!(
        stderr.contains("notes.jpg"),
        "errors are named on stderr too: {stderr}"
    );
}

#[test]
fn killed_mid_run_then_rerun_gives_every_input_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = dir.path().join("images");
    std::fs::create_dir(&images).expect("mkdir");
    let all = common::many_photos(&images, 30);
    let out = dir.path().join("out.jsonl");
    let args = |cmd: &mut std::process::Command| {
        cmd.env("ORT_DYLIB_PATH", common::ort_lib())
            .args([
                "classify",
                "-q",
                "--model",
                &model_arg(),
                "--batch",
                "2",
                "--threads",
                "1",
                "--decode-threads",
                "1",
            ])
            .arg("--out")
            .arg(&out)
            .arg(&images);
    };
    let bin = assert_cmd::cargo::cargo_bin("scion-edge");
    let mut first = std::process::Command::new(&bin);
    args(&mut first);
    let mut child = first.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = std::fs::read_to_string(&out)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if lines >= 6 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let partial = std::fs::read_to_string(&out).expect("partial output");
    let done_before = partial.lines().count();
    assert!(
        done_before >= 6 && done_before < all.len(),
        "killed mid-run ({done_before} of {})",
        all.len()
    );
    // A write torn by the crash:
    std::fs::write(
        &out,
        format!(
            "{partial}{{\"path\":\"{}\",\"top\":[{{\"la",
            all[all.len() - 1].display()
        ),
    )
    .expect("tear");

    let mut second = std::process::Command::new(&bin);
    args(&mut second);
    let status = second.status().expect("rerun");
    assert!(status.success(), "rerun succeeds");
    let text = std::fs::read_to_string(&out).expect("output");
    let recs = records(&text);
    let paths: Vec<&str> = recs
        .iter()
        .map(|r| r["path"].as_str().expect("path"))
        .collect();
    let unique: BTreeSet<&str> = paths.iter().copied().collect();
    assert_eq!(paths.len(), all.len(), "no duplicates");
    assert_eq!(unique.len(), all.len(), "nothing lost");
    assert!(recs.iter().all(|r| r["top"].is_array()), "all classified");
    assert!(
        text.starts_with(&partial),
        "finished work is kept as it was"
    );
}

#[test]
fn shards_are_disjoint_and_concatenate_to_the_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = dir.path().join("images");
    std::fs::create_dir(&images).expect("mkdir");
    common::many_photos(&images, 2);
    let mut union = Vec::new();
    for i in 0..3 {
        let out = scion_edge()
            .args([
                "classify",
                "-q",
                "--model",
                &model_arg(),
                "--shard",
                &format!("{i}/3"),
            ])
            .arg(&images)
            .assert()
            .success();
        union.extend(
            stdout_records(&out)
                .into_iter()
                .map(|r| r["path"].as_str().expect("path").to_string()),
        );
    }
    let unique: BTreeSet<&String> = union.iter().collect();
    assert_eq!(union.len(), 18);
    assert_eq!(unique.len(), 18);
    scion_edge()
        .args(["classify", "--model", &model_arg(), "--shard", "3/3"])
        .arg(&images)
        .assert()
        .failure()
        .stderr(predicates::str::contains("--shard"));
}

#[test]
fn csv_has_a_header_and_one_row_per_input() {
    let out = scion_edge()
        .args([
            "classify",
            "-q",
            "--model",
            &model_arg(),
            "--format",
            "csv",
            "-k",
            "2",
        ])
        .arg(common::photos())
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "path,engine,unknown,top1_label,top1_index,top1_prob,top2_label,top2_index,top2_prob,error"
        )
    );
    let goldfish = text
        .lines()
        .find(|l| l.contains("gold_fish.jpg"))
        .expect("goldfish row");
    assert!(
        goldfish.contains(",\"goldfish, Carassius auratus\",1,"),
        "{goldfish}"
    );
    assert_eq!(lines.count(), 9);
}

#[test]
fn bad_models_are_errors_that_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = std::fs::read(common::model()).expect("model");
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    scion_edge()
        .args(["classify", "--model"])
        .arg(&truncated)
        .arg(common::photos())
        .assert()
        .code(1)
        .stderr(predicates::str::contains("truncated.onnx"))
        .stderr(predicates::str::contains("not a valid ONNX model"));
    scion_edge()
        .args(["classify", "--model"])
        .arg(common::photo("puppy.jpg"))
        .arg(common::photos())
        .assert()
        .code(1)
        .stderr(predicates::str::contains("puppy.jpg"));
    scion_edge()
        .args(["classify", "--model", "/nonexistent/model.onnx"])
        .arg(common::photos())
        .assert()
        .code(1)
        .stderr(predicates::str::contains("/nonexistent/model.onnx"));
}

#[test]
fn a_card_that_does_not_describe_the_graph_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proto = scion_onnx::io::load(common::model()).expect("load");
    let mut card = scion_onnx::ModelCard::from_model(&proto)
        .expect("ok")
        .expect("card");
    card.tensors.input = "pixels".into();
    card.write_to(&mut proto);
    let path = dir.path().join("mislabelled.onnx");
    scion_onnx::io::save(&proto, &path).expect("save");
    scion_edge()
        .args(["classify", "--model"])
        .arg(&path)
        .arg(common::photo("gold_fish.jpg"))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("mislabelled.onnx"))
        .stderr(predicates::str::contains("'pixels' is not a graph input"));
}

#[test]
fn a_model_without_a_card_needs_flags_and_then_matches_the_card() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proto = scion_onnx::io::load(common::model()).expect("load");
    let card = scion_onnx::ModelCard::from_model(&proto)
        .expect("ok")
        .expect("card");
    proto.metadata_props.clear();
    let bare = dir.path().join("bare.onnx");
    scion_onnx::io::save(&proto, &bare).expect("save");
    scion_edge()
        .args(["classify", "--model"])
        .arg(&bare)
        .arg(common::photo("gold_fish.jpg"))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("no scion card"))
        .stderr(predicates::str::contains("--labels"));
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, card.labels.join("\n")).expect("labels");
    let out = scion_edge()
        .args(["classify", "-q", "-k", "1", "--model"])
        .arg(&bare)
        .arg("--labels")
        .arg(&labels)
        .args([
            "--mean",
            "127,127,127",
            "--std",
            "128,128,128",
            "--scale",
            "1",
        ])
        .arg(common::photo("gold_fish.jpg"))
        .assert()
        .success();
    let recs = stdout_records(&out);
    assert_eq!(recs[0]["top"][0]["index"], 1);
}

#[test]
fn without_onnx_runtime_tract_runs_and_a_warning_says_why() {
    let out = scion_edge()
        .args([
            "classify",
            "--model",
            &model_arg(),
            "--ort-lib",
            "/nonexistent/libonnxruntime.so",
        ])
        .arg(common::photo("gold_fish.jpg"))
        .assert()
        .success();
    let recs = stdout_records(&out);
    assert_eq!(recs[0]["engine"], "tract");
    let stderr = stderr_text(&out);
    assert!(
        stderr.contains("ONNX Runtime library") && stderr.contains("WARN"),
        "{stderr}"
    );

    scion_edge()
        .args([
            "classify",
            "--model",
            &model_arg(),
            "--engine",
            "ort",
            "--require",
        ])
        .args(["--ort-lib", "/nonexistent/libonnxruntime.so"])
        .arg(common::photo("gold_fish.jpg"))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("/nonexistent/libonnxruntime.so"));
}

#[test]
fn info_shows_the_card_tensors_and_engines() {
    scion_edge()
        .arg("info")
        .arg(common::model())
        .assert()
        .success()
        .stdout(predicates::str::contains("efficientnet-lite0"))
        .stdout(predicates::str::contains("labels:   1000"))
        .stdout(predicates::str::contains(
            "output:   features [batch, 1280]",
        ))
        .stdout(predicates::str::contains("ort-cpu   available"))
        .stdout(predicates::str::contains("tract     available"))
        .stdout(predicates::str::contains(
            "cuda      unavailable: cuda: not compiled in",
        ));
}

#[test]
fn import_builds_the_backbone_from_the_wheel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wheel = std::fs::read_dir(common::workspace().join("assets/wheels"))
        .expect("wheels")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("efficientnet_lite0"))
        .expect("lite0 wheel");
    let out = dir.path().join("lite0.onnx");
    scion_edge()
        .args(["import", "efficientnet-lite0", "--wheel"])
        .arg(&wheel)
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicates::str::contains("4.63 M parameters"));
    assert_eq!(
        std::fs::read(&out).expect("written"),
        std::fs::read(common::model()).expect("setup's")
    );
    scion_edge()
        .args([
            "import",
            "efficientnet-lite0",
            "--wheel",
            "/nonexistent.whl",
            "--out",
        ])
        .arg(dir.path().join("x.onnx"))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("/nonexistent.whl"));
}

#[test]
fn prepare_builds_the_engine_and_says_what_it_keeps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("engines");
    let run = scion_edge()
        .args([
            "--quiet",
            "prepare",
            "--engine",
            "ort-cpu",
            "--require",
            "--model",
        ])
        .arg(model_arg())
        .arg("--engine-cache")
        .arg(&cache)
        .arg("--check-images")
        .arg(common::photos())
        .assert()
        .success();
    let out = String::from_utf8_lossy(&run.get_output().stdout).into_owned();
    assert!(out.contains("engine:   ort-cpu (fp32), ready in "), "{out}");
    assert!(
        out.contains("nothing kept: ort-cpu builds no engine to cache (only TensorRT does)"),
        "{out}"
    );
    // FP32 engines are not checked against themselves.
    assert!(!out.contains("check:"), "{out}");
    assert!(
        !cache.exists(),
        "no folder for an engine that is not cached"
    );
}

#[test]
fn engine_settings_that_cannot_work_are_errors_naming_the_flag() {
    for (flag, value, expected) in [
        (
            "--precision",
            "fp8",
            "'--precision <P>': unknown precision 'fp8'",
        ),
        (
            "--cudnn-search",
            "fastest",
            "'--cudnn-search <HOW>': unknown cuDNN search",
        ),
        (
            "--min-agreement",
            "2",
            "'--min-agreement <SHARE>': '2' is not a share",
        ),
    ] {
        let run = scion_edge()
            .args(["prepare", "--engine", "ort-cpu", "--model"])
            .arg(model_arg())
            .args([flag, value])
            .assert()
            .failure();
        let err = stderr_text(&run);
        assert!(err.contains(expected), "{flag} {value}: {err}");
    }
    // No TensorRT in this binary: --require names the feature instead of building on CPU.
    let run = scion_edge()
        .args([
            "prepare",
            "--engine",
            "tensorrt",
            "--require",
            "--precision",
            "fp16",
        ])
        .arg("--model")
        .arg(model_arg())
        .assert()
        .code(1);
    let err = stderr_text(&run);
    assert!(err.contains("tensorrt: not compiled in"), "{err}");
}

#[test]
fn info_shows_the_gpu_stack_and_the_options_each_provider_would_get() {
    let run = scion_edge()
        .args(["info", "--precision", "fp16", "--dla-core", "1"])
        .arg(model_arg())
        .assert()
        .success();
    let out = String::from_utf8_lossy(&run.get_output().stdout).into_owned();
    assert!(out.contains("onnxruntime: ORT Build Info: "), "{out}");
    assert!(
        out.contains("precision: asked fp16, TensorRT would build fp16"),
        "{out}"
    );
    assert!(
        out.contains(
            "options:  tensorrt: device_id=0 trt_fp16_enable=1 trt_int8_enable=0 \
             trt_dla_enable=1 trt_dla_core=1 trt_engine_cache_enable=0; cuda: device_id=0"
        ),
        "{out}"
    );
    assert!(out.contains("engine:   ort-cpu   available, FP32"), "{out}");
}
