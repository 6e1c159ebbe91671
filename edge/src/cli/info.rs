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
    let options = args.engine.options();
    for kind in EngineKind::ALL {
        let status = match engine::prepare(kind, &model.spec(), &options) {
            Ok(_) => "available".to_string(),
            Err(e) => format!("unavailable: {e}"),
        };
        println!("engine:   {kind:<9} {status}");
    }
    Ok(())
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
