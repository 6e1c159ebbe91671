//! scion-trainer: everything that learns. So far: labelled image folders ([`dataset`]),
//! their linting ([`lint`]), IDX conversion ([`idx`]) and cached backbone features
//! ([`features`]).

pub mod dataset;
pub mod features;
pub mod idx;
pub mod lint;
