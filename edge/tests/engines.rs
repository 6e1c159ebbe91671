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
        ..Default::default()
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
        ..Default::default()
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

/// Deterministic small weights in [-0.05, 0.05).
fn weights(n: usize, salt: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h = (i.wrapping_add(salt)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
            (h % 1000) as f32 / 10_000.0 - 0.05
        })
        .collect()
}

#[test]
fn a_grafted_head_computes_exactly_what_it_says_on_both_engines() {
    use scion_onnx::patch::{Dense, Patch};
    let original = scion_onnx::io::load(common::model()).expect("load");
    let features = scion_onnx::graph::find_feature_tensor(original.graph.as_ref().expect("graph"))
        .expect("feature tensor")
        .tensor;
    let dir = tempfile::tempdir().expect("tempdir");
    let heads = [
        vec![(1280, 10)],           // linear
        vec![(1280, 16), (16, 10)], // mlp:16
    ];
    for (h, shape) in heads.iter().enumerate() {
        let layers: Vec<Dense> = shape
            .iter()
            .enumerate()
            .map(|(i, &(inputs, outputs))| Dense {
                weight: weights(inputs * outputs, i as u64 * 7 + 1),
                bias: weights(outputs, i as u64 * 7 + 2),
                inputs,
                outputs,
            })
            .collect();
        let mut model = original.clone();
        Patch::GraftHead {
            features: features.clone(),
            layers: layers.clone(),
        }
        .apply(&mut model)
        .expect("graft");
        let mut card = scion_onnx::ModelCard::from_model(&original)
            .expect("ok")
            .expect("card");
        card.labels = (0..10).map(|c| format!("class {c}")).collect();
        card.tensors.logits = Some("logits".into());
        card.tensors.probs = Some("probs".into());
        card.write_to(&mut model);
        let path = dir.path().join(format!("head{h}.onnx"));
        scion_onnx::io::save(&model, &path).expect("save");
        let loaded =
            Model::load(&path, &ContractOverrides::default()).expect("grafted model loads");
        assert_eq!(loaded.outputs, ["logits", "probs", "features"]);

        let photos: Vec<f32> = ["gold_fish.jpg", "puppy.jpg", "tent.jpg"]
            .iter()
            .flat_map(|p| {
                let bytes = std::fs::read(common::photo(p)).expect("photo");
                preprocess(&bytes, &loaded.card.preprocessing).expect("preprocess")
            })
            .collect();
        let input = engine::Tensor {
            shape: loaded.card.preprocessing.input_shape(3),
            data: photos,
        };
        let options = EngineOptions {
            threads: 2,
            ort_library: Some(common::ort_lib()),
            spin_wait: false,
            ..Default::default()
        };
        let mut results = Vec::new();
        for kind in [EngineKind::OrtCpu, EngineKind::Tract] {
            let mut session = engine::prepare(kind, &loaded.spec(), &options).expect("prepare");
            results.push(session.run(&input).expect("run"));
        }
        for out in &results {
            let f = &out.get("features").expect("features").data;
            let logits = &out.get("logits").expect("logits").data;
            let probs = &out.get("probs").expect("probs").data;
            for img in 0..3 {
                // The head by hand.
                let mut x: Vec<f32> = f[img * 1280..(img + 1) * 1280].to_vec();
                for (i, l) in layers.iter().enumerate() {
                    let mut y: Vec<f32> = (0..l.outputs)
                        .map(|o| {
                            l.bias[o]
                                + (0..l.inputs)
                                    .map(|k| x[k] * l.weight[o * l.inputs + k])
                                    .sum::<f32>()
                        })
                        .collect();
                    if i + 1 < layers.len() {
                        y.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                    x = y;
                }
                let got = &logits[img * 10..(img + 1) * 10];
                for (a, b) in got.iter().zip(&x) {
                    assert!(
                        (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                        "head {h}: logit {a} vs by hand {b}"
                    );
                }
                let p = scion_edge::postprocess::softmax(got);
                for (a, b) in probs[img * 10..(img + 1) * 10].iter().zip(&p) {
                    assert!((a - b).abs() < 1e-6, "probs = softmax(logits)");
                }
            }
        }
        let (a, b) = (&results[0], &results[1]);
        let worst = a
            .get("probs")
            .expect("p")
            .data
            .iter()
            .zip(&b.get("probs").expect("p").data)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "ort vs tract on the grafted model: {worst}");
    }
}

#[test]
fn augmented_views_of_a_real_photo_keep_their_class() {
    use scion_edge::augment::{Augmentation, preprocess_augmented};
    let mut c = classifier(EngineKind::OrtCpu);
    let bytes = std::fs::read(common::photo("gold_fish.jpg")).expect("photo");
    let mild = Augmentation {
        scale: (0.5, 1.0),
        ..Augmentation::default()
    };
    let views: Vec<f32> = (0..8)
        .flat_map(|seed| {
            preprocess_augmented(&bytes, &c.card().preprocessing, &mild, seed).expect("view")
        })
        .collect();
    let probs = c.probabilities(views, 8).expect("inference");
    let goldfish = probs.iter().filter(|p| argmax(p) == 1).count();
    eprintln!("augmented goldfish views classified as goldfish: {goldfish}/8");
    assert!(goldfish >= 6, "{goldfish}/8 views kept their class");
    let distinct: std::collections::BTreeSet<u32> = probs.iter().map(|p| p[1].to_bits()).collect();
    assert_eq!(distinct.len(), 8, "every view differs");
}
