//! scion-edge: everything that runs on the device. One preprocessing function driven by the
//! model card, engines behind one trait (ONNX Runtime, tract), post-processing, and the
//! offline batch classifier. No training dependencies.

pub mod augment;
pub mod check_images;
pub mod classifier;
pub mod classify;
pub mod engine;
pub mod import;
pub mod logging;
pub mod model;
pub mod pipeline;
pub mod postprocess;
pub mod preprocess;
pub mod rng;
pub mod serve;
pub mod service;
pub mod source;

pub use classifier::Classifier;
pub use model::{ContractOverrides, Model};
