//! Command-line interface. Exit status: 0 success, 1 error, 2 finished but some inputs failed.

mod boards;
mod classify;
mod import;
mod info;
mod install;
mod prepare;
mod serve;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use scion_edge::ContractOverrides;
use scion_edge::engine::precision_check::CheckImages;
use scion_edge::engine::{EngineKind, EngineOptions, Policy, Precision};
use scion_edge::service::CHECK_IMAGE_LIMIT;
use scion_edge::service::config::EngineSection;

/// Run scion models on the device: classify folders of images with ONNX Runtime or tract,
/// serve a camera as a long-running service, import pretrained backbones, inspect models.
#[derive(Debug, Parser)]
#[command(name = "scion-edge", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    log: scion_edge::logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Classify images (files, folders, globs); resumable, shardable, JSON lines or CSV.
    Classify(classify::ClassifyArgs),
    /// Build a pretrained backbone as a self-describing ONNX model from published weights.
    Import(import::ImportArgs),
    /// Show a model's card, inputs and outputs, and which engines can run it here.
    Info(info::InfoArgs),
    /// Build a model's engine now (TensorRT into --engine-cache), check a reduced-precision
    /// engine against FP32, and say how long it took.
    Prepare(prepare::PrepareArgs),
    /// Classify camera or video frames continuously, as a service (HTTP API, MQTT,
    /// model updates without downtime, systemd).
    Serve(Box<serve::ServeArgs>),
    /// Lay out the service (binary, systemd unit, config, model store) under a root.
    Install(install::InstallArgs),
    /// Make an ed25519 key pair for signing models.
    Keygen(install::KeygenArgs),
    /// Sign a model (writes MODEL.sig) for devices that require signed models.
    Sign(install::SignArgs),
    /// Show the detected board: GPU, engines, camera pipeline, GPIO header map.
    Boards(boards::BoardsArgs),
}

/// Engine selection flags shared by every command that runs a model.
#[derive(Debug, Clone, Args)]
struct EngineArgs {
    /// Engine to use first: tensorrt, cuda, ort-cpu (alias ort) or tract. Default order:
    /// tensorrt > cuda > ort-cpu > tract, skipping engines not compiled in.
    #[arg(long, value_name = "NAME")]
    engine: Option<EngineKind>,
    /// Refuse to fall back: use the --engine (or the first of the default order) or fail.
    #[arg(long)]
    require: bool,
    /// Intra-op threads of the engine (absent or 0: the engine's default).
    #[arg(long)]
    threads: Option<usize>,
    /// Path of libonnxruntime.so (default: $ORT_DYLIB_PATH, then beside the executable).
    #[arg(long, value_name = "FILE")]
    ort_lib: Option<PathBuf>,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// TensorRT and CUDA settings (`[engine]` in edge.toml takes the same names).
#[derive(Debug, Clone, Default, Args)]
struct GpuArgs {
    /// TensorRT precision: fp32, fp16 or int8 (int8 needs a model quantized with QDQ
    /// nodes, from `scion quantize`). Default: the board's (FP16 on Jetsons; INT8 from Xavier on for QDQ
    /// models), FP32 elsewhere.
    #[arg(long, value_name = "P", help_heading = "GPU engines")]
    precision: Option<Precision>,
    /// Keep TensorRT engines in this folder, one subfolder per model and key, so a start
    /// does not rebuild them (default: none, every start builds).
    #[arg(long, value_name = "DIR", help_heading = "GPU engines")]
    engine_cache: Option<PathBuf>,
    /// Size budget of --engine-cache, MiB; the entries used longest ago go first
    /// [default: 2048].
    #[arg(long, value_name = "MIB", help_heading = "GPU engines")]
    engine_cache_mb: Option<u64>,
    /// A reduced-precision engine must give the FP32 top-1 on this share of the check
    /// images, else it is refused and FP32 serves [default: 0.99].
    #[arg(long, value_name = "SHARE", value_parser = scion_edge::engine::precision_check::parse_share, help_heading = "GPU engines")]
    min_agreement: Option<f64>,
    /// Check a reduced-precision engine on the images in this folder (its first 1,000 in
    /// path order; e.g. a validation split) against FP32 answers.
    #[arg(long, value_name = "DIR", help_heading = "GPU engines")]
    check_images: Option<PathBuf>,
    /// CUDA device ordinal [default: 0].
    #[arg(long, value_name = "N", help_heading = "GPU engines")]
    device_id: Option<u32>,
    /// Run what TensorRT can on this DLA core (Xavier, Orin NX/AGX).
    #[arg(long, value_name = "N", help_heading = "GPU engines")]
    dla_core: Option<u32>,
    /// TensorRT builder workspace, MiB (default: TensorRT's).
    #[arg(long, value_name = "MIB", help_heading = "GPU engines")]
    workspace_mb: Option<u64>,
    /// cuDNN convolution search: exhaustive, heuristic or default [default: exhaustive].
    #[arg(long, value_name = "HOW", value_parser = checked::<scion_edge::engine::provider_options::ConvAlgoSearch>, help_heading = "GPU engines")]
    cudnn_search: Option<String>,
    /// CUDA arena growth: next_power_of_two or same_as_requested [default:
    /// next_power_of_two].
    #[arg(long, value_name = "HOW", value_parser = checked::<scion_edge::engine::provider_options::ArenaExtend>, help_heading = "GPU engines")]
    arena: Option<String>,
    /// Cap on the CUDA arena, MiB.
    #[arg(long, value_name = "MIB", help_heading = "GPU engines")]
    gpu_mem_limit_mb: Option<u64>,
}

impl EngineArgs {
    /// Flags given on the command line replace the section's values.
    fn merge_into(&self, section: &mut EngineSection) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *target = v.clone();
            }
        }
        fn set_some<T: Clone>(target: &mut Option<T>, value: &Option<T>) {
            if value.is_some() {
                target.clone_from(value);
            }
        }
        if let Some(kind) = self.engine {
            section.engine = Some(kind.name().to_string());
        }
        section.require |= self.require;
        set(&mut section.threads, &self.threads);
        set_some(&mut section.ort_lib, &self.ort_lib);
        let gpu = &self.gpu;
        set_some(&mut section.precision, &gpu.precision);
        set_some(&mut section.cache_dir, &gpu.engine_cache);
        set(&mut section.cache_mb, &gpu.engine_cache_mb);
        set(&mut section.min_agreement, &gpu.min_agreement);
        set_some(&mut section.check_images, &gpu.check_images);
        set(&mut section.device_id, &gpu.device_id);
        set_some(&mut section.dla_core, &gpu.dla_core);
        set_some(&mut section.workspace_mb, &gpu.workspace_mb);
        set(&mut section.cudnn_search, &gpu.cudnn_search);
        set(&mut section.arena, &gpu.arena);
        set_some(&mut section.gpu_mem_limit_mb, &gpu.gpu_mem_limit_mb);
    }

    /// The settings of a command without a config file: defaults and flags.
    fn section(&self) -> EngineSection {
        let mut section = EngineSection::default();
        self.merge_into(&mut section);
        section
    }

    fn policy(&self) -> Policy {
        match self.engine {
            Some(e) => Policy::prefer(e, self.require),
            None => Policy {
                strict: self.require,
                ..Policy::default()
            },
        }
    }

    /// The images `--check-images` names, preprocessed for `model`.
    fn check_images(&self, model: &scion_edge::model::Model) -> Result<Option<CheckImages>> {
        self.section()
            .check_images
            .as_deref()
            .map(|dir| {
                scion_edge::check_images::from_folder(model, dir, CHECK_IMAGE_LIMIT)
                    .map_err(anyhow::Error::msg)
                    .context("--check-images")
            })
            .transpose()
    }

    /// The first engine the policy accepts for `model`, with the model's card. A
    /// reduced-precision engine is checked on `--check-images` first.
    fn classifier(&self, model: &scion_edge::model::Model) -> Result<scion_edge::Classifier> {
        let policy = self.policy();
        let check = if policy.may_reduce_precision() {
            self.check_images(model)?
        } else {
            None
        };
        let selected = policy
            .select_checked(&model.spec(), &self.options()?, check.as_ref())
            .with_context(|| {
                format!(
                    "{}: no engine could prepare the model",
                    model.path.display()
                )
            })?;
        Ok(scion_edge::Classifier::from_selected(
            selected,
            model.card.clone(),
        ))
    }

    fn options(&self) -> Result<EngineOptions> {
        Ok(self.section().options(board_precision())?)
    }
}

/// The detected board's TensorRT precision (FP32 where no board is recognised).
fn board_precision() -> Precision {
    scion_edge::service::hardware::board(None)
        .map(|b| b.profile.precision)
        .unwrap_or_default()
}

/// A share between 0 and 1.
/// The text, once it parses as a `T` (the config section keeps names, not values).
fn checked<T: std::str::FromStr<Err = String>>(text: &str) -> Result<String, String> {
    text.parse::<T>().map(|_| text.to_string())
}

fn parse_triple(s: &str) -> Result<[f32; 3], String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<f32>()
                .map_err(|_| format!("'{s}': expected three numbers like 0.485,0.456,0.406"))
        })
        .collect::<Result<_, _>>()?;
    v.try_into()
        .map_err(|_| format!("'{s}': expected exactly three comma-separated numbers"))
}

/// The preprocessing contract for a model without a card (or to override one).
#[derive(Debug, Clone, Args)]
struct ContractArgs {
    /// Labels file, one class per line, in output order.
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Contract (for models without a card)"
    )]
    labels: Option<PathBuf>,
    /// Square input size after the centre crop (default: from the model's input shape).
    #[arg(
        long,
        value_name = "PX",
        help_heading = "Contract (for models without a card)"
    )]
    input_size: Option<u32>,
    /// Resize the shorter side to this before cropping (default: input size / 0.875).
    #[arg(
        long,
        value_name = "PX",
        help_heading = "Contract (for models without a card)"
    )]
    resize_shorter: Option<u32>,
    /// Per-channel mean after scaling (default torchvision: 0.485,0.456,0.406).
    #[arg(long, value_parser = parse_triple, value_name = "R,G,B", help_heading = "Contract (for models without a card)")]
    mean: Option<[f32; 3]>,
    /// Per-channel std (default torchvision: 0.229,0.224,0.225).
    #[arg(long, value_parser = parse_triple, value_name = "R,G,B", help_heading = "Contract (for models without a card)")]
    std: Option<[f32; 3]>,
    /// Multiplier for 0..255 pixel values before mean/std (default 1/255).
    #[arg(long, help_heading = "Contract (for models without a card)")]
    scale: Option<f32>,
    /// Feed channels as BGR.
    #[arg(long, help_heading = "Contract (for models without a card)")]
    bgr: bool,
}

impl ContractArgs {
    fn overrides(&self) -> ContractOverrides {
        ContractOverrides {
            labels_file: self.labels.clone(),
            input_size: self.input_size,
            resize_shorter: self.resize_shorter,
            mean: self.mean,
            std: self.std,
            scale: self.scale,
            bgr: self.bgr,
        }
    }
}

/// Parse arguments and run; returns the process exit status.
pub fn run() -> Result<i32> {
    let cli = Cli::parse();
    scion_edge::logging::init(cli.log);
    match cli.command {
        Command::Classify(args) => classify::run(args, cli.log.quiet),
        Command::Import(args) => import::run(args).map(|_| 0),
        Command::Info(args) => info::run(args).map(|_| 0),
        Command::Prepare(args) => prepare::run(args, cli.log.quiet).map(|_| 0),
        Command::Serve(args) => serve::run_serve(*args),
        Command::Install(args) => install::run_install(args).map(|_| 0),
        Command::Keygen(args) => install::run_keygen(args).map(|_| 0),
        Command::Sign(args) => install::run_sign(args).map(|_| 0),
        Command::Boards(args) => boards::run_boards(args),
    }
}

/// `on` / `off` for a switch flag.
fn parse_switch(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("'{s}' is not a switch: use on or off")),
    }
}
