//! Helpers for the end-to-end scenarios: where the real assets and the workspace's release
//! binaries are. The scenarios run the binaries as a user would, so they need
//! `cargo build --release --workspace` (which `cargo test --release --workspace` does).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A file that `scripts/setup.sh` provides; panics with the fix when it is missing.
pub fn asset(relative: &str) -> PathBuf {
    let path = workspace().join(relative);
    assert!(
        path.exists(),
        "{} is missing; run scripts/setup.sh first",
        path.display()
    );
    path
}

/// The ONNX Runtime shared library from the PyPI wheel.
pub fn ort_lib() -> PathBuf {
    let dir = asset("assets/onnxruntime");
    std::fs::read_dir(&dir)
        .expect("read assets/onnxruntime")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("libonnxruntime.so."))
        .unwrap_or_else(|| panic!("no libonnxruntime.so.* in {}", dir.display()))
}

/// A workspace binary built in the same profile as this test (`target/<profile>/<name>`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing; build the workspace first (cargo build --release --workspace)",
        path.display()
    );
    path
}

/// Run a workspace binary with the ONNX Runtime library configured; panics with its
/// output when it fails.
pub fn run_ok(name: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let output = Command::new(binary(name))
        .args(args.iter().map(|a| a.as_ref()))
        .env("ORT_DYLIB_PATH", ort_lib())
        .env_remove("RUST_LOG")
        .output()
        .expect("start binary");
    assert!(
        output.status.success(),
        "{name} {:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Fashion-MNIST as image folders under `dir`: `train/<class>/` with `per_class` images of
/// each class from the official training set, `val/<class>/` with the first `val` images
/// of the official test set (Debian's `dataset-fashion-mnist`, which set-up installs).
pub fn fashion_mnist(dir: &Path, per_class: usize, val: usize) {
    for (set, flag, n, split) in [
        ("train", "--per-class", per_class, "train"),
        ("test", "--first", val, "val"),
    ] {
        run_ok(
            "scion",
            &[
                &"data",
                &"import-idx",
                &"--preset",
                &"fashion-mnist",
                &"--set",
                &set,
                &flag,
                &n.to_string(),
                &"--out",
                &dir.join(split),
            ],
        );
    }
}
