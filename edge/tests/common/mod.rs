//! Paths to the real assets that `scripts/setup.sh` installs.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

pub use scion_tests::{asset, ort_lib, workspace};

#[cfg(feature = "gstreamer")]
pub mod browser;
#[cfg(feature = "gstreamer")]
pub mod service;
#[cfg(feature = "gstreamer")]
pub mod video;

pub fn model() -> PathBuf {
    asset("models/efficientnet-lite0.onnx")
}

pub fn photos() -> PathBuf {
    asset("assets/photos")
}

pub fn photo(name: &str) -> PathBuf {
    asset(&format!("assets/photos/{name}"))
}

/// The CLI with the ONNX Runtime library configured.
pub fn scion_edge() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("scion-edge").expect("binary built");
    // /dev/null: the defaults, whatever /etc/scion/edge.toml this machine has.
    cmd.env("ORT_DYLIB_PATH", ort_lib())
        .env("SCION_EDGE_CONFIG", "/dev/null")
        .env_remove("RUST_LOG");
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
