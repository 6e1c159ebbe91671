//! IDX files (MNIST, Fashion-MNIST), plain or gzipped, converted to the ImageFolder layout
//! (`out/<class>/<set>-<index>.png`) that the rest of scion reads.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Folder where Debian's `dataset-fashion-mnist` package puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Fashion-MNIST class names in label order, as folder-safe names.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
];

/// Problems reading or converting IDX files.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid IDX file of the expected kind.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Images of one IDX file: `count` images of `rows` x `cols` grey bytes.
#[derive(Debug, Clone)]
pub struct IdxImages {
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// All pixels, image after image.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / (self.rows * self.cols).max(1)
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, IdxError> {
    let io = |source| IdxError::Io {
        path: path.into(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn header(bytes: &[u8], path: &Path, dims: usize) -> Result<Vec<usize>, IdxError> {
    let bad = |message: String| IdxError::Format {
        path: path.into(),
        message,
    };
    if bytes.len() < 4 + 4 * dims || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "element type 0x{:02x} is not unsigned bytes",
            bytes[2]
        )));
    }
    if bytes[3] as usize != dims {
        return Err(bad(format!("{} dimensions, expected {dims}", bytes[3])));
    }
    let sizes: Vec<usize> = (0..dims)
        .map(|d| {
            u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let expected = 4 + 4 * dims + sizes.iter().product::<usize>();
    if bytes.len() != expected {
        return Err(bad(format!(
            "{} bytes, the header promises {expected} (truncated?)",
            bytes.len()
        )));
    }
    Ok(sizes)
}

/// Read an images file (`idx3-ubyte`, optionally gzipped).
pub fn read_images(path: &Path) -> Result<IdxImages, IdxError> {
    let bytes = read_maybe_gz(path)?;
    let sizes = header(&bytes, path, 3)?;
    Ok(IdxImages {
        rows: sizes[1],
        cols: sizes[2],
        pixels: bytes[16..].to_vec(),
    })
}

/// Read a labels file (`idx1-ubyte`, optionally gzipped).
pub fn read_labels(path: &Path) -> Result<Vec<u8>, IdxError> {
    let bytes = read_maybe_gz(path)?;
    header(&bytes, path, 1)?;
    Ok(bytes[8..].to_vec())
}

/// Which images to take.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection {
    /// At most this many per class (the first ones in file order).
    pub per_class: Option<usize>,
    /// Only the first this many images of the file.
    pub first: Option<usize>,
}

/// Write the selected images as PNGs under `out/<class name>/<prefix>-<index>.png`.
/// Returns the number written per class. Existing files are replaced, so a rerun repairs
/// an interrupted conversion.
pub fn export(
    images: &IdxImages,
    labels: &[u8],
    class_names: &[String],
    selection: Selection,
    out: &Path,
    prefix: &str,
) -> Result<Vec<usize>, IdxError> {
    if images.len() != labels.len() {
        return Err(IdxError::Format {
            path: out.into(),
            message: format!("{} images but {} labels", images.len(), labels.len()),
        });
    }
    let mut counts = vec![0usize; class_names.len()];
    let limit = selection.first.unwrap_or(usize::MAX).min(images.len());
    for (i, &label) in labels.iter().enumerate().take(limit) {
        let class = label as usize;
        let name = class_names.get(class).ok_or_else(|| IdxError::Format {
            path: out.into(),
            message: format!(
                "label {class} at image {i} has no class name ({} given)",
                class_names.len()
            ),
        })?;
        if selection.per_class.is_some_and(|n| counts[class] >= n) {
            continue;
        }
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).map_err(|source| IdxError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(format!("{prefix}-{i:05}.png"));
        let img = image::GrayImage::from_raw(
            images.cols as u32,
            images.rows as u32,
            images.image(i).to_vec(),
        )
        .expect("buffer matches dimensions");
        img.save(&path).map_err(|e| IdxError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        counts[class] += 1;
    }
    Ok(counts)
}
