//! `scion-edge serve` as a service, end to end with real GStreamer, a real MQTT broker
//! (Mosquitto) and real HTTP: health, Prometheus metrics, server-sent events, uploads, the
//! preview stream, model updates under load (HTTP and inbox), a source killed mid-stream,
//! systemd's notify protocol, configuration files and `install --root`.
#![cfg(feature = "gstreamer")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::service::{Service, agent};
use common::video::{encode_video, mjpeg_server};
use common::{model, ort_lib, photo, records, scion_edge};
use predicates::prelude::PredicateBooleanExt;
use predicates::str::contains;
use scion_edge::engine::{EngineKind, EngineOptions, Policy};
use scion_onnx::ModelCard;
use scion_onnx::card::ReferenceOutput;
use sha2::{Digest, Sha256};

const GOLDFISH: &str = "goldfish, Carassius auratus";

/// Lite0 under another name, with labels prefixed (so records show which model spoke)
/// and the given reference outputs.
fn variant(dir: &Path, name: &str, prefix: &str, references: Vec<ReferenceOutput>) -> PathBuf {
    let mut proto = scion_onnx::io::load(model()).expect("model");
    let mut card = ModelCard::from_model(&proto)
        .expect("card")
        .expect("has a card");
    card.name = name.into();
    for label in &mut card.labels {
        *label = format!("{prefix}{label}");
    }
    card.provenance.references = references;
    card.write_to(&mut proto);
    let path = dir.join(format!("{name}.onnx"));
    scion_onnx::io::save(&proto, &path).expect("save");
    path
}

/// The reference output of the goldfish photo on ONNX Runtime, through the one
/// preprocessing function.
fn goldfish_reference() -> ReferenceOutput {
    let loaded = scion_edge::Model::load(&model(), &Default::default()).expect("model");
    let prepare = scion_edge::service::preparer(
        Policy::prefer(EngineKind::OrtCpu, true),
        EngineOptions {
            ort_library: Some(ort_lib()),
            ..EngineOptions::default()
        },
        Default::default(),
    );
    let mut classifier = (*prepare)(&loaded).expect("ORT");
    let bytes = std::fs::read(photo("gold_fish.jpg")).expect("photo");
    let input =
        scion_edge::preprocess::preprocess(&bytes, &loaded.card.preprocessing).expect("preprocess");
    let probs = classifier
        .probabilities(input, 1)
        .expect("run")
        .pop()
        .expect("one");
    let mut ranked: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(3);
    ReferenceOutput {
        image_sha256: hex::encode(Sha256::digest(&bytes)),
        name: "gold_fish.jpg".into(),
        top1: ranked[0].0,
        top: ranked,
    }
}

fn scene_video(dir: &Path) -> String {
    let video = encode_video(dir, &[("puppy.jpg", 8), ("gold_fish.jpg", 8)]);
    format!("file://{}", video.display())
}

#[test]
fn the_http_api_serves_health_metrics_results_uploads_and_the_preview() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uri = scene_video(dir.path());
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, "[http]\nmax_upload_bytes = 200000\n").expect("config");
    let model_path = model();
    let mut service = Service::start(
        dir.path(),
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--model",
            model_path.to_str().expect("utf-8"),
            "--source",
            &uri,
            "--loop",
            "--smooth",
            "3",
            "--hold",
            "2",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );

    // Server-sent events: subscribe first, read two announced labels.
    let events_url = format!("{}/v1/events", service.url);
    let events = std::thread::spawn(move || {
        let mut response = agent().get(&events_url).call().expect("SSE");
        assert_eq!(
            response.headers()["content-type"].to_str().ok(),
            Some("text/event-stream")
        );
        let reader = BufReader::new(response.body_mut().as_reader());
        let mut labels = Vec::new();
        // Label changes only: `notice` events (a source (re)connecting, ...) may come between.
        let mut name = String::new();
        for line in reader.lines() {
            let line = line.expect("line");
            if let Some(event) = line.strip_prefix("event: ") {
                name = event.to_string();
            } else if let Some(data) = line.strip_prefix("data: ")
                && name == "label"
            {
                let event: serde_json::Value = serde_json::from_str(data).expect("JSON event");
                assert_eq!(event["type"], "event");
                if let Some(to) = event["to"].as_str() {
                    labels.push(to.to_string());
                }
                if labels.len() == 2 {
                    break;
                }
            }
        }
        labels
    });

    // Ready once frames flow.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = service.get("/healthz");
        if status == 200 {
            let health: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(health["status"], "ready");
            assert_eq!(health["model"]["engine"], "ort-cpu");
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut labels = events.join().expect("SSE reader");
    labels.sort();
    assert_eq!(labels, ["golden retriever", GOLDFISH]);

    // Prometheus text that a real parser accepts, with the figures the issue asks for.
    let (status, text) = service.get("/metrics");
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text");
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| s.value.clone())
    };
    let frames = match value("scion_frames_total") {
        Some(prometheus_parse::Value::Counter(v)) => v,
        other => panic!("scion_frames_total: {other:?}\n{text}"),
    };
    assert!(frames >= 1.0, "{frames}");
    assert!(
        matches!(value("scion_dropped_frames_total"), Some(prometheus_parse::Value::Counter(v)) if v == 0.0)
    );
    assert!(value("scion_reconnects_total").is_some());
    assert!(matches!(value("scion_fps"), Some(prometheus_parse::Value::Gauge(v)) if v > 0.0));
    for stage in ["capture", "preprocess", "inference", "post"] {
        let histogram = scrape
            .samples
            .iter()
            .find(|s| s.metric == "scion_stage_seconds" && s.labels.get("stage") == Some(stage))
            .unwrap_or_else(|| panic!("no {stage} histogram\n{text}"));
        match &histogram.value {
            prometheus_parse::Value::Histogram(buckets) => {
                assert!(
                    buckets.iter().any(|b| b.count > 0.0),
                    "{stage}: {buckets:?}"
                )
            }
            other => panic!("{stage}: {other:?}"),
        }
    }
    let info = scrape
        .samples
        .iter()
        .find(|s| s.metric == "scion_engine_info")
        .expect("engine info");
    assert_eq!(info.labels.get("engine"), Some("ort-cpu"));

    // The latest result.
    let (status, latest) = service.get("/v1/latest");
    assert_eq!(status, 200);
    let latest: serde_json::Value = serde_json::from_str(&latest).expect("JSON");
    assert_eq!(latest["type"], "frame");
    assert_eq!(latest["model"].as_str().map(str::len), Some(12));

    // Uploads: a photo, a corrupt file, an empty body, one over the configured limit.
    let goldfish = std::fs::read(photo("gold_fish.jpg")).expect("photo");
    let (status, answer) = service.post("/v1/classify", &goldfish, &[]);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["top"][0]["label"], GOLDFISH);
    let (status, answer) = service.post("/v1/classify", &goldfish[..goldfish.len() / 3], &[]);
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()));
    let (status, _) = service.post("/v1/classify", b"", &[]);
    assert_eq!(status, 400);
    // One byte over the limit: 413. (The body is sent whole first, so the refusal is a
    // status, not a connection closed under a client still writing.)
    let address = service.url.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    write!(
        stream,
        "POST /v1/classify HTTP/1.1\r\nHost: {address}\r\nContent-Length: 200001\r\n\r\n"
    )
    .expect("request");
    stream.write_all(&vec![0u8; 200_001]).expect("body");
    let mut status_line = String::new();
    BufReader::new(&stream)
        .read_line(&mut status_line)
        .expect("response");
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");

    // The preview: a multipart stream of JPEGs with the label drawn on.
    let mut response = agent()
        .get(format!("{}/v1/preview.mjpeg", service.url))
        .call()
        .expect("preview");
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("type")
        .to_string();
    assert!(
        content_type.starts_with("multipart/x-mixed-replace"),
        "{content_type}"
    );
    let mut reader = BufReader::new(response.body_mut().as_reader());
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length: ") {
            length = n.trim().parse::<usize>().ok();
        }
        if line == "\r\n" && length.is_some() {
            break;
        }
    }
    let mut jpeg = vec![0u8; length.expect("length")];
    reader.read_exact(&mut jpeg).expect("JPEG");
    let frame = image::load_from_memory(&jpeg).expect("a JPEG").to_rgb8();
    assert_eq!(frame.dimensions(), (320, 240));
    drop(reader);

    // Without a token, the mutating endpoints are off.
    let (status, answer) = service.post("/v1/model", b"x", &[]);
    assert_eq!(status, 403, "{answer}");

    assert_eq!(service.terminate(), Some(0));
}

#[test]
fn a_model_swap_under_load_loses_no_result_and_bad_models_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uri = scene_video(dir.path());
    let store = dir.path().join("models");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let reference = goldfish_reference();
    let model_b = variant(dir.path(), "lite0-b", "B:", vec![reference.clone()]);
    let mut wrong = reference.clone();
    wrong.top1 = (wrong.top1 + 1) % 1000;
    let model_wrong = variant(dir.path(), "lite0-wrong", "W:", vec![wrong]);
    let model_c = variant(dir.path(), "lite0-c", "C:", vec![]);
    let mut service = Service::start(
        dir.path(),
        &[
            "--source",
            &uri,
            "--loop",
            "--listen",
            "127.0.0.1:0",
            "--models-dir",
            store.to_str().expect("utf-8"),
            "--token-file",
            token.to_str().expect("utf-8"),
        ],
        &[],
    );
    service.wait_for(Duration::from_secs(60), "first frames", |r| r.len() >= 5);
    let auth = [("Authorization", "Bearer s3cret")];

    // Tokens are checked before anything else.
    let bytes_b = std::fs::read(&model_b).expect("model B");
    let (status, _) = service.post("/v1/model", &bytes_b, &[("Authorization", "Bearer nope")]);
    assert_eq!(status, 401);

    // Reference image first, then model B, whose reference output must reproduce here.
    let goldfish = std::fs::read(photo("gold_fish.jpg")).expect("photo");
    let (status, answer) = service.post("/v1/references", &goldfish, &auth);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["sha256"], reference.image_sha256.as_str());
    let (status, installed) = service.post("/v1/model", &bytes_b, &auth);
    assert_eq!(status, 200, "{installed}");
    assert_eq!(installed["slot"], "b");
    assert_eq!(installed["references_checked"], 1);
    let id_b = installed["model"]["sha256"].as_str().expect("sha")[..12].to_string();

    // Refused: a truncated file, a model whose reference output does not reproduce.
    let (status, answer) = service.post("/v1/model", &bytes_b[..bytes_b.len() / 2], &auth);
    assert_eq!(status, 422, "{answer}");
    let wrong_bytes = std::fs::read(&model_wrong).expect("wrong");
    let (status, answer) = service.post("/v1/model", &wrong_bytes, &auth);
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .expect("error")
            .contains("reference image"),
        "{answer}"
    );
    let (_, current) = service.get("/v1/model");
    let current: serde_json::Value = serde_json::from_str(&current).expect("JSON");
    assert_eq!(
        current["model"]["name"], "lite0-b",
        "the old model keeps serving"
    );
    assert_eq!(current["slot"], "b");

    // The inbox: model C dropped in (written elsewhere, renamed in).
    let inbox = store.join("inbox");
    let staged = dir.path().join("c.partial");
    std::fs::copy(&model_c, &staged).expect("stage");
    std::fs::rename(&staged, inbox.join("lite0-c.onnx")).expect("drop");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, current) = service.get("/v1/model");
        if current.contains("lite0-c") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "inbox not installed\n{}",
            service.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!inbox.join("lite0-c.onnx").exists());
    // A broken file in the inbox is moved aside with its reason.
    std::fs::write(dir.path().join("bad.partial"), b"not a model").expect("bad");
    std::fs::rename(dir.path().join("bad.partial"), inbox.join("bad.onnx")).expect("drop");
    let rejected = |name: &str| {
        let reason = inbox.join(format!("rejected/{name}.reason"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reason.exists() {
            assert!(
                Instant::now() < deadline,
                "{name} not rejected\n{}",
                service.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        std::fs::read_to_string(&reason).expect("reason")
    };
    rejected("bad.onnx");
    let (_, current) = service.get("/v1/model");
    assert!(current.contains("lite0-c"), "{current}");
    // A link planted in the inbox is moved aside, not followed: the model it points at
    // (B, signed by nobody but valid) is not installed.
    std::os::unix::fs::symlink(&model_b, inbox.join("planted.onnx")).expect("symlink");
    let reason = rejected("planted.onnx");
    assert!(reason.contains("symbolic link"), "{reason}");
    assert!(model_b.is_file(), "the link's target stays where it was");
    let (_, current) = service.get("/v1/model");
    assert!(current.contains("lite0-c"), "{current}");
    // Uploads were staged on disk and nothing of them is left.
    let staged: Vec<_> = std::fs::read_dir(store.join("incoming"))
        .expect("staging folder")
        .collect();
    assert!(staged.is_empty(), "{staged:?}");
    let n = service.records().len();
    service.wait_for(Duration::from_secs(60), "frames after the swaps", |r| {
        r.len() >= n + 5
    });
    assert_eq!(service.terminate(), Some(0));

    // Every frame of the looping file has exactly one result (backpressure, no drops),
    // and the models follow each other A → B → C, never back, never unknown.
    let frames: Vec<serde_json::Value> = service
        .records()
        .into_iter()
        .filter(|r| r["type"] == "frame")
        .collect();
    let seqs: Vec<u64> = frames
        .iter()
        .map(|f| f["seq"].as_u64().expect("seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "results lost or repeated: {seqs:?}"
    );
    let mut order: Vec<String> = Vec::new();
    for f in &frames {
        let id = f["model"].as_str().expect("model").to_string();
        if order.last() != Some(&id) {
            order.push(id);
        }
    }
    assert_eq!(order.len(), 3, "{order:?}");
    assert_eq!(order[1], id_b);
    for f in &frames {
        let label = f["top"][0]["label"].as_str().expect("label");
        let prefix = match f["model"].as_str() {
            Some(id) if id == order[1] => "B:",
            Some(id) if id == order[2] => "C:",
            _ => "",
        };
        assert!(
            label.starts_with(prefix) && (prefix.is_empty() != label.contains(':')),
            "{label} from {}",
            f["model"]
        );
    }
    // After a restart the store serves C (the current slot), not the configured model.
    let current = std::fs::read_link(store.join("current")).expect("link");
    assert_eq!(current, Path::new("a"));
}

/// Mosquitto on a free port, stopped when dropped.
struct Broker {
    child: std::process::Child,
    port: u16,
}

impl Broker {
    fn start() -> Broker {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mosquitto is not installed (scripts/setup.sh installs Debian's mosquitto)");
        let child = std::process::Command::new(binary)
            .args(["-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, port }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn events_and_status_reach_a_real_mqtt_broker() {
    let broker = Broker::start();
    let (messages_tx, messages) = crossbeam_channel::unbounded();
    let mut options = rumqttc::MqttOptions::new("scion-test", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = rumqttc::Client::new(options, 64);
    client
        .subscribe("scion/test/#", rumqttc::QoS::AtLeastOnce)
        .expect("subscribe");
    let (subscribed_tx, subscribed) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    let _ = subscribed_tx.send(());
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let _ = messages_tx.send((p.topic.clone(), p.payload.to_vec(), p.retain));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    subscribed
        .recv_timeout(Duration::from_secs(10))
        .expect("subscribed");

    let dir = tempfile::tempdir().expect("tempdir");
    let uri = scene_video(dir.path());
    let broker_uri = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut service = Service::start(
        dir.path(),
        &[
            "--source",
            &uri,
            "--smooth",
            "3",
            "--hold",
            "2",
            "--mqtt",
            &broker_uri,
            "--mqtt-topic",
            "scion/test",
            "--mqtt-status-interval",
            "0.2",
        ],
        &[],
    );
    // The file ends: the service stops by itself, saying goodbye on MQTT.
    assert_eq!(
        service.wait(Duration::from_secs(120)),
        Some(0),
        "{}",
        service.log_text()
    );
    let mut events = Vec::new();
    let mut statuses = Vec::new();
    while let Ok((topic, payload, _retain)) = messages.recv_timeout(Duration::from_secs(3)) {
        let value: serde_json::Value = serde_json::from_slice(&payload).expect("JSON payload");
        match topic.as_str() {
            "scion/test/event" => events.push(value),
            "scion/test/status" => statuses.push(value),
            other => panic!("unexpected topic {other}"),
        }
    }
    let announced: Vec<&str> = events.iter().filter_map(|e| e["to"].as_str()).collect();
    assert_eq!(announced, ["golden retriever", GOLDFISH], "{events:?}");
    // Every event on MQTT is one the JSON lines carry too.
    let lines: Vec<serde_json::Value> = service
        .records()
        .into_iter()
        .filter(|r| r["type"] == "event")
        .collect();
    assert_eq!(lines, events);
    let last = statuses.last().expect("status messages");
    assert_eq!(last["online"], false, "{statuses:?}");
    assert!(
        last["frames"].as_u64().is_some_and(|f| f >= 16),
        "{statuses:?}"
    );
    assert_eq!(last["model"]["engine"], "ort-cpu");
    drop(client);
}

#[test]
fn a_source_killed_mid_stream_reconnects_and_frames_flow_again() {
    let (port, server) = mjpeg_server(15, 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let source =
        format!("gst://tcpclientsrc host=127.0.0.1 port={port} ! multipartdemux ! jpegdec");
    let mut service = Service::start(
        dir.path(),
        &["--source", &source, "--listen", "127.0.0.1:0"],
        &[],
    );
    // Frames from the second connection carry numbers after the first's.
    service.wait_for(Duration::from_secs(90), "frames after the reconnect", |r| {
        r.iter()
            .filter(|f| f["type"] == "frame")
            .any(|f| f["seq"].as_u64() > Some(15))
    });
    let (_, metrics) = service.get("/metrics");
    let reconnects = metrics
        .lines()
        .find_map(|l| l.strip_prefix("scion_reconnects_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("reconnect counter");
    assert!(reconnects >= 1, "{metrics}");
    assert!(
        service.log_text().contains("reopening"),
        "{}",
        service.log_text()
    );
    assert_eq!(service.terminate(), Some(0));
    let frames: Vec<_> = service
        .records()
        .into_iter()
        .filter(|r| r["type"] == "frame")
        .collect();
    assert!(
        frames.iter().all(|f| f["top"][0]["label"] == GOLDFISH),
        "{frames:?}"
    );
    drop(server);
}

#[test]
fn systemd_hears_the_engine_being_prepared_then_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut service = Service::start(
        dir.path(),
        &["--source", "test://ball"],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8")),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut heard = Vec::new();
    let mut buf = [0u8; 512];
    while !heard.iter().any(|m: &String| m.starts_with("WATCHDOG=1")) {
        let n = socket
            .recv(&mut buf)
            .expect("a notification within a minute");
        heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // While the first model is prepared (a TensorRT build can take minutes), systemd is
    // asked for more start-up time; then READY.
    assert!(
        heard[0].starts_with("EXTEND_TIMEOUT_USEC=20000000\nSTATUS=preparing engine ("),
        "{heard:?}"
    );
    let ready = heard
        .iter()
        .position(|m| m.starts_with("READY=1\nSTATUS=serving"))
        .expect("READY");
    assert!(
        heard[1..ready]
            .iter()
            .all(|m| m.starts_with("EXTEND_TIMEOUT_USEC=")),
        "{heard:?}"
    );
    assert_eq!(service.terminate(), Some(0));
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    while let Ok(n) = socket.recv(&mut buf) {
        heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(heard.iter().any(|m| m == "STOPPING=1"), "{heard:?}");
}

#[test]
fn an_image_folder_is_a_finite_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("photos");
    std::fs::create_dir(&folder).expect("folder");
    for name in ["gold_fish.jpg", "puppy.jpg"] {
        std::fs::copy(photo(name), folder.join(name)).expect("copy");
    }
    std::fs::write(folder.join("broken.jpg"), b"not a jpeg").expect("broken");
    let run = scion_edge()
        .args(["serve", "--smooth", "1", "--hold", "1", "--source"])
        .arg(format!("file://{}", folder.display()))
        .arg("--model")
        .arg(model())
        .assert()
        .success()
        .stderr(contains("broken.jpg"));
    let out = records(&String::from_utf8_lossy(&run.get_output().stdout));
    let tops: Vec<&str> = out
        .iter()
        .filter(|r| r["type"] == "frame")
        .map(|f| f["top"][0]["label"].as_str().expect("label"))
        .collect();
    assert_eq!(tops, [GOLDFISH, "golden retriever"]);
}

#[test]
fn configuration_files_are_checked_and_flags_override_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        "source = \"test://ball\"\nmodel = \"/m.onnx\"\n[smoothing]\nthreshold = 0.7\n[mqtt]\nbroker = \"mqtt://broker:1884\"\n",
    )
    .expect("config");
    let run = scion_edge()
        .args(["serve", "--print-config", "--threshold", "0.6", "--config"])
        .arg(&config)
        .assert()
        .success();
    let printed = String::from_utf8_lossy(&run.get_output().stdout).into_owned();
    let effective: toml::Value = toml::from_str(&printed).expect("printed TOML");
    let threshold = effective["smoothing"]["threshold"]
        .as_float()
        .expect("threshold");
    assert!((threshold - 0.6).abs() < 1e-6, "{printed}");
    assert_eq!(
        effective["mqtt"]["broker"].as_str(),
        Some("mqtt://broker:1884")
    );
    assert_eq!(effective["source"].as_str(), Some("test://ball"));

    std::fs::write(
        &config,
        "source = \"test://ball\"\n[http]\nlisten = \"everywhere\"\n",
    )
    .expect("config");
    scion_edge()
        .args(["serve", "--model"])
        .arg(model())
        .arg("--config")
        .arg(&config)
        .assert()
        .code(1)
        .stderr(contains("http.listen"));
    std::fs::write(&config, "source = \"test://ball\"\nsmoothing_frames = 3\n").expect("config");
    scion_edge()
        .args(["serve", "--config"])
        .arg(&config)
        .assert()
        .code(1)
        .stderr(contains("smoothing_frames").and(contains("edge.toml")));
    scion_edge()
        .args(["serve", "--config", "/no/such/edge.toml"])
        .assert()
        .code(1)
        .stderr(contains("/no/such/edge.toml"));
}

#[test]
fn install_lays_out_a_root() {
    let root = tempfile::tempdir().expect("tempdir");
    scion_edge()
        .args(["install", "--root"])
        .arg(root.path())
        .assert()
        .success();
    let binary = root.path().join("usr/bin/scion-edge");
    assert!(binary.is_file());
    let unit = std::fs::read_to_string(root.path().join("lib/systemd/system/scion-edge.service"))
        .expect("unit");
    assert!(unit.contains("ExecStart=/usr/bin/scion-edge"));
    // The installed config is valid as shipped (given a model).
    let config = root.path().join("etc/scion/edge.toml");
    scion_edge()
        .args(["serve", "--print-config", "--config"])
        .arg(&config)
        .assert()
        .success()
        .stdout(contains("listen = \"127.0.0.1:8080\""));
    assert!(root.path().join("var/lib/scion/models/inbox").is_dir());
}

#[test]
fn json_logs_and_an_unwritable_output_are_handled() {
    let run = scion_edge()
        .args([
            "--log-format",
            "json",
            "serve",
            "--source",
            "test://ball",
            "--max-frames",
            "2",
            "--model",
        ])
        .arg(model())
        .assert()
        .success();
    let log = String::from_utf8_lossy(&run.get_output().stderr).into_owned();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("serving"))),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );

    scion_edge()
        .args([
            "serve",
            "--source",
            "test://ball",
            "--output",
            "/proc/no/frames.jsonl",
        ])
        .arg("--model")
        .arg(model())
        .assert()
        .code(1)
        .stderr(contains("output /proc/no/frames.jsonl"));
}

#[test]
fn healthz_says_preparing_engine_until_the_first_model_is_ready() {
    // tract takes about a second to optimise Lite0 on two cores: the API already listens.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut service = Service::start(
        dir.path(),
        &[
            "--source",
            "test://ball",
            "--listen",
            "127.0.0.1:0",
            "--engine",
            "tract",
            "--require",
        ],
        &[],
    );
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = service.get("/healthz");
        let health: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let state = health["status"].as_str().expect("status").to_string();
        if states.last() != Some(&state) {
            states.push(state.clone());
        }
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "never ready: {states:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        states.first().map(String::as_str),
        Some("preparing engine"),
        "{states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("ready"),
        "{states:?}"
    );
    assert_eq!(service.terminate(), Some(0));
}
