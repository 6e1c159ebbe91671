//! The pure-inference ceiling: one engine on ready tensors, no decoding.
//!
//! `inference_ceiling MODEL ENGINE BATCH ITERATIONS [THREADS]` prints images per second
//! (median of the iterations after one warm-up batch).

use std::time::Instant;

use scion_edge::engine::{self, EngineKind, EngineOptions};
use scion_edge::{ContractOverrides, Model};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 5 || args.len() == 6,
        "usage: inference_ceiling MODEL ENGINE BATCH ITERATIONS [THREADS]"
    );
    let model = Model::load(args[1].as_ref(), &ContractOverrides::default())?;
    let kind: EngineKind = args[2].parse().map_err(anyhow::Error::msg)?;
    let batch: usize = args[3].parse()?;
    let iterations: usize = args[4].parse()?;
    let options = EngineOptions {
        threads: args.get(5).map(|t| t.parse()).transpose()?.unwrap_or(0),
        ort_library: None,
        spin_wait: true,
        ..Default::default()
    };
    let mut session = engine::prepare(kind, &model.spec(), &options)?;
    let shape = model.card.preprocessing.input_shape(batch);
    let len = shape.iter().product();
    let input = engine::Tensor {
        shape,
        data: (0..len)
            .map(|i| ((i % 255) as f32 - 127.0) / 128.0)
            .collect(),
    };
    session.run(&input)?;
    let mut rates: Vec<f64> = (0..iterations)
        .map(|_| {
            let t = Instant::now();
            session
                .run(&input)
                .map(|_| batch as f64 / t.elapsed().as_secs_f64())
        })
        .collect::<Result<_, _>>()?;
    rates.sort_by(f64::total_cmp);
    println!("{:.1}", rates[rates.len() / 2]);
    Ok(())
}
