//! Which board is this? Read from the device tree (`/proc/device-tree/compatible` first,
//! `model` as a fallback) and `/etc/nv_tegra_release`, all under a root directory so tests
//! (and a board's image mounted elsewhere) can be inspected without being that board.

use std::path::Path;

use serde::Serialize;

use crate::profile::{BoardId, BoardProfile, profile};

/// Device-tree `compatible` entries (or module part numbers inside them) per board, most
/// specific first. From NVIDIA's `Jetson.GPIO` and the Raspberry Pi device trees.
const COMPATIBLE: &[(BoardId, &[&str])] = &[
    // Orin modules sit on several carriers, so match the module part number.
    (BoardId::JetsonAgxOrin, &["p3701-"]),
    (
        BoardId::JetsonOrinNano,
        &["p3767-0003", "p3767-0004", "p3767-0005"],
    ),
    (BoardId::JetsonOrinNx, &["p3767-0000", "p3767-0001"]),
    (BoardId::JetsonXavierNx, &["p3668-"]),
    (
        BoardId::JetsonAgxXavier,
        &[
            "nvidia,p2972-0000",
            "nvidia,p2972-0006",
            "nvidia,jetson-xavier",
            "nvidia,galen-industrial",
        ],
    ),
    (
        BoardId::JetsonTx2,
        &[
            "nvidia,p2771-0000",
            "nvidia,p2771-0888",
            "nvidia,p3489-0000",
            "nvidia,lightning",
            "nvidia,quill",
            "nvidia,storm",
        ],
    ),
    (
        BoardId::JetsonNano,
        &[
            "nvidia,p3450-0000",
            "nvidia,p3450-0002",
            "nvidia,p3541-0000",
            "nvidia,jetson-nano",
        ],
    ),
    (
        BoardId::RaspberryPi5,
        &["raspberrypi,5-model-b", "brcm,bcm2712"],
    ),
    (
        BoardId::RaspberryPi4,
        &["raspberrypi,4-model-b", "brcm,bcm2711"],
    ),
];

/// Substrings of `/proc/device-tree/model`, for device trees without a known compatible.
const MODEL: &[(BoardId, &str)] = &[
    (BoardId::JetsonAgxOrin, "AGX Orin"),
    (BoardId::JetsonOrinNano, "Orin Nano"),
    (BoardId::JetsonOrinNx, "Orin NX"),
    (BoardId::JetsonXavierNx, "Xavier NX"),
    (BoardId::JetsonAgxXavier, "AGX Xavier"),
    (BoardId::JetsonTx2, "TX2"),
    (BoardId::JetsonNano, "Jetson Nano"),
    (BoardId::RaspberryPi5, "Raspberry Pi 5"),
    (BoardId::RaspberryPi4, "Raspberry Pi 4"),
];

/// The L4T (Jetson Linux) release, from `/etc/nv_tegra_release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L4tRelease {
    /// Major release, e.g. 36.
    pub major: u32,
    /// Revision, e.g. "3.0".
    pub revision: String,
}

impl L4tRelease {
    /// Parse the first line of `/etc/nv_tegra_release`:
    /// `# R36 (release), REVISION: 3.0, GCID: …, BOARD: generic, EABI: aarch64, DATE: …`.
    pub fn parse(text: &str) -> Option<Self> {
        let line = text.lines().next()?.trim_start_matches('#').trim();
        let major = line.strip_prefix('R')?.split_whitespace().next()?;
        let revision = line
            .split(',')
            .find_map(|field| field.trim().strip_prefix("REVISION:"))?
            .trim();
        Some(L4tRelease {
            major: major.parse().ok()?,
            revision: revision.to_string(),
        })
    }

    /// The JetPack generation that ships this release.
    pub fn jetpack(&self) -> &'static str {
        match self.major {
            32 => "JetPack 4",
            35 => "JetPack 5",
            36 => "JetPack 6",
            _ => "JetPack (unknown)",
        }
    }
}

impl std::fmt::Display for L4tRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "R{}.{} ({})", self.major, self.revision, self.jetpack())
    }
}

/// What detection found, and the profile it chose.
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    /// The chosen profile (generic when nothing matched).
    pub profile: BoardProfile,
    /// `/proc/device-tree/model`, if present.
    pub model: Option<String>,
    /// `/proc/device-tree/compatible` entries.
    pub compatible: Vec<String>,
    /// The Jetson Linux release, if this is a Jetson.
    pub l4t: Option<L4tRelease>,
    /// Memory the kernel reports (`/proc/meminfo`), GiB.
    pub memory_gib: Option<f64>,
    /// Why the result may be wrong (unrecognised board), for a warning.
    pub warning: Option<String>,
}

/// Detect the board whose files live under `root` ("/" on the board itself); `arch` picks
/// the generic profile (`std::env::consts::ARCH`).
pub fn detect(root: &Path, arch: &str) -> Detection {
    let read = |relative: &str| std::fs::read(root.join(relative)).ok();
    let strings = |bytes: Vec<u8>| -> Vec<String> {
        bytes
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).trim().to_string())
            .collect()
    };
    let model = read("proc/device-tree/model").and_then(|b| strings(b).into_iter().next());
    let compatible = read("proc/device-tree/compatible")
        .map(strings)
        .unwrap_or_default();
    let l4t =
        read("etc/nv_tegra_release").and_then(|b| L4tRelease::parse(&String::from_utf8_lossy(&b)));
    let memory_gib = read("proc/meminfo").and_then(|b| meminfo_gib(&String::from_utf8_lossy(&b)));

    let by_compatible = COMPATIBLE.iter().find_map(|(id, patterns)| {
        compatible
            .iter()
            .any(|c| patterns.iter().any(|p| c.contains(p)))
            .then_some(*id)
    });
    let by_model = || {
        let model = model.as_deref()?;
        MODEL
            .iter()
            .find_map(|(id, needle)| model.contains(needle).then_some(*id))
    };
    let (id, warning) =
        match by_compatible.or_else(by_model) {
            Some(id) => (id, None),
            None => {
                let generic = match arch {
                    "x86_64" => BoardId::GenericX86_64,
                    "aarch64" => BoardId::GenericAarch64,
                    _ => BoardId::Generic,
                };
                // A plain PC has no device tree: nothing to warn about.
                let warning = (model.is_some() || !compatible.is_empty() || l4t.is_some()).then(|| {
                format!(
                    "unrecognised board (model {:?}, compatible [{}]{}): using the generic {arch} \
                     profile; name GPIO lines by chip and line, not by header pin",
                    model.as_deref().unwrap_or("?"),
                    compatible.join(", "),
                    l4t.as_ref().map(|r| format!(", L4T {r}")).unwrap_or_default(),
                )
            });
                (generic, warning)
            }
        };
    let mut profile = profile(id);
    narrow_by_module(&mut profile, &compatible);
    Detection {
        profile,
        model,
        compatible,
        l4t,
        memory_gib,
        warning,
    }
}

/// Module part numbers that pin down memory and DLA count within a family.
fn narrow_by_module(profile: &mut BoardProfile, compatible: &[String]) {
    let has = |part: &str| compatible.iter().any(|c| c.contains(part));
    let (memory, dla): (&'static [u16], Option<u8>) = match profile.id {
        BoardId::JetsonOrinNx if has("p3767-0000") => (&[16], Some(2)),
        BoardId::JetsonOrinNx if has("p3767-0001") => (&[8], Some(1)),
        BoardId::JetsonOrinNano if has("p3767-0004") => (&[4], None),
        BoardId::JetsonOrinNano if has("p3767-0003") || has("p3767-0005") => (&[8], None),
        BoardId::JetsonAgxOrin if has("p3701-0005") || has("p3701-0008") => (&[64], None),
        BoardId::JetsonAgxOrin if has("p3701-0000") || has("p3701-0004") => (&[32], None),
        _ => return,
    };
    profile.memory_gib = memory;
    if let Some(dla) = dla {
        profile.dla_cores = dla;
    }
}

fn meminfo_gib(text: &str) -> Option<f64> {
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / (1024.0 * 1024.0))
}
