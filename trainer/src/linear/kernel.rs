//! The solver's hot loop: loss and gradient of multinomial logistic regression over a
//! block of rows in one pass. A general matrix product would repack the whole feature
//! block twice per evaluation (for `Z Wᵀ` and for `Gᵀ Z`), and with ten classes the
//! packing costs more than the arithmetic; here each row is read once, its logits, its
//! softmax and its share of the gradient computed while it is in cache.
//!
//! On x86-64 with AVX2 and FMA (checked at run time) the same code is compiled with those
//! instructions; elsewhere it runs as portable Rust.

/// Lanes per accumulator: one AVX register of f32.
const LANES: usize = 8;

/// What one block of rows contributes.
pub struct BlockInput<'a> {
    /// `[rows, dim]` row-major standardised features.
    pub z: &'a [f32],
    /// Feature dimension.
    pub dim: usize,
    /// `[classes, dim]` row-major weights.
    pub w: &'a [f32],
    /// Bias per class.
    pub b: &'a [f64],
    /// Class of each row.
    pub labels: &'a [usize],
    /// Weight of each row (`None`: 1).
    pub weights: Option<&'a [f32]>,
    /// Total weight of all rows (the loss is a mean).
    pub total: f64,
}

/// Adds the block's gradient into `dw` (`[classes, dim]`) and `db`; returns its weighted
/// loss sum.
pub fn block(input: &BlockInput<'_>, dw: &mut [f32], db: &mut [f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has just been seen to support AVX2 and FMA, all the function
        // requires; it is otherwise the same safe code as `block_portable`.
        #[allow(unsafe_code)]
        return unsafe { block_avx2(input, dw, db) };
    }
    block_portable(input, dw, db)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn block_avx2(input: &BlockInput<'_>, dw: &mut [f32], db: &mut [f64]) -> f64 {
    block_body(input, dw, db, avx2::dot_tile, avx2::axpy_tile)
}

fn block_portable(input: &BlockInput<'_>, dw: &mut [f32], db: &mut [f64]) -> f64 {
    block_body(input, dw, db, dot_tile, axpy_tile)
}

/// The two tile operations with AVX2/FMA intrinsics (the autovectoriser interleaves the
/// tile's rows into one register instead of keeping one accumulator per row).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use super::{LANES, TILE};
    use std::arch::x86_64::{
        __m256, _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm256_castps256_ps128,
        _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };

    #[inline(always)]
    fn sum(v: __m256) -> f32 {
        // SAFETY (whole module): only reached from `block_avx2`, which runs after the CPU
        // was seen to support AVX2 and FMA; every load and store is at an index below the
        // length of the slice it reads (`j + LANES <= split <= len`).
        unsafe {
            let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let pair = _mm_hadd_ps(half, half);
            _mm_cvtss_f32(_mm_hadd_ps(pair, pair))
        }
    }

    #[inline(always)]
    pub(super) fn dot_tile(w: &[f32], rows: [&[f32]; TILE]) -> [f32; TILE] {
        let d = w.len();
        let split = d - d % LANES;
        assert!(rows.iter().all(|r| r.len() >= d));
        let mut out = unsafe {
            let mut acc = [_mm256_setzero_ps(); TILE];
            let mut j = 0;
            while j < split {
                let wj = _mm256_loadu_ps(w.as_ptr().add(j));
                for t in 0..TILE {
                    acc[t] = _mm256_fmadd_ps(wj, _mm256_loadu_ps(rows[t].as_ptr().add(j)), acc[t]);
                }
                j += LANES;
            }
            acc.map(sum)
        };
        for (o, row) in out.iter_mut().zip(rows) {
            for j in split..d {
                *o = w[j].mul_add(row[j], *o);
            }
        }
        out
    }

    #[inline(always)]
    pub(super) fn axpy_tile(alpha: [f32; TILE], rows: [&[f32]; TILE], y: &mut [f32]) {
        let n = y.len();
        let split = n - n % LANES;
        assert!(rows.iter().all(|r| r.len() >= n));
        unsafe {
            let g: [__m256; TILE] = alpha.map(|a| _mm256_set1_ps(a));
            let mut j = 0;
            while j < split {
                let mut v = _mm256_loadu_ps(y.as_ptr().add(j));
                for t in 0..TILE {
                    v = _mm256_fmadd_ps(g[t], _mm256_loadu_ps(rows[t].as_ptr().add(j)), v);
                }
                _mm256_storeu_ps(y.as_mut_ptr().add(j), v);
                j += LANES;
            }
        }
        for j in split..n {
            for t in 0..TILE {
                y[j] = alpha[t].mul_add(rows[t][j], y[j]);
            }
        }
    }
}

/// Rows handled together: each weight and gradient row is loaded once per tile instead
/// of once per row (the loop is bound by those loads, not by arithmetic).
const TILE: usize = 8;

/// One lane-wise step `acc += w · z` over `LANES` values (one vector FMA).
#[inline(always)]
fn fma_lanes(acc: &mut [f32; LANES], w: &[f32], z: &[f32]) {
    for l in 0..LANES {
        acc[l] = w[l].mul_add(z[l], acc[l]);
    }
}

/// The dot products of `w` with each of `TILE` rows, one accumulator per row.
#[inline(always)]
fn dot_tile(w: &[f32], rows: [&[f32]; TILE]) -> [f32; TILE] {
    rows.map(|row| {
        let mut acc = [0f32; LANES];
        let split = w.len() - w.len() % LANES;
        for j in (0..split).step_by(LANES) {
            fma_lanes(&mut acc, &w[j..j + LANES], &row[j..j + LANES]);
        }
        acc.iter().sum::<f32>()
            + w[split..]
                .iter()
                .zip(&row[split..])
                .map(|(x, y)| x * y)
                .sum::<f32>()
    })
}

/// `y += Σ alpha[t] · rows[t]`.
#[inline(always)]
fn axpy_tile(alpha: [f32; TILE], rows: [&[f32]; TILE], y: &mut [f32]) {
    for (a, row) in alpha.iter().zip(rows) {
        for (yj, x) in y.iter_mut().zip(row) {
            *yj = a.mul_add(*x, *yj);
        }
    }
}

#[inline(always)]
fn block_body(
    input: &BlockInput<'_>,
    dw: &mut [f32],
    db: &mut [f64],
    dot_tile: impl Fn(&[f32], [&[f32]; TILE]) -> [f32; TILE],
    axpy_tile: impl Fn([f32; TILE], [&[f32]; TILE], &mut [f32]),
) -> f64 {
    let d = input.dim;
    let k = input.b.len();
    let rows = input.labels.len();
    let mut logits = vec![[0f64; TILE]; k];
    let mut grads = vec![[0f32; TILE]; k];
    let mut loss = 0f64;
    for start in (0..rows).step_by(TILE) {
        // A short last tile repeats its last row with weight 0.
        let index = |t: usize| (start + t).min(rows - 1);
        let tile: [&[f32]; TILE] =
            std::array::from_fn(|t| &input.z[index(t) * d..(index(t) + 1) * d]);
        for (c, logit) in logits.iter_mut().enumerate() {
            let dots = dot_tile(&input.w[c * d..(c + 1) * d], tile);
            for t in 0..TILE {
                logit[t] = f64::from(dots[t]) + input.b[c];
            }
        }
        for t in 0..TILE {
            let weight = if start + t < rows {
                input.weights.map_or(1.0, |ws| f64::from(ws[start + t]))
            } else {
                0.0
            };
            let label = input.labels[index(t)];
            let max = logits
                .iter()
                .map(|l| l[t])
                .fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = logits.iter().map(|l| (l[t] - max).exp()).sum();
            let lse = max + sum.ln();
            loss += weight * (lse - logits[label][t]);
            for (c, (l, g)) in logits.iter().zip(grads.iter_mut()).enumerate() {
                let y = if c == label { 1.0 } else { 0.0 };
                let gc = weight * ((l[t] - lse).exp() - y) / input.total;
                db[c] += gc;
                g[t] = gc as f32;
            }
        }
        for (c, g) in grads.iter().enumerate() {
            axpy_tile(*g, tile, &mut dw[c * d..(c + 1) * d]);
        }
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable path (CPUs without AVX2/FMA) and the dispatched one agree, on sizes
    /// that leave a short tile and a tail of lanes.
    #[test]
    fn every_path_gives_the_same_loss_and_gradient() {
        let (rows, dim, classes) = (13, 37, 3);
        let noise = |i: usize| ((i.wrapping_mul(2_654_435_761) >> 7) % 1000) as f32 / 500.0 - 1.0;
        let z: Vec<f32> = (0..rows * dim).map(noise).collect();
        let w: Vec<f32> = (0..classes * dim).map(|i| noise(i + 7) * 0.1).collect();
        let b = vec![0.1, -0.2, 0.05];
        let labels: Vec<usize> = (0..rows).map(|r| r % classes).collect();
        let weights: Vec<f32> = (0..rows).map(|r| 0.5 + (r % 3) as f32).collect();
        let input = BlockInput {
            z: &z,
            dim,
            w: &w,
            b: &b,
            labels: &labels,
            weights: Some(&weights),
            total: weights.iter().map(|&v| f64::from(v)).sum(),
        };
        let run = |f: fn(&BlockInput<'_>, &mut [f32], &mut [f64]) -> f64| {
            let (mut dw, mut db) = (vec![0f32; classes * dim], vec![0f64; classes]);
            let loss = f(&input, &mut dw, &mut db);
            (loss, dw, db)
        };
        let (l1, dw1, db1) = run(block_portable);
        let (l2, dw2, db2) = run(block);
        assert!((l1 - l2).abs() < 1e-5 * l1.abs(), "{l1} vs {l2}");
        for (a, b) in dw1.iter().zip(&dw2) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        for (a, b) in db1.iter().zip(&db2) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        // And both against a plain reference for one row's loss.
        let logits: Vec<f64> = (0..classes)
            .map(|c| {
                (0..dim)
                    .map(|j| f64::from(w[c * dim + j]) * f64::from(z[j]))
                    .sum::<f64>()
                    + b[c]
            })
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + logits.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        let first = BlockInput {
            z: &z[..dim],
            labels: &labels[..1],
            weights: Some(&weights[..1]),
            ..input
        };
        let (mut dw, mut db) = (vec![0f32; classes * dim], vec![0f64; classes]);
        let loss = block(&first, &mut dw, &mut db);
        let expected = f64::from(weights[0]) * (lse - logits[labels[0]]);
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
    }
}
