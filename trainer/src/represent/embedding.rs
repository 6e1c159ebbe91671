//! A set of embeddings on disk: one `[n, dim]` f32 tensor named `features` in a
//! safetensors file, with the image paths, labels, splits and what computed them (model
//! sha256, tensor, shard) in its string metadata. Any safetensors reader (numpy, torch)
//! opens it; scion uses the metadata to refuse comparing vectors of different models.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use scion_edge::classify::inputs::{Shard, has_image_extension, is_hidden};

use crate::dataset::SPLITS;

/// Name of the tensor in the file.
pub const TENSOR: &str = "features";

/// Problems with an embeddings file or a set of shards.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not an embeddings file scion wrote.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Vectors from another model or tensor than the one asked for.
    #[error("{path}: {message}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What differs.
        message: String,
    },
}

/// The metadata key holding [`Header`] as JSON.
pub const METADATA_KEY: &str = "scion.embeddings";

/// What the file says besides the numbers.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    items: Vec<Item>,
    provenance: Provenance,
}

/// What computed a set of embeddings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    /// The model file (as given; for finding it again).
    pub model: String,
    /// sha256 of the model file: what must match to compare vectors.
    pub model_sha256: String,
    /// The tensor, as named.
    pub tensor: String,
    /// Whether a spatial tensor was reduced to channel means.
    pub pooled: bool,
    /// `i/N` when this file holds one shard.
    pub shard: Option<String>,
}

/// One image's place: its path, label (class folder) and split folder, if any.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Item {
    /// The image file.
    pub path: String,
    /// Class folder name.
    pub label: Option<String>,
    /// `train`, `val` or `test` when the folder uses the split layout.
    pub split: Option<String>,
}

/// Embeddings of images, row-major.
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// The images, one per row.
    pub items: Vec<Item>,
    /// Values per row.
    pub dim: usize,
    /// `items.len() x dim` values.
    pub data: Vec<f32>,
    /// What computed them.
    pub provenance: Provenance,
}

impl Embeddings {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Class index of every row in the sorted label names (`None`: unlabelled).
    pub fn label_indices(&self) -> (Vec<String>, Vec<Option<usize>>) {
        let names: Vec<String> = self
            .items
            .iter()
            .filter_map(|i| i.label.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let labels = self
            .items
            .iter()
            .map(|i| i.label.as_deref().map(|l| index[l]))
            .collect();
        (names, labels)
    }

    /// Write as safetensors (atomically: a crash leaves the old file or the new one).
    pub fn save(&self, path: &Path) -> Result<(), EmbeddingError> {
        let format = |message: String| EmbeddingError::Format {
            path: path.into(),
            message,
        };
        let bytes: Vec<u8> = self.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![self.items.len(), self.dim], &bytes)
            .map_err(|e| format(e.to_string()))?;
        // One metadata key: safetensors writes the metadata map in hash order, and one
        // key keeps the file byte-for-byte reproducible.
        let header = Header {
            items: self.items.clone(),
            provenance: self.provenance.clone(),
        };
        let meta = HashMap::from([(
            METADATA_KEY.to_string(),
            serde_json::to_string(&header).expect("plain data always serializes"),
        )]);
        let out = safetensors::serialize([(TENSOR, view)], Some(meta))
            .map_err(|e| format(e.to_string()))?;
        scion_onnx::io::write_atomically(path, &out).map_err(|e| format(e.to_string()))
    }

    /// Read a file written by [`Embeddings::save`].
    pub fn load(path: &Path) -> Result<Embeddings, EmbeddingError> {
        let bytes = std::fs::read(path).map_err(|source| EmbeddingError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parse the bytes of a file written by [`Embeddings::save`]; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Embeddings, EmbeddingError> {
        let format = |message: String| EmbeddingError::Format {
            path: path.into(),
            message,
        };
        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| format(format!("not a safetensors file ({e})")))?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| format(format!("not a safetensors file ({e})")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let json = meta.get(METADATA_KEY).ok_or_else(|| {
            format(format!(
                "no '{METADATA_KEY}' metadata: not written by `scion embed`"
            ))
        })?;
        let Header { items, provenance } = serde_json::from_str(json)
            .map_err(|e| format(format!("{METADATA_KEY} metadata: {e}")))?;
        let view = tensors
            .tensor(TENSOR)
            .map_err(|e| format(format!("tensor '{TENSOR}': {e}")))?;
        if view.dtype() != Dtype::F32 || view.shape().len() != 2 {
            return Err(format(format!(
                "tensor '{TENSOR}' is {:?} {:?}, expected F32 [n, dim]",
                view.dtype(),
                view.shape()
            )));
        }
        let (n, dim) = (view.shape()[0], view.shape()[1]);
        if n != items.len() {
            return Err(format(format!(
                "{n} rows but {} items in the metadata",
                items.len()
            )));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Embeddings {
            items,
            dim,
            data,
            provenance,
        })
    }

    /// Refuse vectors that another model or tensor computed: distances between them mean
    /// nothing.
    pub fn check_same_source(
        &self,
        path: &Path,
        model_sha256: &str,
        model: &Path,
        tensor: &str,
    ) -> Result<(), EmbeddingError> {
        let p = &self.provenance;
        if p.model_sha256 != model_sha256 {
            return Err(EmbeddingError::Mismatch {
                path: path.into(),
                message: format!(
                    "the index was built with another model ({}, sha256 {}…), not {} (sha256 {}…); \
                     rebuild it with `scion embed --model {}` or query with the model it was built with",
                    p.model,
                    &p.model_sha256[..12.min(p.model_sha256.len())],
                    model.display(),
                    &model_sha256[..12.min(model_sha256.len())],
                    model.display()
                ),
            });
        }
        if p.tensor != tensor {
            return Err(EmbeddingError::Mismatch {
                path: path.into(),
                message: format!(
                    "the index holds tensor '{}', the query asks for '{tensor}'",
                    p.tensor
                ),
            });
        }
        Ok(())
    }
}

/// Join shards written by `scion embed --shard i/N` into one set, refusing shards of
/// different models, missing or repeated shards, and images present twice.
pub fn merge(parts: &[(PathBuf, Embeddings)]) -> Result<Embeddings, EmbeddingError> {
    let Some((first_path, first)) = parts.first() else {
        return Err(EmbeddingError::Format {
            path: PathBuf::from("-"),
            message: "nothing to merge".into(),
        });
    };
    let mut seen_shards = BTreeMap::new();
    let mut count = None;
    for (path, part) in parts {
        let (a, b) = (&first.provenance, &part.provenance);
        if a.model_sha256 != b.model_sha256 || a.tensor != b.tensor || first.dim != part.dim {
            return Err(EmbeddingError::Mismatch {
                path: path.clone(),
                message: format!(
                    "computed by {} ('{}', {} values), but {} was computed by {} ('{}', {} values)",
                    b.model,
                    b.tensor,
                    part.dim,
                    first_path.display(),
                    a.model,
                    a.tensor,
                    first.dim
                ),
            });
        }
        if let Some(s) = &b.shard {
            let shard: Shard = s.parse().map_err(|e| EmbeddingError::Format {
                path: path.clone(),
                message: format!("shard {e}"),
            })?;
            if *count.get_or_insert(shard.count) != shard.count {
                return Err(EmbeddingError::Mismatch {
                    path: path.clone(),
                    message: format!("shard {s} is not one of {} shards", count.unwrap_or(0)),
                });
            }
            if let Some(other) = seen_shards.insert(shard.index, path.clone()) {
                return Err(EmbeddingError::Mismatch {
                    path: path.clone(),
                    message: format!("shard {s} is also in {}", other.display()),
                });
            }
        }
    }
    if let Some(n) = count {
        let missing: Vec<String> = (0..n)
            .filter(|i| !seen_shards.contains_key(i))
            .map(|i| format!("{i}/{n}"))
            .collect();
        if !missing.is_empty() {
            return Err(EmbeddingError::Mismatch {
                path: first_path.clone(),
                message: format!("shards missing: {}", missing.join(", ")),
            });
        }
    }
    let mut rows: Vec<(&Item, &[f32])> = parts
        .iter()
        .flat_map(|(_, p)| {
            p.items
                .iter()
                .enumerate()
                .map(move |(i, item)| (item, p.row(i)))
        })
        .collect();
    rows.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    let mut seen = HashSet::new();
    for (item, _) in &rows {
        if !seen.insert(item.path.as_str()) {
            return Err(EmbeddingError::Mismatch {
                path: first_path.clone(),
                message: format!("{} is in more than one part", item.path),
            });
        }
    }
    let mut provenance = first.provenance.clone();
    provenance.shard = None;
    Ok(Embeddings {
        items: rows.iter().map(|(i, _)| (*i).clone()).collect(),
        dim: first.dim,
        data: rows.iter().flat_map(|(_, r)| r.iter().copied()).collect(),
        provenance,
    })
}

/// The images under `root` (recursive, hidden entries skipped, sorted), each with its
/// label and split read from the folder layout: `root/<split>/<class>/…`,
/// `root/<class>/…`, or unlabelled files directly in `root`. A file is itself one image.
pub fn scan_images(root: &Path) -> Result<Vec<Item>, EmbeddingError> {
    let io = |source| EmbeddingError::Io {
        path: root.into(),
        source,
    };
    let meta = std::fs::metadata(root).map_err(io)?;
    if meta.is_file() {
        return Ok(vec![Item {
            path: root.to_string_lossy().into_owned(),
            label: None,
            split: None,
        }]);
    }
    let mut items = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !is_hidden(e.path()))
    {
        let entry = entry.map_err(|e| EmbeddingError::Io {
            path: e.path().map_or_else(|| root.into(), Path::to_path_buf),
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("walk failed")),
        })?;
        if !entry.file_type().is_file() || !has_image_extension(entry.path()) {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let folders: Vec<String> = rel
            .parent()
            .into_iter()
            .flat_map(Path::components)
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let (split, label) = match folders.as_slice() {
            [s, class, ..] if SPLITS.contains(&s.as_str()) => {
                (Some(s.clone()), Some(class.clone()))
            }
            [class, ..] => (None, Some(class.clone())),
            [] => (None, None),
        };
        items.push(Item {
            path: entry.path().to_string_lossy().into_owned(),
            label,
            split,
        });
    }
    if items.is_empty() {
        return Err(EmbeddingError::Format {
            path: root.into(),
            message: "no images found (looked for .jpg, .png, … recursively)".into(),
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(paths: &[&str], shard: Option<&str>, sha: &str) -> Embeddings {
        Embeddings {
            items: paths
                .iter()
                .map(|p| Item {
                    path: p.to_string(),
                    label: Some("a".into()),
                    split: None,
                })
                .collect(),
            dim: 2,
            data: (0..paths.len() * 2).map(|v| v as f32).collect(),
            provenance: Provenance {
                model: "m.onnx".into(),
                model_sha256: sha.into(),
                tensor: "features".into(),
                pooled: false,
                shard: shard.map(String::from),
            },
        }
    }

    #[test]
    fn a_file_round_trips_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("e.safetensors");
        let e = sample(&["x.png", "y.png"], None, "ab");
        e.save(&path).expect("save");
        let back = Embeddings::load(&path).expect("load");
        assert_eq!(back.items, e.items);
        assert_eq!(back.data, e.data);
        assert_eq!(back.provenance, e.provenance);

        let bytes = std::fs::read(&path).expect("read");
        let cut = dir.path().join("cut.safetensors");
        std::fs::write(&cut, &bytes[..bytes.len() - 3]).expect("write");
        let err = Embeddings::load(&cut).expect_err("truncated").to_string();
        assert!(
            err.contains("cut.safetensors") && err.contains("not a safetensors file"),
            "{err}"
        );

        let plain = dir.path().join("plain.safetensors");
        let view = TensorView::new(Dtype::F32, vec![1, 1], &[0, 0, 0, 0]).expect("view");
        std::fs::write(
            &plain,
            safetensors::serialize([("features", view)], None).expect("ser"),
        )
        .expect("write");
        let err = Embeddings::load(&plain)
            .expect_err("no metadata")
            .to_string();
        assert!(err.contains("not written by `scion embed`"), "{err}");

        let err = e
            .check_same_source(&path, "cd", Path::new("other.onnx"), "features")
            .expect_err("other model")
            .to_string();
        assert!(
            err.contains("another model") && err.contains("other.onnx"),
            "{err}"
        );
    }

    #[test]
    fn merging_checks_models_shards_and_repeats() {
        let p = |s: &str| PathBuf::from(s);
        let a = sample(&["b.png"], Some("0/2"), "ab");
        let b = sample(&["a.png"], Some("1/2"), "ab");
        let merged = merge(&[(p("0"), a.clone()), (p("1"), b.clone())]).expect("merge");
        assert_eq!(merged.items[0].path, "a.png");
        assert_eq!(merged.data, vec![0.0, 1.0, 0.0, 1.0]);
        assert_eq!(merged.provenance.shard, None);
        let err = |parts: &[(PathBuf, Embeddings)]| merge(parts).expect_err("refused").to_string();
        assert!(err(&[(p("0"), a.clone())]).contains("shards missing: 1/2"));
        assert!(
            err(&[(p("0"), a.clone()), (p("0b"), a.clone())]).contains("shard 0/2 is also in 0")
        );
        let other = sample(&["c.png"], Some("1/2"), "ff");
        assert!(err(&[(p("0"), a.clone()), (p("1"), other)]).contains("computed by"));
        let twice = sample(&["b.png"], Some("1/2"), "ab");
        assert!(err(&[(p("0"), a), (p("1"), twice)]).contains("b.png is in more than one part"));
    }
}
