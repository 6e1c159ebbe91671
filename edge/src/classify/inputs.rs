//! Turning command-line arguments (files, folders, globs) into a sorted, de-duplicated,
//! optionally sharded list of inputs.

use std::collections::BTreeSet;
use std::path::Path;

/// Extensions picked up when walking a folder (explicit files are taken whatever they are).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "webp", "gif", "tif", "tiff"];

/// The inputs found, and arguments that named nothing (each becomes an error record).
#[derive(Debug, Default)]
pub struct Inputs {
    /// Files to classify, sorted and unique.
    pub files: Vec<String>,
    /// `(argument, reason)` for arguments that matched nothing.
    pub missing: Vec<(String, String)>,
}

/// A deterministic share `index` of `count` (`--shard i/N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Zero-based shard index.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}': expected INDEX/COUNT, e.g. 0/4"))?;
        let index: usize = i.trim().parse().map_err(|_| format!("'{s}': bad index"))?;
        let count: usize = n.trim().parse().map_err(|_| format!("'{s}': bad count"))?;
        if count == 0 || index >= count {
            return Err(format!("'{s}': the index must be in 0..{count}"));
        }
        Ok(Shard { index, count })
    }
}

/// Dot-files and dot-folders are never inputs (editor backups, `.DS_Store`, `.git`).
pub fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Whether a file's extension is one of [`IMAGE_EXTENSIONS`] (any case).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// Expand arguments: a folder is walked recursively for image files (hidden entries
/// skipped), a glob is expanded, a file is taken as is.
pub fn expand(args: &[String]) -> Inputs {
    let mut files = BTreeSet::new();
    let mut missing = Vec::new();
    for arg in args {
        let path = Path::new(arg);
        if path.is_dir() {
            let walker = walkdir::WalkDir::new(path)
                .follow_links(true)
                .into_iter()
                .filter_entry(|e| e.depth() == 0 || !is_hidden(e.path()));
            for entry in walker {
                match entry {
                    Ok(e) if e.file_type().is_file() && has_image_extension(e.path()) => {
                        files.insert(e.path().to_string_lossy().into_owned());
                    }
                    Ok(_) => {}
                    Err(e) => missing.push((arg.clone(), e.to_string())),
                }
            }
        } else if path.exists() {
            files.insert(arg.clone());
        } else if arg.contains(['*', '?', '[']) {
            match glob::glob(arg) {
                Ok(paths) => {
                    let before = files.len();
                    for p in paths.flatten().filter(|p| p.is_file()) {
                        files.insert(p.to_string_lossy().into_owned());
                    }
                    if files.len() == before {
                        missing.push((arg.clone(), "the pattern matches no file".into()));
                    }
                }
                Err(e) => missing.push((arg.clone(), format!("bad pattern: {e}"))),
            }
        } else {
            missing.push((arg.clone(), "no such file or folder".into()));
        }
    }
    Inputs {
        files: files.into_iter().collect(),
        missing,
    }
}

/// Keep every `count`-th input starting at `index`, from the sorted list, so shards are
/// disjoint, cover everything, and need no coordination.
pub fn shard<T>(files: Vec<T>, shard: Option<Shard>) -> Vec<T> {
    match shard {
        None => files,
        Some(s) => files
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % s.count == s.index)
            .map(|(_, f)| f)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_and_cover_everything() {
        let files: Vec<String> = (0..10).map(|i| format!("{i:02}.jpg")).collect();
        let mut all: Vec<String> = (0..3)
            .flat_map(|i| shard(files.clone(), Some(Shard { index: i, count: 3 })))
            .collect();
        all.sort();
        assert_eq!(all, files);
    }

    #[test]
    fn shard_syntax_is_checked() {
        assert!("1/4".parse::<Shard>().is_ok());
        assert!("4/4".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }
}
