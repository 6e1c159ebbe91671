//! GPIO: generic drivers for the actions (trigger, status LED, capture button) and the Linux
//! lines they run on.

pub mod actions;
pub mod linux;
