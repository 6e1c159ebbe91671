//! Logging set-up shared by the scion binaries: `tracing` to stderr, colour only on a
//! terminal, `-v`/`-q` levels, `RUST_LOG` overriding both.

use std::io::IsTerminal;

/// The logging flags every scion binary takes (flatten into the top-level parser).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct LogArgs {
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors; no progress bar.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log lines as text or as JSON objects (for journald or a log shipper).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, with a timestamp.
    Json,
}

/// Install the global subscriber for the given flags.
pub fn init(args: LogArgs) {
    let default = match (args.quiet, args.verbose) {
        (true, _) => "warn",
        (false, 0) => "warn,scion_edge=info,scion_onnx=info,scion_trainer=info",
        (false, 1) => "info,scion_edge=debug,scion_onnx=debug,scion_trainer=debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .without_time()
            .init(),
    }
}
