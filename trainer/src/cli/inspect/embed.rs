//! `scion embed`, `scion merge` and `scion project`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use scion_edge::classify::inputs::{Shard, shard};
use scion_trainer::represent::embedding::{Embeddings, merge, scan_images};
use scion_trainer::represent::extractor::Spatial;
use scion_trainer::represent::pca;
use scion_trainer::sheets;

use super::{ExtractArgs, IndexArgs, embed_items, warn_skipped};

/// Compute one tensor of a model for every image of a folder and write the vectors, with
/// paths and labels, to a safetensors file.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Images: a folder (DIR/<class>/*, DIR/{train,val,test}/<class>/* or plain files) or
    /// one image.
    #[arg(value_name = "DATA")]
    data: PathBuf,
    /// The model with a card: a backbone from `scion-edge import` or a trained model.
    #[arg(long, value_name = "MODEL")]
    model: PathBuf,
    /// Where to write the embeddings (safetensors: tensor `features` [n, dim], paths,
    /// labels and the model's sha256 in the metadata).
    #[arg(long, short, value_name = "FILE.safetensors")]
    out: PathBuf,
    /// The tensor to embed (default: the card's feature tensor, the penultimate "FC7"
    /// layer). A wrong name lists candidates.
    #[arg(long, value_name = "NAME")]
    tensor: Option<String>,
    /// A spatial tensor ([C, H, W]) becomes its channel means, or every value flattened.
    #[arg(long, value_enum, default_value_t = Spatial::Mean)]
    spatial: Spatial,
    /// Take only every N-th image starting at I of the sorted list (e.g. 0/4 .. 3/4, one
    /// per task of a Slurm array or Kubernetes indexed job); join them with `scion merge`.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    #[command(flatten)]
    extract: ExtractArgs,
}

pub fn run_embed(args: EmbedArgs) -> Result<i32> {
    let mut extractor = args.extract.open(
        &args.model,
        args.tensor.as_deref(),
        "--tensor",
        args.spatial,
    )?;
    // Absolute paths: the file is read later, from other folders or machines' shares.
    let data = std::fs::canonicalize(&args.data)
        .with_context(|| format!("reading {}", args.data.display()))?;
    let items = shard(scan_images(&data)?, args.shard);
    let total = items.len();
    let shard_name = args.shard.map(|s| format!("{}/{}", s.index, s.count));
    let (embeddings, skipped) = embed_items(&mut extractor, items, "embedding", shard_name)?;
    embeddings.save(&args.out)?;
    warn_skipped(&skipped);
    println!(
        "wrote {}: {} of {} images x {} values of '{}'{}",
        args.out.display(),
        embeddings.items.len(),
        total,
        embeddings.dim,
        extractor.tensor,
        if extractor.pooled() {
            format!(" (channel means of {:?})", extractor.shape)
        } else {
            String::new()
        }
    );
    Ok(if skipped.is_empty() { 0 } else { 2 })
}

/// Join embeddings files written by `scion embed --shard i/N` into one (every shard
/// present once, one model, no image twice).
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shard files.
    #[arg(value_name = "FILE", required = true)]
    parts: Vec<PathBuf>,
    /// The merged file.
    #[arg(long, short, value_name = "FILE.safetensors")]
    out: PathBuf,
}

pub fn run_merge(args: MergeArgs) -> Result<i32> {
    let parts = args
        .parts
        .iter()
        .map(|p| Embeddings::load(p).map(|e| (p.clone(), e)))
        .collect::<Result<Vec<_>, _>>()?;
    let merged = merge(&parts)?;
    merged.save(&args.out)?;
    println!(
        "wrote {}: {} images x {} values from {} parts",
        args.out.display(),
        merged.items.len(),
        merged.dim,
        parts.len()
    );
    Ok(0)
}

/// A 2-D picture of the features: the first two principal components, one dot per image,
/// coloured by label.
#[derive(Debug, Args)]
pub struct ProjectArgs {
    #[command(flatten)]
    index: IndexArgs,
    /// The PNG to write.
    #[arg(long, short, default_value = "projection.png", value_name = "PNG")]
    out: PathBuf,
}

pub fn run_project(args: ProjectArgs) -> Result<i32> {
    let (embeddings, extractor) = args.index.open()?;
    if embeddings.items.len() < 3 {
        bail!(
            "--index {}: {} images; a projection needs at least 3",
            args.index.index.display(),
            embeddings.items.len()
        );
    }
    let (projected, explained) = pca::project(&embeddings.data, embeddings.dim, 2);
    let points: Vec<(f32, f32)> = projected.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    let (names, labels) = embeddings.label_indices();
    let title = format!(
        "PCA of '{}' ({} images; {:.1}% + {:.1}% of the variance)",
        extractor.tensor,
        points.len(),
        100.0 * explained[0],
        100.0 * explained[1]
    );
    sheets::scatter(&points, &labels, &names, &title, &args.out)?;
    println!("wrote {}: {title}", args.out.display());
    Ok(0)
}
