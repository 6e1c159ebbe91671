//! Every input the fuzzers found a problem with is kept in `fuzz/regressions/<target>/`,
//! beside a `.expect` file with the clean error it must now give (or `ok`), and replayed
//! here through the very code the fuzz target runs (`fuzz/src/entries.rs`, included). The
//! fuzzers' seed corpora (`fuzz/corpus/<target>/seed-*`) are made here too, so they follow
//! the formats: `SCION_WRITE_SEEDS=1 cargo test --release -p scion-tests --test
//! fuzz_regressions` rewrites them, and without it a stale seed fails the test.

#[path = "../../fuzz/src/entries.rs"]
mod entries;
#[path = "../../fuzz/src/http/mod.rs"]
mod http;
#[path = "../../fuzz/src/trainer_entries.rs"]
mod trainer_entries;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    scion_tests::workspace().join("fuzz")
}

fn target(name: &str) -> entries::Entry {
    if name == "embeddings" {
        return trainer_entries::embeddings;
    }
    if name == "http" {
        return http::exchange;
    }
    if name == "onnx_graph" {
        return entries::onnx_model; // kept as the encoded .onnx it generated
    }
    entries::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("fuzz/regressions/{name}: no such target"))
}

#[test]
fn every_kept_fuzz_input_gives_its_clean_answer() {
    let root = fuzz_dir().join("regressions");
    let mut replayed = 0;
    for dir in std::fs::read_dir(&root).expect("fuzz/regressions") {
        let dir = dir.expect("entry").path();
        let run = target(&dir.file_name().expect("name").to_string_lossy());
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("target folder")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_none_or(|e| e != "expect"))
            .collect();
        inputs.sort();
        for input in inputs {
            let expect_path = PathBuf::from(format!("{}.expect", input.display()));
            let expected = std::fs::read_to_string(&expect_path)
                .unwrap_or_else(|e| panic!("{}: {e}", expect_path.display()));
            let expected = expected.trim();
            let bytes = std::fs::read(&input).expect("input");
            let started = std::time::Instant::now();
            let got = run(&bytes);
            match (expected, &got) {
                ("ok", Ok(())) => {}
                (want, Err(message)) if want != "ok" => assert!(
                    message.contains(want),
                    "{}: error {message:?} does not contain {want:?}",
                    input.display()
                ),
                _ => panic!("{}: expected {expected:?}, got {got:?}", input.display()),
            }
            // Not a timing assertion on a shared machine: a guard against an input that
            // hangs again (the fuzzers' limit is 1 s; this allows a slow debug build).
            assert!(
                started.elapsed().as_secs() < 30,
                "{}: took {:?}",
                input.display(),
                started.elapsed()
            );
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no kept inputs under {}", root.display());
}

/// The seeds, by target: small, valid inputs of every format.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use scion_onnx::zoo::{self, Arch, Style};
    let mut seeds = Vec::new();
    let small = zoo::Options {
        input_size: 32,
        width: 0.0625,
        classes: 10,
        seed: 7,
    };
    for (arch, style) in [
        (Arch::ResNet18, Style::Torch),
        (Arch::SqueezeNet11, Style::Caffe2),
        (Arch::MobileNetV2, Style::Torch),
    ] {
        let model = zoo::build(arch, style, &small).expect("zoo model");
        seeds.push((
            "onnx_model",
            format!("{}-{style:?}.onnx", arch.name()).to_lowercase(),
            scion_onnx::io::encode(&model),
        ));
    }
    // A model with a card, as `import onnx` writes it.
    let source = scion_onnx::io::encode(
        &zoo::build(Arch::ResNet18, Style::Torch, &small).expect("zoo model"),
    );
    let options = scion_edge::import::ImportOptions {
        preset: scion_edge::import::Preset::Torchvision,
        labels: scion_edge::import::Labels::Default,
        feature_tensor: None,
        contract: scion_edge::ContractOverrides::default(),
        name: Some("seed".into()),
        engine: scion_edge::engine::EngineOptions::default(),
        tolerance: 1e-4,
    };
    let imported = scion_edge::import::import_graph(
        &source,
        Path::new("resnet18.onnx"),
        Path::new("."),
        &options,
    )
    .expect("imports");
    seeds.push((
        "onnx_model",
        "resnet18-carded.onnx".into(),
        scion_onnx::io::encode(&imported.model),
    ));
    seeds.push((
        "card_json",
        "card.json".into(),
        imported.card.to_json().into_bytes(),
    ));
    // Images in every format scion decodes, from a real photo.
    let photo = std::fs::read_dir(scion_tests::asset("assets/photos"))
        .expect("photos")
        .map(|e| e.expect("entry").path())
        .min()
        .expect("a photo");
    let image = image::open(&photo)
        .expect("photo decodes")
        .resize_exact(40, 30, image::imageops::FilterType::Triangle)
        .to_rgb8();
    for (format, ext) in [
        (image::ImageFormat::Jpeg, "jpg"),
        (image::ImageFormat::Png, "png"),
        (image::ImageFormat::WebP, "webp"),
        (image::ImageFormat::Gif, "gif"),
        (image::ImageFormat::Bmp, "bmp"),
        (image::ImageFormat::Tiff, "tiff"),
    ] {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).expect("encode");
        seeds.push(("image_decode", format!("photo.{ext}"), bytes.into_inner()));
    }
    // The installed config and a full one.
    let workspace = scion_tests::workspace();
    seeds.push((
        "edge_config",
        "dist-edge.toml".into(),
        std::fs::read(workspace.join("edge/dist/edge.toml")).expect("dist config"),
    ));
    // Link frames: one of each message, as a stream and as bodies.
    let mut stream = Vec::new();
    for message in [
        scion_link::Message::Hello {
            protocol: scion_link::PROTOCOL_VERSION,
            role: scion_link::Role::Host,
            name: "scion-edge 0.1.0",
        },
        scion_link::Message::Result {
            label: 3,
            score: 0.875,
            seq: 41,
            latency_us: 23_000,
        },
        scion_link::Message::Heartbeat { uptime_ms: 12_345 },
    ] {
        let mut frame = [0u8; scion_link::MAX_FRAME];
        let n = scion_link::encode(&message, &mut frame).expect("encode");
        stream.extend_from_slice(&frame[..n]);
        let mut body = frame[..n - 1].to_vec();
        let len = scion_link::cobs_decode_in_place(&mut body).expect("cobs");
        body.truncate(len - 2); // the target appends the CRC itself
        let name = format!("{message:?}");
        let name = name
            .split([' ', '{'])
            .next()
            .expect("variant")
            .to_lowercase();
        seeds.push(("link_frame", format!("{name}.bin"), body));
    }
    seeds.push(("link_stream", "three-frames.bin".into(), stream));
    // A torch checkpoint in the zip format, and its pickle alone.
    let pth = std::fs::read(workspace.join("onnx/tests/fixtures/zip_format.pth")).expect("pth");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&pth)).expect("zip");
    let pickle_name = archive
        .file_names()
        .filter_map(Result::ok)
        .find(|n| n.ends_with("data.pkl"))
        .expect("data.pkl")
        .to_string();
    let mut pickle = Vec::new();
    std::io::Read::read_to_end(
        &mut archive.by_name(&pickle_name).expect("entry"),
        &mut pickle,
    )
    .expect("read");
    seeds.push(("torch_pth", "zip-format.pth".into(), pth));
    seeds.push(("pickle", "data.pkl".into(), pickle));
    // Embeddings of three images.
    use scion_trainer::represent::embedding::{Embeddings, Item, Provenance};
    let embeddings = Embeddings {
        items: ["bag/0.png", "bag/1.png", "coat/0.png"]
            .iter()
            .map(|p| Item {
                path: p.to_string(),
                label: p.split('/').next().map(str::to_string),
                split: Some("val".into()),
            })
            .collect(),
        dim: 4,
        data: (0..12).map(|i| i as f32 / 12.0).collect(),
        provenance: Provenance {
            model: "m.onnx".into(),
            model_sha256: "0".repeat(64),
            tensor: "features".into(),
            pooled: false,
            shard: None,
        },
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("e.safetensors");
    embeddings.save(&path).expect("save");
    seeds.push((
        "embeddings",
        "three.safetensors".into(),
        std::fs::read(&path).expect("read"),
    ));
    seeds.extend(http_seeds());
    seeds
}

/// Scripted exchanges with the HTTP API, in the layout of `fuzz/src/http/mod.rs`; each one is
/// also run here through that target's checks (a real service, in-process).
fn http_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use http::BodyKind::{ConfirmListed, ConfirmPath, Filler, Model, Photo, Raw};
    const RIGHT: u8 = 1;
    const WRONG: u8 = 2;
    const NOT_BEARER: u8 = 3;
    const TRUE_LENGTH: u8 = 1 << 2;
    const DOUBLE_LENGTH: u8 = 3 << 2;
    const CHUNKED: u8 = 1 << 4;
    const BREAKS_OFF: u8 = 1 << 5;
    const SIGNED: u8 = 1 << 6;
    const SIGNED_OTHER: u8 = 2 << 6;
    const GARBAGE_SIGNATURE: u8 = 3 << 6;
    let endpoint = |method: &str, path: &str| {
        http::ENDPOINTS
            .iter()
            .position(|(m, p)| m.as_str() == method && *p == path)
            .unwrap_or_else(|| panic!("{method} {path}: not an endpoint of the target"))
            as u8
    };
    let request =
        |method: &str, path: &str, flags: u8, kind: http::BodyKind, payload: &[u8]| http::Request {
            endpoint: endpoint(method, path),
            flags,
            kind: kind as u8,
            extra: 0,
            payload: payload.to_vec(),
        };
    let exchanges = [
        (
            "classify",
            vec![
                request("POST", "/v1/classify", TRUE_LENGTH, Photo, &[]),
                request("POST", "/v1/classify", CHUNKED, Photo, &[0, 4, 0, 0]),
                request("POST", "/v1/classify", 0, Raw, b"not an image"),
            ],
        ),
        (
            "install-signed",
            vec![
                request(
                    "POST",
                    "/v1/model",
                    RIGHT | TRUE_LENGTH | SIGNED,
                    Model,
                    &[],
                ),
                request("GET", "/v1/model", 0, Raw, &[]),
                request("POST", "/v1/classify", TRUE_LENGTH, Photo, &[]),
            ],
        ),
        (
            "install-refused",
            vec![
                request("POST", "/v1/model", WRONG | SIGNED, Model, &[]),
                request("POST", "/v1/model", NOT_BEARER | SIGNED, Model, &[]),
                request("POST", "/v1/model", RIGHT | SIGNED_OTHER, Model, &[]),
                request("POST", "/v1/model", RIGHT | GARBAGE_SIGNATURE, Model, &[]),
                request(
                    "POST",
                    "/v1/model",
                    RIGHT | CHUNKED | BREAKS_OFF | SIGNED,
                    Model,
                    &[],
                ),
                request(
                    "POST",
                    "/v1/model",
                    RIGHT | DOUBLE_LENGTH | SIGNED,
                    Filler,
                    &[255; 160],
                ),
            ],
        ),
        (
            "captures",
            vec![
                request("POST", "/v1/capture", RIGHT, Raw, &[]),
                request("GET", "/v1/captures", RIGHT, Raw, &[]),
                request(
                    "POST",
                    "/v1/captures/confirm",
                    RIGHT,
                    ConfirmListed,
                    b"goldfish",
                ),
                request(
                    "POST",
                    "/v1/captures/confirm",
                    RIGHT,
                    ConfirmPath,
                    b"../outside/x.jpg\0x",
                ),
                request("GET", "/v1/captures.zip", RIGHT, Raw, &[]),
                request("POST", "/v1/references", RIGHT, Photo, &[]),
            ],
        ),
        (
            "reads",
            vec![
                request("GET", "/v1/status", 0, Raw, &[]),
                request("GET", "/metrics", 0, Raw, &[]),
                request("GET", "/v1/latest", 0, Raw, &[]),
                request("GET", "/v1/events", 0, Raw, &[]),
                request("GET", "/v1/preview.mjpeg", 0, Raw, &[]),
                request("GET", "/v1/model/file", WRONG, Raw, &[]),
            ],
        ),
    ];
    exchanges
        .into_iter()
        .map(|(name, requests)| {
            let bytes = requests.iter().flat_map(http::Request::encode).collect();
            ("http", format!("{name}.bin"), bytes)
        })
        .collect()
}

#[test]
fn the_committed_seed_corpora_are_the_ones_the_tests_make() {
    let write = std::env::var_os("SCION_WRITE_SEEDS").is_some();
    let mut stale = Vec::new();
    for (target, name, bytes) in seeds() {
        let path = fuzz_dir()
            .join("corpus")
            .join(target)
            .join(format!("seed-{name}"));
        // Every seed is a valid input: the target accepts it.
        if target != "edge_config" {
            self::target(target)(&bytes).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        }
        if write {
            std::fs::create_dir_all(path.parent().expect("folder")).expect("mkdir");
            std::fs::write(&path, &bytes).expect("write seed");
        } else if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale or missing seeds (rerun with SCION_WRITE_SEEDS=1): {stale:?}"
    );
}
