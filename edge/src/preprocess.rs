//! The one preprocessing function of scion: encoded image bytes to a normalised tensor,
//! driven entirely by the model card's [`Preprocessing`] contract. Training, the service
//! and the batch classifier all call [`preprocess_into`], so they cannot disagree.

use fast_image_resize as fir;
use scion_onnx::card::{ColorOrder, Layout, Preprocessing, Resize, ResizeFilter};

/// Why an image could not be turned into a tensor.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The bytes are not a decodable image (corrupt, truncated, or another kind of file).
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// The image is too small or too large to process.
    #[error("unusable image size {width}x{height}")]
    Size {
        /// Decoded width.
        width: u32,
        /// Decoded height.
        height: u32,
    },
    /// The file claims far more pixels than its bytes can hold as a real picture: a
    /// decompression bomb (found by fuzzing: 1 KiB of JPEG that decodes to 79 megapixels
    /// of grey, 40 s of work under the fuzzer).
    #[error(
        "a {width}x{height} image in {bytes} bytes is a decompression bomb (over {MAX_EXPANSION} \
         decoded bytes per byte of file); refused"
    )]
    Bomb {
        /// Claimed width.
        width: u32,
        /// Claimed height.
        height: u32,
        /// Size of the file.
        bytes: usize,
    },
}

/// Largest decoded image accepted (a decompression bomb guard): 100 megapixels.
const MAX_PIXELS: u64 = 100_000_000;

/// Most decoded RGB bytes per byte of file. Real pictures stay far below: a photo is about
/// 10:1, a flat-colour PNG of a screen at most ~1,000:1 (deflate's limit is 1,032:1, and a
/// palette image triples that as RGB). Formats with run lengths or corrupt scans go past any
/// such figure, and nothing they would decode to is a picture worth the time.
const MAX_EXPANSION: u64 = 4096;

/// An 8-bit RGB image.
#[derive(Debug, Clone)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Interleaved RGB bytes, row-major.
    pub pixels: Vec<u8>,
}

/// Number of f32 values one image becomes under `contract`.
pub fn tensor_len(contract: &Preprocessing) -> usize {
    let (w, h) = contract.output_size();
    3 * w as usize * h as usize
}

/// Decode, resize, crop and normalise `bytes` into a new tensor (CHW or HWC per the card).
pub fn preprocess(bytes: &[u8], contract: &Preprocessing) -> Result<Vec<f32>, PreprocessError> {
    let mut out = vec![0f32; tensor_len(contract)];
    preprocess_into(bytes, contract, &mut out)?;
    Ok(out)
}

/// Like [`preprocess`], writing into `out` (one image's slot of a batch buffer), so the
/// batch classifier never copies tensors.
pub fn preprocess_into(
    bytes: &[u8],
    contract: &Preprocessing,
    out: &mut [f32],
) -> Result<(), PreprocessError> {
    let image = decode_for(bytes, contract)?;
    preprocess_decoded(&image, contract, out)
}

/// Decode `bytes` as small as `contract` allows (the decode step of [`preprocess`]), for
/// callers that keep decoded images in memory.
pub fn decode_for(bytes: &[u8], contract: &Preprocessing) -> Result<RgbImage, PreprocessError> {
    decode_rgb(bytes, Some(decode_target(contract)))
}

/// The rest of [`preprocess_into`] after decoding: resize, crop, normalise.
pub fn preprocess_decoded(
    image: &RgbImage,
    contract: &Preprocessing,
    out: &mut [f32],
) -> Result<(), PreprocessError> {
    let resized = resize_and_crop(image, contract)?;
    normalise(&resized, contract, out);
    Ok(())
}

/// The smallest decoded size that still lets the resize step only shrink: JPEGs larger than
/// this are decoded at a reduced DCT scale, which saves most of the decode cost.
pub(crate) fn decode_target(contract: &Preprocessing) -> DecodeTarget {
    match contract.resize {
        Resize::ShorterSide { size } => DecodeTarget::ShorterSide(size),
        Resize::Exact { width, height } => DecodeTarget::Both(width, height),
    }
}

/// What the caller will resize to, so the decoder may skip detail it would throw away.
#[derive(Debug, Clone, Copy)]
pub enum DecodeTarget {
    /// The shorter side will become this long.
    ShorterSide(u32),
    /// The image will become `width` x `height`.
    Both(u32, u32),
}

fn check_size(width: u32, height: u32) -> Result<(), PreprocessError> {
    if width == 0 || height == 0 || width as u64 * height as u64 > MAX_PIXELS {
        return Err(PreprocessError::Size { width, height });
    }
    Ok(())
}

/// The size guard, and the bomb guard on what a file of `bytes` bytes claims to hold;
/// checked from the header, before anything is decoded.
fn check_claimed(width: u32, height: u32, bytes: usize) -> Result<(), PreprocessError> {
    check_size(width, height)?;
    if width as u64 * height as u64 * 3 > (bytes as u64).saturating_mul(MAX_EXPANSION) {
        return Err(PreprocessError::Bomb {
            width,
            height,
            bytes,
        });
    }
    Ok(())
}

/// Decode any supported format to RGB8. JPEGs go through libjpeg-turbo, decoded with DCT
/// scaling when a `target` says how small the image will become.
pub fn decode_rgb(bytes: &[u8], target: Option<DecodeTarget>) -> Result<RgbImage, PreprocessError> {
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        check_jpeg_complete(bytes)?;
    }
    if bytes.starts_with(&[0xff, 0xd8, 0xff])
        && let Some(target) = target
        && let Some(img) = decode_jpeg_scaled(bytes, target)?
    {
        return Ok(img);
    }
    let format = image::guess_format(bytes).map_err(|e| PreprocessError::Decode(e.to_string()))?;
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 4);
    reader.limits(limits);
    let decoder = reader
        .into_decoder()
        .map_err(|e| PreprocessError::Decode(e.to_string()))?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    check_claimed(width, height, bytes.len())?;
    let decoded = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| PreprocessError::Decode(e.to_string()))?;
    let rgb = decoded.into_rgb8();
    let (width, height) = rgb.dimensions();
    check_size(width, height)?;
    Ok(RgbImage {
        width,
        height,
        pixels: rgb.into_raw(),
    })
}

/// JPEG decoders fill a truncated scan with grey and report success; a cut-off photo must
/// be an error instead. Walk the marker segments to the first start-of-scan, then require an
/// end-of-image marker after it: entropy-coded data never holds an unstuffed `FF D9`, and
/// embedded EXIF thumbnails (with their own `FF D9`) sit before the scan, so neither fools it.
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), PreprocessError> {
    let truncated =
        || PreprocessError::Decode("truncated JPEG: no end-of-image marker after the scan".into());
    let mut pos = 2;
    loop {
        // Skip fill bytes, then read the marker.
        while bytes.get(pos) == Some(&0xff) && bytes.get(pos + 1) == Some(&0xff) {
            pos += 1;
        }
        let (Some(&0xff), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            return Err(truncated());
        };
        pos += 2;
        if marker == 0xda {
            break;
        }
        if (0xd0..=0xd9).contains(&marker) || marker == 0x01 {
            continue;
        }
        let len = match (bytes.get(pos), bytes.get(pos + 1)) {
            (Some(&hi), Some(&lo)) => u16::from_be_bytes([hi, lo]) as usize,
            _ => return Err(truncated()),
        };
        pos += len;
    }
    match bytes.get(pos..) {
        Some(scan) if scan.windows(2).rev().any(|w| w == [0xff, 0xd9]) => Ok(()),
        _ => Err(truncated()),
    }
}

thread_local! {
    /// libjpeg-turbo decompressors are reusable; one per decode thread.
    static TURBO: std::cell::RefCell<Option<turbojpeg::Decompressor>> = const { std::cell::RefCell::new(None) };
}

/// Decode a JPEG with libjpeg-turbo at the smallest DCT scale (M/8) that keeps the image at
/// least as large as the resize target, so the resize step still only shrinks. Returns
/// `Ok(None)` when libjpeg-turbo cannot handle the file (e.g. CMYK), so the general decoder
/// gets a chance and gives its own error.
fn decode_jpeg_scaled(
    bytes: &[u8],
    target: DecodeTarget,
) -> Result<Option<RgbImage>, PreprocessError> {
    TURBO.with_borrow_mut(|slot| {
        let decompressor = match slot {
            Some(d) => d,
            None => match turbojpeg::Decompressor::new() {
                Ok(d) => slot.insert(d),
                Err(_) => return Ok(None),
            },
        };
        let Ok(header) = decompressor.read_header(bytes) else {
            return Ok(None);
        };
        check_claimed(header.width as u32, header.height as u32, bytes.len())?;
        let fits = |f: &turbojpeg::ScalingFactor| {
            let (w, h) = (f.scale(header.width) as u32, f.scale(header.height) as u32);
            match target {
                DecodeTarget::ShorterSide(size) => w.min(h) >= size,
                DecodeTarget::Both(tw, th) => w >= tw && h >= th,
            }
        };
        let factor = turbojpeg::Decompressor::supported_scaling_factors()
            .into_iter()
            .filter(|f| f.num() <= f.denom() && fits(f))
            .min_by(|a, b| (a.num() * b.denom()).cmp(&(b.num() * a.denom())))
            .unwrap_or(turbojpeg::ScalingFactor::ONE);
        if decompressor.set_scaling_factor(factor).is_err() {
            return Ok(None);
        }
        let scaled = header.scaled(factor);
        let mut pixels = vec![0u8; scaled.width * scaled.height * 3];
        let image = turbojpeg::Image {
            pixels: pixels.as_mut_slice(),
            width: scaled.width,
            pitch: scaled.width * 3,
            height: scaled.height,
            format: turbojpeg::PixelFormat::RGB,
        };
        if decompressor.decompress(bytes, image).is_err() {
            return Ok(None);
        }
        Ok(Some(RgbImage {
            width: scaled.width as u32,
            height: scaled.height as u32,
            pixels,
        }))
    })
}

/// Resize per the contract and centre-crop, in one pass: only the source region that
/// survives the crop is resampled.
fn resize_and_crop(
    image: &RgbImage,
    contract: &Preprocessing,
) -> Result<RgbImage, PreprocessError> {
    let (w, h) = (image.width as f64, image.height as f64);
    // Size of the full resized image (torchvision's rounding: the longer side truncates).
    let (rw, rh) = match contract.resize {
        Resize::ShorterSide { size } => {
            let s = size as f64;
            if w <= h {
                (s, (s * h / w).floor().max(1.0))
            } else {
                ((s * w / h).floor().max(1.0), s)
            }
        }
        Resize::Exact { width, height } => (width as f64, height as f64),
    };
    let (cw, ch) = match contract.crop {
        Some([cw, ch]) => (cw as f64, ch as f64),
        None => (rw, rh),
    };
    if cw > rw || ch > rh {
        return Err(PreprocessError::Size {
            width: image.width,
            height: image.height,
        });
    }
    // Crop box in resized coordinates, then mapped back to source coordinates.
    let left = ((rw - cw) / 2.0).round();
    let top = ((rh - ch) / 2.0).round();
    let (sx, sy) = (w / rw, h / rh);
    let region = [left * sx, top * sy, cw * sx, ch * sy];
    resample(image, region, (cw as u32, ch as u32), contract.filter)
}

/// Resample the source `region` (`[left, top, width, height]` in source pixels, fractional
/// allowed) of `image` to `size`, with the card's filter. Shared by the deterministic
/// contract and the training augmentations, so both resample alike.
pub(crate) fn resample(
    image: &RgbImage,
    region: [f64; 4],
    size: (u32, u32),
    filter: ResizeFilter,
) -> Result<RgbImage, PreprocessError> {
    let src = fir::images::ImageRef::new(
        image.width,
        image.height,
        &image.pixels,
        fir::PixelType::U8x3,
    )
    .map_err(|e| PreprocessError::Decode(e.to_string()))?;
    let mut dst = fir::images::Image::new(size.0, size.1, fir::PixelType::U8x3);
    let alg = match filter {
        ResizeFilter::Nearest => fir::ResizeAlg::Nearest,
        ResizeFilter::Bilinear => fir::ResizeAlg::Convolution(fir::FilterType::Bilinear),
        ResizeFilter::Bicubic => fir::ResizeAlg::Convolution(fir::FilterType::CatmullRom),
        ResizeFilter::Lanczos3 => fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3),
    };
    let [left, top, width, height] = region;
    let options = fir::ResizeOptions::new()
        .resize_alg(alg)
        .crop(left, top, width, height);
    RESIZER
        .with_borrow_mut(|r| r.resize(&src, &mut dst, &options))
        .map_err(|e| PreprocessError::Decode(format!("resize: {e}")))?;
    Ok(RgbImage {
        width: size.0,
        height: size.1,
        pixels: dst.into_vec(),
    })
}

thread_local! {
    /// The resizer keeps scratch buffers; one per decode thread avoids reallocating them.
    static RESIZER: std::cell::RefCell<fir::Resizer> = std::cell::RefCell::new(fir::Resizer::new());
}

/// `(x * scale - mean) / std` per channel through a 256-entry table, in the card's channel
/// order and layout.
pub(crate) fn normalise(image: &RgbImage, contract: &Preprocessing, out: &mut [f32]) {
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, slot) in table.iter_mut().enumerate() {
            *slot = (v as f32 * contract.scale - contract.mean[c]) / contract.std[c];
        }
    }
    // Output channel c reads source (RGB) channel src[c].
    let src = match contract.color {
        ColorOrder::Rgb => [0, 1, 2],
        ColorOrder::Bgr => [2, 1, 0],
    };
    let plane = image.width as usize * image.height as usize;
    let out = &mut out[..plane * 3];
    match contract.layout {
        Layout::Nchw => {
            let (r, rest) = out.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            for (i, px) in image.pixels.chunks_exact(3).enumerate() {
                r[i] = lut[0][px[src[0]] as usize];
                g[i] = lut[1][px[src[1]] as usize];
                b[i] = lut[2][px[src[2]] as usize];
            }
        }
        Layout::Nhwc => {
            for (o, px) in out.chunks_exact_mut(3).zip(image.pixels.chunks_exact(3)) {
                for c in 0..3 {
                    o[c] = lut[c][px[src[c]] as usize];
                }
            }
        }
    }
}

/// Helpers for the unit tests of preprocessing and augmentation.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// RGB, shorter side to `size`, centre crop `crop`, `(x - mean) / std`, NCHW.
    pub(crate) fn square_contract(size: u32, crop: u32, mean: f32, std: f32) -> Preprocessing {
        Preprocessing {
            color: ColorOrder::Rgb,
            resize: Resize::ShorterSide { size },
            filter: ResizeFilter::Bilinear,
            crop: Some([crop, crop]),
            scale: 1.0,
            mean: [mean; 3],
            std: [std; 3],
            layout: Layout::Nchw,
        }
    }

    /// A PNG whose pixel (x, y) is `f(x, y)`.
    pub(crate) fn png(width: u32, height: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb(f(x, y)));
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("encode png");
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{png, square_contract};
    use super::*;

    fn contract() -> Preprocessing {
        square_contract(8, 4, 127.0, 128.0)
    }

    #[test]
    fn constant_image_normalises_exactly_per_channel() {
        let bytes = png(16, 12, |_, _| [255, 127, 0]);
        let t = preprocess(&bytes, &contract()).expect("preprocess");
        assert_eq!(t.len(), 3 * 16);
        assert!(t[..16].iter().all(|v| *v == 1.0));
        assert!(t[16..32].iter().all(|v| *v == 0.0));
        assert!(t[32..].iter().all(|v| *v == -127.0 / 128.0));
    }

    #[test]
    fn bgr_swaps_channels_and_nhwc_interleaves() {
        let bytes = png(8, 8, |_, _| [255, 127, 0]);
        let mut c = contract();
        c.color = ColorOrder::Bgr;
        c.layout = Layout::Nhwc;
        let t = preprocess(&bytes, &c).expect("preprocess");
        assert_eq!(&t[..3], &[-127.0 / 128.0, 0.0, 1.0]);
    }

    #[test]
    fn centre_crop_keeps_the_middle() {
        // Left half black, right half white, 16x8 -> shorter side 8 keeps 16x8 -> crop 4x4
        // from the middle: left two columns black, right two white.
        let bytes = png(16, 8, |x, _| if x < 8 { [0; 3] } else { [255; 3] });
        let mut c = contract();
        c.scale = 1.0;
        c.mean = [0.0; 3];
        c.std = [1.0; 3];
        let t = preprocess(&bytes, &c).expect("preprocess");
        let row: Vec<f32> = t[..4].to_vec();
        assert_eq!(row, vec![0.0, 0.0, 255.0, 255.0]);
    }

    #[test]
    fn truncated_jpeg_is_an_error_not_a_grey_image() {
        let img =
            image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 3, y as u8 * 5, 7]));
        let mut jpeg = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .expect("encode jpeg");
        assert!(preprocess(&jpeg, &contract()).is_ok());
        for cut in [jpeg.len() - 2, jpeg.len() * 2 / 3, 30] {
            let err = preprocess(&jpeg[..cut], &contract()).expect_err("truncated");
            assert!(err.to_string().contains("truncated"), "{cut}: {err}");
        }
        let mut trailing = jpeg.clone();
        trailing.extend_from_slice(b"camera maker's trailer");
        assert!(
            preprocess(&trailing, &contract()).is_ok(),
            "data after the end marker is fine"
        );
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let err = preprocess(b"this is not an image", &contract()).expect_err("garbage");
        assert!(matches!(err, PreprocessError::Decode(_)), "{err}");
        let mut truncated = png(32, 32, |x, y| [x as u8, y as u8, 0]);
        truncated.truncate(truncated.len() / 2);
        assert!(preprocess(&truncated, &contract()).is_err());
    }
}
