//! Preprocessing alone, one thread: `preprocess_rate MODEL DIR` prints images per second
//! (decode + resize + crop + normalise), the rate one decode thread can feed an engine.

use std::time::Instant;

use scion_edge::preprocess::preprocess;
use scion_edge::{ContractOverrides, Model};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 3, "usage: preprocess_rate MODEL DIR");
    let model = Model::load(args[1].as_ref(), &ContractOverrides::default())?;
    let mut files: Vec<_> = std::fs::read_dir(&args[2])?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    let blobs: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let t = Instant::now();
    for b in &blobs {
        preprocess(b, &model.card.preprocessing)?;
    }
    println!("{:.1}", blobs.len() as f64 / t.elapsed().as_secs_f64());
    Ok(())
}
