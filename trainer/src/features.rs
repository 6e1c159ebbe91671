//! Backbone features, computed once through a `scion-edge` engine and kept on disk.
//!
//! The cache is keyed by what determines the numbers: the backbone file's sha256, the
//! preprocessing contract, the feature tensor and the augmentation view; each image by the
//! sha256 of its bytes (so renaming or moving files costs nothing). A changed backbone or
//! contract lands in a different cache folder. Entries are appended to one record log per
//! key (`features.bin`: a header, then `[32-byte image hash][dim x f32 LE]` records); a
//! record torn by a crash is cut on the next open, like the classifier's output.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use scion_edge::engine::{EngineError, Session, Tensor};
use scion_edge::pipeline::{Throughput, for_each_prepared};
use scion_onnx::card::Preprocessing;

use crate::loader::{Loader, View};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"SCIONFC1";

/// Content hash of an image file.
pub type ImageHash = [u8; 32];

/// What the cached numbers depend on.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CacheKey {
    /// sha256 of the backbone ONNX file.
    pub backbone_sha256: String,
    /// The preprocessing contract.
    pub preprocessing: Preprocessing,
    /// Name of the feature tensor.
    pub feature_tensor: String,
    /// Augmentation view: `eval` for the deterministic contract, `aug<k>` for the k-th
    /// augmented view.
    pub view: String,
}

impl CacheKey {
    /// Folder name for this key: a digest of every part.
    pub fn digest(&self) -> String {
        let json = serde_json::to_string(self).expect("a key always serializes");
        hex::encode(&Sha256::digest(json.as_bytes())[..12])
    }
}

/// Problems with the cache.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The cache file is not one this build wrote for this key.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The backbone failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The caller asked to stop; what was computed so far is in the cache.
    #[error("interrupted; the features computed so far are cached")]
    Interrupted,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> FeatureError + '_ {
    move |source| FeatureError::Io {
        path: path.into(),
        source,
    }
}

/// Features of images under one [`CacheKey`], in memory and on disk.
pub struct FeatureCache {
    path: PathBuf,
    dim: usize,
    entries: HashMap<ImageHash, Vec<f32>>,
    file: File,
}

impl FeatureCache {
    /// Open (or create) the cache for `key` under `root`.
    pub fn open(root: &Path, key: &CacheKey, dim: usize) -> Result<FeatureCache, FeatureError> {
        let dir = root.join(key.digest());
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let key_file = dir.join("key.json");
        if !key_file.exists() {
            let json = serde_json::to_string_pretty(key).expect("a key always serializes");
            std::fs::write(&key_file, json).map_err(io_err(&key_file))?;
        }
        let path = dir.join("features.bin");
        let mut entries = HashMap::new();
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            let corrupt = |message: String| FeatureError::Corrupt {
                path: path.clone(),
                message,
            };
            if bytes.len() < 12 || &bytes[..8] != MAGIC {
                return Err(corrupt("not a scion feature cache".into()));
            }
            let stored_dim = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
            if stored_dim != dim {
                return Err(corrupt(format!(
                    "features of {stored_dim} values, expected {dim}"
                )));
            }
            let record = 32 + 4 * dim;
            let body = &bytes[12..];
            let whole = body.len() / record * record;
            for r in body[..whole].chunks_exact(record) {
                let hash: ImageHash = r[..32].try_into().expect("32 bytes");
                let values = r[32..]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")));
                entries.insert(hash, values.collect());
            }
            if whole < body.len() {
                tracing::warn!(
                    "{}: cutting a torn last record left by an interrupted run",
                    path.display()
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len((12 + whole) as u64).map_err(io_err(&path))?;
            }
        } else {
            let mut header = MAGIC.to_vec();
            header.extend_from_slice(&(dim as u32).to_le_bytes());
            scion_onnx::io::write_atomically(&path, &header).map_err(|e| {
                FeatureError::Corrupt {
                    path: path.clone(),
                    message: e.to_string(),
                }
            })?;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(FeatureCache {
            path,
            dim,
            entries,
            file,
        })
    }

    /// Features of an image, if cached.
    pub fn get(&self, hash: &ImageHash) -> Option<&[f32]> {
        self.entries.get(hash).map(Vec::as_slice)
    }

    /// Number of cached images.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Feature length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Add features for images (appended to disk in one write).
    pub fn insert_all(&mut self, items: Vec<(ImageHash, Vec<f32>)>) -> Result<(), FeatureError> {
        let mut buf = Vec::with_capacity(items.len() * (32 + 4 * self.dim));
        for (hash, values) in &items {
            debug_assert_eq!(values.len(), self.dim);
            buf.extend_from_slice(hash);
            values
                .iter()
                .for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
        }
        self.file.write_all(&buf).map_err(io_err(&self.path))?;
        self.entries.extend(items);
        Ok(())
    }
}

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtractStats {
    /// Images run through the backbone.
    pub computed: usize,
    /// Images found in the cache.
    pub cached: usize,
    /// Images that could not be read or decoded, with the reason (skipped).
    pub failed: Vec<(PathBuf, String)>,
    /// Loader and engine rates of the images computed.
    pub throughput: Throughput,
}

/// The result of [`extract`].
#[derive(Debug, Clone)]
pub struct Extracted {
    /// Features per input path, `None` where the image could not be read.
    pub features: Vec<Option<Vec<f32>>>,
    /// Counts.
    pub stats: ExtractStats,
}

/// Features for every image in `paths` (`None` for unreadable ones) in `view`, computing
/// only those missing from `cache` with `session`, `threads` loader threads and batches of
/// `batch`.
/// `progress` hears how many images are done after each batch, and stops the work (with
/// [`FeatureError::Interrupted`]) by returning false.
#[allow(clippy::too_many_arguments)]
pub fn extract(
    paths: &[PathBuf],
    loader: &Loader,
    view: &View,
    feature_tensor: &str,
    session: &mut dyn Session,
    cache: &mut FeatureCache,
    batch: usize,
    threads: usize,
    progress: &mut dyn FnMut(usize) -> bool,
) -> Result<Extracted, FeatureError> {
    let mut stats = ExtractStats::default();
    let mut hashes = Vec::with_capacity(paths.len());
    for p in paths {
        hashes.push(std::fs::read(p).map(|b| -> ImageHash { Sha256::digest(&b).into() }));
    }
    let missing: Vec<usize> = (0..paths.len())
        .filter(|&i| matches!(&hashes[i], Ok(h) if cache.get(h).is_none()))
        .collect();
    let mut is_missing = vec![false; paths.len()];
    missing.iter().for_each(|&i| is_missing[i] = true);
    let dim = cache.dim();
    let mut failed = HashMap::new();
    let already = paths.len() - missing.len();
    if !progress(already) {
        return Err(FeatureError::Interrupted);
    }
    let contract = loader.contract();
    let throughput = for_each_prepared(
        missing.len(),
        loader.tensor_len(),
        batch,
        threads,
        |j| {
            let i = missing[j];
            let hash = hashes[i].as_ref().expect("only readable files are missing");
            loader.prepare(&paths[i], hash, view)
        },
        |b| -> Result<(), FeatureError> {
            let n = b.indices.len();
            let input = Tensor {
                shape: contract.input_shape(n),
                data: b.data,
            };
            let outputs = session.run(&input)?;
            let features = outputs
                .get(feature_tensor)
                .ok_or_else(|| EngineError::Run {
                    engine: session.kind(),
                    message: format!("the backbone has no output '{feature_tensor}'"),
                })?;
            if features.data.len() != n * dim {
                return Err(EngineError::Run {
                    engine: session.kind(),
                    message: format!(
                        "'{feature_tensor}' has {} values for {n} images of {dim}",
                        features.data.len()
                    ),
                }
                .into());
            }
            let items = b
                .indices
                .iter()
                .zip(features.data.chunks_exact(dim))
                .filter_map(|(&j, f)| hashes[missing[j]].as_ref().ok().map(|h| (*h, f.to_vec())))
                .collect();
            cache.insert_all(items)?;
            stats.computed += n;
            if progress(already + stats.computed) {
                Ok(())
            } else {
                Err(FeatureError::Interrupted)
            }
        },
        |j, error| {
            failed.insert(missing[j], error);
            Ok(())
        },
    )?;
    stats.throughput = throughput;
    let mut out = Vec::with_capacity(paths.len());
    for (i, hash) in hashes.iter().enumerate() {
        match hash {
            Err(e) => {
                stats.failed.push((paths[i].clone(), e.to_string()));
                out.push(None);
            }
            Ok(_) if failed.contains_key(&i) => {
                stats.failed.push((paths[i].clone(), failed[&i].clone()));
                out.push(None);
            }
            Ok(h) => {
                if !is_missing[i] {
                    stats.cached += 1;
                }
                out.push(cache.get(h).map(<[f32]>::to_vec));
            }
        }
    }
    for (path, reason) in &stats.failed {
        tracing::warn!("{}: skipped: {reason}", path.display());
    }
    Ok(Extracted {
        features: out,
        stats,
    })
}
