//! Command-line interface. Exit status: 0 success, 1 error, 2 finished but some inputs failed.

mod boards;
mod classify;
mod import;
mod info;
mod install;
mod serve;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use scion_edge::ContractOverrides;
use scion_edge::engine::{EngineKind, EngineOptions, Policy};

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
}

impl EngineArgs {
    fn policy(&self) -> Policy {
        match self.engine {
            Some(e) => Policy::prefer(e, self.require),
            None => Policy {
                strict: self.require,
                ..Policy::default()
            },
        }
    }

    /// The first engine the policy accepts for `model`, with the model's card.
    fn classifier(&self, model: &scion_edge::model::Model) -> Result<scion_edge::Classifier> {
        use anyhow::Context;
        let selected = self
            .policy()
            .select(&model.spec(), &self.options())
            .with_context(|| {
                format!(
                    "{}: no engine could prepare the model",
                    model.path.display()
                )
            })?;
        Ok(scion_edge::Classifier::new(
            selected.session,
            model.card.clone(),
        ))
    }

    fn options(&self) -> EngineOptions {
        EngineOptions {
            threads: self.threads.unwrap_or(0),
            ort_library: self.ort_lib.clone(),
            spin_wait: false,
        }
    }
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
