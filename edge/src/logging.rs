//! Logging set-up shared by the scion binaries: `tracing` to stderr, colour only on a
//! terminal, `-v`/`-q` levels, `RUST_LOG` overriding both.

use std::io::IsTerminal;

/// Install the global subscriber. `verbose` counts `-v` flags; `quiet` keeps warnings only.
pub fn init(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "warn,scion_edge=info,scion_onnx=info,scion_trainer=info",
        (false, 1) => "info,scion_edge=debug,scion_onnx=debug,scion_trainer=debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
}
