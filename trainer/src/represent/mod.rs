//! Looking inside the representation: what `scion embed`, `similar`, `activations`,
//! `filters`, `probe`, `project` and `data audit` compute.
//!
//! - [`extractor`]: any tensor of a model for a list of images, through the cached feature
//!   pipeline of `scion train`;
//! - [`embedding`]: those vectors on disk (safetensors), sharded and merged;
//! - [`knn`]: exact nearest neighbours by blocked matrix products;
//! - [`pca`], [`audit`], [`probe`], [`filters`]: what is computed from them.

pub mod audit;
pub mod embedding;
pub mod extractor;
pub mod filters;
pub mod knn;
pub mod pca;
pub mod probe;
