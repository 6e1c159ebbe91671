//! The HTTP API driven in-process: a real service (router, frame loop on tract, model store
//! with a signing key, capture folder) started once per process, and each fuzz input read
//! as a few requests sent straight into the router, no socket. An answer that breaks what
//! the API promises panics, which is the finding:
//! - no 500, and an error answer of the API's own is JSON with an `error`;
//! - without the right bearer token, every private endpoint answers 401 (and with it, never);
//! - an unmutated photo classifies (200) and an unmutated, validly signed model installs
//!   (200) when the token is right;
//! - a model answered 200 is the one serving and the store's current file, and the swap is
//!   counted exactly once; any other answer swaps nothing;
//! - nothing is left in the store's staging folder, and nothing appears outside the
//!   service's folders.
//!
//! Every input starts from the same serving model, so a mutated model one input got accepted
//! does not change what the next one meets.
//!
//! The input format is a plain byte layout ([`Request::decode`]), so the tests write seeds
//! with [`Request::encode`] and replay kept inputs through this same file. Per request:
//! `endpoint, flags, kind, extra, len (u16 LE), payload[len]`:
//! - `flags`: bits 0-1 the token (none, right, wrong, not `Bearer`), 2-3 the
//!   `Content-Length` (none, true, half, double + 1), bit 4 the body in chunks, bit 5 the
//!   body breaking off after its bytes, 6-7 the signature (none, valid, over other bytes,
//!   garbage);
//! - `kind`: the body ([`BodyKind`]); `extra`: bits 0-2 which garbage signature, 3-5 the
//!   chunk size (256 << n bytes).

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, StatusCode, header};
use ed25519_dalek::Signer;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

mod service;

use service::{Service, service};

/// The photo the camera shows and uploads mutate.
const PHOTO: &[u8] = include_bytes!("../../../assets/photos/gold_fish.jpg");
const TOKEN: &str = "s3cret-token-for-fuzzing";
const MAX_UPLOAD_BYTES: usize = 64 << 10;
const MAX_MODEL_BYTES: usize = 1 << 20;
/// Requests read from one input at most (the rest of the bytes are ignored).
const MAX_REQUESTS: usize = 6;

/// The endpoints, by the input's `endpoint` byte (modulo their number).
pub const ENDPOINTS: &[(Method, &str)] = &[
    (Method::POST, "/v1/classify"),
    (Method::POST, "/v1/model"),
    (Method::POST, "/v1/references"),
    (Method::POST, "/v1/capture"),
    (Method::POST, "/v1/captures/confirm"),
    (Method::GET, "/v1/captures"),
    (Method::GET, "/v1/captures.zip"),
    (Method::GET, "/v1/model/file"),
    (Method::GET, "/v1/status"),
    (Method::GET, "/healthz"),
    (Method::GET, "/metrics"),
    (Method::GET, "/v1/latest"),
    (Method::GET, "/v1/model"),
    (Method::GET, "/v1/events"),
    (Method::GET, "/v1/preview.mjpeg"),
    (Method::GET, "/"),
    (Method::GET, "/v1/classify"),
    (Method::PUT, "/v1/model"),
];

/// What a private endpoint is: it answers only the right bearer token.
fn private(method: &Method, path: &str) -> bool {
    matches!(
        (method, path),
        (&Method::POST, "/v1/model")
            | (&Method::POST, "/v1/references")
            | (&Method::POST, "/v1/capture")
            | (&Method::POST, "/v1/captures/confirm")
            | (&Method::GET, "/v1/captures")
            | (&Method::GET, "/v1/captures.zip")
            | (&Method::GET, "/v1/model/file")
    )
}

/// The body of a request, by the input's `kind` byte (modulo 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// The payload as it is.
    Raw = 0,
    /// The photo, mutated by the payload ([`mutate`]).
    Photo = 1,
    /// The model, mutated by the payload.
    Model = 2,
    /// `{"path": <the n-th capture listed>, "label": <payload>}`, n = `extra`.
    ConfirmListed = 3,
    /// `{"path": <payload up to a NUL>, "label": <the rest>}`.
    ConfirmPath = 4,
    /// Zeros, 32 bytes per payload byte value summed (past the limits).
    Filler = 5,
}

/// One request as the input describes it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Index into [`ENDPOINTS`].
    pub endpoint: u8,
    /// See the module's doc.
    pub flags: u8,
    /// See [`BodyKind`].
    pub kind: u8,
    /// See the module's doc.
    pub extra: u8,
    /// What the body is made of.
    pub payload: Vec<u8>,
}

impl Request {
    /// The requests an input holds.
    pub fn decode(mut data: &[u8]) -> Vec<Request> {
        let mut requests = Vec::new();
        while data.len() >= 6 && requests.len() < MAX_REQUESTS {
            let len = usize::from(u16::from_le_bytes([data[4], data[5]])).min(data.len() - 6);
            requests.push(Request {
                endpoint: data[0],
                flags: data[1],
                kind: data[2],
                extra: data[3],
                payload: data[6..6 + len].to_vec(),
            });
            data = &data[6 + len..];
        }
        requests
    }

    /// The bytes [`Request::decode`] reads back as this request.
    pub fn encode(&self) -> Vec<u8> {
        let len = u16::try_from(self.payload.len()).expect("payload fits a u16");
        let mut out = vec![self.endpoint, self.flags, self.kind, self.extra];
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    fn method_and_path(&self) -> &'static (Method, &'static str) {
        &ENDPOINTS[usize::from(self.endpoint) % ENDPOINTS.len()]
    }

    fn kind(&self) -> BodyKind {
        match self.kind % 6 {
            0 => BodyKind::Raw,
            1 => BodyKind::Photo,
            2 => BodyKind::Model,
            3 => BodyKind::ConfirmListed,
            4 => BodyKind::ConfirmPath,
            _ => BodyKind::Filler,
        }
    }
}

/// The photo or the model changed by a payload: its first 4 bytes (u32 LE, 0 for none)
/// truncate at that value modulo the length + 1, and each following 3 bytes set one byte
/// (u16 LE position scaled to the length, the value).
pub fn mutate(original: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    let (cut, edits) = payload.split_at(payload.len().min(4));
    for edit in edits.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([edit[0], edit[1]])) * bytes.len() / 65536;
        bytes[at] = edit[2];
    }
    if cut.len() == 4 {
        let cut = u32::from_le_bytes([cut[0], cut[1], cut[2], cut[3]]) as usize;
        if cut != 0 {
            bytes.truncate(cut % (bytes.len() + 1));
        }
    }
    bytes
}

/// The model the service starts with and uploads mutate: a convolution, a pool and a linear
/// head on 32x32 images, seeded weights, made a scion model by `import onnx`'s own code. A
/// model this small keeps an install (load, tract's optimiser, the store's checks) well
/// under the fuzzer's 1 s with sanitizers; a ResNet-18 took 0.8 s.
/// What one request sent, for the checks on its answer.
struct Sent {
    method: Method,
    path: &'static str,
    right_token: bool,
    /// A body that must be accepted: unmutated, whole, truthfully described, signed.
    must_succeed: bool,
    body: Vec<u8>,
}

fn build(service: &Service, request: &Request) -> (axum::http::Request<Body>, Sent) {
    let (method, path) = request.method_and_path().clone();
    let kind = request.kind();
    let body = match kind {
        BodyKind::Raw => request.payload.clone(),
        BodyKind::Photo => mutate(PHOTO, &request.payload),
        BodyKind::Model => mutate(&service.model, &request.payload),
        BodyKind::ConfirmListed => {
            let listed = service.api.hub.collector().map(|c| c.list(16));
            let path = listed
                .as_deref()
                .and_then(|l| l.get(usize::from(request.extra) % l.len().max(1)))
                .map(|l| l.path.clone())
                .unwrap_or_default();
            let label = String::from_utf8_lossy(&request.payload);
            serde_json::to_vec(&serde_json::json!({ "path": path, "label": label })).expect("json")
        }
        BodyKind::ConfirmPath => {
            let mut parts = request.payload.splitn(2, |b| *b == 0);
            let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
            let label = String::from_utf8_lossy(parts.next().unwrap_or_default());
            serde_json::to_vec(&serde_json::json!({ "path": path, "label": label })).expect("json")
        }
        BodyKind::Filler => {
            let n: usize = request.payload.iter().map(|b| usize::from(*b)).sum();
            vec![0; n * 32]
        }
    };
    let flags = request.flags;
    let mut builder = axum::http::Request::builder()
        .method(method.clone())
        .uri(path);
    let token = flags & 3;
    match token {
        1 => builder = builder.header(header::AUTHORIZATION, format!("Bearer {TOKEN}")),
        2 => {
            let mut wrong = TOKEN.to_string();
            wrong.pop();
            wrong.push('N');
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {wrong}"));
        }
        3 => builder = builder.header(header::AUTHORIZATION, format!("Basic {TOKEN}")),
        _ => {}
    }
    let length = (flags >> 2) & 3;
    match length {
        1 => builder = builder.header(header::CONTENT_LENGTH, body.len()),
        2 => builder = builder.header(header::CONTENT_LENGTH, body.len() / 2),
        3 => builder = builder.header(header::CONTENT_LENGTH, body.len() * 2 + 1),
        _ => {}
    }
    let signature = (flags >> 6) & 3;
    let signature_value = match signature {
        1 => Some(hex::encode(service.key.sign(&body).to_bytes()).into_bytes()),
        2 => Some(hex::encode(service.key.sign(b"other bytes").to_bytes()).into_bytes()),
        3 => Some(match request.extra & 7 {
            0 => Vec::new(),
            1 => b"00".to_vec(),
            2 => b"zz".to_vec(),
            3 => vec![b'0'; 128],
            4 => vec![0x41; 64],
            5 => vec![0xff; 64],
            6 => b" 0 ".repeat(43),
            _ => request.payload.iter().take(130).copied().collect(),
        }),
        _ => None,
    };
    if let Some(value) = signature_value.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
        builder = builder.header("x-scion-signature", value);
    }
    let chunked = flags & 0x10 != 0;
    let breaks_off = flags & 0x20 != 0;
    let chunk = 256usize << ((request.extra >> 3) & 7);
    let http_body = if chunked || breaks_off {
        let mut chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(if chunked { chunk } else { body.len().max(1) })
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        if breaks_off {
            chunks.push(Err(std::io::Error::other("the client went away")));
        }
        Body::from_stream(futures_util::stream::iter(chunks))
    } else {
        Body::from(body.clone())
    };
    let must_succeed = token == 1
        && method == Method::POST
        && !breaks_off
        && length < 2
        && match (kind, path) {
            (BodyKind::Photo, "/v1/classify") => request.payload.is_empty(),
            (BodyKind::Model, "/v1/model") => request.payload.is_empty() && signature == 1,
            _ => false,
        };
    let sent = Sent {
        method,
        path,
        right_token: token == 1,
        must_succeed,
        body,
    };
    (builder.body(http_body).expect("request"), sent)
}

/// Every entry under `dir`, recursively, as paths relative to it.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path.clone());
            }
            found.push(path.strip_prefix(dir).unwrap_or(&path).to_path_buf());
        }
    }
    found
}

/// Send the requests an input holds and check every answer. A broken promise panics; the
/// `Result` is the shape every target's entry has (`Ok` for any input that keeps them).
pub fn exchange(data: &[u8]) -> Result<(), String> {
    // One exchange at a time (tests run in threads): the checks count swaps.
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let service = service();
    service.serve_the_seed_model();
    for request in Request::decode(data) {
        let (http, sent) = build(service, &request);
        let swaps_before = service.api.hub.metrics().model_swaps;
        let (status, content_type, body) = service.runtime.block_on(async {
            let response = service
                .router
                .clone()
                .oneshot(http)
                .await
                .expect("the router is infallible");
            let status = response.status();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            // The two live streams never end: their first answer is what is checked.
            let endless = matches!(sent.path, "/v1/events" | "/v1/preview.mjpeg");
            let body = if endless && status == StatusCode::OK {
                Bytes::new()
            } else {
                tokio::time::timeout(
                    Duration::from_secs(20),
                    axum::body::to_bytes(response.into_body(), 64 << 20),
                )
                .await
                .expect("a finite answer arrives")
                .expect("the answer's body reads")
            };
            (status, content_type, body)
        });
        check(service, &sent, status, &content_type, &body, swaps_before);
    }
    Ok(())
}

fn check(
    service: &Service,
    sent: &Sent,
    status: StatusCode,
    content_type: &str,
    body: &[u8],
    swaps_before: u64,
) {
    let what = format!("{} {} answered {status}", sent.method, sent.path);
    let text = String::from_utf8_lossy(&body[..body.len().min(400)]);
    assert!(
        status != StatusCode::INTERNAL_SERVER_ERROR,
        "{what}: {text}"
    );
    if matches!(status.as_u16(), 400 | 401 | 403 | 409 | 422) {
        let error: serde_json::Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{what}, not as JSON ({e}): {text}"));
        assert!(
            error["error"].is_string(),
            "{what} without an error: {text}"
        );
        assert!(content_type.starts_with("application/json"), "{what}");
    }
    if private(&sent.method, sent.path) {
        if sent.right_token {
            assert!(
                status != StatusCode::UNAUTHORIZED,
                "{what} to the right token"
            );
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} without the token");
        }
    }
    if sent.must_succeed {
        assert_eq!(status, StatusCode::OK, "{what} to a valid request: {text}");
    }
    let swaps = service.api.hub.metrics().model_swaps;
    if sent.method == Method::POST && sent.path == "/v1/model" && status == StatusCode::OK {
        assert_eq!(swaps, swaps_before + 1, "{what}: a swap counted once");
        let serving = service.api.hub.model().expect("a model serves");
        let sha = hex::encode(Sha256::digest(&sent.body));
        assert_eq!(serving.sha256, sha, "{what}: the upload serves");
        let current = service
            .store
            .current()
            .expect("the store has a current model");
        assert_eq!(
            std::fs::read(current)
                .map(|b| hex::encode(Sha256::digest(b)))
                .ok(),
            Some(sha),
            "{what}: the store's current model is the upload"
        );
    } else {
        assert_eq!(swaps, swaps_before, "{what}: swapped a model");
    }
    let staging = tree(&service.store.staging_dir());
    assert!(staging.is_empty(), "{what}: left {staging:?} in staging");
    let outside = tree(&service.root.join("outside"));
    assert!(outside.is_empty(), "{what}: wrote {outside:?} outside");
    let mut top: Vec<String> = std::fs::read_dir(&service.root)
        .expect("service folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["captures", "models", "outside", "seed.onnx"],
        "{what}: the service folder changed"
    );
}
