//! `scion-edge prepare`: build a model's engine ahead of time, so the service's first start
//! (or a model swap) does not wait minutes for TensorRT. With `--engine-cache` the built
//! engine is kept in the folder for the model's key; a reduced-precision engine is checked
//! on `--check-images` like at serve time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use scion_edge::{ContractOverrides, Model};

use super::EngineArgs;

/// Build and check a model's engine now, keeping it in the engine cache.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// The ONNX model (with a scion card).
    #[arg(long, value_name = "MODEL")]
    model: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn run(args: PrepareArgs, quiet: bool) -> Result<()> {
    let model = Model::load(&args.model, &ContractOverrides::default())?;
    let section = args.engine.section();
    let progress = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    progress.set_message(format!(
        "preparing {} ({}; engines {})",
        model.card.name,
        args.model.display(),
        args.engine
            .policy()
            .order
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(" > ")
    ));
    progress.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let classifier = args.engine.classifier(&model);
    progress.finish_and_clear();
    let classifier = classifier?;
    println!(
        "engine:   {} ({}), ready in {:.1} s",
        classifier.engine(),
        classifier.precision().as_str(),
        started.elapsed().as_secs_f64()
    );
    if let Some(options) = classifier.provider_options() {
        println!("options:  {options}");
    }
    match (&section.cache_dir, classifier.engine()) {
        (Some(dir), scion_edge::engine::EngineKind::TensorRt) => {
            println!("cache:    {}", dir.display())
        }
        (Some(_), kind) => println!(
            "cache:    nothing kept: {kind} builds no engine to cache (only TensorRT does)"
        ),
        (None, _) => println!("cache:    none (pass --engine-cache DIR to keep the engine)"),
    }
    if let Some(agreement) = classifier.agreement() {
        println!(
            "check:    {agreement}: {}",
            if agreement.accepted() {
                "accepted"
            } else {
                "refused, FP32 serves"
            }
        );
    }
    Ok(())
}
