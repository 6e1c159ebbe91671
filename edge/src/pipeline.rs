//! Parallel decode feeding batched inference: worker threads read and preprocess images
//! (the one preprocessing function) into a bounded queue, and the caller's thread gathers
//! them into batches, so the engine is never idle waiting for JPEGs. Used by the batch
//! classifier and by the trainer's feature extraction.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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

/// Decode `inputs` on `threads` threads and hand them to `on_batch` in batches of up to
/// `batch_size`; inputs that cannot be read or decoded go to `on_error` with the reason.
/// The first error returned by a callback stops the work and is returned.
pub fn for_each_batch<P, E>(
    inputs: &[P],
    contract: &Preprocessing,
    batch_size: usize,
    threads: usize,
    mut on_batch: impl FnMut(Batch) -> Result<(), E>,
    mut on_error: impl FnMut(usize, String) -> Result<(), E>,
) -> Result<(), E>
where
    P: AsRef<Path> + Sync,
{
    let batch_size = batch_size.max(1);
    let per_image = tensor_len(contract);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = bounded::<(usize, Result<Vec<f32>, String>)>(batch_size * 2 + threads);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = inputs.get(i) else { break };
                    let result = std::fs::read(path.as_ref())
                        .map_err(|e| e.to_string())
                        .and_then(|bytes| preprocess(&bytes, contract).map_err(|e| e.to_string()));
                    if tx.send((i, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let result = (|| {
            let mut batch = Batch::default();
            for (i, decoded) in rx {
                match decoded {
                    Ok(tensor) => {
                        if batch.indices.is_empty() {
                            batch.data.reserve(batch_size * per_image);
                        }
                        batch.data.extend_from_slice(&tensor);
                        batch.indices.push(i);
                        if batch.indices.len() == batch_size {
                            on_batch(std::mem::take(&mut batch))?;
                        }
                    }
                    Err(error) => on_error(i, error)?,
                }
            }
            if !batch.indices.is_empty() {
                on_batch(batch)?;
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        result
    })
}
