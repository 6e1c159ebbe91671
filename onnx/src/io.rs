//! Load and save ONNX models, with a size limit and a structural check.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::pb::ModelProto;
use crate::{Error, Result, graph};

/// Protobuf messages cannot exceed 2 GiB; models with external data are not supported.
pub const DEFAULT_MAX_MODEL_BYTES: u64 = (2 << 30) - 1;

/// Load a model from `path`, refusing files over [`DEFAULT_MAX_MODEL_BYTES`].
pub fn load(path: impl AsRef<Path>) -> Result<ModelProto> {
    load_with_limit(path, DEFAULT_MAX_MODEL_BYTES)
}

/// Load a model from `path`, refusing files over `limit` bytes before reading them.
pub fn load_with_limit(path: impl AsRef<Path>, limit: u64) -> Result<ModelProto> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if size > limit {
        return Err(Error::TooLarge {
            path: path.into(),
            size,
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    decode_named(&bytes, path)
}

/// Decode a model held in memory and check that its graph is consistent.
pub fn decode(bytes: &[u8]) -> Result<ModelProto> {
    decode_named(bytes, Path::new("<memory>"))
}

fn decode_named(bytes: &[u8], path: &Path) -> Result<ModelProto> {
    let malformed = |reason: String| Error::Malformed {
        path: PathBuf::from(path),
        reason,
    };
    if bytes.is_empty() {
        return Err(malformed("the file is empty".into()));
    }
    let model = ModelProto::decode(bytes).map_err(|e| malformed(e.to_string()))?;
    validate(&model).map_err(|e| malformed(e.to_string()))?;
    Ok(model)
}

/// Structural checks that catch a model cut short at a field boundary (which protobuf
/// decoding alone accepts): an IR version, a graph with outputs, and every tensor that a
/// node reads is produced by an input, an initializer or an earlier node.
pub fn validate(model: &ModelProto) -> Result<()> {
    if model.ir_version <= 0 {
        return Err(Error::Graph("no IR version".into()));
    }
    if model.opset_import.is_empty() {
        return Err(Error::Graph("no opset_import".into()));
    }
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::Graph("no graph".into()))?;
    if graph.output.is_empty() {
        return Err(Error::Graph("the graph has no outputs".into()));
    }
    graph::topological_order(graph)?;
    Ok(())
}

/// Serialize a model to bytes.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Save a model atomically: write a temporary file beside `path`, sync it, then rename,
/// so that a power cut never leaves a half-written model under the final name.
pub fn save(model: &ModelProto, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = encode(model);
    write_atomically(path, &bytes)
}

/// Write `bytes` to `path` through a temporary file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}
