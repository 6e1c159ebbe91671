//! What the GPU execution providers are asked to do, as data. These pure functions turn the
//! settings into the exact key/value strings ONNX Runtime receives, so tests check the
//! strings, `scion-edge info` prints them, and registration only copies them over.

use std::path::PathBuf;
use std::str::FromStr;

pub use scion_boards::Precision;

/// cuDNN's convolution algorithm search (`cudnn_conv_algo_search`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvAlgoSearch {
    /// Time every algorithm on the first run: slowest start, fastest steady state.
    #[default]
    Exhaustive,
    /// cuDNN's heuristics: quick start, usually close.
    Heuristic,
    /// The default algorithm, no search: for memory-starved boards.
    Default,
}

impl ConvAlgoSearch {
    /// The value ONNX Runtime's CUDA provider takes.
    pub fn ort_value(self) -> &'static str {
        match self {
            ConvAlgoSearch::Exhaustive => "EXHAUSTIVE",
            ConvAlgoSearch::Heuristic => "HEURISTIC",
            ConvAlgoSearch::Default => "DEFAULT",
        }
    }
}

impl FromStr for ConvAlgoSearch {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "exhaustive" => Ok(ConvAlgoSearch::Exhaustive),
            "heuristic" => Ok(ConvAlgoSearch::Heuristic),
            "default" => Ok(ConvAlgoSearch::Default),
            _ => Err(format!(
                "unknown cuDNN search '{text}' (expected exhaustive, heuristic or default)"
            )),
        }
    }
}

/// How the CUDA memory arena grows (`arena_extend_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArenaExtend {
    /// Double each time: few allocations, may overshoot.
    #[default]
    NextPowerOfTwo,
    /// Grow by what is asked: tight, for boards that share memory with the CPU.
    SameAsRequested,
}

impl ArenaExtend {
    /// The value ONNX Runtime's CUDA provider takes.
    pub fn ort_value(self) -> &'static str {
        match self {
            ArenaExtend::NextPowerOfTwo => "kNextPowerOfTwo",
            ArenaExtend::SameAsRequested => "kSameAsRequested",
        }
    }
}

impl FromStr for ArenaExtend {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().replace('-', "_").as_str() {
            "next_power_of_two" => Ok(ArenaExtend::NextPowerOfTwo),
            "same_as_requested" => Ok(ArenaExtend::SameAsRequested),
            _ => Err(format!(
                "unknown arena strategy '{text}' (expected next_power_of_two or same_as_requested)"
            )),
        }
    }
}

/// Settings of the CUDA and TensorRT providers that do not depend on the model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuOptions {
    /// CUDA device ordinal.
    pub device_id: u32,
    /// Put what TensorRT can on this DLA core (Xavier and Orin NX/AGX have two).
    pub dla_core: Option<u32>,
    /// TensorRT's builder workspace, MiB (none: TensorRT's default, the whole device).
    pub workspace_mb: Option<u64>,
    /// cuDNN's convolution algorithm search.
    pub conv_algo_search: ConvAlgoSearch,
    /// How the CUDA arena grows.
    pub arena_extend: ArenaExtend,
    /// Cap on the CUDA arena, MiB (none: no cap).
    pub gpu_mem_limit_mb: Option<u64>,
}

/// Where TensorRT keeps the engines and timings of one cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDirs {
    /// The entry's folder: engines built for exactly one key.
    pub engines: PathBuf,
    /// TensorRT's timing cache, shared by the models on one GPU and TensorRT version.
    pub timing: PathBuf,
}

const MIB: u64 = 1024 * 1024;

fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_string()
}

/// The CUDA provider's options.
pub fn cuda_options(gpu: &GpuOptions) -> Vec<(&'static str, String)> {
    let mut options = vec![
        ("device_id", gpu.device_id.to_string()),
        (
            "cudnn_conv_algo_search",
            gpu.conv_algo_search.ort_value().to_string(),
        ),
        (
            "arena_extend_strategy",
            gpu.arena_extend.ort_value().to_string(),
        ),
    ];
    if let Some(mb) = gpu.gpu_mem_limit_mb {
        options.push(("gpu_mem_limit", (mb * MIB).to_string()));
    }
    options
}

/// The TensorRT provider's options for building at `precision`, caching in `cache` (none:
/// every start builds anew).
pub fn tensorrt_options(
    gpu: &GpuOptions,
    precision: Precision,
    cache: Option<&CacheDirs>,
) -> Vec<(&'static str, String)> {
    let mut options = vec![
        ("device_id", gpu.device_id.to_string()),
        // INT8 engines keep FP16 for the layers without INT8 kernels.
        ("trt_fp16_enable", flag(precision != Precision::Fp32)),
        ("trt_int8_enable", flag(precision == Precision::Int8)),
    ];
    if let Some(core) = gpu.dla_core {
        options.push(("trt_dla_enable", flag(true)));
        options.push(("trt_dla_core", core.to_string()));
    }
    if let Some(mb) = gpu.workspace_mb {
        options.push(("trt_max_workspace_size", (mb * MIB).to_string()));
    }
    match cache {
        Some(dirs) => options.extend([
            ("trt_engine_cache_enable", flag(true)),
            ("trt_engine_cache_path", dirs.engines.display().to_string()),
            ("trt_engine_cache_prefix", "scion".to_string()),
            ("trt_timing_cache_enable", flag(true)),
            ("trt_timing_cache_path", dirs.timing.display().to_string()),
        ]),
        None => options.push(("trt_engine_cache_enable", flag(false))),
    }
    options
}

/// `key=value` pairs on one line, for logs and `info`.
pub fn describe(options: &[(&'static str, String)]) -> String {
    options
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(options: &[(&'static str, String)]) -> Vec<(String, String)> {
        options
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn expect(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tensorrt_fp16_with_a_cache_on_a_dla_core() {
        let gpu = GpuOptions {
            device_id: 0,
            dla_core: Some(1),
            workspace_mb: Some(512),
            ..GpuOptions::default()
        };
        let dirs = CacheDirs {
            engines: "/var/cache/scion/engines/0123456789ab-k".into(),
            timing: "/var/cache/scion/engines/timing-t".into(),
        };
        assert_eq!(
            pairs(&tensorrt_options(&gpu, Precision::Fp16, Some(&dirs))),
            expect(&[
                ("device_id", "0"),
                ("trt_fp16_enable", "1"),
                ("trt_int8_enable", "0"),
                ("trt_dla_enable", "1"),
                ("trt_dla_core", "1"),
                ("trt_max_workspace_size", "536870912"),
                ("trt_engine_cache_enable", "1"),
                (
                    "trt_engine_cache_path",
                    "/var/cache/scion/engines/0123456789ab-k"
                ),
                ("trt_engine_cache_prefix", "scion"),
                ("trt_timing_cache_enable", "1"),
                ("trt_timing_cache_path", "/var/cache/scion/engines/timing-t"),
            ])
        );
    }

    #[test]
    fn tensorrt_int8_keeps_fp16_and_fp32_enables_neither() {
        let gpu = GpuOptions {
            device_id: 1,
            ..GpuOptions::default()
        };
        assert_eq!(
            pairs(&tensorrt_options(&gpu, Precision::Int8, None)),
            expect(&[
                ("device_id", "1"),
                ("trt_fp16_enable", "1"),
                ("trt_int8_enable", "1"),
                ("trt_engine_cache_enable", "0"),
            ])
        );
        assert_eq!(
            pairs(&tensorrt_options(&gpu, Precision::Fp32, None))[1..3],
            expect(&[("trt_fp16_enable", "0"), ("trt_int8_enable", "0")])
        );
    }

    #[test]
    fn cuda_options_are_the_strings_onnx_runtime_takes() {
        assert_eq!(
            pairs(&cuda_options(&GpuOptions::default())),
            expect(&[
                ("device_id", "0"),
                ("cudnn_conv_algo_search", "EXHAUSTIVE"),
                ("arena_extend_strategy", "kNextPowerOfTwo"),
            ])
        );
        let nano = GpuOptions {
            conv_algo_search: "heuristic".parse().expect("must work"),
            arena_extend: "same_as_requested".parse().expect("must work"),
            gpu_mem_limit_mb: Some(1024),
            ..GpuOptions::default()
        };
        assert_eq!(
            describe(&cuda_options(&nano)),
            "device_id=0 cudnn_conv_algo_search=HEURISTIC \
             arena_extend_strategy=kSameAsRequested gpu_mem_limit=1073741824"
        );
    }

    #[test]
    fn unknown_names_are_refused_with_the_choices() {
        let err = "fastest"
            .parse::<ConvAlgoSearch>()
            .expect_err("must be refused");
        assert!(err.contains("exhaustive, heuristic or default"), "{err}");
        let err = "grow".parse::<ArenaExtend>().expect_err("must be refused");
        assert!(err.contains("next_power_of_two"), "{err}");
        let err = "bf16".parse::<Precision>().expect_err("must be refused");
        assert!(err.contains("fp32, fp16 or int8"), "{err}");
    }
}
