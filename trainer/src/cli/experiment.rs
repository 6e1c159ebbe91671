use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use scion_trainer::experiment::{Arm, ArmObserver, table, transfer};
use scion_trainer::net::freeze::Unfreeze;
use scion_trainer::train::TrainObserver;

use super::train::{Bars, TrainSetup, interrupt_flag};

/// Experiments that compare ways of training on your data.
#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Fine-tune or from scratch? Train the head alone, the head with the last backbone
    /// blocks, and the whole architecture from scratch, with the same split, seed and
    /// epochs; write a table (transfer.md, transfer.json) and a chart (transfer.png).
    Transfer(TransferArgs),
}

/// `scion experiment transfer`.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Folder for the three models, their reports, the table and the chart.
    #[arg(long, short, value_name = "DIR")]
    out: PathBuf,
    /// What the fine-tuning arm unfreezes.
    #[arg(long, default_value = "last:3", value_name = "POLICY")]
    unfreeze: Unfreeze,
    /// Leave out the from-scratch arm (the slowest).
    #[arg(long)]
    no_scratch: bool,
    #[command(flatten)]
    setup: TrainSetup,
}

struct Progress {
    bars: Bars,
}

impl ArmObserver for Progress {
    fn arm(&mut self, index: usize, total: usize, name: &str) {
        self.bars.clear();
        eprintln!("== arm {}/{total}: {name}", index + 1);
    }
    fn train_observer(&mut self) -> &mut dyn TrainObserver {
        &mut self.bars
    }
}

pub fn run(command: ExperimentCommand) -> Result<i32> {
    let ExperimentCommand::Transfer(args) = command;
    let mut arms = vec![Arm::Unfreeze(Unfreeze::None), Arm::Unfreeze(args.unfreeze)];
    if !args.no_scratch {
        arms.push(Arm::FromScratch);
    }
    let base = args
        .setup
        .job(args.out.join("model.onnx"), None, Unfreeze::None, false)?;
    let interrupt = interrupt_flag()?;
    let mut progress = Progress {
        bars: Bars::default(),
    };
    let results = transfer(&base, &arms, &args.out, &interrupt, &mut progress)
        .with_context(|| format!("experiment on {}", args.setup.data.display()))?;
    progress.bars.clear();
    println!("{}", table(&results));
    println!(
        "wrote {}/transfer.md, transfer.json, transfer.png and one model per arm",
        args.out.display()
    );
    Ok(if results.iter().all(|r| r.parity_passed) {
        0
    } else {
        eprintln!("Error: an exported model does not match the trainer on every engine");
        1
    })
}
