//! The model store: two slots and a link, so a new model is installed without downtime and
//! a power cut at any step leaves one good model.
//!
//! ```text
//! DIR/a/model.onnx   DIR/b/model.onnx   one serves, the other takes the next model
//! DIR/current -> a   the serving slot (a symlink, replaced by an atomic rename)
//! DIR/references/    images named by content (sha256), for checking reference outputs
//! ```
//!
//! Installing writes the inactive slot (`model.onnx.partial`, fsync, rename, fsync), then
//! verifies the file *as written*: it parses, has a card, is signed when a key is set, runs
//! on the chosen engine and reproduces the card's reference outputs. Only then does
//! `current` move. Until that rename the old model is what a restart serves.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use super::confined;
use crate::classifier::Classifier;
use crate::model::{ContractOverrides, Model};
use crate::preprocess::{RgbImage, decode_rgb, preprocess_decoded, preprocess_into, tensor_len};
use crate::serve::hub::{ModelInfo, Prepared};

/// The store's folder of uploads being received.
const STAGING: &str = "incoming";

/// Where the model to install is: in memory, or staged in a file (an upload streamed to
/// disk, a file in the inbox).
#[derive(Debug, Clone, Copy)]
pub enum ModelSource<'a> {
    /// The model's bytes.
    Bytes(&'a [u8]),
    /// A file holding them (a link is refused).
    File(&'a Path),
}

/// Prepares a model on the engine the service uses.
pub type Preparer = dyn Fn(&Model) -> Result<Classifier, String> + Send + Sync;

/// Why a model was not installed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's files cannot be read or written.
    #[error("model store {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The model was refused; the old one keeps serving.
    #[error("model refused: {0}")]
    Rejected(String),
}

impl StoreError {
    /// Whether the model was at fault (a client error) rather than the device.
    pub fn is_rejection(&self) -> bool {
        matches!(self, StoreError::Rejected(_))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.into(),
        source,
    }
}

/// Parse a hex ed25519 public key (64 hex digits).
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .map_err(|e| format!("not hex: {e}"))?
        .try_into()
        .map_err(|_| "an ed25519 public key is 32 bytes (64 hex digits)".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an ed25519 public key: {e}"))
}

/// A signature as hex (128 digits) or the raw 64 bytes.
pub fn parse_signature(bytes: &[u8]) -> Result<Signature, String> {
    let raw: Vec<u8> = if bytes.len() == 64 {
        bytes.to_vec()
    } else {
        let text =
            std::str::from_utf8(bytes).map_err(|_| "signature is neither hex nor 64 bytes")?;
        hex::decode(text.trim()).map_err(|e| format!("signature is not hex: {e}"))?
    };
    let raw: [u8; 64] = raw
        .try_into()
        .map_err(|_| "an ed25519 signature is 64 bytes (128 hex digits)".to_string())?;
    Ok(Signature::from_bytes(&raw))
}

/// The store.
pub struct ModelStore {
    dir: PathBuf,
    public_key: Option<VerifyingKey>,
    require_references: bool,
    tolerance: f32,
    installing: Mutex<()>,
}

/// What installing checked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Installed {
    /// The model now serving.
    pub model: ModelInfo,
    /// The slot it is in.
    pub slot: String,
    /// Reference outputs reproduced on this device.
    pub references_checked: usize,
    /// References the card names whose images are not in the store.
    pub references_missing: usize,
    /// Whether a signature was verified.
    pub signed: bool,
}

const SLOTS: [&str; 2] = ["a", "b"];
const MODEL_FILE: &str = "model.onnx";

impl ModelStore {
    /// Open (creating) the store at `dir`.
    pub fn open(
        dir: &Path,
        public_key: Option<VerifyingKey>,
        require_references: bool,
        tolerance: f32,
    ) -> Result<ModelStore, StoreError> {
        for sub in ["a", "b", "references", STAGING] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io(&path))?;
        }
        // Uploads an earlier run was receiving when it stopped.
        let staging = dir.join(STAGING);
        for left in std::fs::read_dir(&staging).map_err(io(&staging))?.flatten() {
            let _ = std::fs::remove_file(left.path());
        }
        Ok(ModelStore {
            dir: dir.into(),
            public_key,
            require_references,
            tolerance,
            installing: Mutex::new(()),
        })
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where uploads are streamed before they are installed.
    pub fn staging_dir(&self) -> PathBuf {
        self.dir.join(STAGING)
    }

    /// The serving slot's name, if any model was installed.
    pub fn current_slot(&self) -> Option<String> {
        let target = std::fs::read_link(self.dir.join("current")).ok()?;
        let name = target.file_name()?.to_string_lossy().into_owned();
        SLOTS.contains(&name.as_str()).then_some(name)
    }

    /// The serving model's file, if the store has one.
    pub fn current(&self) -> Option<PathBuf> {
        let slot = self.current_slot()?;
        let path = self.dir.join(slot).join(MODEL_FILE);
        path.is_file().then_some(path)
    }

    /// Put a reference image into the store; returns its sha256.
    pub fn add_reference(&self, bytes: &[u8]) -> Result<String, StoreError> {
        decode_rgb(bytes, None)
            .map_err(|e| StoreError::Rejected(format!("reference image: {e}")))?;
        let sha = hex::encode(Sha256::digest(bytes));
        let path = self.dir.join("references").join(&sha);
        if !path.exists() {
            write_durably(&path, bytes)?;
        }
        Ok(sha)
    }

    /// Install `bytes` (signed by `signature` when the store requires it) into the inactive
    /// slot, verify it with `prepare`, and make it current. On any failure the current
    /// model stays.
    pub fn install(
        &self,
        bytes: &[u8],
        signature: Option<&[u8]>,
        prepare: &Preparer,
    ) -> Result<(Prepared, Installed), StoreError> {
        self.install_from(ModelSource::Bytes(bytes), signature, prepare)
    }

    /// [`install`](Self::install) from bytes or from a file. A file is read only once this
    /// install holds the store, so however many uploads wait, one model is in memory.
    pub fn install_from(
        &self,
        source: ModelSource<'_>,
        signature: Option<&[u8]>,
        prepare: &Preparer,
    ) -> Result<(Prepared, Installed), StoreError> {
        let _one_at_a_time = self.installing.lock().unwrap_or_else(|p| p.into_inner());
        let read;
        let bytes = match source {
            ModelSource::Bytes(bytes) => bytes,
            ModelSource::File(path) => {
                read = confined::read_regular(path).map_err(io(path))?;
                &read[..]
            }
        };
        let signed = self.check_signature(bytes, signature)?;
        let slot = match self.current_slot().as_deref() {
            Some("a") => "b",
            _ => "a",
        };
        let path = self.dir.join(slot).join(MODEL_FILE);
        // Parse once, and refuse what does not even parse before touching the disk.
        let model = Model::from_bytes(&path, bytes.to_vec(), &ContractOverrides::default())
            .map_err(|e| StoreError::Rejected(e.to_string()))?;
        write_durably(&path, bytes)?;
        // The file as written must be the model checked: read it back and compare hashes
        // (a storage fault shows here, not after the switch).
        let written = std::fs::read(&path).map_err(io(&path))?;
        if Sha256::digest(&written) != Sha256::digest(bytes) {
            return Err(StoreError::Io {
                path: path.clone(),
                source: std::io::Error::other("the file read back differs from what was written"),
            });
        }
        let (prepared, checked, missing) = self.verify(model, &path, prepare)?;
        self.point_current_to(slot)?;
        let installed = Installed {
            model: prepared.info.clone(),
            slot: slot.into(),
            references_checked: checked,
            references_missing: missing,
            signed,
        };
        Ok((prepared, installed))
    }

    /// Seed an empty store with a first model (no verification beyond loading: it is the
    /// operator's own choice at start).
    pub fn seed(&self, model: &Path) -> Result<PathBuf, StoreError> {
        let bytes = std::fs::read(model).map_err(io(model))?;
        let path = self.dir.join("a").join(MODEL_FILE);
        write_durably(&path, &bytes)?;
        self.point_current_to("a")?;
        Ok(path)
    }

    fn check_signature(&self, bytes: &[u8], signature: Option<&[u8]>) -> Result<bool, StoreError> {
        let Some(key) = &self.public_key else {
            return Ok(false);
        };
        let signature = signature.ok_or_else(|| {
            StoreError::Rejected("unsigned, and this device only installs signed models".into())
        })?;
        let signature = parse_signature(signature).map_err(StoreError::Rejected)?;
        key.verify_strict(bytes, &signature).map_err(|_| {
            StoreError::Rejected(
                "the signature does not match the model and the device's key".into(),
            )
        })?;
        Ok(true)
    }

    /// Prepare `model` (stored at `path`) and check its reference outputs.
    fn verify(
        &self,
        model: Model,
        path: &Path,
        prepare: &Preparer,
    ) -> Result<(Prepared, usize, usize), StoreError> {
        let rejected = |m: String| StoreError::Rejected(m);
        if !model.card_embedded {
            return Err(rejected("the model has no scion card".into()));
        }
        let mut classifier = prepare(&model).map_err(rejected)?;
        let contract = model.card.preprocessing.clone();
        let mut input = vec![0.0f32; tensor_len(&contract)];
        let run = |input: &[f32], classifier: &mut Classifier| {
            classifier
                .probabilities(input.to_vec(), 1)
                .map_err(|e| rejected(e.to_string()))
                .map(|mut p| p.pop().unwrap_or_default())
        };
        // Any model must give a probability distribution on a plain grey image.
        let grey = RgbImage {
            width: 64,
            height: 64,
            pixels: vec![128; 64 * 64 * 3],
        };
        preprocess_decoded(&grey, &contract, &mut input).map_err(|e| rejected(e.to_string()))?;
        let probs = run(&input, &mut classifier)?;
        let sum: f32 = probs.iter().sum();
        if probs.len() != model.card.labels.len()
            || probs.iter().any(|p| !p.is_finite())
            || (sum - 1.0).abs() > 1e-3
        {
            return Err(rejected(format!(
                "on a grey image it gives {} values summing to {sum}, not a distribution over \
                 its {} labels",
                probs.len(),
                model.card.labels.len()
            )));
        }
        let references = &model.card.provenance.references;
        let (mut checked, mut missing) = (0, 0);
        for reference in references {
            let image_path = self.dir.join("references").join(&reference.image_sha256);
            let Ok(bytes) = std::fs::read(&image_path) else {
                missing += 1;
                continue;
            };
            // The one preprocessing function, as in training and `classify`.
            preprocess_into(&bytes, &contract, &mut input).map_err(|e| rejected(e.to_string()))?;
            let probs = run(&input, &mut classifier)?;
            let top1 = probs
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i);
            if top1 != Some(reference.top1) {
                return Err(rejected(format!(
                    "reference image {} ({}): top-1 is class {top1:?} here, the card expects {}",
                    reference.name, reference.image_sha256, reference.top1
                )));
            }
            for &(class, expected) in &reference.top {
                let got = probs.get(class).copied().unwrap_or(f32::NAN);
                // A missing class (NaN) fails too.
                if got.is_nan() || (got - expected).abs() > self.tolerance {
                    return Err(rejected(format!(
                        "reference image {}: class {class} has p={got} here, the card expects \
                         {expected} (tolerance {})",
                        reference.name, self.tolerance
                    )));
                }
            }
            checked += 1;
        }
        if self.require_references && (references.is_empty() || checked == 0) {
            return Err(rejected(format!(
                "no reference output could be checked ({} in the card, {missing} images missing \
                 from {}) and the store requires them",
                references.len(),
                self.dir.join("references").display()
            )));
        }
        let info = ModelInfo::of(&model, path, &classifier);
        Ok((Prepared { classifier, info }, checked, missing))
    }

    /// Atomically make `slot` current: a new link renamed over the old one, then fsync.
    fn point_current_to(&self, slot: &str) -> Result<(), StoreError> {
        let next = self.dir.join("current.next");
        let _ = std::fs::remove_file(&next);
        std::os::unix::fs::symlink(slot, &next).map_err(io(&next))?;
        let current = self.dir.join("current");
        std::fs::rename(&next, &current).map_err(io(&current))?;
        sync_dir(&self.dir)
    }
}

/// Write `bytes` to `path` so that a power cut leaves either the old file or the whole
/// new one: a `.partial` file, fsync, rename, fsync of the folder.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let partial = path.with_extension("partial");
    let mut file = confined::create_new(&partial).map_err(io(&partial))?;
    file.write_all(bytes).map_err(io(&partial))?;
    file.sync_all().map_err(io(&partial))?;
    drop(file);
    std::fs::rename(&partial, path).map_err(io(path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Load the model a service starts with: the store's current one, or `model` (which then
/// seeds an empty store).
pub fn initial_model(
    store: Option<&ModelStore>,
    model: Option<&Path>,
) -> Result<PathBuf, StoreError> {
    match (store, model) {
        (Some(store), model) => match (store.current(), model) {
            (Some(current), given) => {
                if let Some(given) = given {
                    tracing::info!(
                        "serving the store's current model {} (the configured model {} only \
                         seeds an empty store)",
                        current.display(),
                        given.display()
                    );
                }
                Ok(current)
            }
            (None, Some(given)) => store.seed(given),
            (None, None) => Err(StoreError::Rejected(format!(
                "the model store {} is empty and no model is configured",
                store.dir().display()
            ))),
        },
        (None, Some(model)) => Ok(model.into()),
        (None, None) => Err(StoreError::Rejected("no model configured".into())),
    }
}
