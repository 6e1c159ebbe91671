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
    block_body::<avx2::Avx2>(input, dw, db)
}

fn block_portable(input: &BlockInput<'_>, dw: &mut [f32], db: &mut [f64]) -> f64 {
    block_body::<Portable>(input, dw, db)
}

/// Rows handled together: each weight and gradient row is loaded once per tile instead
/// of once per row. Four rows of 1,280 features (20 KiB) stay in L1 beside the weight and
/// gradient rows; eight did not, and ran slower.
const TILE: usize = 4;

/// The tile operations, for one class or two at once (two classes over four rows keep
/// eight independent FMA chains going, which one class cannot).
trait Tiles {
    /// The dot products of `w` with each of the tile's rows.
    fn dot(w: &[f32], rows: [&[f32]; TILE]) -> [f32; TILE];
    /// The same for two weight rows.
    fn dot2(w0: &[f32], w1: &[f32], rows: [&[f32]; TILE]) -> [[f32; TILE]; 2];
    /// `y += Σ alpha[t] · rows[t]`.
    fn axpy(alpha: [f32; TILE], rows: [&[f32]; TILE], y: &mut [f32]);
    /// The same for two gradient rows.
    fn axpy2(alpha: [[f32; TILE]; 2], rows: [&[f32]; TILE], y0: &mut [f32], y1: &mut [f32]);
}

/// The tile operations with AVX2/FMA intrinsics (the autovectoriser interleaves the
/// tile's rows into one register instead of keeping one accumulator per row).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use super::{LANES, TILE, Tiles};
    use std::arch::x86_64::{
        __m256, _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm256_castps256_ps128,
        _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };

    pub(super) struct Avx2;

    // SAFETY (whole module): only reached from `block_avx2`, which runs after the CPU was
    // seen to support AVX2 and FMA, and inlined into it (so compiled with those features;
    // hence loops below, not `array::map`, whose body would not be); every load and store
    // is at an index below the length of the slice it reads (`j + LANES <= split <= len`,
    // the lengths asserted first).

    #[inline(always)]
    fn sum(v: __m256) -> f32 {
        unsafe {
            let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let pair = _mm_hadd_ps(half, half);
            _mm_cvtss_f32(_mm_hadd_ps(pair, pair))
        }
    }

    #[inline(always)]
    fn splat(alpha: [f32; TILE]) -> [__m256; TILE] {
        let mut out = [unsafe { _mm256_setzero_ps() }; TILE];
        for (o, a) in out.iter_mut().zip(alpha) {
            *o = unsafe { _mm256_set1_ps(a) };
        }
        out
    }

    impl Tiles for Avx2 {
        #[inline(always)]
        fn dot(w: &[f32], rows: [&[f32]; TILE]) -> [f32; TILE] {
            let d = w.len();
            let split = d - d % LANES;
            assert!(rows.iter().all(|r| r.len() >= d));
            let mut out = [0f32; TILE];
            unsafe {
                let mut acc = [_mm256_setzero_ps(); TILE];
                let mut j = 0;
                while j < split {
                    let wj = _mm256_loadu_ps(w.as_ptr().add(j));
                    for t in 0..TILE {
                        let z = _mm256_loadu_ps(rows[t].as_ptr().add(j));
                        acc[t] = _mm256_fmadd_ps(wj, z, acc[t]);
                    }
                    j += LANES;
                }
                for t in 0..TILE {
                    out[t] = sum(acc[t]);
                }
            }
            for (o, row) in out.iter_mut().zip(rows) {
                for j in split..d {
                    *o = w[j].mul_add(row[j], *o);
                }
            }
            out
        }

        #[inline(always)]
        fn dot2(w0: &[f32], w1: &[f32], rows: [&[f32]; TILE]) -> [[f32; TILE]; 2] {
            let d = w0.len();
            let split = d - d % LANES;
            assert!(w1.len() == d && rows.iter().all(|r| r.len() >= d));
            let mut out = [[0f32; TILE]; 2];
            unsafe {
                let mut acc0 = [_mm256_setzero_ps(); TILE];
                let mut acc1 = [_mm256_setzero_ps(); TILE];
                let mut j = 0;
                while j < split {
                    let x0 = _mm256_loadu_ps(w0.as_ptr().add(j));
                    let x1 = _mm256_loadu_ps(w1.as_ptr().add(j));
                    for t in 0..TILE {
                        let z = _mm256_loadu_ps(rows[t].as_ptr().add(j));
                        acc0[t] = _mm256_fmadd_ps(x0, z, acc0[t]);
                        acc1[t] = _mm256_fmadd_ps(x1, z, acc1[t]);
                    }
                    j += LANES;
                }
                for t in 0..TILE {
                    out[0][t] = sum(acc0[t]);
                    out[1][t] = sum(acc1[t]);
                }
            }
            for t in 0..TILE {
                for j in split..d {
                    out[0][t] = w0[j].mul_add(rows[t][j], out[0][t]);
                    out[1][t] = w1[j].mul_add(rows[t][j], out[1][t]);
                }
            }
            out
        }

        #[inline(always)]
        fn axpy(alpha: [f32; TILE], rows: [&[f32]; TILE], y: &mut [f32]) {
            let n = y.len();
            let split = n - n % LANES;
            assert!(rows.iter().all(|r| r.len() >= n));
            let g = splat(alpha);
            unsafe {
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

        #[inline(always)]
        fn axpy2(alpha: [[f32; TILE]; 2], rows: [&[f32]; TILE], y0: &mut [f32], y1: &mut [f32]) {
            let n = y0.len();
            let split = n - n % LANES;
            assert!(y1.len() == n && rows.iter().all(|r| r.len() >= n));
            let (g0, g1) = (splat(alpha[0]), splat(alpha[1]));
            unsafe {
                let mut j = 0;
                while j < split {
                    let mut v0 = _mm256_loadu_ps(y0.as_ptr().add(j));
                    let mut v1 = _mm256_loadu_ps(y1.as_ptr().add(j));
                    for t in 0..TILE {
                        let z = _mm256_loadu_ps(rows[t].as_ptr().add(j));
                        v0 = _mm256_fmadd_ps(g0[t], z, v0);
                        v1 = _mm256_fmadd_ps(g1[t], z, v1);
                    }
                    _mm256_storeu_ps(y0.as_mut_ptr().add(j), v0);
                    _mm256_storeu_ps(y1.as_mut_ptr().add(j), v1);
                    j += LANES;
                }
            }
            for j in split..n {
                for t in 0..TILE {
                    y0[j] = alpha[0][t].mul_add(rows[t][j], y0[j]);
                    y1[j] = alpha[1][t].mul_add(rows[t][j], y1[j]);
                }
            }
        }
    }
}

/// Portable Rust, for CPUs without AVX2/FMA.
struct Portable;

/// One lane-wise step `acc += w · z` over `LANES` values (one vector FMA).
#[inline(always)]
fn fma_lanes(acc: &mut [f32; LANES], w: &[f32], z: &[f32]) {
    for l in 0..LANES {
        acc[l] = w[l].mul_add(z[l], acc[l]);
    }
}

impl Tiles for Portable {
    #[inline(always)]
    fn dot(w: &[f32], rows: [&[f32]; TILE]) -> [f32; TILE] {
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

    #[inline(always)]
    fn dot2(w0: &[f32], w1: &[f32], rows: [&[f32]; TILE]) -> [[f32; TILE]; 2] {
        [Self::dot(w0, rows), Self::dot(w1, rows)]
    }

    #[inline(always)]
    fn axpy(alpha: [f32; TILE], rows: [&[f32]; TILE], y: &mut [f32]) {
        for (a, row) in alpha.iter().zip(rows) {
            for (yj, x) in y.iter_mut().zip(row) {
                *yj = a.mul_add(*x, *yj);
            }
        }
    }

    #[inline(always)]
    fn axpy2(alpha: [[f32; TILE]; 2], rows: [&[f32]; TILE], y0: &mut [f32], y1: &mut [f32]) {
        Self::axpy(alpha[0], rows, y0);
        Self::axpy(alpha[1], rows, y1);
    }
}

#[inline(always)]
fn block_body<T: Tiles>(input: &BlockInput<'_>, dw: &mut [f32], db: &mut [f64]) -> f64 {
    let d = input.dim;
    let k = input.b.len();
    let rows = input.labels.len();
    let mut logits = vec![[0f64; TILE]; k];
    let mut grads = vec![[0f32; TILE]; k];
    let mut exps = vec![0f64; k];
    let mut loss = 0f64;
    for start in (0..rows).step_by(TILE) {
        // A short last tile repeats its last row with weight 0.
        let index = |t: usize| (start + t).min(rows - 1);
        let tile: [&[f32]; TILE] =
            std::array::from_fn(|t| &input.z[index(t) * d..(index(t) + 1) * d]);
        let row = |c: usize| &input.w[c * d..(c + 1) * d];
        let mut c = 0;
        while c < k {
            if c + 1 < k {
                let dots = T::dot2(row(c), row(c + 1), tile);
                for (i, dots) in dots.iter().enumerate() {
                    for t in 0..TILE {
                        logits[c + i][t] = f64::from(dots[t]) + input.b[c + i];
                    }
                }
                c += 2;
            } else {
                let dots = T::dot(row(c), tile);
                for t in 0..TILE {
                    logits[c][t] = f64::from(dots[t]) + input.b[c];
                }
                c += 1;
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
            for (e, l) in exps.iter_mut().zip(&logits) {
                *e = (l[t] - max).exp();
            }
            let sum: f64 = exps.iter().sum();
            let lse = max + sum.ln();
            loss += weight * (lse - logits[label][t]);
            for (c, (e, g)) in exps.iter().zip(grads.iter_mut()).enumerate() {
                let y = if c == label { 1.0 } else { 0.0 };
                let gc = weight * (e / sum - y) / input.total;
                db[c] += gc;
                g[t] = gc as f32;
            }
        }
        let mut pairs = dw.chunks_exact_mut(2 * d).zip(grads.chunks_exact(2));
        for (rows, g) in pairs.by_ref() {
            let (y0, y1) = rows.split_at_mut(d);
            T::axpy2([g[0], g[1]], tile, y0, y1);
        }
        if k % 2 == 1 {
            T::axpy(grads[k - 1], tile, &mut dw[(k - 1) * d..k * d]);
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
