use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use scion_edge::engine::precision_check::{self, Agreement, DEFAULT_MIN_AGREEMENT};
use scion_edge::engine::{EngineKind, EngineOptions, Policy, Precision};
use scion_edge::{Classifier, ContractOverrides, Model};
use scion_trainer::dataset::Dataset;
use scion_trainer::metrics::Metrics;
use scion_trainer::score::score;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SplitName {
    /// The validation split (the val/ folder, or the held-out share recorded in the card).
    Val,
    /// The test/ folder.
    Test,
    /// The training split.
    Train,
}

/// Evaluate an exported model on a labelled folder, the same way `scion train` validates:
/// top-1, top-5, per-class precision/recall and the confusion matrix.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model (with a card whose labels match the data set's classes).
    #[arg(long, value_name = "MODEL")]
    model: PathBuf,
    /// Labelled images: DIR/<class>/* or DIR/{train,val,test}/<class>/*.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Which split to score.
    #[arg(long, value_enum, default_value_t = SplitName::Val)]
    split: SplitName,
    /// Validation share when DIR has no val/ folder (default: as recorded in the card).
    #[arg(long, value_name = "FRACTION")]
    val_split: Option<f32>,
    /// Seed of that split (default: as recorded in the card).
    #[arg(long)]
    seed: Option<u64>,
    /// Engine: tensorrt, cuda, ort-cpu (alias ort) or tract (default: the best available).
    #[arg(long, value_name = "NAME")]
    engine: Option<EngineKind>,
    /// TensorRT precision: fp32, fp16 or int8 (int8 needs a model from `scion quantize`).
    /// Below FP32 the engine must first give the FP32 top-1 on --min-agreement of the
    /// split, else it is refused and the split is scored at FP32.
    #[arg(long, value_name = "P")]
    precision: Option<Precision>,
    /// The share of the split a reduced-precision engine must agree with FP32 on.
    #[arg(long, value_name = "SHARE", value_parser = precision_check::parse_share, default_value_t = DEFAULT_MIN_AGREEMENT)]
    min_agreement: f64,
    /// Write metrics.json and confusion.png here.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Print the metrics as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Images of another domain (a folder, searched recursively): report how well the
    /// model's unknown rule tells them from the split's images (AUROC) and how many it
    /// rejects. A model without a rule is scored by 1 − top probability instead.
    #[arg(long, value_name = "DIR")]
    ood: Option<PathBuf>,
    /// Decode threads (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Path of libonnxruntime.so (default: $ORT_DYLIB_PATH, then beside the executable).
    #[arg(long, value_name = "FILE")]
    ort_lib: Option<PathBuf>,
}

pub fn run_eval(args: EvalArgs) -> Result<i32> {
    let model = Model::load(&args.model, &ContractOverrides::default())?;
    let training = model.card.provenance.training.clone().unwrap_or_default();
    let val_split = args
        .val_split
        .or_else(|| training["val_split"].as_f64().map(|v| v as f32))
        .unwrap_or(0.2);
    let seed = args
        .seed
        .or_else(|| training["fit"]["seed"].as_u64())
        .unwrap_or(0);
    let dataset = Dataset::open(&args.data, val_split, seed)?;
    if dataset.classes != model.card.labels {
        bail!(
            "{}: the model's labels {:?} differ from the classes of {}: {:?}",
            args.model.display(),
            model.card.labels,
            args.data.display(),
            dataset.classes
        );
    }
    let samples = match args.split {
        SplitName::Val => &dataset.val,
        SplitName::Test => &dataset.test,
        SplitName::Train => &dataset.train,
    };
    if samples.is_empty() {
        bail!(
            "{}: the {:?} split is empty",
            args.data.display(),
            args.split
        );
    }
    let options = EngineOptions {
        threads: 0,
        ort_library: args.ort_lib.clone(),
        spin_wait: false,
        precision: args.precision,
        min_agreement: args.min_agreement,
        ..Default::default()
    };
    let policy = match args.engine {
        Some(e) => Policy::prefer(e, true),
        None => Policy::default(),
    };
    let paths: Vec<PathBuf> = samples.iter().map(|s| s.path.clone()).collect();
    // A reduced-precision engine is checked on the split itself before it scores it.
    let check = if policy.may_reduce_precision() {
        let source = format!("the {:?} split of {}", args.split, args.data.display());
        Some(
            scion_edge::check_images::from_paths(&model, &paths, source)
                .map_err(anyhow::Error::msg)?,
        )
    } else {
        None
    };
    let selected = policy
        .select_checked(&model.spec(), &options, check.as_ref())
        .with_context(|| {
            format!(
                "{}: no engine could prepare the model",
                args.model.display()
            )
        })?;
    let mut classifier = Classifier::from_selected(selected, model.card.clone());
    if let Some(agreement) = classifier.agreement() {
        eprintln!(
            "{agreement}: {}",
            if agreement.accepted() {
                "accepted"
            } else {
                "refused; scored at FP32"
            }
        );
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get));
    let bar = indicatif::ProgressBar::new(paths.len() as u64);
    let scored = score(&mut classifier, &paths, 32, threads, &mut |done| {
        bar.set_position(done as u64);
        true
    })?;
    bar.finish_and_clear();
    for (path, reason) in &scored.failed {
        eprintln!("warning: {}: skipped: {reason}", path.display());
    }
    let (mut probs, mut labels) = (Vec::new(), Vec::new());
    for (sample, p) in samples.iter().zip(&scored.probs) {
        if let Some(p) = p {
            probs.extend_from_slice(p);
            labels.push(sample.class);
        }
    }
    if labels.is_empty() {
        bail!("no readable images in the {:?} split", args.split);
    }
    let metrics = Metrics::compute(&probs, &labels, &dataset.classes);
    let unknown = match &args.ood {
        Some(dir) => Some(out_of_domain(&mut classifier, dir, &scored, threads)?),
        None => {
            let inside: Vec<f32> = scored.unknown_scores.iter().flatten().copied().collect();
            (!inside.is_empty()).then(|| {
                serde_json::json!({
                    "rejected": rejected_share(&inside),
                })
            })
        }
    };
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        let path = dir.join("metrics.json");
        std::fs::write(&path, serde_json::to_string_pretty(&metrics)?)
            .with_context(|| path.display().to_string())?;
        scion_trainer::plots::confusion(&metrics, &dir.join("confusion.png"))?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({
                "engine": scored.engine.to_string(),
                "precision": classifier.precision(),
                "precision_check": classifier.agreement().map(agreement_json),
                "skipped": scored.failed.len(),
                "metrics": metrics,
                "unknown": unknown,
            }))?
        );
    } else {
        if let Some(u) = &unknown {
            println!("unknown: {}", describe_unknown(u));
        }
        println!(
            "{} on {} {}: {}{}",
            args.model.display(),
            scored.engine,
            classifier.precision(),
            metrics.summary(),
            if scored.failed.is_empty() {
                String::new()
            } else {
                format!(" ({} unreadable images skipped)", scored.failed.len())
            }
        );
    }
    Ok(0)
}

fn agreement_json(a: &Agreement) -> serde_json::Value {
    serde_json::json!({
        "engine": a.engine.to_string(),
        "precision": a.precision,
        "reference": a.reference.to_string(),
        "agreeing": a.agreeing,
        "total": a.total,
        "skipped": a.skipped,
        "min_agreement": a.min_agreement,
        "accepted": a.accepted(),
    })
}

/// Share of images whose unknown score rejects them (`> 1`).
fn rejected_share(scores: &[f32]) -> f64 {
    scores.iter().filter(|&&s| s > 1.0).count() as f64 / scores.len().max(1) as f64
}

/// Score the images under `dir` and compare them with the split's: AUROC of the unknown
/// score (or of 1 − top probability without a rule) and the shares rejected.
fn out_of_domain(
    classifier: &mut Classifier,
    dir: &std::path::Path,
    inside: &scion_trainer::score::Scored,
    threads: usize,
) -> Result<serde_json::Value> {
    let found = scion_edge::classify::inputs::expand(&[dir.display().to_string()]);
    if found.files.is_empty() {
        bail!("--ood {}: no images found", dir.display());
    }
    let paths: Vec<PathBuf> = found.files.iter().map(PathBuf::from).collect();
    let bar = indicatif::ProgressBar::new(paths.len() as u64);
    let outside = score(classifier, &paths, 32, threads, &mut |done| {
        bar.set_position(done as u64);
        true
    })?;
    bar.finish_and_clear();
    for (path, reason) in &outside.failed {
        eprintln!("warning: {}: skipped: {reason}", path.display());
    }
    let by_rule = classifier.rejects_unknown();
    let scores = |s: &scion_trainer::score::Scored| -> Vec<f32> {
        if by_rule {
            s.unknown_scores.iter().flatten().copied().collect()
        } else {
            s.probs
                .iter()
                .flatten()
                .map(|p| 1.0 - p.iter().copied().fold(0.0, f32::max))
                .collect()
        }
    };
    let (a, b) = (scores(inside), scores(&outside));
    let auroc = scion_trainer::unknown::auroc(&a, &b);
    Ok(serde_json::json!({
        "score": if by_rule { "unknown rule" } else { "1 - top probability (no rule in the card)" },
        "auroc": auroc,
        "ood_images": b.len(),
        "ood_skipped": outside.failed.len(),
        "rejected": by_rule.then(|| rejected_share(&a)),
        "ood_rejected": by_rule.then(|| rejected_share(&b)),
    }))
}

fn describe_unknown(u: &serde_json::Value) -> String {
    let pct = |v: &serde_json::Value| v.as_f64().map(|x| format!("{:.1}%", 100.0 * x));
    let mut parts = Vec::new();
    if let Some(r) = pct(&u["rejected"]) {
        parts.push(format!("{r} of the split rejected"));
    }
    if let Some(a) = u["auroc"].as_f64() {
        parts.push(format!(
            "AUROC {a:.3} against {} other-domain images by {}",
            u["ood_images"],
            u["score"].as_str().unwrap_or("?")
        ));
    }
    if let Some(r) = pct(&u["ood_rejected"]) {
        parts.push(format!("{r} of them rejected"));
    }
    parts.join("; ")
}
