//! The loader's views on a real photo: the eval view is exactly the edge's preprocessing,
//! augmented views are pure functions of (seed, view, content), and keeping decoded images
//! in memory changes nothing but speed.

use std::path::PathBuf;

use scion_edge::augment::Augmentation;
use scion_trainer::features::ImageHash;
use scion_trainer::loader::{Loader, View};
use sha2::{Digest, Sha256};

fn photo() -> (PathBuf, ImageHash) {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/photos/puppy.jpg");
    assert!(
        p.exists(),
        "{} missing; run scripts/setup.sh first",
        p.display()
    );
    let hash = Sha256::digest(std::fs::read(&p).expect("read")).into();
    (p, hash)
}

fn contract() -> scion_onnx::card::Preprocessing {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/efficientnet-lite0.onnx");
    scion_edge::Model::load(&model, &scion_edge::ContractOverrides::default())
        .expect("backbone; run scripts/setup.sh first")
        .card
        .preprocessing
}

fn view(seed: u64, index: usize) -> View {
    View::Augmented {
        augmentation: Augmentation::default(),
        seed,
        index,
    }
}

#[test]
fn views_are_reproducible_and_memory_changes_nothing() {
    let (path, hash) = photo();
    let contract = contract();
    let plain = Loader::new(contract.clone(), false);
    let kept = Loader::new(contract.clone(), true);

    let eval = plain.prepare(&path, &hash, &View::Eval).expect("eval view");
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(
        eval,
        scion_edge::preprocess::preprocess(&bytes, &contract).expect("preprocess"),
        "the eval view is the device's preprocessing"
    );
    for loader in [&plain, &kept] {
        // Twice each: the second time `kept` serves the decoded image from memory.
        for _ in 0..2 {
            assert_eq!(
                loader.prepare(&path, &hash, &View::Eval).expect("eval"),
                eval
            );
            assert_eq!(
                loader.prepare(&path, &hash, &view(1, 0)).expect("view"),
                plain.prepare(&path, &hash, &view(1, 0)).expect("view")
            );
        }
    }
    let a = plain.prepare(&path, &hash, &view(1, 0)).expect("view");
    assert_ne!(a, eval);
    assert_ne!(a, plain.prepare(&path, &hash, &view(1, 1)).expect("view"));
    assert_ne!(a, plain.prepare(&path, &hash, &view(2, 0)).expect("view"));
    assert_eq!(a.len(), eval.len());

    let keys = [
        View::Eval.key(),
        view(1, 0).key(),
        view(1, 1).key(),
        view(2, 0).key(),
    ];
    for (i, k) in keys.iter().enumerate() {
        assert!(!keys[i + 1..].contains(k), "cache keys must differ: {k}");
    }
    let missing = PathBuf::from("/nonexistent/x.jpg");
    let err = plain
        .prepare(&missing, &hash, &View::Eval)
        .expect_err("missing file");
    assert!(err.contains("No such file"), "{err}");
}
