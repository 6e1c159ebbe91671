//! Command-line interface of `scion`. Exit status: 0 success, 1 error (or lint errors).

mod data;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Transfer learning on images: prepare data, (soon) train a new head on a frozen
/// pretrained backbone, and export a self-describing ONNX model for scion-edge.
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
}

/// Parse arguments and run; returns the process exit status.
pub fn run() -> Result<i32> {
    let cli = Cli::parse();
    scion_edge::logging::init(cli.log);
    match cli.command {
        Command::Data(cmd) => data::run(cmd),
    }
}
