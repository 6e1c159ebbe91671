use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use scion_edge::engine::{EngineKind, EngineOptions};
use scion_trainer::device::DeviceKind;
use scion_trainer::finetune::TuneConfig;
use scion_trainer::fit::{
    ClassWeight, EpochRecord, FitConfig, FitObserver, OptimizerKind, Sampler, Trained,
};
use scion_trainer::head::HeadSpec;
use scion_trainer::net::freeze::Unfreeze;
use scion_trainer::train::{TrainJob, TrainObserver, run};

/// Train a new head on a pretrained backbone (optionally with its last layers, or the
/// whole network from scratch) and export one self-describing ONNX model (backbone + head
/// + softmax + card), checked on every engine.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Where to write the exported model.
    #[arg(long, short, value_name = "MODEL.onnx")]
    out: PathBuf,
    /// Folder for metrics.json, plots and the checkpoint (default: beside --out).
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Backbone layers that train with the head: `none` (the head alone, on cached
    /// features), `last:N` (the last N blocks found in the graph), `from:TENSOR`
    /// (everything computed from that tensor on) or `all`. Frozen layers in front run
    /// once and are cached.
    #[arg(long, default_value = "none", value_name = "POLICY")]
    unfreeze: Unfreeze,
    /// Train the backbone's architecture from freshly initialised weights (He init), every
    /// layer, at the head's learning rate: the baseline that shows what pretraining buys.
    #[arg(long, conflicts_with = "unfreeze")]
    from_scratch: bool,
    #[command(flatten)]
    setup: TrainSetup,
}

/// What `scion train` and `scion experiment` share: data, backbone and how to train.
#[derive(Debug, Args)]
pub struct TrainSetup {
    /// The backbone ONNX with a model card (e.g. from `scion-edge import`).
    #[arg(long, value_name = "MODEL")]
    pub backbone: PathBuf,
    /// Labelled images: DIR/<class>/* or DIR/{train,val}/<class>/*.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// The head: `linear`, or `mlp:N` (a hidden layer of N with ReLU and dropout).
    #[arg(long, default_value = "linear", value_name = "linear|mlp:N")]
    head: HeadSpec,
    /// Maximum epochs of mini-batch training (mlp heads and fine-tuning; a linear head
    /// on frozen features is solved exactly instead).
    #[arg(long, default_value_t = FitConfig::default().epochs)]
    pub epochs: usize,
    /// The linear head's inverse L2 strengths to try, comma-separated (scikit-learn's C:
    /// smaller is stronger); the best on the validation split wins. One value fixes it.
    /// Default: 11 values from 0.001 to 100, log-spaced.
    #[arg(long = "c", value_name = "C,...", value_delimiter = ',')]
    c_grid: Option<Vec<f64>>,
    /// After choosing C on the validation split, retrain the linear head on training +
    /// validation images at that C (the metrics reported stay those measured before).
    #[arg(long)]
    refit: bool,
    /// Weigh classes in the loss: `balanced` gives every class the same total weight.
    #[arg(long, value_enum, default_value_t = ClassWeight::None)]
    class_weight: ClassWeight,
    /// How mini-batches are drawn: `balanced` draws every class equally often.
    #[arg(long, value_enum, default_value_t = Sampler::Shuffle)]
    sampler: Sampler,
    /// Fit an "unknown" rule on the validation split (`off`: the model always names a
    /// class).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    unknown: Switch,
    /// Share of validation images the unknown rule must keep.
    #[arg(long, default_value_t = 0.95, value_name = "FRACTION")]
    unknown_recall: f32,
    /// Peak learning rate of the head (cosine-decayed to zero).
    #[arg(long, default_value_t = FitConfig::default().lr)]
    lr: f64,
    /// The backbone's learning rate is the head's times this (default 0.1 when
    /// fine-tuning, 1 from scratch).
    #[arg(long, value_name = "SCALE")]
    backbone_lr_scale: Option<f64>,
    /// Mini-batch size.
    #[arg(long, default_value_t = FitConfig::default().batch)]
    batch: usize,
    /// Examples per forward/backward pass when backbone layers train; a batch's
    /// micro-batch gradients are summed before one step. Bounds memory (e.g. 8 on a
    /// 4 GB board) without changing the optimisation. Default: the whole batch.
    #[arg(long, value_name = "N")]
    micro_batch: Option<usize>,
    /// Keep every batch norm in inference mode (running statistics frozen), even in
    /// layers that train.
    #[arg(long)]
    freeze_batch_norm: bool,
    /// Seed of the validation split, the initial weights, shuffles and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adamw)]
    optimizer: OptimizerKind,
    /// Weight decay.
    #[arg(long, default_value_t = FitConfig::default().weight_decay)]
    weight_decay: f64,
    /// Label smoothing of the training loss (0 to disable).
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// Dropout before the output layer of an mlp head.
    #[arg(long, default_value_t = FitConfig::default().dropout)]
    dropout: f64,
    /// Stop after N epochs without a lower validation loss (0: never).
    #[arg(long, default_value_t = FitConfig::default().patience, value_name = "N")]
    patience: usize,
    /// Fraction of each class held out for validation when DIR has no val/ folder.
    #[arg(long, default_value_t = 0.2, value_name = "FRACTION")]
    val_split: f32,
    /// Where training runs and features are computed.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// The backbone tensor the head reads (default: found automatically).
    #[arg(long, value_name = "NAME")]
    feature_tensor: Option<String>,
    /// Folder of cached backbone features.
    #[arg(long, default_value = ".scion/cache", value_name = "DIR")]
    cache: PathBuf,
    /// Decode threads (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Images per backbone call.
    #[arg(long, default_value_t = 32, value_name = "N")]
    extract_batch: usize,
    /// Train on N augmented views of each image (random resized crop, flip, colour
    /// jitter), one per epoch in turn, instead of the plain view. Each view's features are
    /// cached like the plain ones. When every layer trains, any N > 0 means a fresh view
    /// every epoch.
    #[arg(long, default_value_t = 0, value_name = "N")]
    aug_views: usize,
    /// Keep decoded images in memory between views (on by itself for 2+ views).
    #[arg(long)]
    keep_decoded: bool,
    /// Largest probability difference the parity check allows.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f32,
    /// Path of libonnxruntime.so (default: $ORT_DYLIB_PATH, then beside the executable).
    #[arg(long, value_name = "FILE")]
    ort_lib: Option<PathBuf>,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl TrainSetup {
    /// The job for one run: `unfreeze` / `from_scratch` say what trains.
    pub fn job(
        &self,
        out: PathBuf,
        report: Option<PathBuf>,
        unfreeze: Unfreeze,
        from_scratch: bool,
    ) -> Result<TrainJob> {
        if !(0.0..1.0).contains(&self.label_smoothing) {
            bail!(
                "--label-smoothing {} must be in [0, 1)",
                self.label_smoothing
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("--dropout {} must be in [0, 1)", self.dropout);
        }
        if self.epochs == 0 || self.batch == 0 || self.micro_batch == Some(0) {
            bail!("--epochs, --batch and --micro-batch must be at least 1");
        }
        if !(self.unknown_recall > 0.0 && self.unknown_recall < 1.0) {
            bail!(
                "--unknown-recall {} must be between 0 and 1",
                self.unknown_recall
            );
        }
        if let Some(grid) = &self.c_grid
            && (grid.is_empty() || grid.iter().any(|c| !(*c > 0.0 && c.is_finite())))
        {
            bail!("--c takes positive numbers, e.g. --c 0.1,1,10");
        }
        if self.refit
            && (self.head != HeadSpec::Linear || unfreeze != Unfreeze::None || from_scratch)
        {
            bail!(
                "--refit retrains the linear head on frozen features: it needs --head linear \
                 and no --unfreeze or --from-scratch"
            );
        }
        if let Some(scale) = self.backbone_lr_scale
            && !(scale > 0.0 && scale.is_finite())
        {
            bail!("--backbone-lr-scale {scale} must be a positive number");
        }
        let threads = self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
        });
        let report_dir = report.unwrap_or_else(|| {
            let stem = out
                .file_stem()
                .map_or("model".into(), |s| s.to_string_lossy().into_owned());
            out.with_file_name(format!("{stem}.report"))
        });
        let mut parity_engines = vec![EngineKind::OrtCpu, EngineKind::Tract];
        if self.device == DeviceKind::Cuda {
            parity_engines.insert(0, EngineKind::Cuda);
        }
        Ok(TrainJob {
            backbone: self.backbone.clone(),
            data: self.data.clone(),
            out,
            report_dir,
            cache_dir: self.cache.clone(),
            feature_tensor: self.feature_tensor.clone(),
            val_split: self.val_split,
            fit: FitConfig {
                head: self.head,
                epochs: self.epochs,
                lr: self.lr,
                batch: self.batch,
                seed: self.seed,
                optimizer: self.optimizer,
                weight_decay: self.weight_decay,
                label_smoothing: self.label_smoothing,
                dropout: self.dropout,
                patience: self.patience,
                warmup_steps: 0,
                class_weight: self.class_weight,
                sampler: self.sampler,
                grid: self
                    .c_grid
                    .clone()
                    .unwrap_or_else(|| scion_trainer::linear::DEFAULT_GRID.to_vec()),
                refit: self.refit,
            },
            unfreeze,
            from_scratch,
            tune: TuneConfig {
                backbone_lr_scale: self.backbone_lr_scale.unwrap_or(if from_scratch {
                    1.0
                } else {
                    0.1
                }),
                micro_batch: self.micro_batch.unwrap_or(0),
                ..TuneConfig::default()
            },
            freeze_batch_norm: self.freeze_batch_norm,
            device: self.device,
            threads,
            extract_batch: self.extract_batch,
            keep_decoded: self.keep_decoded,
            aug_views: self.aug_views,
            engine: EngineOptions {
                threads: 0,
                ort_library: self.ort_lib.clone(),
                spin_wait: false,
                ..Default::default()
            },
            parity_engines,
            tolerance: self.tolerance,
            unknown_recall: (self.unknown == Switch::On).then_some(self.unknown_recall),
        })
    }
}

/// Ctrl-C sets the flag; a second one quits at once.
pub fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: finishing with the best epoch so far (Ctrl-C again to quit)");
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(interrupt)
}

pub fn run_train(args: TrainArgs) -> Result<i32> {
    let job = args
        .setup
        .job(args.out, args.report, args.unfreeze, args.from_scratch)?;
    let interrupt = interrupt_flag()?;
    let mut bars = Bars::default();
    let report = run(&job, &interrupt, &mut bars)
        .with_context(|| format!("training on {}", job.data.display()))?;
    bars.clear();
    println!("validation: {}", report.metrics.summary());
    for p in &report.parity {
        println!(
            "parity {:<8} {} images, {} top-1 mismatches, max |Δp| {:.2e} (≤ {:.0e}): {}",
            p.engine,
            p.images,
            p.top1_mismatches,
            p.max_prob_diff,
            p.tolerance,
            if p.passed { "ok" } else { "FAILED" }
        );
    }
    if !report.skipped.is_empty() {
        eprintln!(
            "warning: {} unreadable images skipped (listed above)",
            report.skipped.len()
        );
    }
    println!(
        "wrote {} and {}/ (metrics.json, run.json, confusion.png, reliability.png, worst.png)",
        report.model.display(),
        job.report_dir.display()
    );
    if !report.parity_passed() {
        eprintln!("Error: the exported model does not match the trainer on every engine");
        return Ok(1);
    }
    Ok(0)
}

/// Progress bars on stderr: one per stage, one per epoch.
#[derive(Default)]
pub struct Bars {
    bar: Option<ProgressBar>,
}

impl Bars {
    fn new_bar(&mut self, total: usize, prefix: String) {
        self.clear();
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>18} [{bar:30}] {pos}/{len} {per_sec:>12} eta {eta} {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(prefix);
        self.bar = Some(bar);
    }

    pub fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl FitObserver for Bars {
    fn batch(&mut self, epoch: usize, done: usize, total: usize) {
        if done == 1 {
            self.new_bar(total, format!("epoch {epoch}"));
        }
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
        }
    }

    fn epoch(&mut self, r: &EpochRecord, best: Option<&Trained>) {
        self.clear();
        eprintln!(
            "epoch {:>3}  lr {:.2e}  train loss {:.4} acc {:5.1}%  val loss {:.4} acc {:5.1}%{}",
            r.epoch,
            r.lr,
            r.train_loss,
            100.0 * r.train_acc,
            r.val_loss,
            100.0 * r.val_acc,
            if best.is_some() { "  *" } else { "" }
        );
    }
}

impl TrainObserver for Bars {
    fn stage(&mut self, name: &str, total: Option<usize>) {
        if name == "training" {
            self.clear();
            return;
        }
        self.new_bar(total.unwrap_or(0), name.to_string());
    }

    fn progress(&mut self, done: usize) -> bool {
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
        }
        true
    }

    fn finished(&mut self, summary: &str) {
        self.clear();
        eprintln!("{summary}");
    }
}
