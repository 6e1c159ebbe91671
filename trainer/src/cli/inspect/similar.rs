//! `scion similar`: nearest neighbours of query images in an index.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use scion_trainer::represent::embedding::scan_images;
use scion_trainer::represent::knn::{Index, Metric};
use scion_trainer::sheets::{self, Cell, Mark, Row};

use super::{Format, IndexArgs, embed_items, short_path, warn_skipped};

/// Find the images most like each query: nearest neighbours of their features
/// (penultimate "FC7" layer by default), exact search.
#[derive(Debug, Args)]
pub struct SimilarArgs {
    #[command(flatten)]
    index: IndexArgs,
    /// Query images (files or folders).
    #[arg(long, value_name = "IMG", required = true, num_args = 1..)]
    query: Vec<PathBuf>,
    /// Neighbours per query.
    #[arg(short, long, default_value_t = 8)]
    k: usize,
    /// Distance: euclidean (as in the lecture) or cosine.
    #[arg(long, value_enum, default_value_t = Metric::Euclidean)]
    metric: Metric,
    /// Output on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Also draw a contact sheet: each query, then its neighbours with distance and label
    /// (green frame: same label as the query's folder, red: another).
    #[arg(long, value_name = "PNG")]
    sheet: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Found<'a> {
    path: &'a str,
    label: Option<&'a str>,
    distance: f32,
}

#[derive(serde::Serialize)]
struct Answer<'a> {
    query: &'a str,
    neighbours: Vec<Found<'a>>,
}

pub fn run_similar(args: SimilarArgs) -> Result<i32> {
    if args.k == 0 {
        bail!("-k must be at least 1");
    }
    let (mut index_embeddings, mut extractor) = args.index.open()?;
    if index_embeddings.items.is_empty() {
        bail!("--index {}: no usable images", args.index.index.display());
    }
    let mut items = Vec::new();
    for q in &args.query {
        items.extend(scan_images(q)?);
    }
    // A query file in a folder named like one of the index's labels carries that label
    // (so the sheet can mark neighbours that agree).
    let (index_labels, _) = index_embeddings.label_indices();
    for item in items.iter_mut().filter(|i| i.label.is_none()) {
        item.label = std::path::Path::new(&item.path)
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| index_labels.contains(n));
    }
    let (queries, skipped) = embed_items(&mut extractor, items, "queries", None)?;
    warn_skipped(&skipped);
    // The index takes the vectors (no second copy); the items stay for the answers.
    let index = Index::new(
        std::mem::take(&mut index_embeddings.data),
        index_embeddings.dim,
        args.metric,
    );
    let results = index.search(&queries.data, args.k);
    let answers: Vec<Answer> = queries
        .items
        .iter()
        .zip(&results)
        .map(|(q, nn)| Answer {
            query: &q.path,
            neighbours: nn
                .iter()
                .map(|n| {
                    let item = &index_embeddings.items[n.index];
                    Found {
                        path: &item.path,
                        label: item.label.as_deref(),
                        distance: n.distance,
                    }
                })
                .collect(),
        })
        .collect();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&answers)?),
        Format::Table => {
            for a in &answers {
                println!("{}", a.query);
                for (rank, n) in a.neighbours.iter().enumerate() {
                    println!(
                        "  {:>3}  {:>9.4}  {:<16}  {}",
                        rank + 1,
                        n.distance,
                        n.label.unwrap_or("-"),
                        n.path
                    );
                }
            }
        }
    }
    if let Some(path) = &args.sheet {
        let cell = 112;
        let rows: Vec<Row> = queries
            .items
            .iter()
            .zip(&answers)
            .map(|(q, a)| {
                let mut cells = vec![Cell {
                    image: sheets::thumbnail(q.path.as_ref(), cell),
                    caption: format!("query\n{}", q.label.as_deref().unwrap_or("")),
                    mark: Some(Mark::Reference),
                }];
                cells.extend(a.neighbours.iter().map(|n| Cell {
                    image: sheets::thumbnail(n.path.as_ref(), cell),
                    caption: format!("d {:.3}\n{}", n.distance, n.label.unwrap_or("-")),
                    mark: match (&q.label, n.label) {
                        (Some(a), Some(b)) if a == b => Some(Mark::Good),
                        (Some(_), Some(_)) => Some(Mark::Bad),
                        _ => None,
                    },
                }));
                Row {
                    title: short_path(&q.path),
                    cells,
                }
            })
            .collect();
        let heading = format!(
            "{} nearest neighbours by {} distance of '{}' among {} images",
            args.k,
            match args.metric {
                Metric::Euclidean => "Euclidean",
                Metric::Cosine => "cosine",
            },
            extractor.tensor,
            index_embeddings.items.len()
        );
        let (w, h) = sheets::sheet(&heading, &rows, cell, path)?;
        eprintln!("wrote {} ({w}x{h})", path.display());
    }
    Ok(if skipped.is_empty() { 0 } else { 2 })
}
