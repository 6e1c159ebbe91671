//! The model store without the service: signatures (ed25519), and what a power cut at each
//! step of an install leaves behind.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{model, ort_lib};
use ed25519_dalek::{Signer, SigningKey};
use scion_edge::engine::{EngineKind, EngineOptions, Policy};
use scion_edge::service::store::{ModelStore, Preparer, write_durably};

fn ort() -> Arc<Preparer> {
    scion_edge::service::preparer(
        Policy::prefer(EngineKind::OrtCpu, true),
        EngineOptions {
            ort_library: Some(ort_lib()),
            ..EngineOptions::default()
        },
        Default::default(),
    )
}

#[test]
fn a_store_with_a_key_installs_only_models_signed_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let other = SigningKey::from_bytes(&[8u8; 32]);
    let store =
        ModelStore::open(dir.path(), Some(key.verifying_key()), false, 1e-3).expect("store");
    let bytes = std::fs::read(model()).expect("model");
    let prepare = ort();
    let refused = |signature: Option<&[u8]>| {
        let error = match store.install(&bytes, signature, &*prepare) {
            Ok(_) => panic!("installed"),
            Err(e) => e,
        };
        assert!(error.is_rejection(), "{error}");
        error.to_string()
    };
    assert!(refused(None).contains("unsigned"));
    let wrong = hex::encode(other.sign(&bytes).to_bytes());
    assert!(refused(Some(wrong.as_bytes())).contains("signature does not match"));
    assert!(refused(Some(b"zz")).contains("signature"));
    // Signed for another file: the bytes matter, not just the key.
    let for_other_bytes = hex::encode(key.sign(b"another model").to_bytes());
    assert!(refused(Some(for_other_bytes.as_bytes())).contains("does not match"));
    assert_eq!(store.current(), None, "nothing refused was made current");

    let good = hex::encode(key.sign(&bytes).to_bytes());
    let (prepared, installed) = store
        .install(&bytes, Some(good.as_bytes()), &*prepare)
        .expect("signed model installs");
    assert!(installed.signed);
    assert_eq!(installed.slot, "a");
    assert_eq!(prepared.info.engine, "ort-cpu");
    assert_eq!(store.current(), Some(dir.path().join("a/model.onnx")));
    // The raw 64-byte form is accepted too.
    let raw = key.sign(&bytes).to_bytes();
    let (_, installed) = store
        .install(&bytes, Some(&raw), &*prepare)
        .expect("raw signature");
    assert_eq!(installed.slot, "b");
}

#[test]
fn a_power_cut_at_any_step_leaves_the_current_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ModelStore::open(dir.path(), None, false, 1e-3).expect("store");
    let seeded = store.seed(&model()).expect("seed");
    let good = std::fs::read(&seeded).expect("seeded");

    // Cut while writing the inactive slot: a partial file, and even a torn model file.
    std::fs::write(dir.path().join("b/model.partial"), &good[..1000]).expect("partial");
    std::fs::write(dir.path().join("b/model.onnx"), &good[..good.len() / 2]).expect("torn");
    // Cut while switching: a new link that was never renamed over `current`.
    std::os::unix::fs::symlink("b", dir.path().join("current.next")).expect("link");
    let reopened = ModelStore::open(dir.path(), None, false, 1e-3).expect("reopen");
    let current = reopened.current().expect("a current model");
    assert_eq!(current, dir.path().join("a/model.onnx"));
    assert_eq!(std::fs::read(&current).expect("read"), good);

    // The next install cleans up and replaces slot b whole.
    let (_, installed) = reopened
        .install(&good, None, &*ort())
        .expect("install over the leftovers");
    assert_eq!(installed.slot, "b");
    assert_eq!(
        std::fs::read(dir.path().join("b/model.onnx")).expect("b"),
        good
    );
    assert!(!dir.path().join("current.next").exists());
    assert!(!dir.path().join("b/model.partial").exists());
}

#[test]
fn durable_writes_replace_whole_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f.bin");
    write_durably(&path, b"one").expect("write");
    write_durably(&path, b"two!").expect("rewrite");
    assert_eq!(std::fs::read(&path).expect("read"), b"two!");
    assert!(!Path::new(&path.with_extension("partial")).exists());
}
