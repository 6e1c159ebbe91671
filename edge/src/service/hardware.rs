//! The hardware around the device: the board profile, the UART link to a microcontroller
//! (`[sinks.uart]`) and GPIO actions (`[gpio.trigger]`, `[gpio.status_led]`,
//! `[gpio.capture_button]`). Lines are claimed at start, so a wrong pin or a busy line
//! stops the service with the key at fault instead of failing silently later.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use scion_boards::gpio::actions::{
    Button, ButtonEvent, LedPattern, StatusLed, Trigger, TriggerMode, TriggerTiming,
};
use scion_boards::gpio::linux::{Direction, LineSpec, request_line};
use scion_boards::uart::{LinkModel, LinkResult, UartConfig, UartLink};
use scion_boards::{BoardProfile, Detection};
use serde::{Deserialize, Serialize};

use crate::serve::Output;
use crate::serve::hub::Hub;

/// `[sinks]`: outputs besides JSON lines, HTTP and MQTT.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksSection {
    /// `[sinks.uart]`: results to a microcontroller over a serial port.
    pub uart: Option<UartSection>,
}

/// `[sinks.uart]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UartSection {
    /// The serial device (`/dev/ttyTHS1` on a Jetson header, `/dev/ttyAMA0` on a Pi,
    /// `/dev/ttyACM0` for a USB microcontroller).
    pub device: PathBuf,
    /// Baud rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Heartbeat after this many idle milliseconds.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Results kept while the port is down; beyond, they are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

impl UartSection {
    /// A link on `device` with the default settings.
    pub fn new(device: PathBuf) -> Self {
        UartSection {
            device,
            baud: default_baud(),
            heartbeat_ms: default_heartbeat_ms(),
            queue: default_queue(),
        }
    }
}

/// `[gpio]`: actions on GPIO lines.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpioSection {
    /// A relay or LED driven by a label.
    pub trigger: Option<TriggerSection>,
    /// An LED showing health: heartbeat while serving, fast blink when not.
    pub status_led: Option<LedSection>,
    /// A button that saves the current frame into `capture_dir`.
    pub capture_button: Option<ButtonSection>,
}

/// How `[gpio.trigger]` follows its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerModeKey {
    /// On while the label is announced.
    Hold,
    /// A pulse of `pulse_ms` each time it is announced.
    Pulse,
}

/// The GPIO actions in words, for the device's page.
pub fn describe(gpio: &GpioSection) -> String {
    let mut parts = Vec::new();
    if let Some(t) = &gpio.trigger {
        parts.push(format!("trigger on line {} for '{}'", t.line, t.label));
    }
    if let Some(l) = &gpio.status_led {
        parts.push(format!("status LED on line {}", l.line));
    }
    if let Some(b) = &gpio.capture_button {
        parts.push(format!("capture button on line {}", b.line));
    }
    if parts.is_empty() {
        "off".into()
    } else {
        parts.join("; ")
    }
}

/// `[gpio.trigger]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSection {
    /// Header pin (`"7"`) or `CHIP:LINE` (`"tegra234-gpio:144"`, `"gpiochip0:17"`).
    pub line: String,
    /// The label that switches it.
    pub label: String,
    /// `hold` or `pulse`.
    #[serde(default = "default_mode")]
    pub mode: TriggerModeKey,
    /// Pulse width.
    #[serde(default = "default_pulse_ms")]
    pub pulse_ms: u64,
    /// Once on, stay on at least this long.
    #[serde(default)]
    pub min_on_ms: u64,
    /// Once off, stay off at least this long.
    #[serde(default)]
    pub min_off_ms: u64,
    /// On is a low level.
    #[serde(default)]
    pub active_low: bool,
}

/// `[gpio.status_led]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedSection {
    /// Header pin or `CHIP:LINE`.
    pub line: String,
    /// Lit is a low level.
    #[serde(default)]
    pub active_low: bool,
}

/// `[gpio.capture_button]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButtonSection {
    /// Header pin or `CHIP:LINE`.
    pub line: String,
    /// Pressed is a low level (a button to ground with a pull-up; the usual wiring).
    #[serde(default = "default_true")]
    pub active_low: bool,
    /// A level counts once steady this long.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
}

fn default_baud() -> u32 {
    115_200
}
fn default_heartbeat_ms() -> u64 {
    1000
}
fn default_queue() -> usize {
    256
}
fn default_mode() -> TriggerModeKey {
    TriggerModeKey::Hold
}
fn default_pulse_ms() -> u64 {
    200
}
fn default_true() -> bool {
    true
}
fn default_debounce_ms() -> u64 {
    30
}

/// Check the hardware keys; the error names the key.
pub fn validate(
    sinks: &SinksSection,
    gpio: &GpioSection,
    capture_dir: Option<&PathBuf>,
) -> Result<(), (&'static str, String)> {
    if let Some(uart) = &sinks.uart {
        if uart.baud == 0 {
            return Err(("sinks.uart.baud", "must be above 0".into()));
        }
        if uart.heartbeat_ms < 10 {
            return Err(("sinks.uart.heartbeat_ms", "must be at least 10".into()));
        }
        if uart.queue == 0 {
            return Err(("sinks.uart.queue", "must be at least 1".into()));
        }
    }
    let lines = [
        ("gpio.trigger.line", gpio.trigger.as_ref().map(|t| &t.line)),
        (
            "gpio.status_led.line",
            gpio.status_led.as_ref().map(|l| &l.line),
        ),
        (
            "gpio.capture_button.line",
            gpio.capture_button.as_ref().map(|b| &b.line),
        ),
    ];
    let mut seen: Vec<LineSpec> = Vec::new();
    for (key, line) in lines {
        let Some(line) = line else { continue };
        let spec: LineSpec = line.parse().map_err(|e| (key, e))?;
        if seen.contains(&spec) {
            return Err((key, format!("{spec} is already used by another action")));
        }
        seen.push(spec);
    }
    if let Some(t) = &gpio.trigger {
        if t.label.trim().is_empty() {
            return Err(("gpio.trigger.label", "must name a label".into()));
        }
        if t.mode == TriggerModeKey::Pulse && t.pulse_ms == 0 {
            return Err(("gpio.trigger.pulse_ms", "must be above 0".into()));
        }
    }
    if gpio.capture_button.is_some() && capture_dir.is_none() {
        return Err((
            "gpio.capture_button",
            "needs `capture_dir` (where the frames go)".into(),
        ));
    }
    Ok(())
}

/// The board this runs on: detected, or named by `board` in the configuration.
pub fn board(configured: Option<&str>) -> anyhow::Result<Detection> {
    let mut detection = scion_boards::detect(std::path::Path::new("/"), std::env::consts::ARCH);
    if let Some(id) = configured {
        let id: scion_boards::BoardId = id
            .parse()
            .map_err(anyhow::Error::msg)
            .context("config key `board`")?;
        detection.profile = scion_boards::profile(id);
        detection.warning = None;
    }
    Ok(detection)
}

/// The running hardware actions. Dropping it switches outputs off and closes the port.
pub struct Hardware {
    uart: Option<UartLink>,
    gpio: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    model: String,
}

impl Hardware {
    /// Open the link and claim the GPIO lines; `labels` are the first model's.
    pub fn start(
        sinks: &SinksSection,
        gpio: &GpioSection,
        profile: &BoardProfile,
        labels: &[String],
        hub: Arc<Hub>,
    ) -> anyhow::Result<Hardware> {
        let stop = Arc::new(AtomicBool::new(false));
        let uart = match &sinks.uart {
            Some(u) => Some(
                UartLink::start(UartConfig {
                    path: u.device.clone(),
                    baud: u.baud,
                    heartbeat: Duration::from_millis(u.heartbeat_ms),
                    queue: u.queue,
                    ..UartConfig::default()
                })
                .context("sinks.uart: cannot start the link thread")?,
            ),
            None => None,
        };
        let gpio =
            if gpio.trigger.is_some() || gpio.status_led.is_some() || gpio.capture_button.is_some()
            {
                Some(start_gpio(gpio, profile, labels, hub, stop.clone())?)
            } else {
                None
            };
        Ok(Hardware {
            uart,
            gpio,
            stop,
            model: String::new(),
        })
    }

    /// Forward a frame's top result to the microcontroller (never blocks the loop).
    pub fn on_output(&mut self, output: &Output, hub: &Hub) {
        let Some(uart) = &self.uart else { return };
        let Output::Frame {
            seq,
            top,
            latency,
            model,
            unknown,
            ..
        } = output
        else {
            return;
        };
        if *model != self.model
            && let Some(info) = hub.model()
        {
            let mut id = [0u8; 6];
            if let Ok(bytes) = hex::decode(&info.sha256[..info.sha256.len().min(12)]) {
                id[..bytes.len().min(6)].copy_from_slice(&bytes[..bytes.len().min(6)]);
            }
            uart.set_model(LinkModel {
                id,
                classes: info.classes.min(u16::MAX as usize) as u16,
                name: info.name.clone(),
            });
            self.model.clone_from(model);
        }
        if let Some(best) = top.first() {
            uart.try_send(LinkResult {
                label: if *unknown == Some(true) {
                    scion_boards::uart::UNKNOWN_LABEL
                } else {
                    best.index.min(u16::MAX as usize - 1) as u16
                },
                score: best.prob,
                seq: *seq as u32,
                latency_us: (latency.total_ms * 1e3).min(u32::MAX as f64) as u32,
            });
        }
        hub.metrics().uart = Some(uart.stats());
    }
}

impl Drop for Hardware {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.gpio.take() {
            let _ = thread.join();
        }
        self.uart.take();
    }
}

/// Claim the configured lines and run the actions on a 5 ms tick.
fn start_gpio(
    gpio: &GpioSection,
    profile: &BoardProfile,
    labels: &[String],
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<JoinHandle<()>> {
    let claim = |key: &str, line: &str, direction| {
        let spec: LineSpec = line
            .parse()
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("config key `{key}`"))?;
        request_line(&spec, profile, direction, "scion-edge")
            .with_context(|| format!("config key `{key}`"))
    };
    let trigger = match &gpio.trigger {
        Some(t) => {
            if !labels.contains(&t.label) {
                anyhow::bail!(
                    "config key `gpio.trigger.label`: '{}' is not a label of the model ({})",
                    t.label,
                    labels.join(", ")
                );
            }
            let pin = claim(
                "gpio.trigger.line",
                &t.line,
                Direction::Output(t.active_low),
            )?;
            let mode = match t.mode {
                TriggerModeKey::Hold => TriggerMode::Hold,
                TriggerModeKey::Pulse => TriggerMode::Pulse {
                    width_ms: t.pulse_ms,
                },
            };
            let timing = TriggerTiming {
                min_on_ms: t.min_on_ms,
                min_off_ms: t.min_off_ms,
            };
            let trigger = Trigger::new(pin, mode, timing, t.active_low)
                .context("config key `gpio.trigger.line`: cannot drive the line")?;
            Some((trigger, t.label.clone()))
        }
        None => None,
    };
    let mut led = match &gpio.status_led {
        Some(l) => {
            let pin = claim(
                "gpio.status_led.line",
                &l.line,
                Direction::Output(l.active_low),
            )?;
            Some(
                StatusLed::new(pin, l.active_low)
                    .context("config key `gpio.status_led.line`: cannot drive the line")?,
            )
        }
        None => None,
    };
    let mut button = match &gpio.capture_button {
        Some(b) => {
            let pin = claim("gpio.capture_button.line", &b.line, Direction::Input)?;
            Some(Button::new(pin, b.active_low, b.debounce_ms))
        }
        None => None,
    };
    let thread = std::thread::Builder::new()
        .name("scion-gpio".into())
        .spawn(move || {
            let mut trigger = trigger;
            let start = Instant::now();
            let mut failures = 0u64;
            let mut fail = |what: &str, e: &dyn std::fmt::Display, hub: &Hub| {
                failures += 1;
                hub.metrics().gpio_errors += 1;
                // The first failure, then every 1000th: a dead line must not flood the log.
                if failures % 1000 == 1 {
                    tracing::warn!("GPIO {what}: {e} ({failures} failures so far)");
                }
            };
            while !stop.load(Ordering::Relaxed) {
                let now = start.elapsed().as_millis() as u64;
                let (announced, fresh) = match hub.announced() {
                    Some((label, age)) => (label, age < 2.0),
                    None => (None, false),
                };
                if let Some((t, label)) = &mut trigger {
                    let active = fresh && announced.as_ref() == Some(label);
                    if let Err(e) = t.update(now, active) {
                        fail("trigger", &e, &hub);
                    }
                }
                if let Some(led) = &mut led {
                    let pattern = if fresh {
                        LedPattern::Heartbeat
                    } else {
                        LedPattern::Error
                    };
                    if let Err(e) = led.show(pattern, now) {
                        fail("status LED", &e, &hub);
                    }
                }
                if let Some(button) = &mut button {
                    match button.poll(now) {
                        // Saving waits for the next frame: not on this thread, so the
                        // trigger and LED keep their timing.
                        Ok(Some(ButtonEvent::Pressed)) => {
                            let hub = hub.clone();
                            std::thread::spawn(move || match hub.capture(Duration::from_secs(2)) {
                                Ok(c) => {
                                    tracing::info!("capture button: saved {}", c.path.display())
                                }
                                Err(e) => tracing::warn!("capture button: {e}"),
                            });
                        }
                        Ok(_) => {}
                        Err(e) => fail("capture button", &e, &hub),
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Some((t, _)) = trigger
                && let Err(e) = t.release()
            {
                tracing::warn!("GPIO trigger: cannot switch off: {e}");
            }
        })?;
    Ok(thread)
}
