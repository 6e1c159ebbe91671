//! Saving frames for the next training round: the capture button and `POST /v1/capture`
//! put the current frame, as the camera saw it, into `DIR/<announced label>/` or
//! `DIR/unlabelled/`, the layout `scion` trains from.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::preprocess::RgbImage;

use super::hub::Captured;

/// The folder a frame with this announced label goes into.
pub fn folder_name(label: Option<&str>) -> String {
    match label {
        // A label is a folder name: keep it to one path component.
        Some(l) if !l.trim().is_empty() => l
            .chars()
            .map(|c| {
                if matches!(c, '/' | '\\' | '\0') {
                    '_'
                } else {
                    c
                }
            })
            .collect::<String>()
            .trim_start_matches('.')
            .to_string(),
        _ => "unlabelled".to_string(),
    }
}

/// Write `image` as a JPEG into `dir/<label>/`, named by time and frame number; written
/// under a temporary name and renamed, so a training run never reads half a file.
pub fn save(
    dir: &Path,
    label: Option<&str>,
    seq: u64,
    image: &RgbImage,
) -> Result<Captured, String> {
    let label = folder_name(label);
    let folder = dir.join(&label);
    std::fs::create_dir_all(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let path: PathBuf = folder.join(format!("{millis}-{seq}.jpg"));
    let partial = path.with_extension("jpg.partial");
    let jpeg = crate::service::preview::encode_jpeg(image, 95)?;
    std::fs::write(&partial, jpeg)
        .and_then(|()| std::fs::rename(&partial, &path))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    tracing::info!("captured frame {seq} into {}", path.display());
    Ok(Captured { path, label, seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_become_single_folder_names() {
        assert_eq!(folder_name(Some("golden retriever")), "golden retriever");
        assert_eq!(folder_name(Some("../etc/passwd")), "_etc_passwd");
        assert_eq!(folder_name(Some(" ")), "unlabelled");
        assert_eq!(folder_name(None), "unlabelled");
    }
}
