//! Paths to the real assets that `scripts/setup.sh` installs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn require(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing; run scripts/setup.sh first",
        path.display()
    );
    path
}

pub fn model() -> PathBuf {
    require(workspace().join("models/efficientnet-lite0.onnx"))
}

pub fn photos() -> PathBuf {
    require(workspace().join("assets/photos"))
}

pub fn photo(name: &str) -> PathBuf {
    require(photos().join(name))
}

pub fn ort_lib() -> PathBuf {
    let dir = require(workspace().join("assets/onnxruntime"));
    std::fs::read_dir(&dir)
        .expect("read assets/onnxruntime")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("libonnxruntime.so."))
        .unwrap_or_else(|| panic!("no libonnxruntime.so.* in {}", dir.display()))
}

/// The CLI with the ONNX Runtime library configured.
pub fn scion_edge() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("scion-edge").expect("binary built");
    cmd.env("ORT_DYLIB_PATH", ort_lib()).env_remove("RUST_LOG");
    cmd
}

/// `n` copies of the nine photos under `dir` (hard links where possible), returns the paths.
pub fn many_photos(dir: &Path, copies: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(photos())
        .expect("photos")
        .flatten()
        .map(|e| e.path())
        .collect();
    sources.sort();
    for c in 0..copies {
        for src in &sources {
            let name = format!(
                "{c:03}_{}",
                src.file_name().expect("name").to_string_lossy()
            );
            let dst = dir.join(name);
            if std::fs::hard_link(src, &dst).is_err() {
                std::fs::copy(src, &dst).expect("copy photo");
            }
            out.push(dst);
        }
    }
    out
}

/// Parse JSON-lines output.
pub fn records(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The JSON-lines records a finished command printed.
pub fn stdout_records(run: &assert_cmd::assert::Assert) -> Vec<serde_json::Value> {
    records(&String::from_utf8_lossy(&run.get_output().stdout))
}

/// What a finished command logged.
pub fn stderr_text(run: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&run.get_output().stderr).into_owned()
}
