//! Read PyTorch `torch.save` state dicts without Python: the legacy (non-zip) format of
//! torch < 1.6 and the zip format of later versions. Every tensor is returned as f32.

use std::collections::HashMap;
use std::io::Read;

use super::pickle::{self, Value};
use crate::{Error, Result};

/// The first pickle of a legacy file is this integer, `0x1950a86a20f9469cfc6c`, in
/// little-endian bytes.
pub const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// A tensor of a state dict, converted to f32, contiguous, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

/// Named tensors in file order.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    /// `(name, tensor)` pairs.
    pub tensors: Vec<(String, Tensor)>,
}

impl StateDict {
    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The tensor called `name`, or an error naming it.
    pub fn require(&self, name: &str) -> Result<&Tensor> {
        self.get(name)
            .ok_or_else(|| Error::Import(format!("the weights have no tensor '{name}'")))
    }
}

fn err(m: impl Into<String>) -> Error {
    Error::Import(m.into())
}

fn pickle_err(what: &str) -> impl Fn(pickle::PickleError) -> Error + '_ {
    move |e| err(format!("{what}: {e}"))
}

/// Read a state dict from the bytes of a `.pth` file of either format.
pub fn read_state_dict(bytes: &[u8]) -> Result<StateDict> {
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes)
    } else {
        read_legacy(bytes)
    }
}

#[derive(Debug, Clone, Copy)]
enum DType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    fn from_storage(name: &str) -> Result<DType> {
        Ok(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            other => return Err(err(format!("unsupported storage type '{other}'"))),
        })
    }

    fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    fn read(self, b: &[u8]) -> f32 {
        match self {
            DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            DType::F64 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b[..8]);
                f64::from_le_bytes(a) as f32
            }
            DType::F16 => f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
            DType::BF16 => f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16),
            DType::I64 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b[..8]);
                i64::from_le_bytes(a) as f32
            }
            DType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            DType::I16 => i16::from_le_bytes([b[0], b[1]]) as f32,
            DType::I8 => b[0] as i8 as f32,
            DType::U8 | DType::Bool => b[0] as f32,
        }
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // subnormal: normalise
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// A storage reference found in a persistent id: its key and element type.
struct StorageRef {
    key: String,
    dtype: DType,
}

fn storage_ref(pid: &Value) -> Result<StorageRef> {
    let Value::Tuple(items) = pid else {
        return Err(err("a persistent id is not a tuple"));
    };
    match items.as_slice() {
        [
            Value::Str(kind),
            Value::Global { name, .. },
            Value::Str(key),
            ..,
        ] if kind == "storage" => Ok(StorageRef {
            key: key.clone(),
            dtype: DType::from_storage(name)?,
        }),
        _ => Err(err(format!("unexpected persistent id {items:?}"))),
    }
}

/// A tensor as pickled: which storage, where in it, and its shape and strides.
struct TensorRef {
    storage: StorageRef,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn ints(v: &Value, what: &str) -> Result<Vec<usize>> {
    let Value::Tuple(items) = v else {
        return Err(err(format!("{what} is not a tuple")));
    };
    items
        .iter()
        .map(|i| match i {
            Value::Int(n) if *n >= 0 => Ok(*n as usize),
            _ => Err(err(format!("{what} holds a non-integer"))),
        })
        .collect()
}

fn tensor_ref(v: &Value) -> Result<Option<TensorRef>> {
    let Value::Call { callable, args } = v else {
        return Ok(None);
    };
    let (Value::Global { name, .. }, Value::Tuple(args)) = (&**callable, &**args) else {
        return Ok(None);
    };
    match name.as_str() {
        "_rebuild_tensor_v2" | "_rebuild_tensor" => {
            let [
                Value::PersistentId(pid),
                Value::Int(offset),
                size,
                stride,
                ..,
            ] = args.as_slice()
            else {
                return Err(err("unexpected arguments to _rebuild_tensor_v2"));
            };
            Ok(Some(TensorRef {
                storage: storage_ref(pid)?,
                offset: *offset as usize,
                shape: ints(size, "tensor size")?,
                stride: ints(stride, "tensor stride")?,
            }))
        }
        "_rebuild_parameter" => match args.first() {
            Some(inner) => tensor_ref(inner),
            None => Err(err("_rebuild_parameter without arguments")),
        },
        _ => Ok(None),
    }
}

/// The dict of tensors: the top object itself, or a `state_dict`/`model` entry in it.
fn tensor_entries(root: &Value) -> Result<Vec<(String, TensorRef)>> {
    let Value::Dict(items) = root else {
        return Err(err("the checkpoint is not a dict of tensors"));
    };
    let mut out = Vec::new();
    for (k, v) in items {
        if let (Value::Str(name), Some(t)) = (k, tensor_ref(v)?) {
            out.push((name.clone(), t));
        }
    }
    if out.is_empty() {
        for (k, v) in items {
            if matches!(k, Value::Str(s) if s == "state_dict" || s == "model") {
                return tensor_entries(v);
            }
        }
        return Err(err("the checkpoint holds no tensors"));
    }
    Ok(out)
}

fn materialise(
    entries: Vec<(String, TensorRef)>,
    storage: impl Fn(&str) -> Result<Vec<u8>>,
) -> Result<StateDict> {
    let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        if !cache.contains_key(&t.storage.key) {
            cache.insert(t.storage.key.clone(), storage(&t.storage.key)?);
        }
        let bytes = &cache[&t.storage.key];
        let elem = t.storage.dtype.size();
        // Shapes, strides and offsets come from the file: every bound is checked before
        // anything is allocated or read, so no size in it can overflow or exhaust memory.
        let past_end = || {
            err(format!(
                "tensor '{name}' reads past the end of storage {}",
                t.storage.key
            ))
        };
        if t.stride.len() != t.shape.len() {
            return Err(err(format!(
                "tensor '{name}': {} strides for {} dimensions",
                t.stride.len(),
                t.shape.len()
            )));
        }
        let count = t
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(past_end)?;
        if count == 0 {
            tensors.push((
                name,
                Tensor {
                    shape: t.shape,
                    data: Vec::new(),
                },
            ));
            continue;
        }
        let last = t
            .shape
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |at, (&d, &s)| {
                at.checked_add((d - 1).checked_mul(s)?)
            })
            .ok_or_else(past_end)?;
        let storage_elems = bytes.len() / elem;
        if last >= storage_elems || count > storage_elems {
            return Err(past_end());
        }
        let mut data = Vec::with_capacity(count);
        let mut index = vec![0usize; t.shape.len()];
        for _ in 0..count {
            let at = t.offset
                + index
                    .iter()
                    .zip(&t.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            let b = bytes.get(at * elem..(at + 1) * elem).ok_or_else(past_end)?;
            data.push(t.storage.dtype.read(b));
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        tensors.push((
            name,
            Tensor {
                shape: t.shape,
                data,
            },
        ));
    }
    Ok(StateDict { tensors })
}

fn read_legacy(bytes: &[u8]) -> Result<StateDict> {
    let mut pos = 0;
    let mut next = |what: &str| -> Result<Value> {
        let (v, used) = pickle::read(&bytes[pos..]).map_err(pickle_err(what))?;
        pos += used;
        Ok(v)
    };
    match next("magic number")? {
        Value::BigInt(b) if b == LEGACY_MAGIC => {}
        _ => return Err(err("not a torch.save file (wrong magic number)")),
    }
    match next("protocol version")? {
        Value::Int(1001) => {}
        v => return Err(err(format!("unsupported legacy protocol version {v:?}"))),
    }
    if let Value::Dict(info) = next("system info")? {
        let big_endian = info.iter().any(|(k, v)| {
            matches!(k, Value::Str(s) if s == "little_endian") && *v == Value::Bool(false)
        });
        if big_endian {
            return Err(err("big-endian checkpoints are not supported"));
        }
    }
    let root = next("state dict")?;
    let Value::List(keys) = next("storage keys")? else {
        return Err(err("storage key list is not a list"));
    };
    let entries = tensor_entries(&root)?;
    let dtypes: HashMap<&str, DType> = entries
        .iter()
        .map(|(_, t)| (t.storage.key.as_str(), t.storage.dtype))
        .collect();
    // Storages follow in the order of the key list, each as a u64 element count and data.
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else {
            return Err(err("a storage key is not a string"));
        };
        let dtype = *dtypes
            .get(key.as_str())
            .ok_or_else(|| err(format!("storage {key} is used by no tensor")))?;
        let header = bytes
            .get(pos..pos.saturating_add(8))
            .ok_or_else(|| err(format!("file ends before storage {key}")))?;
        let numel = usize::try_from(u64::from_le_bytes(header.try_into().expect("8 bytes")))
            .map_err(|_| err("storage size overflows"))?;
        let len = numel
            .checked_mul(dtype.size())
            .ok_or_else(|| err("storage size overflows"))?;
        let data = bytes
            .get(pos + 8..(pos + 8).saturating_add(len))
            .ok_or_else(|| err(format!("file ends inside storage {key} (truncated?)")))?;
        storages.insert(key, data);
        pos += 8 + len;
    }
    materialise(entries, |key| {
        storages
            .get(key)
            .map(|s| s.to_vec())
            .ok_or_else(|| err(format!("storage {key} is missing")))
    })
}

fn read_zip(bytes: &[u8]) -> Result<StateDict> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| err(format!("not a valid zip checkpoint: {e}")))?;
    let pkl_name = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("/data.pkl") || n == "data.pkl")
        .ok_or_else(|| err("zip checkpoint has no data.pkl"))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let read_entry = |archive: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>, name: &str| {
        let mut f = archive
            .by_name(name)
            .map_err(|e| err(format!("zip checkpoint: {name}: {e}")))?;
        // The sizes in a zip's headers are the file's word: nothing is reserved on them,
        // and no entry may claim more than deflate can expand the whole file to.
        let declared = f.size();
        if declared > (bytes.len() as u64).saturating_mul(1032) {
            return Err(err(format!(
                "zip checkpoint: {name} claims {declared} bytes in a {}-byte file",
                bytes.len()
            )));
        }
        let mut buf = Vec::with_capacity(declared.min(bytes.len() as u64) as usize);
        (&mut f)
            .take(declared)
            .read_to_end(&mut buf)
            .map_err(|e| err(format!("zip checkpoint: {name}: {e}")))?;
        Ok::<_, Error>(buf)
    };
    if let Ok(order) = read_entry(&mut archive, &format!("{prefix}byteorder"))
        && order != b"little"
    {
        return Err(err("big-endian checkpoints are not supported"));
    }
    let pkl = read_entry(&mut archive, &pkl_name)?;
    let (root, _) = pickle::read(&pkl).map_err(pickle_err("data.pkl"))?;
    let entries = tensor_entries(&root)?;
    let archive = std::cell::RefCell::new(archive);
    materialise(entries, |key| {
        read_entry(&mut archive.borrow_mut(), &format!("{prefix}data/{key}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats_convert_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
