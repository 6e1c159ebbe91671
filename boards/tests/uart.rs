//! The UART link end to end over pseudo-terminals: scion's link opens one pty's slave as its
//! serial port, `scion-mcu-sim` opens another's, and a relay between the two masters plays
//! the wire (clean, or noisy with a count of the frames the noise touched).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use scion_boards::uart::{LinkModel, LinkResult, UartConfig, UartLink};
use scion_link::{Decoder, Message};

/// One pseudo-terminal: the master for the relay, the slave's path for a serial client.
struct Pty {
    master: File,
    /// Held until the client has opened the path (a master with no open slave reads EIO).
    slave: Option<OwnedFd>,
    path: PathBuf,
}

fn pty() -> Pty {
    let pair = nix::pty::openpty(None, None).expect("openpty");
    // Raw from the start, as a UART is: a fresh pty echoes and edits lines until a client
    // opens it, which would turn the other end's first frames into noise.
    let mut termios = tcgetattr(&pair.slave).expect("tcgetattr");
    cfmakeraw(&mut termios);
    tcsetattr(&pair.slave, SetArg::TCSANOW, &termios).expect("tcsetattr");
    let path = nix::unistd::ttyname(&pair.slave).expect("ttyname");
    Pty {
        master: File::from(pair.master),
        slave: Some(pair.slave),
        path,
    }
}

/// A tiny deterministic generator for the noise.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Noise on the host → MCU direction: which frames to damage, and garbage bursts.
struct Noise {
    seed: u64,
    /// Frames (by index on the wire) to damage.
    frames: std::ops::Range<u64>,
    /// How many of them.
    hits: usize,
}

/// Copy `from` to `to`, damaging frames as `noise` says; returns the frames touched.
fn relay(mut from: File, mut to: File, noise: Option<Noise>, touched: Arc<AtomicU64>) {
    let (mut rng, targets) = match &noise {
        Some(n) => {
            let mut rng = XorShift(n.seed);
            let mut targets = std::collections::BTreeSet::new();
            while targets.len() < n.hits {
                targets.insert(n.frames.start + rng.below(n.frames.end - n.frames.start));
            }
            (rng, targets)
        }
        None => (XorShift(1), Default::default()),
    };
    let mut frame = 0u64;
    let mut at_start = true;
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(8192);
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        out.clear();
        for &byte in &buf[..n] {
            if at_start && targets.contains(&frame) {
                match rng.below(4) {
                    // Replace the first byte (COBS code) with a random one, zero included.
                    0 => {
                        out.push(rng.below(256) as u8);
                        touched.fetch_add(1, Ordering::Relaxed);
                    }
                    // Insert a few random non-zero bytes.
                    1 => {
                        for _ in 0..1 + rng.below(8) {
                            out.push(1 + rng.below(255) as u8);
                        }
                        out.push(byte);
                        touched.fetch_add(1, Ordering::Relaxed);
                    }
                    // Lose the byte.
                    2 => {
                        touched.fetch_add(1, Ordering::Relaxed);
                    }
                    // A garbage frame of its own before this one: costs nothing real.
                    _ => {
                        out.extend_from_slice(&[0x07, 0xff, 0x13, 0x00, 0xaa, 0x00]);
                        out.push(byte);
                    }
                }
            } else {
                out.push(byte);
            }
            at_start = byte == 0;
            if byte == 0 {
                frame += 1;
            }
        }
        if to.write_all(&out).is_err() {
            return;
        }
    }
}

/// Two ptys and a relay: the host end's path, the MCU end's path, the frames noise touched.
struct Wire {
    host: Pty,
    mcu: Pty,
    touched: Arc<AtomicU64>,
}

impl Wire {
    fn new(noise: Option<Noise>) -> Wire {
        let host = pty();
        let mcu = pty();
        let touched = Arc::new(AtomicU64::new(0));
        let (a, b) = (
            host.master.try_clone().expect("clone the pty master"),
            mcu.master.try_clone().expect("clone the pty master"),
        );
        let t = touched.clone();
        std::thread::spawn(move || relay(a, b, noise, t));
        let (a, b) = (
            mcu.master.try_clone().expect("clone the pty master"),
            host.master.try_clone().expect("clone the pty master"),
        );
        std::thread::spawn(move || relay(a, b, None, Arc::new(AtomicU64::new(0))));
        Wire { host, mcu, touched }
    }

    /// Both ends are open: let go of our slave handles.
    fn release_slaves(&mut self) {
        self.host.slave.take();
        self.mcu.slave.take();
    }
}

/// The simulator and the lines it prints.
struct Sim {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Sim {
    fn start(device: &Path, args: &[&str]) -> Sim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_scion-mcu-sim"))
            .arg(device)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start scion-mcu-sim");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut sim = Sim {
            child,
            lines,
            seen: Vec::new(),
        };
        sim.wait_for(|l| l == "ready", Duration::from_secs(10));
        sim
    }

    /// Collect lines until one satisfies `done`; panics with the tail after `timeout`.
    fn wait_for(&mut self, done: impl Fn(&str) -> bool, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = done(&line);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "simulator: timed out; last lines: {:?}",
                    &self.seen[self.seen.len().saturating_sub(15)..]
                ),
            }
        }
    }

    fn count(&self, prefix: &str) -> usize {
        self.seen.iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// The sequence numbers of the results heard, in order.
    fn result_seqs(&self) -> Vec<u32> {
        self.seen
            .iter()
            .filter_map(|l| l.strip_prefix("result "))
            .map(|r| {
                r.split(' ')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("a sequence number")
            })
            .collect()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(path: &Path) -> UartConfig {
    UartConfig {
        path: path.to_path_buf(),
        heartbeat: Duration::from_millis(30),
        reconnect_max: Duration::from_millis(200),
        ..UartConfig::default()
    }
}

fn wait_until(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

const RESULTS: u32 = 10_000;

/// Send `RESULTS` results at full speed, then wait for two heartbeats after them (the wire
/// is FIFO, so everything before has arrived).
fn send_all_and_drain(link: &UartLink, sim: &mut Sim) {
    for seq in 0..RESULTS {
        link.send(LinkResult {
            label: (seq % 10) as u16,
            score: 0.9,
            seq,
            latency_us: 1000 + seq,
        });
    }
    wait_until("the queue drains", Duration::from_secs(60), || {
        let s = link.stats();
        s.results_sent + s.results_suppressed == u64::from(RESULTS)
    });
    let before = sim.count("heartbeat");
    let mut heard = before;
    while heard < before + 2 {
        sim.wait_for(|l| l.starts_with("heartbeat"), Duration::from_secs(10));
        heard += 1;
    }
}

#[test]
fn ten_thousand_results_reach_the_simulator_in_order() {
    let mut wire = Wire::new(None);
    let mut sim = Sim::start(&wire.mcu.path, &[]);
    let link = UartLink::start(config(&wire.host.path)).expect("start the link");
    link.set_model(LinkModel {
        id: [0xde, 0xad, 0xbe, 0xef, 0x00, 0x01],
        classes: 10,
        name: "fashion-lite0".into(),
    });
    wait_until("connected", Duration::from_secs(10), || link.is_connected());
    wire.release_slaves();
    sim.wait_for(|l| l.starts_with("model "), Duration::from_secs(10));
    assert!(
        sim.seen.iter().any(|l| l.starts_with("hello scion-edge")),
        "{:?}",
        sim.seen
    );
    assert!(
        sim.seen
            .contains(&"model deadbeef0001 10 fashion-lite0".to_string())
    );

    send_all_and_drain(&link, &mut sim);
    let seqs = sim.result_seqs();
    assert_eq!(
        seqs,
        (0..RESULTS).collect::<Vec<_>>(),
        "every result, in order, once"
    );
    assert_eq!(sim.count("error"), 0);
    let stats = link.stats();
    assert_eq!(
        (stats.results_sent, stats.results_dropped),
        (u64::from(RESULTS), 0)
    );
    assert!(stats.frames_received >= 1, "the MCU's hello was heard");
}

#[test]
fn noise_on_the_line_costs_at_most_the_frames_it_touches() {
    let noise = Noise {
        seed: 0x5c10_0001,
        frames: 100..9_000,
        hits: 60,
    };
    let mut wire = Wire::new(Some(noise));
    let mut sim = Sim::start(&wire.mcu.path, &[]);
    let link = UartLink::start(config(&wire.host.path)).expect("start the link");
    wait_until("connected", Duration::from_secs(10), || link.is_connected());
    wire.release_slaves();
    sim.wait_for(|l| l.starts_with("hello"), Duration::from_secs(10));

    send_all_and_drain(&link, &mut sim);
    let seqs = sim.result_seqs();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
    let lost = u64::from(RESULTS) - seqs.len() as u64;
    let touched = wire.touched.load(Ordering::Relaxed);
    assert!(
        touched > 0 && sim.count("error") > 0,
        "the noise did something"
    );
    assert!(
        lost <= touched,
        "lost {lost} results but noise touched only {touched} frames"
    );
    eprintln!(
        "noise: {touched} frames touched, {lost} results lost, {} bad frames seen",
        sim.count("error")
    );
}

#[test]
fn the_microcontroller_sets_the_threshold_pauses_resumes_and_asks_for_status() {
    let mut wire = Wire::new(None);
    let mut sim = Sim::start(&wire.mcu.path, &["--exercise-commands"]);
    let link = Arc::new(UartLink::start(config(&wire.host.path)).expect("start the link"));
    wait_until("connected", Duration::from_secs(10), || link.is_connected());
    wire.release_slaves();
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sender = {
        let (link, sending) = (link.clone(), sending.clone());
        std::thread::spawn(move || {
            let mut seq = 0;
            while sending.load(Ordering::Relaxed) {
                let score = if seq % 2 == 0 { 0.3 } else { 0.9 };
                link.try_send(LinkResult {
                    label: 1,
                    score,
                    seq,
                    latency_us: 5,
                });
                seq += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    sim.wait_for(|l| l == "commands done", Duration::from_secs(20));
    let after = sim.count("result");
    sim.wait_for(|l| l.starts_with("result"), Duration::from_secs(5));
    sending.store(false, Ordering::Relaxed);
    sender.join().expect("sender thread");

    let statuses: Vec<&String> = sim
        .seen
        .iter()
        .filter(|l| l.starts_with("status"))
        .collect();
    assert_eq!(statuses.len(), 3, "{statuses:?}");
    assert!(
        statuses[0].starts_with("status paused=false threshold=0.5"),
        "{}",
        statuses[0]
    );
    assert!(
        statuses[1].starts_with("status paused=true threshold=0.5"),
        "{}",
        statuses[1]
    );
    assert!(
        statuses[2].starts_with("status paused=false threshold=0.5"),
        "{}",
        statuses[2]
    );
    let violations: Vec<&String> = sim
        .seen
        .iter()
        .filter(|l| l.contains("below-threshold") || l.contains("while-paused"))
        .collect();
    assert!(violations.is_empty(), "{violations:?}");
    assert!(
        sim.count("result") > after,
        "results flow again after resume"
    );
    let stats = link.stats();
    assert_eq!(
        stats.commands, 6,
        "threshold, pause, resume and three status requests"
    );
    assert!(stats.results_suppressed > 0 && !stats.paused && stats.threshold == 0.5);
}

/// Read frames from a pty master until `want` matches one; returns the messages seen.
fn read_until(master: &mut File, want: impl Fn(&Message<'_>) -> bool) -> Vec<String> {
    let mut decoder: Decoder = Decoder::new();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let n = master.read(&mut buf).expect("read the host's frames");
        for &b in &buf[..n] {
            if let Some(Ok(m)) = decoder.push(b) {
                seen.push(format!("{m:?}"));
                if want(&m) {
                    return seen;
                }
            }
        }
    }
}

#[test]
fn a_vanished_port_is_reopened_and_garbage_or_a_newer_protocol_is_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ttyMCU");
    let mut first = pty();
    std::os::unix::fs::symlink(&first.path, &path).expect("symlink");
    let link = UartLink::start(config(&path)).expect("start the link");
    wait_until("connected", Duration::from_secs(10), || link.is_connected());
    first.slave.take();
    read_until(&mut first.master, |m| matches!(m, Message::Hello { .. }));

    // Garbage, a frame from protocol version 2, then a good status request.
    let mut frame = [0u8; scion_link::MAX_FRAME];
    let n = scion_link::encode(&Message::RequestStatus, &mut frame).expect("encode");
    let mut body = frame;
    let len = scion_link::cobs_decode_in_place(&mut body[..n - 1]).expect("decode");
    body[0] = 2;
    let crc = scion_link::crc16(&body[..len - 2]).to_le_bytes();
    body[len - 2..len].copy_from_slice(&crc);
    let mut v2 = [0u8; scion_link::MAX_FRAME];
    let m = scion_link::cobs_encode(&body[..len], &mut v2);
    first
        .master
        .write_all(&[0x13, 0x37, 0xff, 0x00])
        .expect("write to the pty");
    first.master.write_all(&v2[..m]).expect("write to the pty");
    first.master.write_all(&[0]).expect("write to the pty");
    first
        .master
        .write_all(&frame[..n])
        .expect("write to the pty");
    let seen = read_until(&mut first.master, |m| matches!(m, Message::Status { .. }));
    assert!(
        seen.last().expect("a message").starts_with("Status"),
        "{seen:?}"
    );
    let stats = link.stats();
    assert_eq!(
        stats.bad_frames[2], 1,
        "one frame of another version: {stats:?}"
    );
    assert!(
        stats.bad_frames[0] + stats.bad_frames[1] >= 1,
        "garbage counted: {stats:?}"
    );

    // The device vanishes; results queue meanwhile; a new device appears at the same path.
    drop(first);
    wait_until("the loss is noticed", Duration::from_secs(10), || {
        !link.is_connected()
    });
    for seq in 0..5 {
        assert!(link.try_send(LinkResult {
            label: 0,
            score: 1.0,
            seq,
            latency_us: 0
        }));
    }
    let mut second = pty();
    std::fs::remove_file(&path).expect("remove the link");
    std::os::unix::fs::symlink(&second.path, &path).expect("symlink");
    wait_until("reconnected", Duration::from_secs(10), || {
        link.is_connected()
    });
    second.slave.take();
    let seen = read_until(&mut second.master, |m| {
        matches!(m, Message::Result { seq: 4, .. })
    });
    assert!(seen[0].starts_with("Hello"), "hello again first: {seen:?}");
    let results: Vec<&String> = seen.iter().filter(|s| s.starts_with("Result")).collect();
    assert_eq!(results.len(), 5, "the queued results, once each: {seen:?}");
    let stats = link.stats();
    assert!(stats.connects >= 2 && stats.disconnects >= 1, "{stats:?}");
}

#[test]
fn a_missing_device_is_retried_and_a_full_queue_drops_and_counts() {
    let link = UartLink::start(UartConfig {
        queue: 4,
        ..config(Path::new("/dev/scion-no-such-tty"))
    })
    .expect("start the link");
    wait_until("a few attempts", Duration::from_secs(10), || {
        link.stats().open_failures >= 2
    });
    let accepted = (0..10)
        .filter(|&seq| {
            link.try_send(LinkResult {
                label: 0,
                score: 1.0,
                seq,
                latency_us: 0,
            })
        })
        .count();
    assert_eq!(accepted, 4);
    let stats = link.stats();
    assert_eq!((stats.results_dropped, stats.connected), (6, false));
}
