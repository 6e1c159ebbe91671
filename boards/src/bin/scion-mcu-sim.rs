//! A microcontroller on the far end of the link, for tests and bring-up: it speaks
//! `scion-link` over any `embedded-io` port, prints what it hears (one line per message),
//! and with `--exercise-commands` drives the host through threshold, pause and resume.
//!
//! `scion-mcu-sim DEVICE [--baud N] [--exercise-commands]`
//!
//! Only the port is opened with std; the protocol logic ([`Mcu`]) uses `scion-link` and the
//! `embedded-io` traits alone, as firmware would.

use std::io::Write as _;

use embedded_io::{ErrorKind as IoErrorKind, Read, Write};
use scion_link::{Decoder, ErrorKind, MAX_FRAME, Message, PROTOCOL_VERSION, Role};

/// The threshold the command exercise sets.
const THRESHOLD: f32 = 0.5;
/// Host heartbeats to wait, paused, before resuming.
const PAUSED_HEARTBEATS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Listening,
    AwaitThresholdStatus,
    AwaitPauseStatus,
    Paused { heartbeats: u32 },
    AwaitResumeStatus,
    Done,
}

struct Mcu {
    exercise: bool,
    step: Step,
    threshold_confirmed: bool,
    last_seq: Option<u32>,
    results: u64,
    out_of_order: u64,
    errors: u64,
}

impl Mcu {
    fn send<P: Write>(&self, port: &mut P, message: &Message<'_>) -> Result<(), P::Error> {
        let mut frame = [0u8; MAX_FRAME];
        // Our own messages always fit.
        let n = scion_link::encode(message, &mut frame).unwrap_or(0);
        port.write_all(&frame[..n])?;
        port.flush()
    }

    /// React to one message; returns the line to print.
    fn hear<P: Write>(&mut self, port: &mut P, message: Message<'_>) -> Result<String, P::Error> {
        Ok(match message {
            Message::Hello { protocol, name, .. } => {
                if self.exercise && self.step == Step::Listening {
                    self.send(
                        port,
                        &Message::SetThreshold {
                            threshold: THRESHOLD,
                        },
                    )?;
                    self.send(port, &Message::RequestStatus)?;
                    self.step = Step::AwaitThresholdStatus;
                }
                format!("hello {name} protocol={protocol}")
            }
            Message::Result {
                label,
                score,
                seq,
                latency_us,
            } => {
                self.results += 1;
                let mut line = format!("result {seq} {label} {score} {latency_us}");
                if self.last_seq.is_some_and(|last| seq <= last) {
                    self.out_of_order += 1;
                    line.push_str(" out-of-order");
                }
                self.last_seq = Some(seq);
                if self.threshold_confirmed && score < THRESHOLD {
                    line.push_str(" below-threshold");
                }
                if matches!(self.step, Step::Paused { .. }) {
                    line.push_str(" while-paused");
                }
                line
            }
            Message::Heartbeat { uptime_ms } => {
                if let Step::Paused { heartbeats } = &mut self.step {
                    *heartbeats += 1;
                    if *heartbeats >= PAUSED_HEARTBEATS {
                        self.send(port, &Message::Resume)?;
                        self.send(port, &Message::RequestStatus)?;
                        self.step = Step::AwaitResumeStatus;
                    }
                }
                format!("heartbeat {uptime_ms}")
            }
            Message::ModelInfo { id, classes, name } => {
                let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
                format!("model {hex} {classes} {name}")
            }
            Message::Status {
                paused,
                threshold,
                frames,
            } => {
                match self.step {
                    Step::AwaitThresholdStatus => {
                        self.threshold_confirmed = threshold == THRESHOLD;
                        self.send(port, &Message::Pause)?;
                        self.send(port, &Message::RequestStatus)?;
                        self.step = Step::AwaitPauseStatus;
                    }
                    Step::AwaitPauseStatus if paused => self.step = Step::Paused { heartbeats: 0 },
                    Step::AwaitResumeStatus if !paused => self.step = Step::Done,
                    _ => {}
                }
                format!("status paused={paused} threshold={threshold} frames={frames}")
            }
            other => format!("unexpected {other:?}"),
        })
    }

    /// Serve `port` until it closes; every line goes to `print`.
    fn run<P: Read + Write>(&mut self, port: &mut P, print: &mut dyn FnMut(&str)) {
        let hello = Message::Hello {
            protocol: PROTOCOL_VERSION,
            role: Role::Mcu,
            name: "scion-mcu-sim",
        };
        if self.send(port, &hello).is_err() {
            return;
        }
        let mut decoder: Decoder = Decoder::new();
        let mut buf = [0u8; 512];
        loop {
            let n = match port.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        embedded_io::Error::kind(&e),
                        IoErrorKind::TimedOut | IoErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(_) => return,
            };
            for &byte in &buf[..n] {
                let line = match decoder.push(byte) {
                    None => continue,
                    Some(Ok(message)) => match self.hear(port, message) {
                        Ok(line) => line,
                        Err(_) => return,
                    },
                    Some(Err(e)) => {
                        self.errors += 1;
                        let kind = match e.kind() {
                            ErrorKind::Framing => "framing",
                            ErrorKind::Crc => "crc",
                            ErrorKind::Version => "version",
                            ErrorKind::Malformed => "malformed",
                            ErrorKind::Overflow => "overflow",
                            ErrorKind::BufferTooSmall => "buffer",
                        };
                        format!("error {kind}")
                    }
                };
                print(&line);
                if self.step == Step::Done {
                    print("commands done");
                    self.step = Step::Listening;
                    self.exercise = false;
                }
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut device = None;
    let mut baud = 115_200;
    let mut exercise = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--baud" => baud = args.next().and_then(|b| b.parse().ok()).unwrap_or(baud),
            "--exercise-commands" => exercise = true,
            "-h" | "--help" => {
                println!("usage: scion-mcu-sim DEVICE [--baud N] [--exercise-commands]");
                return;
            }
            _ => device = Some(arg),
        }
    }
    let Some(device) = device else {
        eprintln!(
            "Error: no DEVICE given (usage: scion-mcu-sim DEVICE [--baud N] [--exercise-commands])"
        );
        std::process::exit(2);
    };
    let port = match serialport::new(&device, baud)
        .timeout(std::time::Duration::from_millis(200))
        .open_native()
    {
        Ok(port) => port,
        Err(e) => {
            eprintln!("Error: {device}: {e}");
            std::process::exit(1);
        }
    };
    let mut port = embedded_io_adapters::std::FromStd::new(port);
    let stdout = std::io::stdout();
    let mut print = |line: &str| {
        let mut out = stdout.lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    print("ready");
    let mut mcu = Mcu {
        exercise,
        step: Step::Listening,
        threshold_confirmed: false,
        last_seq: None,
        results: 0,
        out_of_order: 0,
        errors: 0,
    };
    mcu.run(&mut port, &mut print);
    print(&format!(
        "summary results={} out_of_order={} errors={}",
        mcu.results, mcu.out_of_order, mcu.errors
    ));
}
