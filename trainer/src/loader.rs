//! The training loader: what one worker does to turn an image file into a tensor for one
//! view (the card's deterministic preprocessing, or a seeded augmentation of it), with an
//! optional in-memory cache of decoded images so repeated views skip the decoder. The
//! worker threads and the bounded prefetch queue are `scion_edge::pipeline`'s.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use scion_edge::augment::{Augmentation, augment_decoded};
use scion_edge::preprocess::{RgbImage, decode_for, preprocess_decoded, tensor_len};
use scion_onnx::card::Preprocessing;

use crate::features::ImageHash;

/// Which tensor an image becomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum View {
    /// The card's preprocessing, exactly as on the device.
    Eval,
    /// Augmented view number `index`; each image's view is seeded by `seed`, `index` and
    /// the image's content hash, so it can be recomputed and cached.
    Augmented {
        /// The augmentation.
        augmentation: Augmentation,
        /// Run seed.
        seed: u64,
        /// View number.
        index: usize,
    },
}

impl View {
    /// The part of the feature cache key that names this view.
    pub fn key(&self) -> String {
        match self {
            View::Eval => "eval".into(),
            View::Augmented {
                augmentation: a,
                seed,
                index,
            } => format!(
                "aug{index}:seed{seed}:scale{:?}:ratio{:?}:flip{}:jitter{}",
                a.scale, a.ratio, a.flip, a.jitter
            ),
        }
    }

    fn image_seed(seed: u64, index: usize, hash: &ImageHash) -> u64 {
        let content = u64::from_le_bytes(hash[..8].try_into().expect("8 bytes"));
        seed ^ content ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// Prepares tensors for one preprocessing contract.
pub struct Loader {
    contract: Preprocessing,
    decoded: Option<Mutex<HashMap<ImageHash, Arc<RgbImage>>>>,
}

impl Loader {
    /// A loader; `keep_decoded` holds every decoded image in memory for later views.
    pub fn new(contract: Preprocessing, keep_decoded: bool) -> Loader {
        Loader {
            contract,
            decoded: keep_decoded.then(|| Mutex::new(HashMap::new())),
        }
    }

    /// The preprocessing contract.
    pub fn contract(&self) -> &Preprocessing {
        &self.contract
    }

    /// Values per tensor.
    pub fn tensor_len(&self) -> usize {
        tensor_len(&self.contract)
    }

    /// The tensor of the image at `path` (content hash `hash`) in `view`.
    pub fn prepare(&self, path: &Path, hash: &ImageHash, view: &View) -> Result<Vec<f32>, String> {
        let image = self.decode(path, hash)?;
        match view {
            View::Eval => {
                let mut out = vec![0.0; self.tensor_len()];
                preprocess_decoded(&image, &self.contract, &mut out).map_err(|e| e.to_string())?;
                Ok(out)
            }
            View::Augmented {
                augmentation,
                seed,
                index,
            } => augment_decoded(
                &image,
                &self.contract,
                augmentation,
                View::image_seed(*seed, *index, hash),
            )
            .map_err(|e| e.to_string()),
        }
    }

    fn decode(&self, path: &Path, hash: &ImageHash) -> Result<Arc<RgbImage>, String> {
        if let Some(memory) = &self.decoded
            && let Some(image) = memory.lock().expect("no panics while locked").get(hash)
        {
            return Ok(image.clone());
        }
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let image = Arc::new(decode_for(&bytes, &self.contract).map_err(|e| e.to_string())?);
        if let Some(memory) = &self.decoded {
            memory
                .lock()
                .expect("no panics while locked")
                .insert(*hash, image.clone());
        }
        Ok(image)
    }
}
