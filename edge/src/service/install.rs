//! `scion-edge install --root PREFIX`: lay out the service on a device (or under a
//! temporary root, for tests and image builders): the binary, the systemd unit, the default
//! configuration, the model store and its inbox. Existing configuration is kept.

use std::path::{Path, PathBuf};

use super::config::DEFAULT_CONFIG_TOML;

/// The systemd unit, as shipped.
pub const UNIT: &str = include_str!("../../dist/scion-edge.service");

/// What was written (or kept).
#[derive(Debug, Default)]
pub struct Layout {
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Files that existed and were kept.
    pub kept: Vec<PathBuf>,
    /// Folders created.
    pub folders: Vec<PathBuf>,
}

/// Install under `root`. `binary` is copied to `usr/bin/scion-edge`, `ort_library` (if
/// given) to `usr/lib/scion/`. The configuration is only written when absent, or with
/// `overwrite_config`.
pub fn install(
    root: &Path,
    binary: Option<&Path>,
    ort_library: Option<&Path>,
    overwrite_config: bool,
) -> std::io::Result<Layout> {
    let mut layout = Layout::default();
    let at = |p: &str| root.join(p);
    for folder in [
        "etc/scion",
        "usr/bin",
        "lib/systemd/system",
        "var/lib/scion/models/inbox",
        "var/lib/scion/models/references",
    ] {
        let path = at(folder);
        if !path.is_dir() {
            std::fs::create_dir_all(&path).map_err(|e| named(&path, e))?;
            layout.folders.push(path);
        }
    }
    let config = at("etc/scion/edge.toml");
    if config.exists() && !overwrite_config {
        layout.kept.push(config);
    } else {
        write(&config, DEFAULT_CONFIG_TOML.as_bytes(), 0o644)?;
        layout.written.push(config);
    }
    let unit = at("lib/systemd/system/scion-edge.service");
    write(&unit, UNIT.as_bytes(), 0o644)?;
    layout.written.push(unit);
    if let Some(binary) = binary {
        let bytes = std::fs::read(binary).map_err(|e| named(binary, e))?;
        let target = at("usr/bin/scion-edge");
        write(&target, &bytes, 0o755)?;
        layout.written.push(target);
    }
    if let Some(library) = ort_library {
        let bytes = std::fs::read(library).map_err(|e| named(library, e))?;
        let dir = at("usr/lib/scion");
        std::fs::create_dir_all(&dir).map_err(|e| named(&dir, e))?;
        let target = dir.join("libonnxruntime.so");
        write(&target, &bytes, 0o644)?;
        layout.written.push(target);
    }
    Ok(layout)
}

fn named(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Write through a temporary file and a rename, so a running service never sees half.
fn write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).map_err(|e| named(&partial, e))?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(mode))
        .map_err(|e| named(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| named(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lays_out_a_root_and_keeps_an_edited_config() {
        let root = tempfile::tempdir().expect("tempdir");
        let first = install(root.path(), None, None, false).expect("install");
        assert!(
            root.path()
                .join("lib/systemd/system/scion-edge.service")
                .is_file()
        );
        assert!(root.path().join("var/lib/scion/models/inbox").is_dir());
        assert_eq!(first.written.len(), 2);
        let config = root.path().join("etc/scion/edge.toml");
        std::fs::write(&config, "source = \"test://ball\"\n").expect("edit");
        let second = install(root.path(), None, None, false).expect("again");
        assert_eq!(second.kept, vec![config.clone()]);
        assert_eq!(
            std::fs::read_to_string(&config).expect("read"),
            "source = \"test://ball\"\n"
        );
        let unit =
            std::fs::read_to_string(root.path().join("lib/systemd/system/scion-edge.service"))
                .expect("unit");
        assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    }
}
