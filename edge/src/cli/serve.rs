use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::Args;
use scion_edge::ContractOverrides;
use scion_edge::model::Model;
use scion_edge::serve::smoothing::SmoothingConfig;
use scion_edge::serve::{Output, ServeConfig, ServeStats, run};
use scion_edge::source::{Backoff, Reconnecting, SourceUri};

use super::EngineArgs;

/// Classify camera or video frames continuously: latest frame only, smoothed labels,
/// JSON lines of frames and label-change events. Reopens a failing source with backoff.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The model (ONNX with a card).
    #[arg(long, short, value_name = "MODEL")]
    model: PathBuf,
    /// Where frames come from: csi://N, v4l2:///dev/videoN, file://PATH, rtsp://…,
    /// test://PATTERN (GStreamer's videotestsrc) or gst://PIPELINE.
    #[arg(long, value_name = "URI")]
    source: String,
    /// Restart a file source at its end.
    #[arg(long = "loop")]
    loop_files: bool,
    /// Labels per frame record.
    #[arg(long, short = 'k', default_value_t = 3)]
    top_k: usize,
    /// Smoothed probability a label needs before it is announced.
    #[arg(long, default_value_t = SmoothingConfig::default().threshold)]
    threshold: f32,
    /// Smooth probabilities over about N frames (exponential moving average; 1: off).
    #[arg(long, default_value_t = SmoothingConfig::default().frames, value_name = "N")]
    smooth: usize,
    /// Frames a new label must lead before it replaces the current one.
    #[arg(long, default_value_t = SmoothingConfig::default().hold, value_name = "N")]
    hold: usize,
    /// Write JSON lines here instead of standard output (appended).
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Only label-change events, no record per frame.
    #[arg(long)]
    events_only: bool,
    /// Stop after N classified frames.
    #[arg(long, value_name = "N")]
    max_frames: Option<u64>,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn run_serve(args: ServeArgs) -> Result<i32> {
    anyhow::ensure!(args.top_k > 0, "--top-k must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.threshold),
        "--threshold {} must be between 0 and 1",
        args.threshold
    );
    let uri: SourceUri = args.source.parse()?;
    let model = Model::load(&args.model, &ContractOverrides::default())?;
    let mut classifier = args.engine.classifier(&model)?;
    tracing::info!(
        "engine {} for {}",
        classifier.engine(),
        args.model.display()
    );

    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("--output {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("cannot install the SIGTERM/Ctrl-C handler")?;
    }
    let mut source = Reconnecting::new(
        uri,
        Box::new(scion_edge::source::open),
        Backoff::default(),
        args.loop_files,
    );
    let config = ServeConfig {
        smoothing: SmoothingConfig {
            frames: args.smooth.max(1),
            threshold: args.threshold,
            hold: args.hold.max(1),
        },
        top_k: args.top_k.min(model.card.labels.len()),
        max_frames: args.max_frames,
        events_only: args.events_only,
        ..ServeConfig::default()
    };
    let stats = run(
        &mut source,
        &mut classifier,
        &config,
        &stop,
        &mut |o: &Output| {
            serde_json::to_writer(&mut out, o)?;
            out.write_all(b"\n")?;
            // A consumer tailing the output sees each line as it happens.
            out.flush()
        },
    )
    .with_context(|| format!("serving {}", args.source))?;
    out.flush()?;
    tracing::info!(
        "{} frames, {} dropped, {} label changes, {} reconnects; latency median {:.1} ms, p99 {:.1} ms",
        stats.frames,
        stats.dropped,
        stats.events,
        source.reconnects(),
        ServeStats::quantile(&stats.latencies_ms, 0.5),
        ServeStats::quantile(&stats.latencies_ms, 0.99),
    );
    Ok(0)
}
