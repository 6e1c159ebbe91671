//! `scion data import-captures`: a capture folder pulled off a device (`scion-edge serve`'s
//! `capture_dir`: `<guess>/<millis>-<seq>.jpg` with JSON sidecars) becomes an ImageFolder
//! for `scion train`. The folder of each image is what a person confirmed on the device's
//! page, else the folder a person moved it into, else the model's guess. Rerunning it
//! adds only what is new and moves what was relabelled, so nothing is duplicated.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use scion_edge::classifier::UNKNOWN;
use scion_edge::serve::collect::{folder_name, read_sidecar};

/// What to keep.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    /// Only images whose label a person gave (confirmed on the page, or moved by hand).
    pub confirmed_only: bool,
    /// Keep images the model rejected as unknown, in an `unknown/` class.
    pub keep_unknown: bool,
}

/// What happened.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ImportReport {
    /// Images now in the data set because of this run, per class.
    pub imported: BTreeMap<String, usize>,
    /// Images that were already there.
    pub already: usize,
    /// Images moved to another class (relabelled since the last import).
    pub moved: usize,
    /// Left out: only the model's guess, with `confirmed_only`.
    pub unconfirmed: usize,
    /// Left out: rejected as unknown and not confirmed as a class.
    pub unknown: usize,
    /// Left out: not a readable image (path and why).
    pub bad: Vec<(PathBuf, String)>,
    /// Images without a sidecar (their folder was taken as the label).
    pub without_sidecar: usize,
}

/// Import `captures` into `out` (created if needed).
pub fn import_captures(
    captures: &Path,
    out: &Path,
    options: ImportOptions,
) -> anyhow::Result<ImportReport> {
    anyhow::ensure!(
        captures.is_dir(),
        "{}: not a folder (expected the device's capture_dir)",
        captures.display()
    );
    std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    // What an earlier import put there: file name → its class folder.
    let mut existing: HashMap<String, PathBuf> = HashMap::new();
    for entry in walkdir::WalkDir::new(out).min_depth(2).max_depth(2) {
        let entry = entry?;
        if entry.file_type().is_file() {
            existing.insert(
                entry.file_name().to_string_lossy().into_owned(),
                entry.path().to_path_buf(),
            );
        }
    }
    let mut report = ImportReport::default();
    let mut jpegs: Vec<PathBuf> = walkdir::WalkDir::new(captures)
        .min_depth(2)
        .max_depth(2)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy();
            e.file_type().is_file() && name.ends_with(".jpg") && !name.starts_with('.')
        })
        .map(|e| e.into_path())
        .collect();
    jpegs.sort();
    for jpeg in jpegs {
        let folder = jpeg
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = jpeg
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sidecar = read_sidecar(&jpeg);
        if sidecar.is_none() {
            report.without_sidecar += 1;
        }
        let guess = sidecar
            .as_ref()
            .map_or(folder.clone(), |s| folder_name(&s.guess));
        let (label, confirmed) = match sidecar.as_ref().and_then(|s| s.confirmed.clone()) {
            Some(label) => (label, true),
            // Moved into another folder by hand: that is a person's label too.
            None if folder != guess => (folder.clone(), true),
            None => (guess, false),
        };
        if options.confirmed_only && !confirmed {
            report.unconfirmed += 1;
            continue;
        }
        if label == UNKNOWN && !options.keep_unknown {
            report.unknown += 1;
            continue;
        }
        if let Err(e) = image::ImageReader::open(&jpeg)
            .and_then(|r| r.with_guessed_format())
            .map_err(|e| e.to_string())
            .and_then(|r| r.decode().map_err(|e| e.to_string()))
        {
            tracing::warn!("{}: {e}; left out", jpeg.display());
            report.bad.push((jpeg.clone(), e));
            continue;
        }
        let class = folder_name(&label);
        let target = out.join(&class).join(&name);
        match existing.get(&name) {
            Some(path) if *path == target => {
                report.already += 1;
                continue;
            }
            Some(path) => {
                std::fs::create_dir_all(out.join(&class))?;
                std::fs::rename(path, &target).map_err(|e| {
                    anyhow::anyhow!("{} -> {}: {e}", path.display(), target.display())
                })?;
                existing.insert(name, target);
                report.moved += 1;
                continue;
            }
            None => {}
        }
        std::fs::create_dir_all(out.join(&class))?;
        let partial = target.with_extension("jpg.partial");
        std::fs::copy(&jpeg, &partial)
            .and_then(|_| std::fs::rename(&partial, &target))
            .map_err(|e| anyhow::anyhow!("{} -> {}: {e}", jpeg.display(), target.display()))?;
        existing.insert(name, target);
        *report.imported.entry(class).or_insert(0) += 1;
    }
    Ok(report)
}

impl ImportReport {
    /// A few lines for the terminal.
    pub fn render(&self, out: &Path) -> String {
        let total: usize = self.imported.values().sum();
        let mut text = format!("{}: {total} images added", out.display());
        if !self.imported.is_empty() {
            let parts: Vec<String> = self
                .imported
                .iter()
                .map(|(class, n)| format!("{class} {n}"))
                .collect();
            text.push_str(&format!(" ({})", parts.join(", ")));
        }
        text.push('\n');
        for (n, what) in [
            (self.already, "already there"),
            (self.moved, "moved to their confirmed class"),
            (
                self.unconfirmed,
                "left out: not confirmed (--confirmed-only)",
            ),
            (
                self.unknown,
                "left out: rejected as unknown (--keep-unknown keeps them)",
            ),
            (
                self.without_sidecar,
                "without a sidecar (folder taken as the label)",
            ),
        ] {
            if n > 0 {
                text.push_str(&format!("  {n} {what}\n"));
            }
        }
        for (path, why) in &self.bad {
            text.push_str(&format!("  left out: {}: {why}\n", path.display()));
        }
        text
    }
}
