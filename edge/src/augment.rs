//! Training augmentations on top of the one preprocessing function: random resized crop,
//! horizontal flip and light colour jitter, then the card's normalisation. Decoding,
//! resampling and normalising are the same code as [`crate::preprocess`], so augmented
//! training images differ from inference images only by the augmentation itself.

use scion_onnx::card::Preprocessing;

use crate::rng::SplitMix64 as Rng;

use crate::preprocess::{
    PreprocessError, RgbImage, decode_rgb, decode_target, normalise, resample, tensor_len,
};

/// What to vary, torchvision-style.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augmentation {
    /// Range of the crop's area as a fraction of the image.
    pub scale: (f32, f32),
    /// Range of the crop's aspect ratio (width / height).
    pub ratio: (f32, f32),
    /// Probability of a horizontal flip.
    pub flip: f32,
    /// Brightness, contrast and saturation vary by up to this fraction.
    pub jitter: f32,
}

impl Default for Augmentation {
    fn default() -> Self {
        Augmentation {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip: 0.5,
            jitter: 0.2,
        }
    }
}

/// The crop box `[left, top, width, height]`: up to ten tries at a random area and aspect,
/// else the largest centred box within the ratio range (torchvision's fallback).
fn random_box(width: u32, height: u32, aug: &Augmentation, rng: &mut Rng) -> [f64; 4] {
    let (w, h) = (width as f32, height as f32);
    let area = w * h;
    for _ in 0..10 {
        let target = area * rng.uniform(aug.scale.0, aug.scale.1);
        let ratio = rng.uniform(aug.ratio.0.ln(), aug.ratio.1.ln()).exp();
        let cw = (target * ratio).sqrt();
        let ch = (target / ratio).sqrt();
        if cw <= w && ch <= h && cw >= 1.0 && ch >= 1.0 {
            let left = rng.uniform(0.0, w - cw);
            let top = rng.uniform(0.0, h - ch);
            return [left as f64, top as f64, cw as f64, ch as f64];
        }
    }
    let aspect = w / h;
    let (cw, ch) = if aspect < aug.ratio.0 {
        (w, w / aug.ratio.0)
    } else if aspect > aug.ratio.1 {
        (h * aug.ratio.1, h)
    } else {
        (w, h)
    };
    [
        ((w - cw) / 2.0) as f64,
        ((h - ch) / 2.0) as f64,
        cw as f64,
        ch as f64,
    ]
}

fn flip_horizontally(image: &mut RgbImage) {
    let row = image.width as usize * 3;
    for line in image.pixels.chunks_exact_mut(row) {
        let (mut a, mut b) = (0, line.len() - 3);
        while a < b {
            for c in 0..3 {
                line.swap(a + c, b + c);
            }
            a += 3;
            b -= 3;
        }
    }
}

/// Brightness, contrast (around the mean grey) and saturation (around each pixel's grey).
fn jitter_colours(image: &mut RgbImage, amount: f32, rng: &mut Rng) {
    if amount <= 0.0 {
        return;
    }
    let brightness = rng.uniform(1.0 - amount, 1.0 + amount);
    let contrast = rng.uniform(1.0 - amount, 1.0 + amount);
    let saturation = rng.uniform(1.0 - amount, 1.0 + amount);
    let grey = |p: &[u8]| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
    let n = (image.pixels.len() / 3).max(1) as f32;
    let mean = image.pixels.chunks_exact(3).map(grey).sum::<f32>() / n * brightness;
    for p in image.pixels.chunks_exact_mut(3) {
        let g = grey(p) * brightness;
        for v in p.iter_mut() {
            let x = *v as f32 * brightness;
            let x = g + (x - g) * saturation;
            let x = mean + (x - mean) * contrast;
            *v = x.round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// One augmented view of an encoded image, as a normalised tensor (same size and layout
/// as [`crate::preprocess::preprocess`] gives), determined entirely by `seed`.
pub fn preprocess_augmented(
    bytes: &[u8],
    contract: &Preprocessing,
    augmentation: &Augmentation,
    seed: u64,
) -> Result<Vec<f32>, PreprocessError> {
    let image = decode_rgb(bytes, Some(decode_target(contract)))?;
    augment_decoded(&image, contract, augmentation, seed)
}

/// [`preprocess_augmented`] of an image already decoded with
/// [`crate::preprocess::decode_for`] (for loaders that keep decoded images in memory).
pub fn augment_decoded(
    image: &RgbImage,
    contract: &Preprocessing,
    augmentation: &Augmentation,
    seed: u64,
) -> Result<Vec<f32>, PreprocessError> {
    // The view is a pure function of the seed, so a cached augmented view can be recomputed.
    let mut rng = Rng::new(seed);
    let region = random_box(image.width, image.height, augmentation, &mut rng);
    let mut view = resample(image, region, contract.output_size(), contract.filter)?;
    if rng.next_f32() < augmentation.flip {
        flip_horizontally(&mut view);
    }
    jitter_colours(&mut view, augmentation.jitter, &mut rng);
    let mut out = vec![0f32; tensor_len(contract)];
    normalise(&view, contract, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::preprocess::test_support::{png, square_contract};

    fn contract() -> Preprocessing {
        square_contract(16, 8, 0.0, 1.0)
    }

    #[test]
    fn a_view_is_a_pure_function_of_its_seed() {
        let bytes = png(40, 30, |x, y| [(x * 6) as u8, (y * 8) as u8, 100]);
        let aug = Augmentation::default();
        let a = preprocess_augmented(&bytes, &contract(), &aug, 1).expect("view");
        let b = preprocess_augmented(&bytes, &contract(), &aug, 1).expect("view");
        let c = preprocess_augmented(&bytes, &contract(), &aug, 2).expect("view");
        assert_eq!(a.len(), 3 * 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn flip_mirrors_and_no_augmentation_is_a_plain_resize() {
        // Left half black, right half white.
        let bytes = png(32, 32, |x, _| if x < 16 { [0; 3] } else { [255; 3] });
        let none = Augmentation {
            scale: (1.0, 1.0),
            ratio: (1.0, 1.0),
            flip: 0.0,
            jitter: 0.0,
        };
        let plain = preprocess_augmented(&bytes, &contract(), &none, 9).expect("view");
        // The whole image, shrunk 4x: dark left, bright right, blended at the edge.
        assert_eq!(&plain[..3], &[0.0; 3]);
        assert_eq!(&plain[5..8], &[255.0; 3]);
        let flipped = Augmentation { flip: 1.0, ..none };
        let mirrored = preprocess_augmented(&bytes, &contract(), &flipped, 9).expect("view");
        for row in 0..8 {
            let mut expected = plain[row * 8..row * 8 + 8].to_vec();
            expected.reverse();
            assert_eq!(&mirrored[row * 8..row * 8 + 8], expected.as_slice());
        }
    }

    #[test]
    fn jitter_stays_in_range_and_crops_fall_inside_the_image() {
        let mut rng = Rng::new(5);
        for _ in 0..200 {
            let [l, t, w, h] = random_box(640, 480, &Augmentation::default(), &mut rng);
            assert!(l >= 0.0 && t >= 0.0 && l + w <= 640.0 + 1e-3 && h + t <= 480.0 + 1e-3);
        }
        let bytes = png(20, 20, |x, y| [(x * 12) as u8, (y * 12) as u8, 255]);
        let strong = Augmentation {
            jitter: 0.9,
            ..Augmentation::default()
        };
        for seed in 0..20 {
            let v = preprocess_augmented(&bytes, &contract(), &strong, seed).expect("view");
            assert!(v.iter().all(|x| (0.0..=255.0).contains(x)));
        }
    }
}
