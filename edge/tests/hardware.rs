//! The hardware around `scion-edge serve`: results to a microcontroller over a serial port
//! (a pseudo-terminal whose far end this test plays), frames captured for the next training
//! round, GPIO and board errors that name their key, and `scion-edge boards`.
#![cfg(feature = "gstreamer")]

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::service::Service;
use common::video::encode_video;
use common::{model, scion_edge, stderr_text};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use scion_link::{Decoder, Message};

/// A raw pseudo-terminal: the master for this test, the slave's path for the service.
fn pty() -> (File, std::os::fd::OwnedFd, std::path::PathBuf) {
    let pair = nix::pty::openpty(None, None).expect("openpty");
    let mut termios = tcgetattr(&pair.slave).expect("tcgetattr");
    cfmakeraw(&mut termios);
    tcsetattr(&pair.slave, SetArg::TCSANOW, &termios).expect("tcsetattr");
    let path = nix::unistd::ttyname(&pair.slave).expect("ttyname");
    (File::from(pair.master), pair.slave, path)
}

/// Messages from the service, as text, until `done` holds for one (or 60 s pass).
fn read_until(master: &mut File, done: impl Fn(&Message<'_>) -> bool) -> Vec<String> {
    let mut decoder: Decoder = Decoder::new();
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "timed out; heard {seen:?}");
        let n = master.read(&mut buf).expect("read the service's frames");
        for &b in &buf[..n] {
            if let Some(Ok(m)) = decoder.push(b) {
                seen.push(format!("{m:?}"));
                if done(&m) {
                    return seen;
                }
            }
        }
    }
}

#[test]
fn serve_talks_to_a_microcontroller_and_captures_frames_for_training() {
    let dir = tempfile::tempdir().expect("tempdir");
    let video = encode_video(dir.path(), &[("puppy.jpg", 8), ("gold_fish.jpg", 8)]);
    let source = format!("file://{}", video.display());
    let (mut master, _slave, tty) = pty();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let captures = dir.path().join("captures");
    let mut service = Service::start(
        dir.path(),
        &[
            "--source",
            &source,
            "--loop",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            token.to_str().expect("utf-8"),
            "--uart",
            tty.to_str().expect("utf-8"),
            "--capture-dir",
            captures.to_str().expect("utf-8"),
            "--smooth",
            "1",
            "--hold",
            "1",
        ],
        &[],
    );

    // Hello and the model first, then results in frame order.
    let heard = read_until(&mut master, |m| matches!(m, Message::Result { .. }));
    assert!(
        heard[0].starts_with("Hello { protocol: 1, role: Host"),
        "{heard:?}"
    );
    assert!(
        heard
            .iter()
            .any(|m| m.starts_with("ModelInfo") && m.contains("classes: 1000")),
        "{heard:?}"
    );
    let mut seqs = Vec::new();
    let mut labels = std::collections::BTreeSet::new();
    let mut decoder: Decoder = Decoder::new();
    let mut buf = [0u8; 512];
    while seqs.len() < 40 {
        let n = master.read(&mut buf).expect("read");
        for &b in &buf[..n] {
            if let Some(Ok(Message::Result {
                seq, label, score, ..
            })) = decoder.push(b)
            {
                assert!((0.0..=1.0).contains(&score));
                seqs.push(seq);
                labels.insert(label);
            }
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    // ImageNet: 207 golden retriever (the puppy), 1 goldfish.
    assert!(labels.contains(&207) && labels.contains(&1), "{labels:?}");

    // The microcontroller pauses results and asks for the status.
    let mut frame = [0u8; scion_link::MAX_FRAME];
    for message in [Message::Pause, Message::RequestStatus] {
        let n = scion_link::encode(&message, &mut frame).expect("encode");
        master.write_all(&frame[..n]).expect("write");
    }
    let heard = read_until(&mut master, |m| matches!(m, Message::Status { .. }));
    assert!(
        heard.last().expect("status").contains("paused: true"),
        "{heard:?}"
    );

    // Capture the current frame: it lands in the folder of the announced label.
    let (status, body) = service.post("/v1/capture", b"", &[("Authorization", "Bearer s3cret")]);
    assert_eq!(status, 200, "{body}");
    let saved = Path::new(body["path"].as_str().expect("path"));
    let label = body["label"].as_str().expect("label");
    assert!(saved.starts_with(captures.join(label)), "{body}");
    assert!(
        label.starts_with("golden retriever") || label.starts_with("goldfish"),
        "{body}"
    );
    let image = image::open(saved).expect("a JPEG");
    assert_eq!((image.width(), image.height()), (320, 240));
    let (status, _) = service.post("/v1/capture", b"", &[]);
    assert_eq!(status, 401, "capture writes to disk: token only");

    let (_, metrics) = service.get("/metrics");
    assert!(metrics.contains("scion_uart_connected 1"), "{metrics}");
    assert!(
        metrics.contains("scion_uart_results_total{outcome=\"suppressed\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("scion_uart_commands_total 2"), "{metrics}");
    assert_eq!(service.terminate(), Some(0));
}

#[test]
fn gpio_and_board_mistakes_stop_the_service_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = model();
    let model = model.to_str().expect("utf-8");
    let cases = [
        (
            "board = \"jetson-orin-nano\"\n[gpio.trigger]\nline = \"7\"\nlabel = \"goldfish, Carassius auratus\"\n",
            &["config key `gpio.trigger.line`", "tegra234-gpio"][..],
        ),
        (
            "[gpio.trigger]\nline = \"gpiochip0:3\"\nlabel = \"unicorn\"\n",
            &[
                "config key `gpio.trigger.label`",
                "'unicorn' is not a label",
            ][..],
        ),
        (
            "[gpio.status_led]\nline = \"6\"\n",
            &["config key `gpio.status_led.line`", "not a GPIO"][..],
        ),
        (
            "[gpio.capture_button]\nline = \"12\"\n",
            &["config key `gpio.capture_button`", "capture_dir"][..],
        ),
        (
            "[gpio.status_led]\nline = \"pin seven\"\n",
            &["config key `gpio.status_led.line`", "CHIP:LINE"][..],
        ),
        (
            "board = \"jetson-nano-3000\"\n",
            &["config key `board`", "known: jetson-nano"][..],
        ),
        (
            "[sinks.uart]\nbaud = 9600\n",
            &["missing field `device`"][..],
        ),
    ];
    for (i, (toml, expected)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("edge{i}.toml"));
        std::fs::write(
            &config,
            format!("source = \"test://ball\"\nmodel = \"{model}\"\n{toml}"),
        )
        .expect("config");
        let run = scion_edge()
            .args(["serve", "--config", config.to_str().expect("utf-8")])
            .args(["--board", "jetson-orin-nano"].iter().filter(|_| i == 2))
            .timeout(Duration::from_secs(120))
            .assert()
            .code(1);
        let stderr = stderr_text(&run);
        for e in *expected {
            assert!(stderr.contains(e), "case {i}: missing {e:?} in:\n{stderr}");
        }
    }
}

#[test]
fn boards_shows_a_detected_profile_from_a_root() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("proc/device-tree")).expect("dirs");
    std::fs::create_dir_all(root.path().join("etc")).expect("dirs");
    std::fs::write(
        root.path().join("proc/device-tree/model"),
        "NVIDIA Jetson Orin NX Engineering Reference Developer Kit\0",
    )
    .expect("model");
    std::fs::write(
        root.path().join("proc/device-tree/compatible"),
        "nvidia,p3768-0000+p3767-0000\0nvidia,p3767-0000\0nvidia,tegra234\0",
    )
    .expect("compatible");
    std::fs::write(
        root.path().join("etc/nv_tegra_release"),
        "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024\n",
    )
    .expect("release");
    let root_arg = root.path().to_str().expect("utf-8");
    let run = scion_edge()
        .args(["boards", "--root", root_arg, "--json"])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&run.get_output().stdout).expect("JSON");
    assert_eq!(json["profile"]["id"], "jetson-orin-nx");
    assert_eq!(json["profile"]["dla_cores"], 2);
    assert_eq!(json["profile"]["precision"], "int8");
    assert_eq!(json["l4t"]["major"], 36);
    let text = scion_edge()
        .args(["boards", "--root", root_arg])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&text.get_output().stdout).to_string();
    for expected in [
        "NVIDIA Jetson Orin NX",
        "R36.4.0 (JetPack 6)",
        "nvarguscamerasrc",
        "tegra234-gpio         144",
    ] {
        assert!(text.contains(expected), "missing {expected:?}:\n{text}");
    }

    // An unknown board: the generic profile and a warning, not an error.
    std::fs::write(
        root.path().join("proc/device-tree/compatible"),
        "acme,widget\0",
    )
    .expect("compatible");
    std::fs::write(root.path().join("proc/device-tree/model"), "Acme Widget\0").expect("model");
    let run = scion_edge()
        .args(["boards", "--root", root_arg])
        .assert()
        .success();
    assert!(
        stderr_text(&run).contains("unrecognised board"),
        "{}",
        stderr_text(&run)
    );
}
