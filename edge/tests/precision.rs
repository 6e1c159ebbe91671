//! Reduced precision is checked, not trusted. TensorRT cannot run here, so ONNX Runtime's
//! CPU provider stands in for it: the "FP16 engine" is the real EfficientNet-Lite0 with
//! every weight rounded to FP16's 10-bit mantissa, the "broken INT8 engine" the same model
//! with its weights crushed to three levels per tensor (what a bad calibration does to
//! answers). The policy, the agreement count on real photos and the FP32 rebuild are the
//! real code.

mod common;

use scion_edge::engine::precision_check::CheckImages;
use scion_edge::engine::{
    self, EngineError, EngineKind, EngineOptions, ModelSpec, Outputs, Policy, Precision, Session,
    Tensor,
};
use scion_edge::{ContractOverrides, Model};

/// A real CPU session that reports itself as a TensorRT build at some precision.
struct StandIn {
    inner: Box<dyn Session>,
    precision: Precision,
}

impl Session for StandIn {
    fn kind(&self) -> EngineKind {
        EngineKind::TensorRt
    }
    fn run(&mut self, input: &Tensor) -> Result<Outputs, EngineError> {
        self.inner.run(input)
    }
    fn precision(&self) -> Precision {
        self.precision
    }
}

/// The model with `f` applied to every float weight tensor.
fn with_weights(bytes: &[u8], f: impl Fn(&mut [f32])) -> Vec<u8> {
    let mut proto = scion_onnx::io::decode(bytes).expect("decodes");
    let graph = proto.graph.as_mut().expect("graph");
    for tensor in &mut graph.initializer {
        if tensor.data_type != 1 {
            continue;
        }
        let mut values: Vec<f32> = if tensor.raw_data.is_empty() {
            std::mem::take(&mut tensor.float_data)
        } else {
            tensor
                .raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        if values.len() < 16 {
            continue; // shapes, scalars
        }
        f(&mut values);
        tensor.float_data.clear();
        tensor.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
    scion_onnx::io::encode(&proto)
}

fn fp16_rounded(values: &mut [f32]) {
    for v in values {
        let bits = v.to_bits();
        *v = f32::from_bits((bits + 0x1000) & !0x1fff);
    }
}

fn three_levels(values: &mut [f32]) {
    let scale = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    for v in values {
        *v = (*v / scale * 1.0).round() * scale;
    }
}

fn options(precision: Precision) -> EngineOptions {
    EngineOptions {
        threads: 2,
        ort_library: Some(common::ort_lib()),
        precision: Some(precision),
        ..EngineOptions::default()
    }
}

/// Select with TensorRT first, its builds standing in as described at the top.
fn select(reduced_bytes: &[u8], check: &CheckImages) -> engine::Selected {
    let model = Model::load(&common::model(), &ContractOverrides::default()).expect("model");
    let reduced = ModelSpec {
        bytes: reduced_bytes,
        ..model.spec()
    };
    let prepare = |kind: EngineKind, spec: &ModelSpec<'_>, options: &EngineOptions| {
        let cpu = |spec: &ModelSpec<'_>| engine::prepare(EngineKind::OrtCpu, spec, options);
        match (kind, options.precision) {
            (EngineKind::TensorRt, Some(Precision::Fp32)) => Ok(Box::new(StandIn {
                inner: cpu(spec)?,
                precision: Precision::Fp32,
            }) as Box<dyn Session>),
            (EngineKind::TensorRt, Some(precision)) => Ok(Box::new(StandIn {
                inner: cpu(&reduced)?,
                precision,
            }) as Box<dyn Session>),
            (EngineKind::TensorRt | EngineKind::Cuda, _) => Err(EngineError::NotCompiled {
                engine: kind,
                feature: "tensorrt",
            }),
            (kind, _) => engine::prepare(kind, spec, options),
        }
    };
    let policy = Policy {
        order: vec![EngineKind::TensorRt, EngineKind::OrtCpu],
        strict: false,
    };
    policy
        .select_with(
            &model.spec(),
            &options(Precision::Fp16),
            Some(check),
            &prepare,
        )
        .expect("some engine serves")
}

fn check_images(model: &Model) -> CheckImages {
    scion_edge::check_images::from_folder(model, &common::photos(), 1000).expect("photos")
}

#[test]
fn a_reduced_precision_engine_that_keeps_the_answers_serves() {
    let model = Model::load(&common::model(), &ContractOverrides::default()).expect("model");
    let check = check_images(&model);
    assert_eq!(check.images.len(), 9, "the nine set-up photos");
    let selected = select(&with_weights(&model.bytes, fp16_rounded), &check);
    let agreement = selected.agreement.expect("checked");
    assert_eq!((agreement.agreeing, agreement.total), (9, 9), "{agreement}");
    assert!(agreement.accepted());
    assert_eq!(agreement.reference, EngineKind::OrtCpu);
    assert_eq!(selected.session.kind(), EngineKind::TensorRt);
    assert_eq!(selected.session.precision(), Precision::Fp16);
}

#[test]
fn a_reduced_precision_engine_that_changes_answers_is_refused_for_fp32() {
    let model = Model::load(&common::model(), &ContractOverrides::default()).expect("model");
    let check = check_images(&model);
    let mut selected = select(&with_weights(&model.bytes, three_levels), &check);
    let agreement = selected.agreement.clone().expect("checked");
    assert!(!agreement.accepted(), "{agreement}");
    assert!(agreement.agreeing < 9, "{agreement}");
    let text = agreement.to_string();
    assert!(
        text.contains(&format!("on {} of 9 check images", agreement.agreeing))
            && text.contains("99.0% required"),
        "{text}"
    );
    // FP32 serves, on the same engine, with the FP32 answers.
    assert_eq!(selected.session.kind(), EngineKind::TensorRt);
    assert_eq!(selected.session.precision(), Precision::Fp32);
    let mut reference =
        engine::prepare(EngineKind::OrtCpu, &model.spec(), &options(Precision::Fp32))
            .expect("ort-cpu");
    for input in check.inputs() {
        let input = input.expect("the photos decode");
        let a = selected.session.run(&input).expect("runs");
        let b = reference.run(&input).expect("runs");
        assert_eq!(
            a.0[0].1.data, b.0[0].1.data,
            "the FP32 build is the model itself"
        );
    }
}

#[test]
fn without_check_images_a_reduced_engine_serves_unchecked_and_says_so() {
    let model = Model::load(&common::model(), &ContractOverrides::default()).expect("model");
    let mut empty = check_images(&model);
    empty.images.clear();
    let selected = select(&with_weights(&model.bytes, fp16_rounded), &empty);
    assert!(selected.agreement.is_none());
    assert_eq!(selected.session.precision(), Precision::Fp16);
}

#[test]
fn an_undecodable_check_image_is_left_out_and_counted() {
    let model = Model::load(&common::model(), &ContractOverrides::default()).expect("model");
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(common::photos()).expect("photos") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    let photo = std::fs::read_dir(dir.path())
        .expect("dir")
        .next()
        .expect("a photo")
        .expect("entry")
        .path();
    let bytes = std::fs::read(&photo).expect("read");
    std::fs::write(dir.path().join("truncated.jpg"), &bytes[..bytes.len() / 3]).expect("write");
    std::fs::write(dir.path().join("text.jpg"), b"not an image").expect("write");
    let check =
        scion_edge::check_images::from_folder(&model, dir.path(), 1000).expect("check images");
    assert_eq!(check.images.len(), 11);
    let selected = select(&with_weights(&model.bytes, fp16_rounded), &check);
    let agreement = selected.agreement.expect("checked");
    assert_eq!(
        (agreement.agreeing, agreement.total, agreement.skipped),
        (9, 9, 2),
        "{agreement}"
    );
    assert!(
        agreement
            .to_string()
            .ends_with("; 2 undecodable images left out"),
        "{agreement}"
    );
}
