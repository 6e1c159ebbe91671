//! `scion experiment transfer`: the lecture's question answered on the user's own data.
//! The same backbone, split, seed and epoch budget, trained three ways — the head alone on
//! frozen features, the last blocks fine-tuned with it, and the whole architecture from
//! scratch — then one table and one chart of accuracy, time, speed and memory.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::net::freeze::Unfreeze;
use crate::train::{
    TrainError, TrainJob, TrainObserver, check_policy, peak_rss_bytes, reset_peak_rss, run,
};

/// One way of training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arm {
    /// Backbone layers per policy (`none`: the head alone).
    Unfreeze(Unfreeze),
    /// Every layer from fresh weights.
    FromScratch,
}

impl Arm {
    /// Short name, used for files and the table.
    pub fn name(&self) -> String {
        match self {
            Arm::Unfreeze(Unfreeze::None) => "head-only".into(),
            Arm::Unfreeze(policy) => format!("unfreeze-{}", policy.to_string().replace(':', "-")),
            Arm::FromScratch => "from-scratch".into(),
        }
    }
}

/// One arm's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArmResult {
    /// The arm's name.
    pub arm: String,
    /// Validation top-1 of the exported model.
    pub top1: f64,
    /// Seconds for the whole arm: inputs, training, export, parity.
    pub wall_seconds: f64,
    /// Seconds of training.
    pub train_seconds: f64,
    /// Training images per second (forward and backward).
    pub train_images_per_second: f64,
    /// Backbone values that trained.
    pub trainable_backbone_values: usize,
    /// Peak resident memory during the arm, when it could be measured on its own.
    pub peak_rss_bytes: Option<u64>,
    /// Epochs run and the best one.
    pub epochs: usize,
    /// The epoch exported.
    pub best_epoch: usize,
    /// Whether the export passed parity on every engine.
    pub parity_passed: bool,
    /// The exported model.
    pub model: PathBuf,
}

/// Run every arm of `base` (its `out`, `report_dir`, `unfreeze` and `from_scratch` are
/// replaced per arm) into `dir`, then write `transfer.json`, `transfer.md` and
/// `transfer.png` there.
pub fn transfer(
    base: &TrainJob,
    arms: &[Arm],
    dir: &Path,
    interrupt: &AtomicBool,
    observer: &mut dyn ArmObserver,
) -> Result<Vec<ArmResult>, TrainError> {
    let report_err = |path: &Path, e: &dyn std::fmt::Display| TrainError::Report {
        path: path.into(),
        message: e.to_string(),
    };
    for arm in arms {
        if let Arm::Unfreeze(policy) = arm {
            check_policy(base, policy)?;
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| report_err(dir, &e))?;
    let mut results = Vec::new();
    for (k, arm) in arms.iter().enumerate() {
        let name = arm.name();
        observer.arm(k, arms.len(), &name);
        let mut job = base.clone();
        job.out = dir.join(format!("{name}.onnx"));
        job.report_dir = dir.join(format!("{name}.report"));
        (job.unfreeze, job.from_scratch) = match arm {
            Arm::Unfreeze(policy) => (policy.clone(), false),
            Arm::FromScratch => (Unfreeze::None, true),
        };
        if job.from_scratch {
            job.tune.backbone_lr_scale = 1.0;
        }
        reset_peak_rss();
        let started = Instant::now();
        let report = run(&job, interrupt, observer.train_observer())?;
        let wall_seconds = started.elapsed().as_secs_f64();
        results.push(ArmResult {
            arm: name,
            top1: report.metrics.top1,
            wall_seconds,
            train_seconds: report.fit_seconds,
            train_images_per_second: report.train_images_per_second,
            trainable_backbone_values: report.trainable_backbone_values,
            // Without a reset the peak would be the largest of all arms so far.
            peak_rss_bytes: peak_rss_resettable().then(peak_rss_bytes).flatten(),
            epochs: report.history.len(),
            best_epoch: report.best_epoch,
            parity_passed: report.parity_passed(),
            model: report.model.clone(),
        });
    }
    write_results(dir, &results)?;
    Ok(results)
}

/// What the experiment reports while it runs.
pub trait ArmObserver {
    /// Arm `index` of `total` starts.
    fn arm(&mut self, index: usize, total: usize, name: &str);
    /// Where the arm's own training progress goes.
    fn train_observer(&mut self) -> &mut dyn TrainObserver;
}

/// Whether the kernel lets this process reset its peak memory figure.
fn peak_rss_resettable() -> bool {
    std::fs::metadata("/proc/self/clear_refs").is_ok_and(|m| !m.permissions().readonly())
}

/// The table as Markdown.
pub fn table(results: &[ArmResult]) -> String {
    let mut out = String::from(
        "| arm | top-1 | wall (s) | training (s) | train images/s | backbone values trained | peak RSS (MiB) | best epoch |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        out.push_str(&format!(
            "| {} | {:.1}% | {:.1} | {:.1} | {:.1} | {} | {} | {}/{} |\n",
            r.arm,
            100.0 * r.top1,
            r.wall_seconds,
            r.train_seconds,
            r.train_images_per_second,
            r.trainable_backbone_values,
            r.peak_rss_bytes.map_or("-".into(), |b| format!(
                "{:.0}",
                b as f64 / (1024.0 * 1024.0)
            )),
            r.best_epoch,
            r.epochs,
        ));
    }
    out
}

fn write_results(dir: &Path, results: &[ArmResult]) -> Result<(), TrainError> {
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        scion_onnx::io::write_atomically(&path, bytes).map_err(|e| TrainError::Report {
            path: path.clone(),
            message: e.to_string(),
        })
    };
    write(
        "transfer.json",
        serde_json::to_string_pretty(results)
            .expect("results serialize")
            .as_bytes(),
    )?;
    write("transfer.md", table(results).as_bytes())?;
    let arms: Vec<String> = results.iter().map(|r| r.arm.clone()).collect();
    let panels = [
        (
            "validation top-1 (%)",
            results.iter().map(|r| 100.0 * r.top1).collect(),
        ),
        (
            "wall time (s)",
            results.iter().map(|r| r.wall_seconds).collect(),
        ),
        (
            "peak RSS (MiB)",
            results
                .iter()
                .map(|r| r.peak_rss_bytes.unwrap_or(0) as f64 / (1024.0 * 1024.0))
                .collect(),
        ),
    ];
    if let Err(e) = crate::plots::bars(&arms, &panels, &dir.join("transfer.png")) {
        tracing::warn!("chart skipped: {e}");
    }
    Ok(())
}
