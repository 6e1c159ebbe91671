//! `scion data audit`: leakage, likely mislabels and outliers, from the features.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use scion_trainer::represent::audit::{AuditConfig, audit};
use scion_trainer::represent::embedding::{Embeddings, Item, scan_images};
use scion_trainer::represent::extractor::Spatial;
use scion_trainer::sheets::{self, Cell, Mark, Row};

use super::{ExtractArgs, Format, embed_items, short_path, warn_skipped, write_json};

/// Check a data set with a model's eyes: near-duplicates (across train/val/test they leak
/// the answers into validation), images whose nearest neighbours mostly carry another
/// label (likely mislabelled), and outliers far from everything.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The data set: DIR/<class>/* or DIR/{train,val,test}/<class>/*.
    #[arg(value_name = "DIR")]
    data: PathBuf,
    /// The model whose features are compared (e.g. models/efficientnet-lite0.onnx).
    #[arg(long, value_name = "MODEL")]
    model: PathBuf,
    /// The tensor (default: the card's feature tensor).
    #[arg(long, value_name = "NAME")]
    tensor: Option<String>,
    /// Neighbours looked at per image.
    #[arg(short, long, default_value_t = AuditConfig::default().k)]
    k: usize,
    /// Near-duplicate: closer than this fraction of the median nearest-neighbour distance.
    #[arg(long, default_value_t = AuditConfig::default().duplicate_ratio, value_name = "RATIO")]
    duplicate_ratio: f32,
    /// ... or: mutual nearest neighbours, closer than the median, and at most this
    /// fraction of the distance to the next neighbour (finds resized or re-encoded copies).
    #[arg(long, default_value_t = AuditConfig::default().distinct_ratio, value_name = "RATIO")]
    distinct_ratio: f32,
    /// Likely mislabelled: at least this share of the neighbours agree on another label.
    #[arg(long, default_value_t = AuditConfig::default().mislabel_agreement, value_name = "SHARE")]
    mislabel_agreement: f32,
    /// Outlier: an outlier factor (mean neighbour distance over the neighbours' own) this
    /// many robust standard deviations above the median.
    #[arg(long, default_value_t = AuditConfig::default().outlier_z, value_name = "Z")]
    outlier_z: f32,
    /// Folder for audit.json and audit.png.
    #[arg(long, short, default_value = "audit", value_name = "DIR")]
    out: PathBuf,
    /// Output on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(flatten)]
    extract: ExtractArgs,
}

#[derive(serde::Serialize)]
struct Report {
    images: usize,
    config: AuditConfig,
    median_nearest: f32,
    label_agreement: Option<f64>,
    duplicates: Vec<serde_json::Value>,
    mislabelled: Vec<serde_json::Value>,
    outliers: Vec<serde_json::Value>,
}

pub fn run_audit(args: AuditArgs) -> Result<i32> {
    let mut extractor = args.extract.open(
        &args.model,
        args.tensor.as_deref(),
        "--tensor",
        Spatial::Mean,
    )?;
    let items = scan_images(&args.data)?;
    let (e, skipped) = embed_items(&mut extractor, items, "audit", None)?;
    warn_skipped(&skipped);
    let config = AuditConfig {
        k: args.k.max(1),
        duplicate_ratio: args.duplicate_ratio,
        distinct_ratio: args.distinct_ratio,
        mislabel_agreement: args.mislabel_agreement,
        outlier_z: args.outlier_z,
    };
    let found = audit(&e, &config);
    let item = |i: usize| &e.items[i];
    let place = |i: usize| place(item(i));
    let report = Report {
        images: e.items.len(),
        config,
        median_nearest: found.median_nearest,
        label_agreement: found.label_agreement,
        duplicates: found
            .duplicates
            .iter()
            .map(|d| {
                serde_json::json!({
                    "a": item(d.a).path, "b": item(d.b).path, "distance": d.distance,
                    "cross_split": d.cross_split,
                    "a_split": item(d.a).split, "b_split": item(d.b).split,
                })
            })
            .collect(),
        mislabelled: found
            .mislabelled
            .iter()
            .map(|s| {
                serde_json::json!({
                    "path": item(s.index).path, "label": item(s.index).label,
                    "suggested": s.suggested, "agreement": s.agreement,
                    "neighbours": s.neighbours.iter().map(|&n| &item(n).path).collect::<Vec<_>>(),
                })
            })
            .collect(),
        outliers: found
            .outliers
            .iter()
            .map(|o| {
                serde_json::json!({
                    "path": item(o.index).path, "label": item(o.index).label,
                    "mean_distance": o.mean_distance, "factor": o.factor, "z": o.z,
                })
            })
            .collect(),
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            println!(
                "{} images; median nearest-neighbour distance {:.4}",
                e.items.len(),
                found.median_nearest
            );
            if let Some(a) = found.label_agreement {
                println!(
                    "label agreement of the {} nearest neighbours (leave-one-out): {:.1}%",
                    config.k,
                    100.0 * a
                );
            }
            println!(
                "near-duplicates: {} ({} across splits)",
                found.duplicates.len(),
                found.duplicates.iter().filter(|d| d.cross_split).count()
            );
            for d in &found.duplicates {
                println!(
                    "  {:<5} {:>8.4}  {} ({})  ~  {} ({})",
                    if d.cross_split { "LEAK" } else { "dup" },
                    d.distance,
                    item(d.a).path,
                    place(d.a),
                    item(d.b).path,
                    place(d.b)
                );
            }
            println!("likely mislabelled: {}", found.mislabelled.len());
            for s in &found.mislabelled {
                println!(
                    "  {:>4.0}%  {} ({}) looks like '{}'",
                    100.0 * s.agreement,
                    item(s.index).path,
                    place(s.index),
                    s.suggested
                );
            }
            println!("outliers: {}", found.outliers.len());
            for o in &found.outliers {
                println!(
                    "  z {:>5.1}  {} ({})",
                    o.z,
                    item(o.index).path,
                    place(o.index)
                );
            }
        }
    }
    let json = write_json(&args.out, "audit.json", &report)?;
    let png = args.out.join("audit.png");
    let (w, h) = sheets::sheet(
        &format!(
            "audit of {} images: {} near-duplicates, {} likely mislabelled, {} outliers",
            e.items.len(),
            found.duplicates.len(),
            found.mislabelled.len(),
            found.outliers.len()
        ),
        &sheet_rows(&e, &found),
        96,
        &png,
    )?;
    eprintln!("wrote {} and {} ({w}x{h})", json.display(), png.display());
    Ok(if skipped.is_empty() { 0 } else { 2 })
}

/// Where an image sits: `split/label`, or just the label.
fn place(item: &Item) -> String {
    format!(
        "{}{}",
        item.split
            .as_deref()
            .map(|s| format!("{s}/"))
            .unwrap_or_default(),
        item.label.as_deref().unwrap_or("-")
    )
}

/// The sheet: up to 6 duplicate pairs, 6 suspects (with 5 neighbours each) and one row of
/// up to 8 outliers.
fn sheet_rows(e: &Embeddings, found: &scion_trainer::represent::audit::Audit) -> Vec<Row> {
    let cell = 96;
    let thumb = |i: usize, caption: String, mark| Cell {
        image: sheets::thumbnail(e.items[i].path.as_ref(), cell),
        caption,
        mark,
    };
    let where_ = |i: usize| place(&e.items[i]);
    let mut rows = Vec::new();
    for d in found.duplicates.iter().take(6) {
        rows.push(Row {
            title: format!(
                "{} distance {:.4}",
                if d.cross_split {
                    "leak across splits:"
                } else {
                    "near-duplicate:"
                },
                d.distance
            ),
            cells: vec![
                thumb(d.a, where_(d.a), Some(Mark::Bad)),
                thumb(d.b, where_(d.b), Some(Mark::Bad)),
            ],
        });
    }
    for s in found.mislabelled.iter().take(6) {
        let mut cells = vec![thumb(s.index, where_(s.index), Some(Mark::Reference))];
        cells.extend(s.neighbours.iter().take(5).map(|&n| {
            let agrees = e.items[n].label.as_deref() == Some(s.suggested.as_str());
            thumb(
                n,
                where_(n),
                Some(if agrees { Mark::Bad } else { Mark::Good }),
            )
        }));
        rows.push(Row {
            title: format!(
                "labelled '{}', {:.0}% of its neighbours say '{}': {}",
                e.items[s.index].label.as_deref().unwrap_or("-"),
                100.0 * s.agreement,
                s.suggested,
                short_path(&e.items[s.index].path)
            ),
            cells,
        });
    }
    if !found.outliers.is_empty() {
        rows.push(Row {
            title: "outliers (far from every other image)".into(),
            cells: found
                .outliers
                .iter()
                .take(8)
                .map(|o| thumb(o.index, format!("z {:.1}\n{}", o.z, where_(o.index)), None))
                .collect(),
        });
    }
    rows
}
