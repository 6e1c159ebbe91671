//! TensorRT's engine cache, made so it cannot go stale: one folder per key, where the key
//! holds everything an engine depends on (the model's bytes, its input shape, precision, DLA
//! core, the ONNX Runtime build, the TensorRT version and the GPU). A different key is a
//! different folder, never a reuse; the folder's `key.txt` says what it was built for, and
//! a folder whose `key.txt` disagrees is emptied before use. Folders not used lately are
//! pruned to a size budget.
//!
//! ONNX Runtime's own cache names engines by a hash of the graph, which two models of one
//! architecture can share: the peers' "it serves the old model's engine" failure. Keying
//! by the model's sha256 here rules that out.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::provider_options::{CacheDirs, Precision};

/// Everything a built engine depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineKey {
    /// sha256 of the ONNX model's bytes.
    pub model_sha256: String,
    /// The image input's shape for one batch.
    pub input_shape: Vec<usize>,
    /// The precision built for.
    pub precision: Precision,
    /// The DLA core, if any.
    pub dla_core: Option<u32>,
    /// ONNX Runtime's build string (version and commit).
    pub onnxruntime: String,
    /// TensorRT's version.
    pub tensorrt: String,
    /// The GPU: name and compute capability.
    pub gpu: String,
}

const KEY_FILE: &str = "key.txt";
const TIMING_PREFIX: &str = "timing-";

fn hex16(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))[..16].to_string()
}

impl EngineKey {
    /// The key as written to `key.txt`: one `name = value` line per part, in a fixed order.
    pub fn canonical(&self) -> String {
        let shape: Vec<String> = self.input_shape.iter().map(|d| d.to_string()).collect();
        format!(
            "model_sha256 = {}\ninput_shape = {}\nprecision = {}\ndla_core = {}\n\
             onnxruntime = {}\ntensorrt = {}\ngpu = {}\n",
            self.model_sha256,
            shape.join("x"),
            self.precision.as_str(),
            self.dla_core
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none".into()),
            self.onnxruntime.replace('\n', " "),
            self.tensorrt,
            self.gpu,
        )
    }

    /// The entry's folder name: the model's sha256 prefix (for people) and the key's hash.
    pub fn folder_name(&self) -> String {
        let model = self.model_sha256.get(..12).unwrap_or(&self.model_sha256);
        format!("{model}-{}", hex16(&self.canonical()))
    }

    /// TensorRT's timing cache depends only on the GPU and TensorRT, so models share it.
    pub fn timing_folder_name(&self) -> String {
        format!(
            "{TIMING_PREFIX}{}",
            hex16(&format!("{}\n{}", self.tensorrt, self.gpu))
        )
    }
}

/// Why the cache cannot be used (the caller then builds without one).
#[derive(Debug, thiserror::Error)]
#[error("engine cache {}: {source}", path.display())]
pub struct CacheError {
    /// The file or folder.
    pub path: PathBuf,
    /// What went wrong.
    pub source: std::io::Error,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError {
        path: path.to_path_buf(),
        source,
    }
}

/// A cache entry ready for TensorRT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// Where TensorRT reads and writes.
    pub dirs: CacheDirs,
    /// Whether the entry already held files from an earlier build for the same key.
    pub reused: bool,
}

/// What pruning removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Folders removed, oldest first.
    pub removed: Vec<String>,
    /// Bytes the entries take afterwards.
    pub bytes: u64,
}

/// The cache folder and its size budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCache {
    /// The folder holding one subfolder per key.
    pub dir: PathBuf,
    /// Largest total size of the entries, bytes.
    pub budget_bytes: u64,
}

impl EngineCache {
    /// The entry for `key`, created (or emptied, when its `key.txt` disagrees) and marked as
    /// used now.
    pub fn entry(&self, key: &EngineKey) -> Result<CacheEntry, CacheError> {
        let engines = self.dir.join(key.folder_name());
        let timing = self.dir.join(key.timing_folder_name());
        let key_path = engines.join(KEY_FILE);
        let canonical = key.canonical();
        let reused = match std::fs::read_to_string(&key_path) {
            Ok(text) if text == canonical => has_other_files(&engines)?,
            Ok(_) => {
                // Same folder name, different key: a hash collision or a hand edit. Never
                // reuse what is there.
                tracing::warn!(
                    "engine cache {}: key.txt does not match this model; emptying it",
                    engines.display()
                );
                std::fs::remove_dir_all(&engines).map_err(io(&engines))?;
                false
            }
            Err(_) => false,
        };
        for dir in [&engines, &timing] {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        // Rewritten on every use: its mtime is the entry's last use, for pruning, and the
        // write proves the folder is writable before TensorRT spends minutes building.
        let next = engines.join("key.txt.next");
        std::fs::write(&next, &canonical).map_err(io(&next))?;
        std::fs::rename(&next, &key_path).map_err(io(&key_path))?;
        Ok(CacheEntry {
            dirs: CacheDirs { engines, timing },
            reused,
        })
    }

    /// Remove the entries used longest ago until the rest fit the budget, never `keep`.
    pub fn prune(&self, keep: &Path) -> Result<Pruned, CacheError> {
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        let listing = std::fs::read_dir(&self.dir).map_err(io(&self.dir))?;
        for item in listing.flatten() {
            let path = item.path();
            let name = item.file_name().to_string_lossy().into_owned();
            let Ok(meta) = std::fs::metadata(path.join(KEY_FILE)) else {
                continue; // timing caches, and anything that is not ours
            };
            if name.starts_with(TIMING_PREFIX) {
                continue;
            }
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            entries.push((used, folder_size(&path), path));
        }
        entries.sort();
        let mut total: u64 = entries.iter().map(|(_, size, _)| size).sum();
        let mut removed = Vec::new();
        for (_, size, path) in &entries {
            if total <= self.budget_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            std::fs::remove_dir_all(path).map_err(io(path))?;
            total -= size;
            removed.push(
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
        Ok(Pruned {
            removed,
            bytes: total,
        })
    }
}

fn has_other_files(dir: &Path) -> Result<bool, CacheError> {
    Ok(std::fs::read_dir(dir)
        .map_err(io(dir))?
        .flatten()
        .any(|e| e.file_name() != KEY_FILE))
}

fn folder_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> EngineKey {
        EngineKey {
            model_sha256: "0123456789abcdef".repeat(4),
            input_shape: vec![1, 3, 224, 224],
            precision: Precision::Fp16,
            dla_core: None,
            onnxruntime: "ORT Build Info: git-branch=rel-1.20.0, git-commit-id=c4fb724".into(),
            tensorrt: "10.3.0".into(),
            gpu: "Orin (sm_87)".into(),
        }
    }

    #[test]
    fn every_part_of_the_key_changes_the_folder() {
        let base = key();
        let variants = [
            EngineKey {
                model_sha256: "f".repeat(64),
                ..base.clone()
            },
            EngineKey {
                input_shape: vec![4, 3, 224, 224],
                ..base.clone()
            },
            EngineKey {
                precision: Precision::Int8,
                ..base.clone()
            },
            EngineKey {
                dla_core: Some(0),
                ..base.clone()
            },
            EngineKey {
                onnxruntime: "ORT Build Info: git-branch=rel-1.20.1".into(),
                ..base.clone()
            },
            EngineKey {
                tensorrt: "10.3.1".into(),
                ..base.clone()
            },
            EngineKey {
                gpu: "Xavier (sm_72)".into(),
                ..base.clone()
            },
        ];
        let mut names: Vec<String> = variants.iter().map(EngineKey::folder_name).collect();
        names.push(base.folder_name());
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "two keys share a folder: {names:?}");
        assert!(base.folder_name().starts_with("0123456789ab-"));
        assert_eq!(base.folder_name(), key().folder_name(), "stable");
        assert_eq!(
            base.canonical(),
            format!(
                "model_sha256 = {}\ninput_shape = 1x3x224x224\nprecision = fp16\ndla_core = none\n\
                 onnxruntime = ORT Build Info: git-branch=rel-1.20.0, git-commit-id=c4fb724\n\
                 tensorrt = 10.3.0\ngpu = Orin (sm_87)\n",
                "0123456789abcdef".repeat(4)
            )
        );
        // The timing cache follows the GPU and TensorRT only.
        assert_eq!(variants[0].timing_folder_name(), base.timing_folder_name());
        assert_ne!(variants[5].timing_folder_name(), base.timing_folder_name());
    }

    #[test]
    fn an_entry_is_reused_only_for_its_own_key() {
        let tmp = tempfile::tempdir().expect("must work");
        let cache = EngineCache {
            dir: tmp.path().join("engines"),
            budget_bytes: u64::MAX,
        };
        let first = cache.entry(&key()).expect("must work");
        assert!(!first.reused, "an empty entry is a build");
        std::fs::write(first.dirs.engines.join("scion_0.engine"), b"plan").expect("must work");
        assert!(cache.entry(&key()).expect("must work").reused);
        // A key.txt that disagrees (a collision, a hand edit): emptied, not reused.
        std::fs::write(first.dirs.engines.join(KEY_FILE), "model_sha256 = other\n")
            .expect("must work");
        let again = cache.entry(&key()).expect("must work");
        assert!(!again.reused);
        assert!(!again.dirs.engines.join("scion_0.engine").exists());
        assert_eq!(
            std::fs::read_to_string(again.dirs.engines.join(KEY_FILE)).expect("must work"),
            key().canonical()
        );
    }

    #[test]
    fn pruning_drops_the_least_recently_used_and_keeps_the_one_in_use() {
        let tmp = tempfile::tempdir().expect("must work");
        // Room for two of the three entries: 1000 bytes of engine and key.txt each.
        let entry_size = 1000 + key().canonical().len() as u64;
        let cache = EngineCache {
            dir: tmp.path().to_path_buf(),
            budget_bytes: 2 * entry_size,
        };
        let mut entries = Vec::new();
        for (i, sha) in ["a", "b", "c"].iter().enumerate() {
            let k = EngineKey {
                model_sha256: sha.repeat(64),
                ..key()
            };
            let entry = cache.entry(&k).expect("must work");
            std::fs::write(entry.dirs.engines.join("scion.engine"), vec![0u8; 1000])
                .expect("must work");
            // Distinct last-use times, oldest first, without sleeping.
            let used = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + i as u64);
            std::fs::File::options()
                .write(true)
                .open(entry.dirs.engines.join(KEY_FILE))
                .expect("must work")
                .set_modified(used)
                .expect("must work");
            entries.push(entry);
        }
        // Keep the oldest (it is serving): the next oldest goes instead.
        let pruned = cache.prune(&entries[0].dirs.engines).expect("must work");
        assert_eq!(pruned.removed, vec![key_folder("b")]);
        assert!(entries[0].dirs.engines.exists() && entries[2].dirs.engines.exists());
        assert_eq!(pruned.bytes, 2 * entry_size, "{pruned:?}");
        assert!(
            entries[0].dirs.timing.exists(),
            "the shared timing cache stays"
        );
        // Under budget: nothing goes.
        assert_eq!(
            cache
                .prune(&entries[2].dirs.engines)
                .expect("must work")
                .removed
                .len(),
            0
        );
    }

    fn key_folder(sha: &str) -> String {
        EngineKey {
            model_sha256: sha.repeat(64),
            ..key()
        }
        .folder_name()
    }

    #[test]
    fn an_unwritable_cache_is_an_error_naming_the_folder() {
        let tmp = tempfile::tempdir().expect("must work");
        // A file where the folder should be: no permission tricks, so it holds as root too.
        let blocker = tmp.path().join("engines");
        std::fs::write(&blocker, b"not a folder").expect("must work");
        let cache = EngineCache {
            dir: blocker.clone(),
            budget_bytes: u64::MAX,
        };
        let err = cache
            .entry(&key())
            .expect_err("must be refused")
            .to_string();
        assert!(
            err.starts_with(&format!("engine cache {}", blocker.display())),
            "{err}"
        );
    }
}
