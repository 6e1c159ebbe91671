//! The scion model format: ONNX protobuf types, load/save with limits, graph queries,
//! graph patches, the model card, and importers that build real pretrained backbones.
//!
//! This crate does no inference: engines live in `scion-edge`. Everything here is a
//! plain transformation of a [`ModelProto`], so it can run on a workstation or a device.

#[allow(missing_docs, clippy::all)]
/// Types generated once by `prost-build` from `proto/onnx.proto3` (see `proto/README.md`),
/// committed so that nobody needs `protoc` to build scion.
pub mod pb;

pub mod blocks;
pub mod builder;
pub mod card;
pub mod distance;
mod error;
pub mod features;
pub mod graph;
pub mod import;
pub mod infer;
pub mod io;
pub mod normalize;
pub mod patch;
pub mod quantize;
pub mod zoo;

pub use card::ModelCard;
pub use error::{Error, ErrorKind, Result};
pub use pb::ModelProto;
