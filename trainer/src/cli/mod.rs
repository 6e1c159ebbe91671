//! Command-line interface of `scion`. Exit status: 0 success, 1 error (or lint errors).

mod data;
mod eval;
mod experiment;
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
    /// Compare ways of training on your data (head only, fine-tuned, from scratch).
    #[command(subcommand)]
    Experiment(experiment::ExperimentCommand),
}

/// Parse arguments and run; returns the process exit status.
pub fn run() -> Result<i32> {
    let cli = Cli::parse();
    scion_edge::logging::init(cli.log);
    match cli.command {
        Command::Data(cmd) => data::run(cmd),
        Command::Train(args) => train::run_train(args),
        Command::Eval(args) => eval::run_eval(args),
        Command::Experiment(cmd) => experiment::run(cmd),
    }
}
