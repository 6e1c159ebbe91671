//! `file://FOLDER` or `file://GLOB`: a folder of still images (sorted, recursive, hidden
//! entries skipped) played as a finite source at the model's pace. Files that cannot be
//! decoded are skipped with a warning and counted, like the batch classifier does.

use std::time::{Duration, Instant};

use super::{Frame, FrameSource, SourceError};
use crate::classify::inputs::expand;
use crate::preprocess::decode_rgb;

/// Whether `path` names an image folder or a glob rather than a video file.
pub fn is_image_collection(path: &str) -> bool {
    std::path::Path::new(path).is_dir() || path.contains(['*', '?', '['])
}

/// Still images as frames.
pub struct ImageFolderSource {
    uri: String,
    files: Vec<String>,
    next: usize,
    skipped: u64,
}

impl ImageFolderSource {
    /// List the images under `path` (a folder or a glob).
    pub fn open(path: &str) -> Result<ImageFolderSource, SourceError> {
        let uri = format!("file://{path}");
        let inputs = expand(&[path.to_string()]);
        if inputs.files.is_empty() {
            let reason = inputs
                .missing
                .first()
                .map_or("no image files".to_string(), |(_, r)| r.clone());
            return Err(SourceError::Open {
                uri,
                message: reason,
            });
        }
        Ok(ImageFolderSource {
            uri,
            files: inputs.files,
            next: 0,
            skipped: 0,
        })
    }

    /// Files that could not be read or decoded.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

impl FrameSource for ImageFolderSource {
    fn next_frame(&mut self, _timeout: Duration) -> Result<Option<Frame>, SourceError> {
        while let Some(file) = self.files.get(self.next) {
            let sequence = self.next as u64;
            self.next += 1;
            let decoded = std::fs::read(file)
                .map_err(|e| e.to_string())
                .and_then(|bytes| decode_rgb(&bytes, None).map_err(|e| e.to_string()));
            match decoded {
                Ok(image) => {
                    return Ok(Some(Frame {
                        image,
                        captured: Instant::now(),
                        sequence,
                        dropped: 0,
                    }));
                }
                Err(e) => {
                    self.skipped += 1;
                    tracing::warn!("{file}: {e}; skipped");
                }
            }
        }
        Err(SourceError::Ended {
            uri: self.uri.clone(),
        })
    }

    fn uri(&self) -> &str {
        &self.uri
    }
}
