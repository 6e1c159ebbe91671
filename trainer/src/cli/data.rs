use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use scion_trainer::idx::{self, FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, Selection};
use scion_trainer::lint::{LintOptions, lint};

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Convert IDX files (MNIST-style, optionally gzipped) into class folders of PNGs.
    ImportIdx(ImportIdxArgs),
    /// Check a data set folder before training: a table of class counts, then errors
    /// (exit 1) and warnings (exit 0).
    Lint(LintArgs),
    /// Find leakage (near-duplicates across train/val/test), likely mislabelled images and
    /// outliers with a model's features: a list, audit.json and a PNG sheet.
    Audit(super::inspect::audit::AuditArgs),
    /// Turn a capture folder pulled off a device (`scion-edge serve`'s capture_dir) into
    /// class folders for `scion train`: a person's label where one was given, else the
    /// model's guess. Rerun after the next pull: only new images are added.
    ImportCaptures(ImportCapturesArgs),
}

#[derive(Debug, Args)]
pub struct ImportCapturesArgs {
    /// The capture folder (DIR/<guess>/<millis>-<seq>.jpg with JSON sidecars).
    #[arg(value_name = "DIR")]
    captures: PathBuf,
    /// The data set folder to add to; images go to OUT/<label>/<millis>-<seq>.jpg.
    #[arg(long, short, value_name = "DIR")]
    out: PathBuf,
    /// Only images whose label a person gave: confirmed on the device's page, or moved
    /// into another folder by hand.
    #[arg(long)]
    confirmed_only: bool,
    /// Keep images the model rejected as unknown, as an `unknown` class.
    #[arg(long)]
    keep_unknown: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    /// Fashion-MNIST from Debian's dataset-fashion-mnist package, with its class names.
    FashionMnist,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Set {
    /// The official training set (60,000 images).
    Train,
    /// The official test set (10,000 images).
    Test,
}

#[derive(Debug, Args)]
pub struct ImportIdxArgs {
    /// A known data set; sets --images, --labels and the class names.
    #[arg(long, value_enum, conflicts_with_all = ["images", "labels"])]
    preset: Option<Preset>,
    /// Which set of the preset.
    #[arg(long, value_enum, default_value_t = Set::Train)]
    set: Set,
    /// The images file (idx3-ubyte, optionally .gz).
    #[arg(long, value_name = "FILE", requires = "labels")]
    images: Option<PathBuf>,
    /// The labels file (idx1-ubyte, optionally .gz).
    #[arg(long, value_name = "FILE", requires = "images")]
    labels: Option<PathBuf>,
    /// Class folder names, one per line, in label order (default: the preset's, or 0, 1, ...).
    #[arg(long, value_name = "FILE")]
    names: Option<PathBuf>,
    /// Take at most N images of each class (the first ones in file order).
    #[arg(long, value_name = "N")]
    per_class: Option<usize>,
    /// Take only the first N images of the file.
    #[arg(long, value_name = "N")]
    first: Option<usize>,
    /// Output folder; images go to OUT/<class>/<set>-<index>.png.
    #[arg(long, short, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// The data set: root/<class>/* or root/{train,val,test}/<class>/*.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Flag classes with fewer images than this.
    #[arg(long, default_value_t = 5)]
    tiny: usize,
    /// Flag a split whose largest class is this many times its smallest.
    #[arg(long, default_value_t = 3.0)]
    imbalance: f32,
}

pub fn run(cmd: DataCommand) -> Result<i32> {
    match cmd {
        DataCommand::ImportIdx(args) => import_idx(args).map(|_| 0),
        DataCommand::Audit(args) => super::inspect::audit::run_audit(args),
        DataCommand::ImportCaptures(args) => {
            let report = scion_trainer::captures::import_captures(
                &args.captures,
                &args.out,
                scion_trainer::captures::ImportOptions {
                    confirmed_only: args.confirmed_only,
                    keep_unknown: args.keep_unknown,
                },
            )?;
            print!("{}", report.render(&args.out));
            Ok(if report.bad.is_empty() { 0 } else { 2 })
        }
        DataCommand::Lint(args) => {
            let report = lint(
                &args.dir,
                LintOptions {
                    tiny: args.tiny,
                    imbalance: args.imbalance,
                },
            )?;
            print!("{}", report.render());
            Ok(if report.has_errors() { 1 } else { 0 })
        }
    }
}

fn import_idx(args: ImportIdxArgs) -> Result<()> {
    let (images, labels, preset_names) = match (args.preset, &args.images, &args.labels) {
        (Some(Preset::FashionMnist), _, _) => {
            let stem = if args.set == Set::Train {
                "train"
            } else {
                "t10k"
            };
            let dir = PathBuf::from(FASHION_MNIST_DIR);
            anyhow::ensure!(
                dir.is_dir(),
                "{FASHION_MNIST_DIR} not found; install Debian's dataset-fashion-mnist (scripts/setup.sh does)"
            );
            (
                dir.join(format!("{stem}-images-idx3-ubyte.gz")),
                dir.join(format!("{stem}-labels-idx1-ubyte.gz")),
                Some(
                    FASHION_MNIST_CLASSES
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>(),
                ),
            )
        }
        (None, Some(i), Some(l)) => (i.clone(), l.clone(), None),
        _ => anyhow::bail!("give --preset, or both --images and --labels"),
    };
    let images = idx::read_images(&images)?;
    let labels = idx::read_labels(&labels)?;
    let names = match (&args.names, preset_names) {
        (Some(f), _) => std::fs::read_to_string(f)
            .with_context(|| format!("reading --names {}", f.display()))?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        (None, Some(n)) => n,
        (None, None) => {
            let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
            (0..classes).map(|c| c.to_string()).collect()
        }
    };
    let prefix = if args.set == Set::Train {
        "train"
    } else {
        "test"
    };
    let selection = Selection {
        per_class: args.per_class,
        first: args.first,
    };
    let counts = idx::export(&images, &labels, &names, selection, &args.out, prefix)?;
    let total: usize = counts.iter().sum();
    println!(
        "{}: {total} images of {}x{} in {} classes ({} per class at most)",
        args.out.display(),
        images.cols,
        images.rows,
        counts.iter().filter(|c| **c > 0).count(),
        counts.iter().max().copied().unwrap_or(0)
    );
    Ok(())
}
