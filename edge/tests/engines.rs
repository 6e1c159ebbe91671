//! The imported backbone on real photos, on both engines: sensible answers, and the same
//! answers (same top-1, probabilities within 1e-4) whichever engine runs it.

mod common;

use scion_edge::engine::{self, EngineKind, EngineOptions};
use scion_edge::preprocess::preprocess;
use scion_edge::{Classifier, ContractOverrides, Model};

const PHOTOS: [&str; 9] = [
    "black_cat.jpg",
    "camera.jpg",
    "fighter_fish.jpg",
    "gold_fish.jpg",
    "guitar.jpg",
    "puppy.jpg",
    "snow.jpg",
    "sunrise.jpg",
    "tent.jpg",
];

fn classifier(kind: EngineKind) -> Classifier {
    let model = Model::load(&common::model(), &ContractOverrides::default()).expect("model loads");
    let options = EngineOptions {
        threads: 2,
        ort_library: Some(common::ort_lib()),
        spin_wait: false,
    };
    let session = engine::prepare(kind, &model.spec(), &options)
        .unwrap_or_else(|e| panic!("{kind} must be available here: {e}"));
    Classifier::new(session, model.card)
}

fn probabilities(c: &mut Classifier, batch: usize) -> Vec<Vec<f32>> {
    let tensors: Vec<Vec<f32>> = PHOTOS
        .iter()
        .map(|p| {
            let bytes = std::fs::read(common::photo(p)).expect("photo");
            preprocess(&bytes, &c.card().preprocessing).expect("preprocess")
        })
        .collect();
    tensors
        .chunks(batch)
        .flat_map(|chunk| {
            let n = chunk.len();
            c.probabilities(chunk.concat(), n).expect("inference")
        })
        .collect()
}

fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .expect("non-empty")
}

#[test]
fn photos_get_sensible_imagenet_classes_on_both_engines() {
    for kind in [EngineKind::OrtCpu, EngineKind::Tract] {
        let mut c = classifier(kind);
        let probs = probabilities(&mut c, 4);
        let top1 =
            |name: &str| argmax(&probs[PHOTOS.iter().position(|p| *p == name).expect("listed")]);
        assert_eq!(top1("gold_fish.jpg"), 1, "{kind}: goldfish");
        assert!(
            (151..=268).contains(&top1("puppy.jpg")),
            "{kind}: a dog breed"
        );
        assert!(
            [402, 546].contains(&top1("guitar.jpg")),
            "{kind}: acoustic or electric guitar"
        );
        assert!(
            [732, 759].contains(&top1("camera.jpg")),
            "{kind}: Polaroid or reflex camera"
        );
        assert!(
            (281..=285).contains(&top1("black_cat.jpg")),
            "{kind}: a domestic cat"
        );
        let goldfish = &probs[3];
        assert!(
            goldfish[1] > 0.8,
            "{kind}: confident goldfish, got {}",
            goldfish[1]
        );
    }
}

#[test]
fn ort_and_tract_agree_within_1e4_on_every_photo() {
    let ort = probabilities(&mut classifier(EngineKind::OrtCpu), 9);
    let tract = probabilities(&mut classifier(EngineKind::Tract), 9);
    let mut worst = 0f32;
    for (i, (a, b)) in ort.iter().zip(&tract).enumerate() {
        assert_eq!(a.len(), 1000);
        assert_eq!(argmax(a), argmax(b), "{}: same top-1", PHOTOS[i]);
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    eprintln!(
        "largest probability difference, ort-cpu vs tract, 9 photos x 1000 classes: {worst:e}"
    );
    assert!(worst < 1e-4, "largest probability difference {worst}");
}

#[test]
fn batch_size_does_not_change_answers() {
    let mut c = classifier(EngineKind::OrtCpu);
    let one = probabilities(&mut c, 1);
    let nine = probabilities(&mut c, 9);
    for (a, b) in one.iter().zip(&nine) {
        assert_eq!(argmax(a), argmax(b));
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5));
    }
}

#[test]
fn strict_policy_reports_why_an_engine_is_unavailable() {
    let model = Model::load(&common::model(), &ContractOverrides::default()).expect("model loads");
    let options = EngineOptions {
        threads: 1,
        ort_library: Some("/nonexistent/libonnxruntime.so".into()),
        spin_wait: false,
    };
    // ONNX Runtime is loaded once per process; this test binary's other tests load the
    // real one, so only the GPU providers are checked here: not compiled in this build.
    let err = engine::Policy::prefer(EngineKind::Cuda, true)
        .select(&model.spec(), &options)
        .err()
        .expect("cuda is not compiled in");
    assert!(err.to_string().contains("--features cuda"), "{err}");
    let selected = engine::Policy::prefer(EngineKind::Tract, true)
        .select(&model.spec(), &options)
        .expect("tract is always there");
    assert_eq!(selected.session.kind(), EngineKind::Tract);
}
