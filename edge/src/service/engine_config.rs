//! `[engine]` in `edge.toml`: which engine, and what the GPU providers are asked to do.
//! The command-line flags of every command that runs a model merge into this same section,
//! so one function turns settings into [`EngineOptions`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::engine::cache::EngineCache;
use crate::engine::precision_check::DEFAULT_MIN_AGREEMENT;
use crate::engine::provider_options::{ArenaExtend, ConvAlgoSearch};
use crate::engine::{EngineKind, EngineOptions, GpuOptions, Precision};
use crate::service::config::ConfigError;

/// `[engine]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// Engine tried first (tensorrt, cuda, ort-cpu, tract).
    pub engine: Option<String>,
    /// Refuse to fall back to another engine.
    pub require: bool,
    /// Intra-op threads (0: the engine's default, every core).
    pub threads: usize,
    /// Path of libonnxruntime.so.
    pub ort_lib: Option<PathBuf>,
    /// TensorRT precision: fp32, fp16 or int8 (none: the board's; int8 only for QDQ models).
    pub precision: Option<Precision>,
    /// Folder for TensorRT engines, one subfolder per model and key (none: every start
    /// builds the engine again).
    pub cache_dir: Option<PathBuf>,
    /// Size budget of `cache_dir`, MiB; the entries used longest ago go first.
    pub cache_mb: u64,
    /// A reduced-precision engine must give the FP32 top-1 on this share of the check
    /// images, else FP32 serves.
    pub min_agreement: f64,
    /// Check images for a reduced-precision engine (default: the model store's copies of
    /// the card's reference images).
    pub check_images: Option<PathBuf>,
    /// CUDA device ordinal.
    pub device_id: u32,
    /// DLA core for TensorRT (Xavier, Orin NX/AGX).
    pub dla_core: Option<u32>,
    /// TensorRT builder workspace, MiB.
    pub workspace_mb: Option<u64>,
    /// cuDNN convolution search: exhaustive, heuristic or default.
    pub cudnn_search: String,
    /// CUDA arena growth: next_power_of_two or same_as_requested.
    pub arena: String,
    /// Cap on the CUDA arena, MiB.
    pub gpu_mem_limit_mb: Option<u64>,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            engine: None,
            require: false,
            threads: 0,
            ort_lib: None,
            precision: None,
            cache_dir: None,
            cache_mb: 2048,
            min_agreement: DEFAULT_MIN_AGREEMENT,
            check_images: None,
            device_id: 0,
            dla_core: None,
            workspace_mb: None,
            cudnn_search: "exhaustive".into(),
            arena: "next_power_of_two".into(),
            gpu_mem_limit_mb: None,
        }
    }
}

impl EngineSection {
    /// The engine options this section asks for on a board whose TensorRT precision is
    /// `board_precision`; an unusable value is an error naming its key.
    pub fn options(&self, board_precision: Precision) -> Result<EngineOptions, ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid { key, message };
        if let Some(engine) = &self.engine {
            engine
                .parse::<EngineKind>()
                .map_err(|e| invalid("engine.engine", e))?;
        }
        if !(0.0..=1.0).contains(&self.min_agreement) {
            return Err(invalid(
                "engine.min_agreement",
                format!("{} is not a share between 0 and 1", self.min_agreement),
            ));
        }
        if self.cache_dir.is_some() && self.cache_mb == 0 {
            return Err(invalid("engine.cache_mb", "must be above 0".into()));
        }
        let conv_algo_search: ConvAlgoSearch = self
            .cudnn_search
            .parse()
            .map_err(|e| invalid("engine.cudnn_search", e))?;
        let arena_extend: ArenaExtend =
            self.arena.parse().map_err(|e| invalid("engine.arena", e))?;
        Ok(EngineOptions {
            threads: self.threads,
            ort_library: self.ort_lib.clone(),
            spin_wait: false,
            precision: self.precision,
            board_precision,
            gpu: GpuOptions {
                device_id: self.device_id,
                dla_core: self.dla_core,
                workspace_mb: self.workspace_mb,
                conv_algo_search,
                arena_extend,
                gpu_mem_limit_mb: self.gpu_mem_limit_mb,
            },
            cache: self.cache_dir.clone().map(|dir| EngineCache {
                dir,
                budget_bytes: self.cache_mb.saturating_mul(1024 * 1024),
            }),
            min_agreement: self.min_agreement,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::config::EdgeConfig;

    #[test]
    fn the_engine_section_reads_every_gpu_setting() {
        let text = r#"
source = "test://ball"
model = "m.onnx"
[engine]
engine = "tensorrt"
precision = "fp16"
cache_dir = "/var/cache/scion/engines"
cache_mb = 512
min_agreement = 0.995
device_id = 1
dla_core = 0
workspace_mb = 256
cudnn_search = "heuristic"
arena = "same_as_requested"
gpu_mem_limit_mb = 1024
"#;
        let config = EdgeConfig::parse(text, "edge.toml".as_ref()).expect("must work");
        config.validate().expect("must work");
        let options = config.engine.options(Precision::Int8).expect("must work");
        assert_eq!(options.precision, Some(Precision::Fp16));
        assert_eq!(options.board_precision, Precision::Int8);
        assert_eq!(
            options.cache,
            Some(EngineCache {
                dir: "/var/cache/scion/engines".into(),
                budget_bytes: 512 * 1024 * 1024
            })
        );
        assert_eq!(options.min_agreement, 0.995);
        assert_eq!(
            options.gpu,
            GpuOptions {
                device_id: 1,
                dla_core: Some(0),
                workspace_mb: Some(256),
                conv_algo_search: ConvAlgoSearch::Heuristic,
                arena_extend: ArenaExtend::SameAsRequested,
                gpu_mem_limit_mb: Some(1024),
            }
        );
    }

    #[test]
    fn bad_engine_values_name_their_key() {
        for (line, key) in [
            ("precision = \"fp8\"", "precision"),
            ("cudnn_search = \"fastest\"", "engine.cudnn_search"),
            ("arena = \"grow\"", "engine.arena"),
            ("min_agreement = 1.5", "engine.min_agreement"),
            ("engine = \"npu\"", "engine.engine"),
        ] {
            let text = format!("source = \"test://ball\"\nmodel = \"m.onnx\"\n[engine]\n{line}\n");
            let err = match EdgeConfig::parse(&text, "edge.toml".as_ref()) {
                Ok(config) => config.validate().expect_err("must be refused").to_string(),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(key), "{line}: {err}");
        }
    }
}
