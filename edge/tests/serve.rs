//! `scion-edge serve` with real GStreamer: the test source, a video file the test encodes
//! from the sample photos, looping (the source reopened at its end), bad sources, and
//! SIGTERM. Labels are checked against what the model says of the photos.
#![cfg(feature = "gstreamer")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::video::encode_video;
use common::{model, ort_lib, records, scion_edge};
use predicates::str::contains;

#[test]
fn the_test_source_is_classified_frame_by_frame() {
    let run = scion_edge()
        .args([
            "serve",
            "--source",
            "test://ball",
            "--max-frames",
            "12",
            "--model",
        ])
        .arg(model())
        .assert()
        .success();
    let out = records(&String::from_utf8_lossy(&run.get_output().stdout));
    let frames: Vec<_> = out.iter().filter(|r| r["type"] == "frame").collect();
    assert_eq!(frames.len(), 12);
    // videotestsrc's "ball" pattern is a white ball on black: ImageNet's ping-pong ball
    // while the ball is whole (its first ~20 frames; which frames are seen depends on the
    // machine's speed, so the label check proper is the video-file test's).
    assert!(
        frames
            .iter()
            .any(|f| f["top"][0]["label"] == "ping-pong ball"),
        "{frames:?}"
    );
    // Frame numbers rise, and every gap is reported as dropped frames.
    for pair in frames.windows(2) {
        let (a, b) = (pair[0]["seq"].as_u64(), pair[1]["seq"].as_u64());
        let gap = b.expect("seq") - a.expect("seq") - 1;
        assert_eq!(pair[1]["dropped"].as_u64(), Some(gap));
    }
    for f in &frames {
        let latency = &f["latency"];
        assert!(latency["inference_ms"].as_f64().expect("ms") > 0.0);
        assert!(latency["total_ms"].as_f64() >= latency["inference_ms"].as_f64());
        assert_eq!(f["engine"], "ort-cpu");
    }
}

#[test]
fn a_video_file_gives_one_event_per_scene_and_loops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let video = encode_video(dir.path(), &[("puppy.jpg", 8), ("gold_fish.jpg", 8)]);
    let uri = format!("file://{}", video.display());
    let run = scion_edge()
        .args([
            "serve",
            "--events-only",
            "--smooth",
            "3",
            "--hold",
            "2",
            "--source",
        ])
        .arg(&uri)
        .arg("--model")
        .arg(model())
        .assert()
        .success();
    let events = records(&String::from_utf8_lossy(&run.get_output().stdout));
    let labels: Vec<&str> = events
        .iter()
        .map(|e| e["to"].as_str().unwrap_or("(none)"))
        .collect();
    // Every frame of a file is classified (none dropped), and flicker does not become
    // events: the puppy, then the goldfish (possibly through "no confident label").
    let meaningful: Vec<&str> = labels.iter().copied().filter(|l| *l != "(none)").collect();
    assert_eq!(
        meaningful,
        ["golden retriever", "goldfish, Carassius auratus"],
        "{events:?}"
    );

    // --loop: at its end the file is reopened and frames keep coming.
    let run = scion_edge()
        .args(["serve", "--loop", "--max-frames", "40", "--source"])
        .arg(&uri)
        .arg("--model")
        .arg(model())
        .assert()
        .success();
    let frames = records(&String::from_utf8_lossy(&run.get_output().stdout));
    let frames: Vec<_> = frames.iter().filter(|r| r["type"] == "frame").collect();
    assert_eq!(frames.len(), 40);
    assert!(frames.iter().all(|f| f["dropped"] == 0));
    let seqs: Vec<u64> = frames
        .iter()
        .map(|f| f["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    assert_eq!(frames[0]["top"][0]["label"], frames[16]["top"][0]["label"]);
}

#[test]
fn bad_sources_get_clear_errors() {
    for (uri, message) in [
        ("http://camera", "unknown scheme 'http'"),
        ("file:///no/such/video.avi", "no such file"),
        ("gst://this-is-not-an-element", "not a valid pipeline"),
    ] {
        scion_edge()
            .args(["serve", "--max-frames", "1", "--source", uri, "--model"])
            .arg(model())
            .assert()
            .code(1)
            .stderr(contains(message));
    }
}

#[test]
fn sigterm_stops_the_service_with_its_output_flushed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("frames.jsonl");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("scion-edge"))
        .env("ORT_DYLIB_PATH", ort_lib())
        .env("SCION_EDGE_CONFIG", "/dev/null")
        .args(["serve", "--source", "test://ball", "--output"])
        .arg(&out)
        .arg("--model")
        .arg(model())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&out).map_or(0, |t| t.lines().count()) < 3 {
        assert!(Instant::now() < deadline, "no frames within a minute");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The shell's own kill, so the test needs no procps.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert_eq!(exit.code(), Some(0));
    let text = std::fs::read_to_string(&out).expect("output");
    assert!(text.ends_with('\n'));
    let lines = records(&text);
    assert!(lines.len() >= 3);
}
