//! Backbone features of real Fashion-MNIST images through ONNX Runtime, and their cache.

use std::path::{Path, PathBuf};

use scion_edge::engine::{self, EngineKind, EngineOptions, Session, Tensor};
use scion_edge::preprocess::preprocess;
use scion_edge::{ContractOverrides, Model};
use scion_onnx::card::ResizeFilter;
use scion_trainer::features::{CacheKey, Extracted, FeatureCache, FeatureError, extract};
use scion_trainer::idx::{self, FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, Selection};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn backbone() -> Model {
    let path = workspace().join("models/efficientnet-lite0.onnx");
    assert!(
        path.exists(),
        "{} missing; run scripts/setup.sh first",
        path.display()
    );
    Model::load(&path, &ContractOverrides::default()).expect("model")
}

fn session(model: &Model) -> Box<dyn Session> {
    let lib = std::fs::read_dir(workspace().join("assets/onnxruntime"))
        .expect("assets/onnxruntime; run scripts/setup.sh first")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("libonnxruntime.so."))
        .expect("libonnxruntime");
    let options = EngineOptions {
        threads: 2,
        ort_library: Some(lib),
        spin_wait: false,
        ..Default::default()
    };
    engine::prepare(EngineKind::OrtCpu, &model.spec(), &options).expect("ort")
}

fn images(dir: &Path, per_class: usize) -> Vec<PathBuf> {
    let root = Path::new(FASHION_MNIST_DIR);
    let imgs = idx::read_images(&root.join("t10k-images-idx3-ubyte.gz"))
        .expect("run scripts/setup.sh first");
    let labels = idx::read_labels(&root.join("t10k-labels-idx1-ubyte.gz")).expect("labels");
    let names: Vec<String> = FASHION_MNIST_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let selection = Selection {
        per_class: Some(per_class),
        first: None,
    };
    idx::export(&imgs, &labels, &names, selection, dir, "test").expect("export");
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files
}

/// Extract with the settings every test uses: batches of 8, two decode threads.
fn extract_all(
    files: &[PathBuf],
    contract: &scion_onnx::card::Preprocessing,
    session: &mut dyn Session,
    cache: &mut FeatureCache,
) -> Extracted {
    let loader = scion_trainer::loader::Loader::new(contract.clone(), false);
    let view = scion_trainer::loader::View::Eval;
    extract(
        files,
        &loader,
        &view,
        "features",
        session,
        cache,
        8,
        2,
        &mut |_| true,
    )
    .expect("extract")
}

fn key(model: &Model) -> CacheKey {
    CacheKey {
        backbone_sha256: scion_onnx::import::sha256_hex(&model.bytes),
        preprocessing: model.card.preprocessing.clone(),
        feature_tensor: "features".into(),
        view: "eval".into(),
    }
}

#[test]
fn features_are_computed_once_then_read_back_identically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = images(&dir.path().join("images"), 3);
    assert_eq!(files.len(), 30);
    let model = backbone();
    let mut session = session(&model);
    let contract = model.card.preprocessing.clone();
    let cache_root = dir.path().join("cache");

    let mut cache = FeatureCache::open(&cache_root, &key(&model), 1280).expect("cache");
    let Extracted {
        features: first,
        stats,
    } = extract_all(&files, &contract, session.as_mut(), &mut cache);
    assert_eq!(
        (stats.computed, stats.cached, stats.failed.len()),
        (30, 0, 0)
    );

    // The same numbers as running the backbone by hand on one image.
    let one = preprocess(&std::fs::read(&files[7]).expect("read"), &contract).expect("preprocess");
    let out = session
        .run(&Tensor {
            shape: contract.input_shape(1),
            data: one,
        })
        .expect("run");
    let direct = &out.get("features").expect("features").data;
    let cached = first[7].as_ref().expect("features");
    assert_eq!(cached.len(), 1280);
    let worst = direct
        .iter()
        .zip(cached)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "batched vs single: {worst}");

    // A new process (a new cache handle) finds everything on disk.
    drop(cache);
    let mut cache = FeatureCache::open(&cache_root, &key(&model), 1280).expect("reopen");
    assert_eq!(cache.len(), 30);
    let Extracted {
        features: second,
        stats,
    } = extract_all(&files, &contract, session.as_mut(), &mut cache);
    assert_eq!((stats.computed, stats.cached), (0, 30));
    assert_eq!(first, second);

    // Another preprocessing contract is another cache: everything is recomputed.
    let mut other = key(&model);
    other.preprocessing.filter = ResizeFilter::Nearest;
    assert_ne!(other.digest(), key(&model).digest());
    let mut cache = FeatureCache::open(&cache_root, &other, 1280).expect("other key");
    assert!(cache.is_empty());
    let Extracted { stats, .. } = extract_all(
        &files[..4],
        &other.preprocessing,
        session.as_mut(),
        &mut cache,
    );
    assert_eq!(stats.computed, 4);
}

#[test]
fn unreadable_images_are_skipped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = images(&dir.path().join("images"), 1);
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\n not really").expect("write");
    files.push(broken.clone());
    files.push(dir.path().join("missing.png"));
    let model = backbone();
    let mut session = session(&model);
    let mut cache =
        FeatureCache::open(&dir.path().join("cache"), &key(&model), 1280).expect("cache");
    let Extracted { features, stats } = extract_all(
        &files,
        &model.card.preprocessing,
        session.as_mut(),
        &mut cache,
    );
    assert_eq!(stats.computed, 10);
    assert_eq!(stats.failed.len(), 2);
    assert!(features[10].is_none() && features[11].is_none());
    assert!(features[..10].iter().all(Option::is_some));
}

#[test]
fn a_torn_record_is_cut_and_a_wrong_size_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = backbone();
    let k = key(&model);
    let mut cache = FeatureCache::open(dir.path(), &k, 4).expect("cache");
    cache
        .insert_all(vec![
            ([1; 32], vec![1.0, 2.0, 3.0, 4.0]),
            ([2; 32], vec![5.0; 4]),
        ])
        .expect("insert");
    drop(cache);
    let file = dir.path().join(k.digest()).join("features.bin");
    let mut bytes = std::fs::read(&file).expect("read");
    bytes.extend_from_slice(&[3; 40]); // a record cut short by a crash
    std::fs::write(&file, &bytes).expect("write");
    let cache = FeatureCache::open(dir.path(), &k, 4).expect("reopen");
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.get(&[1; 32]), Some(&[1.0, 2.0, 3.0, 4.0][..]));
    assert_eq!(std::fs::read(&file).expect("read").len(), bytes.len() - 40);
    drop(cache);
    let err = FeatureCache::open(dir.path(), &k, 8)
        .err()
        .expect("dimension mismatch");
    assert!(matches!(err, FeatureError::Corrupt { .. }), "{err}");
}
