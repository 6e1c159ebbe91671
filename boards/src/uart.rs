//! The UART link to a microcontroller on Linux: results out, commands in, reconnecting.
//!
//! One writer thread owns the port and a queue: it says `Hello` and the model on every
//! (re)connection, writes results in order, answers status requests and sends a heartbeat
//! when idle. A reader thread per connection decodes the microcontroller's frames (noise
//! costs only the frames it touches) and applies its commands: threshold, pause, resume,
//! status. A port that vanishes (USB adapter unplugged, MCU reset) is reopened with backoff;
//! results queued meanwhile are kept up to the queue's size, then counted as dropped.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
/// The `Result` label of a frame the model's unknown rule rejected.
pub use scion_link::UNKNOWN_LABEL;
use scion_link::{Decoder, ErrorKind, MAX_FRAME, Message, PROTOCOL_VERSION, Role};
use serde::Serialize;
use serialport::{SerialPort, TTYPort};

/// Where and how to talk.
#[derive(Debug, Clone)]
pub struct UartConfig {
    /// The serial device, e.g. `/dev/ttyTHS1` (Jetson header UART) or `/dev/ttyACM0`.
    pub path: PathBuf,
    /// Baud rate.
    pub baud: u32,
    /// Send a heartbeat after this long without traffic.
    pub heartbeat: Duration,
    /// Results kept while the port is down or slow; beyond this they are dropped (counted).
    pub queue: usize,
    /// Our name in `Hello` (at most 32 bytes are sent).
    pub name: String,
    /// Longest wait between attempts to reopen the port.
    pub reconnect_max: Duration,
}

impl Default for UartConfig {
    fn default() -> Self {
        UartConfig {
            path: PathBuf::from("/dev/ttyTHS1"),
            baud: 115_200,
            heartbeat: Duration::from_secs(1),
            queue: 256,
            name: concat!("scion-edge ", env!("CARGO_PKG_VERSION")).to_string(),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

/// One classification result for the microcontroller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkResult {
    /// Class index.
    pub label: u16,
    /// Probability.
    pub score: f32,
    /// Frame sequence number.
    pub seq: u32,
    /// Capture to result, microseconds.
    pub latency_us: u32,
}

/// The model being served, as the microcontroller is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkModel {
    /// The first 6 bytes of the model file's sha256.
    pub id: [u8; 6],
    /// Number of classes.
    pub classes: u16,
    /// The model's name.
    pub name: String,
}

/// Counters of a link, for metrics and tests.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LinkStats {
    /// The port is open now.
    pub connected: bool,
    /// Successful opens of the port.
    pub connects: u64,
    /// Failed attempts to open it.
    pub open_failures: u64,
    /// Connections lost (read or write failed, device gone).
    pub disconnects: u64,
    /// Results written.
    pub results_sent: u64,
    /// Results withheld because the MCU paused them or they were under its threshold.
    pub results_suppressed: u64,
    /// Results dropped because the queue was full.
    pub results_dropped: u64,
    /// Frames written (all messages).
    pub frames_sent: u64,
    /// Good frames received.
    pub frames_received: u64,
    /// Commands applied (threshold, pause, resume, status request).
    pub commands: u64,
    /// Bad frames received, by kind: framing, CRC, version, malformed, overflow.
    pub bad_frames: [u64; 5],
    /// Whether the MCU has paused results.
    pub paused: bool,
    /// The MCU's threshold.
    pub threshold: f32,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    connected: AtomicBool,
    paused: AtomicBool,
    threshold: AtomicU32,
    offered: AtomicU32,
    connects: AtomicU64,
    open_failures: AtomicU64,
    disconnects: AtomicU64,
    results_sent: AtomicU64,
    results_suppressed: AtomicU64,
    results_dropped: AtomicU64,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    commands: AtomicU64,
    bad_frames: [AtomicU64; 5],
    model: std::sync::Mutex<Option<LinkModel>>,
    model_dirty: AtomicBool,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

enum Outgoing {
    Result(LinkResult),
    Status,
    /// Look at the connection and stop flags now.
    Wake,
}

/// A running link. Dropping it stops the threads and closes the port.
pub struct UartLink {
    tx: Sender<Outgoing>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl UartLink {
    /// Start the link; the port is opened (and reopened) in the background, so a missing
    /// device is not an error here but a warning and a counter.
    pub fn start(config: UartConfig) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(config.queue.max(1));
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("scion-uart".into())
            .spawn({
                let shared = shared.clone();
                let tx = tx.clone();
                move || supervise(config, rx, tx, shared)
            })?;
        Ok(UartLink {
            tx,
            shared,
            thread: Some(thread),
        })
    }

    /// Queue a result without waiting; false (and counted) when the queue is full.
    pub fn try_send(&self, result: LinkResult) -> bool {
        self.shared.offered.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Outgoing::Result(result)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                bump(&self.shared.results_dropped);
                false
            }
        }
    }

    /// Queue a result, waiting while the queue is full (batch senders, tests).
    pub fn send(&self, result: LinkResult) {
        self.shared.offered.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Outgoing::Result(result)).is_err() {
            bump(&self.shared.results_dropped);
        }
    }

    /// Tell the MCU which model serves (now and on every reconnection). Never blocks.
    pub fn set_model(&self, model: LinkModel) {
        if let Ok(mut slot) = self.shared.model.lock() {
            *slot = Some(model);
        }
        self.shared.model_dirty.store(true, Ordering::SeqCst);
        let _ = self.tx.try_send(Outgoing::Wake);
    }

    /// Whether the port is open.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LinkStats {
        let s = &self.shared;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LinkStats {
            connected: s.connected.load(Ordering::Relaxed),
            connects: load(&s.connects),
            open_failures: load(&s.open_failures),
            disconnects: load(&s.disconnects),
            results_sent: load(&s.results_sent),
            results_suppressed: load(&s.results_suppressed),
            results_dropped: load(&s.results_dropped),
            frames_sent: load(&s.frames_sent),
            frames_received: load(&s.frames_received),
            commands: load(&s.commands),
            bad_frames: s.bad_frames.each_ref().map(load),
            paused: s.paused.load(Ordering::Relaxed),
            threshold: f32::from_bits(s.threshold.load(Ordering::Relaxed)),
        }
    }
}

impl Drop for UartLink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.tx.try_send(Outgoing::Wake);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Open, serve, reopen until stopped.
fn supervise(
    config: UartConfig,
    rx: Receiver<Outgoing>,
    tx: Sender<Outgoing>,
    shared: Arc<Shared>,
) {
    let path = config.path.display().to_string();
    let first_backoff = Duration::from_millis(50);
    let mut backoff = first_backoff;
    let mut warned = false;
    while !shared.stop.load(Ordering::SeqCst) {
        let port = match serialport::new(&path, config.baud)
            .timeout(Duration::from_millis(100))
            .open_native()
        {
            Ok(port) => port,
            Err(e) => {
                bump(&shared.open_failures);
                if !warned {
                    tracing::warn!("UART {path}: {e}; retrying in the background");
                    warned = true;
                }
                sleep_unless_stopped(&shared, backoff);
                backoff = (backoff * 2).min(config.reconnect_max);
                continue;
            }
        };
        backoff = first_backoff;
        warned = false;
        bump(&shared.connects);
        shared.connected.store(true, Ordering::SeqCst);
        tracing::info!("UART {path}: connected at {} baud", config.baud);
        let outcome = serve_connection(port, &config, &rx, &tx, &shared);
        shared.connected.store(false, Ordering::SeqCst);
        if let Err(e) = outcome {
            bump(&shared.disconnects);
            tracing::warn!("UART {path}: {e}; reconnecting");
        }
    }
}

/// Wait `delay` while the port is down. Queued results stay queued (in order) for the
/// next connection; when the queue is full, senders count the overflow.
fn sleep_unless_stopped(shared: &Shared, delay: Duration) {
    let until = Instant::now() + delay;
    while !shared.stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10).min(delay));
    }
}

fn serve_connection(
    port: TTYPort,
    config: &UartConfig,
    rx: &Receiver<Outgoing>,
    tx: &Sender<Outgoing>,
    shared: &Arc<Shared>,
) -> std::io::Result<()> {
    let down = Arc::new(AtomicBool::new(false));
    let reader = {
        let port = port.try_clone_native()?;
        let shared = shared.clone();
        let down = down.clone();
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("scion-uart-rx".into())
            .spawn(move || read_commands(port, &shared, &down, &tx))?
    };
    let mut writer = Writer {
        port,
        shared: shared.clone(),
        last_write: Instant::now(),
    };
    writer.port.set_timeout(Duration::from_secs(2))?;
    let result = (|| {
        writer.write(&Message::Hello {
            protocol: PROTOCOL_VERSION,
            role: Role::Host,
            name: truncate(&config.name, 32),
        })?;
        // A new connection may be a reset MCU: tell it the model again.
        shared.model_dirty.store(true, Ordering::SeqCst);
        let started = Instant::now();
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            if down.load(Ordering::SeqCst) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "the device went away",
                ));
            }
            if shared.model_dirty.swap(false, Ordering::SeqCst) {
                let model = shared.model.lock().map(|m| m.clone()).unwrap_or(None);
                if let Some(model) = model {
                    writer.model(&model)?;
                }
            }
            // A heartbeat whenever nothing was written for a while (results the MCU paused
            // or filtered do not count as traffic).
            let quiet = writer.last_write.elapsed();
            if quiet >= config.heartbeat {
                writer.write(&Message::Heartbeat {
                    uptime_ms: started.elapsed().as_millis().min(u32::MAX as u128) as u32,
                })?;
                continue;
            }
            match rx.recv_timeout(config.heartbeat - quiet) {
                Ok(Outgoing::Result(r)) => {
                    let threshold = f32::from_bits(shared.threshold.load(Ordering::Relaxed));
                    if shared.paused.load(Ordering::Relaxed) || r.score < threshold {
                        bump(&shared.results_suppressed);
                        continue;
                    }
                    writer.write(&Message::Result {
                        label: r.label,
                        score: r.score,
                        seq: r.seq,
                        latency_us: r.latency_us,
                    })?;
                    bump(&shared.results_sent);
                }
                Ok(Outgoing::Status) => writer.write(&Message::Status {
                    paused: shared.paused.load(Ordering::Relaxed),
                    threshold: f32::from_bits(shared.threshold.load(Ordering::Relaxed)),
                    frames: shared.offered.load(Ordering::Relaxed),
                })?,
                Ok(Outgoing::Wake) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    })();
    down.store(true, Ordering::SeqCst);
    let _ = reader.join();
    result
}

struct Writer {
    port: TTYPort,
    shared: Arc<Shared>,
    last_write: Instant,
}

impl Writer {
    fn write(&mut self, message: &Message<'_>) -> std::io::Result<()> {
        let mut frame = [0u8; MAX_FRAME];
        let n = scion_link::encode(message, &mut frame)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.port.write_all(&frame[..n])?;
        self.last_write = Instant::now();
        bump(&self.shared.frames_sent);
        Ok(())
    }

    fn model(&mut self, model: &LinkModel) -> std::io::Result<()> {
        self.write(&Message::ModelInfo {
            id: model.id,
            classes: model.classes,
            name: truncate(&model.name, 32),
        })
    }
}

/// Read and apply the MCU's frames until the connection drops or `down` is set.
fn read_commands(mut port: TTYPort, shared: &Shared, down: &AtomicBool, tx: &Sender<Outgoing>) {
    let mut decoder: Decoder = Decoder::new();
    let mut buf = [0u8; 256];
    let mut version_warned = false;
    while !down.load(Ordering::SeqCst) && !shared.stop.load(Ordering::SeqCst) {
        let n = match port.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for &byte in &buf[..n] {
            match decoder.push(byte) {
                None => {}
                Some(Ok(message)) => {
                    bump(&shared.frames_received);
                    apply(message, shared, tx);
                }
                Some(Err(e)) => {
                    let slot = match e.kind() {
                        ErrorKind::Framing | ErrorKind::BufferTooSmall => 0,
                        ErrorKind::Crc => 1,
                        ErrorKind::Version => 2,
                        ErrorKind::Malformed => 3,
                        ErrorKind::Overflow => 4,
                    };
                    bump(&shared.bad_frames[slot]);
                    if e.kind() == ErrorKind::Version && !version_warned {
                        tracing::warn!(
                            "UART: the microcontroller speaks {e}; its frames are ignored"
                        );
                        version_warned = true;
                    } else {
                        tracing::debug!("UART: bad frame: {e}");
                    }
                }
            }
        }
    }
    down.store(true, Ordering::SeqCst);
    let _ = tx.try_send(Outgoing::Wake);
}

fn apply(message: Message<'_>, shared: &Shared, tx: &Sender<Outgoing>) {
    match message {
        Message::SetThreshold { threshold } if (0.0..=1.0).contains(&threshold) => {
            shared
                .threshold
                .store(threshold.to_bits(), Ordering::Relaxed);
            bump(&shared.commands);
        }
        Message::SetThreshold { threshold } => {
            tracing::warn!("UART: ignoring threshold {threshold} (must be within 0..=1)");
        }
        Message::Pause => {
            shared.paused.store(true, Ordering::Relaxed);
            bump(&shared.commands);
        }
        Message::Resume => {
            shared.paused.store(false, Ordering::Relaxed);
            bump(&shared.commands);
        }
        Message::RequestStatus => {
            bump(&shared.commands);
            // The reply goes through the writer so it is ordered with the results.
            let _ = tx.send(Outgoing::Status);
        }
        Message::Hello { protocol, name, .. } => {
            tracing::info!("UART: microcontroller {name:?} (protocol {protocol})");
        }
        Message::Heartbeat { .. } => {}
        Message::Result { .. } | Message::ModelInfo { .. } | Message::Status { .. } => {
            tracing::debug!("UART: ignoring a host-side message from the microcontroller");
        }
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
