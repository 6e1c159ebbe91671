//! Command-line interface of `scion`. Exit status: 0 success, 1 error (or lint errors).

mod data;
mod eval;
mod experiment;
mod inspect;
mod quantize;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Transfer learning on images: prepare data, train a new head on a frozen pretrained
/// backbone, and export a self-describing ONNX model that scion-edge runs identically.
#[derive(Debug, Parser)]
#[command(name = "scion", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    log: scion_edge::logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prepare and check labelled image folders.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train a new head (optionally with backbone layers, or from scratch) and export one
    /// ONNX model.
    Train(train::TrainArgs),
    /// Score an exported model on a labelled folder.
    Eval(eval::EvalArgs),
    /// Quantize an exported model to INT8 (QDQ), calibrated on your images and checked
    /// against FP32 on the validation split.
    Quantize(quantize::QuantizeArgs),
    /// Compare ways of training on your data (head only, fine-tuned, from scratch).
    #[command(subcommand)]
    Experiment(experiment::ExperimentCommand),
    /// Compute a tensor (default: the penultimate "FC7" features) for every image and
    /// write them to a safetensors file; shardable.
    Embed(inspect::embed::EmbedArgs),
    /// Join embeddings shards (`scion embed --shard i/N`) into one file.
    Merge(inspect::embed::MergeArgs),
    /// Find the nearest neighbours of query images by their features (exact search).
    Similar(inspect::similar::SimilarArgs),
    /// Plot features in 2-D (principal components), coloured by label.
    Project(inspect::embed::ProjectArgs),
    /// Show the images that most activate a unit, as a PNG grid.
    Activations(inspect::activations::ActivationsArgs),
    /// Draw the first layer's filters, or a layer's activation maps over an image.
    Filters(inspect::activations::FiltersArgs),
    /// Compare backbones by a cross-validated linear probe on your data.
    Probe(inspect::probe::ProbeArgs),
}

/// Parse arguments and run; returns the process exit status.
pub fn run() -> Result<i32> {
    let cli = Cli::parse();
    scion_edge::logging::init(cli.log);
    match cli.command {
        Command::Data(cmd) => data::run(cmd),
        Command::Train(args) => train::run_train(args),
        Command::Eval(args) => eval::run_eval(args),
        Command::Quantize(args) => quantize::run_quantize(args),
        Command::Experiment(cmd) => experiment::run(cmd),
        Command::Embed(args) => inspect::embed::run_embed(args),
        Command::Merge(args) => inspect::embed::run_merge(args),
        Command::Similar(args) => inspect::similar::run_similar(args),
        Command::Project(args) => inspect::embed::run_project(args),
        Command::Activations(args) => inspect::activations::run_activations(args),
        Command::Filters(args) => inspect::activations::run_filters(args),
        Command::Probe(args) => inspect::probe::run_probe(args),
    }
}
