//! The linear head solved to its optimum: multinomial logistic regression with L2 on
//! standardised features, minimised full-batch by L-BFGS, the regularisation strength
//! chosen on the validation split from a log grid (scikit-learn's `LogisticRegressionCV`
//! idea, with its meaning of `C`), and the standardisation folded into one dense layer so
//! the exported graph stays a single Gemm. Mini-batch training stays for MLP heads and
//! fine-tuning; a convex problem deserves a solver that finishes it.
//!
//! Deterministic: no randomness at all, and the row blocks that run on separate threads
//! are summed in a fixed order.

use std::sync::atomic::{AtomicBool, Ordering};

use ndarray::{Array2, ArrayView2, Axis};
use scion_onnx::patch::Dense;

use crate::fit::FitError;

mod kernel;

/// The default grid of `C` (inverse regularisation strength, as in scikit-learn: the loss
/// is `C · Σ weighted cross-entropy + ½‖W‖²`), strongest regularisation first.
pub const DEFAULT_GRID: [f64; 11] = [
    1e-3, 3.16e-3, 1e-2, 3.16e-2, 0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0,
];

/// The grid points are solved to up to this many times the final tolerance: which `C`
/// wins is settled long before the last digits, and the winner alone is then solved to the
/// full tolerance from where it stopped. The tail of each solve is most of its iterations.
const GRID_TOL_FACTOR: f64 = 10.0;

/// How features are scaled before the solver sees them. Both keep the problem the same up
/// to how L2 weighs each feature: per-feature scaling treats every feature alike (noise
/// features included); one global scale keeps the backbone's own feature magnitudes,
/// which often suits CNN features better. The grid tries both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scaling {
    /// `(x - mean) / std` per feature.
    PerFeature,
    /// `(x - mean) / s` with one `s` (the root-mean-square of the centred values).
    Global,
}

/// Per-feature standardisation `z = (x - mean) / std` learned from training rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    /// Per-feature mean.
    pub mean: Vec<f32>,
    /// Per-feature standard deviation (1 where a feature is constant).
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Fit on row-major `rows` of width `dim`, per feature.
    pub fn fit(rows: &[f32], dim: usize) -> Standardizer {
        Self::fit_scaled(rows, dim, Scaling::PerFeature)
    }

    /// Fit on row-major `rows` of width `dim` with `scaling`.
    pub fn fit_scaled(rows: &[f32], dim: usize, scaling: Scaling) -> Standardizer {
        let n = (rows.len() / dim.max(1)).max(1) as f64;
        let mut mean = vec![0f64; dim];
        let mut sq = vec![0f64; dim];
        for row in rows.chunks_exact(dim) {
            for (j, &v) in row.iter().enumerate() {
                mean[j] += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        for row in rows.chunks_exact(dim) {
            for (j, &v) in row.iter().enumerate() {
                let d = f64::from(v) - mean[j];
                sq[j] += d * d;
            }
        }
        let std = match scaling {
            Scaling::PerFeature => sq
                .iter()
                .map(|s| {
                    let s = (s / n).sqrt();
                    if s > 1e-6 { s as f32 } else { 1.0 }
                })
                .collect(),
            Scaling::Global => {
                let rms = (sq.iter().sum::<f64>() / (n * dim.max(1) as f64)).sqrt();
                vec![if rms > 1e-6 { rms as f32 } else { 1.0 }; dim]
            }
        };
        Standardizer {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }

    /// Standardised copy of `rows`.
    pub fn apply(&self, rows: &[f32]) -> Array2<f32> {
        let dim = self.mean.len();
        let mut z = Array2::<f32>::zeros((rows.len() / dim.max(1), dim));
        for (mut out, row) in z.rows_mut().into_iter().zip(rows.chunks_exact(dim)) {
            for (j, o) in out.iter_mut().enumerate() {
                *o = (row[j] - self.mean[j]) / self.std[j];
            }
        }
        z
    }
}

/// A multinomial logistic-regression problem on standardised rows.
pub struct Problem<'a> {
    /// `[n, dim]` standardised features.
    pub z: ArrayView2<'a, f32>,
    /// Class per row.
    pub labels: &'a [usize],
    /// Weight per row (class weights), or `None` for 1.
    pub weights: Option<&'a [f32]>,
    /// Number of classes.
    pub classes: usize,
}

/// The solver's settings.
#[derive(Debug, Clone, Copy)]
pub struct SolverConfig {
    /// Iteration cap per `C`.
    pub max_iter: usize,
    /// Stop when the largest gradient entry is below this (on the per-weight-normalised
    /// objective).
    pub tol: f64,
    /// Threads for the matrix products.
    pub threads: usize,
    /// For a grid point: stop at up to this many times `tol`, once the gradient is also a
    /// tenth of where the warm start left it (so a warm start is never taken as it is).
    pub grid_slack: Option<f64>,
}

impl SolverConfig {
    /// The gradient threshold of a solve whose start has largest gradient entry `start`.
    fn threshold(&self, start: f64) -> f64 {
        self.grid_slack.map_or(self.tol, |slack| {
            (0.1 * start).clamp(self.tol, slack * self.tol)
        })
    }
}

impl Default for SolverConfig {
    fn default() -> Self {
        SolverConfig {
            max_iter: 500,
            // scikit-learn's lbfgs default, on the same (mean-loss) scale.
            tol: 1e-4,
            threads: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            grid_slack: None,
        }
    }
}

/// Weights `[classes, dim]` and bias `[classes]` in standardised space, flat as
/// `W` row-major then `b` (the L-BFGS vector).
#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    /// The parameters.
    pub theta: Vec<f64>,
    /// Iterations used.
    pub iterations: usize,
    /// Whether the gradient tolerance was met (else the iteration cap ended it).
    pub converged: bool,
    /// Final objective.
    pub objective: f64,
}

impl Problem<'_> {
    fn dim(&self) -> usize {
        self.z.ncols()
    }

    /// Weighted mean cross-entropy + `‖W‖² / (2 C S)` and its gradient (S: total weight),
    /// which has the same minimiser as scikit-learn's `C · Σ CE + ½‖W‖²`.
    fn objective(&self, theta: &[f64], c: f64, threads: usize, grad: &mut [f64]) -> f64 {
        let (k, d) = (self.classes, self.dim());
        let n = self.z.nrows();
        let w: Vec<f32> = theta[..k * d].iter().map(|&t| t as f32).collect();
        let b: Vec<f64> = theta[k * d..].to_vec();
        let total: f64 = self
            .weights
            .map_or(n as f64, |ws| ws.iter().map(|&v| f64::from(v)).sum());
        let block = n.div_ceil(threads.max(1)).max(1);
        // Borrowed as is when already row-major (always, for standardised features).
        let z_rows = self.z.as_standard_layout();
        let z = z_rows.as_slice().unwrap_or(&[]);
        // Each block: its loss sum, dW partial and db partial.
        let partials: Vec<(f64, Vec<f32>, Vec<f64>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .step_by(block)
                .map(|start| {
                    let end = (start + block).min(n);
                    let (w, b) = (&w, &b);
                    scope.spawn(move || {
                        let input = kernel::BlockInput {
                            z: &z[start * d..end * d],
                            dim: d,
                            w,
                            b,
                            labels: &self.labels[start..end],
                            weights: self.weights.map(|ws| &ws[start..end]),
                            total,
                        };
                        let (mut dw, mut db) = (vec![0f32; k * d], vec![0f64; k]);
                        let loss = kernel::block(&input, &mut dw, &mut db);
                        (loss, dw, db)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a solver thread panicked"))
                .collect()
        });
        let mut loss = 0f64;
        grad.iter_mut().for_each(|g| *g = 0.0);
        for (l, dw, db) in partials {
            loss += l;
            for (g, v) in grad[..k * d].iter_mut().zip(dw.iter()) {
                *g += f64::from(*v);
            }
            for (g, v) in grad[k * d..].iter_mut().zip(db) {
                *g += v;
            }
        }
        let reg = 1.0 / (c * total);
        let mut norm = 0f64;
        for (g, &t) in grad[..k * d].iter_mut().zip(&theta[..k * d]) {
            *g += reg * t;
            norm += t * t;
        }
        loss / total + 0.5 * reg * norm
    }

    /// Minimise for one `C` from `start` (warm start) with L-BFGS (10 pairs, backtracking
    /// Armijo line search). `interrupt` is polled every iteration.
    pub fn solve(
        &self,
        c: f64,
        start: Vec<f64>,
        config: &SolverConfig,
        interrupt: &AtomicBool,
    ) -> Result<Solution, FitError> {
        const MEMORY: usize = 10;
        let len = start.len();
        let mut x = start;
        let mut g = vec![0f64; len];
        let mut f = self.objective(&x, c, config.threads, &mut g);
        let mut pairs: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
            std::collections::VecDeque::new();
        let max_abs = |v: &[f64]| v.iter().fold(0f64, |m, x| m.max(x.abs()));
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let mut iterations = 0;
        let tol = config.threshold(max_abs(&g));
        let mut converged = max_abs(&g) < tol;
        let (mut x_new, mut g_new) = (vec![0f64; len], vec![0f64; len]);
        while !converged && iterations < config.max_iter {
            if interrupt.load(Ordering::Relaxed) {
                return Err(FitError::Input("interrupted".into()));
            }
            // Two-loop recursion: direction = -H g.
            let mut q = g.clone();
            let mut alphas = Vec::with_capacity(pairs.len());
            for (s, y, rho) in pairs.iter().rev() {
                let a = rho * dot(s, &q);
                q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
                alphas.push(a);
            }
            let gamma = pairs
                .back()
                .map_or(1.0 / max_abs(&g).max(1e-12).max(1.0), |(s, y, _)| {
                    dot(s, y) / dot(y, y)
                });
            q.iter_mut().for_each(|v| *v *= gamma);
            for ((s, y, rho), a) in pairs.iter().zip(alphas.into_iter().rev()) {
                let beta = rho * dot(y, &q);
                q.iter_mut()
                    .zip(s)
                    .for_each(|(qi, si)| *qi += (a - beta) * si);
            }
            let mut direction: Vec<f64> = q.into_iter().map(|v| -v).collect();
            let mut slope = dot(&direction, &g);
            if slope >= 0.0 {
                // Not a descent direction (numerical trouble): restart from steepest descent.
                pairs.clear();
                direction = g.iter().map(|v| -v / max_abs(&g).max(1.0)).collect();
                slope = dot(&direction, &g);
            }
            let mut step = 1.0;
            let mut accepted = false;
            for _ in 0..40 {
                x_new
                    .iter_mut()
                    .zip(&x)
                    .zip(&direction)
                    .for_each(|((n, xi), d)| *n = xi + step * d);
                let f_new = self.objective(&x_new, c, config.threads, &mut g_new);
                if f_new.is_finite() && f_new <= f + 1e-4 * step * slope {
                    let s: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
                    let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
                    let sy = dot(&s, &y);
                    if sy > 1e-12 {
                        if pairs.len() == MEMORY {
                            pairs.pop_front();
                        }
                        pairs.push_back((s, y, 1.0 / sy));
                    }
                    let decrease = f - f_new;
                    std::mem::swap(&mut x, &mut x_new);
                    std::mem::swap(&mut g, &mut g_new);
                    f = f_new;
                    accepted = true;
                    if decrease <= 1e-12 * f.abs().max(1.0) {
                        converged = true;
                    }
                    break;
                }
                step *= 0.5;
            }
            iterations += 1;
            if !accepted {
                // No decrease along a descent direction: as close as f64 gets.
                converged = true;
            }
            converged |= max_abs(&g) < tol;
        }
        Ok(Solution {
            theta: x,
            iterations,
            converged,
            objective: f,
        })
    }

    /// Logits `[rows, classes]` of standardised `z` under `theta`.
    pub fn logits(theta: &[f64], classes: usize, z: ArrayView2<'_, f32>) -> Vec<Vec<f32>> {
        let d = z.ncols();
        let w = Array2::from_shape_fn((classes, d), |(i, j)| theta[i * d + j] as f32);
        let out = z.dot(&w.t());
        out.axis_iter(Axis(0))
            .map(|row| {
                row.iter()
                    .zip(&theta[classes * d..])
                    .map(|(&v, &b)| v + b as f32)
                    .collect()
            })
            .collect()
    }
}

/// One grid point's result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GridPoint {
    /// How the features were scaled.
    pub scaling: Scaling,
    /// Inverse regularisation strength.
    pub c: f64,
    /// Validation top-1.
    pub val_acc: f64,
    /// Validation mean cross-entropy (uncalibrated).
    pub val_loss: f64,
    /// Training top-1.
    pub train_acc: f64,
    /// L-BFGS iterations.
    pub iterations: usize,
    /// Whether the tolerance was met.
    pub converged: bool,
}

/// The fitted probe.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The head in raw feature space (standardisation folded in).
    pub dense: Dense,
    /// The chosen `C`.
    pub c: f64,
    /// The chosen scaling.
    pub scaling: Scaling,
    /// Every grid point tried, in order.
    pub grid: Vec<GridPoint>,
    /// Validation logits of the chosen head (before any refit).
    pub val_logits: Vec<Vec<f32>>,
    /// Whether the head was refit on training + validation rows.
    pub refit: bool,
}

/// What to fit.
pub struct ProbeData<'a> {
    /// `[n, dim]` training rows (several views of an image are simply more rows).
    pub train: &'a [f32],
    /// Their classes.
    pub train_labels: &'a [usize],
    /// Weight per training row (class weights), or `None`.
    pub train_weights: Option<&'a [f32]>,
    /// `[m, dim]` validation rows.
    pub val: &'a [f32],
    /// Their classes.
    pub val_labels: &'a [usize],
    /// Feature width.
    pub dim: usize,
    /// Number of classes.
    pub classes: usize,
}

/// Fit the probe: every `C` of `grid` (warm-started from the previous) under each
/// [`Scaling`], to a looser tolerance; the best by validation top-1 (ties: lower validation
/// loss) then solved to `config.tol`; then, with `refit`, the same `C` on training +
/// validation rows. `on_point` sees each grid point as it finishes.
pub fn fit_probe(
    data: &ProbeData<'_>,
    grid: &[f64],
    refit: bool,
    config: &SolverConfig,
    interrupt: &AtomicBool,
    on_point: &mut dyn FnMut(&GridPoint),
) -> Result<Probe, FitError> {
    let (dim, k) = (data.dim, data.classes);
    if grid.is_empty() || grid.iter().any(|c| !(*c > 0.0 && c.is_finite())) {
        return Err(FitError::Input(
            "the regularisation grid needs positive, finite values of C".into(),
        ));
    }
    if data.train.len() != data.train_labels.len() * dim
        || data.val.len() != data.val_labels.len() * dim
    {
        return Err(FitError::Input(format!(
            "features must hold one row of {dim} per label"
        )));
    }
    let grid_config = SolverConfig {
        grid_slack: Some(GRID_TOL_FACTOR),
        ..*config
    };
    // The best so far: its index in `grid_points`, parameters and scaling.
    let mut best: Option<(usize, Vec<f64>, Standardizer)> = None;
    let mut grid_points = Vec::new();
    for scaling in [Scaling::Global, Scaling::PerFeature] {
        let standardizer = Standardizer::fit_scaled(data.train, dim, scaling);
        let z = standardizer.apply(data.train);
        let zv = standardizer.apply(data.val);
        let problem = Problem {
            z: z.view(),
            labels: data.train_labels,
            weights: data.train_weights,
            classes: k,
        };
        let mut theta = vec![0f64; k * dim + k];
        let mut best_here = (0f64, f64::INFINITY);
        let mut worse_in_a_row = 0;
        for &c in grid {
            let solution = problem.solve(c, theta, &grid_config, interrupt)?;
            let (point, _) = grid_point(scaling, c, &solution, z.view(), zv.view(), data);
            let (val_acc, val_loss) = (point.val_acc, point.val_loss);
            theta = solution.theta;
            tracing::debug!(?point, "grid point");
            on_point(&point);
            grid_points.push(point);
            let better = best.as_ref().is_none_or(|(i, _, _)| {
                let b = &grid_points[*i];
                val_acc > b.val_acc || (val_acc == b.val_acc && val_loss < b.val_loss)
            });
            if better {
                best = Some((grid_points.len() - 1, theta.clone(), standardizer.clone()));
            }
            if val_acc > best_here.0 || (val_acc == best_here.0 && val_loss < best_here.1) {
                best_here = (val_acc, val_loss);
                worse_in_a_row = 0;
            } else {
                worse_in_a_row += 1;
                // Weaker regularisation only overfits more once both figures have turned.
                if worse_in_a_row >= 3 && val_loss > best_here.1 {
                    break;
                }
            }
        }
    }
    let (index, theta, mut standardizer) = best.expect("the grid is not empty");
    // The winner, solved to the full tolerance from where the grid left it.
    let (point, mut theta, val_logits) = {
        let grid_entry = &grid_points[index];
        let z = standardizer.apply(data.train);
        let zv = standardizer.apply(data.val);
        let problem = Problem {
            z: z.view(),
            labels: data.train_labels,
            weights: data.train_weights,
            classes: k,
        };
        let solution = problem.solve(grid_entry.c, theta, config, interrupt)?;
        let (polished, val_logits) = grid_point(
            grid_entry.scaling,
            grid_entry.c,
            &solution,
            z.view(),
            zv.view(),
            data,
        );
        let point = GridPoint {
            iterations: grid_entry.iterations + solution.iterations,
            ..polished
        };
        (point, solution.theta, val_logits)
    };
    grid_points[index] = point.clone();
    if refit {
        let mut rows = data.train.to_vec();
        rows.extend_from_slice(data.val);
        let labels: Vec<usize> = data
            .train_labels
            .iter()
            .chain(data.val_labels)
            .copied()
            .collect();
        // Class weights are re-derived for the larger set.
        let weights = data.train_weights.map(|_| {
            let counts = class_counts(&labels, k);
            labels
                .iter()
                .map(|&c| balanced_weight(&counts, c, labels.len()))
                .collect::<Vec<f32>>()
        });
        standardizer = Standardizer::fit_scaled(&rows, dim, point.scaling);
        let z = standardizer.apply(&rows);
        let problem = Problem {
            z: z.view(),
            labels: &labels,
            weights: weights.as_deref(),
            classes: k,
        };
        theta = problem.solve(point.c, theta, config, interrupt)?.theta;
    }
    Ok(Probe {
        dense: fold(&theta, &standardizer, k),
        c: point.c,
        scaling: point.scaling,
        grid: grid_points,
        val_logits,
        refit,
    })
}

/// A solution's figures on the training and validation rows, and its validation logits.
fn grid_point(
    scaling: Scaling,
    c: f64,
    solution: &Solution,
    z: ArrayView2<'_, f32>,
    zv: ArrayView2<'_, f32>,
    data: &ProbeData<'_>,
) -> (GridPoint, Vec<Vec<f32>>) {
    let k = data.classes;
    let val_logits = Problem::logits(&solution.theta, k, zv);
    let (val_loss, val_acc) = score_logits(&val_logits, data.val_labels);
    let (_, train_acc) = score_logits(&Problem::logits(&solution.theta, k, z), data.train_labels);
    let point = GridPoint {
        scaling,
        c,
        val_acc,
        val_loss,
        train_acc,
        iterations: solution.iterations,
        converged: solution.converged,
    };
    (point, val_logits)
}

/// The dense layer in raw feature space: `W' = W / std`, `b' = b - W' · mean`.
pub fn fold(theta: &[f64], standardizer: &Standardizer, classes: usize) -> Dense {
    let d = standardizer.mean.len();
    let mut weight = vec![0f32; classes * d];
    let mut bias = vec![0f32; classes];
    for c in 0..classes {
        let mut b = theta[classes * d + c];
        for j in 0..d {
            let w = theta[c * d + j] / f64::from(standardizer.std[j]);
            weight[c * d + j] = w as f32;
            b -= w * f64::from(standardizer.mean[j]);
        }
        bias[c] = b as f32;
    }
    Dense {
        weight,
        bias,
        inputs: d,
        outputs: classes,
    }
}

/// Images per class.
pub fn class_counts(labels: &[usize], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    labels.iter().for_each(|&c| counts[c] += 1);
    counts
}

/// scikit-learn's `class_weight="balanced"`: `n / (classes_present · n_c)`.
pub fn balanced_weight(counts: &[usize], class: usize, n: usize) -> f32 {
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    (n as f64 / (present as f64 * counts[class].max(1) as f64)) as f32
}

/// Mean cross-entropy and top-1 of logits against labels.
pub fn score_logits(logits: &[Vec<f32>], labels: &[usize]) -> (f64, f64) {
    let (mut loss, mut correct) = (0f64, 0usize);
    for (row, &y) in logits.iter().zip(labels) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = f64::from(max)
            + row
                .iter()
                .map(|&v| f64::from(v - max).exp())
                .sum::<f64>()
                .ln();
        loss += lse - f64::from(row[y]);
        if crate::fit::argmax(row) == y {
            correct += 1;
        }
    }
    let n = labels.len().max(1) as f64;
    (loss / n, correct as f64 / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three Gaussian blobs in 4-D, seeded.
    fn blobs(n: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
        let mut rng = scion_edge::rng::SplitMix64::new(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let c = i % 3;
            for j in 0..4 {
                let centre = if j == c { 2.0 } else { 0.0 };
                let noise = f64::from(rng.next_f32() + rng.next_f32() + rng.next_f32() - 1.5) * 2.0;
                x.push((centre + noise) as f32 * 10.0 + 5.0);
            }
            y.push(c);
        }
        (x, y)
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let (x, y) = blobs(30, 1);
        let st = Standardizer::fit(&x, 4);
        let z = st.apply(&x);
        let weights: Vec<f32> = (0..30).map(|i| 0.5 + (i % 4) as f32 * 0.25).collect();
        let problem = Problem {
            z: z.view(),
            labels: &y,
            weights: Some(&weights),
            classes: 3,
        };
        let theta: Vec<f64> = (0..15).map(|i| (i as f64 * 0.37).sin() * 0.3).collect();
        let mut g = vec![0.0; 15];
        problem.objective(&theta, 0.7, 2, &mut g);
        for i in 0..15 {
            let mut plus = theta.clone();
            let mut minus = theta.clone();
            plus[i] += 1e-4;
            minus[i] -= 1e-4;
            let mut scratch = vec![0.0; 15];
            let numeric = (problem.objective(&plus, 0.7, 1, &mut scratch)
                - problem.objective(&minus, 0.7, 3, &mut scratch))
                / 2e-4;
            assert!(
                (numeric - g[i]).abs() < 1e-4,
                "entry {i}: analytic {} vs numeric {numeric}",
                g[i]
            );
        }
    }

    #[test]
    fn the_solver_reaches_a_stationary_point_and_folds_exactly() {
        let (x, y) = blobs(90, 2);
        let (xv, yv) = blobs(30, 3);
        let never = AtomicBool::new(false);
        let fit = || {
            fit_probe(
                &ProbeData {
                    train: &x,
                    train_labels: &y,
                    train_weights: None,
                    val: &xv,
                    val_labels: &yv,
                    dim: 4,
                    classes: 3,
                },
                &[0.1, 1.0],
                false,
                &SolverConfig::default(),
                &never,
                &mut |_| {},
            )
            .expect("fits")
        };
        let probe = fit();
        assert!(probe.grid.iter().all(|p| p.converged), "{:?}", probe.grid);
        assert!(
            probe.grid.iter().any(|p| p.val_acc > 0.8),
            "{:?}",
            probe.grid
        );
        // The folded layer on raw features gives the standardised-space logits.
        for (row, expected) in xv.chunks_exact(4).zip(&probe.val_logits) {
            let ours = crate::head::apply_dense(std::slice::from_ref(&probe.dense), row);
            for (a, b) in ours.iter().zip(expected) {
                assert!((a - b).abs() < 1e-3, "{a} vs {b}");
            }
        }
        // Deterministic: the same inputs give the same bits.
        let again = fit();
        assert_eq!(again.dense, probe.dense);
    }
}
