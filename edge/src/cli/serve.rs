use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use scion_edge::engine::{EngineKind, Policy};
use scion_edge::serve::collect::{self, Collector};
use scion_edge::serve::hub::Hub;
use scion_edge::serve::{Output, ServeConfig, ServeStats, run};
use scion_edge::service::config::{DEFAULT_CONFIG_PATH, EdgeConfig};
use scion_edge::service::hardware::{self, Hardware, UartSection};
use scion_edge::service::store::{ModelStore, parse_public_key};
use scion_edge::service::systemd::Notifier;
use scion_edge::service::{CheckSources, http, inbox, mqtt, prepare_file, preparer, store};
use scion_edge::source::{Backoff, FrameSource, Reconnecting, SourceUri};

/// Classify camera or video frames continuously, as a service: latest frame only, smoothed
/// labels, JSON lines, an HTTP API (health, Prometheus metrics, events, preview, uploads,
/// model updates), MQTT, and systemd's notify protocol.
///
/// Settings come from /etc/scion/edge.toml (or --config); every flag overrides its key.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (default: $SCION_EDGE_CONFIG, else /etc/scion/edge.toml when it
    /// exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration (file plus flags) as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// The model (ONNX with a card) [key: model].
    #[arg(long, short, value_name = "MODEL")]
    model: Option<PathBuf>,
    /// Where frames come from: csi://N, v4l2:///dev/videoN, file://PATH (a video, an image
    /// folder or a glob), rtsp://…, test://PATTERN or gst://PIPELINE [key: source].
    #[arg(long, value_name = "URI")]
    source: Option<String>,
    /// Restart a file source at its end [key: loop].
    #[arg(long = "loop")]
    loop_files: bool,
    /// Labels per frame record [key: top_k].
    #[arg(long, short = 'k')]
    top_k: Option<usize>,
    /// Smoothed probability a label needs before it is announced [key: smoothing.threshold].
    #[arg(long)]
    threshold: Option<f32>,
    /// Smooth probabilities over about N frames (EMA; 1: off) [key: smoothing.frames].
    #[arg(long, value_name = "N")]
    smooth: Option<usize>,
    /// Frames a new label must lead before it replaces the current one [key: smoothing.hold].
    #[arg(long, value_name = "N")]
    hold: Option<usize>,
    /// Write JSON lines here instead of standard output (appended) [key: output].
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Only label-change events, no record per frame [key: events_only].
    #[arg(long)]
    events_only: bool,
    /// Apply the model's "unknown" rule (`off`: always name a class) [key: unknown].
    #[arg(long, value_name = "on|off", value_parser = super::parse_switch)]
    unknown: Option<bool>,
    /// Stop after N classified frames.
    #[arg(long, value_name = "N")]
    max_frames: Option<u64>,
    /// Serve the HTTP API here, e.g. 127.0.0.1:8080 [key: http.listen].
    #[arg(long, value_name = "ADDR", help_heading = "Service")]
    listen: Option<String>,
    /// File holding the bearer token of POST /v1/model [key: http.token_file].
    #[arg(long, value_name = "FILE", help_heading = "Service")]
    token_file: Option<PathBuf>,
    /// Publish events and status to this MQTT broker, mqtt://HOST[:PORT] [key: mqtt.broker].
    #[arg(long, value_name = "URI", help_heading = "Service")]
    mqtt: Option<String>,
    /// MQTT topic prefix [key: mqtt.topic].
    #[arg(long, value_name = "TOPIC", help_heading = "Service")]
    mqtt_topic: Option<String>,
    /// Seconds between MQTT status messages [key: mqtt.status_interval_s].
    #[arg(long, value_name = "S", help_heading = "Service")]
    mqtt_status_interval: Option<f64>,
    /// Model store with A/B slots for updates without downtime [key: models.dir].
    #[arg(long, value_name = "DIR", help_heading = "Service")]
    models_dir: Option<PathBuf>,
    /// Folder watched for new models (default MODELS_DIR/inbox) [key: models.inbox].
    #[arg(long, value_name = "DIR", help_heading = "Service")]
    inbox: Option<PathBuf>,
    /// Only install models signed for this hex ed25519 key [key: models.public_key].
    #[arg(long, value_name = "HEX", help_heading = "Service")]
    public_key: Option<String>,
    /// Refuse models whose reference outputs cannot be checked [key: models.require_references].
    #[arg(long, help_heading = "Service")]
    require_references: bool,
    /// Send results to a microcontroller on this serial device, e.g. /dev/ttyTHS1
    /// [key: sinks.uart.device].
    #[arg(long, value_name = "DEVICE", help_heading = "Hardware")]
    uart: Option<PathBuf>,
    /// Baud rate of --uart [key: sinks.uart.baud].
    #[arg(long, value_name = "BAUD", help_heading = "Hardware")]
    uart_baud: Option<u32>,
    /// Save frames for the next training round here, one folder per guessed label with a
    /// JSON sidecar each (capture button, POST /v1/capture, --collect) [key: capture_dir].
    #[arg(long, value_name = "DIR", help_heading = "Collecting")]
    capture_dir: Option<PathBuf>,
    /// Save frames by themselves: low_confidence, label_change, unknown, every_s
    /// (comma-separated) [key: collect.policies].
    #[arg(
        long,
        value_name = "POLICIES",
        value_delimiter = ',',
        help_heading = "Collecting"
    )]
    collect: Option<Vec<scion_edge::serve::collect::Policy>>,
    /// low_confidence: save frames whose top-1 probability is below P [key: collect.below].
    #[arg(long, value_name = "P", help_heading = "Collecting")]
    collect_below: Option<f32>,
    /// every_s: seconds between two saved frames [key: collect.every_s].
    #[arg(long, value_name = "S", help_heading = "Collecting")]
    collect_every: Option<f64>,
    /// Most images kept per folder, oldest dropped first [key: collect.per_label].
    #[arg(long, value_name = "N", help_heading = "Collecting")]
    collect_per_label: Option<usize>,
    /// Disk budget of the capture folder in MiB, oldest dropped first [key: collect.max_mb].
    #[arg(long, value_name = "MIB", help_heading = "Collecting")]
    collect_max_mb: Option<u64>,
    /// Use this board profile instead of detecting it (`scion-edge boards --list`) [key: board].
    #[arg(long, value_name = "ID", help_heading = "Hardware")]
    board: Option<String>,
    #[command(flatten)]
    engine: super::EngineArgs,
}

impl ServeArgs {
    /// The configuration file's settings with every given flag applied.
    fn effective_config(&self) -> Result<EdgeConfig> {
        let from_env = std::env::var_os("SCION_EDGE_CONFIG").map(PathBuf::from);
        let mut config = match self.config.as_ref().or(from_env.as_ref()) {
            Some(path) => EdgeConfig::load(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).is_file() => {
                EdgeConfig::load(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => EdgeConfig::default(),
        };
        set(&mut config.model, &self.model);
        set(&mut config.source, &self.source);
        set(&mut config.output, &self.output);
        config.loop_files |= self.loop_files;
        config.events_only |= self.events_only;
        if let Some(on) = self.unknown {
            config.unknown = on;
        }
        if let Some(k) = self.top_k {
            config.top_k = k;
        }
        if let Some(t) = self.threshold {
            config.smoothing.threshold = t;
        }
        if let Some(n) = self.smooth {
            config.smoothing.frames = n;
        }
        if let Some(n) = self.hold {
            config.smoothing.hold = n;
        }
        set(&mut config.http.listen, &self.listen);
        if self.token_file.is_some() {
            config.http.token = None;
            config.http.token_file.clone_from(&self.token_file);
        }
        set(&mut config.mqtt.broker, &self.mqtt);
        if let Some(topic) = &self.mqtt_topic {
            config.mqtt.topic.clone_from(topic);
        }
        if let Some(s) = self.mqtt_status_interval {
            config.mqtt.status_interval_s = s;
        }
        set(&mut config.models.dir, &self.models_dir);
        set(&mut config.models.inbox, &self.inbox);
        set(&mut config.models.public_key, &self.public_key);
        config.models.require_references |= self.require_references;
        if let Some(device) = &self.uart {
            let uart = config
                .sinks
                .uart
                .get_or_insert_with(|| UartSection::new(device.clone()));
            uart.device.clone_from(device);
        }
        if let Some(baud) = self.uart_baud {
            let uart = config
                .sinks
                .uart
                .as_mut()
                .context("--uart-baud needs --uart DEVICE or a [sinks.uart] section")?;
            uart.baud = baud;
        }
        set(&mut config.capture_dir, &self.capture_dir);
        let collect = &mut config.collect;
        if let Some(policies) = &self.collect {
            collect.policies.clone_from(policies);
        }
        if let Some(p) = self.collect_below {
            collect.below = p;
        }
        if let Some(s) = self.collect_every {
            collect.every_s = s;
        }
        if let Some(n) = self.collect_per_label {
            collect.per_label = n;
        }
        if let Some(mb) = self.collect_max_mb {
            collect.max_mb = mb;
        }
        set(&mut config.board, &self.board);
        self.engine.merge_into(&mut config.engine);
        Ok(config)
    }
}

/// A flag given on the command line replaces the file's value.
fn set<T: Clone>(target: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        target.clone_from(value);
    }
}

pub fn run_serve(args: ServeArgs) -> Result<i32> {
    let config = args.effective_config()?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(0);
    }
    config.validate()?;
    let token = config.token()?;
    let source_text = config.source.clone().unwrap_or_default();
    let uri: SourceUri = source_text.parse()?;
    let board = hardware::board(config.board.as_deref())?;
    if let Some(warning) = &board.warning {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        "board: {}{}; engines {}, {}",
        board.profile.name,
        board
            .l4t
            .as_ref()
            .map(|r| format!(", L4T {r}"))
            .unwrap_or_default(),
        board.profile.engine_order.join(" > "),
        board.profile.precision
    );
    let policy = match &config.engine.engine {
        Some(name) => Policy::prefer(
            name.parse::<EngineKind>().map_err(anyhow::Error::msg)?,
            config.engine.require,
        ),
        // The board's order first, then whatever else this binary can run.
        None => {
            let mut order: Vec<EngineKind> = board
                .profile
                .engine_order
                .iter()
                .filter_map(|name| name.parse().ok())
                .filter(|kind: &EngineKind| kind.compiled())
                .collect();
            for kind in Policy::default().order {
                if !order.contains(&kind) {
                    order.push(kind);
                }
            }
            Policy {
                order,
                strict: config.engine.require,
            }
        }
    };
    let prepare = preparer(
        policy,
        config.engine.options(board.profile.precision)?,
        CheckSources {
            folder: config.engine.check_images.clone(),
            references: config.models.dir.as_ref().map(|d| d.join("references")),
        },
    );
    let store = match &config.models.dir {
        Some(dir) => {
            let key = config
                .models
                .public_key
                .as_deref()
                .map(parse_public_key)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            Some(Arc::new(ModelStore::open(
                dir,
                key,
                config.models.require_references,
                config.models.reference_tolerance,
            )?))
        }
        None => None,
    };
    let model_path = store::initial_model(store.as_deref(), config.model.as_deref())?;
    // The API listens before the first model is prepared, so /healthz can say
    // "preparing engine" through a first TensorRT build.
    let hub = Arc::new(Hub::new());
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("scion-io")
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    let mut tasks = Vec::new();
    if let Some(listen) = &config.http.listen {
        let listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("http.listen {listen}: cannot listen"))?;
        listener.set_nonblocking(true)?;
        let api = Arc::new(http::Api {
            hub: hub.clone(),
            store: store.clone(),
            prepare: prepare.clone(),
            token,
            stale_after_s: config.http.stale_after_s,
            max_upload_bytes: config.http.max_upload_bytes,
            max_model_bytes: config.http.max_model_bytes,
            image_uploads: tokio::sync::Semaphore::new(http::IMAGE_UPLOADS_AT_ONCE),
            shutdown: shutdown_rx.clone(),
            device: http::DeviceInfo {
                source: source_text.clone(),
                board: format!(
                    "{}{}",
                    board.profile.name,
                    board
                        .l4t
                        .as_ref()
                        .map(|r| format!(", L4T {r}"))
                        .unwrap_or_default()
                ),
                precision: config
                    .engine
                    .precision
                    .unwrap_or(board.profile.precision)
                    .as_str()
                    .to_string(),
                gpio: hardware::describe(&config.gpio),
            },
        });
        let mut shutdown = shutdown_rx.clone();
        tracing::info!("HTTP API on http://{}", listener.local_addr()?);
        tasks.push(runtime.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return tracing::error!("HTTP API: {e}"),
            };
            let server =
                axum::serve(listener, http::router(api)).with_graceful_shutdown(async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                });
            if let Err(e) = server.await {
                tracing::error!("HTTP API: {e}");
            }
        }));
    }
    let notifier = Notifier::from_env().map(Arc::new);
    let mut model = {
        // A first TensorRT build takes minutes: tell systemd the start is alive.
        let _extending = notifier
            .clone()
            .map(|n| scion_edge::service::systemd::extend_start_while(n, "preparing engine"));
        prepare_file(&model_path, &*prepare)
            .with_context(|| format!("model {}", model_path.display()))?
    };
    model.classifier.set_unknown(config.unknown);
    tracing::info!(
        "serving {} ({}) on {}",
        model.info.name,
        model.info.id(),
        model.info.engine
    );

    let mut out: Box<dyn Write> = match &config.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("output {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("cannot install the SIGTERM/Ctrl-C handler")?;
    }
    if let Some(dir) = &config.capture_dir {
        let collector = Collector::start(dir, config.collect.clone())
            .with_context(|| format!("capture_dir {}", dir.display()))?;
        let stats = collector.stats();
        tracing::info!(
            "collecting into {} ({} images there; policies: {})",
            dir.display(),
            stats.files,
            if config.collect.policies.is_empty() {
                "the capture button only".to_string()
            } else {
                config
                    .collect
                    .policies
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        if config.collect.policies.contains(&collect::Policy::Unknown)
            && model.classifier.card().unknown.is_none()
        {
            tracing::warn!(
                "collect policy `unknown`: {} has no unknown rule, so it saves nothing",
                model.info.name
            );
        }
        hub.set_collector(collector);
    }
    if config.mqtt.broker.is_some() {
        tasks.push(runtime.spawn(mqtt::run(
            config.mqtt.clone(),
            hub.clone(),
            shutdown_rx.clone(),
        )));
    }
    let mut threads = Vec::new();
    if let Some(store) = &store {
        let inbox_dir = config
            .models
            .inbox
            .clone()
            .unwrap_or_else(|| store.dir().join("inbox"));
        threads.push(
            inbox::watch(
                inbox_dir.clone(),
                store.clone(),
                hub.clone(),
                prepare.clone(),
                Duration::from_millis(500),
                stop.clone(),
            )
            .with_context(|| format!("models.inbox {}", inbox_dir.display()))?,
        );
    }
    if let Some(notifier) = &notifier {
        notifier.notify(&format!(
            "READY=1\nSTATUS=serving {} on {} from {source_text}",
            model.info.name, model.info.engine
        ));
        if let Some(interval) = Notifier::watchdog_interval() {
            threads.push(scion_edge::service::systemd::watchdog(
                notifier.clone(),
                interval,
                hub.clone(),
                stop.clone(),
            )?);
        }
    }

    let mut hardware = Hardware::start(
        &config.sinks,
        &config.gpio,
        &board.profile,
        &model.classifier.answer_labels(),
        hub.clone(),
    )?;
    let mut source = Reconnecting::new(
        uri,
        Box::new(scion_edge::source::open),
        Backoff::default(),
        config.loop_files,
    );
    let serve_config = ServeConfig {
        smoothing: config.smoothing,
        top_k: config.top_k.min(model.classifier.card().labels.len()),
        max_frames: args.max_frames,
        events_only: config.events_only,
        unknown: config.unknown,
        ..ServeConfig::default()
    };
    let result = run(
        &mut source,
        model,
        &serve_config,
        &hub,
        &stop,
        &mut |o: &Output| {
            hardware.on_output(o, &hub);
            serde_json::to_writer(&mut out, o)?;
            out.write_all(b"\n")?;
            // A consumer tailing the output sees each line as it happens.
            out.flush()
        },
    );

    // Drain: stop the helpers, let MQTT say goodbye, flush the output.
    stop.store(true, Ordering::SeqCst);
    drop(hardware);
    if let Some(notifier) = &notifier {
        notifier.notify("STOPPING=1");
    }
    let _ = shutdown_tx.send(true);
    runtime.block_on(async {
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Some(collector) = hub.collector() {
        collector.finish();
    }
    for thread in threads {
        let _ = thread.join();
    }
    out.flush()?;
    let stats = result.with_context(|| format!("serving {source_text}"))?;
    tracing::info!(
        "{} frames, {} dropped, {} label changes, {} reconnects; latency median {:.1} ms, p99 {:.1} ms",
        stats.frames,
        stats.dropped,
        hub.metrics().events,
        source.reconnects(),
        ServeStats::quantile(&stats.latencies_ms, 0.5),
        ServeStats::quantile(&stats.latencies_ms, 0.99),
    );
    Ok(0)
}
