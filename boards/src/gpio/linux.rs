//! GPIO lines on Linux through the GPIO character device (`/dev/gpiochipN`), as
//! `linux-embedded-hal` pins. A line is named by header pin (through the board profile) or
//! by chip and offset; chips are found by label, name or path, because chip numbers move
//! between kernels while labels stay.

use std::path::PathBuf;

use gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::CdevPin;

use crate::profile::BoardProfile;

/// Which line to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineSpec {
    /// A physical pin of the board's 40-pin header.
    HeaderPin(u8),
    /// A chip (label like `tegra234-gpio`, name like `gpiochip0`, or a `/dev` path) and line.
    ChipLine {
        /// Label, name or path of the chip.
        chip: String,
        /// Line offset within the chip.
        line: u32,
    },
}

impl std::str::FromStr for LineSpec {
    type Err = String;

    /// `"7"` (header pin 7), or `"CHIP:LINE"` with a chip label, name or `/dev` path:
    /// `"tegra234-gpio:144"`, `"gpiochip0:17"`, `"/dev/gpiochip4:17"`.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(pin) = text.parse::<u8>() {
            return Ok(LineSpec::HeaderPin(pin));
        }
        let bad = || {
            format!(
                "'{text}' is neither a header pin (e.g. \"7\") nor CHIP:LINE \
                 (e.g. \"tegra234-gpio:144\", \"gpiochip0:17\")"
            )
        };
        let (chip, line) = text.rsplit_once(':').ok_or_else(bad)?;
        let line = line.trim().parse().map_err(|_| bad())?;
        if chip.trim().is_empty() {
            return Err(bad());
        }
        Ok(LineSpec::ChipLine {
            chip: chip.trim().to_string(),
            line,
        })
    }
}

impl std::fmt::Display for LineSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineSpec::HeaderPin(pin) => write!(f, "header pin {pin}"),
            LineSpec::ChipLine { chip, line } => write!(f, "{chip} line {line}"),
        }
    }
}

/// What went wrong with a GPIO line, for code that reacts to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpioErrorKind {
    /// The header pin is not a GPIO on this board (or the board's header is unknown).
    NotOnHeader,
    /// No GPIO chip with that label, name or path.
    NoSuchChip,
    /// The chip has fewer lines.
    NoSuchLine,
    /// Another consumer holds the line.
    Busy,
    /// Not allowed (add the user to the `gpio` group).
    Permission,
    /// Any other I/O error.
    Io,
}

/// A GPIO error naming the line and what to do.
#[derive(Debug, thiserror::Error)]
#[error("GPIO {line}: {message}")]
pub struct GpioError {
    kind: GpioErrorKind,
    line: String,
    message: String,
}

impl GpioError {
    fn new(kind: GpioErrorKind, line: &LineSpec, message: impl Into<String>) -> Self {
        GpioError {
            kind,
            line: line.to_string(),
            message: message.into(),
        }
    }

    /// What kind of error this is.
    pub fn kind(&self) -> GpioErrorKind {
        self.kind
    }
}

/// Direction and initial level of a requested line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// An input.
    Input,
    /// An output starting at this level (true: high).
    Output(bool),
}

/// Request `spec` as `direction` for `consumer` (shown by `gpioinfo`), resolving header pins
/// through `profile`.
pub fn request_line(
    spec: &LineSpec,
    profile: &BoardProfile,
    direction: Direction,
    consumer: &str,
) -> Result<CdevPin, GpioError> {
    let (chip_name, offset) = match spec {
        LineSpec::HeaderPin(pin) => {
            let pin = profile.header_pin(*pin).ok_or_else(|| {
                let pins: Vec<String> = profile.header.iter().map(|p| p.pin.to_string()).collect();
                GpioError::new(
                    GpioErrorKind::NotOnHeader,
                    spec,
                    if pins.is_empty() {
                        format!(
                            "the {} profile has no known 40-pin header; give chip and line instead",
                            profile.name
                        )
                    } else {
                        format!(
                            "not a GPIO on the {} header (GPIO pins: {})",
                            profile.name,
                            pins.join(", ")
                        )
                    },
                )
            })?;
            (pin.chip.to_string(), pin.line)
        }
        LineSpec::ChipLine { chip, line } => (chip.clone(), *line),
    };
    let mut chip = find_chip(&chip_name, spec)?;
    if offset >= chip.num_lines() {
        return Err(GpioError::new(
            GpioErrorKind::NoSuchLine,
            spec,
            format!(
                "{} ({}) has lines 0..{}, not {offset}",
                chip.name(),
                chip.label(),
                chip.num_lines()
            ),
        ));
    }
    let io = |e: gpio_cdev::Error| GpioError::new(GpioErrorKind::Io, spec, e.to_string());
    let line = chip.get_line(offset).map_err(io)?;
    let info = line.info().map_err(io)?;
    if info.is_used() {
        return Err(GpioError::new(
            GpioErrorKind::Busy,
            spec,
            format!(
                "busy: {} line {offset} is held by {:?}",
                chip.name(),
                info.consumer().unwrap_or("the kernel")
            ),
        ));
    }
    let (flags, value) = match direction {
        Direction::Input => (LineRequestFlags::INPUT, 0),
        Direction::Output(high) => (LineRequestFlags::OUTPUT, u8::from(high)),
    };
    let handle = line.request(flags, value, consumer).map_err(|e| {
        let text = e.to_string();
        let kind = if text.contains("EBUSY") || text.contains("busy") {
            GpioErrorKind::Busy
        } else {
            GpioErrorKind::Io
        };
        GpioError::new(kind, spec, text)
    })?;
    CdevPin::new(handle).map_err(io)
}

/// The chip whose label, name or path is `wanted`.
fn find_chip(wanted: &str, spec: &LineSpec) -> Result<Chip, GpioError> {
    if wanted.starts_with('/') {
        return Chip::new(wanted).map_err(|e| open_error(PathBuf::from(wanted), e, spec));
    }
    let mut seen = Vec::new();
    let paths = gpio_chip_paths();
    for path in &paths {
        let chip = match Chip::new(path) {
            Ok(chip) => chip,
            Err(e) => return Err(open_error(path.clone(), e, spec)),
        };
        if chip.label() == wanted || chip.name() == wanted {
            return Ok(chip);
        }
        seen.push(format!("{} ({})", chip.name(), chip.label()));
    }
    Err(GpioError::new(
        GpioErrorKind::NoSuchChip,
        spec,
        if seen.is_empty() {
            format!("no GPIO chip labelled {wanted:?}: this machine has no /dev/gpiochip*")
        } else {
            format!(
                "no GPIO chip labelled {wanted:?} (found: {})",
                seen.join(", ")
            )
        },
    ))
}

fn gpio_chip_paths() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("gpiochip"))
        })
        .collect();
    paths.sort();
    paths
}

fn open_error(path: PathBuf, e: gpio_cdev::Error, spec: &LineSpec) -> GpioError {
    let text = e.to_string();
    let kind = if text.contains("ermission") || text.contains("EACCES") {
        GpioErrorKind::Permission
    } else if text.contains("No such file") || text.contains("ENOENT") {
        GpioErrorKind::NoSuchChip
    } else {
        GpioErrorKind::Io
    };
    let hint = if kind == GpioErrorKind::Permission {
        " (add the service user to the `gpio` group, or run as root)"
    } else {
        ""
    };
    GpioError::new(kind, spec, format!("{}: {text}{hint}", path.display()))
}
