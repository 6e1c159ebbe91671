use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use scion_edge::Model;
use scion_edge::classify::inputs::{self, Shard};
use scion_edge::classify::output::{Format, Record, Sink};
use scion_edge::classify::{self, Job};

use super::{ContractArgs, EngineArgs};

/// Classify images. Each input gets one record: `path`, `top` (label, index, prob), `engine`;
/// or `path` and `error` for an input that could not be read. With --out, rerunning the same
/// command after a crash skips finished inputs, so each appears exactly once.
/// Exit status 2 when some inputs failed.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// The ONNX model (with a scion card, or give its contract with the flags below).
    #[arg(long, short, value_name = "MODEL")]
    model: PathBuf,
    /// Image files, folders (searched recursively for images) or glob patterns.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// Write results to FILE (appending and resuming) instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Classes reported per image.
    #[arg(long, short = 'k', default_value_t = 5)]
    top_k: usize,
    /// Images per inference call (tract always runs one at a time: it is faster so).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Threads decoding and preprocessing images (default: number of CPUs).
    #[arg(long, value_name = "N")]
    decode_threads: Option<usize>,
    /// Take only share INDEX of COUNT of the sorted inputs (0-based), e.g. 0/4, so a
    /// scheduler can split a job across nodes; shard outputs concatenate.
    #[arg(long, value_name = "INDEX/COUNT")]
    shard: Option<Shard>,
    /// Apply the model's "unknown" rule, when its card has one: records get
    /// `"unknown": true|false` (`off`: always name a class, no field).
    #[arg(long, value_name = "on|off", default_value = "on", action = clap::ArgAction::Set, value_parser = super::parse_switch)]
    unknown: bool,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    contract: ContractArgs,
}

pub fn run(args: ClassifyArgs, quiet: bool) -> Result<i32> {
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(args.top_k > 0, "--top-k must be at least 1");
    let model = Model::load(&args.model, &args.contract.overrides())?;
    if !model.card_embedded {
        tracing::warn!(
            "{}: no model card; using the contract given by flags",
            args.model.display()
        );
    }
    let top_k = args.top_k.min(model.card.labels.len());
    let found = inputs::expand(&args.paths);
    let files = inputs::shard(found.files, args.shard);

    let (mut sink, done) = match &args.out {
        Some(path) => Sink::resume_file(path, args.format, top_k)?,
        None => (Sink::stdout(args.format, top_k), Default::default()),
    };
    let skipped = files.iter().filter(|f| done.contains(*f)).count();
    let files: Vec<String> = files.into_iter().filter(|f| !done.contains(f)).collect();
    if skipped > 0 {
        tracing::info!("resuming: {skipped} inputs already in the output");
    }
    let missing: Vec<Record> = found
        .missing
        .iter()
        .filter(|(arg, _)| !done.contains(arg))
        .map(|(arg, reason)| {
            tracing::warn!("{arg}: {reason}");
            Record {
                path: arg.clone(),
                top: None,
                unknown: None,
                engine: None,
                error: Some(reason.clone()),
            }
        })
        .collect();
    sink.write(&missing)?;

    let mut classifier = args.engine.classifier(&model)?.with_unknown(args.unknown);
    let decode_threads = args.decode_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let batch = args.batch.min(classifier.engine().max_useful_batch());
    if batch < args.batch {
        tracing::info!(
            "batches of {batch} on {} (faster than {} there)",
            classifier.engine(),
            args.batch
        );
    }
    let job = Job {
        files,
        batch,
        top_k,
        decode_threads,
        progress: !quiet,
    };
    let summary = classify::run(&mut classifier, &job, &mut sink)?;
    let failed = summary.failed + missing.len();
    let rate = summary.classified as f64 / summary.elapsed.as_secs_f64().max(1e-9);
    tracing::info!(
        "{} classified, {} failed, {} already done; engine {}; {:.1}s ({:.1} images/s)",
        summary.classified,
        failed,
        skipped,
        classifier.engine(),
        summary.elapsed.as_secs_f64(),
        rate
    );
    Ok(if failed > 0 { 2 } else { 0 })
}
