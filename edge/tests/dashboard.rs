//! The device's page in a real browser: headless Chromium (Debian's, through ChromeDriver)
//! against a running `scion-edge serve` on a `test://` source, ImageNet EfficientNet-Lite0.
#![cfg(feature = "gstreamer")]

mod common;

use std::path::Path;
use std::time::Duration;

use common::browser::Browser;
use common::service::{Service, agent};
use common::video::mjpeg_server;

const TOKEN: &str = "s3cret-page";

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    let config = dir.join("edge.toml");
    std::fs::write(
        &config,
        format!(
            r#"model = "{model}"
source = "test://ball"
capture_dir = "{captures}"

[http]
listen = "127.0.0.1:{port}"
token_file = "{token}"
max_model_bytes = 4096

[models]
dir = "{store}"

[collect]
policies = ["every_s"]
every_s = 1.0
"#,
            model = common::model().display(),
            captures = dir.join("captures").display(),
            token = token.display(),
            store = dir.join("store").display(),
        ),
    )
    .expect("config");
    config
}

fn start(dir: &Path, config: &Path) -> Service {
    let config = config.to_str().expect("utf-8");
    // --listen repeats the file's address so the helper waits for the API.
    let port = std::fs::read_to_string(config)
        .expect("config")
        .split("listen = \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("listen")
        .to_string();
    Service::start(dir, &["--config", config, "--listen", &port], &[])
}

/// The announced label as the page shows it and as `/v1/latest` says, read until they agree
/// (the label may change between the two reads).
fn label_agrees(browser: &Browser, service: &Service) -> bool {
    for _ in 0..50 {
        let (_, latest) = service.get("/v1/latest");
        let latest: serde_json::Value = serde_json::from_str(&latest).expect("JSON");
        let api = latest["label"].as_str().unwrap_or("").to_string();
        let page = browser.eval("return document.getElementById('label').dataset.label;");
        if page.as_str() == Some(api.as_str()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A digest of the preview image's pixels now (drawn onto a canvas).
const PREVIEW_PIXELS: &str = r#"
const img = document.getElementById('preview');
if (!img.complete || img.naturalWidth === 0) return null;
const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
const ctx = c.getContext('2d');
ctx.drawImage(img, 0, 0);
const d = ctx.getImageData(0, 0, c.width, c.height).data;
let h = 0;
for (let i = 0; i < d.length; i += 7) h = (h * 31 + d[i]) | 0;
return String(h);
"#;

fn preview_changes(browser: &Browser) {
    let first = browser.wait_for(
        "the preview shows a frame",
        Duration::from_secs(60),
        &format!("return (function() {{ {PREVIEW_PIXELS} }})();"),
    );
    browser.wait_for(
        "the preview image updates",
        Duration::from_secs(30),
        &format!("const now = (function() {{ {PREVIEW_PIXELS} }})(); return now !== null && now !== {first};"),
    );
}

#[test]
fn the_page_shows_what_the_device_sees_and_acts_only_with_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let config = write_config(dir.path(), port);
    let mut service = start(dir.path(), &config);

    // The page and its assets: a strict policy, nothing from elsewhere.
    let response = agent()
        .get(format!("{}/", service.url))
        .call()
        .expect("GET /");
    assert_eq!(response.status().as_u16(), 200);
    let csp = response
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let (_, html) = service.get("/");
    assert!(
        !html.contains("onclick") && !html.contains("<script>"),
        "no inline code"
    );

    let browser = Browser::start();
    browser.goto(&format!("{}/", service.url));
    browser.wait_for(
        "the status is shown",
        Duration::from_secs(60),
        "return document.getElementById('health').textContent === 'ready';",
    );
    assert!(
        label_agrees(&browser, &service),
        "label on the page = /v1/latest"
    );
    browser.wait_for(
        "top-k bars",
        Duration::from_secs(10),
        "return document.querySelectorAll('#topk li').length === 3;",
    );
    preview_changes(&browser);
    let facts = browser.eval("return document.getElementById('status').innerText;");
    let facts = facts.as_str().unwrap_or("");
    for word in ["fps", "inference", "engine", "board", "every_s"] {
        assert!(facts.contains(word), "{word} in {facts}");
    }
    let model = browser.eval("return document.getElementById('model').innerText;");
    assert!(
        model.as_str().unwrap_or("").contains("1000: tench"),
        "{model}"
    );

    // Capture: refused with a wrong token, saved with the right one; the page hears of it
    // over the event stream.
    browser.eval("document.getElementById('token').value = 'wrong'; document.getElementById('token-save').click(); return 0;");
    browser.eval("document.getElementById('capture').click(); return 0;");
    browser.wait_for(
        "a wrong token is refused",
        Duration::from_secs(10),
        "return document.getElementById('verdict').textContent.includes('401');",
    );
    browser.eval(&format!("document.getElementById('token').value = '{TOKEN}'; document.getElementById('token-save').click(); return 0;"));
    assert_eq!(
        browser.eval("return sessionStorage.getItem('scion.token');"),
        TOKEN,
        "kept for the tab"
    );
    browser.eval("document.getElementById('capture').click(); return 0;");
    let verdict = browser.wait_for(
        "the capture is saved",
        Duration::from_secs(20),
        "const v = document.getElementById('verdict').textContent; return v.startsWith('captured') ? v : null;",
    );
    browser.wait_for(
        "the capture arrives as an event",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('#events li')].some(li => li.textContent.includes('captured frame'));",
    );
    let captured = std::fs::read_dir(dir.path().join("captures"))
        .expect("capture folder")
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter(|f| f.path().extension().is_some_and(|e| e == "jpg"))
        .count();
    assert!(
        captured >= 2,
        "{verdict}: every_s and the button saved {captured}"
    );

    let auth = format!("Bearer {TOKEN}");
    let get = |path: &str, token: Option<&str>| {
        let mut request = agent().get(format!("{}{path}", service.url));
        if let Some(t) = token {
            request = request.header("Authorization", t);
        }
        let mut response = request.call().expect("GET");
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .expect("body");
        (status, body)
    };

    // The collected images, listed with the token (one click; a busy machine may take a
    // while to answer, so up to 30 s).
    browser.eval("document.getElementById('captures-refresh').click(); return 0;");
    let listed = browser
        .try_wait_for(
            Duration::from_secs(30),
            "return [...document.querySelectorAll('#captures tbody tr')].some(tr => tr.textContent.includes('button'));",
        )
        .is_some();
    if !listed {
        let (status, body) = get("/v1/captures", Some(&auth));
        panic!(
            "the button's capture is not listed within 30 s; /v1/captures answers {status}: {}\nthe page says:\n{}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(2000)
                .collect::<String>(),
            browser.page_text()
        );
    }

    // The same through the API: the zip holds every image with its sidecar; the model file
    // is the one serving; both only with the token.
    assert_eq!(get("/v1/captures.zip", None).0, 401);
    assert_eq!(get("/v1/model/file", Some("Bearer nope")).0, 401);
    let (status, zip) = get("/v1/captures.zip", Some(&auth));
    assert_eq!(status, 200);
    let archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("a zip");
    let names: Vec<String> = archive
        .file_names()
        .map(|n| n.expect("a UTF-8 name").into_owned())
        .collect();
    let jpegs = names.iter().filter(|n| n.ends_with(".jpg")).count();
    assert!(jpegs >= 2, "{names:?}");
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".json")).count(),
        jpegs,
        "{names:?}"
    );
    let (status, model) = get("/v1/model/file", Some(&auth));
    assert_eq!(status, 200);
    assert_eq!(model, std::fs::read(common::model()).expect("model"));
    let (_, metrics) = service.get("/metrics");
    assert!(
        metrics.contains("scion_collect_saved_total{policy=\"button\"} 1"),
        "{metrics}"
    );

    // An oversized model: the page shows the 413.
    let big = dir.path().join("big.onnx");
    std::fs::write(&big, vec![0u8; 8192]).expect("file");
    browser.send_keys("#model-file", big.to_str().expect("utf-8"));
    browser.eval("document.getElementById('upload').click(); return 0;");
    browser.wait_for(
        "a model over the limit is refused",
        Duration::from_secs(10),
        "return document.getElementById('verdict').textContent.includes('413');",
    );

    // Nothing was fetched from outside the device.
    let outside = browser.eval(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin));",
    );
    assert_eq!(
        outside,
        serde_json::json!([]),
        "requests outside the device"
    );

    let shot = browser.screenshot();
    let image = image::load_from_memory(&shot).expect("a PNG screenshot");
    assert!(image.width() >= 1000, "{}", image.width());
    let artifact = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&artifact, &shot).expect("artifact");
    eprintln!("screenshot: {}", artifact.display());

    // The service restarts: the page says so, then picks up the stream and preview again.
    assert_eq!(service.terminate(), Some(0));
    browser.wait_for(
        "the page notices the device is gone",
        Duration::from_secs(15),
        "return document.getElementById('health').textContent === 'offline';",
    );
    let mut service = start(dir.path(), &config);
    browser.wait_for(
        "the page is back",
        Duration::from_secs(60),
        "return document.getElementById('health').textContent === 'ready';",
    );
    preview_changes(&browser);
    assert!(label_agrees(&browser, &service), "after the restart");
    assert_eq!(service.terminate(), Some(0));
}

#[test]
fn a_camera_that_is_gone_is_shown_as_such() {
    let browser = Browser::start();
    // One that never gave a frame.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut service = Service::start(
        dir.path(),
        &["--source", "v4l2:///dev/video99", "--listen", "127.0.0.1:0"],
        &[],
    );
    browser.goto(&format!("{}/", service.url));
    let warning = no_frames_warning(&browser);
    assert!(
        warning.contains("no frames yet from v4l2:///dev/video99"),
        "{warning}"
    );
    // The page may first have seen "preparing engine": the API listens before the model
    // is ready.
    browser.wait_for(
        "the page says the service waits for frames",
        Duration::from_secs(30),
        "return document.getElementById('health').textContent === 'waiting for frames';",
    );
    assert_eq!(service.terminate(), Some(0));

    // One that gave frames and went away (its server stops listening).
    let (port, camera) = mjpeg_server(100, 1);
    let source =
        format!("gst://tcpclientsrc host=127.0.0.1 port={port} ! multipartdemux ! jpegdec");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut service = Service::start(
        dir.path(),
        &["--source", &source, "--listen", "127.0.0.1:0"],
        &[],
    );
    browser.goto(&format!("{}/", service.url));
    browser.wait_for(
        "the page shows the camera's frames",
        Duration::from_secs(60),
        "return document.getElementById('health').textContent === 'ready' || null;",
    );
    camera.join().expect("the camera thread");
    let warning = no_frames_warning(&browser);
    assert!(
        warning.starts_with("no frames since ") && warning.contains("tcpclientsrc"),
        "{warning}"
    );
    assert_eq!(service.terminate(), Some(0));
}

/// The page's "no frames" warning, once it shows.
fn no_frames_warning(browser: &Browser) -> String {
    browser
        .wait_for(
            "the page says no frames come",
            Duration::from_secs(60),
            "const w = document.getElementById('no-frames'); return w.hidden ? null : w.textContent;",
        )
        .as_str()
        .expect("a text")
        .to_string()
}
