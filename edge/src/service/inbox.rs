//! A folder watched for new models: drop `NAME.onnx` (its signature `NAME.onnx.sig` first,
//! when the device requires one) and any reference images. Write elsewhere and rename into
//! the folder, or let the file rest a second: files younger than that are left alone.
//! Installed models are removed from the inbox; refused ones go to `rejected/` beside a
//! `.reason` file, so nothing is lost and nothing is tried twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::install_and_swap;
use super::store::{ModelStore, Preparer};
use crate::serve::hub::Hub;

/// Files younger than this may still be being written.
const SETTLE: Duration = Duration::from_secs(1);

const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "bmp", "tiff"];

/// Watch `inbox` every `every` until `stop`.
pub fn watch(
    inbox: PathBuf,
    store: Arc<ModelStore>,
    hub: Arc<Hub>,
    prepare: Arc<Preparer>,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::fs::create_dir_all(&inbox)?;
    std::thread::Builder::new()
        .name("scion-inbox".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = scan(&inbox, &store, &hub, &*prepare) {
                    tracing::warn!("inbox {}: {e}", inbox.display());
                }
                std::thread::sleep(every);
            }
        })
}

/// One pass over the inbox: reference images first, then models.
pub fn scan(
    inbox: &Path,
    store: &ModelStore,
    hub: &Hub,
    prepare: &Preparer,
) -> std::io::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(inbox)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && settled(p))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    let extension = |p: &Path| {
        p.extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default()
    };
    for image in files
        .iter()
        .filter(|p| IMAGE_EXTENSIONS.contains(&extension(p).as_str()))
    {
        let bytes = std::fs::read(image)?;
        match store.add_reference(&bytes) {
            Ok(sha) => {
                tracing::info!("reference image {} stored as {sha}", image.display());
                std::fs::remove_file(image)?;
            }
            Err(e) => reject(inbox, image, &e.to_string())?,
        }
    }
    for model in files.iter().filter(|p| extension(p) == "onnx") {
        let bytes = std::fs::read(model)?;
        let sig_path = PathBuf::from(format!("{}.sig", model.display()));
        let signature = std::fs::read(&sig_path).ok();
        tracing::info!("inbox: installing {}", model.display());
        match install_and_swap(store, hub, prepare, &bytes, signature.as_deref()) {
            Ok(_) => {
                std::fs::remove_file(model)?;
                if signature.is_some() {
                    std::fs::remove_file(&sig_path)?;
                }
            }
            Err(e) if e.is_rejection() => {
                reject(inbox, model, &e.to_string())?;
                if signature.is_some() {
                    reject(inbox, &sig_path, "its model was refused")?;
                }
            }
            // The device's fault (disk, loop busy): leave the file for the next pass.
            Err(e) => tracing::warn!("inbox: {}: {e}; trying again later", model.display()),
        }
    }
    Ok(())
}

fn settled(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age >= SETTLE)
}

/// Move a refused file to `rejected/` with the reason beside it.
fn reject(inbox: &Path, file: &Path, reason: &str) -> std::io::Result<()> {
    let dir = inbox.join("rejected");
    std::fs::create_dir_all(&dir)?;
    let name = file
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    std::fs::rename(file, dir.join(&name))?;
    std::fs::write(dir.join(format!("{name}.reason")), format!("{reason}\n"))?;
    tracing::warn!("inbox: {name} refused: {reason}");
    Ok(())
}
