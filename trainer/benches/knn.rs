//! Exact k-NN: scion's blocked search against the naive per-pair loop, in one process.
//!
//! `cargo bench -p scion-trainer --bench knn` — 100,000 random 1280-d vectors, 100 queries,
//! k = 10. Prints the median of each and their ratio, checks both find the same
//! neighbours, and fails below 10x. `KNN_BENCH_N` changes the index size.

use std::time::{Duration, Instant};

use scion_edge::rng::SplitMix64;
use scion_trainer::represent::knn::{Index, Metric, naive_search};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("KNN_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let (dim, queries_n, k) = (1280, 100, 10);
    let mut rng = SplitMix64::new(42);
    let data: Vec<f32> = (0..n * dim).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
    let queries: Vec<f32> = (0..queries_n * dim)
        .map(|_| rng.next_f32() * 2.0 - 1.0)
        .collect();
    println!(
        "exact k-NN: {n} vectors of {dim}, {queries_n} queries, k = {k}, {} threads",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    );

    let build = Instant::now();
    let index = Index::new(data.clone(), dim, Metric::Euclidean);
    println!(
        "index (norms): {:.1} ms",
        build.elapsed().as_secs_f64() * 1e3
    );

    let mut fast_times = Vec::new();
    let mut fast = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        fast = index.search(&queries, k);
        fast_times.push(t.elapsed());
    }
    let mut naive_times = Vec::new();
    let mut naive = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        naive = naive_search(&data, dim, &queries, k);
        naive_times.push(t.elapsed());
    }
    let same = fast
        .iter()
        .zip(&naive)
        .all(|(a, b)| a.iter().map(|x| x.index).eq(b.iter().map(|x| x.index)));
    let (f, s) = (median(fast_times), median(naive_times));
    let ratio = s.as_secs_f64() / f.as_secs_f64();
    println!(
        "blocked search: median {:>9.1} ms ({:.0} queries/s)",
        f.as_secs_f64() * 1e3,
        queries_n as f64 / f.as_secs_f64()
    );
    println!(
        "naive loop:     median {:>9.1} ms ({:.0} queries/s)",
        s.as_secs_f64() * 1e3,
        queries_n as f64 / s.as_secs_f64()
    );
    println!("ratio: {ratio:.1}x faster; same neighbours: {same}");
    if !same {
        eprintln!("FAILED: the searches disagree");
        std::process::exit(1);
    }
    if ratio < 10.0 {
        eprintln!("FAILED: below the 10x target");
        std::process::exit(1);
    }
}
