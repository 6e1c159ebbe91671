use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use scion_edge::engine::{self, EngineKind, EngineOptions};
use scion_edge::{Classifier, ContractOverrides, Model};
use scion_onnx::patch::Patch;
use scion_trainer::dataset::Dataset;
use scion_trainer::quantize::{self, RangeMethod};
use scion_trainer::score::score;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Method {
    /// The largest |x| seen: no clipping.
    Minmax,
    /// The |x| below which --percentile % of the values lie.
    Percentile,
    /// TensorRT's entropy calibration (least KL divergence).
    Entropy,
}

/// Quantize an exported model to INT8 (QDQ nodes: per-channel symmetric weights, per-tensor
/// activations calibrated on your images), for TensorRT's INT8 engines. The INT8 model is
/// compared with the FP32 one on the validation split, per class, and refused (exit 1)
/// when it loses more than --max-drop points.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The FP32 model (with a scion card).
    #[arg(long, value_name = "MODEL")]
    model: PathBuf,
    /// Images to measure activation ranges on (searched recursively; e.g. the training
    /// folder). They go through the model's own preprocessing.
    #[arg(long, value_name = "DIR")]
    calibration: PathBuf,
    /// At most this many calibration images, spread evenly over the folder.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_images: usize,
    /// How activation ranges are chosen.
    #[arg(long, value_enum, default_value_t = Method::Percentile)]
    method: Method,
    /// The percentile of --method percentile.
    #[arg(long, value_name = "P", default_value_t = 99.9)]
    percentile: f64,
    /// Labelled images to compare on: DIR/<class>/* or DIR/{train,val}/<class>/*; the
    /// validation split is used, split as the card records.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Largest accepted loss of validation top-1, points.
    #[arg(long, value_name = "POINTS", default_value_t = 1.0)]
    max_drop: f64,
    /// Where to write the INT8 model.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Path of libonnxruntime.so (default: $ORT_DYLIB_PATH, then beside the executable).
    #[arg(long, value_name = "FILE")]
    ort_lib: Option<PathBuf>,
}

fn top1s(model: &Model, options: &EngineOptions, paths: &[PathBuf]) -> Result<Vec<Option<usize>>> {
    let session = engine::prepare(EngineKind::OrtCpu, &model.spec(), options)
        .with_context(|| format!("{}: ONNX Runtime cannot prepare it", model.path.display()))?;
    let mut classifier = Classifier::new(session, model.card.clone()).with_unknown(false);
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let scored = score(&mut classifier, paths, 16, threads, &mut |_| true)?;
    Ok(scored
        .probs
        .iter()
        .map(|p| p.as_ref().map(|p| scion_trainer::fit::argmax(p)))
        .collect())
}

pub fn run_quantize(args: QuantizeArgs) -> Result<i32> {
    if !(0.0..=100.0).contains(&args.percentile) {
        bail!(
            "--percentile {}: must be between 0 and 100",
            args.percentile
        );
    }
    if args.max_drop < 0.0 {
        bail!("--max-drop {}: must be 0 or more", args.max_drop);
    }
    let model = Model::load(&args.model, &ContractOverrides::default())?;
    if !model.card_embedded {
        bail!(
            "{}: no scion card (run `scion-edge import onnx` first)",
            args.model.display()
        );
    }
    let method = match args.method {
        Method::Minmax => RangeMethod::MinMax,
        Method::Percentile => RangeMethod::Percentile(args.percentile),
        Method::Entropy => RangeMethod::Entropy,
    };
    let options = EngineOptions {
        ort_library: args.ort_lib.clone(),
        ..EngineOptions::default()
    };
    let images = quantize::calibration_images(&args.calibration, args.max_images.max(1))?;
    let passes = if method == RangeMethod::MinMax { 1 } else { 2 };
    let bar =
        indicatif::ProgressBar::new((images.len() * passes) as u64).with_message("calibrating");
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let calibration = quantize::calibrate(&model, &images, method, &options, &mut |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    for (path, reason) in &calibration.skipped {
        eprintln!("warning: {}: skipped: {reason}", path.display());
    }
    let mut quantized = model.proto.clone();
    let report = Patch::QuantizeQdq {
        thresholds: calibration.thresholds.clone(),
        outputs: quantize::class_outputs(&model),
    }
    .apply_with_report(&mut quantized)
    .with_context(|| format!("{}: cannot quantize", args.model.display()))?;

    // FP32 against INT8 on the validation split.
    let training = model.card.provenance.training.clone().unwrap_or_default();
    let val_split = training["val_split"].as_f64().map_or(0.2, |v| v as f32);
    let seed = training["fit"]["seed"].as_u64().unwrap_or(0);
    let dataset = Dataset::open(&args.data, val_split, seed)?;
    if dataset.classes != model.card.labels {
        bail!(
            "--data {}: its classes {:?} differ from the model's labels {:?}",
            args.data.display(),
            dataset.classes,
            model.card.labels
        );
    }
    if dataset.val.is_empty() {
        bail!(
            "--data {}: the validation split is empty",
            args.data.display()
        );
    }
    let int8_bytes = scion_onnx::io::encode(&quantized);
    let int8_model = Model::from_bytes(&args.out, int8_bytes, &ContractOverrides::default())?;
    let paths: Vec<PathBuf> = dataset.val.iter().map(|s| s.path.clone()).collect();
    let fp32 = top1s(&model, &options, &paths)?;
    let int8 = top1s(&int8_model, &options, &paths)?;
    let (mut labels, mut a, mut b) = (Vec::new(), Vec::new(), Vec::new());
    for ((sample, x), y) in dataset.val.iter().zip(&fp32).zip(&int8) {
        if let (Some(x), Some(y)) = (x, y) {
            labels.push(sample.class);
            a.push(*x);
            b.push(*y);
        }
    }
    let comparison = quantize::compare(&model.card.labels, &labels, &a, &b);
    println!(
        "{}; calibrated on {} images ({}), fingerprint {}",
        report.unwrap_or_default(),
        calibration.images,
        method.describe(),
        &calibration.fingerprint[..12]
    );
    println!(
        "validation ({} images): top-1 FP32 {:.1}%, INT8 {:.1}% (drop {:.1} points); same top-1 on {:.1}%",
        comparison.images,
        comparison.fp32_top1,
        comparison.int8_top1,
        comparison.drop,
        comparison.agreement
    );
    for (class, n, x, y) in &comparison.per_class {
        println!("  {class:<20} {n:>5} images  FP32 {x:5.1}%  INT8 {y:5.1}%");
    }
    if comparison.drop > args.max_drop {
        eprintln!(
            "Error: INT8 loses {:.1} points of validation top-1, more than --max-drop {}; {} \
             not written (try --method entropy, more --calibration images, or a larger --max-drop)",
            comparison.drop,
            args.max_drop,
            args.out.display()
        );
        return Ok(1);
    }
    let mut card = model.card.clone();
    refresh_references(&mut card, &int8_model, &options, &dataset)?;
    let metrics = card
        .provenance
        .metrics
        .get_or_insert_with(|| serde_json::json!({}));
    if let Some(map) = metrics.as_object_mut() {
        map.insert(
            "quantization".into(),
            serde_json::json!({
                "format": "QDQ int8, per-channel symmetric weights, per-tensor symmetric activations",
                "method": method.describe(),
                "calibration": {
                    "images": calibration.images,
                    "fingerprint": calibration.fingerprint,
                },
                "validation": comparison,
                "max_drop": args.max_drop,
            }),
        );
    }
    card.write_to(&mut quantized);
    scion_onnx::io::write_atomically(&args.out, &scion_onnx::io::encode(&quantized))
        .with_context(|| format!("--out {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(0)
}

/// The card's reference outputs are what a device checks an installed model against, so
/// they must be the INT8 model's own: recomputed on the reference images found in the data
/// set (by content hash); references whose image is not there are dropped with a warning.
fn refresh_references(
    card: &mut scion_onnx::ModelCard,
    int8: &Model,
    options: &EngineOptions,
    dataset: &Dataset,
) -> Result<()> {
    use sha2::{Digest, Sha256};
    let wanted: std::collections::HashSet<&str> = card
        .provenance
        .references
        .iter()
        .map(|r| r.image_sha256.as_str())
        .collect();
    let mut found: std::collections::HashMap<String, PathBuf> = Default::default();
    for sample in dataset
        .val
        .iter()
        .chain(&dataset.train)
        .chain(&dataset.test)
    {
        if found.len() == wanted.len() {
            break;
        }
        let Ok(bytes) = std::fs::read(&sample.path) else {
            continue;
        };
        let sha = hex::encode(Sha256::digest(&bytes));
        if wanted.contains(sha.as_str()) {
            found.insert(sha, sample.path.clone());
        }
    }
    let session = engine::prepare(EngineKind::OrtCpu, &int8.spec(), options)?;
    let mut classifier = Classifier::new(session, int8.card.clone()).with_unknown(false);
    let mut kept = Vec::new();
    for mut reference in std::mem::take(&mut card.provenance.references) {
        let Some(path) = found.get(&reference.image_sha256) else {
            eprintln!(
                "warning: reference image {} ({}) is not in --data; dropped from the INT8 card",
                reference.name, reference.image_sha256
            );
            continue;
        };
        let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
        let input = scion_edge::preprocess::preprocess(&bytes, &int8.card.preprocessing)
            .with_context(|| path.display().to_string())?;
        let probs = classifier
            .probabilities(input, 1)?
            .pop()
            .unwrap_or_default();
        reference.top1 = scion_trainer::fit::argmax(&probs);
        let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(reference.top.len().max(1));
        reference.top = ranked;
        kept.push(reference);
    }
    card.provenance.references = kept;
    Ok(())
}
