//! The service the `http` target talks to: started once per process, in a folder of its
//! own, with the tiny model it serves and uploads mutate.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use scion_edge::engine::{EngineKind, EngineOptions, Policy};
use scion_edge::preprocess::RgbImage;
use scion_edge::serve::collect::{CollectSection, Collector};
use scion_edge::serve::hub::Hub;
use scion_edge::service::http::{Api, DeviceInfo, IMAGE_UPLOADS_AT_ONCE, router};
use scion_edge::service::store::{ModelSource, ModelStore};
use scion_edge::source::{Frame, FrameSource, SourceError};
use sha2::{Digest, Sha256};

use super::{MAX_MODEL_BYTES, MAX_UPLOAD_BYTES, PHOTO, TOKEN};

fn tiny_model() -> Vec<u8> {
    use scion_onnx::builder::{node, tensor_f32, value_info_f32};
    use scion_onnx::pb::{GraphProto, ModelProto};
    let mut rng = scion_edge::rng::SplitMix64::new(0x5c10);
    let mut weights = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform(-0.5, 0.5)).collect() };
    let graph = GraphProto {
        name: "tiny".into(),
        node: vec![
            node(
                "Conv",
                "conv",
                &["input", "conv.w", "conv.b"],
                &["c"],
                vec![
                    scion_onnx::builder::attr_ints("kernel_shape", &[3, 3]),
                    scion_onnx::builder::attr_ints("strides", &[2, 2]),
                    scion_onnx::builder::attr_ints("pads", &[1, 1, 1, 1]),
                ],
            ),
            node("Relu", "relu", &["c"], &["r"], vec![]),
            node("GlobalAveragePool", "pool", &["r"], &["p"], vec![]),
            node("Flatten", "flatten", &["p"], &["f"], vec![]),
            node(
                "Gemm",
                "fc",
                &["f", "fc.w", "fc.b"],
                &["logits"],
                vec![scion_onnx::builder::attr_int("transB", 1)],
            ),
        ],
        initializer: vec![
            tensor_f32("conv.w", &[8, 3, 3, 3], weights(8 * 27)),
            tensor_f32("conv.b", &[8], weights(8)),
            tensor_f32("fc.w", &[10, 8], weights(80)),
            tensor_f32("fc.b", &[10], weights(10)),
        ],
        input: vec![value_info_f32("input", &[Err("N"), Ok(3), Ok(32), Ok(32)])],
        output: vec![value_info_f32("logits", &[Err("N"), Ok(10)])],
        ..Default::default()
    };
    let source = ModelProto {
        ir_version: 8,
        opset_import: vec![scion_onnx::builder::default_opset()],
        graph: Some(graph),
        ..Default::default()
    };
    let options = scion_edge::import::ImportOptions {
        preset: scion_edge::import::Preset::Torchvision,
        labels: scion_edge::import::Labels::Default,
        feature_tensor: None,
        contract: scion_edge::ContractOverrides::default(),
        name: Some("tiny".into()),
        engine: EngineOptions::default(),
        tolerance: 1e-4,
    };
    let imported = scion_edge::import::import_graph(
        &scion_onnx::io::encode(&source),
        Path::new("tiny.onnx"),
        Path::new("."),
        &options,
    )
    .expect("the tiny model imports");
    scion_onnx::io::encode(&imported.model)
}

/// The running service the inputs talk to.
pub(super) struct Service {
    /// The model it started with (and serves again before every input).
    pub(super) model: Vec<u8>,
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) api: Arc<Api>,
    pub(super) router: axum::Router,
    /// The folder all of its folders are in.
    pub(super) root: PathBuf,
    pub(super) store: Arc<ModelStore>,
    /// The key the store trusts.
    pub(super) key: SigningKey,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

/// A camera that shows the photo every 10 ms.
struct PhotoCamera {
    image: RgbImage,
    next: Instant,
    sequence: u64,
}

impl FrameSource for PhotoCamera {
    fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, SourceError> {
        let now = Instant::now();
        if self.next > now + timeout {
            std::thread::sleep(timeout);
            return Ok(None);
        }
        std::thread::sleep(self.next.saturating_duration_since(now));
        self.next = Instant::now() + Duration::from_millis(10);
        self.sequence += 1;
        Ok(Some(Frame {
            image: self.image.clone(),
            captured: Instant::now(),
            sequence: self.sequence,
            dropped: 0,
        }))
    }

    fn uri(&self) -> &str {
        "fuzz://photo"
    }
}

/// Folders of earlier fuzzing processes that are gone.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("scion-fuzz-http-")
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn start() -> Service {
    // tmpfs where there is one: the store syncs every install.
    let base = Some(PathBuf::from("/dev/shm"))
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    remove_stale(&base);
    let root = base.join(format!("scion-fuzz-http-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("outside")).expect("service folder");
    let key = SigningKey::from_bytes(&[7; 32]);
    let store = Arc::new(
        ModelStore::open(&root.join("models"), Some(key.verifying_key()), false, 1e-3)
            .expect("model store"),
    );
    let model_bytes = tiny_model();
    let seed = root.join("seed.onnx");
    std::fs::write(&seed, &model_bytes).expect("seed model");
    let first = store.seed(&seed).expect("store seeded");
    let prepare = scion_edge::service::preparer(
        Policy::prefer(EngineKind::Tract, true),
        EngineOptions::default(),
        Default::default(),
    );
    let model = scion_edge::service::prepare_file(&first, &*prepare).expect("model prepares");
    let hub = Arc::new(Hub::new());
    let collect = CollectSection {
        per_label: 3,
        max_mb: 1,
        ..CollectSection::default()
    };
    hub.set_collector(Collector::start(&root.join("captures"), collect).expect("collector"));
    let image = scion_edge::preprocess::decode_rgb(PHOTO, None).expect("photo decodes");
    {
        let hub = hub.clone();
        std::thread::spawn(move || {
            let mut camera = PhotoCamera {
                image,
                next: Instant::now(),
                sequence: 0,
            };
            let config = scion_edge::serve::ServeConfig {
                poll: Duration::from_millis(5),
                ..Default::default()
            };
            let stop = AtomicBool::new(false);
            let result =
                scion_edge::serve::run(&mut camera, model, &config, &hub, &stop, &mut |_| Ok(()));
            panic!("the frame loop stopped: {:?}", result.map(|s| s.frames));
        });
    }
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let api = Arc::new(Api {
        hub,
        store: Some(store.clone()),
        prepare,
        token: Some(TOKEN.into()),
        stale_after_s: 5.0,
        max_upload_bytes: MAX_UPLOAD_BYTES,
        max_model_bytes: MAX_MODEL_BYTES,
        shutdown: shutdown_rx,
        device: DeviceInfo::default(),
        image_uploads: tokio::sync::Semaphore::new(IMAGE_UPLOADS_AT_ONCE),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Ready when the loop has classified a frame.
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.hub.latest().is_none() {
        assert!(Instant::now() < deadline, "no frame classified in 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    Service {
        model: model_bytes,
        runtime,
        router: router(api.clone()),
        api,
        root,
        store,
        key,
        _shutdown: shutdown,
    }
}

impl Service {
    /// Every input starts from the same serving model: one an earlier input installed is
    /// replaced by the seed again (installed like an upload, signed).
    pub(super) fn serve_the_seed_model(&self) {
        let seed = hex::encode(Sha256::digest(&self.model));
        if self.api.hub.model().is_some_and(|m| m.sha256 == seed) {
            return;
        }
        let signature = hex::encode(self.key.sign(&self.model).to_bytes());
        scion_edge::service::install_and_swap(
            &self.store,
            &self.api.hub,
            &*self.api.prepare,
            ModelSource::Bytes(&self.model),
            Some(signature.as_bytes()),
        )
        .expect("the seed model installs again");
    }
}

/// The service, started by the first input.
pub(super) fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(start)
}
