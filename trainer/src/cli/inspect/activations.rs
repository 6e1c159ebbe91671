//! `scion activations` (the images that most activate a unit) and `scion filters` (the
//! first layer's filters, or one layer's activation maps over an image).

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use clap::Args;
use image::{Rgb, RgbImage};
use scion_trainer::represent::embedding::{Embeddings, scan_images};
use scion_trainer::represent::extractor::Spatial;
use scion_trainer::represent::filters::first_conv;
use scion_trainer::sheets::{self, Cell, Mark, Row};

use super::{ExtractArgs, Format, embed_items, short_path, warn_skipped};

/// Which units to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Units {
    /// These units.
    List(Vec<usize>),
    /// The N most selective units: those whose top images stand out most from the rest.
    Top(usize),
}

impl FromStr for Units {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(n) = s.strip_prefix("top:") {
            let n: usize = n
                .parse()
                .map_err(|_| format!("'{s}': expected top:N, e.g. top:8"))?;
            if n == 0 {
                return Err(format!("'{s}': N must be at least 1"));
            }
            return Ok(Units::Top(n));
        }
        s.split(',')
            .map(|u| {
                u.trim()
                    .parse()
                    .map_err(|_| format!("'{u}': expected a unit number, a list (3,7) or top:N"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Units::List)
    }
}

/// Show the images that most activate a unit of a layer (for a conv tensor, a unit is a
/// channel and its activation is the channel's mean over positions).
#[derive(Debug, Args)]
pub struct ActivationsArgs {
    /// The model with a card.
    #[arg(long, value_name = "MODEL")]
    model: PathBuf,
    /// The images to rank.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// The unit(s): a number, a list (3,7,12), or top:N for the N most selective units
    /// (whose top images stand out most, in standard deviations, from all images).
    #[arg(long, visible_alias = "units", value_name = "U|U,V|top:N")]
    unit: Units,
    /// The tensor (default: the card's feature tensor).
    #[arg(long, value_name = "NAME")]
    tensor: Option<String>,
    /// Images per unit.
    #[arg(short, long, default_value_t = 9)]
    k: usize,
    /// The PNG grid: one row per unit.
    #[arg(long, short, default_value = "activations.png", value_name = "PNG")]
    out: PathBuf,
    /// Output on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(flatten)]
    extract: ExtractArgs,
}

#[derive(serde::Serialize)]
struct UnitImages<'a> {
    unit: usize,
    selectivity: f32,
    images: Vec<Activated<'a>>,
}

#[derive(serde::Serialize)]
struct Activated<'a> {
    path: &'a str,
    label: Option<&'a str>,
    activation: f32,
}

pub fn run_activations(args: ActivationsArgs) -> Result<i32> {
    if args.k == 0 {
        bail!("-k must be at least 1");
    }
    let mut extractor = args.extract.open(
        &args.model,
        args.tensor.as_deref(),
        "--tensor",
        Spatial::Mean,
    )?;
    let units = extractor.units();
    if let Units::List(list) = &args.unit
        && let Some(bad) = list.iter().find(|&&u| u >= units)
    {
        bail!(
            "--unit {bad}: out of range: tensor '{}' has {units} units (0..={})",
            extractor.tensor,
            units - 1
        );
    }
    let items = scan_images(&args.data)?;
    let (embeddings, skipped) = embed_items(&mut extractor, items, "activations", None)?;
    warn_skipped(&skipped);
    if embeddings.items.is_empty() {
        bail!("--data {}: no usable images", args.data.display());
    }
    let k = args.k.min(embeddings.items.len());
    let selectivity: Vec<f32> = (0..units)
        .map(|u| unit_selectivity(&embeddings, u, k))
        .collect();
    let chosen: Vec<usize> = match &args.unit {
        Units::List(list) => list.clone(),
        Units::Top(n) => {
            let mut order: Vec<usize> = (0..units).collect();
            order.sort_by(|&a, &b| selectivity[b].total_cmp(&selectivity[a]));
            order.truncate(*n);
            order
        }
    };
    let found: Vec<UnitImages> = chosen
        .iter()
        .map(|&u| UnitImages {
            unit: u,
            selectivity: selectivity[u],
            images: top_images(&embeddings, u, k)
                .into_iter()
                .map(|(i, activation)| Activated {
                    path: &embeddings.items[i].path,
                    label: embeddings.items[i].label.as_deref(),
                    activation,
                })
                .collect(),
        })
        .collect();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&found)?),
        Format::Table => {
            for f in &found {
                println!("unit {} (selectivity {:.2})", f.unit, f.selectivity);
                for a in &f.images {
                    println!(
                        "  {:>9.4}  {:<16}  {}",
                        a.activation,
                        a.label.unwrap_or("-"),
                        a.path
                    );
                }
            }
        }
    }
    let cell = 96;
    let rows: Vec<Row> = found
        .iter()
        .map(|f| Row {
            title: format!("unit {}  (selectivity {:.2})", f.unit, f.selectivity),
            cells: f
                .images
                .iter()
                .map(|a| Cell {
                    image: sheets::thumbnail(a.path.as_ref(), cell),
                    caption: format!("{:.3}\n{}", a.activation, a.label.unwrap_or("")),
                    mark: None,
                })
                .collect(),
        })
        .collect();
    let heading = format!(
        "top {k} of {} images per unit of '{}'{}",
        embeddings.items.len(),
        extractor.tensor,
        if extractor.pooled() {
            " (channel means)"
        } else {
            ""
        }
    );
    let (w, h) = sheets::sheet(&heading, &rows, cell, &args.out)?;
    eprintln!("wrote {} ({w}x{h})", args.out.display());
    Ok(if skipped.is_empty() { 0 } else { 2 })
}

/// The `k` images with the highest value of `unit`, highest first.
fn top_images(e: &Embeddings, unit: usize, k: usize) -> Vec<(usize, f32)> {
    let mut all: Vec<(usize, f32)> = (0..e.items.len())
        .map(|i| (i, e.data[i * e.dim + unit]))
        .collect();
    // Selection, then a sort of the k: this runs once per unit for `top:N`.
    let order = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k < all.len() {
        all.select_nth_unstable_by(k, order);
        all.truncate(k);
    }
    all.sort_by(order);
    all
}

/// How far a unit's top `k` images stand out: their mean minus the mean of all images,
/// in standard deviations of all images (0 for a unit that never varies).
fn unit_selectivity(e: &Embeddings, unit: usize, k: usize) -> f32 {
    let n = e.items.len();
    let values: Vec<f64> = (0..n)
        .map(|i| f64::from(e.data[i * e.dim + unit]))
        .collect();
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    if std < 1e-9 {
        return 0.0;
    }
    let top = top_images(e, unit, k);
    let top_mean = top.iter().map(|(_, v)| f64::from(*v)).sum::<f64>() / top.len() as f64;
    ((top_mean - mean) / std) as f32
}

/// Draw the first convolution's filters as a colour grid (each filter scaled to its own
/// range), or, with --image and --tensor, that layer's activation maps over the image.
#[derive(Debug, Args)]
pub struct FiltersArgs {
    /// The model.
    #[arg(long, value_name = "MODEL")]
    model: PathBuf,
    /// Show the activation maps of --tensor over this image instead of the filters.
    #[arg(long, value_name = "IMG", requires = "tensor")]
    image: Option<PathBuf>,
    /// The spatial tensor whose maps are drawn (with --image).
    #[arg(long, value_name = "NAME", requires = "image")]
    tensor: Option<String>,
    /// At most this many maps, the most active first.
    #[arg(long, default_value_t = 32, value_name = "N")]
    max_maps: usize,
    /// The PNG (default: filters.png, or maps.png with --image).
    #[arg(long, short, value_name = "PNG")]
    out: Option<PathBuf>,
    #[command(flatten)]
    extract: ExtractArgs,
}

pub fn run_filters(args: FiltersArgs) -> Result<i32> {
    match (&args.image, &args.tensor) {
        (Some(image), Some(tensor)) => activation_maps(&args, image, tensor),
        _ => filter_grid(&args),
    }
}

fn filter_grid(args: &FiltersArgs) -> Result<i32> {
    let model = scion_edge::Model::load(&args.model, &Default::default())
        .with_context(|| format!("opening {}", args.model.display()))?;
    let filters =
        first_conv(&model.proto).map_err(|e| anyhow::anyhow!("{}: {e}", args.model.display()))?;
    let (kh, kw) = (filters.kh as u32, filters.kw as u32);
    let plane = filters.kh * filters.kw;
    let cells: Vec<Cell> = (0..filters.out)
        .map(|f| {
            let w = filters.filter(f);
            let (lo, hi) = w
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let span = if hi > lo { hi - lo } else { 1.0 };
            let level = |v: f32| (255.0 * (v - lo) / span).round() as u8;
            let image = RgbImage::from_fn(kw, kh, |x, y| {
                let at = (y * kw + x) as usize;
                if filters.inputs >= 3 {
                    Rgb([level(w[at]), level(w[plane + at]), level(w[2 * plane + at])])
                } else {
                    let g = level(w[at]);
                    Rgb([g, g, g])
                }
            });
            Cell {
                image,
                caption: f.to_string(),
                mark: None,
            }
        })
        .collect();
    let per_row = 16;
    let rows: Vec<Row> = cells
        .chunks(per_row)
        .enumerate()
        .map(|(r, c)| Row {
            title: format!("filters {}-{}", r * per_row, r * per_row + c.len() - 1),
            cells: c.to_vec(),
        })
        .collect();
    let heading = format!(
        "first convolution '{}': {} filters of {}x{}x{}{}",
        filters.node,
        filters.out,
        filters.inputs,
        kh,
        kw,
        if filters.inputs >= 3 {
            " (RGB, each scaled to its own range)"
        } else {
            " (first input channel)"
        }
    );
    let out = args.out.clone().unwrap_or_else(|| "filters.png".into());
    let (w, h) = sheets::sheet(&heading, &rows, 48, &out)?;
    println!("wrote {} ({w}x{h}): {heading}", out.display());
    Ok(0)
}

fn activation_maps(args: &FiltersArgs, image: &std::path::Path, tensor: &str) -> Result<i32> {
    let mut extractor =
        args.extract
            .open(&args.model, Some(tensor), "--tensor", Spatial::Flatten)?;
    let [channels, h, w] = extractor.shape[..] else {
        bail!(
            "--tensor {tensor}: shape {:?} per image is not a spatial map [C, H, W]; pick a \
             convolution's output",
            extractor.shape
        );
    };
    let items = scan_images(image)?;
    let (embeddings, skipped) = embed_items(&mut extractor, items, "maps", None)?;
    if let Some((path, reason)) = skipped.first() {
        bail!("{}: {reason}", path.display());
    }
    let values = embeddings.row(0);
    let plane = h * w;
    let mut order: Vec<(usize, f32)> = (0..channels)
        .map(|c| {
            (
                c,
                values[c * plane..(c + 1) * plane].iter().sum::<f32>() / plane as f32,
            )
        })
        .collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    order.truncate(args.max_maps.max(1));
    let cell = 96;
    let mut rows = vec![Row {
        title: short_path(&embeddings.items[0].path),
        cells: vec![Cell {
            image: sheets::thumbnail(image, cell),
            caption: "input".into(),
            mark: Some(Mark::Reference),
        }],
    }];
    let per_row = 8;
    for chunk in order.chunks(per_row) {
        rows.push(Row {
            title: String::new(),
            cells: chunk
                .iter()
                .map(|&(c, mean)| Cell {
                    image: sheets::heatmap(&values[c * plane..(c + 1) * plane], w as u32, h as u32),
                    caption: format!("ch {c}\nmean {mean:.3}"),
                    mark: None,
                })
                .collect(),
        });
    }
    let heading = format!(
        "'{}' over the image: {} of {channels} maps of {h}x{w}, most active first",
        extractor.tensor,
        order.len()
    );
    let out = args.out.clone().unwrap_or_else(|| "maps.png".into());
    let (pw, ph) = sheets::sheet(&heading, &rows, cell, &out)?;
    println!("wrote {} ({pw}x{ph}): {heading}", out.display());
    Ok(0)
}
