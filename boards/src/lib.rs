//! `scion-boards`: what board scion-edge runs on, and the hardware around it.
//!
//! - [`detect`]: which board this is (device tree, L4T release) and its [`profile`]: GPU,
//!   accelerators, engine order and precision, CSI camera pipeline, 40-pin header map.
//! - [`gpio`]: trigger outputs, status LEDs and capture buttons as generic `embedded-hal`
//!   drivers, and Linux GPIO lines (character device) to run them on.
//! - [`uart`]: the reconnecting UART link that speaks `scion-link` to a microcontroller.

pub mod detect;
pub mod gpio;
mod pins;
pub mod profile;
pub mod uart;

pub use detect::{Detection, L4tRelease, detect};
pub use profile::{BoardId, BoardProfile, HeaderPin, Precision, profile};
