//! Exact nearest neighbours, fast: distances come from blocked matrix products
//! (`|q - x|² = |q|² + |x|² - 2 q·x`, with the index's norms computed once), each block of
//! the index on its own thread, and a bounded heap per query. No approximation: the result
//! is the naive per-pair loop's ([`naive_search`], kept as the benchmark's baseline and the
//! tests' reference).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use ndarray::{ArrayView2, linalg::general_mat_mul};

/// How far apart two vectors are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Straight-line distance, as in the lecture's FC7 retrieval.
    Euclidean,
    /// `1 - cos(angle)`: ignores the vectors' lengths.
    Cosine,
}

/// One neighbour of a query.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Neighbour {
    /// Row in the index.
    pub index: usize,
    /// Distance to the query.
    pub distance: f32,
}

/// Vectors to search, kept with their squared norms (normalised for cosine).
pub struct Index {
    data: Vec<f32>,
    dim: usize,
    norms: Vec<f32>,
    metric: Metric,
}

/// Rows of the index per block: a `queries x BLOCK` distance tile stays in cache.
const BLOCK: usize = 2048;
/// Queries per matrix product.
const QUERY_BLOCK: usize = 256;

impl Index {
    /// An index over `data` (`n x dim`, row-major).
    pub fn new(mut data: Vec<f32>, dim: usize, metric: Metric) -> Index {
        assert!(
            dim > 0 && data.len().is_multiple_of(dim),
            "data must be n x dim"
        );
        if metric == Metric::Cosine {
            data.chunks_exact_mut(dim).for_each(normalise);
        }
        let norms = data.chunks_exact(dim).map(squared_norm).collect();
        Index {
            data,
            dim,
            norms,
            metric,
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.norms.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.norms.is_empty()
    }

    /// Vector length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The `k` nearest rows to each query (`m x dim`), nearest first.
    pub fn search(&self, queries: &[f32], k: usize) -> Vec<Vec<Neighbour>> {
        self.search_skipping(queries, k, |_, _| false)
    }

    /// Every row's `k` nearest other rows (leave-one-out: a row is never its own
    /// neighbour, but an identical copy of it is).
    pub fn leave_one_out(&self, k: usize) -> Vec<Vec<Neighbour>> {
        self.search_skipping(&self.data, k, |q, x| q == x)
    }

    /// [`Index::search`], leaving out index rows `x` where `skip(query, x)`.
    pub fn search_skipping(
        &self,
        queries: &[f32],
        k: usize,
        skip: impl Fn(usize, usize) -> bool + Sync,
    ) -> Vec<Vec<Neighbour>> {
        assert!(
            queries.len().is_multiple_of(self.dim),
            "queries must be m x dim"
        );
        // Only cosine needs a (normalised) copy of the queries.
        let queries: std::borrow::Cow<[f32]> = match self.metric {
            Metric::Euclidean => queries.into(),
            Metric::Cosine => {
                let mut owned = queries.to_vec();
                owned.chunks_exact_mut(self.dim).for_each(normalise);
                owned.into()
            }
        };
        let m = queries.len() / self.dim;
        let k = k.min(self.len());
        if m == 0 || k == 0 {
            return vec![Vec::new(); m];
        }
        let query_norms: Vec<f32> = queries.chunks_exact(self.dim).map(squared_norm).collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(self.len().div_ceil(BLOCK));
        let rows_per_thread = self.len().div_ceil(threads).div_ceil(BLOCK) * BLOCK;
        let partial: Vec<Vec<BinaryHeap<Candidate>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (queries, query_norms, skip) = (&queries, &query_norms, &skip);
                    let start = (t * rows_per_thread).min(self.len());
                    let end = ((t + 1) * rows_per_thread).min(self.len());
                    scope.spawn(move || self.scan(queries, query_norms, start..end, k, skip))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a search thread does not panic"))
                .collect()
        });
        let mut merged: Vec<BinaryHeap<Candidate>> = vec![BinaryHeap::new(); m];
        for heaps in partial {
            for (q, heap) in heaps.into_iter().enumerate() {
                for c in heap {
                    offer(&mut merged[q], c, k);
                }
            }
        }
        // The expansion loses precision for near-identical vectors (a copy would be a
        // hair apart); the few chosen get their distance computed directly.
        merged
            .into_iter()
            .enumerate()
            .map(|(q, heap)| {
                let query = &queries[q * self.dim..(q + 1) * self.dim];
                let mut found: Vec<Neighbour> = heap
                    .into_iter()
                    .map(|c| Neighbour {
                        index: c.index,
                        distance: self.exact(query, c.index),
                    })
                    .collect();
                found.sort_by(|a, b| {
                    a.distance
                        .total_cmp(&b.distance)
                        .then(a.index.cmp(&b.index))
                });
                found
            })
            .collect()
    }

    /// The distance from `query` (normalised for cosine) to row `index`, directly.
    fn exact(&self, query: &[f32], index: usize) -> f32 {
        let row = &self.data[index * self.dim..(index + 1) * self.dim];
        match self.metric {
            Metric::Euclidean => row
                .iter()
                .zip(query)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt(),
            Metric::Cosine => {
                (1.0 - row.iter().zip(query).map(|(a, b)| a * b).sum::<f32>()).max(0.0)
            }
        }
    }

    /// The best `k` of rows `range` for every query, by squared distance (or `1 - dot`).
    fn scan(
        &self,
        queries: &[f32],
        query_norms: &[f32],
        range: std::ops::Range<usize>,
        k: usize,
        skip: &(impl Fn(usize, usize) -> bool + Sync),
    ) -> Vec<BinaryHeap<Candidate>> {
        let dim = self.dim;
        let m = query_norms.len();
        let mut heaps = vec![BinaryHeap::with_capacity(k + 1); m];
        let mut tile = ndarray::Array2::<f32>::zeros((QUERY_BLOCK.min(m), BLOCK));
        for block_start in range.clone().step_by(BLOCK) {
            let block_end = (block_start + BLOCK).min(range.end);
            let rows = block_end - block_start;
            let x =
                ArrayView2::from_shape((rows, dim), &self.data[block_start * dim..block_end * dim])
                    .expect("block shape");
            for q0 in (0..m).step_by(QUERY_BLOCK) {
                let q1 = (q0 + QUERY_BLOCK).min(m);
                let q = ArrayView2::from_shape((q1 - q0, dim), &queries[q0 * dim..q1 * dim])
                    .expect("query shape");
                let mut dots = tile.slice_mut(ndarray::s![..q1 - q0, ..rows]);
                general_mat_mul(1.0, &q, &x.t(), 0.0, &mut dots);
                for (qi, dot_row) in dots.outer_iter().enumerate() {
                    let query = q0 + qi;
                    let heap = &mut heaps[query];
                    let qn = query_norms[query];
                    for (j, &dot) in dot_row.iter().enumerate() {
                        let index = block_start + j;
                        let distance = match self.metric {
                            Metric::Euclidean => qn + self.norms[index] - 2.0 * dot,
                            Metric::Cosine => 1.0 - dot,
                        };
                        if heap.len() == k
                            && heap
                                .peek()
                                .is_some_and(|w: &Candidate| distance >= w.distance)
                        {
                            continue;
                        }
                        if skip(query, index) {
                            continue;
                        }
                        offer(heap, Candidate { distance, index }, k);
                    }
                }
            }
        }
        heaps
    }
}

/// The obvious way: every query against every row, one pair at a time, then a sort.
/// Exact and slow; the benchmark's baseline and the tests' reference.
pub fn naive_search(data: &[f32], dim: usize, queries: &[f32], k: usize) -> Vec<Vec<Neighbour>> {
    queries
        .chunks_exact(dim)
        .map(|q| {
            let mut all: Vec<Neighbour> = data
                .chunks_exact(dim)
                .enumerate()
                .map(|(index, x)| {
                    let mut sum = 0.0f32;
                    for i in 0..dim {
                        let d = q[i] - x[i];
                        sum += d * d;
                    }
                    Neighbour {
                        index,
                        distance: sum.sqrt(),
                    }
                })
                .collect();
            all.sort_by(|a, b| {
                a.distance
                    .total_cmp(&b.distance)
                    .then(a.index.cmp(&b.index))
            });
            all.truncate(k);
            all
        })
        .collect()
}

fn squared_norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum()
}

fn normalise(v: &mut [f32]) {
    let norm = squared_norm(v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// A candidate neighbour; the heap's top is the worst kept.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    distance: f32,
    index: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.index.cmp(&other.index))
    }
}

fn offer(heap: &mut BinaryHeap<Candidate>, c: Candidate, k: usize) {
    if heap.len() < k {
        heap.push(c);
    } else if heap.peek().is_some_and(|worst| c < *worst) {
        heap.pop();
        heap.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scion_edge::rng::SplitMix64;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    #[test]
    fn blocked_search_equals_the_naive_loop() {
        let dim = 37;
        let data = random(5000 * dim, 1);
        let queries = random(300 * dim, 2);
        let fast = Index::new(data.clone(), dim, Metric::Euclidean).search(&queries, 7);
        let slow = naive_search(&data, dim, &queries, 7);
        for (f, s) in fast.iter().zip(&slow) {
            let fi: Vec<usize> = f.iter().map(|n| n.index).collect();
            let si: Vec<usize> = s.iter().map(|n| n.index).collect();
            assert_eq!(fi, si);
            for (a, b) in f.iter().zip(s) {
                assert!((a.distance - b.distance).abs() < 1e-3, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn leave_one_out_skips_the_row_itself_but_not_its_copy() {
        let dim = 3;
        let data = vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 5.0, 5.0];
        let nn = Index::new(data, dim, Metric::Euclidean).leave_one_out(1);
        assert_eq!(nn[0][0].index, 1);
        assert_eq!(nn[1][0].index, 0);
        assert_eq!(nn[0][0].distance, 0.0);
        assert_eq!(nn[2][0].index, 0);
    }

    #[test]
    fn cosine_ignores_length() {
        let data = vec![1.0, 0.0, 0.0, 10.0, 3.0, 0.1];
        let nn = Index::new(data, 2, Metric::Cosine).search(&[0.0, 0.5], 3);
        assert_eq!(nn[0][0].index, 1);
        assert!(nn[0][0].distance < 1e-6);
        assert_eq!(nn[0][2].index, 0);
        assert!((nn[0][2].distance - 1.0).abs() < 1e-6);
    }
}
