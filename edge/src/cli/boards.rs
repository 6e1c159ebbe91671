use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use scion_boards::{BoardId, BoardProfile, Detection, detect, profile};

/// Show the board this runs on (or a named one): GPU, accelerators, engine order and
/// precision, CSI camera pipeline and the 40-pin header's GPIO lines.
#[derive(Debug, Args)]
pub struct BoardsArgs {
    /// Detect from the files under this root instead of / (a board's image, a fixture).
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Show this profile instead of detecting one (see --list).
    #[arg(long, value_name = "ID")]
    board: Option<String>,
    /// List the known board ids.
    #[arg(long)]
    list: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_boards(args: BoardsArgs) -> Result<i32> {
    if args.list {
        for id in BoardId::ALL {
            println!("{:<18} {}", id.as_str(), profile(id).name);
        }
        return Ok(0);
    }
    let mut detection = detect(&args.root, std::env::consts::ARCH);
    if let Some(id) = &args.board {
        let id: BoardId = id
            .parse()
            .map_err(anyhow::Error::msg)
            .map_err(|e| e.context("--board"))?;
        detection.profile = profile(id);
        detection.warning = None;
        detection.memory_gib = None;
    }
    if let Some(warning) = &detection.warning {
        tracing::warn!("{warning}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&detection)?);
    } else {
        print!("{}", describe(&detection));
    }
    Ok(0)
}

/// The profile as text for people.
fn describe(detection: &Detection) -> String {
    let p: &BoardProfile = &detection.profile;
    let mut out = format!("board      {} ({})\n", p.name, p.id);
    if let Some(model) = &detection.model {
        out += &format!("model      {model}\n");
    }
    if let Some(l4t) = &detection.l4t {
        out += &format!("L4T        {l4t}\n");
    }
    out += &format!("SoC        {}\n", p.soc);
    out += &match &p.gpu {
        Some(g) => format!(
            "GPU        {} (compute {}.{}, {} CUDA cores)\n",
            g.architecture, g.compute_capability.0, g.compute_capability.1, g.cuda_cores
        ),
        None => "GPU        none usable by CUDA\n".to_string(),
    };
    if !p.memory_gib.is_empty() {
        let sizes: Vec<String> = p.memory_gib.iter().map(|m| format!("{m}")).collect();
        out += &format!("memory     {} GiB", sizes.join(" / "));
        if let Some(m) = detection.memory_gib {
            out += &format!(" (this one: {m:.1} GiB)");
        }
        out.push('\n');
    } else if let Some(m) = detection.memory_gib {
        out += &format!("memory     {m:.1} GiB\n");
    }
    out += &format!("DLA cores  {}\n", p.dla_cores);
    out += &format!(
        "engines    {} ({})\n",
        p.engine_order.join(" > "),
        p.precision
    );
    if let Some(csi) = p.csi_source {
        out += &format!("camera     {csi}\n");
    }
    if p.header.is_empty() {
        out += "header     unknown: name GPIO lines as CHIP:LINE\n";
    } else {
        out += "header     pin  chip                 line  SoC name        function\n";
        for h in p.header {
            out += &format!(
                "           {:>3}  {:<20} {:>4}  {:<15} {}\n",
                h.pin, h.chip, h.line, h.soc_name, h.function
            );
        }
    }
    out
}
