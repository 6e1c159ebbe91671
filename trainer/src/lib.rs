//! scion-trainer: everything that learns. So far: labelled image folders ([`dataset`]),
//! their linting ([`lint`]) and IDX conversion ([`idx`]).

pub mod dataset;
pub mod idx;
pub mod lint;
