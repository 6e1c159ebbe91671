//! A folder watched for new models: drop `NAME.onnx` (its signature `NAME.onnx.sig` first,
//! when the device requires one) and any reference images. Write elsewhere and rename into
//! the folder, or let the file rest a second: files younger than that are left alone.
//! Installed models are removed from the inbox; refused ones go to `rejected/` beside a
//! `.reason` file, so nothing is lost and nothing is tried twice. A symbolic link put in
//! the inbox is moved to `rejected/` too, never followed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::store::{ModelSource, ModelStore, Preparer};
use super::{confined, install_and_swap};
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
    let mut files = Vec::new();
    for entry in std::fs::read_dir(inbox)?.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            // Following it would read (and install) whatever it points at.
            reject(
                inbox,
                &path,
                "a symbolic link: the inbox takes files, links are not followed",
            )?;
        } else if kind.is_file() && settled(&path) {
            files.push(path);
        }
    }
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
        let bytes = confined::read_regular(image)?;
        match store.add_reference(&bytes) {
            Ok(sha) => {
                tracing::info!("reference image {} stored as {sha}", image.display());
                std::fs::remove_file(image)?;
            }
            Err(e) => reject(inbox, image, &e.to_string())?,
        }
    }
    for model in files.iter().filter(|p| extension(p) == "onnx") {
        let sig_path = PathBuf::from(format!("{}.sig", model.display()));
        let signature = confined::read_regular(&sig_path).ok();
        tracing::info!("inbox: installing {}", model.display());
        // Read under the store's install lock: one model in memory at a time.
        let source = ModelSource::File(model);
        match install_and_swap(store, hub, prepare, source, signature.as_deref()) {
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
    confined::real_dir(&dir)?;
    let name = file
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    std::fs::rename(file, dir.join(&name))?;
    confined::create_new(&dir.join(format!("{name}.reason")))?
        .write_all(format!("{reason}\n").as_bytes())?;
    tracing::warn!("inbox: {name} refused: {reason}");
    Ok(())
}
