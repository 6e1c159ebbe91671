//! Parallel decode feeding batched inference: worker threads read and preprocess images
//! (the one preprocessing function, or an augmented view of it) into a bounded prefetch
//! queue, and the caller's thread gathers them into batches, so the engine is never idle
//! waiting for JPEGs. Used by the batch classifier and by the trainer's loader.
//!
//! It also measures itself: how fast the workers prepare images and how long the consumer
//! waited for them, which says whether the loader or the engine is the bottleneck.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use scion_onnx::card::Preprocessing;

use crate::preprocess::{preprocess, tensor_len};

/// Images gathered for one inference call.
#[derive(Debug, Default)]
pub struct Batch {
    /// Indices (into the input list) of the images, in `data` order.
    pub indices: Vec<usize>,
    /// Their tensors back to back.
    pub data: Vec<f32>,
}

/// Where the time went in one [`for_each_prepared`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Throughput {
    /// Images prepared (including failures).
    pub images: usize,
    /// Worker threads.
    pub threads: usize,
    /// Wall-clock time of the whole call.
    pub wall: Duration,
    /// Summed time the workers spent preparing images.
    pub prepare_busy: Duration,
    /// Time the consumer spent inside `on_batch` (the engine, for inference).
    pub consumer_busy: Duration,
    /// Time the consumer spent waiting for the queue.
    pub starved: Duration,
}

impl Throughput {
    /// Images per second the workers can prepare together.
    pub fn loader_rate(&self) -> f64 {
        rate(
            self.images,
            self.prepare_busy.as_secs_f64() / self.threads.max(1) as f64,
        )
    }

    /// Images per second the consumer handles when it never waits.
    pub fn consumer_rate(&self) -> f64 {
        rate(self.images, self.consumer_busy.as_secs_f64())
    }

    /// True when the consumer waited for images more than a tenth of the time.
    pub fn loader_bound(&self) -> bool {
        self.starved.as_secs_f64() > 0.1 * self.wall.as_secs_f64()
    }
}

fn rate(images: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        images as f64 / seconds
    } else {
        f64::INFINITY
    }
}

/// Decode `inputs` on `threads` threads and hand them to `on_batch` in batches of up to
/// `batch_size`; inputs that cannot be read or decoded go to `on_error` with the reason.
/// The first error returned by a callback stops the work and is returned.
pub fn for_each_batch<P, E>(
    inputs: &[P],
    contract: &Preprocessing,
    batch_size: usize,
    threads: usize,
    on_batch: impl FnMut(Batch) -> Result<(), E>,
    on_error: impl FnMut(usize, String) -> Result<(), E>,
) -> Result<Throughput, E>
where
    P: AsRef<Path> + Sync,
{
    for_each_prepared(
        inputs.len(),
        tensor_len(contract),
        batch_size,
        threads,
        |i| {
            std::fs::read(inputs[i].as_ref())
                .map_err(|e| e.to_string())
                .and_then(|bytes| preprocess(&bytes, contract).map_err(|e| e.to_string()))
        },
        on_batch,
        on_error,
    )
}

/// The general form: `prepare(i)` makes the tensor of input `i` (of `per_image` values) on
/// a worker thread; the rest is as [`for_each_batch`].
pub fn for_each_prepared<E>(
    count: usize,
    per_image: usize,
    batch_size: usize,
    threads: usize,
    prepare: impl Fn(usize) -> Result<Vec<f32>, String> + Sync,
    mut on_batch: impl FnMut(Batch) -> Result<(), E>,
    mut on_error: impl FnMut(usize, String) -> Result<(), E>,
) -> Result<Throughput, E> {
    let batch_size = batch_size.max(1);
    let threads = threads.max(1);
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let busy_nanos = AtomicU64::new(0);
    let (tx, rx) = bounded::<(usize, Result<Vec<f32>, String>)>(batch_size * 2 + threads);
    let mut stats = Throughput {
        threads,
        ..Throughput::default()
    };
    let result = std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, stop, busy_nanos, prepare) = (&next, &stop, &busy_nanos, &prepare);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let t = Instant::now();
                    let result = prepare(i);
                    busy_nanos.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    if tx.send((i, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let result = (|| {
            let mut batch = Batch::default();
            let mut run = |batch: Batch, stats: &mut Throughput| {
                let t = Instant::now();
                let r = on_batch(batch);
                stats.consumer_busy += t.elapsed();
                r
            };
            loop {
                let waited = Instant::now();
                let Ok((i, prepared)) = rx.recv() else { break };
                stats.starved += waited.elapsed();
                stats.images += 1;
                match prepared {
                    Ok(tensor) if tensor.len() == per_image => {
                        if batch.indices.is_empty() {
                            batch.data.reserve(batch_size * per_image);
                        }
                        batch.data.extend_from_slice(&tensor);
                        batch.indices.push(i);
                        if batch.indices.len() == batch_size {
                            run(std::mem::take(&mut batch), &mut stats)?;
                        }
                    }
                    Ok(tensor) => on_error(
                        i,
                        format!("prepared {} values, expected {per_image}", tensor.len()),
                    )?,
                    Err(error) => on_error(i, error)?,
                }
            }
            if !batch.indices.is_empty() {
                run(batch, &mut stats)?;
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        result
    });
    stats.wall = started.elapsed();
    stats.prepare_busy = Duration::from_nanos(busy_nanos.load(Ordering::Relaxed));
    result.map(|()| stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(prepare_ms: u64, consume_ms: u64) -> Throughput {
        for_each_prepared(
            12,
            2,
            3,
            2,
            |i| {
                std::thread::sleep(Duration::from_millis(prepare_ms));
                if i == 5 {
                    Err("bad".into())
                } else {
                    Ok(vec![i as f32; 2])
                }
            },
            |batch| -> Result<(), ()> {
                std::thread::sleep(Duration::from_millis(consume_ms));
                assert_eq!(batch.data.len(), 2 * batch.indices.len());
                Ok(())
            },
            |i, e| {
                assert_eq!((i, e.as_str()), (5, "bad"));
                Ok(())
            },
        )
        .expect("no callback fails")
    }

    #[test]
    fn throughput_says_which_side_is_the_bottleneck() {
        // Slow workers, instant consumer: the consumer starves.
        let slow_loader = run(40, 0);
        assert_eq!(slow_loader.images, 12);
        assert!(slow_loader.loader_bound(), "{slow_loader:?}");
        assert!(slow_loader.consumer_rate() > slow_loader.loader_rate());
        // Instant workers, slow consumer: the queue is always full.
        let slow_engine = run(0, 40);
        assert!(!slow_engine.loader_bound(), "{slow_engine:?}");
        assert!(slow_engine.loader_rate() > slow_engine.consumer_rate());
    }
}
