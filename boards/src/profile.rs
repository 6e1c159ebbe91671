//! What each supported board is: its GPU, memory, accelerators, the engines and precision
//! worth trying first, its camera pipeline, and its 40-pin header.
//!
//! The numbers come from the vendors' documentation: NVIDIA's module data sheets for the GPU
//! and DLA figures, NVIDIA's `Jetson.GPIO` pin tables (`gpio_pin_data.py`) for the header,
//! and the Raspberry Pi pinout for BCM numbering. Header lines are given as (chip label,
//! line offset) because `/dev/gpiochipN` numbering changes between kernels while labels do
//! not.

use serde::Serialize;

use crate::pins;

/// The boards scion knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(into = "&'static str")]
pub enum BoardId {
    /// Jetson Nano (Tegra X1, L4T R32).
    JetsonNano,
    /// Jetson TX2 (Tegra X2 / Parker).
    JetsonTx2,
    /// Jetson Xavier NX.
    JetsonXavierNx,
    /// Jetson AGX Xavier.
    JetsonAgxXavier,
    /// Jetson Orin Nano.
    JetsonOrinNano,
    /// Jetson Orin NX.
    JetsonOrinNx,
    /// Jetson AGX Orin.
    JetsonAgxOrin,
    /// Raspberry Pi 4 Model B.
    RaspberryPi4,
    /// Raspberry Pi 5.
    RaspberryPi5,
    /// Any other x86-64 machine.
    GenericX86_64,
    /// Any other aarch64 machine.
    GenericAarch64,
    /// Any other machine.
    Generic,
}

impl BoardId {
    /// Every board, for listings and parsing.
    pub const ALL: [BoardId; 12] = [
        BoardId::JetsonNano,
        BoardId::JetsonTx2,
        BoardId::JetsonXavierNx,
        BoardId::JetsonAgxXavier,
        BoardId::JetsonOrinNano,
        BoardId::JetsonOrinNx,
        BoardId::JetsonAgxOrin,
        BoardId::RaspberryPi4,
        BoardId::RaspberryPi5,
        BoardId::GenericX86_64,
        BoardId::GenericAarch64,
        BoardId::Generic,
    ];

    /// The id as configuration files spell it (`jetson-orin-nano`).
    pub fn as_str(self) -> &'static str {
        match self {
            BoardId::JetsonNano => "jetson-nano",
            BoardId::JetsonTx2 => "jetson-tx2",
            BoardId::JetsonXavierNx => "jetson-xavier-nx",
            BoardId::JetsonAgxXavier => "jetson-agx-xavier",
            BoardId::JetsonOrinNano => "jetson-orin-nano",
            BoardId::JetsonOrinNx => "jetson-orin-nx",
            BoardId::JetsonAgxOrin => "jetson-agx-orin",
            BoardId::RaspberryPi4 => "raspberry-pi4",
            BoardId::RaspberryPi5 => "raspberry-pi5",
            BoardId::GenericX86_64 => "generic-x86-64",
            BoardId::GenericAarch64 => "generic-aarch64",
            BoardId::Generic => "generic",
        }
    }
}

impl std::fmt::Display for BoardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BoardId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        BoardId::ALL
            .into_iter()
            .find(|id| id.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = BoardId::ALL.iter().map(|id| id.as_str()).collect();
                format!("unknown board '{text}' (known: {})", known.join(", "))
            })
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "FP32",
            Precision::Fp16 => "FP16",
            Precision::Int8 => "INT8",
        })
    }
}

impl From<BoardId> for &'static str {
    fn from(id: BoardId) -> Self {
        id.as_str()
    }
}

/// Numeric precision an engine should build for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Full precision: CPUs, or GPUs without fast half floats.
    #[default]
    Fp32,
    /// Half precision: every Jetson GPU.
    Fp16,
    /// 8-bit integers, from a model quantized with QDQ nodes: Volta and later (tensor
    /// cores, DLA).
    Int8,
}

impl Precision {
    /// The lower-case name used in configs, flags and cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "fp32" => Ok(Precision::Fp32),
            "fp16" => Ok(Precision::Fp16),
            "int8" => Ok(Precision::Int8),
            _ => Err(format!(
                "unknown precision '{text}' (expected fp32, fp16 or int8)"
            )),
        }
    }
}

/// The CUDA GPU of a board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gpu {
    /// Architecture name.
    pub architecture: &'static str,
    /// CUDA compute capability, e.g. (8, 7).
    pub compute_capability: (u8, u8),
    /// CUDA cores (the largest module of the family where they differ).
    pub cuda_cores: u16,
}

/// One GPIO-capable pin of the 40-pin header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HeaderPin {
    /// Physical pin number on the header (1..=40).
    pub pin: u8,
    /// The label of the gpiochip the line belongs to (`/sys/bus/gpio/devices/*/label`).
    pub chip: &'static str,
    /// The line offset within that chip.
    pub line: u32,
    /// The SoC's name for the pin (Tegra port name or BCM GPIO number).
    pub soc_name: &'static str,
    /// The pin's default function on the header, for wiring notes.
    pub function: &'static str,
}

/// Everything scion needs to know about a board.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoardProfile {
    /// Which board.
    pub id: BoardId,
    /// Human name.
    pub name: &'static str,
    /// The system on chip.
    pub soc: &'static str,
    /// The CUDA GPU, if any.
    pub gpu: Option<Gpu>,
    /// Memory sizes the board ships with, GiB.
    pub memory_gib: &'static [u16],
    /// NVDLA deep-learning accelerator cores (TensorRT can place layers on them).
    pub dla_cores: u8,
    /// Engines to try, best first (names as `scion-edge --engine` takes them).
    pub engine_order: &'static [&'static str],
    /// The precision worth building TensorRT engines for when the user names none. INT8
    /// applies only to models quantized with QDQ nodes; for any other
    /// model a board with INT8 builds FP16, its next best.
    pub precision: Precision,
    /// A `gst://` source for the board's CSI camera (scion adds the conversion to RGB).
    pub csi_source: Option<&'static str>,
    /// The 40-pin header's GPIO lines (empty when the board has no such header).
    pub header: &'static [HeaderPin],
}

impl BoardProfile {
    /// The header pin with this physical number, if it is a GPIO on this board.
    pub fn header_pin(&self, pin: u8) -> Option<&HeaderPin> {
        self.header.iter().find(|p| p.pin == pin)
    }
}

const GPU_FIRST: &[&str] = &["tensorrt", "cuda", "ort-cpu", "tract"];
const CPU_ORDER: &[&str] = &["ort-cpu", "tract"];

/// Argus (the Jetson camera stack) into system memory as BGRx.
const JETSON_CSI: &str = "gst://nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! nvvidconv ! video/x-raw,format=BGRx";
/// libcamera, the Raspberry Pi camera stack since Bullseye.
const RPI_CSI: &str = "gst://libcamerasrc ! video/x-raw,width=1280,height=720,framerate=30/1";

const MAXWELL: Gpu = Gpu {
    architecture: "Maxwell",
    compute_capability: (5, 3),
    cuda_cores: 128,
};
const PASCAL: Gpu = Gpu {
    architecture: "Pascal",
    compute_capability: (6, 2),
    cuda_cores: 256,
};
const fn volta(cuda_cores: u16) -> Gpu {
    Gpu {
        architecture: "Volta",
        compute_capability: (7, 2),
        cuda_cores,
    }
}
const fn ampere(cuda_cores: u16) -> Gpu {
    Gpu {
        architecture: "Ampere",
        compute_capability: (8, 7),
        cuda_cores,
    }
}

/// The profile of a board.
pub fn profile(id: BoardId) -> BoardProfile {
    let jetson = |name, soc, gpu, memory_gib, dla_cores, precision, header| BoardProfile {
        id,
        name,
        soc,
        gpu: Some(gpu),
        memory_gib,
        dla_cores,
        engine_order: GPU_FIRST,
        precision,
        csi_source: Some(JETSON_CSI),
        header,
    };
    let cpu_only = |name, soc, csi_source, header| BoardProfile {
        id,
        name,
        soc,
        gpu: None,
        memory_gib: &[],
        dla_cores: 0,
        engine_order: CPU_ORDER,
        precision: Precision::Fp32,
        csi_source,
        header,
    };
    match id {
        // Maxwell and Pascal have fast FP16 but no INT8 tensor cores.
        BoardId::JetsonNano => jetson(
            "NVIDIA Jetson Nano",
            "Tegra X1 (tegra210)",
            MAXWELL,
            &[2, 4],
            0,
            Precision::Fp16,
            pins::JETSON_NANO,
        ),
        BoardId::JetsonTx2 => jetson(
            "NVIDIA Jetson TX2",
            "Tegra X2 (tegra186)",
            PASCAL,
            &[4, 8],
            0,
            Precision::Fp16,
            pins::JETSON_TX2,
        ),
        BoardId::JetsonXavierNx => jetson(
            "NVIDIA Jetson Xavier NX",
            "Xavier (tegra194)",
            volta(384),
            &[8, 16],
            2,
            Precision::Int8,
            pins::JETSON_XAVIER_NX,
        ),
        BoardId::JetsonAgxXavier => jetson(
            "NVIDIA Jetson AGX Xavier",
            "Xavier (tegra194)",
            volta(512),
            &[8, 16, 32, 64],
            2,
            Precision::Int8,
            pins::JETSON_AGX_XAVIER,
        ),
        BoardId::JetsonOrinNano => jetson(
            "NVIDIA Jetson Orin Nano",
            "Orin (tegra234)",
            ampere(1024),
            &[4, 8],
            0,
            Precision::Int8,
            pins::JETSON_ORIN_NX_NANO,
        ),
        BoardId::JetsonOrinNx => jetson(
            "NVIDIA Jetson Orin NX",
            "Orin (tegra234)",
            ampere(1024),
            &[8, 16],
            2,
            Precision::Int8,
            pins::JETSON_ORIN_NX_NANO,
        ),
        BoardId::JetsonAgxOrin => jetson(
            "NVIDIA Jetson AGX Orin",
            "Orin (tegra234)",
            ampere(2048),
            &[32, 64],
            2,
            Precision::Int8,
            pins::JETSON_AGX_ORIN,
        ),
        BoardId::RaspberryPi4 => BoardProfile {
            memory_gib: &[1, 2, 4, 8],
            ..cpu_only(
                "Raspberry Pi 4 Model B",
                "BCM2711",
                Some(RPI_CSI),
                pins::RASPBERRY_PI_4,
            )
        },
        BoardId::RaspberryPi5 => BoardProfile {
            memory_gib: &[2, 4, 8, 16],
            ..cpu_only(
                "Raspberry Pi 5",
                "BCM2712 (GPIO through RP1)",
                Some(RPI_CSI),
                pins::RASPBERRY_PI_5,
            )
        },
        // Unknown machines may have a CUDA GPU: try it, the engine policy falls back.
        BoardId::GenericX86_64 => BoardProfile {
            engine_order: GPU_FIRST,
            ..cpu_only("Generic x86-64", "x86-64", None, &[])
        },
        BoardId::GenericAarch64 => BoardProfile {
            engine_order: GPU_FIRST,
            ..cpu_only("Generic aarch64", "aarch64", None, &[])
        },
        BoardId::Generic => cpu_only("Generic", std::env::consts::ARCH, None, &[]),
    }
}
