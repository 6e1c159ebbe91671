//! Counters and latency histograms of the service, rendered as Prometheus text
//! (exposition format 0.0.4) for `GET /metrics`.

use std::collections::VecDeque;
use std::fmt::Write;
use std::time::{Duration, Instant};

/// Histogram bucket bounds, seconds: 1 ms to 5 s.
const BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// A Prometheus histogram with fixed buckets.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    /// Count one observation, in seconds.
    pub fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(&mut self.counts) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// The mean observation, seconds (0 before the first).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// The stages of one frame, in order.
pub const STAGES: [&str; 4] = ["capture", "preprocess", "inference", "post"];

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Frames classified.
    pub frames: u64,
    /// Frames the source dropped because a newer one arrived.
    pub dropped: u64,
    /// Label-change events.
    pub events: u64,
    /// Source reopenings.
    pub reconnects: u64,
    /// Images classified through `POST /v1/classify`.
    pub uploads: u64,
    /// Models installed while running.
    pub model_swaps: u64,
    /// Models refused.
    pub model_rejections: u64,
    /// Per stage (see [`STAGES`]).
    pub stages: [Histogram; 4],
    /// Capture to result.
    pub latency: Histogram,
    /// The microcontroller link's counters, when `[sinks.uart]` is on.
    pub uart: Option<scion_boards::uart::LinkStats>,
    /// Failed reads or writes of GPIO lines.
    pub gpio_errors: u64,
    recent: VecDeque<Instant>,
}

/// The window over which frames per second are measured.
const FPS_WINDOW: Duration = Duration::from_secs(5);

impl Metrics {
    /// Count a classified frame: per-stage seconds in [`STAGES`] order, and the total.
    pub fn frame(&mut self, stages: [f64; 4], total: f64, dropped: u64, now: Instant) {
        self.frames += 1;
        self.dropped += dropped;
        for (h, s) in self.stages.iter_mut().zip(stages) {
            h.observe(s);
        }
        self.latency.observe(total);
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > FPS_WINDOW)
        {
            self.recent.pop_front();
        }
    }

    /// Frames per second over the last few seconds.
    pub fn fps(&self, now: Instant) -> f64 {
        let recent = self
            .recent
            .iter()
            .filter(|t| now.duration_since(**t) <= FPS_WINDOW)
            .count();
        recent as f64 / FPS_WINDOW.as_secs_f64()
    }

    /// Prometheus text. `engine` and `model` go on an info gauge; `last_frame_age` is
    /// seconds since the last frame (none yet: absent).
    pub fn render(
        &self,
        engine: &EngineLabels<'_>,
        model: &str,
        last_frame_age: Option<f64>,
        now: Instant,
    ) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            &mut out,
            "scion_frames_total",
            "Frames classified.",
            self.frames,
        );
        counter(
            &mut out,
            "scion_dropped_frames_total",
            "Frames skipped because a newer one arrived while the model was busy.",
            self.dropped,
        );
        counter(
            &mut out,
            "scion_events_total",
            "Label changes announced.",
            self.events,
        );
        counter(
            &mut out,
            "scion_reconnects_total",
            "Times the frame source was reopened.",
            self.reconnects,
        );
        counter(
            &mut out,
            "scion_uploads_total",
            "Images classified through POST /v1/classify.",
            self.uploads,
        );
        counter(
            &mut out,
            "scion_model_swaps_total",
            "Models installed while serving.",
            self.model_swaps,
        );
        counter(
            &mut out,
            "scion_model_rejections_total",
            "Models refused by verification.",
            self.model_rejections,
        );
        let _ = writeln!(
            out,
            "# HELP scion_fps Frames classified per second over the last {} s.\n\
             # TYPE scion_fps gauge\nscion_fps {}",
            FPS_WINDOW.as_secs(),
            self.fps(now)
        );
        if let Some(age) = last_frame_age {
            let _ = writeln!(
                out,
                "# HELP scion_last_frame_age_seconds Seconds since the last classified frame.\n\
                 # TYPE scion_last_frame_age_seconds gauge\nscion_last_frame_age_seconds {age}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP scion_engine_info The engine in use, the precision asked and the one it \
             was built for (a refused reduced-precision engine shows fp32), and the model.\n\
             # TYPE scion_engine_info gauge\nscion_engine_info{{engine=\"{}\",precision_asked=\"{}\",\
             precision=\"{}\",model=\"{}\"}} 1",
            escape(engine.engine),
            escape(engine.precision_asked),
            escape(engine.precision),
            escape(model)
        );
        let _ = writeln!(
            out,
            "# HELP scion_stage_seconds Time per frame in each stage (capture: from arrival to \
             the start of processing).\n# TYPE scion_stage_seconds histogram"
        );
        for (stage, h) in STAGES.iter().zip(&self.stages) {
            h.render(
                &mut out,
                "scion_stage_seconds",
                &format!("stage=\"{stage}\""),
            );
        }
        let _ = writeln!(
            out,
            "# HELP scion_frame_latency_seconds From a frame's arrival to its result.\n\
             # TYPE scion_frame_latency_seconds histogram"
        );
        self.latency
            .render(&mut out, "scion_frame_latency_seconds", "");
        counter(
            &mut out,
            "scion_gpio_errors_total",
            "Failed reads or writes of GPIO lines.",
            self.gpio_errors,
        );
        if let Some(uart) = &self.uart {
            render_uart(&mut out, uart);
        }
        out
    }
}

/// The microcontroller link's counters.
/// What `scion_engine_info` says of the engine.
#[derive(Debug, Clone, Copy)]
pub struct EngineLabels<'a> {
    /// The engine's name.
    pub engine: &'a str,
    /// The precision asked (config, flag or board default).
    pub precision_asked: &'a str,
    /// The precision the engine was built for.
    pub precision: &'a str,
}

fn render_uart(out: &mut String, uart: &scion_boards::uart::LinkStats) {
    let _ = writeln!(
        out,
        "# HELP scion_uart_connected Whether the serial port is open.\n\
         # TYPE scion_uart_connected gauge\nscion_uart_connected {}",
        u8::from(uart.connected)
    );
    let _ = writeln!(
        out,
        "# HELP scion_uart_results_total Results for the microcontroller: sent, withheld by \
         its pause or threshold, or dropped on a full queue.\n# TYPE scion_uart_results_total counter"
    );
    for (outcome, n) in [
        ("sent", uart.results_sent),
        ("suppressed", uart.results_suppressed),
        ("dropped", uart.results_dropped),
    ] {
        let _ = writeln!(out, "scion_uart_results_total{{outcome=\"{outcome}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP scion_uart_bad_frames_total Frames from the microcontroller that failed to \
         decode.\n# TYPE scion_uart_bad_frames_total counter"
    );
    for (kind, n) in ["framing", "crc", "version", "malformed", "overflow"]
        .iter()
        .zip(uart.bad_frames)
    {
        let _ = writeln!(out, "scion_uart_bad_frames_total{{kind=\"{kind}\"}} {n}");
    }
    for (name, help, value) in [
        (
            "scion_uart_disconnects_total",
            "Serial connections lost.",
            uart.disconnects,
        ),
        (
            "scion_uart_open_failures_total",
            "Failed attempts to open the serial port.",
            uart.open_failures,
        ),
        (
            "scion_uart_commands_total",
            "Commands applied from the microcontroller.",
            uart.commands,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let mut h = Histogram::default();
        for s in [0.0005, 0.003, 0.003, 7.0] {
            h.observe(s);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"5\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count 4\n"), "{out}");
    }

    #[test]
    fn fps_counts_the_recent_window() {
        let mut m = Metrics::default();
        let start = Instant::now();
        for i in 0..50 {
            m.frame([0.0; 4], 0.0, 0, start + Duration::from_millis(100 * i));
        }
        let now = start + Duration::from_millis(4900);
        assert!((m.fps(now) - 10.0).abs() < 0.5, "{}", m.fps(now));
    }
}
