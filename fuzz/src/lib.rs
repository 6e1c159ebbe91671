//! Fuzz targets of scion (see README.md): one body per parser in [`entries`], a
//! structure-aware ONNX graph in [`graph`].

pub mod entries;
pub mod graph;
pub mod http;
#[cfg(feature = "trainer")]
pub mod trainer_entries;
