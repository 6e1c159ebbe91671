//! What makes a trained head trustworthy beyond its top-1: the linear head solved to its
//! optimum, calibrated probabilities and the "unknown" rule, all fitted on the validation
//! split and written into the exported graph and card.

use std::sync::atomic::AtomicBool;

use scion_onnx::card::{Calibration, UnknownRule};
use scion_onnx::distance::Prototypes;
use scion_onnx::patch::Dense;

use super::{TrainError, TrainObserver};
use crate::calibrate::{Reliability, fit_temperature, fold_temperature, probabilities};
use crate::fit::{ClassWeight, FitConfig, FitError, Fitted, Sampler, StopReason, Trained};
use crate::linear::{GridPoint, Probe, ProbeData, SolverConfig, fit_probe};
use crate::unknown::{MIN_PER_CLASS, fit_rule, prototypes};

/// Features of both splits under the exported weights (what the rule is fitted on).
pub(super) struct SplitFeatures {
    /// `[train, dim]` (the plain view).
    pub train: Vec<f32>,
    /// `[val, dim]`.
    pub val: Vec<f32>,
    /// Feature width.
    pub dim: usize,
}

/// The linear head of the probe, as a report entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeReport {
    /// The chosen inverse regularisation strength.
    pub c: f64,
    /// The chosen feature scaling.
    pub scaling: crate::linear::Scaling,
    /// Every `C` tried.
    pub grid: Vec<GridPoint>,
    /// Whether it was refit on training + validation images.
    pub refit: bool,
}

impl ProbeReport {
    /// The report of a fitted probe.
    pub(super) fn of(probe: &Probe) -> ProbeReport {
        ProbeReport {
            c: probe.c,
            scaling: probe.scaling,
            grid: probe.grid.clone(),
            refit: probe.refit,
        }
    }
}

/// LP-FT: the probe the fine-tuning started from against the fine-tuned model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LpFtReport {
    /// The linear probe on frozen features.
    pub probe: ProbeReport,
    /// Its validation top-1.
    pub probe_top1: f64,
    /// Its validation loss after temperature scaling.
    pub probe_loss: f64,
    /// The fine-tuned model's validation top-1.
    pub tuned_top1: f64,
    /// Its validation loss after temperature scaling.
    pub tuned_loss: f64,
    /// `fine-tuned` or `probe`: the one with the lower loss, which was exported.
    pub exported: String,
}

/// Solve the linear head on cached features (several views of a training image are
/// more rows), reporting each grid point as progress.
#[allow(clippy::too_many_arguments)]
pub(super) fn solve_linear_head(
    config: &FitConfig,
    train_rows: &[f32],
    train_labels: &[usize],
    val: &[f32],
    val_labels: &[usize],
    dim: usize,
    classes: usize,
    interrupt: &AtomicBool,
    observer: &mut dyn TrainObserver,
) -> Result<(Fitted, Probe), TrainError> {
    let balanced =
        config.class_weight == ClassWeight::Balanced || config.sampler == Sampler::Balanced;
    let weights = balanced.then(|| {
        let counts = crate::linear::class_counts(train_labels, classes);
        train_labels
            .iter()
            .map(|&c| crate::linear::balanced_weight(&counts, c, train_labels.len()))
            .collect::<Vec<f32>>()
    });
    observer.stage("solving the linear head", Some(2 * config.grid.len()));
    let mut done = 0;
    let probe = fit_probe(
        &ProbeData {
            train: train_rows,
            train_labels,
            train_weights: weights.as_deref(),
            val,
            val_labels,
            dim,
            classes,
        },
        &config.grid,
        config.refit,
        &SolverConfig::default(),
        interrupt,
        &mut |point| {
            done += 1;
            tracing::info!(
                "{:<11} C {:<8} val top-1 {:5.1}%  loss {:.4}  train {:5.1}%  {} iterations{}",
                format!("{:?}", point.scaling),
                format!("{:.3e}", point.c),
                100.0 * point.val_acc,
                point.val_loss,
                100.0 * point.train_acc,
                point.iterations,
                if point.converged { "" } else { " (cap)" }
            );
            observer.progress(done);
        },
    )
    .map_err(|e| match e {
        FitError::Input(m) if m == "interrupted" => {
            TrainError::Data("interrupted while solving the linear head".into())
        }
        e => e.into(),
    })?;
    let chosen = probe
        .grid
        .iter()
        .find(|p| p.c == probe.c && p.scaling == probe.scaling)
        .expect("the chosen C is on the grid");
    observer.finished(&format!(
        "linear head: C = {:.3e}, {:?} scaling, best of {} tried (val top-1 {:.2}%, loss {:.4}){}",
        probe.c,
        probe.scaling,
        probe.grid.len(),
        100.0 * chosen.val_acc,
        chosen.val_loss,
        if probe.refit {
            "; refit on training + validation images"
        } else {
            ""
        }
    ));
    let fitted = Fitted {
        trained: Trained {
            layers: vec![probe.dense.clone()],
            backbone: Vec::new(),
        },
        best_epoch: 0,
        history: Vec::new(),
        stop: StopReason::Completed,
        val_logits: probe.val_logits.clone(),
    };
    Ok((fitted, probe))
}

/// LP-FT's report, from the probe and the fine-tuned validation logits.
pub(super) fn lp_ft_report(
    probe: &Probe,
    tuned_logits: &[Vec<f32>],
    val_labels: &[usize],
) -> LpFtReport {
    let calibrated_loss = |logits: &[Vec<f32>]| {
        crate::calibrate::nll(logits, val_labels, fit_temperature(logits, val_labels))
    };
    let (probe_loss, tuned_loss) = (
        calibrated_loss(&probe.val_logits),
        calibrated_loss(tuned_logits),
    );
    LpFtReport {
        probe: ProbeReport::of(probe),
        probe_top1: crate::linear::score_logits(&probe.val_logits, val_labels).1,
        probe_loss,
        tuned_top1: crate::linear::score_logits(tuned_logits, val_labels).1,
        tuned_loss,
        exported: if tuned_loss < probe_loss {
            "fine-tuned"
        } else {
            "probe"
        }
        .into(),
    }
}

/// Calibration and the unknown rule, fitted on validation; what was left out and why.
pub(super) struct Trust {
    /// The temperature (folded into the head already), if fitted.
    pub calibration: Option<Calibration>,
    /// The rule and the prototypes the graph needs for it.
    pub unknown: Option<(UnknownRule, Prototypes)>,
    /// Why something was left out, for the card and a warning.
    pub omitted: Vec<String>,
    /// Validation probabilities the exported model must give (calibrated).
    pub val_probs: Vec<Vec<f32>>,
    /// Reliability before calibration.
    pub before: Reliability,
    /// The rule's score of each validation image, as the exported graph must give it.
    pub val_unknown_scores: Option<Vec<f32>>,
}

/// Fit the temperature (folding it into `layers`) and the unknown rule. With fewer than
/// [`MIN_PER_CLASS`] validation images in a class, both are left out with a reason.
pub(super) fn fit_trust(
    layers: &mut [Dense],
    features: &SplitFeatures,
    train_labels: &[usize],
    val_logits: &[Vec<f32>],
    val_labels: &[usize],
    classes: usize,
    unknown_recall: Option<f32>,
) -> Trust {
    let counts = crate::linear::class_counts(val_labels, classes);
    let too_few = counts
        .iter()
        .enumerate()
        .find(|(_, n)| **n < MIN_PER_CLASS)
        .map(|(c, n)| {
            format!(
                "class {c} has {n} validation images (at least {MIN_PER_CLASS} per class are needed)"
            )
        });
    let before = Reliability::compute(
        &probabilities(val_logits, 1.0).concat(),
        val_labels,
        classes,
    );
    let mut omitted = Vec::new();
    let temperature = match &too_few {
        Some(why) => {
            omitted.push(format!("calibration left out: {why}"));
            1.0
        }
        None => fit_temperature(val_logits, val_labels),
    };
    // The exported head on the validation features: what every engine must reproduce.
    let mut exported = layers.to_vec();
    fold_temperature(&mut exported, temperature);
    let val_probs: Vec<Vec<f32>> = features
        .val
        .chunks_exact(features.dim)
        .map(|row| scion_edge::postprocess::softmax(&crate::head::apply_dense(&exported, row)))
        .collect();
    let calibration = too_few.is_none().then(|| {
        let after = Reliability::compute(
            &probabilities(val_logits, temperature).concat(),
            val_labels,
            classes,
        );
        fold_temperature(layers, temperature);
        Calibration {
            temperature: temperature as f32,
            images: val_labels.len(),
            ece_before: before.ece as f32,
            ece_after: after.ece as f32,
        }
    });
    let mut scores = None;
    let unknown = match (unknown_recall, &too_few) {
        (None, _) => {
            omitted.push("unknown rule left out: --unknown off".into());
            None
        }
        (Some(_), Some(why)) => {
            omitted.push(format!("unknown rule left out: {why}"));
            None
        }
        (Some(recall), None) => {
            let protos = prototypes(&features.train, train_labels, features.dim, classes);
            let distances = crate::unknown::distances(&protos, &features.val);
            let top: Vec<f32> = val_probs
                .iter()
                .map(|p| p.iter().copied().fold(0.0, f32::max))
                .collect();
            match fit_rule(&top, &distances, val_labels, classes, recall) {
                Ok(rule) => {
                    scores = Some(
                        top.iter()
                            .zip(&distances)
                            .map(|(&p, d)| rule.score(p, d))
                            .collect(),
                    );
                    Some((rule, protos))
                }
                Err(why) => {
                    omitted.push(format!("unknown rule left out: {why}"));
                    None
                }
            }
        }
    };
    Trust {
        calibration,
        unknown,
        omitted,
        val_probs,
        before,
        val_unknown_scores: scores,
    }
}
