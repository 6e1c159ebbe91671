//! scion-trainer: everything that learns. The pipeline of `scion train` ([`train`]) in the
//! order it runs:
//!
//! - [`dataset`]: labelled image folders and their split ([`lint`] checks them, [`idx`]
//!   imports Fashion-MNIST);
//! - [`backbone`]: the frozen network and its feature tensor;
//! - [`loader`] + [`features`]: worker threads turn images into views, the backbone into
//!   features, cached on disk;
//! - [`linear`]: the linear head solved to its optimum (L-BFGS, `C` chosen on validation);
//!   [`head`] + [`fit`]: MLP heads and fine-tuning trained with burn on a [`device`];
//! - [`net`] + [`finetune`]: the backbone's own layers, interpreted from its ONNX graph,
//!   trained with the head (`--unfreeze`, `--from-scratch`);
//! - [`calibrate`] + [`unknown`]: calibrated probabilities and the "unknown" rule;
//! - [`metrics`] + [`plots`]: how well it does;
//! - [`export`] + [`score`]: the grafted ONNX model and its parity check on every engine.
//!
//! And what looks inside a representation ([`represent`], pictured by [`sheets`]):
//! embeddings, nearest neighbours, top-activating images, filters, probes, data audits.

pub mod backbone;
pub mod calibrate;
pub mod captures;
pub mod dataset;
pub mod device;
pub mod experiment;
pub mod export;
pub mod features;
pub mod finetune;
pub mod fit;
pub mod head;
pub mod idx;
pub mod linear;
pub mod lint;
pub mod loader;
pub mod metrics;
pub mod net;
pub mod plots;
pub mod quantize;
pub mod represent;
pub mod score;
pub mod sheets;
pub mod train;
pub mod unknown;
