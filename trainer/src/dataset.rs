//! Labelled image folders. Two layouts: `root/<class>/*` (split here, stratified and
//! deterministic) or `root/{train,val,test}/<class>/*` (split by the user). Class order is
//! the sorted folder names; it becomes the label order of the model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use scion_edge::classify::inputs::{has_image_extension, is_hidden};
use scion_edge::rng::SplitMix64;

/// Names of the split folders recognised in the split layout.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// One labelled image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sample {
    /// The image file.
    pub path: PathBuf,
    /// Index into [`Dataset::classes`].
    pub class: usize,
}

/// A data set ready to train on.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Root folder.
    pub root: PathBuf,
    /// Class names, sorted.
    pub classes: Vec<String>,
    /// Training samples.
    pub train: Vec<Sample>,
    /// Validation samples.
    pub val: Vec<Sample>,
    /// Test samples, if the layout has a test folder.
    pub test: Vec<Sample>,
    /// Whether validation was split off here (false: a `val` folder was given).
    pub split_here: bool,
}

/// Why a folder cannot be used as a data set.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The folder does not hold a usable layout.
    #[error("{path}: {message}")]
    Layout {
        /// The folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Class folders of `dir` and their image files (hidden entries ignored), sorted.
pub fn scan_classes(dir: &Path) -> Result<BTreeMap<String, Vec<PathBuf>>, DatasetError> {
    let io = |source| DatasetError::Io {
        path: dir.into(),
        source,
    };
    let mut classes = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        if is_hidden(&path) || !path.is_dir() {
            continue;
        }
        let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&path)
            .follow_links(true)
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !is_hidden(e.path()))
            .flatten()
            .filter(|e| e.file_type().is_file() && has_image_extension(e.path()))
            .map(|e| e.into_path())
            .collect();
        files.sort();
        classes.insert(entry.file_name().to_string_lossy().into_owned(), files);
    }
    Ok(classes)
}

/// Whether `root` uses the split layout (`train/` present).
pub fn has_split_layout(root: &Path) -> bool {
    root.join("train").is_dir()
}

fn to_samples(classes: &[String], files: &BTreeMap<String, Vec<PathBuf>>) -> Vec<Sample> {
    classes
        .iter()
        .enumerate()
        .flat_map(|(class, name)| {
            files
                .get(name)
                .into_iter()
                .flatten()
                .map(move |path| Sample {
                    path: path.clone(),
                    class,
                })
        })
        .collect()
}

impl Dataset {
    /// Open `root`. Without a `val` folder, `val_fraction` of each class (at least one image
    /// of every class with two or more) is held out, chosen by `seed`.
    pub fn open(root: &Path, val_fraction: f32, seed: u64) -> Result<Dataset, DatasetError> {
        let layout_err = |message: String| DatasetError::Layout {
            path: root.into(),
            message,
        };
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(layout_err(format!(
                "--val-split {val_fraction} must be in [0, 1)"
            )));
        }
        let split_layout = has_split_layout(root);
        let train_files = scan_classes(&if split_layout {
            root.join("train")
        } else {
            root.into()
        })?;
        let classes: Vec<String> = train_files.keys().cloned().collect();
        match classes.len() {
            0 => {
                return Err(layout_err(
                    "no class folders (expected root/<class>/*.jpg or root/train/<class>/...)"
                        .into(),
                ));
            }
            1 => {
                return Err(layout_err(format!(
                    "only one class ('{}'); a classifier needs at least two",
                    classes[0]
                )));
            }
            _ => {}
        }
        if let Some((name, _)) = train_files.iter().find(|(_, f)| f.is_empty()) {
            return Err(layout_err(format!("class '{name}' has no images")));
        }
        let other = |split: &str| -> Result<Vec<Sample>, DatasetError> {
            let dir = root.join(split);
            if !split_layout || !dir.is_dir() {
                return Ok(Vec::new());
            }
            let files = scan_classes(&dir)?;
            let names: Vec<&String> = files.keys().collect();
            if names != classes.iter().collect::<Vec<_>>() {
                let missing: Vec<&String> =
                    classes.iter().filter(|c| !files.contains_key(*c)).collect();
                let extra: Vec<&String> = files.keys().filter(|c| !classes.contains(c)).collect();
                return Err(layout_err(format!(
                    "the classes of {split}/ differ from train/: missing {missing:?}, extra {extra:?}"
                )));
            }
            Ok(to_samples(&classes, &files))
        };
        let given_val = other("val")?;
        let test = other("test")?;
        let mut train = Vec::new();
        let mut val = given_val.clone();
        let split_here = given_val.is_empty();
        let mut rng = SplitMix64::new(seed);
        for (class, name) in classes.iter().enumerate() {
            let mut files = train_files[name].clone();
            let held = if split_here && files.len() >= 2 && val_fraction > 0.0 {
                ((files.len() as f32 * val_fraction).round() as usize).clamp(1, files.len() - 1)
            } else {
                0
            };
            rng.shuffle(&mut files);
            let (v, t) = files.split_at(held);
            val.extend(v.iter().map(|p| Sample {
                path: p.clone(),
                class,
            }));
            train.extend(t.iter().map(|p| Sample {
                path: p.clone(),
                class,
            }));
        }
        train.sort();
        val.sort();
        Ok(Dataset {
            root: root.into(),
            classes,
            train,
            val,
            test,
            split_here,
        })
    }
}
