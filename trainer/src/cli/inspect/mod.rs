//! The commands that look inside a representation: `embed`, `merge`, `similar`,
//! `project`, `activations`, `filters`, `probe` and `data audit`. What they share: how
//! features are computed (the cached pipeline of `scion train`) and how an index is
//! opened (an embeddings file, or a folder embedded on the spot).

pub mod activations;
pub mod audit;
pub mod embed;
pub mod probe;
pub mod similar;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use scion_edge::engine::EngineOptions;
use scion_trainer::device::DeviceKind;
use scion_trainer::represent::embedding::{Embeddings, Item, Provenance};
use scion_trainer::represent::extractor::{ExtractOptions, Extractor, Spatial};

/// How features are computed: shared by every command that runs a model over images.
#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Folder of cached features (shared with `scion train`: the same backbone, tensor and
    /// image are computed once).
    #[arg(long, default_value = ".scion/cache", value_name = "DIR")]
    cache: PathBuf,
    /// Where the model runs: ONNX Runtime on the CPU, or its CUDA provider.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Decode threads (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Images per engine call.
    #[arg(long = "extract-batch", default_value_t = 32, value_name = "N")]
    batch: usize,
    /// Path of libonnxruntime.so (default: $ORT_DYLIB_PATH, then beside the executable).
    #[arg(long, value_name = "FILE")]
    ort_lib: Option<PathBuf>,
}

impl ExtractArgs {
    fn options(&self) -> ExtractOptions {
        ExtractOptions {
            cache_dir: self.cache.clone(),
            engine: self.device.feature_engine(),
            engine_options: EngineOptions {
                threads: 0,
                ort_library: self.ort_lib.clone(),
                spin_wait: false,
                ..Default::default()
            },
            threads: self.threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
            }),
            batch: self.batch,
        }
    }

    /// Open `model` cut at `tensor` (`flag` names the option in errors).
    pub fn open(
        &self,
        model: &Path,
        tensor: Option<&str>,
        flag: &str,
        spatial: Spatial,
    ) -> Result<Extractor> {
        // The error names the model file already.
        Ok(Extractor::open(
            model,
            tensor,
            flag,
            spatial,
            &self.options(),
        )?)
    }
}

/// Features of `items` as an embeddings set; unreadable images are left out, logged and
/// returned. A progress bar runs on a terminal; Ctrl-C stops with what is cached kept.
pub fn embed_items(
    extractor: &mut Extractor,
    items: Vec<Item>,
    what: &str,
    shard: Option<String>,
) -> Result<(Embeddings, Vec<(PathBuf, String)>)> {
    let paths: Vec<PathBuf> = items.iter().map(|i| PathBuf::from(&i.path)).collect();
    let bar = ProgressBar::new(paths.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {per_sec:>12} eta {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    let interrupt = interrupted();
    let extracted = extractor.features(&paths, &mut |done| {
        bar.set_position(done as u64);
        !interrupt.load(Ordering::Relaxed)
    });
    bar.finish_and_clear();
    let extracted = extracted.with_context(|| format!("computing {what}"))?;
    let s = &extracted.stats;
    tracing::info!(
        "{what}: {} images, {} computed, {} cached, {} skipped",
        paths.len(),
        s.computed,
        s.cached,
        s.failed.len()
    );
    let mut kept = Vec::with_capacity(items.len());
    let mut data = Vec::with_capacity(items.len() * extractor.dim);
    for (item, f) in items.into_iter().zip(extracted.features) {
        if let Some(f) = f {
            data.extend(f);
            kept.push(item);
        }
    }
    let embeddings = Embeddings {
        items: kept,
        dim: extractor.dim,
        data,
        provenance: Provenance {
            // Absolute, so `similar` finds the model from any working directory.
            model: std::fs::canonicalize(&extractor.backbone.model.path)
                .unwrap_or_else(|_| extractor.backbone.model.path.clone())
                .to_string_lossy()
                .into_owned(),
            model_sha256: extractor.model_sha256().to_string(),
            tensor: extractor.tensor.clone(),
            pooled: extractor.pooled(),
            shard,
        },
    };
    Ok((embeddings, extracted.stats.failed))
}

/// The Ctrl-C flag (installed once per process).
pub fn interrupted() -> &'static AtomicBool {
    static FLAG: std::sync::OnceLock<&'static AtomicBool> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        if let Err(e) = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: stopping; features computed so far are cached");
        }) {
            tracing::warn!("cannot install the Ctrl-C handler: {e}");
        }
        flag
    })
}

/// Where an index comes from: an embeddings file, or a folder of images embedded now.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// The images to search or plot: an embeddings file from `scion embed`, or a folder
    /// (embedded now, through the cache).
    #[arg(long, value_name = "DATA|FILE")]
    index: PathBuf,
    /// The model (default: the one the embeddings file was built with). Must be the same
    /// model as the index's: vectors of different models are not comparable.
    #[arg(long, value_name = "MODEL")]
    model: Option<PathBuf>,
    /// The tensor (default: the index file's, or the card's feature tensor).
    #[arg(long, value_name = "NAME")]
    tensor: Option<String>,
    #[command(flatten)]
    extract: ExtractArgs,
}

impl IndexArgs {
    /// The index's embeddings and the extractor that computes comparable vectors.
    pub fn open(&self) -> Result<(Embeddings, Extractor)> {
        if self.index.is_file() {
            let embeddings = Embeddings::load(&self.index)?;
            let p = &embeddings.provenance;
            let model = match &self.model {
                Some(m) => m.clone(),
                None => {
                    let m = PathBuf::from(&p.model);
                    if !m.is_file() {
                        bail!(
                            "{}: built with {}, which is not there; pass --model",
                            self.index.display(),
                            p.model
                        );
                    }
                    m
                }
            };
            let tensor = self.tensor.as_deref().unwrap_or(&p.tensor);
            let spatial = if p.pooled {
                Spatial::Mean
            } else {
                Spatial::Flatten
            };
            let extractor = self
                .extract
                .open(&model, Some(tensor), "--tensor", spatial)?;
            embeddings.check_same_source(
                &self.index,
                extractor.model_sha256(),
                &model,
                &extractor.tensor,
            )?;
            Ok((embeddings, extractor))
        } else {
            let Some(model) = &self.model else {
                bail!(
                    "--index {}: a folder is embedded now, so --model is needed",
                    self.index.display()
                );
            };
            let mut extractor =
                self.extract
                    .open(model, self.tensor.as_deref(), "--tensor", Spatial::Mean)?;
            let items = scion_trainer::represent::embedding::scan_images(&self.index)?;
            let (embeddings, skipped) = embed_items(&mut extractor, items, "index", None)?;
            warn_skipped(&skipped);
            Ok((embeddings, extractor))
        }
    }
}

/// One warning line for images left out (each was logged with its reason).
pub fn warn_skipped(skipped: &[(PathBuf, String)]) {
    if !skipped.is_empty() {
        eprintln!(
            "warning: {} unreadable images skipped (listed above)",
            skipped.len()
        );
    }
}

/// Write `value` as pretty JSON to `dir/name` (creating `dir`); returns the path.
pub fn write_json(dir: &Path, name: &str, value: &impl serde::Serialize) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// How a command prints its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table for people.
    Table,
    /// JSON on stdout, for programs.
    Json,
}

/// A file name for a row of a sheet or table: the last two path parts.
pub fn short_path(path: &str) -> String {
    let p = Path::new(path);
    let parts: Vec<String> = p
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}
