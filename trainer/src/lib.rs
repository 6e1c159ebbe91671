//! scion-trainer: everything that learns. So far: labelled image folders ([`dataset`]),
//! their linting ([`lint`]), IDX conversion ([`idx`]) and cached backbone features
//! ([`features`]).

pub mod backbone;
pub mod dataset;
pub mod device;
pub mod export;
pub mod features;
pub mod fit;
pub mod head;
pub mod idx;
pub mod lint;
pub mod loader;
pub mod metrics;
pub mod plots;
pub mod score;
pub mod train;
