use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use scion_edge::Model;
use scion_edge::engine::{self, EngineKind};

use super::{ContractArgs, EngineArgs};

/// Show a model's card, its inputs and outputs, and which engines can prepare it here.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The ONNX model.
    #[arg(value_name = "MODEL")]
    model: PathBuf,
    /// Print the card as JSON only.
    #[arg(long)]
    json: bool,
    /// Skip trying each engine on the model.
    #[arg(long)]
    no_engines: bool,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    contract: ContractArgs,
}

fn shape_text(v: &scion_onnx::pb::ValueInfoProto) -> String {
    use scion_onnx::pb::tensor_shape_proto::dimension::Value;
    use scion_onnx::pb::type_proto::Value as T;
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(T::TensorType(t)) => {
            let dims: Vec<String> = t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(Value::DimValue(v)) => v.to_string(),
                            Some(Value::DimParam(p)) => p.clone(),
                            None => "?".into(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!("[{}]", dims.join(", "))
        }
        _ => "(not a tensor)".into(),
    }
}

pub fn run(args: InfoArgs) -> Result<()> {
    let model = match Model::load(&args.model, &args.contract.overrides()) {
        Ok(model) => model,
        Err(scion_edge::model::ModelError::NoCard(_)) => return describe_cardless(&args),
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&model.card)?);
        return Ok(());
    }
    let card = &model.card;
    println!("model:    {}", args.model.display());
    println!(
        "card:     {} (v{}){}",
        card.name,
        card.version,
        if model.card_embedded {
            ""
        } else {
            " — built from flags, not in the file"
        }
    );
    let preview: Vec<&str> = card.labels.iter().take(3).map(String::as_str).collect();
    println!(
        "labels:   {} ({} ...)",
        card.labels.len(),
        preview.join(" | ")
    );
    println!(
        "preprocessing: {}",
        serde_json::to_string(&card.preprocessing)?
    );
    println!("tensors:  {}", serde_json::to_string(&card.tensors)?);
    println!("provenance: {}", serde_json::to_string(&card.provenance)?);
    if let Some(g) = &model.proto.graph {
        print_interface(g);
        println!(
            "nodes:    {}, opset {:?}",
            g.node.len(),
            model
                .proto
                .opset_import
                .iter()
                .map(|o| o.version)
                .collect::<Vec<_>>()
        );
    }
    if args.no_engines {
        return Ok(());
    }
    let options = args.engine.options()?;
    print_platform(&model, &options);
    for kind in EngineKind::ALL {
        let status = match engine::prepare(kind, &model.spec(), &options) {
            Ok(session) => format!("available, {}", session.precision()),
            Err(e) => format!("unavailable: {e}"),
        };
        println!("engine:   {kind:<9} {status}");
    }
    Ok(())
}

/// The GPU stack as the libraries report it, the precision TensorRT would build, the
/// options each GPU provider would be given, and the engine cache folder this model would use.
fn print_platform(model: &Model, options: &engine::EngineOptions) {
    use engine::{gpu, platform};
    let devices = match platform::cuda_devices() {
        Ok(d) if d.is_empty() => "the driver lists no device".to_string(),
        Ok(d) => d
            .iter()
            .map(|d| format!("{}: {}", d.ordinal, d.describe()))
            .collect::<Vec<_>>()
            .join(", "),
        Err(why) => why,
    };
    println!("cuda:     {devices}");
    println!(
        "tensorrt: {}",
        platform::tensorrt_version().unwrap_or_else(|why| why)
    );
    let onnxruntime = engine::ort_engine::build_info(options.ort_library.as_deref())
        .unwrap_or_else(|e| e.to_string());
    println!("onnxruntime: {onnxruntime}");
    let quantized = gpu::is_quantized(&model.bytes);
    let precision = gpu::resolve_precision(options.precision, options.board_precision, quantized);
    println!(
        "precision: asked {}, TensorRT would build {}{}",
        options
            .precision
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| format!("none (board: {})", options.board_precision.as_str())),
        match &precision {
            Ok(p) => p.as_str().to_string(),
            Err(why) => format!("nothing: {why}"),
        },
        if quantized {
            " (the model has QDQ nodes)"
        } else {
            ""
        }
    );
    // The plan without the cache: `info` looks, it creates no cache folder.
    let uncached = engine::EngineOptions {
        cache: None,
        ..options.clone()
    };
    for kind in [EngineKind::TensorRt, EngineKind::Cuda] {
        if let Ok(plan) = gpu::plan(kind, &model.spec(), &uncached, &onnxruntime)
            && let Some(text) = plan.describe()
        {
            println!("options:  {text}");
        }
    }
    if let (Some(cache), Ok(precision)) = (&options.cache, precision) {
        let folder = gpu::engine_key(&model.spec(), precision, options, &onnxruntime)
            .map(|key| cache.dir.join(key.folder_name()).display().to_string());
        println!(
            "engine cache: {}",
            folder.unwrap_or_else(|why| format!("not used here: {why}"))
        );
    }
}

/// A model without a card: what the graph is, what `import onnx` would find, and the
/// command that attaches a card.
fn describe_cardless(args: &InfoArgs) -> Result<()> {
    use anyhow::Context;
    let proto =
        scion_onnx::io::load(&args.model).with_context(|| format!("{}", args.model.display()))?;
    let g = proto.graph.as_ref().context("no graph")?;
    println!("model:    {}", args.model.display());
    println!(
        "card:     none (run `scion-edge import onnx {} --out MODEL.onnx` to attach one)",
        args.model.display()
    );
    println!(
        "producer: {} {} (IR {}, opset {})",
        proto.producer_name,
        proto.producer_version,
        proto.ir_version,
        scion_onnx::infer::opset(&proto)
    );
    print_interface(g);
    let mut ops: std::collections::BTreeMap<&str, usize> = Default::default();
    for n in &g.node {
        *ops.entry(n.op_type.as_str()).or_default() += 1;
    }
    println!(
        "nodes:    {} ({})",
        g.node.len(),
        ops.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let params: i64 = g
        .initializer
        .iter()
        .map(|t| t.dims.iter().product::<i64>())
        .sum();
    println!("weights:  {:.2} M values", params as f64 / 1e6);
    let mut normalised = proto.clone();
    let found = scion_onnx::normalize::normalize(&mut normalised, None)
        .and_then(|_| scion_onnx::features::find(&normalised));
    match found {
        Ok(f) => println!(
            "features: '{}' {:?}{} (what import would use)",
            f.tensor,
            f.shape,
            if f.pooled {
                ", pooled to channel means"
            } else {
                ""
            }
        ),
        Err(e) => println!("features: not found: {e}"),
    }
    Ok(())
}

/// The graph's image inputs (not initializers) and outputs, with their shapes.
fn print_interface(g: &scion_onnx::pb::GraphProto) {
    let inits: std::collections::HashSet<&str> =
        g.initializer.iter().map(|t| t.name.as_str()).collect();
    for i in g.input.iter().filter(|i| !inits.contains(i.name.as_str())) {
        println!("input:    {} {}", i.name, shape_text(i));
    }
    for o in &g.output {
        println!("output:   {} {}", o.name, shape_text(o));
    }
}
