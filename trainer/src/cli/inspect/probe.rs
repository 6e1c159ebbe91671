//! `scion probe`: which backbone's representation suits your data.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use scion_trainer::fit::FitConfig;
use scion_trainer::represent::embedding::scan_images;
use scion_trainer::represent::extractor::Spatial;
use scion_trainer::represent::probe::{ProbeScore, cross_validate};

use super::{ExtractArgs, embed_items, warn_skipped, write_json};

/// Score how well each backbone's frozen features separate your classes: a linear
/// classifier on its (standardised) feature tensor, cross-validated. The backbone with the
/// best probe is the one to train a head on.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Labelled images: DIR/<class>/* or DIR/{train,val,test}/<class>/* (all splits are
    /// pooled and re-split into folds).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// A backbone to compare (repeat the flag): any model with a card.
    #[arg(long, value_name = "MODEL", required = true)]
    backbone: Vec<PathBuf>,
    /// Cross-validation folds.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Epochs per fold.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Seed of the folds and the initial weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder for probe.json and probe.png.
    #[arg(long, short, default_value = "probe", value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    extract: ExtractArgs,
}

#[derive(serde::Serialize)]
struct Arm {
    name: String,
    backbone: PathBuf,
    tensor: String,
    dim: usize,
    images: usize,
    #[serde(flatten)]
    score: ProbeScore,
}

pub fn run_probe(args: ProbeArgs) -> Result<i32> {
    let items = scan_images(&args.data)?;
    if let Some(i) = items.iter().find(|i| i.label.is_none()) {
        bail!(
            "--data {}: {} is not in a class folder; a probe needs labelled images \
             (DIR/<class>/*)",
            args.data.display(),
            i.path
        );
    }
    let device = args.extract.device.training_device()?;
    let mut arms = Vec::new();
    let mut any_skipped = false;
    for backbone in &args.backbone {
        let mut extractor = args
            .extract
            .open(backbone, None, "--tensor", Spatial::Mean)?;
        let name = backbone.file_stem().map_or_else(
            || backbone.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        let (embeddings, skipped) = embed_items(&mut extractor, items.clone(), &name, None)?;
        warn_skipped(&skipped);
        any_skipped |= !skipped.is_empty();
        let (classes, labels) = embeddings.label_indices();
        let labels: Vec<usize> = labels.into_iter().map(|l| l.unwrap_or(0)).collect();
        if classes.len() < 2 {
            bail!(
                "--data {}: a probe needs at least two classes",
                args.data.display()
            );
        }
        let config = FitConfig {
            epochs: args.epochs.max(1),
            lr: args.lr,
            seed: args.seed,
            ..FitConfig::default()
        };
        let score = cross_validate(
            &embeddings.data,
            embeddings.dim,
            &labels,
            args.folds,
            &config,
            &device,
            super::interrupted(),
        )
        .with_context(|| format!("probing {}", backbone.display()))?;
        eprintln!(
            "{name}: {:.1}% ± {:.1} ({} folds, {} images, '{}' of {})",
            100.0 * score.mean,
            100.0 * score.std,
            args.folds,
            embeddings.items.len(),
            extractor.tensor,
            embeddings.dim
        );
        arms.push(Arm {
            name,
            backbone: backbone.clone(),
            tensor: extractor.tensor.clone(),
            dim: embeddings.dim,
            images: embeddings.items.len(),
            score,
        });
    }
    println!(
        "{:<28} {:>6} {:>7} {:>16}",
        "backbone", "dim", "images", "accuracy (±std)"
    );
    for a in &arms {
        println!(
            "{:<28} {:>6} {:>7} {:>9.1}% ±{:>4.1}",
            a.name,
            a.dim,
            a.images,
            100.0 * a.score.mean,
            100.0 * a.score.std
        );
    }
    let json = write_json(&args.out, "probe.json", &arms)?;
    let png = args.out.join("probe.png");
    let names: Vec<String> = arms.iter().map(|a| a.name.clone()).collect();
    let title = format!("linear probe, {}-fold accuracy %", args.folds);
    scion_trainer::plots::bars(
        &names,
        &[(
            title.as_str(),
            arms.iter().map(|a| 100.0 * a.score.mean).collect(),
        )],
        &png,
    )?;
    println!("wrote {} and {}", json.display(), png.display());
    Ok(if any_skipped { 2 } else { 0 })
}
