//! The service's configuration: `/etc/scion/edge.toml` (or `--config FILE`), every key
//! overridable by a flag. Unknown keys are errors, and validation names the key at fault,
//! so a typo in a file nobody reads again is caught at start, not in production.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::serve::collect::CollectSection;
use crate::serve::smoothing::SmoothingConfig;
pub use crate::service::engine_config::EngineSection;
use crate::service::hardware::{GpioSection, SinksSection};

/// Where the service looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/scion/edge.toml";

/// The default configuration file installed by `scion-edge install` and the Debian package.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../dist/edge.toml");

/// Everything `scion-edge serve` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// The model to serve (with `[models] dir`: only the first one; updates live there).
    pub model: Option<PathBuf>,
    /// Frame source URI (`csi://0`, `v4l2:///dev/video0`, `file://…`, `rtsp://…`, `test://ball`).
    pub source: Option<String>,
    /// Restart file sources at their end.
    #[serde(rename = "loop")]
    pub loop_files: bool,
    /// Labels per frame record.
    pub top_k: usize,
    /// JSON-lines output file (appended); none: standard output.
    pub output: Option<PathBuf>,
    /// Only label-change events in the JSON lines.
    pub events_only: bool,
    /// Smoothing and hysteresis.
    pub smoothing: SmoothingConfig,
    /// Engine selection.
    pub engine: EngineSection,
    /// The HTTP API.
    pub http: HttpSection,
    /// MQTT publishing.
    pub mqtt: MqttSection,
    /// The model store (A/B slots, inbox, signatures).
    pub models: ModelsSection,
    /// The board profile to use instead of the detected one (`scion-edge boards --list`).
    pub board: Option<String>,
    /// Where frames for the next training round go, one folder per guessed label, each
    /// JPEG with a JSON sidecar (the capture button, `POST /v1/capture`, `[collect]`).
    pub capture_dir: Option<PathBuf>,
    /// Which frames are saved into `capture_dir` by themselves, and how many are kept.
    pub collect: CollectSection,
    /// Outputs besides JSON lines, HTTP and MQTT: `[sinks.uart]`.
    pub sinks: SinksSection,
    /// GPIO actions: `[gpio.trigger]`, `[gpio.status_led]`, `[gpio.capture_button]`.
    pub gpio: GpioSection,
    /// Apply the model's "unknown" rule when its card has one: frames showing none of
    /// its classes are announced as `unknown` (a label for `gpio.trigger`, index 65535 on
    /// the UART link).
    pub unknown: bool,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address to listen on; none: no HTTP API. Keep it on localhost unless the network
    /// in front of the device is trusted and a token is set.
    pub listen: Option<String>,
    /// Bearer token for the mutating endpoints (`POST /v1/model`, `/v1/references`,
    /// `/v1/capture`) and the collected images; the page asks for it once.
    pub token: Option<String>,
    /// A file holding the token (so the config file can stay world-readable).
    pub token_file: Option<PathBuf>,
    /// Largest accepted upload for `POST /v1/classify`, bytes.
    pub max_upload_bytes: usize,
    /// Largest accepted model for `POST /v1/model`, bytes.
    pub max_model_bytes: usize,
    /// Seconds without a frame after which `/healthz` reports not ready.
    pub stale_after_s: f64,
}

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// Broker as `mqtt://HOST:PORT`; none: no MQTT.
    pub broker: Option<String>,
    /// Topic prefix: events go to `PREFIX/event`, status to `PREFIX/status` (retained).
    pub topic: String,
    /// Client id (default: `scion-edge-` and the host name).
    pub client_id: Option<String>,
    /// Seconds between status messages.
    pub status_interval_s: f64,
}

/// `[models]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsSection {
    /// The model store: slots `a/` and `b/`, the `current` link, `references/`.
    pub dir: Option<PathBuf>,
    /// A folder watched for new models (`*.onnx`, signature `*.onnx.sig`, reference
    /// images); default `DIR/inbox`.
    pub inbox: Option<PathBuf>,
    /// Hex ed25519 public key; when set, unsigned or wrongly signed models are refused.
    pub public_key: Option<String>,
    /// Refuse models whose reference outputs cannot be checked here.
    pub require_references: bool,
    /// Largest |Δp| allowed between a reference output and this device's.
    pub reference_tolerance: f32,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            model: None,
            source: None,
            loop_files: false,
            top_k: 3,
            output: None,
            events_only: false,
            smoothing: SmoothingConfig::default(),
            engine: EngineSection::default(),
            http: HttpSection::default(),
            mqtt: MqttSection::default(),
            models: ModelsSection::default(),
            board: None,
            capture_dir: None,
            collect: CollectSection::default(),
            sinks: SinksSection::default(),
            gpio: GpioSection::default(),
            unknown: true,
        }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: None,
            token: None,
            token_file: None,
            max_upload_bytes: 10 << 20,
            max_model_bytes: 512 << 20,
            stale_after_s: 5.0,
        }
    }
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            broker: None,
            topic: "scion/edge".into(),
            client_id: None,
            status_interval_s: 30.0,
        }
    }
}

impl Default for ModelsSection {
    fn default() -> Self {
        ModelsSection {
            dir: None,
            inbox: None,
            public_key: None,
            require_references: false,
            reference_tolerance: 1e-3,
        }
    }
}

/// A configuration that cannot be used; the message names the file and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key that does not exist.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the line and key).
        message: String,
    },
    /// A key with an unusable value.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The dotted key, e.g. `smoothing.threshold`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl EdgeConfig {
    /// Read and parse a file (not yet validated: flags may still override keys).
    pub fn load(path: &Path) -> Result<EdgeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse TOML text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<EdgeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })
    }

    /// The effective configuration as TOML (`--print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    /// Check every key; the first problem is returned, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self.source.is_none() {
            return invalid(
                "source",
                "no frame source (set `source` or --source)".into(),
            );
        }
        if self.model.is_none() && self.models.dir.is_none() {
            return invalid(
                "model",
                "no model (set `model` or --model, or a `[models] dir` holding one)".into(),
            );
        }
        if self.top_k == 0 {
            return invalid("top_k", "must be at least 1".into());
        }
        let s = &self.smoothing;
        if !(0.0..=1.0).contains(&s.threshold) {
            return invalid(
                "smoothing.threshold",
                format!("{} is not between 0 and 1", s.threshold),
            );
        }
        if s.frames == 0 {
            return invalid("smoothing.frames", "must be at least 1".into());
        }
        if s.hold == 0 {
            return invalid("smoothing.hold", "must be at least 1".into());
        }
        self.engine.options(crate::engine::Precision::Fp32)?;
        if let Some(listen) = &self.http.listen
            && let Err(e) = listen.parse::<SocketAddr>()
        {
            return invalid(
                "http.listen",
                format!("'{listen}': {e} (expected e.g. 127.0.0.1:8080)"),
            );
        }
        if self.http.token.is_some() && self.http.token_file.is_some() {
            return invalid(
                "http.token_file",
                "give `token` or `token_file`, not both".into(),
            );
        }
        if self.http.max_upload_bytes == 0 || self.http.max_model_bytes == 0 {
            return invalid("http.max_upload_bytes", "must be above 0".into());
        }
        if self.http.stale_after_s.is_nan() || self.http.stale_after_s <= 0.0 {
            return invalid("http.stale_after_s", "must be above 0".into());
        }
        if let Some(broker) = &self.mqtt.broker
            && let Err(e) = parse_broker(broker)
        {
            return invalid("mqtt.broker", e);
        }
        if self.mqtt.topic.is_empty() || self.mqtt.topic.contains(['#', '+']) {
            return invalid(
                "mqtt.topic",
                format!(
                    "'{}' must be a non-empty topic without wildcards",
                    self.mqtt.topic
                ),
            );
        }
        if self.mqtt.status_interval_s.is_nan() || self.mqtt.status_interval_s < 0.1 {
            return invalid("mqtt.status_interval_s", "must be at least 0.1".into());
        }
        if let Some(key) = &self.models.public_key
            && let Err(e) = crate::service::store::parse_public_key(key)
        {
            return invalid("models.public_key", e);
        }
        if self.models.inbox.is_some() && self.models.dir.is_none() {
            return invalid(
                "models.inbox",
                "needs `models.dir` (the store models are installed into)".into(),
            );
        }
        if self.models.public_key.is_some() && self.models.dir.is_none() {
            return invalid("models.public_key", "needs `models.dir`".into());
        }
        if self.models.reference_tolerance.is_nan() || self.models.reference_tolerance <= 0.0 {
            return invalid("models.reference_tolerance", "must be above 0".into());
        }
        if let Some(board) = &self.board
            && let Err(e) = board.parse::<scion_boards::BoardId>()
        {
            return invalid("board", e);
        }
        if let Err((key, message)) = self.collect.validate(self.capture_dir.as_ref()) {
            return invalid(key, message);
        }
        if let Err((key, message)) =
            crate::service::hardware::validate(&self.sinks, &self.gpio, self.capture_dir.as_ref())
        {
            return invalid(key, message);
        }
        Ok(())
    }

    /// The bearer token, read from `token_file` if that is how it is given.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        match (&self.http.token, &self.http.token_file) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let token = text.trim().to_string();
                if token.is_empty() {
                    return Err(ConfigError::Invalid {
                        key: "http.token_file",
                        message: format!("{} is empty", path.display()),
                    });
                }
                Ok(Some(token))
            }
            (None, None) => Ok(None),
        }
    }
}

/// `mqtt://HOST:PORT` (port 1883 when left out) → host and port.
pub fn parse_broker(uri: &str) -> Result<(String, u16), String> {
    let rest = uri
        .strip_prefix("mqtt://")
        .ok_or_else(|| format!("'{uri}': expected mqtt://HOST[:PORT] (TLS is not supported)"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("'{uri}': bad port '{p}'"))?,
        ),
        None => (rest, 1883),
    };
    if host.is_empty() {
        return Err(format!("'{uri}': no host"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EdgeConfig, ConfigError> {
        EdgeConfig::parse(text, Path::new("edge.toml"))
    }

    #[test]
    fn the_shipped_default_parses_and_validates_once_given_a_source() {
        let mut config = parse(DEFAULT_CONFIG_TOML).expect("default config");
        config.source.get_or_insert_with(|| "test://ball".into());
        config.validate().expect("valid");
        assert_eq!(config.http.listen.as_deref(), Some("127.0.0.1:8080"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e =
            parse("source = \"test://ball\"\n[smoothing]\nthreshhold = 0.5\n").expect_err("typo");
        let text = e.to_string();
        assert!(text.contains("threshhold"), "{text}");
        assert!(text.contains("edge.toml"), "{text}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let config =
            parse("source = \"test://ball\"\nmodel = \"m.onnx\"\n[smoothing]\nthreshold = 1.5\n")
                .expect("parses");
        let e = config.validate().expect_err("out of range").to_string();
        assert!(e.contains("smoothing.threshold"), "{e}");
        let config =
            parse("source = \"x\"\nmodel = \"m\"\n[mqtt]\nbroker = \"tcp://h\"\n").expect("parses");
        let e = config.validate().expect_err("bad broker").to_string();
        assert!(e.contains("mqtt.broker"), "{e}");
    }

    #[test]
    fn collect_policies_are_checked() {
        let config =
            parse("source = \"x\"\nmodel = \"m\"\n[collect]\npolicies = [\"low_confidence\"]\n")
                .expect("parses");
        let e = config.validate().expect_err("no folder").to_string();
        assert!(
            e.contains("collect.policies") && e.contains("capture_dir"),
            "{e}"
        );
        let e = parse("source = \"x\"\n[collect]\npolicies = [\"sometimes\"]\n")
            .expect_err("unknown policy")
            .to_string();
        assert!(e.contains("sometimes"), "{e}");
        let config = parse(
            "source = \"x\"\nmodel = \"m\"\ncapture_dir = \"/tmp/c\"\n[collect]\npolicies = [\"every_s\", \"unknown\"]\nbelow = 1.5\n",
        )
        .expect("parses");
        let e = config.validate().expect_err("bad threshold").to_string();
        assert!(e.contains("collect.below"), "{e}");
    }

    #[test]
    fn printing_round_trips() {
        let mut config = EdgeConfig {
            source: Some("test://ball".into()),
            model: Some("m.onnx".into()),
            ..EdgeConfig::default()
        };
        config.mqtt.broker = Some("mqtt://localhost:1884".into());
        let again = parse(&config.to_toml()).expect("printed config parses");
        assert_eq!(again, config);
    }

    #[test]
    fn brokers() {
        assert_eq!(parse_broker("mqtt://h:1884"), Ok(("h".into(), 1884)));
        assert_eq!(parse_broker("mqtt://h"), Ok(("h".into(), 1883)));
        assert!(parse_broker("mqtts://h").is_err());
    }
}
